//! `rewind demo`: the whole story on the local stack, in one process.
//!
//! A stream of orders is archived by the real archiver function behind the
//! local event source mapping. Traffic comes in three phases: before an
//! outage, during it, after it. During the outage the stream is resharded
//! (2 -> 4 shards) and a few poison records are planted. Then the real replay
//! state machine (template.yaml's `ReplayStateMachine`) replays the outage
//! window from the S3 archive into the `target` consumer function, which
//! rejects poison; bisection isolates those records and they land in an S3
//! DLQ. The report shows what was produced, archived, in the window,
//! replayed, sent to the DLQ and accepted by the consumer, and checks that
//! the numbers add up. Every count comes from what the services answered or
//! hold (PutRecords answers, the archive read back, the execution's summary,
//! the DLQ objects, the consumer's own file), never from the plan.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kinesis::config::Credentials;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ScalingType, StreamStatus};
use aws_sdk_sfn::types::ExecutionStatus;
use clap::Args;
use rewind_engine::ArrivalTime;
use rewind_engine::jobs::mapping::{
    EventSourceMapping, LogOnlyDestination, MappingConfig, MappingReport, wall_clock,
};
use rewind_engine::jobs::replay::ReplaySummary;
use rewind_engine::jobs::scrape::{list_shards, resolve_stream_arn};
use rewind_engine::model::archive::ArchiveLayout;
use rewind_engine::model::event::EventSource;
use rewind_engine::model::kpl::{self, UserRecord};
use rewind_engine::model::seqno::SequenceNumber;
use rewind_engine::sinks::invoke::LambdaInvoker;
use rewind_engine::sinks::lambda::{FailureRecord, FunctionResponseType, MappingOptions};
use rewind_engine::sources::kinesis::{KinesisSource, StartPosition};
use rewind_engine::sources::s3_archive::{ShardScan, plan_scan};
use rewind_engine::store::S3Store;
use rewind_local::proxy::ACCOUNT;
use rewind_local::stack::LOCAL_ARCHIVE_BUCKET;
use rewind_local::statemachine::{self, Context};
use rewind_local::{Layout, LocalStack, Options};
use serde::Serialize;
use serde_json::json;

/// The archiver's key prefix (its `ARCHIVE_PREFIX` default).
const ARCHIVE_PREFIX: &str = "archive";
/// How long the mapping may take to archive what was put, and the replay to
/// finish: far above what either takes, so only a hang hits them.
const ARCHIVE_LIMIT: Duration = Duration::from_secs(180);
const EXECUTION_LIMIT: Duration = Duration::from_secs(300);
const PUT_LIMIT: Duration = Duration::from_secs(60);
/// Records per PutRecords call (the API takes up to 500).
const PUT_CHUNK: usize = 100;
/// Of every ten user records of a phase, this many travel in one KPL
/// aggregate, as a producer using the KPL next to plain producers would.
const AGGREGATED_PER_TEN: usize = 4;
const SHARDS: i32 = 2;
const SHARDS_AFTER_RESHARD: i32 = 4;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// User records to produce over the three phases (two fifths before the
    /// outage, three tenths during it, the rest after).
    #[arg(long, default_value_t = 600,
          value_parser = clap::value_parser!(u32).range(30..=5000))]
    records: u32,
    /// Print the report as JSON only (progress still goes to standard error).
    #[arg(long)]
    json: bool,
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let layout = Layout::current()?;
    let log = init_log(&layout)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(async {
        let started = Instant::now();
        progress(format_args!(
            "starting the local stack (first run installs the emulators and builds the functions; log: {})",
            log.display()
        ));
        // Ctrl-C must not end the process before the stack is stopped: its
        // servers live in process groups of their own, so nothing else
        // would stop them. Interrupting the start drops what it started,
        // which kills it.
        let interrupted = interrupted();
        tokio::pin!(interrupted);
        let stack = tokio::select! {
            stack = LocalStack::start(&layout, Options::default()) => {
                stack.context("starting the local stack")?
            }
            () = &mut interrupted => anyhow::bail!("interrupted while the local stack was starting"),
        };
        progress(format_args!(
            "local stack ready at {} in {:.0} s",
            stack.endpoint_url(),
            started.elapsed().as_secs_f64()
        ));
        let endpoint = stack.endpoint_url();
        let ports = stack.ports();
        let pids = stack.pids();
        // Whatever happens (an error, Ctrl-C), the stack is stopped before
        // the demo ends.
        let outcome = tokio::select! {
            outcome = scenario(&stack, &layout, &args) => outcome,
            () = &mut interrupted => Err(anyhow::anyhow!("interrupted")),
        };
        progress(format_args!("stopping the local stack"));
        stack.stop().await;
        let mut report = outcome?;
        report.stack = StackReport {
            endpoint,
            ports,
            pids,
            logs: layout.logs(),
            stopped: true,
        };
        report.elapsed_seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        anyhow::Ok(report)
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    let failed: Vec<&Check> = report.checks.iter().filter(|c| !c.ok).collect();
    anyhow::ensure!(
        failed.is_empty(),
        "the numbers don't add up: {}",
        failed
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    );
    Ok(())
}

/// Resolves on Ctrl-C; never, where the handler can't be installed (then
/// only the demo's own end or an error stops it, as without a terminal).
async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Engine and stack logs go to `.local/logs/demo.log`: throttles and
/// retries are part of the story (the endpoint enforces shard limits) but
/// would drown the report. RUST_LOG overrides the level.
fn init_log(layout: &Layout) -> anyhow::Result<PathBuf> {
    let dir = layout.logs();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("demo.log");
    let file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .init();
    Ok(path)
}

fn progress(message: std::fmt::Arguments<'_>) {
    eprintln!("demo: {message}");
}

// ---------------------------------------------------------------------------
// The traffic plan.

/// One Kinesis record to put: a plain user record or a KPL aggregate.
#[derive(Debug, Clone)]
struct Put {
    key: String,
    data: Vec<u8>,
    /// User records it carries: 1, or the aggregate's count.
    user_records: usize,
    aggregate: bool,
    poison: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
enum PhaseName {
    BeforeOutage,
    Outage,
    AfterOutage,
}

impl PhaseName {
    fn label(self) -> &'static str {
        match self {
            PhaseName::BeforeOutage => "before",
            PhaseName::Outage => "outage",
            PhaseName::AfterOutage => "after",
        }
    }
}

#[derive(Debug)]
struct Phase {
    name: PhaseName,
    puts: Vec<Put>,
    /// The stream is resharded after this many of `puts`.
    reshard_after: Option<usize>,
}

/// Poison records planted in the outage window: a few, more for more
/// traffic.
fn poison_count(records: usize) -> usize {
    (records / 100).clamp(2, 10)
}

const STATUSES: [&str; 4] = ["PLACED", "PAID", "PACKED", "SHIPPED"];

/// The three phases of `records` user records (orders numbered from 0
/// across phases), with `poison` of the outage's plain records planted.
fn plan(records: usize, poison: usize) -> anyhow::Result<Vec<Phase>> {
    let before = records * 2 / 5;
    let outage = records * 3 / 10;
    let sizes = [
        (PhaseName::BeforeOutage, before),
        (PhaseName::Outage, outage),
        (PhaseName::AfterOutage, records - before - outage),
    ];
    let mut order = 0usize;
    let mut phases = Vec::new();
    for (name, size) in sizes {
        let mut puts = Vec::new();
        let mut pending: Vec<UserRecord> = Vec::new();
        for i in 0..size {
            let key = format!("customer-{}", order % 8);
            let data = json!({
                "order": order,
                "customer": key,
                "status": STATUSES[order % STATUSES.len()],
                "amountCents": 500 + (order * 137) % 20_000,
            })
            .to_string()
            .into_bytes();
            order += 1;
            if i % 10 < AGGREGATED_PER_TEN {
                pending.push(UserRecord {
                    partition_key: key,
                    explicit_hash_key: None,
                    data,
                });
                if i % 10 == AGGREGATED_PER_TEN - 1 || i + 1 == size {
                    flush(&mut pending, &mut puts)?;
                }
            } else {
                puts.push(Put {
                    key,
                    data,
                    user_records: 1,
                    aggregate: false,
                    poison: false,
                });
            }
        }
        flush(&mut pending, &mut puts)?;
        let reshard_after = (name == PhaseName::Outage).then_some(puts.len() / 2);
        if name == PhaseName::Outage {
            // Spread over the window, on both sides of the reshard.
            let plain: Vec<usize> = (0..puts.len()).filter(|&i| !puts[i].aggregate).collect();
            anyhow::ensure!(
                plain.len() >= poison,
                "{records} records leave too few plain records in the outage for {poison} poison records"
            );
            for k in 0..poison {
                let index = plain[(2 * k + 1) * plain.len() / (2 * poison)];
                let put = &mut puts[index];
                let mut data = b"POISON ".to_vec();
                data.extend_from_slice(&put.data);
                put.data = data;
                put.poison = true;
            }
        }
        phases.push(Phase {
            name,
            puts,
            reshard_after,
        });
    }
    Ok(phases)
}

/// Packs the pending user records into KPL aggregates (one user record
/// alone is put plain: the KPL does not aggregate a single record).
fn flush(pending: &mut Vec<UserRecord>, puts: &mut Vec<Put>) -> anyhow::Result<()> {
    match pending.len() {
        0 => {}
        1 => {
            let user = pending.remove(0);
            puts.push(Put {
                key: user.partition_key,
                data: user.data,
                user_records: 1,
                aggregate: false,
                poison: false,
            });
        }
        _ => {
            for aggregate in kpl::aggregate(pending.drain(..)).context("KPL aggregation")? {
                puts.push(Put {
                    key: aggregate.partition_key,
                    data: aggregate.data,
                    user_records: aggregate.user_records,
                    aggregate: true,
                    poison: false,
                });
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The scenario.

/// A Kinesis record by where the stream put it.
type RecordId = (String, SequenceNumber);

/// What the stream accepted of one phase.
#[derive(Debug, Default)]
struct Placed {
    records: BTreeSet<RecordId>,
    poison: BTreeSet<RecordId>,
    user_records: usize,
    aggregates: usize,
    users_in_aggregates: usize,
}

struct Clients {
    kinesis: aws_sdk_kinesis::Client,
    s3: aws_sdk_s3::Client,
    sfn: aws_sdk_sfn::Client,
    lambda: aws_sdk_lambda::Client,
}

async fn sdk_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "rewind-demo"))
        .load()
        .await
}

async fn scenario(stack: &LocalStack, layout: &Layout, args: &DemoArgs) -> anyhow::Result<Report> {
    let sdk = sdk_config(&stack.endpoint_url()).await;
    let clients = Clients {
        kinesis: aws_sdk_kinesis::Client::new(&sdk),
        // Path-style: bucket names are not host names on a loopback endpoint.
        s3: aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(true)
                .build(),
        ),
        sfn: aws_sdk_sfn::Client::new(&sdk),
        lambda: aws_sdk_lambda::Client::new(&sdk),
    };
    let pid = std::process::id();
    let stream = format!("demo-orders-{pid}");
    let bucket = format!("rewind-demo-{pid}");
    let records = args.records as usize;
    let poison = poison_count(records);
    let phases = plan(records, poison)?;

    // The consumer appends to this file; an earlier run of the same pid
    // must not count.
    let consumer_file = layout
        .run_dir()
        .join("fixtures/target")
        .join(format!("{stream}.jsonl"));
    match std::fs::remove_file(&consumer_file) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error).with_context(|| format!("removing {}", consumer_file.display()));
        }
    }

    progress(format_args!(
        "creating stream {stream} ({SHARDS} shards) and bucket {bucket}"
    ));
    clients
        .kinesis
        .create_stream()
        .stream_name(&stream)
        .shard_count(SHARDS)
        .send()
        .await
        .with_context(|| format!("creating stream {stream}"))?;
    wait_active(&clients.kinesis, &stream).await?;
    clients
        .s3
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .with_context(|| format!("creating bucket {bucket}"))?;
    let stream_arn = resolve_stream_arn(&clients.kinesis, &stream).await?;

    // The archiver behind the event source mapping, with template.yaml's
    // mapping settings (bisect on function error, batch item failures,
    // retries until stored), from the start of the stream, batches of 100.
    let event_source = EventSource::new(
        stream_arn.clone(),
        format!("arn:aws:iam::{ACCOUNT}:role/rewind-demo-archiver-mapping"),
    )?;
    let config = MappingConfig {
        starting_position: StartPosition::TrimHorizon,
        options: MappingOptions {
            batch_size: 100,
            bisect_batch_on_function_error: true,
            function_response_types: vec![FunctionResponseType::ReportBatchItemFailures],
            ..MappingOptions::default()
        },
        ..MappingConfig::default()
    };
    config.validate()?;
    let shards = list_shards(&clients.kinesis, &stream_arn, &config.starting_position).await?;
    let source = KinesisSource::new(clients.kinesis.clone(), &stream_arn);
    let invoker = LambdaInvoker::new(clients.lambda.clone(), "archiver", None);
    let mapping = EventSourceMapping {
        source: &source,
        invoker: &invoker,
        destination: &LogOnlyDestination,
        event_source: &event_source,
        config: &config,
        now: wall_clock,
    };
    let (stop_mapping, stopped) = tokio::sync::oneshot::channel::<()>();
    progress(format_args!(
        "archiver attached: the local event source mapping polls {} shard(s) from TRIM_HORIZON",
        shards.len()
    ));
    let mapping_run = mapping.run(shards, async {
        // A dropped sender stops the mapping too.
        let _ = stopped.await;
    });
    tokio::pin!(mapping_run);

    let story = async {
        let traffic = produce(&clients.kinesis, &stream, &phases).await?;
        let put: BTreeSet<RecordId> = traffic
            .placed
            .iter()
            .flat_map(|(_, p)| p.records.iter().cloned())
            .collect();
        let store = S3Store::new(clients.s3.clone(), LOCAL_ARCHIVE_BUCKET);
        let archived = wait_archived(&store, &stream, &put, traffic.started).await?;
        // The window as the replay will read it, from the archive.
        let in_window = read_archive(
            &store,
            &stream,
            ArrivalTime::from_epoch_millis(traffic.window.0 * 1000),
            ArrivalTime::from_epoch_millis(traffic.window.1 * 1000),
        )
        .await?;
        let replay = replay(&clients, layout, &stream, &bucket, traffic.window).await?;
        anyhow::Ok((traffic, archived, in_window, replay))
    };
    // The mapping runs until told to stop: ending before that is a failure
    // of the archiving, and the story can't go on.
    let (traffic, archived, in_window, replay) = tokio::select! {
        story = story => story?,
        outcome = &mut mapping_run => {
            let detail = match outcome {
                Ok(report) => format!("it stopped by itself ({:?})", report.stopped),
                Err(error) => format!("{error:#}: {:?}", error.report),
            };
            anyhow::bail!("the event source mapping stopped before the demo was done: {detail}");
        }
    };
    let _ = stop_mapping.send(());
    let mapping_report = mapping_run
        .await
        .map_err(|error| anyhow::Error::new(error.source).context("the archiver's mapping"))?;

    let consumer = consumer_count(&consumer_file)?;
    Ok(Report::new(ReportParts {
        stream,
        stream_arn,
        bucket,
        phases: &phases,
        traffic,
        archived,
        in_window,
        replay,
        consumer,
        consumer_file,
        mapping: mapping_report,
    }))
}

/// What the producers did.
struct Traffic {
    placed: Vec<(PhaseName, Placed)>,
    /// The outage window `[from, to)`, epoch seconds.
    window: (i64, i64),
    /// Before the first put.
    started: ArrivalTime,
    shards_after: usize,
}

/// Puts the phases, a whole second apart: the outage window `[T1, T2)`
/// starts at the first whole second after the last record before it, and
/// ends at the first whole second after its own last record, and the next
/// phase starts only once the clock is past each bound. Arrival times are
/// stamped between a PutRecords call's start and its answer, so no record
/// of a neighbouring phase can fall inside the window. (The archive read
/// back checks it.)
async fn produce(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    phases: &[Phase],
) -> anyhow::Result<Traffic> {
    let started = wall_clock();
    let mut placed = Vec::new();
    let mut window = (0, 0);
    for phase in phases {
        let boundary = next_second(wall_clock());
        match phase.name {
            PhaseName::BeforeOutage => {}
            PhaseName::Outage => window.0 = boundary,
            PhaseName::AfterOutage => window.1 = boundary,
        }
        if phase.name != PhaseName::BeforeOutage {
            sleep_past(boundary).await;
        }
        let mut accepted = Placed::default();
        match phase.reshard_after {
            Some(split) => {
                put_all(kinesis, stream, &phase.puts[..split], &mut accepted).await?;
                progress(format_args!(
                    "outage: resharding {stream} {SHARDS} -> {SHARDS_AFTER_RESHARD} shards (UniformScaling)"
                ));
                kinesis
                    .update_shard_count()
                    .stream_name(stream)
                    .target_shard_count(SHARDS_AFTER_RESHARD)
                    .scaling_type(ScalingType::UniformScaling)
                    .send()
                    .await
                    .with_context(|| format!("resharding {stream}"))?;
                wait_active(kinesis, stream).await?;
                put_all(kinesis, stream, &phase.puts[split..], &mut accepted).await?;
            }
            None => put_all(kinesis, stream, &phase.puts, &mut accepted).await?,
        }
        progress(format_args!(
            "{}: put {} user records as {} Kinesis records ({} KPL aggregates, {} poison)",
            phase.name.label(),
            accepted.user_records,
            accepted.records.len(),
            accepted.aggregates,
            accepted.poison.len()
        ));
        placed.push((phase.name, accepted));
    }
    let shards_after = kinesis
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .with_context(|| format!("listing the shards of {stream}"))?
        .shards()
        .len();
    Ok(Traffic {
        placed,
        window,
        started,
        shards_after,
    })
}

/// The first whole epoch second after `at` (a whole second itself moves to
/// the next, so the bound is strictly after every earlier arrival).
fn next_second(at: ArrivalTime) -> i64 {
    at.epoch_millis().div_euclid(1000) + 1
}

/// Sleeps until the wall clock is past `second` (with a margin for clocks
/// read in different processes).
async fn sleep_past(second: i64) {
    let wait = second * 1000 + 50 - wall_clock().epoch_millis();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
}

/// Puts `puts` in order with PutRecords, retrying only the failed entries
/// (throttled by the shard limits the endpoint enforces), ahead of the rest
/// so each partition key keeps its order.
async fn put_all(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    puts: &[Put],
    accepted: &mut Placed,
) -> anyhow::Result<()> {
    let mut pending: VecDeque<&Put> = puts.iter().collect();
    let started = Instant::now();
    let mut backoff = Duration::from_millis(100);
    while !pending.is_empty() {
        anyhow::ensure!(
            started.elapsed() < PUT_LIMIT,
            "{} records still not accepted by {stream} after {PUT_LIMIT:?}",
            pending.len()
        );
        let chunk: Vec<&Put> = pending.drain(..pending.len().min(PUT_CHUNK)).collect();
        let entries = chunk
            .iter()
            .map(|put| {
                PutRecordsRequestEntry::builder()
                    .partition_key(&put.key)
                    .data(Blob::new(put.data.clone()))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .context("building PutRecords entries")?;
        let output = kinesis
            .put_records()
            .stream_name(stream)
            .set_records(Some(entries))
            .send()
            .await
            .with_context(|| format!("PutRecords to {stream}"))?;
        let mut failed = Vec::new();
        for (entry, put) in output.records().iter().zip(&chunk) {
            match (entry.shard_id(), entry.sequence_number()) {
                (Some(shard), Some(sequence)) if entry.error_code().is_none() => {
                    let id = (shard.to_owned(), SequenceNumber::parse(sequence)?);
                    if put.poison {
                        accepted.poison.insert(id.clone());
                    }
                    accepted.records.insert(id);
                    accepted.user_records += put.user_records;
                    if put.aggregate {
                        accepted.aggregates += 1;
                        accepted.users_in_aggregates += put.user_records;
                    }
                }
                _ => failed.push(*put),
            }
        }
        if failed.is_empty() {
            backoff = Duration::from_millis(100);
        } else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            for put in failed.into_iter().rev() {
                pending.push_front(put);
            }
        }
    }
    Ok(())
}

async fn wait_active(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let summary = kinesis
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .with_context(|| format!("describing {stream}"))?;
        if summary
            .stream_description_summary()
            .map(|s| s.stream_status())
            == Some(&StreamStatus::Active)
        {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "stream {stream} not ACTIVE after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The archive's records of `stream` that arrived in `from..to`, each once
/// (the archive's own reader: overlapping objects deduplicated).
async fn read_archive(
    store: &S3Store,
    stream: &str,
    from: ArrivalTime,
    to: ArrivalTime,
) -> anyhow::Result<BTreeSet<RecordId>> {
    let layout = ArchiveLayout::default();
    let shards = plan_scan(store, &layout, stream, from, to)
        .await
        .with_context(|| format!("listing the archive of {stream}"))?;
    let mut records = BTreeSet::new();
    for (shard, objects) in shards {
        let mut scan = ShardScan::new(objects, from, to);
        while let Some(batch) = scan
            .next_batch(store)
            .await
            .with_context(|| format!("reading the archive of {stream}, {shard}"))?
        {
            records.extend(
                batch
                    .into_iter()
                    .map(|record| (record.shard_id, record.sequence_number)),
            );
        }
    }
    Ok(records)
}

/// Waits until the archive holds every record put (the mapping has
/// delivered them all to the archiver, across the reshard); returns what it
/// holds.
async fn wait_archived(
    store: &S3Store,
    stream: &str,
    put: &BTreeSet<RecordId>,
    started: ArrivalTime,
) -> anyhow::Result<BTreeSet<RecordId>> {
    progress(format_args!(
        "waiting for the archiver to hold all {} Kinesis records",
        put.len()
    ));
    let begun = Instant::now();
    // Wide bounds: every record of this run arrived between them.
    let from = ArrivalTime::from_epoch_millis(started.epoch_millis() - 60_000);
    loop {
        let to = ArrivalTime::from_epoch_millis(wall_clock().epoch_millis() + 60_000);
        let archived = read_archive(store, stream, from, to).await?;
        if archived.is_superset(put) {
            progress(format_args!(
                "archived: {} Kinesis records in {:.0} s",
                archived.len(),
                begun.elapsed().as_secs_f64()
            ));
            return Ok(archived);
        }
        anyhow::ensure!(
            begun.elapsed() < ARCHIVE_LIMIT,
            "the archive holds {} of the {} records put after {ARCHIVE_LIMIT:?} (see .local/logs/demo.log)",
            archived.intersection(put).count(),
            put.len()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// What the replay execution did.
struct ReplayOutcome {
    execution_arn: String,
    run_id: String,
    summary: ReplaySummary,
    dlq: DlqContents,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct DlqContents {
    /// Failure records (one object each).
    objects: usize,
    /// Kinesis records they name (`KinesisBatchInfo.batchSize`).
    records: u64,
    /// Their (shard, first sequence number), to match against the poison.
    #[serde(skip)]
    starts: BTreeSet<RecordId>,
    /// Where the demo saved them: the stack's S3 goes away with the stack.
    saved_to: PathBuf,
}

/// Runs template.yaml's replay state machine over the outage window into the
/// `target` consumer.
async fn replay(
    clients: &Clients,
    layout: &Layout,
    stream: &str,
    bucket: &str,
    window: (i64, i64),
) -> anyhow::Result<ReplayOutcome> {
    let template = layout.root.join("template.yaml");
    let machine = statemachine::load(&template, "ReplayStateMachine", &Context::default())
        .with_context(|| format!("loading ReplayStateMachine from {}", template.display()))?;
    let pid = std::process::id();
    let machine_arn = statemachine::create(&clients.sfn, &format!("rewind-demo-{pid}"), &machine)
        .await
        .context("creating the replay state machine")?;
    let run_id = format!("demo-{pid}-{}", window.0);
    let input = json!({
        "source": {"type": "ARCHIVE", "bucket": LOCAL_ARCHIVE_BUCKET, "prefix": ARCHIVE_PREFIX,
                   "stream": stream, "from": window.0, "to": window.1},
        "target": {"type": "FUNCTION", "functionName": "target"},
        "options": {"BatchSize": 25, "BisectBatchOnFunctionError": true, "MaximumRetryAttempts": 1,
                    "FunctionResponseTypes": ["ReportBatchItemFailures"]},
        "dlq": {"type": "S3", "bucket": bucket, "prefix": "dlq"},
        "maxConcurrency": 2
    });
    progress(format_args!(
        "replaying the outage window [{}, {}) from the archive into `target` (execution {run_id})",
        window.0, window.1
    ));
    let begun = Instant::now();
    let described = statemachine::execute(
        &clients.sfn,
        &machine_arn,
        &run_id,
        &input.to_string(),
        EXECUTION_LIMIT,
    )
    .await
    .context("running the replay execution")?;
    let execution_arn = described.execution_arn().to_owned();
    anyhow::ensure!(
        *described.status() == ExecutionStatus::Succeeded,
        "the replay execution {execution_arn} ended {}: {} {} (logs: {})",
        described.status(),
        described.error().unwrap_or_default(),
        described.cause().unwrap_or_default(),
        layout.logs().display()
    );
    let output: serde_json::Value = serde_json::from_str(described.output().unwrap_or("null"))
        .with_context(|| format!("the output of {execution_arn}"))?;
    let summary: ReplaySummary = serde_json::from_value(output["summary"].clone())
        .with_context(|| format!("the replay summary in the output of {execution_arn}"))?;
    progress(format_args!(
        "replay done in {:.0} s",
        begun.elapsed().as_secs_f64()
    ));
    let saved_to = layout.run_dir().join("demo").join(&run_id).join("dlq");
    let dlq = read_dlq(
        &clients.s3,
        bucket,
        &format!("dlq/aws/lambda/{run_id}/"),
        saved_to,
    )
    .await?;
    Ok(ReplayOutcome {
        execution_arn,
        run_id,
        summary,
        dlq,
    })
}

/// Reads the run's DLQ folder, and saves each failure record under
/// `saved_to` (the stack's S3 is gone once the demo ends).
async fn read_dlq(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    saved_to: PathBuf,
) -> anyhow::Result<DlqContents> {
    let mut contents = DlqContents {
        saved_to,
        ..DlqContents::default()
    };
    let mut pages = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.with_context(|| format!("listing s3://{bucket}/{prefix}"))?;
        for object in page.contents() {
            let key = object.key().unwrap_or_default();
            let body = s3
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .with_context(|| format!("reading s3://{bucket}/{key}"))?
                .body
                .collect()
                .await
                .with_context(|| format!("reading s3://{bucket}/{key}"))?
                .into_bytes();
            let record: FailureRecord = serde_json::from_slice(&body)
                .with_context(|| format!("s3://{bucket}/{key} is not a failure record"))?;
            let info = &record.kinesis_batch_info;
            contents.objects += 1;
            contents.records += info.batch_size as u64;
            contents.starts.insert((
                info.shard_id.clone(),
                SequenceNumber::parse(&info.start_sequence_number)?,
            ));
            let path = contents
                .saved_to
                .join(key.strip_prefix(prefix).unwrap_or(key));
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::write(&path, &body).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(contents)
}

/// What the consumer accepted, from its own file: records, and distinct
/// event ids among them.
fn consumer_count(path: &Path) -> anyhow::Result<(usize, usize)> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        // No accepted batch: the consumer never wrote.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    };
    let mut records = 0;
    let mut ids = BTreeSet::new();
    for line in text.lines() {
        let batch: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("a line of {} is not JSON", path.display()))?;
        for record in batch["records"].as_array().into_iter().flatten() {
            records += 1;
            ids.insert(record["eventID"].as_str().unwrap_or_default().to_owned());
        }
    }
    Ok((records, ids.len()))
}

// ---------------------------------------------------------------------------
// The report.

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    stream: String,
    stream_arn: String,
    shards: ShardsReport,
    produced: Produced,
    archived: Archived,
    window: WindowReport,
    replay: ReplayReport,
    dlq: DlqReport,
    consumer: ConsumerReport,
    mapping: MappingSummary,
    checks: Vec<Check>,
    stack: StackReport,
    elapsed_seconds: f64,
    note: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ShardsReport {
    before: i32,
    after_reshard: i32,
    /// Open and closed shards at the end (the parents stay, closed).
    listed_at_end: usize,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Produced {
    user_records: usize,
    kinesis_records: usize,
    kpl_aggregates: usize,
    user_records_in_aggregates: usize,
    poison: usize,
    phases: Vec<PhaseReport>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PhaseReport {
    phase: PhaseName,
    user_records: usize,
    kinesis_records: usize,
    kpl_aggregates: usize,
    poison: usize,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Archived {
    kinesis_records: usize,
    location: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WindowReport {
    from: i64,
    to: i64,
    /// Kinesis records of the archive in the window.
    kinesis_records: usize,
    /// How many of them the outage phase put.
    from_outage_phase: usize,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReplayReport {
    execution_arn: String,
    run_id: String,
    records: u64,
    delivered: u64,
    failed_records: u64,
    invocations: u64,
    function_errors: u64,
    shards: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DlqReport {
    records: u64,
    objects: usize,
    poison_planted: usize,
    /// DLQ records that are planted poison records.
    poison_found: usize,
    location: String,
    saved_to: PathBuf,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ConsumerReport {
    records: usize,
    distinct: usize,
    file: PathBuf,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct MappingSummary {
    records: u64,
    invocations: u64,
    function_errors: u64,
    shards: usize,
}

#[derive(Debug, Serialize)]
struct Check {
    name: String,
    ok: bool,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct StackReport {
    endpoint: String,
    /// Every port the stack listened on, the endpoint's first: all closed
    /// when the demo ends.
    ports: Vec<u16>,
    /// The servers' process ids: all gone when the demo ends.
    pids: Vec<u32>,
    logs: PathBuf,
    stopped: bool,
}

struct ReportParts<'a> {
    stream: String,
    stream_arn: String,
    bucket: String,
    phases: &'a [Phase],
    traffic: Traffic,
    archived: BTreeSet<RecordId>,
    in_window: BTreeSet<RecordId>,
    replay: ReplayOutcome,
    consumer: (usize, usize),
    consumer_file: PathBuf,
    mapping: MappingReport,
}

const NOTE: &str = "KPL aggregates travel as one Kinesis record each: the mapping, the \
archive and the replay deliver them whole (the consumer deaggregates), so every count after \
`produced` is in Kinesis records.";

impl Report {
    fn new(parts: ReportParts<'_>) -> Report {
        let ReportParts {
            stream,
            stream_arn,
            bucket,
            phases,
            traffic,
            archived,
            in_window,
            replay,
            consumer,
            consumer_file,
            mapping,
        } = parts;
        let phase_reports: Vec<PhaseReport> = traffic
            .placed
            .iter()
            .map(|(name, placed)| PhaseReport {
                phase: *name,
                user_records: placed.user_records,
                kinesis_records: placed.records.len(),
                kpl_aggregates: placed.aggregates,
                poison: placed.poison.len(),
            })
            .collect();
        let sum =
            |f: fn(&Placed) -> usize| -> usize { traffic.placed.iter().map(|(_, p)| f(p)).sum() };
        let produced = Produced {
            user_records: sum(|p| p.user_records),
            kinesis_records: sum(|p| p.records.len()),
            kpl_aggregates: sum(|p| p.aggregates),
            user_records_in_aggregates: sum(|p| p.users_in_aggregates),
            poison: sum(|p| p.poison.len()),
            phases: phase_reports,
        };
        let outage: BTreeSet<RecordId> = traffic
            .placed
            .iter()
            .filter(|(name, _)| *name == PhaseName::Outage)
            .flat_map(|(_, p)| p.records.iter().cloned())
            .collect();
        let poison: BTreeSet<RecordId> = traffic
            .placed
            .iter()
            .flat_map(|(_, p)| p.poison.iter().cloned())
            .collect();
        let put: BTreeSet<RecordId> = traffic
            .placed
            .iter()
            .flat_map(|(_, p)| p.records.iter().cloned())
            .collect();
        let totals = &replay.summary.totals;
        let dlq_location = replay
            .summary
            .dlq
            .clone()
            .unwrap_or_else(|| format!("s3://{bucket}/dlq/aws/lambda/{}", replay.run_id));
        let planned: usize = phases.iter().map(|p| p.puts.len()).sum();
        let checks = vec![
            Check {
                name: format!("every record planned was put ({planned})"),
                ok: put.len() == planned,
            },
            Check {
                name: "archived = produced (Kinesis records, each once)".to_owned(),
                ok: archived == put,
            },
            Check {
                name: "the window holds exactly the outage's records".to_owned(),
                ok: in_window == outage,
            },
            Check {
                name: "the replay read the window".to_owned(),
                ok: totals.records == in_window.len() as u64,
            },
            Check {
                name: "replayed + DLQ = window".to_owned(),
                ok: totals.delivered + replay.dlq.records == in_window.len() as u64,
            },
            Check {
                name: "DLQ = poison planted (the very records)".to_owned(),
                ok: replay.dlq.records == poison.len() as u64 && replay.dlq.starts == poison,
            },
            Check {
                name: "consumer = replayed, each record once".to_owned(),
                ok: consumer.0 as u64 == totals.delivered && consumer.1 == consumer.0,
            },
        ];
        Report {
            shards: ShardsReport {
                before: SHARDS,
                after_reshard: SHARDS_AFTER_RESHARD,
                listed_at_end: traffic.shards_after,
            },
            produced,
            archived: Archived {
                kinesis_records: archived.len(),
                location: format!("s3://{LOCAL_ARCHIVE_BUCKET}/{ARCHIVE_PREFIX}/stream={stream}/"),
            },
            window: WindowReport {
                from: traffic.window.0,
                to: traffic.window.1,
                kinesis_records: in_window.len(),
                from_outage_phase: in_window.intersection(&outage).count(),
            },
            replay: ReplayReport {
                execution_arn: replay.execution_arn,
                run_id: replay.run_id,
                records: totals.records,
                delivered: totals.delivered,
                failed_records: totals.failed_records,
                invocations: totals.invocations,
                function_errors: totals.function_errors,
                shards: totals.shards,
            },
            dlq: DlqReport {
                records: replay.dlq.records,
                objects: replay.dlq.objects,
                poison_planted: poison.len(),
                poison_found: replay.dlq.starts.intersection(&poison).count(),
                location: dlq_location,
                saved_to: replay.dlq.saved_to,
            },
            consumer: ConsumerReport {
                records: consumer.0,
                distinct: consumer.1,
                file: consumer_file,
            },
            mapping: MappingSummary {
                records: mapping.records(),
                invocations: mapping.shards.iter().map(|s| s.invocations).sum(),
                function_errors: mapping.shards.iter().map(|s| s.function_errors).sum(),
                shards: mapping.shards.len(),
            },
            checks,
            stack: StackReport::default(),
            elapsed_seconds: 0.0,
            note: NOTE,
            stream,
            stream_arn,
        }
    }

    fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let p = &self.produced;
        let _ = writeln!(
            out,
            "\nKinesis Rewind demo: stream {} ({} shards, resharded to {} during the outage)\n",
            self.stream, self.shards.before, self.shards.after_reshard
        );
        let _ = writeln!(
            out,
            "produced       {} user records as {} Kinesis records ({} KPL aggregates holding {} user records)",
            p.user_records, p.kinesis_records, p.kpl_aggregates, p.user_records_in_aggregates
        );
        for phase in &p.phases {
            let _ = writeln!(
                out,
                "  {:<12} {} user / {} Kinesis records, {} aggregates{}",
                phase.phase_label(),
                phase.user_records,
                phase.kinesis_records,
                phase.kpl_aggregates,
                if phase.poison > 0 {
                    format!(", {} poison planted", phase.poison)
                } else {
                    String::new()
                }
            );
        }
        let _ = writeln!(
            out,
            "archived       {} Kinesis records by the archiver behind the event source mapping ({} invocations, {} shards polled)",
            self.archived.kinesis_records, self.mapping.invocations, self.mapping.shards
        );
        let _ = writeln!(
            out,
            "outage window  [{}, {}): {} Kinesis records in the archive ({} of them put during the outage)",
            self.window.from,
            self.window.to,
            self.window.kinesis_records,
            self.window.from_outage_phase
        );
        let _ = writeln!(
            out,
            "replayed       {} delivered to `target` over {} shards ({} invocations, {} function errors bisected)",
            self.replay.delivered,
            self.replay.shards,
            self.replay.invocations,
            self.replay.function_errors
        );
        let _ = writeln!(
            out,
            "DLQ            {} records in {} objects: {} of the {} poison records planted",
            self.dlq.records, self.dlq.objects, self.dlq.poison_found, self.dlq.poison_planted
        );
        let _ = writeln!(
            out,
            "consumer       {} records accepted ({} distinct), by its own count",
            self.consumer.records, self.consumer.distinct
        );
        let _ = writeln!(out, "\nchecks");
        for check in &self.checks {
            let _ = writeln!(
                out,
                "  {} {}",
                if check.ok { "ok      " } else { "MISMATCH" },
                check.name
            );
        }
        let _ = writeln!(out, "\n{}", textwrap(self.note));
        let _ = writeln!(out, "\nwhere to look");
        let _ = writeln!(
            out,
            "  archive      {} (in the stack's S3, gone with it)",
            self.archived.location
        );
        let _ = writeln!(
            out,
            "  DLQ          {}/ (saved to {})",
            self.dlq.location,
            self.dlq.saved_to.display()
        );
        let _ = writeln!(out, "  execution    {}", self.replay.execution_arn);
        let _ = writeln!(out, "  consumer     {}", self.consumer.file.display());
        let _ = writeln!(
            out,
            "  logs         {} (demo.log: the mapping, the archiver's invocations, throttles)",
            self.stack.logs.display()
        );
        let _ = writeln!(
            out,
            "\nthe local stack is stopped; took {:.0} s",
            self.elapsed_seconds
        );
        out
    }
}

impl PhaseReport {
    fn phase_label(&self) -> &'static str {
        self.phase.label()
    }
}

/// Wraps a paragraph at 78 columns.
fn textwrap(text: &str) -> String {
    let mut out = String::new();
    let mut line = 0;
    for word in text.split_whitespace() {
        if line > 0 && line + 1 + word.len() > 78 {
            out.push('\n');
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += word.len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_splits_phases_aggregates_and_plants_poison_in_the_outage() {
        for records in [30, 60, 600, 1001] {
            let poison = poison_count(records);
            let phases = plan(records, poison).unwrap();
            let users: usize = phases
                .iter()
                .flat_map(|p| &p.puts)
                .map(|p| p.user_records)
                .sum();
            assert_eq!(users, records);
            for phase in &phases {
                let planted = phase.puts.iter().filter(|p| p.poison).count();
                let expected = if phase.name == PhaseName::Outage {
                    poison
                } else {
                    0
                };
                assert_eq!(planted, expected, "{records}: {:?}", phase.name);
                assert!(phase.puts.iter().any(|p| p.aggregate), "{records}");
                for put in &phase.puts {
                    assert_eq!(put.poison, put.data.starts_with(b"POISON"));
                    assert_eq!(put.aggregate, kpl::is_aggregated(&put.data));
                    if put.aggregate {
                        let users = kpl::deaggregate(&put.data).unwrap().unwrap();
                        assert_eq!(users.len(), put.user_records);
                        assert!(users.iter().all(|u| !u.data.starts_with(b"POISON")));
                    }
                }
            }
            // Poison on both sides of the reshard.
            let outage = &phases[1];
            let split = outage.reshard_after.unwrap();
            assert!(outage.puts[..split].iter().any(|p| p.poison));
            assert!(outage.puts[split..].iter().any(|p| p.poison));
        }
    }

    #[test]
    fn window_bounds_are_strictly_after_the_last_arrival() {
        assert_eq!(next_second(ArrivalTime::from_epoch_millis(1_000)), 2);
        assert_eq!(next_second(ArrivalTime::from_epoch_millis(1_999)), 2);
    }
}
