//! Delivery under `TumblingWindowInSeconds`, as the Lambda developer
//! guide's "Time windows" section for Kinesis describes it
//! (<https://docs.aws.amazon.com/lambda/latest/dg/services-kinesis-windows.html>):
//!
//! - a batch holds the records of one window only (its event names one
//!   `window`), cut as usual by `BatchSize` and the 6 MB payload, the
//!   window fields and the state counted in;
//! - each invocation gets the state the function last returned for the
//!   shard and window (`{}` at the window's start) and must return a
//!   `state`: a response without one is a failed invocation, retried,
//!   bisected and sent to the destination like any function error, with the
//!   state as it was before the batch. A batch that succeeds, wholly or in
//!   part (`ReportBatchItemFailures`), sets the state: the records it
//!   acknowledged are in it, the ones it reported are retried with it;
//! - when the shard's next record is in a later window (or the shard's
//!   records end), the window gets its final invoke: no records
//!   (`"Records": []`), its state, `isFinalInvokeForWindow: true`. "If
//!   invocation is unsuccessful, your Lambda function suspends further
//!   processing until a successful invocation": it is retried, with
//!   backoff, until it succeeds (or the step's stop time comes);
//! - a state over 1 MB terminates the window early: a final invoke with
//!   that state and `isWindowTerminatedEarly: true`, then the window goes
//!   on with a fresh state.
//!
//! The records of a shard go through one lane (`ParallelizationFactor` 1,
//! which [`super::options::MappingOptions::validate`] requires with a
//! window), in order.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::time::Instant;
use tracing::{info, warn};

use super::gaps::EngineGaps;
use super::invoker::{Invocation, Invoker};
use super::{Clock, Delivery, DeliveryError, DeliveryReport, Unsettled, Verdict};
use crate::model::event::{self, EventSource};
use crate::model::record::Record;
use crate::model::seqno::Position;
use crate::model::tumbling::{
    self, MAX_STATE_BYTES, OpenWindow, TumblingWindow, WindowFields, returned_state, state_len,
};
use crate::pipeline::batch::{Batch, MAX_PAYLOAD_BYTES, next_batch};
use crate::sinks::dlq::FailureDestination;

/// What a batch's invocations carry and what their answers mean, beyond
/// the plain mapping's: the seam between plain and windowed delivery.
pub(super) trait BatchHook: Send + Sync {
    fn payload(&self, batch: &Batch<'_>, source: &EventSource) -> Vec<u8>;
    /// The final word on a response the mapping's rules judged `verdict`.
    fn judge(&mut self, verdict: Verdict, invocation: &Invocation) -> Verdict;
}

/// The plain mapping: the event alone, the verdict as judged.
pub(super) struct Stateless;

impl BatchHook for Stateless {
    fn payload(&self, batch: &Batch<'_>, _source: &EventSource) -> Vec<u8> {
        batch.payload()
    }

    fn judge(&mut self, verdict: Verdict, _invocation: &Invocation) -> Verdict {
        verdict
    }
}

/// A window's aggregating invocations: the state goes out with each batch
/// and comes back with each answer.
struct Aggregating<'w> {
    window: &'w mut OpenWindow,
    seconds: u32,
}

impl BatchHook for Aggregating<'_> {
    fn payload(&self, batch: &Batch<'_>, source: &EventSource) -> Vec<u8> {
        let fields = WindowFields::new(self.window, self.seconds, source, false, false);
        tumbling::with_fields(batch.payload(), &fields)
    }

    fn judge(&mut self, verdict: Verdict, invocation: &Invocation) -> Verdict {
        if verdict == Verdict::Failure {
            return verdict;
        }
        match returned_state(&invocation.payload) {
            Some(state) => {
                self.window.state = state;
                self.window.restarted = false;
                verdict
            }
            None => {
                warn!(
                    shard = %self.window.shard_id,
                    "the response has no state: a failed invocation under a tumbling window"
                );
                Verdict::Failure
            }
        }
    }
}

impl<I: Invoker, D: FailureDestination> Delivery<'_, I, D> {
    /// Delivers one shard's records (in order) under the request's tumbling
    /// window, `open` being where the shard's window stood before them; it
    /// is left where it stands after the records settled. At `stop_at` it
    /// returns the first record it has not settled. Invokes are timed into
    /// `gaps` (one lane).
    pub async fn deliver_windowed(
        &self,
        records: &[Record],
        open: &mut Option<OpenWindow>,
        stop_at: Option<Instant>,
        gaps: &Mutex<EngineGaps>,
    ) -> Result<(DeliveryReport, Option<Unsettled>), DeliveryError> {
        let clock = Clock { gaps, lane: 0 };
        let seconds = self.options.tumbling_window_in_seconds.max(1);
        let filters = self.options.filters().map_err(DeliveryError::Options)?;
        let mut report = DeliveryReport::default();
        let mut queue = VecDeque::with_capacity(records.len());
        for record in records {
            if filters.matches(record) {
                queue.push_back(record);
            } else {
                report.counters.filtered += 1;
            }
        }
        while let Some(front) = queue.front() {
            let unsettled = Position::of(front);
            if stop_at.is_some_and(|at| Instant::now() >= at) {
                return Ok((report, Some(unsettled)));
            }
            let start = TumblingWindow::of(front.approximate_arrival_timestamp, seconds).start;
            // Arrival times of one shard only grow, but a record stamped
            // before the open window's start (clock skew) still belongs to
            // the open window: windows never reopen.
            let later = open
                .as_ref()
                .is_some_and(|w| w.shard_id != front.shard_id || start > w.start);
            if later && !self.close_window(open, stop_at, gaps, &mut report).await? {
                return Ok((report, Some(unsettled)));
            }
            if open.as_ref().is_some_and(|w| w.terminated_early)
                && !self
                    .terminate_early(open, stop_at, clock, &mut report)
                    .await?
            {
                return Ok((report, Some(unsettled)));
            }
            let window = open.get_or_insert_with(|| OpenWindow::new(&front.shard_id, start));
            let batch = self.window_batch(&mut queue, window, seconds);
            let mut hook = Aggregating { window, seconds };
            let stopped = self
                .deliver_batch(batch, 0, clock, stop_at, &mut report, &mut hook)
                .await?;
            if let Some(stopped) = stopped {
                return Ok((report, Some(stopped)));
            }
            if state_len(&hook.window.state) > MAX_STATE_BYTES {
                hook.window.terminated_early = true;
            }
        }
        if open.as_ref().is_some_and(|w| w.terminated_early) {
            // The batch that outgrew the limit is settled; its early final
            // invoke is owed, and the next step owes it if this one can't.
            self.terminate_early(open, stop_at, clock, &mut report)
                .await?;
        }
        Ok((report, None))
    }

    /// Ends the shard's open window with its final invoke (the shard's
    /// records ended, or the next one is in a later window); `false` when
    /// `stop_at` came first (the window stays open, its final invoke owed).
    pub async fn close_window(
        &self,
        open: &mut Option<OpenWindow>,
        stop_at: Option<Instant>,
        gaps: &Mutex<EngineGaps>,
        report: &mut DeliveryReport,
    ) -> Result<bool, DeliveryError> {
        let clock = Clock { gaps, lane: 0 };
        let Some(window) = open.as_ref() else {
            return Ok(true);
        };
        if window.terminated_early && !self.terminate_early(open, stop_at, clock, report).await? {
            return Ok(false);
        }
        let window = open.as_ref().expect("still open");
        // Terminated early with nothing aggregated since: the early final
        // invoke was the window's last word.
        if !window.restarted
            && !self
                .final_invoke(window, false, stop_at, clock, report)
                .await?
        {
            return Ok(false);
        }
        *open = None;
        Ok(true)
    }

    /// The early final invoke of a window whose state outgrew the limit;
    /// the window goes on with a fresh state.
    async fn terminate_early(
        &self,
        open: &mut Option<OpenWindow>,
        stop_at: Option<Instant>,
        clock: Clock<'_>,
        report: &mut DeliveryReport,
    ) -> Result<bool, DeliveryError> {
        let window = open.as_mut().expect("an open window");
        info!(
            shard = %window.shard_id,
            state_bytes = state_len(&window.state),
            "the window's state is over 1 MB: terminating the window early"
        );
        if !self
            .final_invoke(window, true, stop_at, clock, report)
            .await?
        {
            return Ok(false);
        }
        window.state.clear();
        window.terminated_early = false;
        window.restarted = true;
        Ok(true)
    }

    /// A final invoke, retried until the function takes it.
    async fn final_invoke(
        &self,
        window: &OpenWindow,
        early: bool,
        stop_at: Option<Instant>,
        clock: Clock<'_>,
        report: &mut DeliveryReport,
    ) -> Result<bool, DeliveryError> {
        let seconds = self.options.tumbling_window_in_seconds.max(1);
        let fields = WindowFields::new(window, seconds, self.source, true, early);
        let payload = tumbling::payload(&[], self.source, &fields);
        let mut failures = 0u32;
        loop {
            if stop_at.is_some_and(|at| Instant::now() >= at) {
                return Ok(false);
            }
            // No records, so no record age: only the stop time ends the
            // throttle retries, as the check above would.
            let Some(invocation) = self
                .invoke(&|| payload.clone(), &[], clock, stop_at, report)
                .await?
            else {
                return Ok(false);
            };
            if invocation.function_error.is_none() {
                return Ok(true);
            }
            report.counters.function_errors += 1;
            failures += 1;
            warn!(
                shard = %window.shard_id,
                failures,
                function_error = invocation.function_error.as_deref(),
                "the window's final invoke failed; processing of the shard waits for it"
            );
            tokio::time::sleep(crate::backoff::backoff(self.base_backoff, failures.min(8))).await;
        }
    }

    /// The next batch of `window`: records of that window only, under the
    /// payload limit with the window fields and the state counted in.
    fn window_batch<'r>(
        &self,
        queue: &mut VecDeque<&'r Record>,
        window: &OpenWindow,
        seconds: u32,
    ) -> Batch<'r> {
        let in_window = queue
            .iter()
            .take(self.options.batch_size)
            .take_while(|r| {
                TumblingWindow::of(r.approximate_arrival_timestamp, seconds).start <= window.start
            })
            .count()
            .max(1);
        let batch = next_batch(queue, in_window, self.source);
        let fields = WindowFields::new(window, seconds, self.source, false, false).payload_len();
        let (mut keep, mut bytes) = (batch.len(), batch.payload_len() + fields);
        while keep > 1 && bytes >= MAX_PAYLOAD_BYTES {
            keep -= 1;
            bytes -= event::record_payload_len(batch.records()[keep], self.source) + 1;
        }
        if keep == batch.len() {
            return batch;
        }
        for &record in batch.records()[keep..].iter().rev() {
            queue.push_front(record);
        }
        batch.slice(0..keep)
    }
}

#[cfg(test)]
pub(crate) mod tests;
