//! `rewind scrape`: the scraper's engine on a laptop. The request is the
//! same JSON document the scraper function takes (validated with the same
//! errors); the output goes to the request's bucket, or to a local folder.
//! It runs as the scrape state machine does: a plan, every shard's steps
//! (lineage groups at once, up to `--max-concurrency`; within a group
//! parents first), then the manifest. Each shard is paced to its own
//! limits, so reading shards at once takes nothing from any one of them.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use rewind_engine::jobs::scrape::{
    DEFAULT_MAX_RECORDS_PER_CHUNK, Outputs, Plan, RunOutcome, ScrapeRequest, Scraper, ScraperError,
    ScraperEvent, ScraperOutput, ShardProgress,
};
use rewind_engine::jobs::step;
use rewind_engine::pipeline::lineage::{PlannedShard, lineage_groups};
use rewind_engine::store::DirStore;
use tokio::time::Instant;

use crate::concurrency::{ConcurrencyArgs, Stop, for_each_group};

// `rewind replay` takes the flags from here; they live in `crate::aws`.
pub use crate::aws::AwsArgs;

#[derive(Args, Debug)]
pub struct ScrapeArgs {
    /// The scrape request: a JSON file as the scraper function takes it
    /// (`events/scrape-*.json` are examples); `-` reads standard input.
    #[arg(long)]
    pub request: PathBuf,
    /// Write chunks and manifest under this folder instead of the request's
    /// bucket (the request's prefix and run folder are kept).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Records per chunk at most.
    #[arg(long, default_value_t = DEFAULT_MAX_RECORDS_PER_CHUNK)]
    pub chunk_records: u64,
    /// Print the result as JSON only.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub concurrency: ConcurrencyArgs,
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// The bytes of a request file; `-` reads standard input.
pub fn read_request(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading the request from standard input")?;
        Ok(buf)
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    }
}

pub fn run(args: ScrapeArgs) -> anyhow::Result<()> {
    let bytes = read_request(&args.request).map_err(crate::bad_input)?;
    // Validated before anything connects anywhere.
    let event =
        ScraperEvent::parse(&bytes).map_err(|error| crate::bad_input(ScraperError::from(error)))?;
    let ScraperEvent::Run { request, .. } = event else {
        return Err(crate::bad_input(anyhow::anyhow!(
            "{}: expected a scrape request (the state machine's actions are for the function)",
            args.request.display()
        )));
    };
    let concurrency = args.concurrency.resolve(request.max_concurrency);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let config = args.aws.config().await;
        let kinesis = aws_sdk_kinesis::Client::new(&config);
        let outcome = match &args.out {
            Some(dir) => {
                let scraper = Scraper::new(kinesis, DirStore::new(dir), args.chunk_records);
                drive(&scraper, request, concurrency, args.json).await?
            }
            None => {
                let outputs = aws_sdk_s3::Client::new(&config);
                let scraper = Scraper::new(kinesis, outputs, args.chunk_records);
                drive(&scraper, request, concurrency, args.json).await?
            }
        };
        println!("{}", serde_json::to_string_pretty(&outcome)?);
        Ok(())
    })
}

/// Plans the request, runs every shard's steps to its end, and writes the
/// manifest.
async fn drive<O: Outputs>(
    scraper: &Scraper<O>,
    request: ScrapeRequest,
    concurrency: usize,
    quiet: bool,
) -> anyhow::Result<ScraperOutput> {
    let invocation = format!("cli-{}", std::process::id());
    let run_id = step::run_id(request.run_id.as_deref(), &invocation);
    let plan = scraper.plan(&request, &run_id).await?;
    // Stored as the state machine's plan step stores it: the manifest step
    // reads the shards back from there.
    let stored = scraper.store_plan(&request, plan.clone()).await?;
    let Plan {
        stream_arn,
        run_id,
        shards,
        progress,
    } = plan;
    let stop = Stop::default();
    for_each_group(groups(&shards, progress), concurrency, &stop, |group| {
        let (request, stream_arn, run_id, stop) = (&request, &stream_arn, &run_id, &stop);
        async move {
            for mut progress in group {
                while !progress.is_done() {
                    // Another group failed: end on this stored chunk.
                    if stop.is_set() {
                        return Ok(());
                    }
                    let step = ScraperEvent::Step {
                        request: request.clone(),
                        stream_arn: stream_arn.clone(),
                        run_id: run_id.clone(),
                        progress,
                    };
                    progress = match scraper.handle(step, step_deadline(), run_id).await? {
                        ScraperOutput::Step(outcome) => outcome.progress,
                        answer => anyhow::bail!("the scraper answered a step with {answer:?}"),
                    };
                    if !quiet {
                        eprintln!(
                            "{}: scraped {} records so far",
                            progress.cursor.shard_id, progress.cursor.records
                        );
                    }
                }
            }
            Ok(())
        }
    })
    .await?;
    let manifest = ScraperEvent::Manifest {
        request,
        stream_arn,
        run_id: run_id.clone(),
        plan: stored.items,
    };
    match scraper.handle(manifest, step_deadline(), &run_id).await? {
        ScraperOutput::Manifest(manifest) => {
            Ok(ScraperOutput::Run(RunOutcome::Succeeded { manifest }))
        }
        answer => anyhow::bail!("the scraper answered a manifest with {answer:?}"),
    }
}

/// Each step runs for a few minutes, as a Lambda's would; the shard's
/// progress carries the rest.
fn step_deadline() -> Instant {
    Instant::now() + Duration::from_secs(180)
}

/// The plan's shards in lineage groups, each group's progress parents
/// first (the plan's order).
fn groups(shards: &[PlannedShard], progress: Vec<ShardProgress>) -> Vec<Vec<ShardProgress>> {
    let lineage: Vec<(String, Vec<String>)> = shards
        .iter()
        .map(|s| (s.shard_id.clone(), s.parent_shard_ids.clone()))
        .collect();
    let mut progress: std::collections::HashMap<String, ShardProgress> = progress
        .into_iter()
        .map(|p| (p.cursor.shard_id.clone(), p))
        .collect();
    lineage_groups(&lineage)
        .into_iter()
        .map(|group| group.iter().filter_map(|id| progress.remove(id)).collect())
        .collect()
}
