//! Replaying a window to a function exactly as the event source mapping
//! would have delivered it, or putting it back onto a stream: the request
//! the replay function and the replay state machine take, the plan (the
//! shards, in lineage groups, parents before children), the step (one
//! shard's records from the source, one piece at a time, into the target,
//! until the shard ends or the step's deadline), and the summary.
//!
//! Sources:
//! - `MANIFEST`: a scrape's `manifest.json`; shards in the manifest's order
//!   (parents before children), records read chunk by chunk.
//! - `ARCHIVE`: the S3 archive of one stream, records that arrived in
//!   `from..to` (epoch seconds, `to` exclusive); shards in the lineage groups
//!   of its shard markers (else `ListShards`', else one group), records read
//!   one archive object at a time.
//! - `DYNAMODB`: the DynamoDB archive's records of one partition key, in a
//!   sequence range, a page at a time.
//! - `SCRAPE`: a scrape request; the replay state machine runs the scrape
//!   first and replays its manifest (the function itself takes the other
//!   three).
//!
//! Targets:
//! - `FUNCTION`: [`crate::sinks::lambda::Delivery`], the mapping's semantics.
//! - `STREAM`: [`crate::sinks::kinesis::reinject`], optionally in the Node.js
//!   archiver's metadata envelope and at the original pace sped up.
//!
//! `eventSourceARN` of the delivered events is the scraped stream's ARN
//! (the manifest's `streamArn`) for a manifest, the shard markers' for the S3
//! archive; without markers, and for DynamoDB, it is built from the stream
//! name and the replay function's partition, region and account.
//!
//! Failed batches go to the S3 DLQ in the mapping's on-failure format, under
//! `<dlq prefix>/aws/lambda/<runId>/<shardId>/…` (the run id stands in for
//! the mapping's UUID), or to an SQS queue as the mapping's on-failure
//! record. Each finished shard writes its final progress to
//! `<output prefix>/<runId>/<shardId>/_progress.json` (by default the DLQ
//! bucket and `<dlq prefix>/replays`); the summary reads those back.
//!
//! A step hands records to the target in pieces (a few batches per lane,
//! [`crate::sinks::lambda::options::MappingOptions::piece`]; 500 for a
//! stream) and stops handing them on, even inside a batch's retries, before
//! its deadline; its continuation is the position of the last settled
//! record, and of the last settled record of each lane that got past it.
//! Each settled piece, and a piece a failed invoke ended, is also saved as
//! the shard's checkpoint (`<output prefix>/<runId>/<shardId>/_checkpoint.json`):
//! a step that fails or is killed is retried from its continuation, and
//! starts after the checkpoint, so only a killed step's piece is delivered
//! again: at least once, never skipped.

mod error;
mod locations;
mod protocol;
mod request;
mod services;
mod shard_run;
mod summary;

use std::time::Duration;

use tokio::time::Instant;

pub use error::ReplayError;
pub use locations::{DlqLocation, ReplaySource, ReplayTarget, RunOutput};
pub use protocol::{
    LaneMark, PaceOrigin, ReplayEvent, ReplayOutput, ReplayPlan, ReplayPlanOutput, ShardReplay,
};
pub use request::ReplayRequest;
use request::invalid;
pub use services::{Buckets, Queues, Streams, Targets, Topics};
pub use summary::{
    MAX_LISTED_LOCATIONS, ReplaySummary, ReplayTotals, SUMMARY_PAGE, ShardSummary, SummaryOutput,
};

use crate::jobs::items::{ItemsLocation, plan_key, write_items};
use crate::jobs::step;
use crate::model::archive::ArchiveLayout;
use crate::model::event::EventSource;
use crate::model::record::ArrivalTime;
use crate::pipeline::deaggregate::KinesisRecords;
use crate::pipeline::pace::Pace;
use crate::sinks::Target;
use crate::sinks::dlq::{Dlq, S3FailureDestination};
use crate::sinks::dry_run::DryRun;
use crate::sinks::function_target::FunctionTarget;
use crate::sinks::kinesis::ReinjectOptions;
use crate::sinks::lambda::invoker::Invoker;
use crate::sinks::stream_target::StreamTarget;
use crate::sinks::window_target::WindowTarget;
use crate::sources::dynamodb::{DynamoReader, DynamoSource};
use crate::sources::files::FilesSource;
use crate::sources::manifest::ManifestSource;
use crate::sources::s3_archive::{ArchiveSource, ShardLister};
use crate::sources::{RecordSource, ShardGroups, SourceStream};
use crate::store::ObjectReader;
use shard_run::{Checkpoint, ShardRun, save};

/// How much of a step's time is left unused before its Lambda deadline: a
/// piece's invocations (and their retries) must fit in it.
pub const STEP_MARGIN: Duration = Duration::from_secs(60);

/// Where the replay runs: the `eventSourceARN` of records replayed from the
/// archives (which keep stream names only) is
/// `arn:<partition>:kinesis:<region>:<account>:stream/<stream>`, and a
/// target stream named without an ARN is in them too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplaySettings {
    pub partition: String,
    /// `None`: the SDK configuration's region (`us-east-1` without one).
    pub region: Option<String>,
    pub account_id: String,
    /// `invokeIdentityArn` when the request names none.
    pub invoke_identity_arn: String,
    /// Whether requests may read the DynamoDB archive.
    pub dynamodb: bool,
}

/// The replay function's clients and settings, built once per container.
#[derive(Debug, Clone)]
pub struct Replayer<
    B = aws_sdk_s3::Client,
    T = aws_sdk_lambda::Client,
    K = aws_sdk_kinesis::Client,
    Q = aws_sdk_sqs::Client,
    N = aws_sdk_sns::Client,
> {
    pub buckets: B,
    pub targets: T,
    pub streams: K,
    pub queues: Q,
    pub topics: N,
    /// The DynamoDB archive's client (`DYNAMODB` sources); `None` where
    /// there is no table to read.
    pub tables: Option<aws_sdk_dynamodb::Client>,
    /// See [`ReplaySettings`].
    pub partition: String,
    pub region: String,
    pub account_id: String,
    pub invoke_identity_arn: String,
    /// First backoff after a throttled invoke or put.
    pub base_backoff: Duration,
}

impl<B: Buckets> Replayer<B> {
    /// The replayer of the function and of the CLI: AWS clients from one
    /// SDK configuration, `buckets` for S3 (the CLI's can be folders).
    pub fn new(buckets: B, sdk: &aws_config::SdkConfig, settings: ReplaySettings) -> Self {
        Self {
            buckets,
            targets: aws_sdk_lambda::Client::new(sdk),
            streams: aws_sdk_kinesis::Client::new(sdk),
            queues: aws_sdk_sqs::Client::new(sdk),
            topics: aws_sdk_sns::Client::new(sdk),
            tables: settings
                .dynamodb
                .then(|| aws_sdk_dynamodb::Client::new(sdk)),
            partition: settings.partition,
            region: settings
                .region
                .or_else(|| sdk.region().map(ToString::to_string))
                .unwrap_or_else(|| "us-east-1".to_owned()),
            account_id: settings.account_id,
            invoke_identity_arn: settings.invoke_identity_arn,
            base_backoff: Duration::from_millis(100),
        }
    }
}

impl<B: Buckets, T: Targets, K: Streams, Q: Queues, N: Topics> Replayer<B, T, K, Q, N> {
    /// A stream's ARN in the replay's own partition, region and account.
    pub fn local_stream_arn(&self, stream: &str) -> String {
        if stream.starts_with("arn:") {
            return stream.to_owned();
        }
        format!(
            "arn:{}:kinesis:{}:{}:stream/{stream}",
            self.partition, self.region, self.account_id
        )
    }

    /// The request's source, opened: the one place that knows every kind.
    /// A step opens it for its `shard` only (a manifest's, only that
    /// shard's own manifest, read a piece at a time).
    async fn open(
        &self,
        request: &ReplayRequest,
        shard: Option<&str>,
        list_until: Option<Instant>,
    ) -> Result<Box<dyn RecordSource + '_>, ReplayError> {
        Ok(match &request.source {
            ReplaySource::Manifest { bucket, key } => {
                let store = self.buckets.bucket(bucket);
                Box::new(match shard {
                    Some(shard) => ManifestSource::open_shard(store, bucket, key, shard)
                        .await?
                        .with_page(piece(request)),
                    None => ManifestSource::open(store, bucket, key).await?,
                })
            }
            ReplaySource::Archive {
                bucket,
                prefix,
                stream,
                from,
                to,
            } => {
                let layout = ArchiveLayout {
                    prefix: prefix.trim_end_matches('/').to_owned(),
                    ..ArchiveLayout::default()
                };
                let store = self.buckets.bucket(bucket);
                // Without markers: the stream's, in the replay's own account.
                let lister = (self.streams.shards())
                    .map(|s| ShardLister::new(s, self.local_stream_arn(stream), list_until));
                Box::new(
                    ArchiveSource::open(store, &layout, stream, (*from, *to), lister)
                        .await?
                        .with_page(piece(request)),
                )
            }
            ReplaySource::Dynamodb {
                table,
                stream,
                partition_key,
                from_sequence_number,
                to_sequence_number,
                overflow_bucket,
            } => {
                let client = self.tables.clone().ok_or_else(|| {
                    invalid(
                        "source",
                        "DYNAMODB sources are not enabled here (the stack has no archive table)",
                    )
                })?;
                Box::new(DynamoSource {
                    reader: DynamoReader::new(client, table),
                    stream: stream.clone(),
                    partition_key: partition_key.clone(),
                    from: from_sequence_number.clone(),
                    to: to_sequence_number.clone(),
                    overflow: overflow_bucket.as_ref().map(|b| self.buckets.bucket(b)),
                })
            }
            ReplaySource::Files { paths, stream_arn } => {
                Box::new(FilesSource::open(paths, stream_arn.clone())?.with_page(piece(request)))
            }
            ReplaySource::Scrape { .. } => return Err(ReplayError::ScrapeFirst),
        })
    }

    /// The stream the source's records were read from.
    fn stream_arn(&self, source: &dyn RecordSource) -> String {
        match source.stream() {
            SourceStream::Arn(arn) => arn,
            SourceStream::Name(name) => self.local_stream_arn(&name),
        }
    }

    /// The request's target (or the dry run standing in for it).
    async fn target<'a>(
        &'a self,
        request: &ReplayRequest,
        run_id: &str,
        shard_id: &str,
        stream_arn: String,
    ) -> Result<Box<dyn Target + 'a>, ReplayError> {
        let filters = request.options.filters()?;
        let target: Box<dyn Target + 'a> = match &request.target {
            _ if request.dry_run => Box::new(DryRun {
                filters,
                piece: piece(request),
            }),
            ReplayTarget::Function {
                function_name,
                qualifier,
                invoke_identity_arn,
            } => {
                let invoker = self.targets.invoker(function_name, qualifier.as_deref());
                // A live mapping's events name the function's own role; one
                // look-up per step, which also gives the DLQ the full ARN.
                let identity = invoker
                    .identity()
                    .await
                    .map_err(crate::sinks::lambda::DeliveryError::Invoke)?;
                let role = invoke_identity_arn.clone().unwrap_or(identity.role);
                let source = EventSource::new(
                    stream_arn,
                    if role.is_empty() {
                        self.invoke_identity_arn.clone()
                    } else {
                        role
                    },
                )?;
                let destination = match &request.dlq {
                    Some(DlqLocation::Sqs { queue_url }) => Dlq::Sqs(self.queues.queue(queue_url)),
                    Some(DlqLocation::Sns { topic_arn }) => Dlq::Sns(self.topics.topic(topic_arn)),
                    Some(DlqLocation::S3 { bucket, prefix }) => Dlq::S3(S3FailureDestination {
                        store: self.buckets.bucket(bucket),
                        mapping_id: run_id.to_owned(),
                        prefix: prefix.trim_end_matches('/').to_owned(),
                    }),
                    // validate() requires a DLQ for a function target.
                    None => return Err(invalid("dlq", "is missing").into()),
                };
                let function = FunctionTarget {
                    invoker,
                    destination,
                    source,
                    options: request.options.clone(),
                    now,
                    base_backoff: self.base_backoff,
                    gaps: Default::default(),
                    ahead: Default::default(),
                };
                let folder = request.progress_folder(run_id);
                match request.options.tumbling_window() {
                    // The window's state lives beside the shard's checkpoint.
                    Some(_) => Box::new(WindowTarget::new(
                        function,
                        self.buckets.bucket(&request.output().0),
                        format!("{folder}/{shard_id}/_window.json"),
                    )),
                    None => Box::new(function),
                }
            }
            ReplayTarget::Stream {
                stream,
                include_metadata,
                separator,
                keep_explicit_hash_key,
                ..
            } => Box::new(StreamTarget {
                // A name is put to in the replay's own account and region.
                sink: self.streams.sink(stream),
                options: ReinjectOptions {
                    envelope_separator: include_metadata.then(|| separator.as_bytes().to_vec()),
                    keep_explicit_hash_key: *keep_explicit_hash_key,
                    base_backoff: self.base_backoff,
                    ..ReinjectOptions::default()
                },
                filters,
            }),
        };
        Ok(target)
    }

    /// The shards to replay, parents before children, in lineage groups;
    /// an archive's `ListShards` fallback waits no later than `list_until`.
    pub async fn plan(
        &self,
        request: &ReplayRequest,
        run_id: &str,
        list_until: Option<Instant>,
    ) -> Result<ReplayPlan, ReplayError> {
        let (bucket, folder) = (request.output().0, request.progress_folder(run_id));
        let store = self.buckets.bucket(&bucket);
        Box::pin(crate::jobs::claim::replay(
            &store, &bucket, &folder, request, run_id,
        ))
        .await?;
        let source = self.open(request, None, list_until).await?;
        let ShardGroups { groups, lineage } = source.plan_shards().await?;
        let stream_arn = self.stream_arn(source.as_ref());
        EventSource::new(stream_arn.clone(), "")?;
        Ok(ReplayPlan {
            run_id: run_id.to_owned(),
            stream_arn,
            lineage,
            shards: groups.iter().flatten().cloned().collect(),
            groups: groups
                .into_iter()
                .map(|group| group.into_iter().map(ShardReplay::new).collect())
                .collect(),
        })
    }

    /// Stores the plan's groups where the state machine's Distributed Map
    /// reads them (the run's progress folder), and answers where they are.
    pub async fn store_plan(
        &self,
        request: &ReplayRequest,
        plan: ReplayPlan,
    ) -> Result<ReplayPlanOutput, ReplayError> {
        let (bucket, _) = request.output();
        let key = plan_key(&request.progress_folder(&plan.run_id));
        write_items(&self.buckets.bucket(&bucket), &key, &plan.groups)
            .await
            .map_err(ReplayError::Progress)?;
        Ok(ReplayPlanOutput {
            shards: plan.shards.len(),
            groups: plan.groups.len(),
            run_id: plan.run_id,
            stream_arn: plan.stream_arn,
            lineage: plan.lineage,
            items: ItemsLocation { bucket, key },
        })
    }

    /// One step of one shard: open the source, read its records after the
    /// checkpoint, pace them and settle them on the target piece by piece
    /// until the shard ends or the deadline nears; write the shard's final
    /// progress when it is done.
    pub async fn step(
        &self,
        request: &ReplayRequest,
        run_id: &str,
        progress: &ShardReplay,
        deadline: Instant,
    ) -> Result<ShardReplay, ReplayError> {
        let mut progress = progress.clone();
        if progress.done {
            return Ok(progress);
        }
        let started = Instant::now();
        let deadline = match request.max_step_seconds {
            Some(seconds) => deadline.min(started + Duration::from_secs(seconds.into())),
            None => deadline,
        };
        let stop_at = step::stop_time(deadline, STEP_MARGIN);
        // Where the last attempt of this step got to: a step that failed or
        // was killed after settling pieces left them in its checkpoint, and
        // its retry (from the same continuation) starts after them.
        let checkpoint = Checkpoint {
            store: self.buckets.bucket(&request.output().0),
            key: format!(
                "{}/{}/_checkpoint.json",
                request.progress_folder(run_id),
                progress.shard_id
            ),
        };
        match checkpoint.store.get(&checkpoint.key).await {
            Ok(bytes) => {
                if let Ok(saved) = serde_json::from_slice::<ShardReplay>(&bytes)
                    && saved.shard_id == progress.shard_id
                    && saved.last >= progress.last
                    && saved.records > progress.records
                {
                    progress = saved;
                }
            }
            Err(error) if error.is_not_found() => {}
            Err(error) => return Err(error.into()),
        }
        progress.started_at.get_or_insert_with(now);
        let source = self.open(request, Some(&progress.shard_id), None).await?;
        let stream_arn = self.stream_arn(source.as_ref());
        let target = self
            .target(request, run_id, &progress.shard_id, stream_arn)
            .await?;
        let speedup = match &request.target {
            ReplayTarget::Stream { speedup, .. } if !request.dry_run => *speedup,
            _ => None,
        };
        let mut run = ShardRun {
            target: target.as_ref(),
            pace: Pace::new(request.records_per_second, speedup, started, stop_at),
            checkpoint,
        };
        let (shard_id, resume) = (progress.shard_id.clone(), progress.last.clone());
        let cursor = progress.cursor.clone();
        let mut pages = source
            .pages_from(&shard_id, resume.as_ref(), cursor.as_deref())
            .await?;
        if let ReplayTarget::Function { .. } = request.target {
            // The mapping hands a function Kinesis records, aggregates whole.
            pages = Box::new(KinesisRecords::new(pages, request.deliver));
        }
        let finished = run.all(pages.as_mut(), &mut progress).await?;
        if finished {
            progress.done = true;
            progress.finished_at = Some(now());
            let key = format!(
                "{}/{}/_progress.json",
                request.progress_folder(run_id),
                progress.shard_id
            );
            save(&run.checkpoint.store, key, &progress).await?;
        }
        Ok(progress)
    }

    /// Handles one invocation; `deadline` is the Lambda's, `invocation_id`
    /// names a run that the request doesn't name.
    pub async fn handle(
        &self,
        event: ReplayEvent,
        deadline: Instant,
        invocation_id: &str,
    ) -> Result<ReplayOutput, ReplayError> {
        match event {
            // Parsing validated it.
            ReplayEvent::Validate { .. } => Ok(ReplayOutput::Valid { valid: true }),
            ReplayEvent::Plan { request } => {
                let run_id = step::run_id(request.run_id.as_deref(), invocation_id);
                let until = step::stop_time(deadline, STEP_MARGIN);
                let plan = self.plan(&request, &run_id, Some(until)).await?;
                Ok(ReplayOutput::Plan(self.store_plan(&request, plan).await?))
            }
            ReplayEvent::Step {
                request,
                run_id,
                progress,
            } => {
                let progress = self.step(&request, &run_id, &progress, deadline).await?;
                Ok(ReplayOutput::Step {
                    done: progress.done,
                    progress,
                })
            }
            ReplayEvent::Summary {
                request,
                run_id,
                plan,
            } => Ok(ReplayOutput::Summary(
                self.write_summary(&request, &run_id, &plan).await?,
            )),
        }
    }
}

/// Records the request's target settles at a time (a piece): a few batches
/// of each lane for a function
/// ([`crate::sinks::lambda::options::MappingOptions::piece`]), a PutRecords
/// call for a stream.
fn piece(request: &ReplayRequest) -> usize {
    match &request.target {
        ReplayTarget::Function { .. } => request.options.piece(),
        ReplayTarget::Stream { .. } => crate::sinks::kinesis::MAX_ENTRIES,
    }
}

fn now() -> ArrivalTime {
    ArrivalTime::from_datetime(chrono::Utc::now())
}

#[cfg(test)]
mod tests;
