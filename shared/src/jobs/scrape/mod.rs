//! Scraping a window of a stream into S3, one bounded step at a time: the
//! request the scraper function and the scrape state machine take, the plan
//! (which shards, parents before children), the step (read a shard until the
//! step's time or chunk budget, write one chunk), and the manifest.
//!
//! Output layout:
//!
//! ```text
//! <prefix>/<runId>/<shardId>/<n>-<first>-<last>.jsonl.gz   one per step that read records
//! <prefix>/<runId>/<shardId>/_progress.json               the shard's final state
//! <prefix>/<runId>/manifest.json
//! ```
//!
//! A step owns chunk `n` of its shard. It removes whatever an earlier,
//! interrupted attempt of the same step left under `<n>-` before writing, so
//! a retried step never leaves two overlapping chunks: no record is lost
//! (the cursor only moves once the chunk is stored) and none is duplicated.

use std::collections::BTreeSet;

use aws_sdk_kinesis::error::DisplayErrorContext;
use aws_sdk_kinesis::types::{ShardFilter, ShardFilterType};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::model::chunk::{ChunkError, ChunkWriter, Compression};
use crate::model::manifest::{Manifest, ManifestChunk, ManifestShard};
use crate::model::record::{ArrivalTime, stream_name_from_arn};
use crate::model::seqno::SequenceNumber;
use crate::pipeline::lineage::{PlannedShard, parents_first};
use crate::request::{RequestError, parse_json, valid_name};
use crate::sources::kinesis::{
    ReadError, ReadOptions, ShardCursor, ShardSource, ShardWindow, StartPosition, StepBudget,
    StopCondition,
};
use crate::store::{ObjectReader, ObjectStore, PutObject, StoreError};

/// Which shards a request reads: `"ALL"` (every shard whose range can hold
/// the window) or a list of shard ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ShardSelection {
    #[default]
    All,
    List(Vec<String>),
}

impl Serialize for ShardSelection {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::All => serializer.serialize_str("ALL"),
            Self::List(list) => list.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for ShardSelection {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        const EXPECTED: &str = "accepted values: \"ALL\" or a list of shard ids";
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ShardSelection;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(EXPECTED)
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
                if value == "ALL" {
                    Ok(ShardSelection::All)
                } else {
                    Err(E::custom(format!(
                        "{value:?} is not a shard selection; {EXPECTED}"
                    )))
                }
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut list = Vec::new();
                while let Some(id) = seq.next_element::<String>()? {
                    list.push(id);
                }
                Ok(ShardSelection::List(list))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Where the output goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutputLocation {
    pub bucket: String,
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

fn default_prefix() -> String {
    "scrapes".to_owned()
}

/// The longest poll delay a request may ask for. A step's first call waits
/// it whatever the step's time (so every step progresses): it must fit well
/// inside the margin a step keeps before its Lambda deadline.
pub const MAX_POLL_DELAY_MS: u64 = 10_000;

/// A scrape request: the scraper function's event and the scrape state
/// machine's input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScrapeRequest {
    /// Stream name or ARN.
    pub stream: String,
    #[serde(default)]
    pub shards: ShardSelection,
    pub start: StartPosition,
    pub stop: StopCondition,
    /// GetRecords `Limit`, 1 to 10,000.
    #[serde(default = "default_poll_batch_size")]
    pub poll_batch_size: i32,
    /// Extra wait between GetRecords calls, in milliseconds, 0 to
    /// [`MAX_POLL_DELAY_MS`].
    #[serde(default)]
    pub poll_delay_ms: u64,
    /// Consecutive empty responses at the tip before a shard's read ends.
    #[serde(default = "default_max_empty_polls")]
    pub max_empty_polls: u32,
    /// Share of each shard's read limits (0 < share <= 1).
    #[serde(default = "default_read_share")]
    pub read_share: f64,
    pub output: OutputLocation,
    #[serde(default)]
    pub compression: Compression,
    /// Names the run's folder; the state machine passes its execution name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Shards scraped at the same time by the scrape state machine (its Map's
    /// `MaxConcurrency`, 10 when absent); the scraper itself ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
}

/// The most shards the scrape state machine reads at once (an inline Map
/// runs at most 40 iterations concurrently).
pub const MAX_CONCURRENCY: u32 = 40;

fn default_poll_batch_size() -> i32 {
    crate::sources::kinesis::MAX_LIMIT
}

fn default_max_empty_polls() -> u32 {
    3
}

fn default_read_share() -> f64 {
    1.0
}

impl ScrapeRequest {
    /// Parses and validates a request, before any work.
    pub fn parse(json: &[u8]) -> Result<Self, RequestError> {
        let request: Self = parse_json(json)?;
        request.validate()?;
        Ok(request)
    }

    /// Checks what the types can't.
    pub fn validate(&self) -> Result<(), RequestError> {
        let stream_ok = if self.stream.starts_with("arn:") {
            stream_name_from_arn(&self.stream).is_some()
        } else {
            valid_name(&self.stream, 128)
        };
        if !stream_ok {
            return Err(RequestError::new(
                "stream",
                format!(
                    "{:?} is neither a stream name ([a-zA-Z0-9_.-]{{1,128}}) nor a stream ARN (arn:aws:kinesis:<region>:<account>:stream/<name>)",
                    self.stream
                ),
            ));
        }
        if let ShardSelection::List(shards) = &self.shards {
            if shards.is_empty() {
                return Err(RequestError::new(
                    "shards",
                    "an empty list; accepted values: \"ALL\" or a list of shard ids",
                ));
            }
            if let Some(bad) = shards.iter().find(|s| !valid_name(s, 128)) {
                return Err(RequestError::new(
                    "shards",
                    format!("{bad:?} is not a shard id (for example shardId-000000000000)"),
                ));
            }
        }
        if matches!(
            self.start,
            StartPosition::AtSequenceNumber { .. } | StartPosition::AfterSequenceNumber { .. }
        ) && !matches!(&self.shards, ShardSelection::List(list) if list.len() == 1)
        {
            return Err(RequestError::new(
                "shards",
                "a sequence number belongs to one shard: with start AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER, name exactly one shard",
            ));
        }
        if !(1..=crate::sources::kinesis::MAX_LIMIT).contains(&self.poll_batch_size) {
            return Err(RequestError::new(
                "pollBatchSize",
                format!(
                    "{} is out of range; accepted values: 1 to 10000",
                    self.poll_batch_size
                ),
            ));
        }
        if self.poll_delay_ms > MAX_POLL_DELAY_MS {
            return Err(RequestError::new(
                "pollDelayMs",
                format!(
                    "{} is out of range; accepted values: 0 to {MAX_POLL_DELAY_MS}",
                    self.poll_delay_ms
                ),
            ));
        }
        if self.max_empty_polls == 0 {
            return Err(RequestError::new(
                "maxEmptyPolls",
                "0 is out of range; accepted values: 1 or more",
            ));
        }
        if !(self.read_share > 0.0 && self.read_share <= 1.0) {
            return Err(RequestError::new(
                "readShare",
                format!(
                    "{} is out of range; accepted values: more than 0, at most 1",
                    self.read_share
                ),
            ));
        }
        if self.output.bucket.is_empty() {
            return Err(RequestError::new(
                "output.bucket",
                "is empty; name the output bucket",
            ));
        }
        if self.output.prefix.starts_with('/') || self.output.prefix.contains("//") {
            return Err(RequestError::new(
                "output.prefix",
                format!(
                    "{:?} must not start with / or contain //",
                    self.output.prefix
                ),
            ));
        }
        if let Some(n) = self.max_concurrency
            && !(1..=MAX_CONCURRENCY).contains(&n)
        {
            return Err(RequestError::new(
                "maxConcurrency",
                format!("{n} is out of range; accepted values: 1 to {MAX_CONCURRENCY}"),
            ));
        }
        if let Some(run_id) = &self.run_id
            && !valid_name(run_id, 80)
        {
            return Err(RequestError::new(
                "runId",
                format!("{run_id:?}; accepted values: 1 to 80 of a-z A-Z 0-9 _ . -"),
            ));
        }
        Ok(())
    }

    /// The read settings for every shard of the request.
    pub fn window(&self, stream: &str) -> ShardWindow {
        ShardWindow {
            stream: stream.to_owned(),
            start: self.start.clone(),
            stop: self.stop.clone(),
            options: ReadOptions {
                limit: self.poll_batch_size,
                poll_delay: std::time::Duration::from_millis(self.poll_delay_ms),
                max_empty_polls: self.max_empty_polls,
                share: self.read_share,
                ..ReadOptions::default()
            },
        }
    }

    /// `<prefix>/<runId>` (no trailing slash).
    pub fn run_folder(&self, run_id: &str) -> String {
        let prefix = self.output.prefix.trim_end_matches('/');
        if prefix.is_empty() {
            run_id.to_owned()
        } else {
            format!("{prefix}/{run_id}")
        }
    }
}

/// Listing a stream's shards failed.
#[derive(Debug, thiserror::Error)]
#[error("listing the shards of {stream} failed: {message}")]
pub struct ListShardsError {
    pub stream: String,
    pub message: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// The stream's ARN (a name is resolved with `DescribeStreamSummary`).
pub async fn resolve_stream_arn(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<String, ListShardsError> {
    if stream.starts_with("arn:") {
        return Ok(stream.to_owned());
    }
    let output = client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .map_err(|error| ListShardsError {
            stream: stream.to_owned(),
            message: DisplayErrorContext(&error).to_string(),
            source: Box::new(error),
        })?;
    Ok(output
        .stream_description_summary()
        .map(|d| d.stream_arn().to_owned())
        .unwrap_or_default())
}

/// All shards whose range can hold a window starting at `start`, paged,
/// parents before children. Closed shards are included: a window in the
/// past lives in them.
pub async fn list_shards(
    client: &aws_sdk_kinesis::Client,
    stream_arn: &str,
    start: &StartPosition,
) -> Result<Vec<PlannedShard>, ListShardsError> {
    let filter = match start {
        StartPosition::Latest => ShardFilter::builder()
            .r#type(ShardFilterType::AtLatest)
            .build(),
        StartPosition::AtTimestamp { timestamp } => ShardFilter::builder()
            .r#type(ShardFilterType::FromTimestamp)
            .timestamp(aws_sdk_kinesis::primitives::DateTime::from_millis(
                timestamp.epoch_millis(),
            ))
            .build(),
        _ => ShardFilter::builder()
            .r#type(ShardFilterType::FromTrimHorizon)
            .build(),
    }
    .map_err(|error| ListShardsError {
        stream: stream_arn.to_owned(),
        message: error.to_string(),
        source: Box::new(error),
    })?;
    let mut shards = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        // ListShards takes either the stream or a NextToken, never both.
        let request = match next_token.take() {
            Some(token) => client.list_shards().next_token(token),
            None => client
                .list_shards()
                .stream_arn(stream_arn)
                .shard_filter(filter.clone()),
        };
        let page = request.send().await.map_err(|error| ListShardsError {
            stream: stream_arn.to_owned(),
            message: DisplayErrorContext(&error).to_string(),
            source: Box::new(error),
        })?;
        shards.extend(page.shards().iter().map(|s| {
            PlannedShard {
                shard_id: s.shard_id().to_owned(),
                parent_shard_ids: s
                    .parent_shard_id()
                    .into_iter()
                    .chain(s.adjacent_parent_shard_id())
                    .map(str::to_owned)
                    .collect(),
            }
        }));
        match page.next_token() {
            Some(token) => next_token = Some(token.to_owned()),
            None => return Ok(parents_first(shards)),
        }
    }
}

/// One shard's scrape state between steps: what the state machine carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardProgress {
    pub cursor: ShardCursor,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_shard_ids: Vec<String>,
    /// Chunks written so far; the next is chunk `chunks`.
    pub chunks: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_sequence_number: Option<SequenceNumber>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sequence_number: Option<SequenceNumber>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_arrival: Option<ArrivalTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_arrival: Option<ArrivalTime>,
}

impl ShardProgress {
    pub fn new(shard: &PlannedShard) -> Self {
        Self {
            cursor: ShardCursor::new(shard.shard_id.clone()),
            parent_shard_ids: shard.parent_shard_ids.clone(),
            ..Self::default()
        }
    }

    pub fn is_done(&self) -> bool {
        self.cursor.is_done()
    }
}

/// Why a scrape step failed; the state machine retries it from the same
/// progress.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Chunk(#[from] ChunkError),
}

/// The folder of one shard's output.
pub fn shard_folder(run_folder: &str, shard_id: &str) -> String {
    format!("{run_folder}/{shard_id}")
}

/// Runs one step of one shard: reads until the shard's window is done, the
/// deadline, or `max_records`, and stores what it read as chunk `n`.
pub async fn scrape_step<S: ShardSource, O: ObjectStore + ObjectReader>(
    source: &S,
    store: &O,
    window: &ShardWindow,
    run_folder: &str,
    compression: Compression,
    progress: &ShardProgress,
    budget: StepBudget,
) -> Result<ShardProgress, ScrapeError> {
    let mut progress = progress.clone();
    if progress.is_done() {
        return Ok(progress);
    }
    let folder = shard_folder(run_folder, &progress.cursor.shard_id);
    let n = progress.chunks;
    // Leftovers of an interrupted attempt at this very step.
    for key in store.list(&format!("{folder}/{n}-")).await? {
        store.delete(&key).await?;
    }
    let mut writer = ChunkWriter::new(format!("{folder}/{n}"), Vec::new(), compression)?;
    let mut write_error = None;
    let cursor =
        crate::sources::kinesis::read_step(source, window, &progress.cursor, budget, |record| {
            if write_error.is_none()
                && let Err(error) = writer.write(&record)
            {
                write_error = Some(error);
            }
        })
        .await?;
    if let Some(error) = write_error {
        return Err(error.into());
    }
    let (body, summary) = writer.finish()?;
    if let (Some(first), Some(last)) = (&summary.first, &summary.last) {
        let key = format!(
            "{folder}/{n}-{}-{}.{}",
            first.sequence_number,
            last.sequence_number,
            compression.extension()
        );
        store
            .put(PutObject {
                key,
                body,
                content_type: compression.content_type(),
                content_encoding: compression.content_encoding(),
            })
            .await?;
        progress.chunks += 1;
        if progress.first_sequence_number.is_none() {
            progress.first_sequence_number = Some(first.sequence_number.clone());
            progress.first_arrival = summary.first_arrival;
        }
        progress.last_sequence_number = Some(last.sequence_number.clone());
        progress.last_arrival = summary.last_arrival;
    }
    progress.cursor = cursor;
    if progress.is_done() {
        let body = serde_json::to_vec(&progress).expect("progress always serialises");
        store
            .put(PutObject {
                key: format!("{folder}/_progress.json"),
                body,
                content_type: "application/json",
                content_encoding: None,
            })
            .await?;
    }
    Ok(progress)
}

/// Why a manifest could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("shard {shard_id} has no final progress at {key}: its scrape did not finish")]
    Unfinished { shard_id: String, key: String },
    #[error("{key}: not a shard progress document: {source}")]
    Progress {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Builds and stores `manifest.json` from the shards' chunks and final
/// progress; returns it and its key.
pub async fn write_manifest<O: ObjectStore + ObjectReader>(
    store: &O,
    request: &ScrapeRequest,
    stream_arn: &str,
    run_id: &str,
    shards: &[PlannedShard],
) -> Result<(Manifest, String), ManifestError> {
    let run_folder = request.run_folder(run_id);
    let mut manifest_shards = Vec::new();
    for shard in parents_first(shards.to_vec()) {
        let folder = shard_folder(&run_folder, &shard.shard_id);
        let progress_key = format!("{folder}/_progress.json");
        let progress: ShardProgress = match store.get(&progress_key).await {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| ManifestError::Progress {
                    key: progress_key.clone(),
                    source,
                })?
            }
            Err(_) => {
                return Err(ManifestError::Unfinished {
                    shard_id: shard.shard_id.clone(),
                    key: progress_key,
                });
            }
        };
        let mut chunks: Vec<(u64, ManifestChunk)> = store
            .list(&format!("{folder}/"))
            .await?
            .into_iter()
            .filter_map(|key| {
                let name = key.rsplit('/').next()?;
                let stem = &name[..name.find(".jsonl")?];
                let mut parts = stem.splitn(3, '-');
                let n: u64 = parts.next()?.parse().ok()?;
                let first = SequenceNumber::parse(parts.next()?).ok()?;
                let last = SequenceNumber::parse(parts.next()?).ok()?;
                Some((
                    n,
                    ManifestChunk {
                        key,
                        first_sequence_number: first,
                        last_sequence_number: last,
                    },
                ))
            })
            .collect();
        chunks.sort_by_key(|(n, _)| *n);
        manifest_shards.push(ManifestShard {
            shard_id: shard.shard_id.clone(),
            parent_shard_ids: shard.parent_shard_ids.clone(),
            records: progress.cursor.records,
            chunks: chunks.into_iter().map(|(_, c)| c).collect(),
            first_sequence_number: progress.first_sequence_number,
            last_sequence_number: progress.last_sequence_number,
            first_arrival: progress.first_arrival,
            last_arrival: progress.last_arrival,
            stop_reason: progress.cursor.stopped,
            child_shard_ids: progress
                .cursor
                .children
                .iter()
                .map(|c| c.shard_id.clone())
                .collect(),
        });
    }
    let manifest = Manifest {
        stream: stream_name_from_arn(stream_arn)
            .unwrap_or(&request.stream)
            .to_owned(),
        stream_arn: stream_arn.to_owned(),
        run_id: run_id.to_owned(),
        bucket: request.output.bucket.clone(),
        prefix: request.output.prefix.clone(),
        compression: request.compression,
        start: request.start.clone(),
        stop: request.stop.clone(),
        records: manifest_shards.iter().map(|s| s.records).sum(),
        shards: manifest_shards,
    };
    let key = format!("{run_folder}/manifest.json");
    store
        .put(PutObject {
            key: key.clone(),
            body: serde_json::to_vec_pretty(&manifest).expect("a manifest always serialises"),
            content_type: "application/json",
            content_encoding: None,
        })
        .await?;
    Ok((manifest, key))
}

/// How much time a step leaves unused before its Lambda deadline: enough to
/// finish the chunk upload and return.
pub const STEP_MARGIN: std::time::Duration = std::time::Duration::from_secs(20);

/// The budget of a step that must be done by `deadline`.
pub fn step_budget(deadline: Instant, max_records: u64) -> StepBudget {
    // A short deadline (a function configured with a timeout under a minute,
    // or a local emulator's) keeps a third of what is left as margin rather
    // than none, so every step still reads.
    let remaining = deadline.saturating_duration_since(Instant::now());
    let margin = STEP_MARGIN.min(remaining / 3);
    StepBudget {
        deadline: deadline.checked_sub(margin).unwrap_or(deadline),
        max_records,
    }
}

#[cfg(test)]
mod tests;

/// What the scraper function is asked to do. The scrape state machine sends
/// `plan`, then `step` per shard until done, then `manifest`; a person
/// invoking the function directly sends a bare [`ScrapeRequest`] (read as
/// `run`) and, while the answer says `IN_PROGRESS`, sends its `next` back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase", deny_unknown_fields)]
pub enum ScraperEvent {
    Plan {
        request: ScrapeRequest,
    },
    #[serde(rename_all = "camelCase")]
    Step {
        request: ScrapeRequest,
        stream_arn: String,
        run_id: String,
        progress: ShardProgress,
    },
    #[serde(rename_all = "camelCase")]
    Manifest {
        request: ScrapeRequest,
        stream_arn: String,
        run_id: String,
        shards: Vec<PlannedShard>,
    },
    #[serde(rename_all = "camelCase")]
    Run {
        request: ScrapeRequest,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream_arn: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shards: Option<Vec<ShardProgress>>,
    },
}

impl ScraperEvent {
    /// Parses an invocation payload: an action, or a bare scrape request.
    /// Every request is validated before any work.
    pub fn parse(json: &[u8]) -> Result<Self, RequestError> {
        let value: serde_json::Value = parse_json(json)?;
        let event = if value.get("action").is_some() {
            parse_json::<ScraperEvent>(json)?
        } else {
            ScraperEvent::Run {
                request: parse_json(json)?,
                stream_arn: None,
                run_id: None,
                shards: None,
            }
        };
        let request = match &event {
            ScraperEvent::Plan { request }
            | ScraperEvent::Step { request, .. }
            | ScraperEvent::Manifest { request, .. }
            | ScraperEvent::Run { request, .. } => request,
        };
        request.validate()?;
        Ok(event)
    }
}

/// The plan: the run's identity and where each shard starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub stream_arn: String,
    pub run_id: String,
    /// Parents before children.
    pub shards: Vec<PlannedShard>,
    pub progress: Vec<ShardProgress>,
}

/// A finished scrape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestLocation {
    pub bucket: String,
    pub key: String,
    pub records: u64,
    pub shards: usize,
    /// Children of scraped shards that were not in the plan (the stream was
    /// resharded after the plan listed its shards): their records are not in
    /// this scrape. Scrape them with another request naming them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unscraped_child_shard_ids: Vec<String>,
}

/// What a `run` invocation answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunOutcome {
    Succeeded {
        manifest: ManifestLocation,
    },
    InProgress {
        /// Send this back to go on.
        next: Box<ScraperEvent>,
        records: u64,
    },
}

/// Why a scraper invocation failed, with a stable type name that the state
/// machine matches.
#[derive(Debug, thiserror::Error)]
pub enum ScraperError {
    #[error(transparent)]
    InvalidRequest(#[from] RequestError),
    #[error(transparent)]
    ListShards(#[from] ListShardsError),
    #[error(transparent)]
    Scrape(#[from] ScrapeError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

impl ScraperError {
    /// `InvalidRequest` fails the execution at once; the others are retried.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "InvalidRequest",
            Self::ListShards(_) => "ListShardsFailed",
            Self::Scrape(ScrapeError::Read(_)) => "ShardReadFailed",
            Self::Scrape(_) => "OutputWriteFailed",
            Self::Manifest(ManifestError::Unfinished { .. }) => "ShardUnfinished",
            Self::Manifest(_) => "OutputWriteFailed",
        }
    }
}

/// Where a scrape's output goes: S3 (the bucket the request names) for the
/// function, or a local folder for the CLI.
pub trait Outputs: Send + Sync {
    type Store: ObjectStore + ObjectReader;
    fn for_request(&self, request: &ScrapeRequest) -> Self::Store;
}

impl Outputs for aws_sdk_s3::Client {
    type Store = crate::store::S3Store;

    fn for_request(&self, request: &ScrapeRequest) -> Self::Store {
        crate::store::S3Store::new(self.clone(), request.output.bucket.clone())
    }
}

impl Outputs for crate::store::DirStore {
    type Store = crate::store::DirStore;

    fn for_request(&self, _request: &ScrapeRequest) -> Self::Store {
        self.clone()
    }
}

/// The scraper's clients and budget, built once per container (or once
/// per CLI run).
#[derive(Debug, Clone)]
pub struct Scraper<O = aws_sdk_s3::Client> {
    pub kinesis: aws_sdk_kinesis::Client,
    pub outputs: O,
    /// Records per chunk (and so per step) at most.
    pub max_records_per_chunk: u64,
}

impl<O: Outputs> Scraper<O> {
    fn store(&self, request: &ScrapeRequest) -> O::Store {
        self.outputs.for_request(request)
    }

    async fn plan(&self, request: &ScrapeRequest, run_id: &str) -> Result<Plan, ScraperError> {
        let stream_arn = resolve_stream_arn(&self.kinesis, &request.stream).await?;
        let mut shards = list_shards(&self.kinesis, &stream_arn, &request.start).await?;
        if let ShardSelection::List(wanted) = &request.shards {
            if let Some(missing) = wanted
                .iter()
                .find(|w| !shards.iter().any(|s| &s.shard_id == *w))
            {
                return Err(RequestError::new(
                    "shards",
                    format!("{missing:?} is not a shard of {stream_arn} that can hold the window"),
                )
                .into());
            }
            shards.retain(|s| wanted.contains(&s.shard_id));
        }
        Ok(Plan {
            progress: shards.iter().map(ShardProgress::new).collect(),
            stream_arn,
            run_id: run_id.to_owned(),
            shards,
        })
    }

    async fn step(
        &self,
        request: &ScrapeRequest,
        stream_arn: &str,
        run_id: &str,
        progress: &ShardProgress,
        budget: StepBudget,
    ) -> Result<ShardProgress, ScraperError> {
        let source = crate::sources::kinesis::KinesisSource::new(self.kinesis.clone(), stream_arn);
        let stream = stream_name_from_arn(stream_arn).unwrap_or(&request.stream);
        let window = request.window(stream);
        Ok(scrape_step(
            &source,
            &self.store(request),
            &window,
            &request.run_folder(run_id),
            request.compression,
            progress,
            budget,
        )
        .await?)
    }

    async fn manifest(
        &self,
        request: &ScrapeRequest,
        stream_arn: &str,
        run_id: &str,
        shards: &[PlannedShard],
    ) -> Result<ManifestLocation, ScraperError> {
        let (manifest, key) =
            write_manifest(&self.store(request), request, stream_arn, run_id, shards).await?;
        let planned: BTreeSet<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
        let unscraped: BTreeSet<String> = manifest
            .shards
            .iter()
            .flat_map(|s| s.child_shard_ids.iter())
            .filter(|id| !planned.contains(id.as_str()))
            .cloned()
            .collect();
        Ok(ManifestLocation {
            bucket: request.output.bucket.clone(),
            key,
            records: manifest.records,
            shards: manifest.shards.len(),
            unscraped_child_shard_ids: unscraped.into_iter().collect(),
        })
    }

    /// Handles one invocation; `deadline` is the Lambda's, `invocation_id`
    /// names a run that the event doesn't name.
    pub async fn handle(
        &self,
        event: ScraperEvent,
        deadline: Instant,
        invocation_id: &str,
    ) -> Result<serde_json::Value, ScraperError> {
        match event {
            ScraperEvent::Plan { request } => {
                let run_id = request
                    .run_id
                    .clone()
                    .unwrap_or_else(|| invocation_id.to_owned());
                Ok(to_json(&self.plan(&request, &run_id).await?))
            }
            ScraperEvent::Step {
                request,
                stream_arn,
                run_id,
                progress,
            } => {
                let budget = step_budget(deadline, self.max_records_per_chunk);
                let progress = self
                    .step(&request, &stream_arn, &run_id, &progress, budget)
                    .await?;
                Ok(serde_json::json!({ "done": progress.is_done(), "progress": progress }))
            }
            ScraperEvent::Manifest {
                request,
                stream_arn,
                run_id,
                shards,
            } => Ok(to_json(
                &self
                    .manifest(&request, &stream_arn, &run_id, &shards)
                    .await?,
            )),
            ScraperEvent::Run {
                request,
                stream_arn,
                run_id,
                shards,
            } => {
                let run_id = run_id
                    .or_else(|| request.run_id.clone())
                    .unwrap_or_else(|| invocation_id.to_owned());
                let (stream_arn, mut progress) = match (stream_arn, shards) {
                    (Some(arn), Some(shards)) => (arn, shards),
                    _ => {
                        let plan = self.plan(&request, &run_id).await?;
                        (plan.stream_arn, plan.progress)
                    }
                };
                // Shards one after the other, parents first, each to its end
                // or the deadline. The margin is the invocation's, taken
                // once: a deadline under STEP_MARGIN away (a short timeout,
                // SCRAPER_MAX_STEP_SECONDS) still leaves time to read.
                let budget = step_budget(deadline, self.max_records_per_chunk);
                for shard in progress.iter_mut() {
                    while !shard.is_done() && Instant::now() < budget.deadline {
                        *shard = self
                            .step(&request, &stream_arn, &run_id, shard, budget)
                            .await?;
                    }
                }
                if progress.iter().all(ShardProgress::is_done) {
                    let planned: Vec<PlannedShard> = progress
                        .iter()
                        .map(|p| PlannedShard {
                            shard_id: p.cursor.shard_id.clone(),
                            parent_shard_ids: p.parent_shard_ids.clone(),
                        })
                        .collect();
                    let manifest = self
                        .manifest(&request, &stream_arn, &run_id, &planned)
                        .await?;
                    Ok(to_json(&RunOutcome::Succeeded { manifest }))
                } else {
                    let records = progress.iter().map(|p| p.cursor.records).sum();
                    let next = ScraperEvent::Run {
                        request,
                        stream_arn: Some(stream_arn),
                        run_id: Some(run_id),
                        shards: Some(progress),
                    };
                    Ok(to_json(&RunOutcome::InProgress {
                        next: Box::new(next),
                        records,
                    }))
                }
            }
        }
    }
}

/// The scraper's outputs are plain data: serialising them can't fail.
fn to_json<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("scraper outputs always serialise")
}
