//! The replay's outcome: every shard's final progress and the totals.

use serde::{Deserialize, Serialize};

use super::protocol::ShardReplay;
use super::request::{DlqLocation, ReplayRequest, ReplayTarget};
use super::{Buckets, Queues, ReplayError, Replayer, Streams, Targets, Topics};
use crate::model::counters::Counters;
use crate::model::record::ArrivalTime;
use crate::model::seqno::SequenceNumber;
use crate::store::ObjectReader;

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
    #[serde(flatten)]
    pub counters: Counters,
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

impl<B: Buckets, T: Targets, K: Streams, Q: Queues, N: Topics> Replayer<B, T, K, Q, N> {
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
            totals.counters += progress.counters;
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
}

fn duration_ms(start: Option<ArrivalTime>, end: Option<ArrivalTime>) -> Option<i64> {
    Some(end?.epoch_millis() - start?.epoch_millis())
}
