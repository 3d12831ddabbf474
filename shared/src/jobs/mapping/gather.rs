//! What one shard has read toward its next batch.
//!
//! Only records the `FilterCriteria` keep count toward the batch's
//! capacity, as the live mapping fills a batch with matching records
//! (<https://docs.aws.amazon.com/lambda/latest/dg/invocation-eventfiltering.html>:
//! "If a record from your event source satisfies one or more of your
//! filters, Lambda includes the record in the next event it sends to your
//! function. If none of your filters are satisfied, Lambda discards the
//! record."). The records the filters drop are read, counted and passed by
//! the checkpoint, never kept: what a shard holds is at most one batch of
//! matching records and the unexamined rest of one page, however few
//! records match.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::model::record::Record;
use crate::model::seqno::SequenceNumber;
use crate::pipeline::filter::Filters;

/// A batch to settle: its matching records and the dropped records read
/// with them, up to `last`.
pub(super) struct Gathered {
    /// Matching records, in shard order.
    pub batch: Vec<Record>,
    /// Records the filters dropped among and after them (never delivered).
    pub passed: u64,
    /// The last record read before the batch was cut, matching or not: the
    /// checkpoint once the batch settles, so a dropped record is never read
    /// again and never passed before the matching records ahead of it.
    pub last: Option<SequenceNumber>,
}

/// The records a shard has read and not settled yet.
#[derive(Default)]
pub(super) struct Gathering {
    gathered: Option<Gathered>,
    /// The rest of the last page, not examined yet. With filters a poll
    /// reads more than the room left in the batch (the records they drop
    /// take none of it), so a page can outlast the batch it fills.
    pending: VecDeque<Record>,
    /// When the batch's `MaximumBatchingWindowInSeconds` ends: set by its
    /// first matching record, since dropped records never wait for a batch.
    pub window_ends: Option<Instant>,
}

impl Gathering {
    /// Takes a page's records, to be examined in order.
    pub fn read(&mut self, records: Vec<Record>) {
        self.pending.extend(records);
    }

    /// Examines pending records until the batch holds `capacity` matching
    /// records or none are left.
    pub fn examine(&mut self, filters: &Filters, capacity: usize, window: Duration) {
        while self.matching() < capacity
            && let Some(record) = self.pending.pop_front()
        {
            let gathered = self.gathered.get_or_insert_with(|| Gathered {
                batch: Vec::new(),
                passed: 0,
                last: None,
            });
            gathered.last = Some(record.sequence_number.clone());
            if filters.matches(&record) {
                if gathered.batch.is_empty() {
                    self.window_ends = Some(Instant::now() + window);
                }
                gathered.batch.push(record);
            } else {
                gathered.passed += 1;
            }
        }
    }

    /// Matching records in the batch.
    pub fn matching(&self) -> usize {
        self.gathered.as_ref().map_or(0, |g| g.batch.len())
    }

    /// Whether every record read has been examined.
    pub fn examined(&self) -> bool {
        self.pending.is_empty()
    }

    /// Whether nothing read is unsettled.
    pub fn is_empty(&self) -> bool {
        self.gathered.is_none() && self.pending.is_empty()
    }

    /// The dropped records read since the last checkpoint, when no matching
    /// record is ahead of them: nothing waits on them, so they are settled
    /// as soon as they are read and a stream where nothing matches holds no
    /// record (its checkpoint follows the reads).
    pub fn take_passed(&mut self) -> Option<(u64, SequenceNumber)> {
        if self.matching() > 0 {
            return None;
        }
        let gathered = self.gathered.take()?;
        Some((gathered.passed, gathered.last?))
    }

    /// The batch, to settle; the next one starts empty.
    pub fn take(&mut self) -> Option<Gathered> {
        self.window_ends = None;
        self.gathered.take()
    }
}
