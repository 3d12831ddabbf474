//! Replay: delivery rate, bisect cost and re-injection rate. Run with
//! `cargo bench -p rewind-engine --bench replay`; BENCHMARKS.md has the
//! method and the numbers.
//!
//! 1. Delivery rate into a no-op target: the engine's `delivery::Delivery`
//!    (one shard, `ParallelizationFactor` 1) delivers 100,000 records of
//!    1 KiB to an in-memory invoker that answers success at once, with the
//!    default `BatchSize` (100) and the maximum (10,000). What is timed is
//!    the engine's own work: cutting batches under 6 MB and building each
//!    invocation's event payload. Median of 5 runs.
//! 2. Invokes per poison record with `BisectBatchOnFunctionError`: one
//!    10,000-record batch (small records, so it is one invocation under
//!    6 MB) holding 1, 2 or 10 poison records; the invoker fails any batch
//!    that holds one. Counted, not timed, against the same batch without
//!    bisect.
//! 3. Re-injection rate: `reinject::reinject` with the real `KinesisSink`
//!    onto a 1-shard and a 2-shard stream of the local stack, the endpoint
//!    enforcing 1,000 records/s and 1 MiB/s per shard. Reports records/s,
//!    the share of the limit and the throttled entries.
//! 4. Engine time between invokes on the local stack: the replay
//!    function's own step (`Replayer::step`, as `rewind replay` and the
//!    replay state machine run it) replays 20,000 records of 1 KiB from a
//!    record file into the real `target` fixture function, progress and
//!    checkpoints written to the stack's S3, for BatchSize 100, 1,000 and
//!    10,000, and 100 with ParallelizationFactor 10.
//!    The figure is the step's own (`engine time between invokes`, logged
//!    by the function target): on each lane, from a batch's answer to the
//!    next invoke, pieces and their checkpoints included. Median of the
//!    step's gaps (10 µs buckets), with p90 and max.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rewind_engine::jobs::replay::{ReplayRequest, ReplaySettings, Replayer};
use rewind_engine::model::chunk::{ChunkWriter, Compression};
use rewind_engine::model::event::{DeliveredEvent, EventSource};
use rewind_engine::model::record::{ArrivalTime, Record};
use rewind_engine::sinks::dlq::{DestinationError, FailureDestination, FailureRecord};
use rewind_engine::sinks::kinesis::{
    Entry, EntryResult, KinesisSink, PutError, RecordSink, ReinjectOptions, reinject,
};
use rewind_engine::sinks::lambda::gaps::EngineGaps;
use rewind_engine::sinks::lambda::invoker::{Invocation, InvokeError, Invoker};
use rewind_engine::sinks::lambda::options::MappingOptions;
use rewind_engine::sinks::lambda::{Delivery, DeliveryReport};

const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:111122223333:function:bench-target";

fn main() {
    // `cargo bench` passes `--bench`; a word after `--` runs only the parts
    // whose name holds it (`delivery`, `bisect`, `reinject`, `engine`).
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runs = |part: &str| only.is_empty() || only.iter().any(|o| part.contains(o.as_str()));
    // Delivery and bisect are CPU work on one lane: a single-threaded
    // runtime measures the engine without scheduler noise.
    let local = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if runs("delivery") {
        local.block_on(delivery_rate());
    }
    if runs("bisect") {
        local.block_on(bisect_invokes());
    }
    // The local stack's endpoint runs on this runtime too: give it threads.
    let stack = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if runs("reinject") {
        stack.block_on(reinject_rate());
    }
    if runs("engine") {
        stack.block_on(engine_time_between_invokes());
    }
}

fn source() -> EventSource {
    EventSource::new(
        "arn:aws:kinesis:us-east-1:111122223333:stream/bench",
        "arn:aws:iam::111122223333:role/bench-target",
    )
    .expect("valid ARN")
}

/// `n` records of `size` bytes with real-length (56-digit) sequence
/// numbers, so event payloads are as large as the live mapping's.
fn records(n: usize, size: usize) -> Vec<Record> {
    (0..n)
        .map(|i| {
            common::record(
                &format!("4959033827149025660855969253836157109592157598913{i:07}"),
                format!("key-{}", i % 997),
                i as i64,
                (0..size).map(|j| ((i + j) % 251) as u8).collect(),
            )
        })
        .collect()
}

fn now() -> ArrivalTime {
    ArrivalTime::from_epoch_millis(1_700_000_100_000)
}

fn success() -> Invocation {
    Invocation {
        request_id: "bench".into(),
        status_code: 200,
        executed_version: Some("$LATEST".into()),
        function_error: None,
        payload: Vec::new(),
    }
}

/// A target that does nothing and answers at once: what remains is the
/// engine's cost.
struct NoOp {
    payload_bytes: Mutex<usize>,
}

impl Invoker for NoOp {
    async fn invoke(&self, payload: Vec<u8>) -> Result<Invocation, InvokeError> {
        *self.payload_bytes.lock().expect("bytes") += payload.len();
        Ok(success())
    }

    fn function_arn(&self) -> &str {
        FUNCTION_ARN
    }
}

/// Fails (`Unhandled`) every batch holding a poison record, as a consumer
/// that crashes on one bad record does. Reads the payload with the engine's
/// own event reader, so it sees exactly what a function would.
struct Poisoned {
    poison: BTreeSet<String>,
    invokes: Mutex<u64>,
    largest_batch: Mutex<usize>,
}

impl Invoker for Poisoned {
    async fn invoke(&self, payload: Vec<u8>) -> Result<Invocation, InvokeError> {
        *self.invokes.lock().expect("invokes") += 1;
        let records = DeliveredEvent::from_slice(&payload)
            .expect("the engine's own event")
            .records;
        let mut largest = self.largest_batch.lock().expect("largest");
        *largest = (*largest).max(records.len());
        if records
            .iter()
            .any(|r| self.poison.contains(r.sequence_number.as_str()))
        {
            return Ok(Invocation {
                function_error: Some("Unhandled".into()),
                payload: br#"{"errorType":"Poison","errorMessage":"poison record"}"#.to_vec(),
                ..success()
            });
        }
        Ok(success())
    }

    fn function_arn(&self) -> &str {
        FUNCTION_ARN
    }
}

/// An in-memory on-failure destination (the S3 one's shape: with payload).
#[derive(Default)]
struct Dlq {
    records: Mutex<Vec<FailureRecord>>,
}

impl FailureDestination for Dlq {
    async fn send(&self, record: FailureRecord) -> Result<String, DestinationError> {
        let mut records = self.records.lock().expect("dlq");
        records.push(record);
        Ok(format!("dlq-{}", records.len()))
    }

    fn wants_payload(&self) -> bool {
        true
    }
}

async fn deliver<I: Invoker>(
    invoker: &I,
    dlq: &Dlq,
    options: &MappingOptions,
    input: Vec<Record>,
) -> DeliveryReport {
    deliver_borrowed(invoker, dlq, options, &input, &Mutex::default()).await
}

async fn delivery_rate() {
    const RECORDS: usize = 100_000;
    const RUNS: usize = 5;
    let input = records(RECORDS, 1024);
    println!("delivery into a no-op target, one shard, {RECORDS} records of 1 KiB:");
    for batch_size in [100, 10_000] {
        let options = MappingOptions {
            batch_size,
            ..MappingOptions::default()
        };
        let mut seconds = Vec::new();
        let mut last = (DeliveryReport::default(), 0usize);
        let mut gaps = EngineGaps::default();
        for _ in 0..RUNS {
            let target = NoOp {
                payload_bytes: Mutex::new(0),
            };
            let dlq = Dlq::default();
            let run_gaps = Mutex::new(EngineGaps::default());
            let started = Instant::now();
            // Borrowed, as a step delivers the pieces of its page.
            let report = deliver_borrowed(&target, &dlq, &options, &input, &run_gaps).await;
            seconds.push(started.elapsed().as_secs_f64());
            assert_eq!(report.counters.delivered, RECORDS as u64);
            last = (report, target.payload_bytes.into_inner().expect("bytes"));
            gaps = run_gaps.into_inner().expect("gaps");
        }
        let gap = gaps.summary().expect("gaps measured");
        seconds.sort_by(f64::total_cmp);
        let median = seconds[RUNS / 2];
        let (report, payload_bytes) = last;
        println!(
            "  BatchSize {batch_size:>6}: {} invokes ({:.0} records and {:.2} MB per invoke); median {:.3} s of {RUNS} (min {:.3}, max {:.3}) = {:.0} records/s, {:.1} MiB/s of payload, {:.1} MB/s of event JSON",
            report.counters.invocations,
            RECORDS as f64 / report.counters.invocations as f64,
            payload_bytes as f64 / report.counters.invocations as f64 / 1e6,
            median,
            seconds[0],
            seconds[RUNS - 1],
            RECORDS as f64 / median,
            (RECORDS * 1024) as f64 / 1048576.0 / median,
            payload_bytes as f64 / 1e6 / median,
        );
        println!(
            "    engine time between invokes (last run): median {} µs, p90 {} µs, max {} µs over {} gaps",
            gap.median.as_micros(),
            gap.p90.as_micros(),
            gap.max.as_micros(),
            gap.count
        );
    }
}

async fn deliver_borrowed<I: Invoker>(
    invoker: &I,
    dlq: &Dlq,
    options: &MappingOptions,
    input: &[Record],
    gaps: &Mutex<EngineGaps>,
) -> DeliveryReport {
    options.validate().expect("valid options");
    let source = source();
    let delivery = Delivery {
        invoker,
        destination: dlq,
        source: &source,
        options,
        now,
        base_backoff: Duration::ZERO,
    };
    let (report, unsettled) = delivery
        .deliver_timed(input, None, gaps)
        .await
        .expect("delivered");
    assert!(unsettled.is_none());
    report
}

async fn bisect_invokes() {
    const RECORDS: usize = 10_000;
    // 16-byte payloads keep the 10,000-record event (~5 MB) under 6 MB, so
    // the batch is one invocation; bisection is about record counts.
    let input = records(RECORDS, 16);
    println!(
        "invokes per poison record, one batch of {RECORDS} records (BatchSize 10000, MaximumRetryAttempts 0):"
    );
    for poison_count in [1usize, 2, 10] {
        // Spread through the batch, off the halving points.
        let poison: BTreeSet<String> = (0..poison_count)
            .map(|k| {
                let at = (k * RECORDS + RECORDS / 3) / poison_count % RECORDS;
                input[at].sequence_number.to_string()
            })
            .collect();
        assert_eq!(poison.len(), poison_count);
        let mut line = format!("  {poison_count:>2} poison:");
        for (label, batch_size, bisect) in [
            ("bisect", RECORDS, true),
            ("no bisect", RECORDS, false),
            ("no bisect, BatchSize 1", 1, false),
        ] {
            let target = Poisoned {
                poison: poison.clone(),
                invokes: Mutex::new(0),
                largest_batch: Mutex::new(0),
            };
            let dlq = Dlq::default();
            let options = MappingOptions {
                batch_size,
                // Each isolated poison record goes to the DLQ after its
                // first failure; every extra retry adds one invoke per
                // poison record.
                maximum_retry_attempts: 0,
                bisect_batch_on_function_error: bisect,
                ..MappingOptions::default()
            };
            let report = deliver(&target, &dlq, &options, input.clone()).await;
            let invokes = target.invokes.into_inner().expect("invokes");
            assert_eq!(invokes, report.counters.invocations);
            assert_eq!(
                report.counters.delivered + report.counters.failed_records,
                RECORDS as u64,
                "nothing lost"
            );
            if bisect {
                assert_eq!(
                    target.largest_batch.into_inner().expect("largest"),
                    RECORDS,
                    "one invocation held the whole batch"
                );
                assert_eq!(
                    report.counters.failed_records, poison_count as u64,
                    "exactly"
                );
            }
            line.push_str(&format!(
                " {label}: {invokes} invokes ({:.1} per poison record), {} delivered, {} to the DLQ;",
                invokes as f64 / poison_count as f64,
                report.counters.delivered,
                report.counters.failed_records,
            ));
        }
        println!("{}", line.trim_end_matches(';'));
    }
}

/// The real sink, with every call's outcome noted.
struct Counted {
    inner: KinesisSink,
    calls: Mutex<Vec<Call>>,
}

struct Call {
    ended: Instant,
    offered: usize,
    stored: usize,
    stored_bytes: usize,
    throttled: usize,
    /// The call failed as a whole (no entry written).
    failed: bool,
}

impl RecordSink for Counted {
    async fn put_records(&self, entries: Vec<Entry>) -> Result<Vec<EntryResult>, PutError> {
        let offered = entries.len();
        let sizes: Vec<usize> = entries
            .iter()
            .map(|e| e.data.len() + e.partition_key.len())
            .collect();
        let result = self.inner.put_records(entries).await;
        let mut call = Call {
            ended: Instant::now(),
            offered,
            stored: 0,
            stored_bytes: 0,
            throttled: 0,
            failed: result.is_err(),
        };
        if let Ok(results) = &result {
            for (outcome, size) in results.iter().zip(&sizes) {
                match outcome {
                    Ok(_) => {
                        call.stored += 1;
                        call.stored_bytes += size;
                    }
                    Err(code) if code == "ProvisionedThroughputExceededException" => {
                        call.throttled += 1
                    }
                    Err(_) => {}
                }
            }
        }
        self.calls.lock().expect("calls").push(call);
        result
    }
}

mod common;

async fn reinject_rate() {
    let (stack, kinesis) = common::moto_stack().await;
    println!(
        "re-injection, records of 1 KiB, default options, limits 1000 records/s and 1 MiB/s per shard:"
    );
    for shards in [1usize, 2] {
        // About 20 s at the limit: long enough that the first second's
        // burst allowance (a full bucket) is a small part of the run.
        let count = 20_000 * shards;
        let stream = format!("reinject-{shards}");
        let arn = common::create_stream(&kinesis, &stream, shards as i32).await;
        // 5,000 keys: every call can be filled with 500 distinct keys, and
        // MD5 spreads them evenly over the shards.
        let mut input = records(count, 1024);
        for (i, r) in input.iter_mut().enumerate() {
            r.partition_key = format!("device-{}", i % 5_000);
        }
        let sink = Counted {
            inner: KinesisSink::new(kinesis.clone(), arn),
            calls: Mutex::new(Vec::new()),
        };
        let started = Instant::now();
        // A bound, so a hung call fails the bench instead of stalling it
        // (dropping the stack on the way out stops its processes).
        let report = tokio::time::timeout(
            Duration::from_secs(600),
            reinject(&sink, input, &ReinjectOptions::default()),
        )
        .await
        .expect("re-injection ended within 10 minutes")
        .expect("re-injected");
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(report.put, count as u64);
        let calls = sink.calls.into_inner().expect("calls");
        let stored: usize = calls.iter().map(|c| c.stored).sum();
        let bytes: usize = calls.iter().map(|c| c.stored_bytes).sum();
        let throttled: usize = calls.iter().map(|c| c.throttled).sum();
        let offered: usize = calls.iter().map(|c| c.offered).sum();
        let failed_calls = calls.iter().filter(|c| c.failed).count();
        assert_eq!(stored, count);
        // Steady state: leave out the first second, when the shards'
        // buckets start full and admit a second's worth at once.
        let burst_end = started + Duration::from_secs(1);
        let burst: usize = calls
            .iter()
            .filter(|c| c.ended <= burst_end)
            .map(|c| c.stored)
            .sum();
        let steady = (stored - burst) as f64 / (seconds - 1.0);
        let limit = 1000.0 * shards as f64;
        println!(
            "  {shards} shard(s): {count} records in {seconds:.1} s, {} calls ({failed_calls} failed whole); {:.0} records/s overall = {:.0}% of {limit:.0}/s; steady (after the first second) {steady:.0} records/s = {:.0}%; {:.2} MiB/s = {:.0}% of the byte limit; {throttled} entries throttled ({:.0}% of {offered} offered, {:.1} per record put)",
            calls.len(),
            stored as f64 / seconds,
            stored as f64 / seconds / limit * 100.0,
            steady / limit * 100.0,
            bytes as f64 / 1048576.0 / seconds,
            bytes as f64 / 1048576.0 / seconds / shards as f64 * 100.0,
            throttled as f64 / offered as f64 * 100.0,
            throttled as f64 / stored as f64,
        );
    }
    stack.stop().await;
}

/// What the function target logged of its step's gaps.
#[derive(Debug, Default, Clone)]
struct GapLine {
    fields: std::collections::BTreeMap<String, u64>,
}

/// Keeps every "engine time between invokes" event's fields.
struct GapLog(std::sync::Arc<Mutex<Vec<GapLine>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for GapLog {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct Visit(GapLine, bool);
        impl tracing::field::Visit for Visit {
            fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
                self.0.fields.insert(field.name().to_owned(), value);
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if field.name() == "message" && value == "engine time between invokes" {
                    self.1 = true;
                }
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message"
                    && format!("{value:?}") == "engine time between invokes"
                {
                    self.1 = true;
                }
            }
        }
        let mut visit = Visit(GapLine::default(), false);
        event.record(&mut visit);
        if visit.1 {
            self.0.lock().expect("log").push(visit.0);
        }
    }
}

async fn engine_time_between_invokes() {
    use tracing_subscriber::layer::SubscriberExt as _;
    const RECORDS: usize = 20_000;
    let lines = std::sync::Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(GapLog(lines.clone()));
    tracing::subscriber::set_global_default(subscriber).expect("one subscriber");

    let (stack, _kinesis) = common::moto_stack().await;
    let config = rewind_local::sdk::config(&stack.endpoint_url()).await;
    let s3 = rewind_local::sdk::s3_client(&config);
    let bucket = "bench-engine-time";
    s3.create_bucket()
        .bucket(bucket)
        .send()
        .await
        .expect("bucket");
    let dir = std::env::temp_dir().join(format!("rewind-bench-engine-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch");
    let file = dir.join("shard-0.jsonl.gz");
    let mut writer = ChunkWriter::new(file.display().to_string(), Vec::new(), Compression::Gzip)
        .expect("writer");
    for r in common::telemetry_records(RECORDS, 1024, 997, 1) {
        writer.write(&r).expect("write");
    }
    std::fs::write(&file, writer.finish().expect("finish").0).expect("file");
    let replayer = Replayer::new(
        s3.clone(),
        &config,
        ReplaySettings {
            partition: "aws".into(),
            region: None,
            account_id: rewind_local::proxy::ACCOUNT.into(),
            invoke_identity_arn: String::new(),
            dynamodb: false,
        },
    );
    println!(
        "engine time between invokes, local stack, {RECORDS} records of 1 KiB from a record file into the `target` fixture, progress to S3:"
    );
    // The goal's two batch sizes, the largest (a record file's page of
    // 1,000 caps a piece, so its batches are of 1,000 too), and ten lanes.
    for (batch_size, lanes) in [(100usize, 1usize), (1_000, 1), (10_000, 1), (100, 10)] {
        let run_id = format!("engine-{batch_size}-{lanes}");
        let request = serde_json::json!({
            "runId": run_id,
            "source": {"type": "FILES", "paths": [file.display().to_string()],
                       "streamArn": format!("arn:aws:kinesis:us-east-1:{}:stream/bench-engine-{batch_size}-{lanes}", rewind_local::proxy::ACCOUNT)},
            "target": {"type": "FUNCTION", "functionName": "target"},
            "options": {"BatchSize": batch_size, "ParallelizationFactor": lanes},
            "dlq": {"type": "S3", "bucket": bucket},
        });
        let request = ReplayRequest::parse_local(&serde_json::to_vec(&request).expect("json"))
            .expect("a valid request");
        lines.lock().expect("log").clear();
        let plan = replayer.plan(&request, &run_id, None).await.expect("plan");
        let started = Instant::now();
        let mut records = 0;
        let mut invokes = 0;
        for progress in plan.groups.iter().flatten() {
            let mut progress = progress.clone();
            while !progress.done {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
                progress = replayer
                    .step(&request, &run_id, &progress, deadline)
                    .await
                    .expect("step");
            }
            records += progress.counters.delivered;
            invokes += progress.counters.invocations;
        }
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(records, RECORDS as u64, "every record delivered");
        for line in lines.lock().expect("log").iter() {
            let f = |k: &str| line.fields.get(k).copied().unwrap_or_default();
            println!(
                "  BatchSize {batch_size:>5}, ParallelizationFactor {lanes:>2}: {invokes} invokes in {seconds:.2} s ({:.0} records/s); engine time between invokes: median {} µs, p90 {} µs, mean {} µs, max {} µs over {} gaps",
                records as f64 / seconds,
                f("median_us"),
                f("p90_us"),
                f("mean_us"),
                f("max_us"),
                f("gaps"),
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    stack.stop().await;
}
