//! One consumer's successive pages of a shard: paced, throttles backed off,
//! expired iterators re-acquired.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, warn};

use super::{
    MAX_LIMIT, ReadOptions, RecordsPage, SHARD_BYTES_PER_SECOND, SHARD_CALLS_PER_SECOND,
    ShardSource, SourceError,
};
use crate::model::seqno::SequenceNumber;
use crate::model::window::StartPosition;

/// Spaces calls to a share of the shard's limits: at most 5 calls/s, and
/// no call while the shard's byte budget (2 MiB/s, one second's worth at
/// most) is overdrawn.
///
/// Kinesis admits a call when it arrives but charges its bytes when the
/// response is complete, so the byte budget is kept as the shard keeps it:
/// charged at the answer, refilled from then on. Counting a slow call's
/// bytes from its start would send the next call while the shard is still
/// paying for the last one, and have it throttled.
#[derive(Debug, Clone)]
pub struct Pacer {
    share: f64,
    pub(super) next_call: Option<Instant>,
    /// The byte budget (negative when overdrawn) as of `charged_at`, the
    /// last answer. It starts empty: a burst the shard may still hold is
    /// not counted on, so this reader never pulls ahead of the shard's own
    /// budget, whatever other consumers left in it.
    budget: f64,
    charged_at: Option<Instant>,
}

impl Pacer {
    pub fn new(share: f64) -> Self {
        Self {
            share: share.clamp(0.01, 1.0),
            next_call: None,
            budget: 0.0,
            charged_at: None,
        }
    }

    /// Waits until the next call may go.
    pub async fn wait(&self) {
        if let Some(at) = self.next_call {
            tokio::time::sleep_until(at).await;
        }
    }

    /// Records a call issued at `started` that was answered at `answered`
    /// with `bytes` (0 for a throttled call).
    pub fn called(&mut self, started: Instant, answered: Instant, bytes: usize) {
        let rate = SHARD_BYTES_PER_SECOND * self.share;
        let refilled = self.charged_at.map_or(0.0, |at| {
            answered.saturating_duration_since(at).as_secs_f64() * rate
        });
        // The budget holds at most one second's worth, as the shard's does.
        self.budget = (self.budget + refilled).min(rate) - bytes as f64;
        self.charged_at = Some(answered);
        let by_volume = if self.budget < 0.0 {
            answered + Duration::from_secs_f64(-self.budget / rate)
        } else {
            answered
        };
        let by_calls =
            started + Duration::from_secs_f64(1.0 / (SHARD_CALLS_PER_SECOND * self.share));
        self.next_call = Some(by_calls.max(by_volume));
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
                    self.pacer.called(called_at, Instant::now(), page.bytes);
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
                    self.pacer.called(called_at, Instant::now(), 0);
                    warn!(
                        shard = %self.shard_id,
                        error = &error as &(dyn std::error::Error + 'static),
                        throttles,
                        "GetRecords throttled"
                    );
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
            Err(error @ SourceError::Throttled { .. }) if attempt < options.max_retries => {
                attempt += 1;
                debug!(
                    error = &error as &(dyn std::error::Error + 'static),
                    attempt, "throttled; backing off"
                );
                tokio::time::sleep(crate::backoff::backoff(options.base_backoff, attempt)).await;
            }
            other => return other,
        }
    }
}
