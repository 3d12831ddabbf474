//! `scale`: issue 14's scale run on the local stack (`bin/scale` runs it; a
//! command, not a test: it measures and reports, and fails only when a
//! record is lost, duplicated or out of order, or a part fails).
//!
//! On its own stack (moto serving Kinesis, for volume; the endpoint
//! enforcing the shard limits; every function allowed `--shards` instances
//! at once, as many as Lambda would run for one replay group or one
//! archived shard each):
//! 1. a stream of `--shards` shards gets `--records-per-shard` records on
//!    each (explicit hash keys place them evenly), every one asking
//!    `target` to take `--sleep-ms` per batch;
//! 2. the real archiver archives them behind the engine's event source
//!    mapping (as the archiver test runs it), shard markers and all;
//! 3. moto's own GetRecords ceiling is measured (moto alone, then through
//!    the endpoint), so that the scrape's figure can be read against it;
//! 4. the real scrape state machine scrapes every shard at once
//!    (`maxConcurrency` = shards); every record is read back from its
//!    manifest and compared;
//! 5. the real replay state machine replays the archive's window into
//!    `target` at each `--concurrency`; `target`'s accepted batches must
//!    hold every record exactly once, each key's in order, with the
//!    stream's own ARN.
//!
//! The report (Markdown) goes to stdout and `--out`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aws_sdk_sfn::types::ExecutionStatus;
use rewind_engine::jobs::mapping::report::Stopped;
use rewind_engine::jobs::mapping::wall_clock;
use rewind_engine::sinks::dlq::LogOnlyDestination;
use rewind_engine::sinks::lambda::invoker::LambdaInvoker;
use rewind_engine::sources::RecordSource;
use rewind_engine::sources::kinesis::KinesisSource;
use rewind_engine::sources::manifest::ManifestSource;
use rewind_engine::store::S3Store;
use rewind_local::stack::LOCAL_ARCHIVE_BUCKET;
use rewind_local::statemachine::{self, Context};
use rewind_local::{KinesisBackend, Layout, LocalStack, Options};
use rewind_tests::{archiver_mapping, create_stream, put_entries, unique};
use serde_json::{Value, json};
use tracing::info;

mod args;
mod ceiling;
mod deliveries;

use args::Args;
use deliveries::{Expected, Record};

const MIB: f64 = 1024.0 * 1024.0;
/// GetRecords' read limit of a shard: 2 MiB/s
/// (https://docs.aws.amazon.com/streams/latest/dev/service-sizes-and-limits.html).
const SHARD_READ_LIMIT: f64 = 2.0 * MIB;
/// Longest any one phase may take before the run gives up.
const PHASE_LIMIT: Duration = Duration::from_secs(1800);
/// What a cold run's figure includes. `cargo lambda watch` starts each
/// instance with `cargo run`, and those wait for one another on cargo's
/// locks: a second or more each on a busy machine, against Lambda's
/// fraction of a second (BENCHMARKS.md, "Function packages").
const COLD: &str = " (cold: includes starting the functions' instances, one after another)";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,scale=info".into()))
        .with_writer(std::io::stderr)
        .init();
    let layout = Layout::current()?;
    let dir = layout.run_dir().join("scale");
    let args = Args::parse(std::env::args().skip(1), dir.join("results.md"))?;
    std::fs::create_dir_all(&dir)?;
    let options = Options {
        kinesis: KinesisBackend::Moto,
        shard_limits: true,
        function_concurrency: NonZeroUsize::new(args.shards).context("--shards is at least 1")?,
    };
    info!(shards = args.shards, "starting the local stack");
    let stack = LocalStack::start(&layout, options).await?;
    let result = run(&stack, &layout, &args).await;
    stack.stop().await;
    let report = result?;
    print!("{report}");
    std::fs::write(&args.out, &report).with_context(|| args.out.display().to_string())?;
    eprintln!("report written to {}", args.out.display());
    Ok(())
}

/// The whole run against a started stack; the report's Markdown.
async fn run(stack: &LocalStack, layout: &Layout, args: &Args) -> anyhow::Result<String> {
    let sdk = rewind_local::sdk::config(&stack.endpoint_url()).await;
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    let s3 = rewind_local::sdk::s3_client(&sdk);
    let sfn = aws_sdk_sfn::Client::new(&sdk);
    let lambda = aws_sdk_lambda::Client::new(&sdk);
    // The stack's servers: moto first, then (with moto serving Kinesis)
    // cargo lambda, the parent of every function instance.
    let pids = stack.pids();
    let mut report = Report::new(args, pids.first().copied(), pids.get(1).copied());

    let stream = unique("scale");
    let bucket = stream.to_lowercase();
    s3.create_bucket().bucket(&bucket).send().await?;
    create_stream(&kinesis, &stream, args.shards as i32).await?;
    let stream_arn = format!(
        "arn:aws:kinesis:us-east-1:{}:stream/{stream}",
        rewind_local::proxy::ACCOUNT
    );

    // 1. Puts.
    report.start();
    let started = Instant::now();
    let window_from = wall_clock();
    let expected = put(&kinesis, &stream, args).await?;
    let window_to = wall_clock();
    report.phase("put", started.elapsed(), expected.bytes(), "");

    // 2. The archiver, behind the mapping as template.yaml sets it up
    // (BatchSize 1000, a 1 s batching window).
    report.start();
    let started = Instant::now();
    let (mapping, shards) = archiver_mapping(
        &kinesis,
        &stream,
        1000,
        Duration::from_secs(1),
        Duration::from_secs(5),
    )
    .await?;
    let invoker = LambdaInvoker::new(lambda.clone(), "archiver", None);
    let archived = mapping
        .run(
            &invoker,
            &LogOnlyDestination,
            shards,
            tokio::time::sleep(PHASE_LIMIT),
        )
        .await?;
    anyhow::ensure!(archived.stopped == Stopped::Idle, "{archived:#?}");
    let mut invocations = 0;
    for shard in &archived.shards {
        let put = expected.on_shard(&shard.shard_id);
        anyhow::ensure!(
            shard.records == put
                && shard.counters.delivered == put
                && shard.counters.failed_records == 0,
            "the archiver did not store every record of {}: {shard:?} ({put} put)",
            shard.shard_id
        );
        invocations += shard.counters.invocations;
    }
    report.phase(
        "archive (the archiver behind the mapping)",
        started.elapsed(),
        expected.bytes(),
        &format!("{invocations} invocations"),
    );

    // 3. moto's GetRecords ceiling: moto alone, then through the endpoint
    // (with its shard limits), every shard at once and one at a time.
    let moto = KinesisSource::new(
        aws_sdk_kinesis::Client::new(&rewind_local::sdk::config(&stack.moto_url()).await),
        &stream_arn,
    );
    let endpoint = KinesisSource::new(kinesis.clone(), &stream_arn);
    let shard_ids = expected.shard_ids();
    for (what, source, parallel) in [
        ("GetRecords, moto alone, one shard at a time", &moto, false),
        ("GetRecords, moto alone, every shard at once", &moto, true),
        (
            "GetRecords through the endpoint, every shard at once",
            &endpoint,
            true,
        ),
    ] {
        report.start();
        let (bytes, took) = ceiling::read_stream(source, &shard_ids, parallel).await?;
        anyhow::ensure!(
            bytes == expected.bytes(),
            "{what}: read {bytes} bytes of {}",
            expected.bytes()
        );
        report.phase(what, took, bytes, "");
    }

    // 4. The scrape state machine over every shard at once.
    let template = layout.root.join("template.yaml");
    let scrape = statemachine::load(&template, "ScrapeStateMachine", &Context::default())?;
    let scrape = statemachine::create(&sfn, &unique("scale-scrape"), &scrape).await?;
    let request = json!({
        "stream": stream,
        "shards": "ALL",
        "start": {"type": "TRIM_HORIZON"},
        "stop": {"type": "LATEST"},
        "output": {"bucket": bucket, "prefix": "scrapes"},
        "maxConcurrency": args.shards,
    });
    // Twice: the first run's figure includes starting the scraper's
    // instances (see `COLD`); the second is the scrape's own.
    for warm in [false, true] {
        report.start();
        let scraped = execute(&sfn, &scrape, &unique("scale-scrape"), &request).await?;
        let manifest = &scraped.output["manifest"];
        anyhow::ensure!(
            manifest["records"] == json!(expected.len())
                && manifest["shards"] == json!(args.shards),
            "the scrape's manifest: {manifest}"
        );
        let key = manifest["key"].as_str().unwrap_or_default();
        let read_back = read_manifest(&s3, &bucket, key).await?;
        expected.check_scraped(read_back)?;
        report.scrape(scraped.took, expected.bytes(), warm);
    }

    // 5. The replay state machine from the archive, at each concurrency.
    let replay = statemachine::load(&template, "ReplayStateMachine", &Context::default())?;
    let replay = statemachine::create(&sfn, &unique("scale-replay"), &replay).await?;
    let accepted = layout
        .run_dir()
        .join("fixtures/target")
        .join(format!("{stream}.jsonl"));
    // First a cold run at the highest concurrency, which starts the
    // instances every later run finds warm.
    let highest = args.concurrency.iter().copied().max().unwrap_or(1);
    let runs = std::iter::once((highest, false)).chain(args.concurrency.iter().map(|&c| (c, true)));
    for (concurrency, warm) in runs {
        let _ = std::fs::remove_file(&accepted);
        let input = json!({
            "source": {
                "type": "ARCHIVE",
                "bucket": LOCAL_ARCHIVE_BUCKET,
                "stream": stream,
                // Epoch seconds, `to` exclusive: the whole seconds around
                // the puts.
                "from": window_from.epoch_millis() / 1000,
                "to": window_to.epoch_millis() / 1000 + 1,
            },
            "target": {"type": "FUNCTION", "functionName": "target"},
            "options": {"BatchSize": args.batch_size},
            "dlq": {"type": "S3", "bucket": bucket},
            "maxConcurrency": concurrency,
        });
        let name = unique(&format!("scale-replay-{concurrency}"));
        report.start();
        let replayed = execute(&sfn, &replay, &name, &input).await?;
        let totals = &replayed.output["summary"]["totals"];
        anyhow::ensure!(
            totals["records"] == json!(expected.len())
                && totals["delivered"] == json!(expected.len()),
            "replay at {concurrency}: {totals}"
        );
        let plan = plan_of(&sfn, &replayed.arn).await?;
        let batches = deliveries::read(&accepted)?;
        let checked = expected.check_replayed(&batches, &stream_arn)?;
        let kept = if warm { "" } else { "-cold" };
        std::fs::rename(
            &accepted,
            args.out
                .with_file_name(format!("replay-{concurrency}{kept}.jsonl")),
        )?;
        report.replay(concurrency, warm, &replayed, &plan, &checked);
    }
    Ok(report.finish())
}

/// Puts every record, the shards in turn, each on its shard by an explicit
/// hash key (the start of the shard's range), under 8 partition keys a
/// shard; returns what the stream stored.
async fn put(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    args: &Args,
) -> anyhow::Result<Expected> {
    let listed = kinesis.list_shards().stream_name(stream).send().await?;
    let starts: Vec<String> = listed
        .shards()
        .iter()
        .filter_map(|s| s.hash_key_range().map(|r| r.starting_hash_key().to_owned()))
        .collect();
    anyhow::ensure!(starts.len() == args.shards, "{listed:?}");
    let prefix = format!("SLEEP {} ", args.sleep_ms);
    let mut entries = Vec::with_capacity(args.shards * args.records_per_shard);
    for n in 0..args.records_per_shard {
        for (s, start) in starts.iter().enumerate() {
            let mut data = format!("{prefix}{{\"shard\":{s},\"n\":{n}}} ").into_bytes();
            data.resize(args.record_bytes, b'.');
            entries.push((format!("key-{s}-{}", n % 8), Some(start.clone()), data));
        }
    }
    let accepted = put_entries(kinesis, stream, entries).await?;
    let expected = Expected::new(accepted);
    for shard in expected.shard_ids() {
        anyhow::ensure!(
            expected.on_shard(&shard) == args.records_per_shard as u64,
            "{shard} holds {} records, not {}",
            expected.on_shard(&shard),
            args.records_per_shard
        );
    }
    Ok(expected)
}

/// Every record of the scrape's manifest, shard by shard, as the replay
/// reads them.
async fn read_manifest(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> anyhow::Result<Vec<Record>> {
    let source = ManifestSource::open(S3Store::new(s3.clone(), bucket), bucket, key).await?;
    let mut records = Vec::new();
    for shard in source.shards().await?.into_iter().flatten() {
        let mut pages = source.pages(&shard, None).await?;
        while let Some(page) = pages.next_page().await? {
            records.extend(page.into_iter().map(|r| Record {
                shard: r.shard_id,
                sequence: r.sequence_number,
                partition_key: r.partition_key,
                data: r.data,
            }));
        }
    }
    Ok(records)
}

/// An execution that succeeded: its ARN, output, start (µs since the
/// epoch) and time (from its own start and stop dates).
struct Executed {
    arn: String,
    output: Value,
    started_us: u64,
    took: Duration,
}

async fn execute(
    sfn: &aws_sdk_sfn::Client,
    machine: &str,
    name: &str,
    input: &Value,
) -> anyhow::Result<Executed> {
    info!(execution = name, "starting");
    let measured = Instant::now();
    let described =
        statemachine::execute(sfn, machine, name, &input.to_string(), PHASE_LIMIT).await?;
    let measured = measured.elapsed();
    anyhow::ensure!(
        *described.status() == ExecutionStatus::Succeeded,
        "execution {name}: {:?} {:?} {:?}",
        described.status(),
        described.error(),
        described.cause()
    );
    let start = described.start_date().as_nanos();
    let took = match described.stop_date() {
        Some(stop) => {
            let millis = (stop.as_nanos() - start) / 1_000_000;
            Duration::from_millis(u64::try_from(millis).unwrap_or_default())
        }
        None => measured,
    };
    info!(
        execution = name,
        took_ms = took.as_millis() as u64,
        "succeeded"
    );
    Ok(Executed {
        arn: described.execution_arn().to_owned(),
        output: serde_json::from_str(described.output().unwrap_or("null"))?,
        started_us: u64::try_from(start / 1000).unwrap_or_default(),
        took,
    })
}

/// What the replay's `Plan` answered (groups, lineage), from the parent's
/// history (the state's output, `$.plan`): the execution's output keeps the
/// totals only.
async fn plan_of(sfn: &aws_sdk_sfn::Client, execution: &str) -> anyhow::Result<Value> {
    let history = sfn
        .get_execution_history()
        .execution_arn(execution)
        .max_results(1000)
        .send()
        .await?;
    let plan = history
        .events()
        .iter()
        .filter_map(|e| e.state_exited_event_details())
        .find(|d| d.name() == "Plan")
        .and_then(|d| d.output())
        .and_then(|o| serde_json::from_str::<Value>(o).ok())
        .map(|mut state| state["plan"].take());
    plan.filter(|plan| plan.get("groups").is_some())
        .ok_or_else(|| anyhow::anyhow!("execution {execution}: no Plan output in its history"))
}

/// The report, phase by phase.
struct Report {
    text: String,
    /// moto's process, and its CPU time when the phase started: moto serves
    /// Kinesis, S3 and Step Functions in one Python process, so its share of
    /// a core says how far it bounds a phase.
    moto: Option<u32>,
    moto_cpu: f64,
    /// cargo lambda, and its and its instances' CPU time when the phase
    /// started: what the functions cost.
    functions: Option<u32>,
    functions_cpu: f64,
    shards: usize,
    ideal_batches: usize,
    sleep_ms: u64,
    replays: BTreeMap<usize, Duration>,
}

impl Report {
    fn new(args: &Args, moto: Option<u32>, functions: Option<u32>) -> Self {
        let mut text = String::new();
        let ideal_batches = args.records_per_shard.div_ceil(args.batch_size);
        let _ = writeln!(
            text,
            "Scale run: {} shards × {} records of {} bytes ({:.1} MiB); replay BatchSize {}, `target` takes {} ms a batch ({} batches a shard); machine: {} cores, load average at start {}\n",
            args.shards,
            args.records_per_shard,
            args.record_bytes,
            (args.shards * args.records_per_shard * args.record_bytes) as f64 / MIB,
            args.batch_size,
            args.sleep_ms,
            ideal_batches,
            std::thread::available_parallelism().map_or(0, NonZeroUsize::get),
            load(),
        );
        text.push_str(
            "| phase | time (s) | MiB | MiB/s | moto's CPU (s) | functions' CPU (s) | |\n|---|---:|---:|---:|---:|---:|---|\n",
        );
        Report {
            text,
            moto,
            moto_cpu: 0.0,
            functions,
            functions_cpu: 0.0,
            shards: args.shards,
            ideal_batches,
            sleep_ms: args.sleep_ms,
            replays: BTreeMap::new(),
        }
    }

    /// A measured phase starts.
    fn start(&mut self) {
        self.moto_cpu = self.moto.and_then(cpu_seconds).unwrap_or_default();
        self.functions_cpu = self.functions.map(family_cpu_seconds).unwrap_or_default();
    }

    fn phase(&mut self, what: &str, took: Duration, bytes: u64, note: &str) {
        let seconds = took.as_secs_f64();
        let mib = bytes as f64 / MIB;
        let moto = match self.moto.and_then(cpu_seconds) {
            Some(now) => format!("{:.1}", now - self.moto_cpu),
            None => "?".to_owned(),
        };
        let functions = match self.functions.map(family_cpu_seconds) {
            Some(now) => format!("{:.1}", now - self.functions_cpu),
            None => "?".to_owned(),
        };
        let _ = writeln!(
            self.text,
            "| {what} | {seconds:.1} | {mib:.1} | {:.1} | {moto} | {functions} | {note} (load {}) |",
            mib / seconds,
            load()
        );
        info!(what, seconds, mib, "phase done");
    }

    fn scrape(&mut self, took: Duration, bytes: u64, warm: bool) {
        let limit = self.shards as f64 * SHARD_READ_LIMIT;
        let rate = bytes as f64 / took.as_secs_f64();
        let note = format!(
            "{:.0}% of {} × 2 MiB/s ({:.0} MiB/s)",
            rate * 100.0 / limit,
            self.shards,
            limit / MIB
        );
        let what = format!(
            "scrape state machine, every shard at once{}",
            if warm { "" } else { COLD }
        );
        self.phase(&what, took, bytes, &note);
    }

    fn replay(
        &mut self,
        concurrency: usize,
        warm: bool,
        replayed: &Executed,
        plan: &Value,
        checked: &deliveries::Checked,
    ) {
        let groups = plan["groups"].as_u64().unwrap_or_default() as usize;
        // Groups at once, times each group's batches at `target`'s time.
        let waves = groups.div_ceil(concurrency.max(1));
        let ideal = Duration::from_millis(self.sleep_ms * (waves * self.ideal_batches) as u64);
        let seconds = |us: u64| us as f64 / 1e6;
        let ended_us = replayed.started_us + replayed.took.as_micros() as u64;
        let note = format!(
            "{groups} groups ({}), {} batches, {} records each once, each key in order; \
             at most {} batches in `target` at once; `target`'s sleep alone {:.1} s; \
             first batch {:.1} s after the start, last one ended {:.1} s before the end",
            plan["lineage"].as_str().unwrap_or("no lineage"),
            checked.batches,
            checked.records,
            checked.peak_in_flight,
            ideal.as_secs_f64(),
            seconds(checked.first_started_us.saturating_sub(replayed.started_us)),
            seconds(ended_us.saturating_sub(checked.last_ended_us)),
        );
        let what = format!(
            "replay state machine from the archive, maxConcurrency {concurrency}{}",
            if warm { "" } else { COLD }
        );
        self.phase(&what, replayed.took, checked.bytes, &note);
        if warm {
            self.replays.insert(concurrency, replayed.took);
        }
    }

    fn finish(mut self) -> String {
        if let (Some(serial), Some((&most, fastest))) =
            (self.replays.get(&1), self.replays.iter().next_back())
            && most > 1
        {
            let _ = writeln!(
                self.text,
                "\nReplay speed-up at maxConcurrency {most} against 1: {:.1}× ({:.1} s against {:.1} s)",
                serial.as_secs_f64() / fastest.as_secs_f64(),
                fastest.as_secs_f64(),
                serial.as_secs_f64()
            );
        }
        self.text
    }
}

/// The CPU time (user and system) process `pid` has used, from
/// `/proc/<pid>/stat`, whose clock ticks are USER_HZ: 100 a second on Linux.
fn cpu_seconds(pid: u32) -> Option<f64> {
    Some(stat(&format!("/proc/{pid}/stat"))?.1)
}

/// The CPU time process `parent` and its live children have used.
/// cargo lambda starts each function instance as a child of its own (in a
/// session of its own, so not by process group), and keeps it until the
/// stack stops, so none of a phase's time is lost to an exit.
fn family_cpu_seconds(parent: u32) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let children: f64 = entries
        .flatten()
        .filter_map(|e| stat(&e.path().join("stat").to_string_lossy()))
        .filter(|(ppid, _)| *ppid == parent)
        .map(|(_, cpu)| cpu)
        .sum();
    children + cpu_seconds(parent).unwrap_or_default()
}

/// A process's parent and CPU seconds from its `stat` file.
fn stat(path: &str) -> Option<(u32, f64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    // After the command's closing parenthesis (the command may hold
    // spaces): state is field 3, ppid 4, utime 14 and stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((
        fields.get(1)?.parse().ok()?,
        (ticks(11)? + ticks(12)?) / 100.0,
    ))
}

/// The machine's 1-minute load average, as `/proc/loadavg` says.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}
