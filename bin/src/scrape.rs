//! `rewind scrape`: the scraper's engine on a laptop. The request is the
//! same JSON document the scraper function takes (validated with the same
//! errors); the output goes to the request's bucket, or to a local folder.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use rewind_engine::jobs::scrape::{
    DEFAULT_MAX_RECORDS_PER_CHUNK, Outputs, RunOutcome, Scraper, ScraperEvent, ScraperOutput,
};
use rewind_engine::store::DirStore;
use tokio::time::Instant;

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
    let event = ScraperEvent::parse(&bytes).map_err(crate::bad_input)?;
    if !matches!(event, ScraperEvent::Run { .. }) {
        return Err(crate::bad_input(anyhow::anyhow!(
            "{}: expected a scrape request (the state machine's actions are for the function)",
            args.request.display()
        )));
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let config = args.aws.config().await;
        let kinesis = aws_sdk_kinesis::Client::new(&config);
        let outcome = match &args.out {
            Some(dir) => {
                let scraper = Scraper::new(kinesis, DirStore::new(dir), args.chunk_records);
                drive(&scraper, event, args.json).await?
            }
            None => {
                let outputs = aws_sdk_s3::Client::new(&config);
                let scraper = Scraper::new(kinesis, outputs, args.chunk_records);
                drive(&scraper, event, args.json).await?
            }
        };
        println!("{}", serde_json::to_string_pretty(&outcome)?);
        Ok(())
    })
}

/// Runs the request step by step until the manifest is written.
async fn drive<O: Outputs>(
    scraper: &Scraper<O>,
    mut event: ScraperEvent,
    quiet: bool,
) -> anyhow::Result<ScraperOutput> {
    let run_id = format!("cli-{}", std::process::id());
    loop {
        // Each round runs for a few minutes, then reports progress; the
        // engine's continuation carries the rest.
        let deadline = Instant::now() + Duration::from_secs(180);
        match scraper.handle(event, deadline, &run_id).await? {
            ScraperOutput::Run(RunOutcome::InProgress { next, records }) => {
                if !quiet {
                    eprintln!("scraped {records} records so far");
                }
                event = *next;
            }
            answer => return Ok(answer),
        }
    }
}
