//! `rewind replay` and `rewind reinject`: the replay function's engine on a
//! laptop. `replay` takes the same request document the replay state
//! machine takes (validated with the same errors), plus record-line files
//! as a source; `reinject` builds a request with a `STREAM` target from
//! flags. Lineage groups run at once (up to `--max-concurrency`), the
//! shards of a group one after another, parents first, each to its end; the
//! summary is the replay state machine's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rewind_engine::jobs::replay::{
    Buckets, ReplayError, ReplayRequest, ReplaySettings, ReplaySource, ReplaySummary, Replayer,
};
use rewind_engine::model::record::stream_name_from_arn;
use rewind_engine::sources::SourceError;
use rewind_engine::store::{
    CreateNew, Created, DirStore, ObjectReader, ObjectStore, PutObject, S3Store, StoreError,
};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::concurrency::{ConcurrencyArgs, Stop, for_each_group};
use crate::scrape::{AwsArgs, read_request};

/// The exit codes of `rewind replay` and `rewind reinject`, for `--help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  every record was delivered (or filtered out)
  1  the replay stopped on an error (what was settled before it is in the summary's progress files)
  2  bad input: flags, the request file, the record files; nothing was sent
  4  the replay finished, but some batches went to the DLQ (the summary says where)
(3 is `rewind run`'s \"outcome unknown\"; a local replay always knows its outcome.)";

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The replay request: a JSON file as the replay state machine takes it
    /// (`events/replay-*.json` are examples); `-` reads standard input. With
    /// `--files` its `source` may be left out.
    #[arg(long)]
    pub request: PathBuf,
    /// Replay these record-line files (scrape chunks, archive objects,
    /// `rewind convert` output) instead of the request's source: each file
    /// holds one shard's records in sequence order.
    #[arg(long, num_args = 1.., requires = "stream_arn")]
    pub files: Vec<PathBuf>,
    /// With `--files`: the ARN of the stream the records were read from
    /// (the events' `eventSourceARN`).
    #[arg(long)]
    pub stream_arn: Option<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args, Debug)]
pub struct ReinjectArgs {
    /// The stream to put the records on (name or ARN).
    #[arg(long)]
    pub stream: String,
    /// Record-line files to put (each one shard's records in order).
    #[arg(long, num_args = 1.., conflicts_with_all = ["archive_bucket", "manifest"])]
    pub files: Vec<PathBuf>,
    /// Put the records of this archive bucket (with `--source-stream`,
    /// `--from` and `--to`).
    #[arg(long, requires_all = ["source_stream", "from", "to"], conflicts_with = "manifest")]
    pub archive_bucket: Option<String>,
    /// Key prefix of the archive.
    #[arg(long, default_value = "archive")]
    pub archive_prefix: String,
    /// The archived stream's name.
    #[arg(long)]
    pub source_stream: Option<String>,
    /// Start of the window, epoch seconds (inclusive).
    #[arg(long)]
    pub from: Option<f64>,
    /// End of the window, epoch seconds (exclusive).
    #[arg(long)]
    pub to: Option<f64>,
    /// Put the records of a scrape: `s3://BUCKET/KEY` of its manifest.json
    /// (or `KEY` under `--dir`).
    #[arg(long)]
    pub manifest: Option<String>,
    /// Wrap each payload in the metadata envelope
    /// (`<sep>{"originalApproximateArrivalTimestamp",…}<sep><payload>`).
    #[arg(long)]
    pub include_metadata: bool,
    /// The envelope's separator.
    #[arg(long, default_value = "|")]
    pub separator: String,
    /// Keep the records' explicit hash keys.
    #[arg(long)]
    pub keep_explicit_hash_key: bool,
    /// Keep each shard's original timing, this many times faster.
    #[arg(long)]
    pub speedup: Option<f64>,
    /// At most this many records per second per shard.
    #[arg(long)]
    pub records_per_second: Option<f64>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args, Debug)]
pub struct CommonArgs {
    /// Every bucket is this local folder (sources, DLQ and progress): replay
    /// what `rewind scrape --out DIR` wrote.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print the summary as JSON only (no progress on stderr).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub concurrency: ConcurrencyArgs,
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// A replay that finished with batches in the DLQ (exit code 4).
#[derive(Debug, thiserror::Error)]
pub enum ReplayCliError {
    #[error("{dlq_records} records in {dlq_batches} batches went to the DLQ: {dlq}")]
    Failures {
        dlq_records: u64,
        dlq_batches: u64,
        dlq: String,
    },
}

impl ReplayCliError {
    pub fn exit_code(&self) -> std::process::ExitCode {
        std::process::ExitCode::from(match self {
            Self::Failures { .. } => 4,
        })
    }
}

use crate::bad_input as bad;

pub fn run_replay(args: ReplayArgs) -> anyhow::Result<()> {
    let bytes = read_request(&args.request).map_err(bad)?;
    let mut request: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not JSON", args.request.display()))
        .map_err(bad)?;
    if !args.files.is_empty() {
        let object = request
            .as_object_mut()
            .ok_or_else(|| bad(anyhow::anyhow!("the request is not a JSON object")))?;
        if object.contains_key("source") {
            return Err(bad(anyhow::anyhow!(
                "--files replaces the request's source: leave source out of {}",
                args.request.display()
            )));
        }
        let stream_arn = args.stream_arn.unwrap_or_default();
        if stream_name_from_arn(&stream_arn).is_none() {
            return Err(bad(anyhow::anyhow!(
                "--stream-arn {stream_arn:?} is not a stream ARN"
            )));
        }
        object.insert("source".into(), files_source(args.files, Some(stream_arn))?);
    }
    execute(request, args.common)
}

/// `--files` as the request's source.
fn files_source(files: Vec<PathBuf>, stream_arn: Option<String>) -> anyhow::Result<Value> {
    serde_json::to_value(ReplaySource::files(files, stream_arn))
        .context("--files: the paths must be UTF-8")
        .map_err(bad)
}

pub fn run_reinject(args: ReinjectArgs) -> anyhow::Result<()> {
    let source = if let Some(bucket) = &args.archive_bucket {
        json!({"type": "ARCHIVE", "bucket": bucket, "prefix": args.archive_prefix,
               "stream": args.source_stream, "from": args.from, "to": args.to})
    } else if let Some(manifest) = &args.manifest {
        let (bucket, key) = match (manifest.strip_prefix("s3://"), &args.common.dir) {
            (Some(rest), _) => rest.split_once('/').unwrap_or((rest, "")),
            // Every bucket is the folder: the name is not used.
            (None, Some(_)) => ("local", manifest.as_str()),
            (None, None) => {
                return Err(bad(anyhow::anyhow!(
                    "--manifest {manifest:?}: give s3://BUCKET/KEY, or a KEY with --dir"
                )));
            }
        };
        json!({"type": "MANIFEST", "bucket": bucket, "key": key})
    } else if !args.files.is_empty() {
        // The records keep their own stream in the envelope; the events'
        // stream ARN is not used by a stream target.
        files_source(args.files.clone(), None)?
    } else {
        return Err(bad(anyhow::anyhow!(
            "name what to put: --files, --archive-bucket (with --source-stream, --from, --to) or --manifest"
        )));
    };
    let mut target = json!({"type": "STREAM", "stream": args.stream,
        "includeMetadata": args.include_metadata, "separator": args.separator,
        "keepExplicitHashKey": args.keep_explicit_hash_key});
    if let Some(speedup) = args.speedup {
        target["speedup"] = json!(speedup);
    }
    let mut request = json!({"source": source, "target": target});
    if let Some(rate) = args.records_per_second {
        request["recordsPerSecond"] = json!(rate);
    }
    execute(request, args.common)
}

/// Where the progress of a local run goes: the folder, or a temporary one
/// (removed when the run ends).
fn progress_folder(dir: Option<&Path>) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    match dir {
        Some(dir) => Ok((dir.to_path_buf(), None)),
        None => {
            let temp = tempfile::Builder::new()
                .prefix("rewind-replay-")
                .tempdir()
                .context("creating a temporary folder")?;
            Ok((temp.path().to_path_buf(), Some(temp)))
        }
    }
}

fn execute(request: Value, common: CommonArgs) -> anyhow::Result<()> {
    // Without an output or an S3 DLQ in the request, the run keeps its
    // progress here.
    let (progress, _temp) = progress_folder(common.dir.as_deref())?;
    // Named as the replay request it is.
    let request = ReplayRequest::parse_local(&serde_json::to_vec(&request)?)
        .map_err(|error| bad(ReplayError::InvalidRequest(error)))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let config = common.aws.config().await;
        let buckets = LocalBuckets {
            s3: aws_sdk_s3::Client::new(&config),
            dir: common.dir.clone(),
            progress,
        };
        let replayer = Replayer::new(
            buckets,
            &config,
            ReplaySettings {
                partition: "aws".to_owned(),
                region: None,
                account_id: std::env::var("REWIND_ACCOUNT_ID")
                    .unwrap_or_else(|_| "000000000000".to_owned()),
                invoke_identity_arn: String::new(),
                dynamodb: true,
            },
        );
        let concurrency = common.concurrency.resolve(request.max_concurrency);
        let summary = drive(&replayer, &request, concurrency, common.json).await?;
        println!("{}", serde_json::to_string_pretty(&summary)?);
        if summary.totals.counters.failed_records > 0 {
            return Err(ReplayCliError::Failures {
                dlq_records: summary.totals.counters.failed_records,
                dlq_batches: summary.totals.counters.failed_batches,
                dlq: summary.dlq.clone().unwrap_or_default(),
            }
            .into());
        }
        Ok(())
    })
}

/// Plan, every shard to its end (lineage groups at once, up to
/// `concurrency`; parents first within a group), summary.
async fn drive<B: Buckets>(
    replayer: &Replayer<B>,
    request: &ReplayRequest,
    concurrency: usize,
    quiet: bool,
) -> anyhow::Result<ReplaySummary> {
    let run_id = request
        .run_id
        .clone()
        .unwrap_or_else(|| format!("cli-{}", chrono_stamp()));
    let plan = replayer
        .plan(request, &run_id, None)
        .await
        .map_err(|error| match error {
            // Record files that can't be read are bad input, as a bad request.
            ReplayError::Source(SourceError::Files(_)) => bad(anyhow::Error::from(error)),
            error => error.into(),
        })?;
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(plan.shards.len() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{pos}/{len} shards {msg}")
            .expect("a valid progress template"),
    );
    let stop = Stop::default();
    for_each_group(plan.groups, concurrency, &stop, |group| {
        let (bar, stop, run_id) = (&bar, &stop, &run_id);
        async move {
            for mut progress in group {
                while !progress.done {
                    // Another group failed: end on this settled step.
                    if stop.is_set() {
                        return Ok(());
                    }
                    // A step of a few minutes, as a Lambda's; the
                    // continuation carries the rest.
                    let deadline = Instant::now() + Duration::from_secs(300);
                    progress = replayer.step(request, run_id, &progress, deadline).await?;
                    bar.set_message(format!(
                        "{}: {} records, {} delivered, {} failed",
                        progress.shard_id,
                        progress.records,
                        progress.counters.delivered,
                        progress.counters.failed_records
                    ));
                }
                bar.inc(1);
            }
            Ok(())
        }
    })
    .await?;
    bar.finish_and_clear();
    Ok(replayer.summary(request, &run_id, &plan.shards).await?)
}

fn chrono_stamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}-{}", now.as_secs(), std::process::id())
}

/// Buckets for a local run: every bucket a folder with `--dir`, otherwise
/// S3; the bucket named `""` (a request without an output or an S3 DLQ)
/// is the run's own progress folder.
struct LocalBuckets {
    s3: aws_sdk_s3::Client,
    dir: Option<PathBuf>,
    progress: PathBuf,
}

impl Buckets for LocalBuckets {
    type Store = Store;

    fn bucket(&self, name: &str) -> Store {
        match &self.dir {
            Some(dir) => Store::Dir(DirStore::new(dir)),
            None if name.is_empty() => Store::Dir(DirStore::new(&self.progress)),
            None => Store::S3(S3Store::new(self.s3.clone(), name)),
        }
    }
}

enum Store {
    Dir(DirStore),
    S3(S3Store),
}

impl ObjectStore for Store {
    async fn put(&self, object: PutObject) -> Result<(), StoreError> {
        match self {
            Store::Dir(d) => d.put(object).await,
            Store::S3(s) => s.put(object).await,
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Store::Dir(d) => d.delete(key).await,
            Store::S3(s) => s.delete(key).await,
        }
    }
}

impl CreateNew for Store {
    async fn create_new(&self, object: PutObject) -> Result<Created, StoreError> {
        match self {
            Store::Dir(d) => d.create_new(object).await,
            Store::S3(s) => s.create_new(object).await,
        }
    }
}

impl ObjectReader for Store {
    async fn list_page(
        &self,
        query: rewind_engine::store::ListQuery<'_>,
    ) -> Result<rewind_engine::store::ListPage, StoreError> {
        match self {
            Store::Dir(d) => d.list_page(query).await,
            Store::S3(s) => s.list_page(query).await,
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Dir(d) => d.list(prefix).await,
            Store::S3(s) => s.list(prefix).await,
        }
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        match self {
            Store::Dir(d) => d.get(key).await,
            Store::S3(s) => s.get(key).await,
        }
    }
    async fn get_body(&self, key: &str) -> Result<rewind_engine::store::ObjectBody, StoreError> {
        match self {
            Store::Dir(d) => d.get_body(key).await,
            Store::S3(s) => s.get_body(key).await,
        }
    }
}
