//! Scrape read rate and memory. Run with
//! `cargo bench -p rewind-engine --bench scrape`; BENCHMARKS.md has the
//! method and the numbers.
//!
//! 1. Read rate per shard against the enforced limits: the local stack
//!    (moto's Kinesis, for volume; the endpoint enforcing 5 calls/s and
//!    2 MiB/s per shard) holds one shard of 1 KiB or 50 KiB records; the
//!    shard reader reads them with default settings. Reports MiB/s of
//!    payload and throttled calls per minute.
//! 2. Peak memory of a 1,000,000-record window: an in-memory shard makes
//!    1 KiB records on the fly, pages of 10,000; the window is scraped in
//!    steps of 100,000 records into chunks that are encoded and dropped.
//!    Virtual time: pacing costs no wall-clock time. Reports the process's
//!    peak resident set (VmHWM) before and after.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use rewind_engine::model::chunk::{ChunkWriter, Compression};
use rewind_engine::model::record::Record;
use rewind_engine::model::window::{StartPosition, StopCondition};
use rewind_engine::sources::kinesis::{
    KinesisSource, ReadOptions, RecordsPage, ShardCursor, ShardSource, ShardWindow, SourceError,
    StepBudget, read_step,
};

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    // Memory first: VmHWM is the process's peak so far, and the read-rate
    // part holds 10 MiB pages.
    let paused = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    paused.block_on(window_memory());
    let rate = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rate.block_on(read_rate());
}

mod common;

async fn read_rate() {
    let (stack, kinesis) = common::moto_stack().await;
    println!("read rate, one shard, default settings (limit 10000, full share):");
    for (size, count) in [(1024usize, 50_000usize), (50 * 1024, 1_000)] {
        let stream = format!("bench-{size}");
        let arn = common::create_stream(&kinesis, &stream, 1).await;
        // Fill without limits; read with them.
        stack
            .admin()
            .set_shard_limits(false)
            .await
            .expect("limits off");
        let payload = vec![b'r'; size];
        let per_call = (4 * 1024 * 1024 / size).clamp(1, 500);
        for start in (0..count).step_by(per_call) {
            let entries: Vec<PutRecordsRequestEntry> = (start..(start + per_call).min(count))
                .map(|i| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(format!("k{i}"))
                        .data(Blob::new(payload.clone()))
                        .build()
                        .expect("entry")
                })
                .collect();
            let out = kinesis
                .put_records()
                .stream_name(&stream)
                .set_records(Some(entries))
                .send()
                .await
                .expect("put");
            assert_eq!(out.failed_record_count(), Some(0));
        }
        stack
            .admin()
            .set_shard_limits(true)
            .await
            .expect("limits on");
        let shard_id = kinesis
            .list_shards()
            .stream_name(&stream)
            .send()
            .await
            .expect("list shards")
            .shards()[0]
            .shard_id()
            .to_owned();
        let source = Timed {
            inner: KinesisSource::new(kinesis.clone(), arn),
            calls: Mutex::new(Vec::new()),
        };
        let window = ShardWindow {
            stream: stream.clone(),
            start: StartPosition::TrimHorizon,
            stop: StopCondition::TotalRecordsPerShard {
                count: count as u64,
            },
            // moto ignores GetRecords' 10 MiB per-call cap and would return
            // the whole shard at once; cap `Limit` at what AWS returns at
            // most (10 MiB worth), which is the default for 1 KiB records.
            options: ReadOptions {
                limit: ((10 * 1024 * 1024 / size) as i32).min(ReadOptions::default().limit),
                ..ReadOptions::default()
            },
        };
        let mut bytes = 0usize;
        let started = Instant::now();
        let cursor = read_step(
            &source,
            &window,
            &ShardCursor::new(shard_id),
            StepBudget {
                deadline: tokio::time::Instant::now() + Duration::from_secs(600),
                max_records: u64::MAX,
            },
            |r| bytes += r.data.len(),
        )
        .await
        .expect("read");
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(cursor.records, count as u64);
        // Sustained rate: the bytes of every call but the last, over the
        // time from the first call to the last. (A single call may return
        // up to 10 MiB at once; what the limit governs is how soon the next
        // one may follow.)
        let calls = source.calls.lock().expect("calls");
        let (first, last) = (calls[0].0, calls[calls.len() - 1].0);
        let sustained_bytes: usize = calls[..calls.len() - 1].iter().map(|c| c.1).sum();
        let sustained = sustained_bytes as f64 / 1048576.0 / (last - first).as_secs_f64();
        println!(
            "  {:>6} B records: {count} records, {:.1} MiB, {} calls in {seconds:.1} s; sustained {sustained:.2} MiB/s = {:.0}% of the 2 MiB/s limit; largest call {:.1} MiB; {} throttled calls ({:.1}/min)",
            size,
            bytes as f64 / 1048576.0,
            calls.len(),
            sustained / 2.0 * 100.0,
            calls.iter().map(|c| c.1).max().unwrap_or(0) as f64 / 1048576.0,
            cursor.throttles,
            cursor.throttles as f64 / seconds * 60.0,
        );
    }
    stack.stop().await;
}

/// Times each GetRecords call that returned, with its payload bytes.
struct Timed<S> {
    inner: S,
    calls: Mutex<Vec<(Instant, usize)>>,
}

impl<S: ShardSource> ShardSource for Timed<S> {
    async fn shard_iterator(
        &self,
        shard_id: &str,
        start: &StartPosition,
    ) -> Result<String, SourceError> {
        self.inner.shard_iterator(shard_id, start).await
    }

    async fn records(
        &self,
        shard_id: &str,
        iterator: &str,
        limit: i32,
    ) -> Result<RecordsPage, SourceError> {
        let at = Instant::now();
        let page = self.inner.records(shard_id, iterator, limit).await?;
        self.calls.lock().expect("calls").push((at, page.bytes));
        Ok(page)
    }
}

/// A shard of `len` 1 KiB records made on demand: nothing is held but the
/// page being returned.
struct Synthetic {
    len: u64,
}

impl ShardSource for Synthetic {
    async fn shard_iterator(&self, _: &str, start: &StartPosition) -> Result<String, SourceError> {
        Ok(match start {
            StartPosition::AfterSequenceNumber { sequence_number } => {
                (sequence_number.as_str().parse::<u64>().expect("ours") + 1).to_string()
            }
            _ => "1".to_owned(),
        })
    }

    async fn records(
        &self,
        _: &str,
        iterator: &str,
        limit: i32,
    ) -> Result<RecordsPage, SourceError> {
        let from: u64 = iterator.parse().expect("ours");
        let to = (from + limit as u64).min(self.len + 1);
        let records: Vec<Record> = (from..to)
            .map(|i| {
                common::record(
                    &i.to_string(),
                    format!("k{}", i % 1000),
                    i as i64,
                    vec![(i % 251) as u8; 1024],
                )
            })
            .collect();
        Ok(RecordsPage {
            bytes: records.len() * 1024,
            records,
            next_iterator: (to <= self.len).then(|| to.to_string()),
            millis_behind_latest: Some(0),
            child_shards: Vec::new(),
        })
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn window_memory() {
    const RECORDS: u64 = 1_000_000;
    let before = peak_rss_kib();
    let source = Synthetic { len: RECORDS };
    let window = ShardWindow {
        stream: "bench".into(),
        start: StartPosition::TrimHorizon,
        stop: StopCondition::Latest { as_of: None },
        options: ReadOptions::default(),
    };
    let mut cursor = ShardCursor::new("shardId-000000000000");
    let mut chunks = 0;
    let mut compressed = 0usize;
    let started = Instant::now();
    while !cursor.is_done() {
        let mut writer = ChunkWriter::new("bench", Vec::new(), Compression::Gzip).expect("writer");
        let budget = StepBudget {
            deadline: tokio::time::Instant::now() + Duration::from_secs(3600),
            max_records: 100_000,
        };
        cursor = read_step(&source, &window, &cursor, budget, |r| {
            writer.write(&r).expect("encode")
        })
        .await
        .expect("read");
        let (body, summary) = writer.finish().expect("finish");
        if summary.records > 0 {
            chunks += 1;
            compressed += body.len();
        }
    }
    println!(
        "1,000,000-record window (1 KiB records, steps of 100,000, gzip chunks): {} records in {chunks} chunks ({:.0} MiB compressed), peak RSS {:.0} MiB (before: {:.0} MiB), {:.1} s of CPU-bound work",
        cursor.records,
        compressed as f64 / 1048576.0,
        peak_rss_kib() as f64 / 1024.0,
        before as f64 / 1024.0,
        started.elapsed().as_secs_f64(),
    );
}
