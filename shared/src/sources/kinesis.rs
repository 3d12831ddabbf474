//! Reading a window of one shard: every start position and stop condition,
//! at the shard's full read rate, through throttling and expired iterators,
//! one bounded step at a time.
//!
//! Stop semantics (the bound is numeric for sequence numbers):
//!
//! | stop | records kept |
//! |---|---|
//! | `TOTAL_RECORDS_PER_SHARD n` | the first `n` |
//! | `AT_SEQUENCE_NUMBER x` | sequence `<= x` (inclusive) |
//! | `BEFORE_SEQUENCE_NUMBER x` | sequence `< x` (exclusive) |
//! | `AFTER_SEQUENCE_NUMBER x` | sequence `<= x`, and the first record past `x` |
//! | `AT_TIMESTAMP t` | arrival `<= t` |
//! | `BEFORE_TIMESTAMP t` | arrival `< t` |
//! | `AFTER_TIMESTAMP t` | arrival `<= t`, and the first record past `t` |
//! | `LATEST` | up to the shard's tip when the read started |
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

use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_kinesis::operation::get_records::GetRecordsError;
use aws_sdk_kinesis::types::ShardIteratorType;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::model::record::{ArrivalTime, EncryptionType, Record};
use crate::model::seqno::SequenceNumber;

/// GetRecords returns at most 10,000 records per call.
pub const MAX_LIMIT: i32 = 10_000;
/// Per-shard read limits, shared by every consumer of the shard.
pub const SHARD_CALLS_PER_SECOND: f64 = 5.0;
pub const SHARD_BYTES_PER_SECOND: f64 = 2.0 * 1024.0 * 1024.0;

/// Where a read starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "SCREAMING_SNAKE_CASE",
    try_from = "RawBound<StartType>"
)]
pub enum StartPosition {
    TrimHorizon,
    Latest,
    AtSequenceNumber {
        #[serde(rename = "sequenceNumber")]
        sequence_number: SequenceNumber,
    },
    AfterSequenceNumber {
        #[serde(rename = "sequenceNumber")]
        sequence_number: SequenceNumber,
    },
    AtTimestamp {
        #[serde(rename = "timestamp")]
        timestamp: ArrivalTime,
    },
}

/// Where a read stops. See the module docs for the exact bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "SCREAMING_SNAKE_CASE",
    try_from = "RawBound<StopType>"
)]
pub enum StopCondition {
    TotalRecordsPerShard {
        #[serde(rename = "count")]
        count: u64,
    },
    AtSequenceNumber {
        #[serde(rename = "sequenceNumber")]
        sequence_number: SequenceNumber,
    },
    AfterSequenceNumber {
        #[serde(rename = "sequenceNumber")]
        sequence_number: SequenceNumber,
    },
    BeforeSequenceNumber {
        #[serde(rename = "sequenceNumber")]
        sequence_number: SequenceNumber,
    },
    AtTimestamp {
        #[serde(rename = "timestamp")]
        timestamp: ArrivalTime,
    },
    BeforeTimestamp {
        #[serde(rename = "timestamp")]
        timestamp: ArrivalTime,
    },
    AfterTimestamp {
        #[serde(rename = "timestamp")]
        timestamp: ArrivalTime,
    },
    /// Up to the tip as of `asOf` (set when the read starts).
    Latest {
        #[serde(rename = "asOf", default, skip_serializing_if = "Option::is_none")]
        as_of: Option<ArrivalTime>,
    },
}

/// The JSON form of a start or stop, read as a plain struct so that a bad
/// value is reported at its own field (`stop.timestamp`), then checked for
/// the fields its type needs.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawBound<T> {
    r#type: T,
    sequence_number: Option<SequenceNumber>,
    timestamp: Option<ArrivalTime>,
    count: Option<u64>,
    as_of: Option<ArrivalTime>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum StartType {
    TrimHorizon,
    Latest,
    AtSequenceNumber,
    AfterSequenceNumber,
    AtTimestamp,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum StopType {
    TotalRecordsPerShard,
    AtSequenceNumber,
    AfterSequenceNumber,
    BeforeSequenceNumber,
    AtTimestamp,
    BeforeTimestamp,
    AfterTimestamp,
    Latest,
}

/// `AtTimestamp` → `AT_TIMESTAMP`, the name the request uses.
fn type_name(kind: impl std::fmt::Debug) -> String {
    let mut name = String::new();
    for (i, c) in format!("{kind:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

fn required<T>(value: Option<T>, field: &str, kind: impl std::fmt::Debug) -> Result<T, String> {
    value.ok_or_else(|| format!("{field} is required with type {}", type_name(kind)))
}

fn unused<T>(value: &Option<T>, field: &str, kind: impl std::fmt::Debug) -> Result<(), String> {
    match value {
        Some(_) => Err(format!("{field} does not go with type {}", type_name(kind))),
        None => Ok(()),
    }
}

impl TryFrom<RawBound<StartType>> for StartPosition {
    type Error = String;

    fn try_from(raw: RawBound<StartType>) -> Result<Self, String> {
        let kind = raw.r#type;
        unused(&raw.count, "count", kind)?;
        unused(&raw.as_of, "asOf", kind)?;
        let (seq, ts) = (raw.sequence_number, raw.timestamp);
        let no_seq = |s: &Option<SequenceNumber>| unused(s, "sequenceNumber", kind);
        let no_ts = |t: &Option<ArrivalTime>| unused(t, "timestamp", kind);
        Ok(match kind {
            StartType::TrimHorizon => {
                no_seq(&seq)?;
                no_ts(&ts)?;
                Self::TrimHorizon
            }
            StartType::Latest => {
                no_seq(&seq)?;
                no_ts(&ts)?;
                Self::Latest
            }
            StartType::AtSequenceNumber => {
                no_ts(&ts)?;
                Self::AtSequenceNumber {
                    sequence_number: required(seq, "sequenceNumber", kind)?,
                }
            }
            StartType::AfterSequenceNumber => {
                no_ts(&ts)?;
                Self::AfterSequenceNumber {
                    sequence_number: required(seq, "sequenceNumber", kind)?,
                }
            }
            StartType::AtTimestamp => {
                no_seq(&seq)?;
                Self::AtTimestamp {
                    timestamp: required(ts, "timestamp", kind)?,
                }
            }
        })
    }
}

impl TryFrom<RawBound<StopType>> for StopCondition {
    type Error = String;

    fn try_from(raw: RawBound<StopType>) -> Result<Self, String> {
        use StopType as T;
        let kind = raw.r#type;
        let RawBound {
            sequence_number: seq,
            timestamp: ts,
            count,
            as_of,
            ..
        } = raw;
        let wants_seq = matches!(
            kind,
            T::AtSequenceNumber | T::AfterSequenceNumber | T::BeforeSequenceNumber
        );
        let wants_ts = matches!(
            kind,
            T::AtTimestamp | T::BeforeTimestamp | T::AfterTimestamp
        );
        if !wants_seq {
            unused(&seq, "sequenceNumber", kind)?;
        }
        if !wants_ts {
            unused(&ts, "timestamp", kind)?;
        }
        if !matches!(kind, T::TotalRecordsPerShard) {
            unused(&count, "count", kind)?;
        }
        if !matches!(kind, T::Latest) {
            unused(&as_of, "asOf", kind)?;
        }
        Ok(match kind {
            T::TotalRecordsPerShard => Self::TotalRecordsPerShard {
                count: required(count, "count", kind)?,
            },
            T::AtSequenceNumber => Self::AtSequenceNumber {
                sequence_number: required(seq, "sequenceNumber", kind)?,
            },
            T::AfterSequenceNumber => Self::AfterSequenceNumber {
                sequence_number: required(seq, "sequenceNumber", kind)?,
            },
            T::BeforeSequenceNumber => Self::BeforeSequenceNumber {
                sequence_number: required(seq, "sequenceNumber", kind)?,
            },
            T::AtTimestamp => Self::AtTimestamp {
                timestamp: required(ts, "timestamp", kind)?,
            },
            T::BeforeTimestamp => Self::BeforeTimestamp {
                timestamp: required(ts, "timestamp", kind)?,
            },
            T::AfterTimestamp => Self::AfterTimestamp {
                timestamp: required(ts, "timestamp", kind)?,
            },
            T::Latest => Self::Latest { as_of },
        })
    }
}

/// What the stop condition says of the next record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Take,
    /// Take it, and it is the last.
    TakeAndStop,
    /// Leave it: the window ended before it.
    Stop,
}

/// Judges one record; `taken` is how many the read kept before it.
pub fn judge(stop: &StopCondition, record: &Record, taken: u64) -> Verdict {
    use Verdict::*;
    let seq = &record.sequence_number;
    let at = record.approximate_arrival_timestamp;
    match stop {
        StopCondition::TotalRecordsPerShard { count } => {
            if taken >= *count {
                Stop
            } else if taken + 1 == *count {
                TakeAndStop
            } else {
                Take
            }
        }
        StopCondition::AtSequenceNumber { sequence_number: x } => match seq.cmp(x) {
            std::cmp::Ordering::Less => Take,
            std::cmp::Ordering::Equal => TakeAndStop,
            std::cmp::Ordering::Greater => Stop,
        },
        StopCondition::AfterSequenceNumber { sequence_number: x } => {
            if seq <= x {
                Take
            } else {
                TakeAndStop
            }
        }
        StopCondition::BeforeSequenceNumber { sequence_number: x } => {
            if seq < x {
                Take
            } else {
                Stop
            }
        }
        // Several records can share a millisecond: an inclusive time bound
        // only stops at the first record past it.
        StopCondition::AtTimestamp { timestamp: t } => {
            if at <= *t {
                Take
            } else {
                Stop
            }
        }
        StopCondition::BeforeTimestamp { timestamp: t } => {
            if at < *t {
                Take
            } else {
                Stop
            }
        }
        StopCondition::AfterTimestamp { timestamp: t } => {
            if at <= *t {
                Take
            } else {
                TakeAndStop
            }
        }
        StopCondition::Latest { as_of } => match as_of {
            Some(t) if at > *t => Stop,
            _ => Take,
        },
    }
}

/// Why a shard's read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StopReason {
    /// The stop condition was met.
    StopCondition,
    /// The shard is closed and every record was read.
    ShardEnd,
    /// Caught up with the tip (`LATEST`), or `maxEmptyPolls` empty responses
    /// at the tip.
    ReachedTip,
}

/// A child shard reported at a closed shard's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChildShard {
    pub shard_id: String,
    pub parent_shards: Vec<String>,
}

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
    #[error("throttled: {message}")]
    Throttled { message: String },
    #[error("shard iterator expired")]
    ExpiredIterator,
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
#[error("reading {stream}/{shard_id}: {source}")]
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

/// Spaces calls to a share of the shard's limits: at most 5 calls/s, and
/// after a response of `b` bytes, no call until `b` bytes' worth of the
/// 2 MiB/s has elapsed.
#[derive(Debug, Clone)]
pub struct Pacer {
    share: f64,
    next_call: Option<Instant>,
}

impl Pacer {
    pub fn new(share: f64) -> Self {
        Self {
            share: share.clamp(0.01, 1.0),
            next_call: None,
        }
    }

    /// Waits until the next call may go.
    pub async fn wait(&self) {
        if let Some(at) = self.next_call {
            tokio::time::sleep_until(at).await;
        }
    }

    /// Records a call issued at `at` that returned `bytes`.
    pub fn called(&mut self, at: Instant, bytes: usize) {
        let calls = Duration::from_secs_f64(1.0 / (SHARD_CALLS_PER_SECOND * self.share));
        let volume = Duration::from_secs_f64(bytes as f64 / (SHARD_BYTES_PER_SECOND * self.share));
        self.next_call = Some(at + calls.max(volume));
    }
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

/// Successive GetRecords pages of one shard from a start position, as one
/// consumer reads them: paced to its share of the shard's limits, throttled
/// calls backed off and retried from the same iterator, and an expired
/// iterator re-acquired after the last record returned. The iterator lives
/// only in memory, for as long as the caller keeps polling.
pub struct ShardPoller<'a, S> {
    source: &'a S,
    shard_id: String,
    options: ReadOptions,
    start: StartPosition,
    last: Option<SequenceNumber>,
    iterator: Option<String>,
    pacer: Pacer,
    throttles: u64,
}

impl<'a, S: ShardSource> ShardPoller<'a, S> {
    pub fn new(
        source: &'a S,
        shard_id: impl Into<String>,
        start: StartPosition,
        options: ReadOptions,
    ) -> Self {
        Self {
            source,
            shard_id: shard_id.into(),
            pacer: Pacer::new(options.share),
            options,
            start,
            last: None,
            iterator: None,
            throttles: 0,
        }
    }

    pub fn shard_id(&self) -> &str {
        &self.shard_id
    }

    /// Where a new iterator starts: after the last record returned, or at
    /// the start position before any.
    pub fn position(&self) -> StartPosition {
        match &self.last {
            Some(last) => StartPosition::AfterSequenceNumber {
                sequence_number: last.clone(),
            },
            None => self.start.clone(),
        }
    }

    /// Throttled GetRecords calls so far (each backed off and retried).
    pub fn throttles(&self) -> u64 {
        self.throttles
    }

    /// The next page, of at most `limit` records (1 to 10,000). A page with
    /// no next iterator is the closed shard's end; polling again after it
    /// starts over after the last record, and meets the end again.
    pub async fn next_page(&mut self, limit: i32) -> Result<RecordsPage, SourceError> {
        Ok(self
            .next_page_by(limit, None)
            .await?
            .expect("without a deadline there is always a page"))
    }

    /// [`Self::next_page`], but `None` instead of a wait (pacing, poll
    /// delay, throttling backoff) that would end past `deadline`: a step
    /// must return before its Lambda deadline, however long the request's
    /// poll delay is. Nothing is lost: the next page starts after the last
    /// record returned.
    pub async fn next_page_by(
        &mut self,
        limit: i32,
        deadline: Option<Instant>,
    ) -> Result<Option<RecordsPage>, SourceError> {
        let limit = limit.clamp(1, MAX_LIMIT);
        let past = |wait_until: Instant| deadline.is_some_and(|d| wait_until > d);
        let mut throttles = 0u32;
        loop {
            let iterator = match &self.iterator {
                Some(iterator) => iterator.clone(),
                None => {
                    let position = self.position();
                    let iterator = with_retries(&self.options, || {
                        self.source.shard_iterator(&self.shard_id, &position)
                    })
                    .await?;
                    self.iterator = Some(iterator.clone());
                    iterator
                }
            };
            let call_at = self
                .pacer
                .next_call
                .map_or_else(Instant::now, |at| at.max(Instant::now()))
                + self.options.poll_delay;
            if past(call_at) {
                return Ok(None);
            }
            self.pacer.wait().await;
            if !self.options.poll_delay.is_zero() {
                tokio::time::sleep(self.options.poll_delay).await;
            }
            let called_at = Instant::now();
            match self.source.records(&self.shard_id, &iterator, limit).await {
                Ok(page) => {
                    self.pacer.called(called_at, page.bytes);
                    if let Some(last) = page.records.last() {
                        self.last = Some(last.sequence_number.clone());
                    }
                    self.iterator.clone_from(&page.next_iterator);
                    return Ok(Some(page));
                }
                Err(SourceError::ExpiredIterator) => {
                    debug!(shard = %self.shard_id, "iterator expired; re-acquiring after the last record read");
                    self.iterator = None;
                }
                Err(error @ SourceError::Throttled { .. }) => {
                    // Another consumer is using the shard's share: back off,
                    // then go on from the same iterator (a throttled call
                    // reads nothing and does not move it).
                    throttles += 1;
                    self.throttles += 1;
                    if throttles > self.options.max_retries {
                        return Err(error);
                    }
                    self.pacer.called(called_at, 0);
                    warn!(shard = %self.shard_id, %error, throttles, "GetRecords throttled");
                    let backoff = crate::backoff::backoff(self.options.base_backoff, throttles);
                    if past(Instant::now() + backoff) {
                        return Ok(None);
                    }
                    tokio::time::sleep(backoff).await;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// Retries throttled and transient failures with jittered backoff.
async fn with_retries<T, F, Fut>(options: &ReadOptions, mut call: F) -> Result<T, SourceError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SourceError>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Err(SourceError::Throttled { message }) if attempt < options.max_retries => {
                attempt += 1;
                debug!(%message, attempt, "throttled; backing off");
                tokio::time::sleep(crate::backoff::backoff(options.base_backoff, attempt)).await;
            }
            other => return other,
        }
    }
}

/// The Kinesis API as a [`ShardSource`].
#[derive(Debug, Clone)]
pub struct KinesisSource {
    client: aws_sdk_kinesis::Client,
    stream_arn: String,
    stream: String,
}

impl KinesisSource {
    pub fn new(client: aws_sdk_kinesis::Client, stream_arn: impl Into<String>) -> Self {
        let stream_arn = stream_arn.into();
        let stream = crate::model::record::stream_name_from_arn(&stream_arn)
            .unwrap_or(&stream_arn)
            .to_owned();
        Self {
            client,
            stream_arn,
            stream,
        }
    }
}

fn classify<E>(error: aws_sdk_kinesis::error::SdkError<E>) -> SourceError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match error.code() {
        Some(
            "ProvisionedThroughputExceededException"
            | "LimitExceededException"
            | "KMSThrottlingException",
        ) => SourceError::Throttled {
            message: DisplayErrorContext(&error).to_string(),
        },
        Some("ExpiredIteratorException") => SourceError::ExpiredIterator,
        _ => SourceError::Other {
            message: DisplayErrorContext(&error).to_string(),
            source: Box::new(error),
        },
    }
}

impl ShardSource for KinesisSource {
    async fn shard_iterator(
        &self,
        shard_id: &str,
        start: &StartPosition,
    ) -> Result<String, SourceError> {
        let request = self
            .client
            .get_shard_iterator()
            .stream_arn(&self.stream_arn)
            .shard_id(shard_id);
        let request = match start {
            StartPosition::TrimHorizon => {
                request.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            StartPosition::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
            StartPosition::AtSequenceNumber { sequence_number } => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(sequence_number.as_str()),
            StartPosition::AfterSequenceNumber { sequence_number } => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(sequence_number.as_str()),
            StartPosition::AtTimestamp { timestamp } => request
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(aws_sdk_kinesis::primitives::DateTime::from_millis(
                    timestamp.epoch_millis(),
                )),
        };
        let output = request.send().await.map_err(classify)?;
        output
            .shard_iterator()
            .map(str::to_owned)
            .ok_or_else(|| SourceError::Other {
                message: format!("GetShardIterator for {shard_id} returned no iterator"),
                source: "no iterator".into(),
            })
    }

    async fn records(
        &self,
        shard_id: &str,
        iterator: &str,
        limit: i32,
    ) -> Result<RecordsPage, SourceError> {
        let output = self
            .client
            .get_records()
            .stream_arn(&self.stream_arn)
            .shard_iterator(iterator)
            .limit(limit)
            .send()
            .await
            .map_err(|error| {
                if matches!(
                    error.as_service_error(),
                    Some(GetRecordsError::ExpiredIteratorException(_))
                ) {
                    SourceError::ExpiredIterator
                } else {
                    classify(error)
                }
            })?;
        let mut bytes = 0;
        let mut records = Vec::with_capacity(output.records().len());
        for r in output.records() {
            let sequence_number =
                SequenceNumber::parse(r.sequence_number()).map_err(|e| SourceError::Other {
                    message: format!(
                        "GetRecords on {shard_id} returned a bad sequence number: {e}"
                    ),
                    source: Box::new(e),
                })?;
            let data = r.data().as_ref().to_vec();
            bytes += data.len() + r.partition_key().map_or(0, str::len);
            records.push(Record {
                stream: self.stream.clone(),
                shard_id: shard_id.to_owned(),
                sequence_number,
                sub_sequence_number: None,
                partition_key: r.partition_key().unwrap_or_default().to_owned(),
                explicit_hash_key: None,
                encryption_type: match r.encryption_type() {
                    Some(aws_sdk_kinesis::types::EncryptionType::Kms) => Some(EncryptionType::Kms),
                    _ => None,
                },
                approximate_arrival_timestamp: ArrivalTime::from_epoch_millis(
                    r.approximate_arrival_timestamp()
                        .and_then(|t| t.to_millis().ok())
                        .unwrap_or_default(),
                ),
                data,
            });
        }
        Ok(RecordsPage {
            records,
            next_iterator: output.next_shard_iterator().map(str::to_owned),
            millis_behind_latest: output.millis_behind_latest(),
            child_shards: output
                .child_shards()
                .iter()
                .map(|c| ChildShard {
                    shard_id: c.shard_id().to_owned(),
                    parent_shards: c.parent_shards().to_vec(),
                })
                .collect(),
            bytes,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests;
