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
//!
//! One concern a module: [`plan`] (the traffic, before anything runs),
//! [`traffic`] (putting it, with the reshard), [`scenario`] (the stack's
//! resources and the archiver's mapping around the story), [`archive`]
//! (reading the archive back), [`replay`] (the replay execution, its DLQ and
//! the consumer's count), [`report`] and [`text`] (the numbers and their
//! checks, as JSON or text).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use rewind_local::{Layout, LocalStack, Options};

use report::{Check, StackReport};

mod archive;
mod plan;
mod replay;
mod report;
mod scenario;
mod text;
mod traffic;

/// The archiver's key prefix (its `ARCHIVE_PREFIX` default).
const ARCHIVE_PREFIX: &str = "archive";
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
            outcome = scenario::run(&stack, &layout, &args) => outcome,
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
