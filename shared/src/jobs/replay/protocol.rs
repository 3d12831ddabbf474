//! What the replay state machine and the replay function say to each other:
//! the events, the plan and one shard's progress between steps.

use serde::{Deserialize, Serialize};

use super::request::ReplayRequest;
pub use crate::pipeline::pace::PaceOrigin;

use super::locations::ReplaySource;
use super::summary::SummaryOutput;
use crate::jobs::items::ItemsLocation;
use crate::model::counters::Counters;
use crate::model::record::{ArrivalTime, Record};
use crate::model::seqno::{Position, SequenceNumber};
use crate::request::RequestError;
use crate::sinks::lambda::DeliveryReport;
use crate::sources::Lineage;

/// One shard's replay between steps: what the state machine carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardReplay {
    pub shard_id: String,
    /// The last record handed to the target and settled; the next step
    /// resumes after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Position>,
    /// Where `last` came from in the source (an S3 archive: its object's
    /// key), so that the next step lists from there, not from the window's
    /// start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Records read from the source (in the window).
    #[serde(default)]
    pub records: u64,
    #[serde(flatten)]
    pub counters: Counters,
    /// Failed batches sent to the DLQ (objects or messages).
    #[serde(default)]
    pub dlq_locations: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_sequence_number: Option<SequenceNumber>,
    /// When the shard's first step started and its last step ended (epoch
    /// seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<ArrivalTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<ArrivalTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pace: Option<PaceOrigin>,
    /// Lanes whose settled records reach past `last` (at most one mark a
    /// lane, so at most 10): lanes don't wait for each other, and a step
    /// that stopped mid-piece left some ahead of the slowest. The next step
    /// skips them, so none is delivered twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settled_ahead: Vec<LaneMark>,
    #[serde(default)]
    pub done: bool,
}

/// One lane's records after a shard's checkpoint that are settled: each
/// record of `lane` up to and including `through`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaneMark {
    pub lane: usize,
    pub through: Position,
}

impl ShardReplay {
    pub fn new(shard_id: impl Into<String>) -> Self {
        Self {
            shard_id: shard_id.into(),
            ..Self::default()
        }
    }

    /// Counts what `report` did and moves past `piece` (the records now
    /// settled: possibly none, when a step's time ran out first), which
    /// came from `cursor` in the source.
    pub(super) fn settle(
        &mut self,
        piece: &[Record],
        report: &DeliveryReport,
        cursor: Option<&str>,
    ) {
        if let (Some(first), Some(last)) = (piece.first(), piece.last()) {
            if self.first_sequence_number.is_none() {
                self.first_sequence_number = Some(first.sequence_number.clone());
            }
            self.last = Some(Position::of(last));
            self.cursor = cursor.map(str::to_owned);
        }
        self.records += piece.len() as u64;
        self.counters += report.counters;
        self.dlq_locations += report.failure_locations.len() as u64;
        let last = self.last.as_ref();
        self.settled_ahead.retain(|mark| Some(&mark.through) > last);
    }

    /// Marks `records` (each with its lane), settled after `last`, to be
    /// skipped when they come again; returns how many there were.
    pub(super) fn settle_ahead<'r>(
        &mut self,
        records: impl IntoIterator<Item = (usize, &'r Record)>,
    ) -> usize {
        let mut count = 0;
        for (lane, record) in records {
            count += 1;
            let through = Position::of(record);
            self.records += 1;
            match self.settled_ahead.iter_mut().find(|m| m.lane == lane) {
                Some(mark) => mark.through = mark.through.clone().max(through),
                None => self.settled_ahead.push(LaneMark { lane, through }),
            }
        }
        self.settled_ahead.sort_by_key(|m| m.lane);
        count
    }

    /// Whether `record`, of `lane`, was settled by an earlier step ahead of
    /// `last`.
    pub(super) fn settled_already(&self, lane: usize, record: &Record) -> bool {
        (self.settled_ahead.iter()).any(|m| m.lane == lane && Position::of(record) <= m.through)
    }
}

/// What the replay function is asked to do. The replay state machine sends
/// `plan`, then `step` per shard until done, then `summary`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase", deny_unknown_fields)]
pub enum ReplayEvent {
    /// Checks the request and answers `{"valid": true}`: the state machine
    /// asks before it scrapes, so a bad target or option fails before any
    /// work.
    Validate {
        request: ReplayRequest,
    },
    Plan {
        request: ReplayRequest,
    },
    #[serde(rename_all = "camelCase")]
    Step {
        request: ReplayRequest,
        run_id: String,
        progress: ShardReplay,
    },
    /// After every group's steps: `plan` is where the `plan` action wrote
    /// the groups (its answer's `items`), read back one group at a time.
    #[serde(rename_all = "camelCase")]
    Summary {
        request: ReplayRequest,
        run_id: String,
        plan: ItemsLocation,
    },
}

impl ReplayEvent {
    /// Parses an invocation payload; the request is validated before any
    /// work.
    pub fn parse(json: &[u8]) -> Result<Self, RequestError> {
        let event: Self = crate::jobs::action::parse_action::<Self, ReplayRequest>(json)?;
        let (ReplayEvent::Validate { request }
        | ReplayEvent::Plan { request }
        | ReplayEvent::Step { request, .. }
        | ReplayEvent::Summary { request, .. }) = &event;
        request.validate()?;
        if let ReplaySource::Files { .. } = request.source {
            return Err(RequestError {
                field: "source.type".to_owned(),
                message: "FILES is the rewind CLI's (--files); accepted values: MANIFEST, ARCHIVE, DYNAMODB, SCRAPE".to_owned(),
            });
        }
        Ok(event)
    }
}

/// The plan: the run's identity and its shards, parents before children,
/// in lineage groups: shards related by a split or a merge are in one
/// group, replayed one after another in this order; groups are
/// independent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayPlan {
    pub run_id: String,
    pub stream_arn: String,
    /// Where an archive's lineage groups came from: `MARKERS` (the
    /// archive's shard markers), `LIST_SHARDS` (an archive without them, of
    /// a stream that still exists) or `ONE_GROUP` (neither: its shards one
    /// after another). Absent for sources that hold their own lineage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<Lineage>,
    pub shards: Vec<String>,
    pub groups: Vec<Vec<ShardReplay>>,
}

/// What the `plan` action answers the state machine: the groups are in S3
/// (`items`, a JSON array of groups, each an array of its shards' first
/// [`ShardReplay`], parents first), where the Distributed Map reads them:
/// the state stays the same size whatever the shard count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayPlanOutput {
    pub run_id: String,
    pub stream_arn: String,
    /// As in [`ReplayPlan::lineage`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<Lineage>,
    pub shards: usize,
    pub groups: usize,
    pub items: ItemsLocation,
}

/// What the replay function answers, by action.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ReplayOutput {
    /// `validate`: `{"valid": true}`.
    Valid {
        valid: bool,
    },
    Plan(ReplayPlanOutput),
    /// `step`: `{"done": …, "progress": …}`.
    Step {
        done: bool,
        progress: ShardReplay,
    },
    Summary(SummaryOutput),
}
