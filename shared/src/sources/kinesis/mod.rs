//! Reading a window of one shard (see [`crate::model::window`] for the
//! start positions, stop conditions and their exact bounds): at the shard's
//! full read rate, through throttling and expired iterators, one bounded
//! step at a time.
//!
//! An empty `GetRecords` response is not the end of a shard (Kinesis
//! answers empty pages across gaps and at the tip); a closed shard's end is
//! (no next iterator). At the tip, `maxEmptyPolls` consecutive empty
//! responses end the read for stop conditions the data has not reached yet.
//!
//! Shard iterators are never kept past one step (they expire after five
//! minutes): a step ends with the last sequence number read, and the next
//! one starts `AFTER_SEQUENCE_NUMBER` it.

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::model::record::Record;
use crate::model::seqno::SequenceNumber;
use crate::model::window::{ChildShard, StartPosition, StopCondition, StopReason, Verdict, judge};

mod arrival;
mod client;
mod poller;

pub use client::{KinesisSource, ListShardsError, list_shards, resolve_stream_arn};
pub use poller::{Pacer, ShardPoller};

/// GetRecords returns at most 10,000 records per call.
pub const MAX_LIMIT: i32 = 10_000;
/// Per-shard read limits, shared by every consumer of the shard.
pub const SHARD_CALLS_PER_SECOND: f64 = 5.0;
pub const SHARD_BYTES_PER_SECOND: f64 = 2.0 * 1024.0 * 1024.0;

/// One GetRecords response.
#[derive(Debug, Clone, Default)]
pub struct RecordsPage {
    pub records: Vec<Record>,
    /// `None` at a closed shard's end.
    pub next_iterator: Option<String>,
    pub millis_behind_latest: Option<i64>,
    pub child_shards: Vec<ChildShard>,
    /// Payload bytes in the response, for pacing.
    pub bytes: usize,
}

/// A failed shard read call.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("throttled")]
    Throttled {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("shard iterator expired")]
    ExpiredIterator,
    #[error("GetShardIterator for {shard_id} returned no iterator")]
    NoIterator { shard_id: String },
    #[error("{message}")]
    Other {
        message: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The two calls a shard read makes.
pub trait ShardSource: Send + Sync {
    fn shard_iterator(
        &self,
        shard_id: &str,
        start: &StartPosition,
    ) -> impl Future<Output = Result<String, SourceError>> + Send;

    fn records(
        &self,
        shard_id: &str,
        iterator: &str,
        limit: i32,
    ) -> impl Future<Output = Result<RecordsPage, SourceError>> + Send;
}

/// A shard read call that gave up.
#[derive(Debug, thiserror::Error)]
#[error("reading {stream}/{shard_id}")]
pub struct ReadError {
    pub stream: String,
    pub shard_id: String,
    #[source]
    pub source: SourceError,
}

/// How hard a read pulls on a shard.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadOptions {
    /// GetRecords `Limit`, 1 to 10,000.
    pub limit: i32,
    /// Extra wait between calls, on top of pacing.
    pub poll_delay: Duration,
    /// Consecutive empty responses at the tip before the read ends.
    pub max_empty_polls: u32,
    /// Share of the shard's 5 calls/s and 2 MiB/s this read may use, so a
    /// live consumer keeps its part. 1.0 takes all of it.
    pub share: f64,
    /// Throttled or failed calls retried (with jittered backoff) before the
    /// read gives up.
    pub max_retries: u32,
    pub base_backoff: Duration,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            limit: MAX_LIMIT,
            poll_delay: Duration::ZERO,
            max_empty_polls: 3,
            share: 1.0,
            max_retries: 10,
            base_backoff: Duration::from_millis(200),
        }
    }
}

/// Where one shard's read stands between steps: small enough for a state
/// machine payload, and never a shard iterator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardCursor {
    pub shard_id: String,
    /// The last record read (kept or not); the next step starts after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sequence_number: Option<SequenceNumber>,
    /// Records kept so far.
    pub records: u64,
    /// Consecutive empty responses at the tip.
    #[serde(default)]
    pub empty_polls: u32,
    /// Throttled GetRecords calls so far (each backed off and retried).
    #[serde(default)]
    pub throttles: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<StopReason>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<ChildShard>,
}

impl ShardCursor {
    pub fn new(shard_id: impl Into<String>) -> Self {
        Self {
            shard_id: shard_id.into(),
            ..Self::default()
        }
    }

    pub fn is_done(&self) -> bool {
        self.stopped.is_some()
    }
}

/// Limits of one step.
#[derive(Debug, Clone, Copy)]
pub struct StepBudget {
    /// Stop issuing calls after this instant.
    pub deadline: Instant,
    /// Stop after this many kept records (the step's chunk budget). Checked
    /// between calls: a step can go past it by at most one page.
    pub max_records: u64,
}

/// What one shard read is asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardWindow {
    /// Stream name, for the records and errors.
    pub stream: String,
    pub start: StartPosition,
    pub stop: StopCondition,
    pub options: ReadOptions,
}

/// Reads one step of one shard's window into `sink`.
///
/// Returns the updated cursor: `stopped` is set when the shard's window is
/// complete. Records are handed over in order, each once: a step resumes
/// after `last_sequence_number`, whatever happened to the previous step.
pub async fn read_step<S: ShardSource>(
    source: &S,
    window: &ShardWindow,
    cursor: &ShardCursor,
    budget: StepBudget,
    mut sink: impl FnMut(Record),
) -> Result<ShardCursor, ReadError> {
    let ShardWindow {
        stream,
        start,
        stop,
        options,
    } = window;
    let mut cursor = cursor.clone();
    if cursor.is_done() {
        return Ok(cursor);
    }
    if matches!(stop, StopCondition::TotalRecordsPerShard { count: 0 }) {
        cursor.stopped = Some(StopReason::StopCondition);
        return Ok(cursor);
    }
    let shard_id = cursor.shard_id.clone();
    let fail = |source: SourceError| ReadError {
        stream: stream.clone(),
        shard_id: shard_id.clone(),
        source,
    };
    let position = match &cursor.last_sequence_number {
        Some(last) => StartPosition::AfterSequenceNumber {
            sequence_number: last.clone(),
        },
        None => start.clone(),
    };
    let mut poller = ShardPoller::new(source, shard_id.clone(), position, options.clone());
    let throttles_before = cursor.throttles;
    let mut taken_this_step = 0u64;
    let mut calls = 0u32;
    loop {
        if Instant::now() >= budget.deadline || taken_this_step >= budget.max_records {
            return Ok(cursor);
        }
        // The step's first call goes whatever its wait (only the poll delay:
        // pacing starts afresh), so that every step makes progress even when
        // the poll delay is longer than the step's time; later calls whose
        // wait would end past the deadline are left to the next step.
        let deadline = (calls > 0).then_some(budget.deadline);
        calls += 1;
        let page = poller.next_page_by(options.limit, deadline).await;
        cursor.throttles = throttles_before + poller.throttles();
        let Some(page) = page.map_err(fail)? else {
            return Ok(cursor);
        };
        let empty = page.records.is_empty();
        for record in page.records {
            let verdict = judge(stop, &record, cursor.records);
            cursor.last_sequence_number = Some(record.sequence_number.clone());
            match verdict {
                Verdict::Stop => {
                    cursor.stopped = Some(StopReason::StopCondition);
                    return Ok(cursor);
                }
                Verdict::Take | Verdict::TakeAndStop => {
                    sink(record);
                    cursor.records += 1;
                    taken_this_step += 1;
                    if verdict == Verdict::TakeAndStop {
                        cursor.stopped = Some(StopReason::StopCondition);
                        return Ok(cursor);
                    }
                }
            }
        }
        if page.next_iterator.is_none() {
            cursor.stopped = Some(StopReason::ShardEnd);
            cursor.children = page.child_shards;
            return Ok(cursor);
        }
        let at_tip = page.millis_behind_latest == Some(0);
        // Only an empty page at the tip ends a LATEST read: records that
        // arrived in the same millisecond as the last one returned leave
        // MillisBehindLatest at 0 while they are still ahead (kinesis-mock
        // answers so on a full page of a closed shard).
        if at_tip && empty && matches!(stop, StopCondition::Latest { .. }) {
            cursor.stopped = Some(StopReason::ReachedTip);
            return Ok(cursor);
        }
        if empty && at_tip {
            cursor.empty_polls += 1;
            if cursor.empty_polls >= options.max_empty_polls {
                cursor.stopped = Some(StopReason::ReachedTip);
                return Ok(cursor);
            }
        } else if !empty {
            cursor.empty_polls = 0;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
