//! What a mapping reports: each shard's status, counters and checkpoint,
//! and why the mapping stopped.

use serde::{Deserialize, Serialize};

use crate::model::counters::Counters;
use crate::model::seqno::SequenceNumber;
use crate::pipeline::lineage::PlannedShard;

/// How many failure locations a shard's report keeps: a mapping may run
/// for days, and its report must not grow with every failed batch. Those
/// past it are counted in [`ShardReport::failure_locations_dropped`] and
/// logged.
pub const MAX_FAILURE_LOCATIONS: usize = 100;

/// Where a shard stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ShardStatus {
    /// A parent has not been read to its end yet.
    WaitingForParents,
    Polling,
    /// Closed, read to its end, every record settled.
    Ended,
}

/// One shard's counters and checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardReport {
    pub shard_id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_shard_ids: Vec<String>,
    pub status: ShardStatus,
    /// Records settled: delivered, filtered out, or sent to the on-failure
    /// destination.
    pub records: u64,
    /// Batches gathered and handed to delivery (each up to `BatchSize` ×
    /// `ParallelizationFactor` records; delivery may cut one into several
    /// invocations).
    pub batches: u64,
    #[serde(flatten)]
    pub counters: Counters,
    /// Where the failed batches went: the first [`MAX_FAILURE_LOCATIONS`]
    /// of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failure_locations: Vec<String>,
    /// Failed batches whose location was not kept in `failure_locations`
    /// (it is logged at `info`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failure_locations_dropped: u64,
    /// Throttled GetRecords calls (each backed off and retried).
    pub throttles: u64,
    /// Reads that failed otherwise but could heal (a 500, a dropped
    /// connection: each backed off and retried from the same position).
    #[serde(default)]
    pub read_errors: u64,
    /// Records read but not settled when the mapping stopped (their
    /// invocations so far are not counted above).
    pub in_flight: u64,
    /// The last settled sequence number: a restart resumes after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<SequenceNumber>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub child_shard_ids: Vec<String>,
}

impl ShardReport {
    pub(super) fn new(shard: &PlannedShard) -> Self {
        Self {
            shard_id: shard.shard_id.clone(),
            parent_shard_ids: shard.parent_shard_ids.clone(),
            status: ShardStatus::WaitingForParents,
            records: 0,
            batches: 0,
            counters: Counters::default(),
            failure_locations: Vec::new(),
            failure_locations_dropped: 0,
            throttles: 0,
            read_errors: 0,
            in_flight: 0,
            checkpoint: None,
            child_shard_ids: Vec::new(),
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Why the mapping stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Stopped {
    /// `shutdown` resolved.
    Shutdown,
    /// Every polled shard was idle for `idle_exit`.
    Idle,
    /// Every shard is closed and read to its end (the stream can get no
    /// more records).
    AllShardsEnded,
    /// A shard could not go on (see the error).
    Failed,
}

/// What the mapping did, per shard (parents before children).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MappingReport {
    pub stopped: Stopped,
    pub shards: Vec<ShardReport>,
}

impl MappingReport {
    /// Records settled on every shard.
    pub fn records(&self) -> u64 {
        self.shards.iter().map(|s| s.records).sum()
    }
}
