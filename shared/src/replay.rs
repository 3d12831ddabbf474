//! Replaying a window to a function exactly as the event source mapping
//! would have delivered it: the request the replay function and the replay
//! state machine take, the plan (the shards, parents before children), the
//! step (one shard's records from the source, one piece at a time, into
//! [`crate::delivery::Delivery`], until the shard ends or the step's
//! deadline), and the summary.
//!
//! Sources:
//! - `MANIFEST`: a scrape's `manifest.json`; shards in the manifest's order
//!   (parents before children), records read chunk by chunk.
//! - `ARCHIVE`: the S3 archive of one stream, records that arrived in
//!   `from..to` (epoch seconds, `to` exclusive); shards in shard-id order,
//!   which is lineage order (Kinesis numbers a child shard after its
//!   parents), records read one archive object at a time.
//!
//! `eventSourceARN` of the delivered events is the scraped stream's ARN
//! (the manifest's `streamArn`) for a manifest; for the archive, which keeps
//! stream names only, it is built from the stream name and the partition,
//! region and account the replay function runs in (see [`Replayer`]).
//!
//! Failed batches go to the S3 DLQ in the mapping's on-failure format, under
//! `<dlq prefix>/aws/lambda/<runId>/<shardId>/…` (the run id stands in for
//! the mapping's UUID). Each finished shard writes its final progress to
//! `<dlq prefix>/replays/<runId>/<shardId>/_progress.json` in the DLQ bucket;
//! the summary reads those back.
//!
//! A step hands records to delivery in pieces of `BatchSize ×
//! ParallelizationFactor` and records the position of the last record of
//! each settled piece: a step killed mid-piece is retried from the last
//! settled piece, so records are delivered at least once, never skipped.

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::archive::{ArchiveLayout, ShardScan, plan_scan};
use crate::delivery::{
    Delivery, DeliveryError, DeliveryReport, FailureDestination, Invoker, MappingOptions,
};
use crate::event::{EventSource, StreamArnError};
use crate::invoke::{LambdaInvoker, S3FailureDestination};
use crate::record::{ArrivalTime, Record};
use crate::scrape::{Manifest, ManifestShard, RequestError, parse_json, read_shard_chunks};
use crate::seqno::SequenceNumber;
use crate::store::{ObjectReader, ObjectStore, PutObject, StoreError};

/// Where the records come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
pub enum ReplaySource {
    /// A scrape's manifest.
    Manifest { bucket: String, key: String },
    /// The S3 archive of `stream`, records that arrived in `from..to`.
    Archive {
        bucket: String,
        #[serde(default = "default_archive_prefix")]
        prefix: String,
        /// Stream name, as the archive's partitions name it.
        stream: String,
        /// Epoch seconds, inclusive.
        from: ArrivalTime,
        /// Epoch seconds, exclusive.
        to: ArrivalTime,
    },
}

fn default_archive_prefix() -> String {
    "archive".to_owned()
}

/// Where the records go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
pub enum ReplayTarget {
    #[serde(rename_all = "camelCase")]
    Function {
        /// Name, ARN or partial ARN.
        function_name: String,
        /// Version or alias.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        qualifier: Option<String>,
        /// The events' `invokeIdentityArn` (a live mapping shows the target
        /// function's execution role); the replay function's default when
        /// absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        invoke_identity_arn: Option<String>,
    },
}

/// Where failed batches go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
pub enum DlqLocation {
    S3 {
        bucket: String,
        #[serde(default = "default_dlq_prefix")]
        prefix: String,
    },
}

fn default_dlq_prefix() -> String {
    "dlq".to_owned()
}

/// A replay request: the replay state machine's input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplayRequest {
    pub source: ReplaySource,
    pub target: ReplayTarget,
    /// Named as the event source mapping names them.
    #[serde(default)]
    pub options: MappingOptions,
    pub dlq: DlqLocation,
    /// Read and validate every record, invoke nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Names the run (DLQ folder and progress); the state machine passes its
    /// execution name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Shards replayed at the same time by the replay state machine (its
    /// Map's `MaxConcurrency`, 1 when absent, so parents finish before their
    /// children start); the function itself ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
}

fn invalid(field: &str, message: impl Into<String>) -> RequestError {
    RequestError {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn check_prefix(field: &str, prefix: &str) -> Result<(), RequestError> {
    if prefix.starts_with('/') || prefix.contains("//") {
        return Err(invalid(
            field,
            format!("{prefix:?} must not start with / or contain //"),
        ));
    }
    Ok(())
}

impl ReplayRequest {
    /// Parses and validates a request, before any work.
    pub fn parse(json: &[u8]) -> Result<Self, RequestError> {
        let request: Self = parse_json(json)?;
        request.validate()?;
        Ok(request)
    }

    /// Checks what the types can't.
    pub fn validate(&self) -> Result<(), RequestError> {
        match &self.source {
            ReplaySource::Manifest { bucket, key } => {
                if bucket.is_empty() {
                    return Err(invalid("source.bucket", "is empty; name the bucket"));
                }
                if key.is_empty() {
                    return Err(invalid(
                        "source.key",
                        "is empty; name the manifest (<prefix>/<runId>/manifest.json)",
                    ));
                }
            }
            ReplaySource::Archive {
                bucket,
                prefix,
                stream,
                from,
                to,
            } => {
                if bucket.is_empty() {
                    return Err(invalid("source.bucket", "is empty; name the bucket"));
                }
                check_prefix("source.prefix", prefix)?;
                if !crate::scrape::valid_name(stream, 128) {
                    return Err(invalid(
                        "source.stream",
                        format!("{stream:?} is not a stream name ([a-zA-Z0-9_.-]{{1,128}})"),
                    ));
                }
                if from >= to {
                    return Err(invalid(
                        "source.to",
                        format!("{to} is not after source.from ({from})"),
                    ));
                }
            }
        }
        let ReplayTarget::Function {
            function_name,
            qualifier,
            invoke_identity_arn,
        } = &self.target;
        if function_name.is_empty() || function_name.len() > 170 {
            return Err(invalid(
                "target.functionName",
                format!(
                    "{function_name:?}; accepted values: a function name or ARN (1 to 170 characters)"
                ),
            ));
        }
        if qualifier.as_ref().is_some_and(|q| !valid_qualifier(q)) {
            return Err(invalid(
                "target.qualifier",
                format!(
                    "{:?}; accepted values: $LATEST, a version number or an alias",
                    qualifier.as_deref().unwrap_or_default()
                ),
            ));
        }
        if invoke_identity_arn
            .as_ref()
            .is_some_and(|arn| !arn.starts_with("arn:"))
        {
            return Err(invalid(
                "target.invokeIdentityArn",
                "is not an ARN (arn:aws:iam::<account>:role/<name>)",
            ));
        }
        self.options.validate().map_err(|error| RequestError {
            field: format!("options.{}", error.field),
            message: error.message,
        })?;
        let DlqLocation::S3 { bucket, prefix } = &self.dlq;
        if bucket.is_empty() {
            return Err(invalid("dlq.bucket", "is empty; name the DLQ bucket"));
        }
        check_prefix("dlq.prefix", prefix)?;
        if let Some(n) = self.max_concurrency
            && !(1..=crate::scrape::MAX_CONCURRENCY).contains(&n)
        {
            return Err(invalid(
                "maxConcurrency",
                format!(
                    "{n} is out of range; accepted values: 1 to {}",
                    crate::scrape::MAX_CONCURRENCY
                ),
            ));
        }
        if let Some(run_id) = &self.run_id
            && !crate::scrape::valid_name(run_id, 80)
        {
            return Err(invalid(
                "runId",
                format!("{run_id:?}; accepted values: 1 to 80 of a-z A-Z 0-9 _ . -"),
            ));
        }
        Ok(())
    }

    fn dlq(&self) -> (&str, &str) {
        let DlqLocation::S3 { bucket, prefix } = &self.dlq;
        (bucket, prefix.trim_end_matches('/'))
    }

    /// The folder of the run's per-shard progress, in the DLQ bucket.
    pub fn progress_folder(&self, run_id: &str) -> String {
        join(self.dlq().1, &format!("replays/{run_id}"))
    }

    /// The folder of a shard's failed batches, in the DLQ bucket.
    pub fn dlq_folder(&self, run_id: &str, shard_id: &str) -> String {
        join(self.dlq().1, &format!("aws/lambda/{run_id}/{shard_id}/"))
    }
}

fn join(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() {
        rest.to_owned()
    } else {
        format!("{prefix}/{rest}")
    }
}

fn valid_qualifier(q: &str) -> bool {
    q == "$LATEST"
        || (!q.is_empty()
            && q.len() <= 128
            && q.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')))
}

/// A record's place in its shard: (sequence, sub-sequence).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Position {
    pub sequence_number: SequenceNumber,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_sequence_number: Option<u64>,
}

impl Position {
    fn of(record: &Record) -> Self {
        Self {
            sequence_number: record.sequence_number.clone(),
            sub_sequence_number: record.sub_sequence_number,
        }
    }
}

/// One shard's replay between steps: what the state machine carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardReplay {
    pub shard_id: String,
    /// The last record handed to delivery and settled; the next step
    /// resumes after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Position>,
    /// Records read from the source (in the window).
    pub records: u64,
    pub delivered: u64,
    pub filtered: u64,
    pub failed_records: u64,
    pub failed_batches: u64,
    pub invocations: u64,
    pub function_errors: u64,
    /// Objects written to the DLQ.
    pub dlq_locations: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_sequence_number: Option<SequenceNumber>,
    #[serde(default)]
    pub done: bool,
}

impl ShardReplay {
    pub fn new(shard_id: impl Into<String>) -> Self {
        Self {
            shard_id: shard_id.into(),
            ..Self::default()
        }
    }

    fn settle(&mut self, piece: &[Record], report: &DeliveryReport) {
        let (Some(first), Some(last)) = (piece.first(), piece.last()) else {
            return;
        };
        if self.first_sequence_number.is_none() {
            self.first_sequence_number = Some(first.sequence_number.clone());
        }
        self.last = Some(Position::of(last));
        self.records += piece.len() as u64;
        self.delivered += report.delivered;
        self.filtered += report.filtered;
        self.failed_records += report.failed_records;
        self.failed_batches += report.failed_batches;
        self.invocations += report.invocations;
        self.function_errors += report.function_errors;
        self.dlq_locations += report.failure_locations.len() as u64;
    }
}

/// What the replay function is asked to do. The replay state machine sends
/// `plan`, then `step` per shard until done, then `summary`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase", deny_unknown_fields)]
pub enum ReplayEvent {
    Plan {
        request: ReplayRequest,
    },
    #[serde(rename_all = "camelCase")]
    Step {
        request: ReplayRequest,
        run_id: String,
        progress: ShardReplay,
    },
    #[serde(rename_all = "camelCase")]
    Summary {
        request: ReplayRequest,
        run_id: String,
        shards: Vec<String>,
    },
}

impl ReplayEvent {
    /// Parses an invocation payload; the request is validated before any
    /// work.
    pub fn parse(json: &[u8]) -> Result<Self, RequestError> {
        let event: Self = parse_json(json)?;
        let (ReplayEvent::Plan { request }
        | ReplayEvent::Step { request, .. }
        | ReplayEvent::Summary { request, .. }) = &event;
        request.validate()?;
        Ok(event)
    }
}

/// The plan: the run's identity and its shards, parents before children.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayPlan {
    pub run_id: String,
    pub stream_arn: String,
    pub shards: Vec<String>,
    pub progress: Vec<ShardReplay>,
}

/// One shard in the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardSummary {
    #[serde(flatten)]
    pub progress: ShardReplay,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sequence_number: Option<SequenceNumber>,
    /// `s3://<bucket>/<key>` of each failed batch (the first
    /// [`MAX_LISTED_LOCATIONS`]; `dlqLocations` counts them all).
    pub dlq_keys: Vec<String>,
}

/// DLQ objects a summary names per shard at most (Step Functions payloads
/// stay small); the DLQ folder holds them all.
pub const MAX_LISTED_LOCATIONS: usize = 100;

/// The totals over every shard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayTotals {
    pub records: u64,
    pub delivered: u64,
    pub filtered: u64,
    pub failed_records: u64,
    pub failed_batches: u64,
    pub invocations: u64,
    pub dlq_locations: u64,
}

/// The replay's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplaySummary {
    pub run_id: String,
    pub dry_run: bool,
    /// `s3://<bucket>/<prefix>` holding the run's failed batches.
    pub dlq: String,
    pub shards: Vec<ShardSummary>,
    pub totals: ReplayTotals,
}

/// Why a replay invocation failed, with a stable type name that the state
/// machine matches.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("invalid replay request: {}: {}", .0.field, .0.message)]
    InvalidRequest(#[from] RequestError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading the source failed: {0}")]
    Source(String),
    #[error("{key}: not a scrape manifest: {source}")]
    Manifest {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    StreamArn(#[from] StreamArnError),
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error("shard {shard_id} has no final progress at {key}: its replay did not finish")]
    Unfinished { shard_id: String, key: String },
}

impl ReplayError {
    /// `InvalidRequest` fails the execution at once; the others are retried.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) | Self::Manifest { .. } | Self::StreamArn(_) => {
                "InvalidRequest"
            }
            Self::Delivery(DeliveryError::Options { .. }) => "InvalidRequest",
            Self::Delivery(DeliveryError::Invoke(_)) => "InvokeFailed",
            Self::Delivery(DeliveryError::Destination { .. }) => "DlqWriteFailed",
            Self::Store(_) | Self::Source(_) => "SourceReadFailed",
            Self::Unfinished { .. } => "ShardUnfinished",
        }
    }
}

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

/// How much of a step's time is left unused before its Lambda deadline: a
/// piece's invocations (and their retries) must fit in it.
pub const STEP_MARGIN: std::time::Duration = std::time::Duration::from_secs(60);

/// The replay function's clients and settings, built once per container.
#[derive(Debug, Clone)]
pub struct Replayer<B = aws_sdk_s3::Client, T = aws_sdk_lambda::Client> {
    pub buckets: B,
    pub targets: T,
    /// The partition, region and account the replay runs in: the
    /// `eventSourceARN` of records replayed from the archive is
    /// `arn:<partition>:kinesis:<region>:<account>:stream/<stream>`.
    pub partition: String,
    pub region: String,
    pub account_id: String,
    /// `invokeIdentityArn` when the request names none.
    pub invoke_identity_arn: String,
    /// First backoff after a throttled invoke.
    pub base_backoff: std::time::Duration,
}

impl<B: Buckets, T: Targets> Replayer<B, T> {
    async fn manifest(&self, bucket: &str, key: &str) -> Result<Manifest, ReplayError> {
        let bytes = self.buckets.bucket(bucket).get(key).await?;
        serde_json::from_slice(&bytes).map_err(|source| ReplayError::Manifest {
            key: format!("s3://{bucket}/{key}"),
            source,
        })
    }

    fn archive_stream_arn(&self, stream: &str) -> String {
        format!(
            "arn:{}:kinesis:{}:{}:stream/{stream}",
            self.partition, self.region, self.account_id
        )
    }

    async fn stream_arn(&self, request: &ReplayRequest) -> Result<String, ReplayError> {
        match &request.source {
            ReplaySource::Manifest { bucket, key } => {
                Ok(self.manifest(bucket, key).await?.stream_arn)
            }
            ReplaySource::Archive { stream, .. } => Ok(self.archive_stream_arn(stream)),
        }
    }

    /// The shards to replay, parents before children.
    pub async fn plan(
        &self,
        request: &ReplayRequest,
        run_id: &str,
    ) -> Result<ReplayPlan, ReplayError> {
        let (stream_arn, shards): (String, Vec<String>) = match &request.source {
            ReplaySource::Manifest { bucket, key } => {
                let manifest = self.manifest(bucket, key).await?;
                let shards = manifest.shards.iter().map(|s| s.shard_id.clone()).collect();
                (manifest.stream_arn, shards)
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
                // A BTreeMap: shard-id order, which is lineage order.
                let shards = plan_scan(&store, &layout, stream, *from, *to)
                    .await?
                    .into_keys()
                    .collect();
                (self.archive_stream_arn(stream), shards)
            }
        };
        EventSource::new(stream_arn.clone(), "")?;
        let progress = shards.iter().map(ShardReplay::new).collect();
        Ok(ReplayPlan {
            run_id: run_id.to_owned(),
            stream_arn,
            shards,
            progress,
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
        let remaining = deadline.saturating_duration_since(Instant::now());
        let stop_at = deadline
            .checked_sub(STEP_MARGIN.min(remaining / 3))
            .unwrap_or(deadline);
        let ReplayTarget::Function {
            function_name,
            qualifier,
            invoke_identity_arn,
        } = &request.target;
        let stream_arn = self.stream_arn(request).await?;
        let source = EventSource::new(
            stream_arn,
            invoke_identity_arn
                .clone()
                .unwrap_or_else(|| self.invoke_identity_arn.clone()),
        )?;
        let invoker = self.targets.invoker(function_name, qualifier.as_deref());
        let (dlq_bucket, dlq_prefix) = request.dlq();
        let dlq_store = self.buckets.bucket(dlq_bucket);
        let destination = S3FailureDestination {
            store: self.buckets.bucket(dlq_bucket),
            mapping_id: run_id.to_owned(),
            prefix: dlq_prefix.to_owned(),
        };
        let mut sink = Sink {
            delivery: Delivery {
                invoker: &invoker,
                destination: &destination,
                source: &source,
                options: &request.options,
                now,
                base_backoff: self.base_backoff,
            },
            dry_run: request.dry_run,
            filters: request.options.filters()?,
            piece: (request.options.batch_size * request.options.parallelization_factor).max(1),
            stop_at,
        };
        let finished = match &request.source {
            ReplaySource::Manifest { bucket, key } => {
                let manifest = self.manifest(bucket, key).await?;
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
                    let last = (last.sequence_number.clone(), last.sub_sequence_number);
                    objects.retain(|o| o.last > last);
                }
                let mut scan = ShardScan::new(objects, *from, *to);
                let mut finished = true;
                while let Some(records) = scan
                    .next_batch(&store)
                    .await
                    .map_err(|e| ReplayError::Source(e.to_string()))?
                {
                    if !sink.take(records, &mut progress).await? {
                        finished = false;
                        break;
                    }
                }
                finished
            }
        };
        if finished {
            progress.done = true;
            let key = format!(
                "{}/{}/_progress.json",
                request.progress_folder(run_id),
                progress.shard_id
            );
            dlq_store
                .put(PutObject {
                    key,
                    body: serde_json::to_vec(&progress).expect("progress always serialises"),
                    content_type: "application/json",
                    content_encoding: None,
                })
                .await?;
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
        let (dlq_bucket, _) = request.dlq();
        let store = self.buckets.bucket(dlq_bucket);
        let mut out = Vec::new();
        let mut totals = ReplayTotals::default();
        for shard_id in shards {
            let key = format!(
                "{}/{shard_id}/_progress.json",
                request.progress_folder(run_id)
            );
            let progress: ShardReplay = match store.get(&key).await {
                Ok(bytes) => {
                    serde_json::from_slice(&bytes).map_err(|_| ReplayError::Unfinished {
                        shard_id: shard_id.clone(),
                        key: key.clone(),
                    })?
                }
                Err(_) => {
                    return Err(ReplayError::Unfinished {
                        shard_id: shard_id.clone(),
                        key,
                    });
                }
            };
            let dlq_keys = if progress.dlq_locations > 0 {
                let mut keys = store.list(&request.dlq_folder(run_id, shard_id)).await?;
                keys.truncate(MAX_LISTED_LOCATIONS);
                keys.into_iter()
                    .map(|k| format!("s3://{dlq_bucket}/{k}"))
                    .collect()
            } else {
                Vec::new()
            };
            totals.records += progress.records;
            totals.delivered += progress.delivered;
            totals.filtered += progress.filtered;
            totals.failed_records += progress.failed_records;
            totals.failed_batches += progress.failed_batches;
            totals.invocations += progress.invocations;
            totals.dlq_locations += progress.dlq_locations;
            out.push(ShardSummary {
                last_sequence_number: progress.last.as_ref().map(|p| p.sequence_number.clone()),
                progress,
                dlq_keys,
            });
        }
        Ok(ReplaySummary {
            run_id: run_id.to_owned(),
            dry_run: request.dry_run,
            dlq: format!(
                "s3://{dlq_bucket}/{}",
                request.dlq_folder(run_id, "").trim_end_matches('/')
            ),
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

/// Hands records to delivery (or counts them, in a dry run) one piece at a
/// time, until the deadline.
struct Sink<'a, I, D> {
    delivery: Delivery<'a, I, D>,
    dry_run: bool,
    filters: crate::filter::Filters,
    piece: usize,
    stop_at: Instant,
}

impl<I: Invoker, D: FailureDestination> Sink<'_, I, D> {
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
            let rest = records.split_off(self.piece.min(records.len()));
            let piece = std::mem::replace(&mut records, rest);
            let report = if self.dry_run {
                let matched = piece.iter().filter(|r| self.filters.matches(r)).count() as u64;
                DeliveryReport {
                    filtered: piece.len() as u64 - matched,
                    ..DeliveryReport::default()
                }
            } else {
                self.delivery.deliver(piece.clone()).await?
            };
            progress.settle(&piece, &report);
        }
        Ok(true)
    }
}

/// A manifest shard's records after `progress.last`, one chunk at a time.
async fn replay_manifest_shard<R: ObjectReader, I: Invoker, D: FailureDestination>(
    store: &R,
    shard: &ManifestShard,
    progress: &mut ShardReplay,
    sink: &mut Sink<'_, I, D>,
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
            .map_err(|e| ReplayError::Source(e.to_string()))?;
        if !sink.take(records, progress).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests;
