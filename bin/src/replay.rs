//! `rewind replay` and `rewind reinject`: the replay function's engine on a
//! laptop. `replay` takes the same request document the replay state
//! machine takes (validated with the same errors), plus record-line files
//! as a source; `reinject` builds a request with a `STREAM` target from
//! flags. The shards run one after another, parents first, each to its end;
//! the summary is the replay state machine's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rewind_engine::jobs::replay::{Buckets, ReplayRequest, ReplaySummary, Replayer};
use rewind_engine::model::chunk::{ChunkReader, Compression};
use rewind_engine::model::manifest::{Manifest, ManifestChunk, ManifestShard};
use rewind_engine::model::record::stream_name_from_arn;
use rewind_engine::model::seqno::SequenceNumber;
use rewind_engine::model::window::{StartPosition, StopCondition};
use rewind_engine::store::{DirStore, ObjectReader, ObjectStore, PutObject, S3Store, StoreError};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::scrape::{AwsArgs, read_request};

/// The exit codes of `rewind replay` and `rewind reinject`, for `--help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  every record was delivered (or filtered out)
  1  the replay stopped on an error (what was settled before it is in the summary's progress files)
  2  bad input: flags, the request file, the record files; nothing was sent
  4  the replay finished, but some batches went to the DLQ (the summary says where)
(3 is `rewind run`'s \"outcome unknown\"; a local replay always knows its outcome.)";

/// The bucket name that stands for the local folder of `--files`.
const LOCAL_FILES: &str = "rewind-local-files";

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
    let files = match args.files.is_empty() {
        true => None,
        false => {
            let object = request
                .as_object_mut()
                .ok_or_else(|| bad(anyhow::anyhow!("the request is not a JSON object")))?;
            if object.contains_key("source") {
                return Err(bad(anyhow::anyhow!(
                    "--files replaces the request's source: leave source out of {}",
                    args.request.display()
                )));
            }
            object.insert(
                "source".into(),
                json!({"type": "MANIFEST", "bucket": LOCAL_FILES, "key": "manifest.json"}),
            );
            Some(args.files)
        }
    };
    execute(request, files, args.stream_arn, args.common)
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
        json!({"type": "MANIFEST", "bucket": LOCAL_FILES, "key": "manifest.json"})
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
    let files = (!args.files.is_empty()).then_some(args.files);
    // Records from files keep their own stream in the envelope; the events'
    // stream ARN is not used by a stream target.
    let stream_arn = files
        .as_ref()
        .map(|_| "arn:aws:kinesis:us-east-1:000000000000:stream/files".to_owned());
    execute(request, files, stream_arn, args.common)
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

fn execute(
    mut request: Value,
    files: Option<Vec<PathBuf>>,
    stream_arn: Option<String>,
    common: CommonArgs,
) -> anyhow::Result<()> {
    // The local folder of --files (its manifest), which also keeps the run's
    // progress when the request names no place for it.
    let (local, _temp) = progress_folder(common.dir.as_deref())?;
    let object = request.as_object_mut().expect("built or checked an object");
    if !object.contains_key("output")
        && !object
            .get("dlq")
            .is_some_and(|dlq| dlq.get("type") == Some(&json!("S3")))
    {
        object.insert(
            "output".into(),
            json!({"bucket": LOCAL_FILES, "prefix": "replays"}),
        );
    }
    let request = ReplayRequest::parse(&serde_json::to_vec(&request)?).map_err(bad)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let files_root = match &files {
            Some(files) => {
                let root = local.join("files");
                write_files_manifest(files, stream_arn.as_deref().unwrap_or_default(), &root)
                    .map_err(bad)?;
                Some(root)
            }
            None => None,
        };
        let config = common.aws.config().await;
        let buckets = LocalBuckets {
            s3: aws_sdk_s3::Client::new(&config),
            dir: common.dir.clone(),
            files: files_root,
            progress: local.clone(),
        };
        let replayer = Replayer {
            buckets,
            targets: aws_sdk_lambda::Client::new(&config),
            streams: aws_sdk_kinesis::Client::new(&config),
            queues: aws_sdk_sqs::Client::new(&config),
            tables: Some(aws_sdk_dynamodb::Client::new(&config)),
            partition: "aws".to_owned(),
            region: config
                .region()
                .map_or_else(|| "us-east-1".to_owned(), ToString::to_string),
            account_id: std::env::var("REWIND_ACCOUNT_ID")
                .unwrap_or_else(|_| "000000000000".to_owned()),
            invoke_identity_arn: String::new(),
            base_backoff: Duration::from_millis(100),
        };
        let summary = drive(&replayer, &request, common.json).await?;
        println!("{}", serde_json::to_string_pretty(&summary)?);
        if summary.totals.failed_records > 0 {
            return Err(ReplayCliError::Failures {
                dlq_records: summary.totals.failed_records,
                dlq_batches: summary.totals.failed_batches,
                dlq: summary.dlq.clone().unwrap_or_default(),
            }
            .into());
        }
        Ok(())
    })
}

/// Plan, every shard to its end (parents first), summary.
async fn drive<B: Buckets>(
    replayer: &Replayer<B>,
    request: &ReplayRequest,
    quiet: bool,
) -> anyhow::Result<ReplaySummary> {
    let run_id = request
        .run_id
        .clone()
        .unwrap_or_else(|| format!("cli-{}", chrono_stamp()));
    let plan = replayer.plan(request, &run_id).await?;
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(plan.shards.len() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{pos}/{len} shards {msg}")
            .expect("a valid progress template"),
    );
    for progress in plan.groups.iter().flatten() {
        let mut progress = progress.clone();
        while !progress.done {
            // A step of a few minutes, as a Lambda's; the continuation
            // carries the rest.
            let deadline = Instant::now() + Duration::from_secs(300);
            progress = replayer.step(request, &run_id, &progress, deadline).await?;
            bar.set_message(format!(
                "{}: {} records, {} delivered, {} failed",
                progress.shard_id, progress.records, progress.delivered, progress.failed_records
            ));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(replayer.summary(request, &run_id, &plan.shards).await?)
}

fn chrono_stamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}-{}", now.as_secs(), std::process::id())
}

/// A manifest over local record-line files, in `root` (the files are linked
/// into it, not copied): each file one shard's records in sequence order;
/// a shard's files in sequence order (overlaps allowed); shards in shard-id
/// order.
fn write_files_manifest(files: &[PathBuf], stream_arn: &str, root: &Path) -> anyhow::Result<()> {
    let stream = stream_name_from_arn(stream_arn)
        .ok_or_else(|| anyhow::anyhow!("--stream-arn {stream_arn:?} is not a stream ARN"))?;
    std::fs::create_dir_all(root.join("chunks"))
        .with_context(|| format!("creating {}", root.display()))?;
    let mut shards: BTreeMap<String, Vec<(ManifestChunk, u64)>> = BTreeMap::new();
    for (n, path) in files.iter().enumerate() {
        let name = path.display().to_string();
        let file = std::fs::File::open(path).with_context(|| format!("opening {name}"))?;
        let (mut shard, mut first, mut last, mut count) =
            (None::<String>, None::<SequenceNumber>, None, 0u64);
        let mut previous = None;
        for record in ChunkReader::new(name.clone(), file)? {
            let record = record?;
            match &shard {
                None => shard = Some(record.shard_id.clone()),
                Some(s) if *s != record.shard_id => bail!(
                    "{name}: records of {s} and {}; each file must hold one shard's records",
                    record.shard_id
                ),
                Some(_) => {}
            }
            let position = (record.sequence_number.clone(), record.sub_sequence_number);
            if previous.as_ref().is_some_and(|p| *p >= position) {
                bail!(
                    "{name}: record {} is not after the one before it; a file must be in sequence order",
                    record.sequence_number
                );
            }
            previous = Some(position);
            first.get_or_insert_with(|| record.sequence_number.clone());
            last = Some(record.sequence_number);
            count += 1;
        }
        let (Some(shard), Some(first), Some(last)) = (shard, first, last) else {
            continue;
        };
        let key = format!("chunks/{n}");
        let link = root.join(&key);
        let target = std::fs::canonicalize(path).with_context(|| format!("resolving {name}"))?;
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link)
            .with_context(|| format!("linking {name} into {}", root.display()))?;
        shards.entry(shard).or_default().push((
            ManifestChunk {
                key,
                first_sequence_number: first,
                last_sequence_number: last,
            },
            count,
        ));
    }
    let mut manifest_shards = Vec::new();
    let mut total = 0;
    for (shard_id, mut chunks) in shards {
        // In sequence order; files that overlap (archive objects of a
        // re-delivered batch) are fine: the replay skips every record at or
        // before the last one it settled, so each is delivered once.
        chunks.sort_by(|a, b| a.0.first_sequence_number.cmp(&b.0.first_sequence_number));
        let records: u64 = chunks.iter().map(|c| c.1).sum();
        total += records;
        manifest_shards.push(ManifestShard {
            shard_id,
            parent_shard_ids: Vec::new(),
            records,
            first_sequence_number: chunks.first().map(|c| c.0.first_sequence_number.clone()),
            last_sequence_number: chunks.last().map(|c| c.0.last_sequence_number.clone()),
            chunks: chunks.into_iter().map(|c| c.0).collect(),
            first_arrival: None,
            last_arrival: None,
            stop_reason: None,
            child_shard_ids: Vec::new(),
        });
    }
    let manifest = Manifest {
        stream: stream.to_owned(),
        stream_arn: stream_arn.to_owned(),
        run_id: "files".to_owned(),
        bucket: LOCAL_FILES.to_owned(),
        prefix: String::new(),
        compression: Compression::Gzip,
        start: StartPosition::TrimHorizon,
        stop: StopCondition::Latest { as_of: None },
        shards: manifest_shards,
        records: total,
    };
    std::fs::write(root.join("manifest.json"), serde_json::to_vec(&manifest)?)
        .with_context(|| format!("writing {}", root.display()))
}

/// Buckets for a local run: every bucket a folder with `--dir`; otherwise
/// S3, except the stand-in bucket of `--files` (its manifest) and of the
/// run's progress, which are local folders.
struct LocalBuckets {
    s3: aws_sdk_s3::Client,
    dir: Option<PathBuf>,
    files: Option<PathBuf>,
    progress: PathBuf,
}

impl Buckets for LocalBuckets {
    type Store = Store;

    fn bucket(&self, name: &str) -> Store {
        if name == LOCAL_FILES {
            // The files' manifest and chunks, and the run's progress, side
            // by side: keys never collide (manifest.json, chunks/, replays/).
            return Store::Files {
                files: self.files.as_ref().map(DirStore::new),
                progress: DirStore::new(&self.progress),
            };
        }
        match &self.dir {
            Some(dir) => Store::Dir(DirStore::new(dir)),
            None => Store::S3(S3Store::new(self.s3.clone(), name)),
        }
    }
}

enum Store {
    Dir(DirStore),
    S3(S3Store),
    Files {
        files: Option<DirStore>,
        progress: DirStore,
    },
}

impl Store {
    /// The store a key of the `--files` stand-in bucket is in.
    fn of(&self, key: &str) -> Either<'_> {
        match self {
            Store::Dir(d) => Either::Dir(d),
            Store::S3(s) => Either::S3(s),
            Store::Files { files, progress } => match files {
                Some(files) if !key.starts_with("replays/") => Either::Dir(files),
                _ => Either::Dir(progress),
            },
        }
    }
}

enum Either<'a> {
    Dir(&'a DirStore),
    S3(&'a S3Store),
}

impl ObjectStore for Store {
    async fn put(&self, object: PutObject) -> Result<(), StoreError> {
        match self.of(&object.key) {
            Either::Dir(d) => d.put(object).await,
            Either::S3(s) => s.put(object).await,
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.of(key) {
            Either::Dir(d) => d.delete(key).await,
            Either::S3(s) => s.delete(key).await,
        }
    }
}

impl ObjectReader for Store {
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        match self.of(prefix) {
            Either::Dir(d) => d.list(prefix).await,
            Either::S3(s) => s.list(prefix).await,
        }
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        match self.of(key) {
            Either::Dir(d) => d.get(key).await,
            Either::S3(s) => s.get(key).await,
        }
    }
}
