//! The replay's outcome: every shard's final progress and the totals.

use serde::{Deserialize, Serialize};

use super::protocol::ShardReplay;
use crate::model::seqno::SequenceNumber;

/// One shard in the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardSummary {
    #[serde(flatten)]
    pub progress: ShardReplay,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sequence_number: Option<SequenceNumber>,
    /// From the first step's start to the last step's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// `s3://<bucket>/<key>` of each failed batch in an S3 DLQ (the first
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
    pub shards: u64,
    pub records: u64,
    pub delivered: u64,
    pub filtered: u64,
    pub failed_records: u64,
    pub failed_batches: u64,
    pub invocations: u64,
    pub function_errors: u64,
    pub dlq_locations: u64,
    /// From the first shard's start to the last shard's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
}

/// The replay's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplaySummary {
    pub run_id: String,
    pub dry_run: bool,
    /// The function or stream the records went to.
    pub target: String,
    /// Where failed batches went: `s3://<bucket>/<prefix>` of the run's
    /// DLQ folder, or the SQS queue URL; absent for a stream target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlq: Option<String>,
    pub shards: Vec<ShardSummary>,
    pub totals: ReplayTotals,
}
