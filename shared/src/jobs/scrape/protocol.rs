//! What the scraper function and the scrape state machine exchange: the
//! events, the plan, each shard's progress between steps, the answers, and
//! the errors with their stable type names.

use serde::{Deserialize, Serialize};

use super::ScrapeRequest;
use crate::jobs::items::{ItemsError, ItemsLocation};
use crate::jobs::step::ErrorType;
use crate::model::chunk::ChunkError;
use crate::model::manifest::{ManifestChunk, ManifestShard};
use crate::model::record::ArrivalTime;
use crate::model::seqno::SequenceNumber;
use crate::pipeline::lineage::PlannedShard;
use crate::request::{RequestError, parse_json};
use crate::sinks::s3_chunks::{FinalProgress, ManifestError, WriteError};
use crate::sources::kinesis::{ListShardsError, ReadError, ShardCursor};
use crate::store::StoreError;

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

/// The manifest's entry of a shard is its final progress and its chunks.
impl FinalProgress for ShardProgress {
    fn manifest_shard(self, shard: &PlannedShard, chunks: Vec<ManifestChunk>) -> ManifestShard {
        ManifestShard {
            shard_id: shard.shard_id.clone(),
            parent_shard_ids: shard.parent_shard_ids.clone(),
            records: self.cursor.records,
            chunks,
            manifest: None,
            first_sequence_number: self.first_sequence_number,
            last_sequence_number: self.last_sequence_number,
            first_arrival: self.first_arrival,
            last_arrival: self.last_arrival,
            stop_reason: self.cursor.stopped,
            child_shard_ids: self
                .cursor
                .children
                .iter()
                .map(|c| c.shard_id.clone())
                .collect(),
        }
    }
}

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
    /// After every shard's steps: `plan` is where the `plan` action wrote
    /// the shards (its answer's `items`), read back one shard at a time.
    #[serde(rename_all = "camelCase")]
    Manifest {
        request: ScrapeRequest,
        stream_arn: String,
        run_id: String,
        plan: ItemsLocation,
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
    /// `plan` for the scrape a replay of a `SCRAPE` source runs first: its
    /// folder is one no scrape execution can name
    /// ([`crate::jobs::claim::replay_scrape_run_id`]). Listed last, so that
    /// the error naming the accepted actions starts with those people type.
    #[serde(rename = "planForReplay")]
    PlanForReplay {
        request: ScrapeRequest,
    },
}

impl ScraperEvent {
    /// Parses an invocation payload: an action, or a bare scrape request.
    /// Every request is validated before any work.
    pub fn parse(json: &[u8]) -> Result<Self, RequestError> {
        let value: serde_json::Value = parse_json(json)?;
        let event = if value.get("action").is_some() {
            crate::jobs::action::parse_action::<ScraperEvent, ScrapeRequest>(json)?
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
            | ScraperEvent::PlanForReplay { request }
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

/// What the `plan` action answers the state machine: the plan's shards are
/// in S3 (`items`, a JSON array of each shard's first [`ShardProgress`],
/// parents first), where the Distributed Map reads them: the state stays the
/// same size whatever the shard count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanOutput {
    pub stream_arn: String,
    pub run_id: String,
    /// Shards in the plan.
    pub shards: usize,
    pub items: ItemsLocation,
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

/// What a `step` invocation answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepOutcome {
    pub done: bool,
    pub progress: ShardProgress,
}

/// What the scraper answers: the answer of the event's action.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ScraperOutput {
    Plan(PlanOutput),
    Step(StepOutcome),
    Manifest(ManifestLocation),
    Run(RunOutcome),
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
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Why a scraper invocation failed, with a stable type name that the state
/// machine matches.
#[derive(Debug, thiserror::Error)]
pub enum ScraperError {
    /// The message is the whole story: the field and what it accepts.
    #[error("invalid scrape request: {}: {}", .0.field, .0.message)]
    InvalidRequest(RequestError),
    #[error(transparent)]
    ListShards(#[from] ListShardsError),
    #[error(transparent)]
    Scrape(#[from] ScrapeError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("could not store the plan's shards")]
    PlanWrite(#[source] StoreError),
    #[error(transparent)]
    PlanRead(#[from] ItemsError),
}

impl From<RequestError> for ScraperError {
    fn from(error: RequestError) -> Self {
        Self::InvalidRequest(error)
    }
}

impl ErrorType for ScraperError {
    fn error_type(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "InvalidRequest",
            Self::ListShards(_) => "ListShardsFailed",
            Self::Scrape(ScrapeError::Read(_)) => "ShardReadFailed",
            Self::Scrape(_) => "OutputWriteFailed",
            Self::Manifest(ManifestError::Unfinished { .. }) => "ShardUnfinished",
            Self::Manifest(_) => "OutputWriteFailed",
            Self::PlanWrite(_) | Self::PlanRead(_) => "OutputWriteFailed",
        }
    }
}
