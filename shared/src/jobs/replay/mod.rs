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
//!   `from..to` (epoch seconds, `to` exclusive); shards in shard-id order,
//!   which is lineage order (Kinesis numbers a child shard after its
//!   parents), records read one archive object at a time.
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
//! (the manifest's `streamArn`) for a manifest; for the archives, which keep
//! stream names only, it is built from the stream name and the partition,
//! region and account the replay function runs in (see [`Replayer`]).
//!
//! Failed batches go to the S3 DLQ in the mapping's on-failure format, under
//! `<dlq prefix>/aws/lambda/<runId>/<shardId>/…` (the run id stands in for
//! the mapping's UUID), or to an SQS queue as the mapping's on-failure
//! record. Each finished shard writes its final progress to
//! `<output prefix>/<runId>/<shardId>/_progress.json` (by default the DLQ
//! bucket and `<dlq prefix>/replays`); the summary reads those back.
//!
//! A step hands records to the target in pieces of `BatchSize ×
//! ParallelizationFactor` (500 for a stream) and stops handing them on, even
//! inside a batch's retries, before its deadline; its continuation is the
//! position of the last settled record. Each settled piece is also saved as
//! the shard's checkpoint (`<output prefix>/<runId>/<shardId>/_checkpoint.json`):
//! a step that fails or is killed is retried from its continuation, and
//! starts after the checkpoint, so only the piece it was in the middle of is
//! delivered again: at least once, never skipped.

mod error;
mod protocol;
mod request;
mod summary;

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

pub use error::ReplayError;
pub use protocol::{PaceOrigin, ReplayEvent, ReplayPlan, ShardReplay};
use request::invalid;
pub use request::{DlqLocation, ReplayRequest, ReplaySource, ReplayTarget, RunOutput};
pub use summary::{MAX_LISTED_LOCATIONS, ReplaySummary, ReplayTotals, ShardSummary};

use crate::model::archive::ArchiveLayout;
use crate::model::event::EventSource;
use crate::model::manifest::{Manifest, ManifestShard};
use crate::model::record::{ArrivalTime, Record};
use crate::model::seqno::Position;
use crate::pipeline::lineage::lineage_groups;
use crate::sinks::invoke::{LambdaInvoker, S3FailureDestination, SqsFailureDestination};
use crate::sinks::kinesis::{KinesisSink, RecordSink, ReinjectOptions, reinject};
use crate::sinks::lambda::{
    Delivery, DeliveryError, DeliveryReport, FailureDestination, FailureRecord, Invoker, Unsettled,
};
use crate::sources::dynamodb::DynamoReader;
use crate::sources::manifest::read_shard_chunks;
use crate::sources::s3_archive::{ShardScan, plan_scan};
use crate::store::{ObjectReader, ObjectStore, PutObject};

/// S3 buckets by name (a memory store in tests).
pub trait Buckets: Send + Sync {
    type Store: ObjectStore + ObjectReader;
    fn bucket(&self, name: &str) -> Self::Store;
}

impl Buckets for aws_sdk_s3::Client {
    type Store = crate::store::S3Store;

    fn bucket(&self, name: &str) -> Self::Store {
        crate::store::S3Store::new(self.clone(), name)
    }
}

/// Target functions by request.
pub trait Targets: Send + Sync {
    type Invoker: Invoker;
    fn invoker(&self, function_name: &str, qualifier: Option<&str>) -> Self::Invoker;
}

impl Targets for aws_sdk_lambda::Client {
    type Invoker = LambdaInvoker;

    fn invoker(&self, function_name: &str, qualifier: Option<&str>) -> Self::Invoker {
        LambdaInvoker::new(self.clone(), function_name, qualifier.map(str::to_owned))
    }
}

/// Target streams by name or ARN.
pub trait Streams: Send + Sync {
    type Sink: RecordSink;
    fn sink(&self, stream: &str) -> Self::Sink;
}

impl Streams for aws_sdk_kinesis::Client {
    type Sink = KinesisSink;

    fn sink(&self, stream: &str) -> Self::Sink {
        KinesisSink::new(self.clone(), stream)
    }
}

/// SQS DLQs by queue URL.
pub trait Queues: Send + Sync {
    type Destination: FailureDestination;
    fn queue(&self, queue_url: &str) -> Self::Destination;
}

impl Queues for aws_sdk_sqs::Client {
    type Destination = SqsFailureDestination;

    fn queue(&self, queue_url: &str) -> Self::Destination {
        SqsFailureDestination {
            client: self.clone(),
            queue_url: queue_url.to_owned(),
        }
    }
}

/// The request's DLQ, whichever kind it is.
enum Dlq<A, B> {
    S3(A),
    Sqs(B),
}

impl<A: FailureDestination, B: FailureDestination> FailureDestination for Dlq<A, B> {
    async fn send(&self, record: FailureRecord) -> Result<String, DeliveryError> {
        match self {
            Self::S3(destination) => destination.send(record).await,
            Self::Sqs(destination) => destination.send(record).await,
        }
    }

    fn wants_payload(&self) -> bool {
        match self {
            Self::S3(destination) => destination.wants_payload(),
            Self::Sqs(destination) => destination.wants_payload(),
        }
    }
}

/// How much of a step's time is left unused before its Lambda deadline: a
/// piece's invocations (and their retries) must fit in it.
pub const STEP_MARGIN: Duration = Duration::from_secs(60);

/// Records per page of a DynamoDB source.
const DYNAMODB_PAGE: i32 = 1000;

/// The replay function's clients and settings, built once per container.
#[derive(Debug, Clone)]
pub struct Replayer<
    B = aws_sdk_s3::Client,
    T = aws_sdk_lambda::Client,
    K = aws_sdk_kinesis::Client,
    Q = aws_sdk_sqs::Client,
> {
    pub buckets: B,
    pub targets: T,
    pub streams: K,
    pub queues: Q,
    /// The DynamoDB archive's client (`DYNAMODB` sources); `None` where
    /// there is no table to read.
    pub tables: Option<aws_sdk_dynamodb::Client>,
    /// The partition, region and account the replay runs in: the
    /// `eventSourceARN` of records replayed from the archive is
    /// `arn:<partition>:kinesis:<region>:<account>:stream/<stream>`, and a
    /// target stream named without an ARN is in them too.
    pub partition: String,
    pub region: String,
    pub account_id: String,
    /// `invokeIdentityArn` when the request names none.
    pub invoke_identity_arn: String,
    /// First backoff after a throttled invoke or put.
    pub base_backoff: Duration,
}

impl<B: Buckets, T: Targets, K: Streams, Q: Queues> Replayer<B, T, K, Q> {
    async fn manifest(&self, bucket: &str, key: &str) -> Result<Manifest, ReplayError> {
        let bytes = self.buckets.bucket(bucket).get(key).await?;
        serde_json::from_slice(&bytes).map_err(|source| ReplayError::Manifest {
            key: format!("s3://{bucket}/{key}"),
            source,
        })
    }

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

    /// The stream the records were read from: a manifest's own (`manifest`
    /// is the request's, for a `MANIFEST` source), or the archived stream's
    /// in the replay's account and region.
    fn stream_arn(
        &self,
        request: &ReplayRequest,
        manifest: Option<&Manifest>,
    ) -> Result<String, ReplayError> {
        match (&request.source, manifest) {
            (ReplaySource::Manifest { .. }, Some(manifest)) => Ok(manifest.stream_arn.clone()),
            (ReplaySource::Archive { stream, .. } | ReplaySource::Dynamodb { stream, .. }, _) => {
                Ok(self.local_stream_arn(stream))
            }
            (ReplaySource::Scrape { .. }, _) => Err(ReplayError::ScrapeFirst),
            (ReplaySource::Manifest { key, .. }, None) => {
                unreachable!("the manifest {key} is read before the stream ARN")
            }
        }
    }

    fn dynamo(&self, table: &str) -> Result<DynamoReader, ReplayError> {
        let client = self.tables.clone().ok_or_else(|| {
            invalid(
                "source",
                "DYNAMODB sources are not enabled here (the stack has no archive table)",
            )
        })?;
        Ok(DynamoReader::new(client, table))
    }

    /// The shards to replay, parents before children, in lineage groups.
    pub async fn plan(
        &self,
        request: &ReplayRequest,
        run_id: &str,
    ) -> Result<ReplayPlan, ReplayError> {
        let (stream_arn, groups): (String, Vec<Vec<String>>) = match &request.source {
            ReplaySource::Manifest { bucket, key } => {
                let manifest = self.manifest(bucket, key).await?;
                let shards: Vec<(String, Vec<String>)> = manifest
                    .shards
                    .iter()
                    .map(|s| (s.shard_id.clone(), s.parent_shard_ids.clone()))
                    .collect();
                (manifest.stream_arn, lineage_groups(&shards))
            }
            ReplaySource::Archive {
                bucket,
                prefix,
                stream,
                from,
                to,
            } => {
                let layout = archive_layout(prefix);
                let store = self.buckets.bucket(bucket);
                // A BTreeMap: shard-id order, which is lineage order. The
                // archive keeps no parent links, so the shards form one
                // group: a child never starts before its parents end.
                let shards: Vec<String> = plan_scan(&store, &layout, stream, *from, *to)
                    .await?
                    .into_keys()
                    .collect();
                (self.local_stream_arn(stream), one_group(shards))
            }
            ReplaySource::Dynamodb {
                table,
                stream,
                partition_key,
                from_sequence_number,
                to_sequence_number,
                ..
            } => {
                let shards = self
                    .dynamo(table)?
                    .shards_of(
                        stream,
                        partition_key,
                        from_sequence_number.as_ref(),
                        to_sequence_number.as_ref(),
                    )
                    .await?;
                (
                    self.local_stream_arn(stream),
                    one_group(shards.into_iter().collect()),
                )
            }
            ReplaySource::Scrape { .. } => return Err(ReplayError::ScrapeFirst),
        };
        EventSource::new(stream_arn.clone(), "")?;
        Ok(ReplayPlan {
            run_id: run_id.to_owned(),
            stream_arn,
            shards: groups.iter().flatten().cloned().collect(),
            groups: groups
                .into_iter()
                .map(|group| group.into_iter().map(ShardReplay::new).collect())
                .collect(),
        })
    }

    /// One step of one shard: delivers pieces until the shard ends or the
    /// deadline nears; writes the shard's final progress when it is done.
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
        let remaining = deadline.saturating_duration_since(started);
        let stop_at = deadline
            .checked_sub(STEP_MARGIN.min(remaining / 3))
            .unwrap_or(deadline);
        // Where the last attempt of this step got to: a step that failed or
        // was killed after settling pieces left them in its checkpoint, and
        // its retry (from the same continuation) starts after them.
        let checkpoint_key = format!(
            "{}/{}/_checkpoint.json",
            request.progress_folder(run_id),
            progress.shard_id
        );
        let output = self.buckets.bucket(&request.output().0);
        match output.get(&checkpoint_key).await {
            Ok(bytes) => {
                if let Ok(saved) = serde_json::from_slice::<ShardReplay>(&bytes)
                    && saved.shard_id == progress.shard_id
                    && saved.last > progress.last
                {
                    progress = saved;
                }
            }
            Err(error) if error.is_not_found() => {}
            Err(error) => return Err(error.into()),
        }
        progress.started_at.get_or_insert_with(now);
        // Read once: the stream ARN and the shard's chunks both come from it.
        let manifest = match &request.source {
            ReplaySource::Manifest { bucket, key } => Some(self.manifest(bucket, key).await?),
            _ => None,
        };
        let stream_arn = self.stream_arn(request, manifest.as_ref())?;
        let filters = request.options.filters()?;
        let (invoker, source, destination);
        let (target, speedup) = match (&request.target, request.dry_run) {
            (_, true) => (Deliver::DryRun, None),
            (
                ReplayTarget::Function {
                    function_name,
                    qualifier,
                    invoke_identity_arn,
                },
                false,
            ) => {
                source = EventSource::new(
                    stream_arn,
                    invoke_identity_arn
                        .clone()
                        .unwrap_or_else(|| self.invoke_identity_arn.clone()),
                )?;
                invoker = self.targets.invoker(function_name, qualifier.as_deref());
                destination = match &request.dlq {
                    Some(DlqLocation::Sqs { queue_url }) => Dlq::Sqs(self.queues.queue(queue_url)),
                    Some(DlqLocation::S3 { bucket, prefix }) => Dlq::S3(S3FailureDestination {
                        store: self.buckets.bucket(bucket),
                        mapping_id: run_id.to_owned(),
                        prefix: prefix.trim_end_matches('/').to_owned(),
                    }),
                    // validate() requires a DLQ for a function target.
                    None => return Err(invalid("dlq", "is missing").into()),
                };
                let delivery = Delivery {
                    invoker: &invoker,
                    destination: &destination,
                    source: &source,
                    options: &request.options,
                    now,
                    base_backoff: self.base_backoff,
                };
                (Deliver::Function(delivery), None)
            }
            (
                ReplayTarget::Stream {
                    stream,
                    include_metadata,
                    separator,
                    keep_explicit_hash_key,
                    speedup,
                },
                false,
            ) => {
                let options = ReinjectOptions {
                    envelope_separator: include_metadata.then(|| separator.as_bytes().to_vec()),
                    keep_explicit_hash_key: *keep_explicit_hash_key,
                    base_backoff: self.base_backoff,
                    ..ReinjectOptions::default()
                };
                // A name is put to in the replay's own account and region.
                let sink = self.streams.sink(stream);
                (Deliver::Stream { sink, options }, *speedup)
            }
        };
        let mut sink = Sink {
            target,
            filters,
            piece: match &request.target {
                // One PutRecords call's worth: a stream target has no
                // batches of its own.
                ReplayTarget::Stream { .. } => crate::sinks::kinesis::MAX_ENTRIES,
                ReplayTarget::Function { .. } => {
                    (request.options.batch_size * request.options.parallelization_factor).max(1)
                }
            },
            stop_at,
            started,
            sent: 0,
            records_per_second: request.records_per_second,
            speedup,
            checkpoint: (output, checkpoint_key),
        };
        let finished = match &request.source {
            ReplaySource::Manifest { bucket, .. } => {
                let manifest = manifest
                    .as_ref()
                    .expect("a MANIFEST source's manifest was read above");
                let shard = manifest
                    .shards
                    .iter()
                    .find(|s| s.shard_id == progress.shard_id)
                    .ok_or_else(|| {
                        invalid(
                            "progress.shardId",
                            format!("{:?} is not a shard of the manifest", progress.shard_id),
                        )
                    })?;
                let store = self.buckets.bucket(bucket);
                replay_manifest_shard(&store, shard, &mut progress, &mut sink).await?
            }
            ReplaySource::Archive {
                bucket,
                prefix,
                stream,
                from,
                to,
            } => {
                let store = self.buckets.bucket(bucket);
                let mut objects = plan_scan(&store, &archive_layout(prefix), stream, *from, *to)
                    .await?
                    .remove(&progress.shard_id)
                    .unwrap_or_default();
                if let Some(last) = &progress.last {
                    objects.retain(|o| o.last > *last);
                }
                let mut scan = ShardScan::new(objects, *from, *to);
                let mut finished = true;
                while let Some(records) = scan
                    .next_batch(&store)
                    .await
                    .map_err(|e| ReplayError::Source(Box::new(e)))?
                {
                    if !sink.take(records, &mut progress).await? {
                        finished = false;
                        break;
                    }
                }
                finished
            }
            ReplaySource::Dynamodb {
                table,
                stream,
                partition_key,
                from_sequence_number,
                to_sequence_number,
                overflow_bucket,
            } => {
                let reader = self.dynamo(table)?;
                // Resume at the last settled record (take() skips it and
                // everything before).
                let from = progress
                    .last
                    .as_ref()
                    .map(|p| p.sequence_number.clone())
                    .or_else(|| from_sequence_number.clone());
                let overflow = overflow_bucket.as_ref().map(|b| self.buckets.bucket(b));
                let mut start = None;
                let mut finished = true;
                loop {
                    let page = reader
                        .query(
                            stream,
                            partition_key,
                            from.as_ref(),
                            to_sequence_number.as_ref(),
                            DYNAMODB_PAGE,
                            start,
                        )
                        .await?;
                    let mut records = Vec::new();
                    for (mut record, data_key) in page.records {
                        if record.shard_id != progress.shard_id {
                            continue;
                        }
                        if let Some(key) = data_key {
                            let Some(store) = &overflow else {
                                return Err(invalid(
                                    "source.overflowBucket",
                                    format!("is missing; record {} keeps its data in S3 ({key}): name the archive bucket", record.sequence_number),
                                )
                                .into());
                            };
                            record.data = store.get(&key).await?;
                        }
                        records.push(record);
                    }
                    if !sink.take(records, &mut progress).await? {
                        finished = false;
                        break;
                    }
                    match page.next {
                        Some(next) => start = Some(next),
                        None => break,
                    }
                }
                finished
            }
            ReplaySource::Scrape { .. } => return Err(ReplayError::ScrapeFirst),
        };
        if finished {
            progress.done = true;
            progress.finished_at = Some(now());
            let key = format!(
                "{}/{}/_progress.json",
                request.progress_folder(run_id),
                progress.shard_id
            );
            self.buckets
                .bucket(&request.output().0)
                .put(PutObject {
                    key,
                    body: serde_json::to_vec(&progress).expect("progress always serialises"),
                    content_type: "application/json",
                    content_encoding: None,
                })
                .await
                .map_err(ReplayError::Progress)?;
        }
        Ok(progress)
    }

    /// Every shard's final progress, and the totals.
    pub async fn summary(
        &self,
        request: &ReplayRequest,
        run_id: &str,
        shards: &[String],
    ) -> Result<ReplaySummary, ReplayError> {
        let store = self.buckets.bucket(&request.output().0);
        let mut out = Vec::new();
        let mut totals = ReplayTotals::default();
        let (mut first_start, mut last_end) = (None::<ArrivalTime>, None::<ArrivalTime>);
        for shard_id in shards {
            let key = format!(
                "{}/{shard_id}/_progress.json",
                request.progress_folder(run_id)
            );
            let unfinished = || ReplayError::Unfinished {
                shard_id: shard_id.clone(),
                key: key.clone(),
            };
            // Only a missing progress file means the shard did not finish; a
            // read that failed (throttled, denied) is retried as such.
            let bytes = store.get(&key).await.map_err(|error| {
                if error.is_not_found() {
                    unfinished()
                } else {
                    ReplayError::Store(error)
                }
            })?;
            let progress: ShardReplay = serde_json::from_slice(&bytes).map_err(|_| unfinished())?;
            let dlq_keys = match (&request.dlq, request.dlq_folder(run_id, shard_id)) {
                (Some(DlqLocation::S3 { bucket, .. }), Some(folder))
                    if progress.dlq_locations > 0 =>
                {
                    let mut keys = self.buckets.bucket(bucket).list(&folder).await?;
                    keys.truncate(MAX_LISTED_LOCATIONS);
                    keys.into_iter()
                        .map(|k| format!("s3://{bucket}/{k}"))
                        .collect()
                }
                _ => Vec::new(),
            };
            totals.shards += 1;
            totals.records += progress.records;
            totals.delivered += progress.delivered;
            totals.filtered += progress.filtered;
            totals.failed_records += progress.failed_records;
            totals.failed_batches += progress.failed_batches;
            totals.invocations += progress.invocations;
            totals.function_errors += progress.function_errors;
            totals.dlq_locations += progress.dlq_locations;
            if let Some(start) = progress.started_at {
                first_start = Some(first_start.map_or(start, |t| t.min(start)));
            }
            if let Some(end) = progress.finished_at {
                last_end = Some(last_end.map_or(end, |t| t.max(end)));
            }
            out.push(ShardSummary {
                last_sequence_number: progress.last.as_ref().map(|p| p.sequence_number.clone()),
                duration_ms: duration_ms(progress.started_at, progress.finished_at),
                progress,
                dlq_keys,
            });
        }
        totals.duration_ms = duration_ms(first_start, last_end);
        Ok(ReplaySummary {
            run_id: run_id.to_owned(),
            dry_run: request.dry_run,
            target: match &request.target {
                ReplayTarget::Function { function_name, .. } => function_name.clone(),
                ReplayTarget::Stream { stream, .. } => stream.clone(),
            },
            dlq: request.dlq_location(run_id),
            shards: out,
            totals,
        })
    }

    /// Handles one invocation; `deadline` is the Lambda's, `invocation_id`
    /// names a run that the request doesn't name.
    pub async fn handle(
        &self,
        event: ReplayEvent,
        deadline: Instant,
        invocation_id: &str,
    ) -> Result<serde_json::Value, ReplayError> {
        match event {
            // Parsing validated it.
            ReplayEvent::Validate { .. } => Ok(serde_json::json!({ "valid": true })),
            ReplayEvent::Plan { request } => {
                let run_id = request
                    .run_id
                    .clone()
                    .unwrap_or_else(|| invocation_id.to_owned());
                Ok(to_json(&self.plan(&request, &run_id).await?))
            }
            ReplayEvent::Step {
                request,
                run_id,
                progress,
            } => {
                let progress = self.step(&request, &run_id, &progress, deadline).await?;
                Ok(serde_json::json!({ "done": progress.done, "progress": progress }))
            }
            ReplayEvent::Summary {
                request,
                run_id,
                shards,
            } => Ok(to_json(&self.summary(&request, &run_id, &shards).await?)),
        }
    }
}

fn one_group(shards: Vec<String>) -> Vec<Vec<String>> {
    if shards.is_empty() {
        Vec::new()
    } else {
        vec![shards]
    }
}

fn duration_ms(start: Option<ArrivalTime>, end: Option<ArrivalTime>) -> Option<i64> {
    Some(end?.epoch_millis() - start?.epoch_millis())
}

/// Replay outputs are plain data: serialising them can't fail.
fn to_json<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("replay outputs always serialise")
}

fn now() -> ArrivalTime {
    ArrivalTime::from_datetime(chrono::Utc::now())
}

fn archive_layout(prefix: &str) -> ArchiveLayout {
    ArchiveLayout {
        prefix: prefix.trim_end_matches('/').to_owned(),
        ..ArchiveLayout::default()
    }
}

/// What a step hands its pieces to.
enum Deliver<'a, I, D, S> {
    Function(Delivery<'a, I, D>),
    Stream {
        sink: S,
        options: ReinjectOptions,
    },
    /// Counts (and filters), invokes nothing.
    DryRun,
}

/// Hands records to the target (or counts them, in a dry run) one piece at
/// a time, at the request's pace, until the deadline.
struct Sink<'a, I, D, S, W> {
    target: Deliver<'a, I, D, S>,
    filters: crate::pipeline::filter::Filters,
    piece: usize,
    stop_at: Instant,
    /// When this step started, and records it handed on since.
    started: Instant,
    sent: u64,
    records_per_second: Option<f64>,
    speedup: Option<f64>,
    /// Where each settled piece's progress is saved, and the key.
    checkpoint: (W, String),
}

impl<I: Invoker, D: FailureDestination, S: RecordSink, W: ObjectStore> Sink<'_, I, D, S, W> {
    /// Takes the records after `progress.last`; `false` when the step must
    /// stop (the records not settled are taken again by the next step).
    async fn take(
        &mut self,
        records: Vec<Record>,
        progress: &mut ShardReplay,
    ) -> Result<bool, ReplayError> {
        let mut records: Vec<Record> = match &progress.last {
            Some(last) => records
                .into_iter()
                .filter(|r| Position::of(r) > *last)
                .collect(),
            None => records,
        };
        while !records.is_empty() {
            if Instant::now() >= self.stop_at {
                return Ok(false);
            }
            let mut n = self.piece.min(records.len());
            if let Some(speedup) = self.speedup {
                let origin = *progress.pace.get_or_insert(PaceOrigin {
                    wall: now(),
                    arrival: records[0].approximate_arrival_timestamp,
                });
                let due = |r: &Record| {
                    let offset = (r.approximate_arrival_timestamp.epoch_millis()
                        - origin.arrival.epoch_millis()) as f64
                        / speedup;
                    origin.wall.epoch_millis() + offset.max(0.0) as i64
                };
                let wait = due(&records[0]) - now().epoch_millis();
                if wait > 0 && !self.wait(Duration::from_millis(wait as u64)).await {
                    return Ok(false);
                }
                let at = now().epoch_millis();
                n = records[..n]
                    .iter()
                    .take_while(|r| due(r) <= at)
                    .count()
                    .max(1);
            }
            if let Some(rate) = self.records_per_second {
                n = n.min(rate.ceil() as usize).max(1);
                let earliest = self.started + Duration::from_secs_f64(self.sent as f64 / rate);
                let wait = earliest.saturating_duration_since(Instant::now());
                if !wait.is_zero() && !self.wait(wait).await {
                    return Ok(false);
                }
            }
            let rest = records.split_off(n);
            let piece = std::mem::replace(&mut records, rest);
            let (report, unsettled) = self.deliver(&piece).await?;
            // A delivery stopped at the step's deadline settles the records
            // before the first one it had not settled; the next step starts
            // there.
            let settled = match &unsettled {
                Some(first) => piece
                    .iter()
                    .position(|r| (r.sequence_number.clone(), r.sub_sequence_number) >= *first)
                    .unwrap_or(piece.len()),
                None => piece.len(),
            };
            self.sent += settled as u64;
            progress.settle(&piece[..settled], &report);
            self.save(progress).await?;
            if unsettled.is_some() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Saves the progress of the pieces settled so far (see `step`).
    async fn save(&self, progress: &ShardReplay) -> Result<(), ReplayError> {
        let (store, key) = &self.checkpoint;
        store
            .put(PutObject {
                key: key.clone(),
                body: serde_json::to_vec(progress).expect("progress always serialises"),
                content_type: "application/json",
                content_encoding: None,
            })
            .await
            .map_err(ReplayError::Progress)
    }

    /// Sleeps `wait`, unless that would pass the step's stop time: then
    /// `false` (the step ends, the next one waits).
    async fn wait(&self, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        // Waiting out the step's time either way: a step that returned at
        // once would have the state machine invoke the next one at once,
        // in a loop, through a long gap in the original traffic.
        tokio::time::sleep_until(until.min(self.stop_at)).await;
        until < self.stop_at
    }

    /// What happened to `piece`, and where the delivery stopped if the
    /// step's time ran out in the middle of it.
    async fn deliver(
        &self,
        piece: &[Record],
    ) -> Result<(DeliveryReport, Option<Unsettled>), ReplayError> {
        match &self.target {
            Deliver::Function(delivery) => Ok(delivery
                .deliver_until(piece.to_vec(), Some(self.stop_at))
                .await?),
            Deliver::Stream { sink, options } => {
                let matched: Vec<Record> = piece
                    .iter()
                    .filter(|r| self.filters.matches(r))
                    .cloned()
                    .collect();
                let filtered = (piece.len() - matched.len()) as u64;
                let report = reinject(sink, matched, options).await?;
                let report = DeliveryReport {
                    delivered: report.put,
                    filtered,
                    invocations: report.calls,
                    ..DeliveryReport::default()
                };
                Ok((report, None))
            }
            Deliver::DryRun => {
                let matched = piece.iter().filter(|r| self.filters.matches(r)).count() as u64;
                let report = DeliveryReport {
                    filtered: piece.len() as u64 - matched,
                    ..DeliveryReport::default()
                };
                Ok((report, None))
            }
        }
    }
}

/// A manifest shard's records after `progress.last`, one chunk at a time.
async fn replay_manifest_shard<
    R: ObjectReader,
    I: Invoker,
    D: FailureDestination,
    S: RecordSink,
    W: ObjectStore,
>(
    store: &R,
    shard: &ManifestShard,
    progress: &mut ShardReplay,
    sink: &mut Sink<'_, I, D, S, W>,
) -> Result<bool, ReplayError> {
    for chunk in &shard.chunks {
        if progress
            .last
            .as_ref()
            .is_some_and(|last| chunk.last_sequence_number < last.sequence_number)
        {
            continue;
        }
        let one = ManifestShard {
            chunks: vec![chunk.clone()],
            ..shard.clone()
        };
        let mut records = Vec::new();
        read_shard_chunks(store, &one, |r| records.push(r))
            .await
            .map_err(|e| ReplayError::Source(Box::new(e)))?;
        if !sink.take(records, progress).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests;
