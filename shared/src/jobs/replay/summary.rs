//! The replay's outcome: every shard's final progress and the totals.

use serde::{Deserialize, Serialize};

use super::locations::{DlqLocation, ReplayTarget};
use super::protocol::ShardReplay;
use super::request::ReplayRequest;
use super::{Buckets, Queues, ReplayError, Replayer, Streams, Targets, Topics};
use crate::jobs::items::{Items, ItemsLocation};
use crate::model::counters::Counters;
use crate::model::record::ArrivalTime;
use crate::model::seqno::SequenceNumber;
use crate::store::{ObjectReader, ObjectStore, PutObject};

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
    /// Every shard (the CLI's summary); the state machine's output has the
    /// totals only and names where the shards' summaries are (see
    /// [`SummaryOutput`]), which reads as a summary of no shards.
    #[serde(default)]
    pub shards: Vec<ShardSummary>,
    pub totals: ReplayTotals,
}

/// Shards a page of the stored summary holds at most: the `summary` action
/// holds one page of shard summaries at a time, whatever the shard count.
pub const SUMMARY_PAGE: usize = 100;

/// What the `summary` action answers the state machine: the totals, and
/// where the whole summary is. `<key>` (`summary.json`) holds the totals
/// and the pages; each page (`_summary/<n>.jsonl`) one [`ShardSummary`] a
/// line, in the plan's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SummaryOutput {
    pub run_id: String,
    pub dry_run: bool,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlq: Option<String>,
    pub totals: ReplayTotals,
    pub bucket: String,
    pub key: String,
    /// The pages' keys, in order.
    pub pages: Vec<String>,
}

/// The totals as shard after shard is added.
#[derive(Default)]
struct Tally {
    totals: ReplayTotals,
    first_start: Option<ArrivalTime>,
    last_end: Option<ArrivalTime>,
}

impl Tally {
    fn add(&mut self, progress: &ShardReplay) {
        self.totals.shards += 1;
        self.totals.records += progress.records;
        self.totals.counters += progress.counters;
        self.totals.dlq_locations += progress.dlq_locations;
        if let Some(start) = progress.started_at {
            self.first_start = Some(self.first_start.map_or(start, |t| t.min(start)));
        }
        if let Some(end) = progress.finished_at {
            self.last_end = Some(self.last_end.map_or(end, |t| t.max(end)));
        }
    }

    fn totals(mut self) -> ReplayTotals {
        self.totals.duration_ms = duration_ms(self.first_start, self.last_end);
        self.totals
    }
}

impl<B: Buckets, T: Targets, K: Streams, Q: Queues, N: Topics> Replayer<B, T, K, Q, N> {
    /// One shard's final progress and where its failed batches went.
    async fn shard_summary(
        &self,
        request: &ReplayRequest,
        run_id: &str,
        shard_id: &str,
    ) -> Result<ShardSummary, ReplayError> {
        let store = self.buckets.bucket(&request.output().0);
        let key = format!(
            "{}/{shard_id}/_progress.json",
            request.progress_folder(run_id)
        );
        let unfinished = || ReplayError::Unfinished {
            shard_id: shard_id.to_owned(),
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
            (Some(DlqLocation::S3 { bucket, .. }), Some(folder)) if progress.dlq_locations > 0 => {
                let mut keys = self.buckets.bucket(bucket).list(&folder).await?;
                keys.truncate(MAX_LISTED_LOCATIONS);
                keys.into_iter()
                    .map(|k| format!("s3://{bucket}/{k}"))
                    .collect()
            }
            _ => Vec::new(),
        };
        Ok(ShardSummary {
            last_sequence_number: progress.last.as_ref().map(|p| p.sequence_number.clone()),
            duration_ms: duration_ms(progress.started_at, progress.finished_at),
            progress,
            dlq_keys,
        })
    }

    fn target_name(request: &ReplayRequest) -> String {
        match &request.target {
            ReplayTarget::Function { function_name, .. } => function_name.clone(),
            ReplayTarget::Stream { stream, .. } => stream.clone(),
        }
    }

    /// Every shard's final progress, and the totals (the CLI's summary,
    /// whole in memory: it prints it).
    pub async fn summary(
        &self,
        request: &ReplayRequest,
        run_id: &str,
        shards: &[String],
    ) -> Result<ReplaySummary, ReplayError> {
        let mut out = Vec::new();
        let mut tally = Tally::default();
        for shard_id in shards {
            let shard = self.shard_summary(request, run_id, shard_id).await?;
            tally.add(&shard.progress);
            out.push(shard);
        }
        Ok(ReplaySummary {
            run_id: run_id.to_owned(),
            dry_run: request.dry_run,
            target: Self::target_name(request),
            dlq: request.dlq_location(run_id),
            shards: out,
            totals: tally.totals(),
        })
    }

    /// The state machine's summary: every shard of the stored plan (one
    /// group at a time), its summary written to S3 a page of
    /// [`SUMMARY_PAGE`] shards at a time, then `summary.json` with the
    /// totals and the pages; answers the totals and where it is.
    pub async fn write_summary(
        &self,
        request: &ReplayRequest,
        run_id: &str,
        plan: &ItemsLocation,
    ) -> Result<SummaryOutput, ReplayError> {
        let (bucket, _) = request.output();
        let store = self.buckets.bucket(&bucket);
        let folder = request.progress_folder(run_id);
        let mut tally = Tally::default();
        let mut pages = Vec::new();
        let mut page: Vec<u8> = Vec::new();
        let mut in_page = 0;
        for group in Items::<Vec<ShardReplay>>::read(&store, &plan.key).await? {
            for shard in group? {
                let summary = self.shard_summary(request, run_id, &shard.shard_id).await?;
                tally.add(&summary.progress);
                serde_json::to_writer(&mut page, &summary).expect("a summary always serialises");
                page.push(b'\n');
                in_page += 1;
                if in_page == SUMMARY_PAGE {
                    pages.push(put_page(&store, &folder, pages.len(), &mut page).await?);
                    in_page = 0;
                }
            }
        }
        if in_page > 0 {
            pages.push(put_page(&store, &folder, pages.len(), &mut page).await?);
        }
        let output = SummaryOutput {
            run_id: run_id.to_owned(),
            dry_run: request.dry_run,
            target: Self::target_name(request),
            dlq: request.dlq_location(run_id),
            totals: tally.totals(),
            key: format!("{folder}/summary.json"),
            bucket,
            pages,
        };
        store
            .put(PutObject {
                key: output.key.clone(),
                body: serde_json::to_vec_pretty(&output).expect("a summary always serialises"),
                content_type: "application/json",
                content_encoding: None,
            })
            .await
            .map_err(ReplayError::Progress)?;
        Ok(output)
    }
}

/// Stores page `n` of the summary (emptying `body`) and answers its key.
async fn put_page<W: ObjectStore>(
    store: &W,
    folder: &str,
    n: usize,
    body: &mut Vec<u8>,
) -> Result<String, ReplayError> {
    let key = format!("{folder}/_summary/{n:05}.jsonl");
    store
        .put(PutObject {
            key: key.clone(),
            body: std::mem::take(body),
            content_type: "application/x-ndjson",
            content_encoding: None,
        })
        .await
        .map_err(ReplayError::Progress)?;
    Ok(key)
}

fn duration_ms(start: Option<ArrivalTime>, end: Option<ArrivalTime>) -> Option<i64> {
    Some(end?.epoch_millis() - start?.epoch_millis())
}
