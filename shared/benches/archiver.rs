//! The archiver handler: CPU time and peak memory for one 10,000-record
//! batch of 1 KiB records, and the requests it makes per 1,000 records. Run
//! with `cargo bench -p rewind-engine --bench archiver`; `-- --levels`
//! compares every compression level instead, `-- --case <text>` runs only
//! the cases whose name holds the text, and `-- --table` measures the
//! DynamoDB archive's write rate on the local stack. BENCHMARKS.md has the
//! method and the numbers.
//!
//! The measured code is the function's handler: the invocation payload the
//! mapping sends (built by `event::kinesis_event`, as the local mapping
//! builds it) parsed into a `DeliveredEvent<Base64>` (the records' data as
//! delivered, as the function parses it), then `Archiver::archive`. The
//! stores around it only count: S3 puts are counted and dropped, DynamoDB
//! answers from `aws-smithy-mocks` (requests are still built and
//! serialised by the SDK client; no network). CPU time is the thread's
//! user + system time (`/proc/thread-self/stat`) on a current-thread
//! runtime, over several runs; peak memory is the most heap this binary's
//! counting allocator saw live during one run of its own (untimed, so the
//! counting costs the CPU figures nothing), above what was live before it
//! (the payload, held by the Lambda runtime, is in that baseline).
//!
//! The whole batch as one call is the handler's worst case; Lambda's 6 MB
//! payload limit has the mapping deliver these 10,000 records in several
//! invocations, so each case is also run as the mapping cuts the batch
//! (counts and CPU for all the invocations, peak of the largest).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput;
use aws_sdk_dynamodb::operation::put_item::PutItemOutput;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use rewind_engine::jobs::archiver::{Archiver, KinesisLineage, KinesisTags};
use rewind_engine::model::archive::ArchiveLayout;
use rewind_engine::model::chunk::Compression;
use rewind_engine::model::event::{self, DeliveredEvent, EventSource, PAYLOAD_ENVELOPE_LEN};
use rewind_engine::model::record::{Base64, Record, RecordData};
use rewind_engine::pipeline::batch::MAX_PAYLOAD_BYTES;
use rewind_engine::sinks::dynamodb::{ArchiveMode, DynamoArchive, StreamSettings};
use rewind_engine::sinks::s3_archive::default_level;
use rewind_engine::store::{CreateNew, Created, ObjectStore, PutObject, StoreError};

const RECORDS: usize = 10_000;
const RECORD_BYTES: usize = 1024;
/// Distinct partition keys in the batch: `LATEST` makes one conditional
/// put per key and batch.
const KEYS: usize = 997;
const RUNS: u32 = 10;
const STREAM_ARN: &str = "arn:aws:kinesis:us-east-1:123456789012:stream/bench";

/// The system allocator, keeping the bytes live now and the most since the
/// last reset while `TRACK` is set: only in a run of its own, so that the
/// counting's atomic operations are not in the CPU times.
struct Counting;

static TRACK: AtomicBool = AtomicBool::new(false);
// Signed: what was allocated untracked may be freed while tracking.
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(bytes: usize) {
    if TRACK.load(Ordering::Relaxed) {
        let live = LIVE.fetch_add(bytes as isize, Ordering::Relaxed) + bytes as isize;
        PEAK.fetch_max(live, Ordering::Relaxed);
    }
}

fn shrank(bytes: usize) {
    if TRACK.load(Ordering::Relaxed) {
        LIVE.fetch_sub(bytes as isize, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed to `System` unchanged; only counters move.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `System`'s.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// An S3 stand-in: counts puts and their bytes, keeps nothing (the SDK
/// streams the body out and drops it).
#[derive(Clone, Default)]
struct CountingStore {
    puts: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl ObjectStore for CountingStore {
    async fn put(&self, object: PutObject) -> Result<(), StoreError> {
        self.puts.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(object.body.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn delete(&self, _key: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Shard markers (written once per shard and instance, so only in the
/// warm-up run, and not at all here: no lineage is given) would go here.
impl CreateNew for CountingStore {
    async fn create_new(&self, object: PutObject) -> Result<Created, StoreError> {
        self.put(object).await.map(|()| Created::New)
    }
}

mod common;

/// One shard's batch, as a mapping delivers it.
fn batch() -> Vec<Record> {
    common::telemetry_records(RECORDS, RECORD_BYTES, KEYS, 1)
}

/// This thread's CPU time so far (user + system).
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("Linux /proc");
    // The command name (field 2) may hold spaces: count from its ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("stat format") + 2..]
        .split(' ')
        .collect();
    // Fields 14 and 15 of stat(5), in clock ticks (USER_HZ, 100 on Linux).
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

struct Case {
    name: String,
    modes: Vec<ArchiveMode>,
    compression: Compression,
    /// `None`: the compressor's own default (gzip 6, zstd 3).
    level: Option<u32>,
    /// Only parse the payloads (what every case spends before archiving).
    parse_only: bool,
    /// Parse the records' data into bytes, as the function did before it
    /// kept the delivered base64.
    bytes: bool,
}

struct Measured {
    cpu: Duration,
    wall: Duration,
    peak: usize,
    s3_puts: u64,
    s3_bytes: u64,
    batch_writes: usize,
    put_items: usize,
}

async fn run(case: &Case, payloads: &[Vec<u8>]) -> Measured {
    if case.bytes {
        run_with::<Vec<u8>>(case, payloads).await
    } else {
        run_with::<Base64>(case, payloads).await
    }
}

fn parse<D: RecordData>(payload: &[u8]) -> DeliveredEvent<D> {
    serde_json::from_slice(payload).expect("payload parses")
}

async fn run_with<D: RecordData>(case: &Case, payloads: &[Vec<u8>]) -> Measured {
    let s3 = CountingStore::default();
    let overflow = CountingStore::default();
    let batch_write = mock!(aws_sdk_dynamodb::Client::batch_write_item)
        .then_output(|| BatchWriteItemOutput::builder().build());
    let put_item =
        mock!(aws_sdk_dynamodb::Client::put_item).then_output(|| PutItemOutput::builder().build());
    let client = mock_client!(
        aws_sdk_dynamodb,
        RuleMode::MatchAny,
        [&batch_write, &put_item]
    );
    let dynamo = (!case.modes.is_empty())
        .then(|| DynamoArchive::new(client, "archive", overflow.clone(), "archive"));
    let archiver = Archiver::new(
        s3.clone(),
        ArchiveLayout {
            compression: case.compression,
            compression_level: case.level,
            ..ArchiveLayout::default()
        },
        false,
        dynamo,
        StreamSettings {
            modes: case.modes.clone(),
            ttl: None,
        },
        None::<KinesisTags>,
        None::<KinesisLineage>,
    );
    // The handler once outside the measurement: the SDK client's lazy
    // set-up (endpoint resolver, identity cache) is a cold start's cost,
    // not a batch's. Counts start after it.
    let warm = parse::<D>(&payloads[0]);
    std::hint::black_box(archiver.archive(STREAM_ARN, warm.records, 0).await.response);
    let (puts_before, bytes_before) = (
        s3.puts.load(Ordering::Relaxed),
        s3.bytes.load(Ordering::Relaxed),
    );
    let (batches_before, items_before) = (batch_write.num_calls(), put_item.num_calls());

    let mut cpu = Duration::ZERO;
    let mut wall = Duration::MAX;
    let mut peak = 0;
    // Run 0 measures the heap and is not timed; runs 1 to RUNS are timed.
    for run in 0..=RUNS {
        let tracked = run == 0;
        let (cpu_start, wall_start) = (thread_cpu(), Instant::now());
        for payload in payloads {
            TRACK.store(tracked, Ordering::Relaxed);
            let baseline = LIVE.load(Ordering::Relaxed);
            PEAK.store(baseline, Ordering::Relaxed);
            let event = parse::<D>(payload);
            if case.parse_only {
                std::hint::black_box(event);
                continue;
            }
            let response = archiver
                .archive(STREAM_ARN, event.records, 0)
                .await
                .response;
            peak = peak.max(PEAK.load(Ordering::Relaxed) - baseline);
            TRACK.store(false, Ordering::Relaxed);
            assert!(
                response.batch_item_failures.is_empty(),
                "every record stored"
            );
        }
        if !tracked {
            wall = wall.min(wall_start.elapsed());
            cpu += thread_cpu() - cpu_start;
        }
    }
    let peak = peak as usize;
    let runs = u64::from(RUNS) + 1;
    Measured {
        cpu: cpu / RUNS,
        wall,
        peak,
        s3_puts: (s3.puts.load(Ordering::Relaxed) - puts_before) / runs,
        s3_bytes: (s3.bytes.load(Ordering::Relaxed) - bytes_before) / runs,
        batch_writes: (batch_write.num_calls() - batches_before) / runs as usize,
        put_items: (put_item.num_calls() - items_before) / runs as usize,
    }
}

/// `--table`: the DynamoDB archive's write rate on the local stack's moto
/// DynamoDB, through the real SDK client and the stack's endpoint: one
/// shard's 10,000 records of 1 KiB (10 s of a shard at its 1,000 records/s
/// limit) in the mapping's default batches of 1,000, for `ALL` and
/// `LATEST`, one request at a time and at the default concurrency.
async fn table_rates() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    use rewind_engine::sinks::dynamodb::DEFAULT_WRITE_CONCURRENCY;

    // `REWIND_DYNAMODB_ENDPOINT`: a moto server already running (the one
    // the local stack starts, on its own), so the stack's function builds
    // need not run first.
    let (stack, endpoint) = match std::env::var("REWIND_DYNAMODB_ENDPOINT") {
        Ok(endpoint) => (None, endpoint),
        Err(_) => {
            let (stack, _kinesis) = common::moto_stack().await;
            let endpoint = stack.endpoint_url();
            (Some(stack), endpoint)
        }
    };
    let config = rewind_local::sdk::config(&endpoint).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let records = batch();
    println!(
        "DynamoDB archive on the local stack (moto), {} records of {RECORD_BYTES} B, {KEYS} keys, batches of 1,000",
        records.len()
    );
    println!(
        "{:<10} {:>12} {:>10} {:>10} {:>13} {:>14}",
        "mode", "concurrency", "items", "wall s", "items/s", "records/s"
    );
    for (mode, name) in [(ArchiveMode::All, "ALL"), (ArchiveMode::Latest, "LATEST")] {
        for concurrency in [1, DEFAULT_WRITE_CONCURRENCY] {
            // A fresh table each run: LATEST's conditions would otherwise
            // lose against the previous run's items and write nothing.
            let table = format!("bench-{name}-{concurrency}").to_lowercase();
            let mut create = dynamodb
                .create_table()
                .table_name(&table)
                .billing_mode(BillingMode::PayPerRequest);
            for (attribute, kind) in [("pk", KeyType::Hash), ("sk", KeyType::Range)] {
                create = create
                    .attribute_definitions(
                        AttributeDefinition::builder()
                            .attribute_name(attribute)
                            .attribute_type(ScalarAttributeType::S)
                            .build()
                            .expect("attribute"),
                    )
                    .key_schema(
                        KeySchemaElement::builder()
                            .attribute_name(attribute)
                            .key_type(kind)
                            .build()
                            .expect("key"),
                    );
            }
            create.send().await.expect("create table");
            let archive =
                DynamoArchive::new(dynamodb.clone(), table, CountingStore::default(), "archive")
                    .with_concurrency(concurrency);
            let settings = StreamSettings {
                modes: vec![mode],
                ttl: None,
            };
            let started = Instant::now();
            let mut items = 0;
            for batch in records.chunks(1_000) {
                let written = archive.store(batch, &settings, 0).await;
                assert!(written.failed.is_empty(), "every record stored");
                items += written.items;
            }
            let wall = started.elapsed().as_secs_f64();
            println!(
                "{:<10} {:>12} {:>10} {:>10.2} {:>13.0} {:>14.0}",
                name,
                concurrency,
                items,
                wall,
                items as f64 / wall,
                records.len() as f64 / wall
            );
        }
    }
    if let Some(stack) = stack {
        stack.stop().await;
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `--levels` and `--table` choose a part.
    if std::env::args().any(|a| a == "--table") {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(table_rates());
        return;
    }
    let records = batch();
    let source = EventSource::new(STREAM_ARN, "arn:aws:iam::123456789012:role/archiver")
        .expect("valid stream ARN");
    let whole = vec![event::payload(&event::kinesis_event(&records, &source))];
    // As the mapping cuts a batch: records in order while the payload stays
    // under 6 MB.
    let mut cut: Vec<Vec<u8>> = Vec::new();
    let mut rest = records.as_slice();
    while !rest.is_empty() {
        let mut bytes = PAYLOAD_ENVELOPE_LEN;
        let mut n = 0;
        while n < rest.len() {
            let size = event::record_payload_len(&rest[n], &source) + usize::from(n > 0);
            if n > 0 && bytes + size > MAX_PAYLOAD_BYTES {
                break;
            }
            bytes += size;
            n += 1;
        }
        cut.push(event::payload(&event::kinesis_event(&rest[..n], &source)));
        rest = &rest[n..];
    }
    drop(records);
    let mib = |bytes: usize| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "one batch: {RECORDS} records of {RECORD_BYTES} B, {KEYS} partition keys; as one call: payload {:.1} MiB; as the mapping delivers it: {} invocations of at most {:.2} MiB; mean of {RUNS} runs",
        mib(whole[0].len()),
        cut.len(),
        mib(cut.iter().map(Vec::len).max().unwrap_or(0))
    );
    println!(
        "{:<52} {:>9} {:>9} {:>10} {:>9} {:>11} {:>12} {:>10}",
        "mode", "cpu ms", "wall ms", "peak MiB", "S3 puts", "S3 bytes", "BatchWrite", "PutItem"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let s3 = |compression: Compression, level: Option<u32>| {
        let shown = match (compression, level) {
            (Compression::None, _) => String::new(),
            (_, None) => " its default".to_owned(),
            (_, Some(l)) => format!(" {l}"),
        };
        // Zstd is the archiver's default compression; gzip has its own
        // default level.
        let chosen = match compression {
            _ if level.is_none() || level != default_level(compression) => "",
            Compression::Zstd => ", the archiver's default",
            _ => ", the archiver's level for it",
        };
        Case {
            name: format!("S3 ({compression}{shown}{chosen})"),
            modes: vec![],
            compression,
            level,
            parse_only: false,
            bytes: false,
        }
    };
    // The same case as the archiver ran it before it kept the delivered
    // base64: the data decoded when parsed, encoded again for the lines.
    let before = |case: Case| Case {
        name: format!("{}, data as bytes (before)", case.name),
        bytes: true,
        ..case
    };
    // The archiver's defaults: zstd at its default level.
    let dynamo = |name: &str, modes: Vec<ArchiveMode>| Case {
        name: format!("S3 + DynamoDB {name}"),
        modes,
        compression: Compression::Zstd,
        level: default_level(Compression::Zstd),
        parse_only: false,
        bytes: false,
    };
    // `--levels`: every gzip and zstd level in question, one call each;
    // otherwise the default and the DynamoDB modes, both ways.
    let levels = std::env::args().any(|a| a == "--levels");
    let cases: Vec<Case> = if levels {
        let parse = || Case {
            name: "parsing the payload only".to_owned(),
            parse_only: true,
            ..s3(Compression::None, None)
        };
        [
            before(parse()),
            before(s3(Compression::None, None)),
            parse(),
            s3(Compression::None, None),
        ]
        .into_iter()
        .chain(
            [1, 2, 3, 4, 5, 6, 9]
                .into_iter()
                .map(|l| s3(Compression::Gzip, Some(l))),
        )
        .chain(
            [1, 2, 3, 6, 9]
                .into_iter()
                .map(|l| s3(Compression::Zstd, Some(l))),
        )
        .collect()
    } else {
        vec![
            s3(Compression::Zstd, default_level(Compression::Zstd)),
            before(s3(Compression::Zstd, default_level(Compression::Zstd))),
            s3(Compression::Gzip, default_level(Compression::Gzip)),
            before(s3(Compression::Gzip, default_level(Compression::Gzip))),
            s3(Compression::Gzip, None),
            dynamo("ALL", vec![ArchiveMode::All]),
            dynamo("LATEST", vec![ArchiveMode::Latest]),
            dynamo("ALL,LATEST", vec![ArchiveMode::All, ArchiveMode::Latest]),
        ]
    };
    // `--case <text>`: only the cases whose name holds the text.
    let only = std::env::args()
        .skip_while(|a| a != "--case")
        .nth(1)
        .unwrap_or_default();
    let per_thousand = |n: usize| n as f64 * 1000.0 / RECORDS as f64;
    for (case, (how, payloads)) in cases
        .iter()
        .filter(|case| case.name.contains(&only))
        .flat_map(|case| [(case, ("1 call", &whole)), (case, ("6 MB calls", &cut))])
        .filter(|(_, (how, _))| !levels || *how == "6 MB calls")
    {
        let m = runtime.block_on(run(case, payloads));
        println!(
            "{:<52} {:>9.1} {:>9.0} {:>10.1} {:>9} {:>11} {:>12} {:>10}",
            format!("{}, {how}", case.name),
            m.cpu.as_secs_f64() * 1000.0,
            m.wall.as_secs_f64() * 1000.0,
            mib(m.peak),
            m.s3_puts,
            m.s3_bytes,
            m.batch_writes,
            m.put_items
        );
        println!(
            "{:<52} per 1,000 records: S3 PutObject {:.1}, DynamoDB BatchWriteItem {:.1}, PutItem {:.1}",
            "",
            per_thousand(m.s3_puts as usize),
            per_thousand(m.batch_writes),
            per_thousand(m.put_items)
        );
    }
}
