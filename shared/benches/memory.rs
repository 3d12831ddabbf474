//! Peak memory of a replay step against the records of its shard. Run with
//! `cargo bench -p rewind-engine --bench memory`; BENCHMARKS.md has the
//! method and the numbers.
//!
//! A scrape of one shard is laid in the local stack's S3 (moto) as the
//! scraper lays it: chunks of up to 100,000 records (gzip), the shard's own
//! manifest and the top-level one, for shards of 10,000, 100,000 and
//! 1,000,000 records of 100 bytes. The replay function's own step
//! (`Replayer::step`, as the replay state machine runs it) replays the
//! shard from the MANIFEST source into the real `target` fixture function
//! with `BatchSize` 1,000, its S3 reads going to moto over HTTP, until the
//! shard is done. What is measured is the heap of this process, counted by
//! its global allocator: the most it held above what it held before the
//! first step. The local stack runs in a child process (this binary again),
//! so its endpoint's buffers are not counted as the step's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead as _, Write as _};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rewind_engine::jobs::replay::{ReplayRequest, ReplaySettings, Replayer};
use rewind_engine::model::chunk::{ChunkWriter, Compression};
use rewind_engine::model::manifest::{
    Manifest, ManifestChunk, ManifestShard, ShardManifest, shard_manifest_key,
};
use rewind_engine::model::window::{StartPosition, StopCondition};
use rewind_engine::store::{ObjectStore, PutObject, S3Store};

mod common;

/// Records of a full scrape chunk (the scraper's largest).
const CHUNK_RECORDS: usize = 100_000;
const RECORD_BYTES: usize = 100;
const SHARDS: [usize; 3] = [10_000, 100_000, 1_000_000];
const BATCH_SIZE: usize = 1_000;
const BUCKET: &str = "bench-memory";
/// Set in the child that serves the local stack.
const SERVE: &str = "REWIND_BENCH_MEMORY_SERVE";

/// Heap bytes held now, and the most held since the last [`reset`].
static HELD: AtomicUsize = AtomicUsize::new(0);
static MOST: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, keeping [`HELD`] and [`MOST`].
struct Tally;

impl Tally {
    fn add(bytes: usize) {
        let now = HELD.fetch_add(bytes, Ordering::Relaxed) + bytes;
        MOST.fetch_max(now, Ordering::Relaxed);
    }

    fn remove(bytes: usize) {
        HELD.fetch_sub(bytes, Ordering::Relaxed);
    }
}

// SAFETY: each call goes to `System` as it came; only the tallies change.
unsafe impl GlobalAlloc for Tally {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `System`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            Self::add(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        Self::remove(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let moved = unsafe { System.realloc(ptr, layout, new_size) };
        if !moved.is_null() {
            Self::remove(layout.size());
            Self::add(new_size);
        }
        moved
    }
}

#[global_allocator]
static TALLY: Tally = Tally;

/// What the heap holds now; the peak starts again from it.
fn reset() -> usize {
    let now = HELD.load(Ordering::Relaxed);
    MOST.store(now, Ordering::Relaxed);
    now
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / 1_048_576.0
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if std::env::var_os(SERVE).is_some() {
        runtime.block_on(serve());
    } else {
        runtime.block_on(bench());
    }
}

/// The child: serves the stack until its standard input closes.
async fn serve() {
    let layout = rewind_local::Layout::current().expect("run inside the workspace");
    let stack = rewind_local::LocalStack::start(
        &layout,
        rewind_local::Options {
            kinesis: rewind_local::KinesisBackend::Moto,
            shard_limits: false,
            ..rewind_local::Options::default()
        },
    )
    .await
    .expect("local stack");
    println!("endpoint {}", stack.endpoint_url());
    std::io::stdout().flush().expect("stdout");
    tokio::task::spawn_blocking(|| {
        let mut rest = String::new();
        while std::io::stdin().read_line(&mut rest).is_ok_and(|n| n > 0) {}
    })
    .await
    .expect("stdin");
    stack.stop().await;
}

/// Lays one shard of `records` records as a scrape; returns the top-level
/// manifest's key and the largest chunk's size (what a step that read a
/// chunk whole would hold at once).
async fn scrape(store: &S3Store, stream_arn: &str, run: &str, records: usize) -> (String, usize) {
    let mut largest = 0;
    let shard_id = "shardId-000000000000";
    let top = format!("scrapes/{run}/manifest.json");
    let mut chunks = Vec::new();
    let mut first = 0;
    while first < records {
        let end = (first + CHUNK_RECORDS).min(records);
        let key = format!("scrapes/{run}/{shard_id}/{first:09}.jsonl.gz");
        let mut writer =
            ChunkWriter::new(&key, Vec::new(), Compression::Gzip).expect("chunk writer");
        for i in first..end {
            let record = common::record(
                &format!("49590338271490256608559692538361571095921575989{i:09}"),
                format!("device-{}", i % 997),
                i as i64,
                common::telemetry(i, RECORD_BYTES, 997),
            );
            writer.write(&record).expect("record");
        }
        let (body, summary) = writer.finish().expect("chunk");
        largest = largest.max(body.len());
        store
            .put(PutObject {
                key: key.clone(),
                body,
                content_type: Compression::Gzip.content_type(),
                content_encoding: Compression::Gzip.content_encoding(),
            })
            .await
            .expect("chunk put");
        chunks.push(ManifestChunk {
            key,
            first_sequence_number: summary.first.expect("first").sequence_number,
            last_sequence_number: summary.last.expect("last").sequence_number,
        });
        first = end;
    }
    let shard = ManifestShard {
        shard_id: shard_id.into(),
        parent_shard_ids: Vec::new(),
        records: records as u64,
        first_sequence_number: chunks.first().map(|c| c.first_sequence_number.clone()),
        last_sequence_number: chunks.last().map(|c| c.last_sequence_number.clone()),
        chunks,
        manifest: None,
        first_arrival: None,
        last_arrival: None,
        stop_reason: None,
        child_shard_ids: Vec::new(),
    };
    let own = shard_manifest_key(&top, shard_id);
    let shard_manifest = ShardManifest {
        stream_arn: stream_arn.into(),
        compression: Compression::Gzip,
        shard: shard.clone(),
    };
    put_json(store, &own, &shard_manifest).await;
    let manifest = Manifest {
        stream: "bench".into(),
        stream_arn: stream_arn.into(),
        run_id: run.into(),
        bucket: BUCKET.into(),
        prefix: "scrapes".into(),
        compression: Compression::Gzip,
        start: StartPosition::TrimHorizon,
        stop: StopCondition::Latest { as_of: None },
        records: records as u64,
        shards: vec![ManifestShard {
            chunks: Vec::new(),
            manifest: Some(own),
            ..shard
        }],
    };
    put_json(store, &top, &manifest).await;
    (top, largest)
}

async fn put_json(store: &S3Store, key: &str, value: &impl serde::Serialize) {
    store
        .put(PutObject {
            key: key.to_owned(),
            body: serde_json::to_vec(value).expect("json"),
            content_type: "application/json",
            content_encoding: None,
        })
        .await
        .expect("manifest put");
}

async fn bench() {
    let exe = std::env::current_exe().expect("this bench's path");
    let mut child = std::process::Command::new(exe)
        .env(SERVE, "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the stack's process");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let endpoint = loop {
        let line = lines
            .next()
            .expect("the stack started")
            .expect("its output");
        if let Some(url) = line.strip_prefix("endpoint ") {
            break url.to_owned();
        }
    };
    let config = rewind_local::sdk::config(&endpoint).await;
    let s3 = rewind_local::sdk::s3_client(&config);
    s3.create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("bucket");
    let store = S3Store::new(s3.clone(), BUCKET);
    let account = rewind_local::proxy::ACCOUNT;
    // The stack's own account, the SDK configuration's region.
    let settings = ReplaySettings {
        account_id: account.into(),
        partition: "aws".into(),
        region: None,
        dynamodb: false,
        invoke_identity_arn: String::new(),
    };
    let replayer = Replayer::new(s3.clone(), &config, settings);
    println!(
        "peak heap of a replay step, one shard from a MANIFEST source in moto's S3, records of {RECORD_BYTES} B in gzip chunks of up to {CHUNK_RECORDS}, BatchSize {BATCH_SIZE}, into the `target` fixture:"
    );
    for records in SHARDS {
        let run = format!("memory-{records}");
        let stream_arn = format!("arn:aws:kinesis:us-east-1:{account}:stream/{run}");
        let laid = Instant::now();
        let (top, largest) = scrape(&store, &stream_arn, &run, records).await;
        let laid = laid.elapsed();
        let request = serde_json::json!({
            "runId": run,
            "source": {"type": "MANIFEST", "bucket": BUCKET, "key": top},
            "target": {"type": "FUNCTION", "functionName": "target"},
            "options": {"BatchSize": BATCH_SIZE},
            "dlq": {"type": "S3", "bucket": BUCKET},
        });
        let request = ReplayRequest::parse_local(&serde_json::to_vec(&request).expect("json"))
            .expect("a valid request");
        let plan = replayer.plan(&request, &run, None).await.expect("plan");
        let mut progress = plan.groups[0][0].clone();
        let before = reset();
        let mut peak = 0;
        let mut steps = 0;
        let started = Instant::now();
        while !progress.done {
            reset();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
            progress = replayer
                .step(&request, &run, &progress, deadline)
                .await
                .expect("step");
            steps += 1;
            // Above what was held before the first step: a step that left
            // more behind would show in the next one's figure.
            peak = peak.max(MOST.load(Ordering::Relaxed).saturating_sub(before));
        }
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(
            progress.counters.delivered, records as u64,
            "every record delivered"
        );
        println!(
            "  {records:>9} records: peak {:.2} MiB above the {:.2} MiB held before; largest chunk {:.2} MiB ({steps} step(s), {} invokes, {seconds:.1} s, {:.0} records/s; laid in {:.1} s)",
            mib(peak),
            mib(before),
            mib(largest),
            progress.counters.invocations,
            records as f64 / seconds,
            laid.as_secs_f64(),
        );
    }
    // Closing the child's input stops the stack.
    drop(child.stdin.take());
    let _ = child.wait();
}
