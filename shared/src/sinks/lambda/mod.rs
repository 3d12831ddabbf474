//! Delivering one shard's records to a function exactly as a Kinesis event
//! source mapping does: batches of `BatchSize` under Lambda's 6 MB payload,
//! retries up to `MaximumRetryAttempts`, `BisectBatchOnFunctionError`
//! (halving does not consume retries), `ReportBatchItemFailures` partial
//! responses, `MaximumRecordAgeInSeconds`, `ParallelizationFactor` lanes
//! that keep each partition key's order, and an on-failure destination that
//! gets the mapping's invocation record.
//!
//! Throttling and service errors of the invoke call itself are retried with
//! backoff and never count as function errors, as the mapping does.

pub mod ahead;
pub mod gaps;
pub mod invoker;
pub mod options;
pub mod window;

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::model::counters::Counters;
use crate::model::event::EventSource;
use crate::model::record::{ArrivalTime, Record};
use crate::model::seqno::Position;
use crate::pipeline::batch::{Batch, CutBatch, next_batch};
use crate::request::RequestError;
use crate::sinks::dlq::{
    DestinationError, FailedBatch, FailureCondition, FailureDestination, FailureRecord,
    KinesisBatchInfo,
};
use ahead::Ahead;
use gaps::EngineGaps;
use invoker::{Invocation, InvokeError, Invoker};
use options::MappingOptions;

/// A delivery that can't go on.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Invoke(#[from] InvokeError),
    /// The message is the whole story: the field and what it accepts.
    #[error("invalid mapping options: {}: {}", .0.field, .0.message)]
    Options(RequestError),
    #[error(transparent)]
    Destination(#[from] DestinationError),
}

/// What happened to a shard's records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryReport {
    #[serde(flatten)]
    pub counters: Counters,
    /// Where each failed batch went.
    pub failure_locations: Vec<String>,
}

/// What the function said of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Success,
    /// Records before this index are done; retry from it.
    PartialFrom(usize),
    Failure,
}

/// Reads a response as the mapping does with `ReportBatchItemFailures`: an
/// empty or absent list is success; an identifier that is missing, empty,
/// or not a sequence number of the batch fails the whole batch; otherwise
/// the lowest reported record is where the retry starts.
fn judge_response(invocation: &Invocation, batch: &[&Record], reports: bool) -> Verdict {
    if invocation.function_error.is_some() {
        return Verdict::Failure;
    }
    if !reports {
        return Verdict::Success;
    }
    let text = String::from_utf8_lossy(&invocation.payload);
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed == "null" {
        return Verdict::Success;
    }
    let Ok(value) = serde_json::from_str::<serde_json::Value>(trimmed) else {
        return Verdict::Failure;
    };
    let failures = match value.get("batchItemFailures") {
        None | Some(serde_json::Value::Null) => return Verdict::Success,
        Some(serde_json::Value::Array(items)) if items.is_empty() => return Verdict::Success,
        Some(serde_json::Value::Array(items)) => items,
        Some(_) => return Verdict::Failure,
    };
    let mut lowest: Option<usize> = None;
    for item in failures {
        let Some(id) = item
            .get("itemIdentifier")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
        else {
            return Verdict::Failure;
        };
        let Some(index) = batch.iter().position(|r| r.sequence_number.as_str() == id) else {
            return Verdict::Failure;
        };
        lowest = Some(lowest.map_or(index, |l| l.min(index)));
    }
    match lowest {
        Some(index) => Verdict::PartialFrom(index),
        None => Verdict::Success,
    }
}

/// Delivers one shard's records (in sequence order) to the function.
pub struct Delivery<'a, I, D> {
    pub invoker: &'a I,
    pub destination: &'a D,
    pub source: &'a EventSource,
    pub options: &'a MappingOptions,
    /// "Now" for record age, and the on-failure record's timestamp.
    pub now: fn() -> ArrivalTime,
    /// First backoff after a throttled or failed invoke call.
    pub base_backoff: Duration,
}

/// Where each lane of a piece stopped early (at the stop time, or on an
/// error): its first record not settled, `None` for a lane whose records
/// are all settled. Lanes don't wait for each other, so a lane may have
/// settled records past another lane's stop. No lanes: all settled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaneStops(pub Vec<Option<Unsettled>>);

impl LaneStops {
    /// One lane that stopped at `at` (`None`: it did not).
    pub fn one(at: Option<Unsettled>) -> Self {
        Self(vec![at])
    }

    /// The first record not settled, the lowest over the lanes: every
    /// record before it is settled.
    pub fn first_unsettled(&self) -> Option<&Unsettled> {
        self.0.iter().flatten().min()
    }

    /// Whether `record`, of `lane`, is settled: its lane got past it.
    pub fn settled(&self, lane: usize, record: &Record) -> bool {
        (self.0.get(lane)).is_none_or(|stop| {
            stop.as_ref()
                .is_none_or(|stop| Position::of(record) < *stop)
        })
    }
}

/// How a piece's delivery ended.
#[derive(Debug, Default)]
pub struct PieceEnd {
    pub report: DeliveryReport,
    pub stops: LaneStops,
    /// Why a lane stopped early, when one failed: what the lanes settled
    /// before is in the rest, and the error is the piece's outcome.
    pub error: Option<DeliveryError>,
}

/// How one lane of a piece ended.
#[derive(Debug, Default)]
struct LaneEnd {
    report: DeliveryReport,
    /// Its first record not settled (`None`: all settled).
    stopped: Option<Unsettled>,
    error: Option<DeliveryError>,
}

/// Where a delivery stopped at its deadline: the position of the first
/// record it had not settled. Everything before it in the
/// shard is settled; it and everything after must be delivered again.
pub type Unsettled = crate::model::seqno::Position;

impl<I: Invoker, D: FailureDestination> Delivery<'_, I, D> {
    /// Delivers every record, lanes in parallel, each lane in order.
    pub async fn deliver(&self, records: Vec<Record>) -> Result<DeliveryReport, DeliveryError> {
        Ok(self.deliver_until(records, None).await?.0)
    }

    /// Delivers records until `stop_at`: no invoke starts after it, so a
    /// caller with a deadline (a Lambda step) is never cut off mid-batch by
    /// retries it can't bound (`MaximumRetryAttempts` -1, a slow target).
    /// Returns what happened and, when it stopped early, the first record
    /// not settled (the lowest over the lanes).
    pub async fn deliver_until(
        &self,
        records: Vec<Record>,
        stop_at: Option<tokio::time::Instant>,
    ) -> Result<(DeliveryReport, Option<Unsettled>), DeliveryError> {
        let gaps = Mutex::new(EngineGaps::default());
        self.deliver_timed(&records, stop_at, &gaps).await
    }

    /// [`Delivery::deliver_until`] over borrowed records (a piece of a page
    /// is delivered without copying it), timing the engine's own work
    /// between invokes into `gaps`.
    pub async fn deliver_timed(
        &self,
        records: &[Record],
        stop_at: Option<tokio::time::Instant>,
        gaps: &Mutex<EngineGaps>,
    ) -> Result<(DeliveryReport, Option<Unsettled>), DeliveryError> {
        let end = self.deliver_ahead(records, None, stop_at, gaps).await?;
        match end.error {
            Some(error) => Err(error),
            None => Ok((end.report, end.stops.first_unsettled().cloned())),
        }
    }

    /// [`Delivery::deliver_timed`] with `ahead`, the piece as
    /// [`Delivery::cut_ahead`] made it ready while the previous piece was
    /// out: used if it was made from `records`, else they are sorted and
    /// cut now. It fails (`Err`) only before any invoke; a lane that fails
    /// later stops the others at their next batch, and the end says what
    /// they settled before it ([`PieceEnd::error`]). A dropped record is
    /// settled where its lane is: counted now if its lane got past it, else
    /// when it comes again.
    pub async fn deliver_ahead(
        &self,
        records: &[Record],
        ahead: Option<Ahead>,
        stop_at: Option<tokio::time::Instant>,
        gaps: &Mutex<EngineGaps>,
    ) -> Result<PieceEnd, DeliveryError> {
        let (sorted, first) = match ahead.filter(|ahead| ahead.is_for(records)) {
            Some(ahead) => ahead.into_parts(),
            None => {
                let sorted = self.sort(records)?;
                let first = vec![None; sorted.lanes.len()];
                (sorted, first)
            }
        };
        let halt = AtomicBool::new(false);
        let ends = futures_util::future::join_all(
            sorted
                .queues(records)
                .into_iter()
                .zip(first)
                .enumerate()
                .map(|(lane, (q, first))| {
                    let clock = Clock { gaps, lane };
                    self.deliver_lane(q, first, clock, stop_at, &halt)
                }),
        )
        .await;
        let mut end = PieceEnd::default();
        for lane in ends {
            end.report.counters += lane.report.counters;
            (end.report.failure_locations).extend(lane.report.failure_locations);
            end.error = end.error.or(lane.error);
            end.stops.0.push(lane.stopped);
        }
        end.report.counters.filtered = match end.stops.first_unsettled() {
            None => sorted.filtered.len(),
            // Only a stop costs a look at each dropped record's lane.
            Some(_) => (sorted.filtered.iter())
                .map(|&i| &records[i as usize])
                .filter(|r| end.stops.settled(self.options.lane(r), r))
                .count(),
        } as u64;
        Ok(end)
    }

    /// One lane's records in order; `first` is their first batch when it
    /// was cut ahead (from these very records). It starts no batch once
    /// `halt` is set, and sets it when a batch fails: that batch and every
    /// later one stay unsettled, uncounted.
    async fn deliver_lane<'r>(
        &self,
        mut queue: VecDeque<&'r Record>,
        first: Option<CutBatch>,
        clock: Clock<'_>,
        stop_at: Option<tokio::time::Instant>,
        halt: &AtomicBool,
    ) -> LaneEnd {
        let mut end = LaneEnd::default();
        let cut = |queue: &mut VecDeque<&'r Record>| {
            (!queue.is_empty()).then(|| next_batch(queue, self.options.batch_size, self.source))
        };
        let mut next = match first.and_then(|first| first.attach(&mut queue)) {
            Some(batch) => Some(batch),
            None => cut(&mut queue),
        };
        while let Some(batch) = next.take() {
            let first = Position::of(batch.records()[0]);
            if halt.load(Ordering::Relaxed) {
                end.stopped = Some(first);
                return end;
            }
            // What the batch counts is undone if it fails part way: it is
            // delivered again, whole, and counted then.
            let (counters, locations) = (end.report.counters, end.report.failure_locations.len());
            // The next batch is cut and written while this one's invoke is
            // out (the first poll sends it), not between its answer and the
            // next invoke: writing a batch grows with its size, waiting for
            // an answer doesn't need the CPU. Cutting judges nothing, so a
            // stop leaves the cut batch unsettled after this one.
            let (stopped, following) = futures_util::future::join(
                self.deliver_batch(
                    batch,
                    0,
                    clock,
                    stop_at,
                    &mut end.report,
                    &mut window::Stateless,
                ),
                async {
                    // Once more after the invoke's first poll, so it is on
                    // its way before the CPU goes to the next batch.
                    tokio::task::yield_now().await;
                    cut(&mut queue)
                },
            )
            .await;
            next = following;
            match stopped {
                Ok(None) => {}
                Ok(Some(stopped)) => {
                    end.stopped = Some(stopped);
                    return end;
                }
                Err(error) => {
                    halt.store(true, Ordering::Relaxed);
                    end.report.counters = counters;
                    end.report.failure_locations.truncate(locations);
                    end.stopped = Some(first);
                    end.error = Some(error);
                    return end;
                }
            }
        }
        end
    }

    /// One batch until it succeeds or goes to the destination. Bisecting
    /// handles each half the same way, with the retries already used. At
    /// `stop_at` it returns the first record it has not settled: the rest
    /// of the batch, and the halves still pending, come after it. `hook`
    /// builds each payload and has the last word on each response (a
    /// tumbling window's state).
    async fn deliver_batch(
        &self,
        batch: Batch<'_>,
        retries: i64,
        clock: Clock<'_>,
        stop_at: Option<tokio::time::Instant>,
        report: &mut DeliveryReport,
        hook: &mut impl window::BatchHook,
    ) -> Result<Option<Unsettled>, DeliveryError> {
        let mut pending = vec![(batch, retries)];
        while let Some((mut batch, mut retries)) = pending.pop() {
            loop {
                if batch.is_empty() {
                    break;
                }
                if stop_at.is_some_and(|at| tokio::time::Instant::now() >= at) {
                    let first = batch.records()[0];
                    return Ok(Some(crate::model::seqno::Position::of(first)));
                }
                // Record age is judged per record, as the mapping does:
                // expired records leave the batch for the destination
                // (its batchSize counts only them) and the function still
                // gets the fresh ones. In shard order: expired records at
                // the front go now; a fresh run before later expired ones
                // is invoked first, so everything before the first
                // unsettled record is always settled.
                let expired = batch
                    .records()
                    .iter()
                    .take_while(|r| self.expired(r))
                    .count();
                if expired > 0 {
                    let old = batch.slice(0..expired);
                    self.fail(
                        &old,
                        FailureCondition::RecordAgeExceeded,
                        None,
                        retries as u64,
                        report,
                    )
                    .await?;
                    batch = batch.slice(expired..batch.len());
                    continue;
                }
                if let Some(cut) = batch.records().iter().position(|r| self.expired(r)) {
                    pending.push((batch.slice(cut..batch.len()), retries));
                    batch = batch.slice(0..cut);
                }
                let payload = || hook.payload(&batch, self.source);
                let invocation = self
                    .invoke(&payload, batch.records(), clock, stop_at, report)
                    .await?;
                let Some(invocation) = invocation else {
                    // Throttled until the stop time or the record age
                    // limit: the two checks above settle it.
                    continue;
                };
                let verdict = judge_response(
                    &invocation,
                    batch.records(),
                    self.options.reports_item_failures(),
                );
                match hook.judge(verdict, &invocation) {
                    Verdict::Success => {
                        report.counters.delivered += batch.len() as u64;
                        break;
                    }
                    Verdict::PartialFrom(index) => {
                        report.counters.delivered += index as u64;
                        batch = batch.slice(index..batch.len());
                    }
                    Verdict::Failure => {
                        report.counters.function_errors += 1;
                        if self.options.bisect_batch_on_function_error && batch.len() > 1 {
                            // Halving doesn't consume the retry quota. The
                            // second half waits until the first is settled,
                            // keeping the shard's order.
                            let half = batch.len() / 2;
                            pending.push((batch.slice(half..batch.len()), retries));
                            pending.push((batch.slice(0..half), retries));
                            break;
                        }
                    }
                }
                retries += 1;
                if self.options.retries_exhausted(retries) {
                    let condition = FailureCondition::RetryAttemptsExhausted;
                    self.fail(&batch, condition, Some(&invocation), retries as u64, report)
                        .await?;
                    break;
                }
            }
        }
        Ok(None)
    }

    /// Older than `MaximumRecordAgeInSeconds`, measured from the record's
    /// original arrival to the millisecond.
    fn expired(&self, record: &Record) -> bool {
        let max = self.options.maximum_record_age_in_seconds;
        max >= 0
            && (self.now)().epoch_millis() - record.approximate_arrival_timestamp.epoch_millis()
                > max * 1000
    }

    /// `payload` builds the invocation's payload. `None`: throttled or
    /// failed calls lasted until the stop time or the record age limit,
    /// which the caller's checks then settle.
    async fn invoke(
        &self,
        payload: &(dyn Fn() -> Vec<u8> + Sync),
        records: &[&Record],
        clock: Clock<'_>,
        stop_at: Option<tokio::time::Instant>,
        report: &mut DeliveryReport,
    ) -> Result<Option<Invocation>, DeliveryError> {
        let give_up = || {
            stop_at.is_some_and(|at| tokio::time::Instant::now() >= at)
                || records.iter().any(|r| self.expired(r))
        };
        // A backoff is the service's time, not the engine's: after a failed
        // call the next gap is not measured.
        let calls = invoker::Calls {
            sent: &|| clock.request(),
            answered: &|ok| clock.answered(ok),
        };
        let invocation = invoker::invoke_retrying(
            self.invoker,
            payload,
            self.base_backoff,
            stop_at,
            give_up,
            calls,
        )
        .await?;
        // Calls that never reached the function are not invocations.
        if invocation.is_some() {
            report.counters.invocations += 1;
        }
        Ok(invocation)
    }

    async fn fail(
        &self,
        batch: &Batch<'_>,
        condition: FailureCondition,
        last: Option<&Invocation>,
        invokes: u64,
        report: &mut DeliveryReport,
    ) -> Result<(), DeliveryError> {
        let failed = FailedBatch {
            condition,
            function_arn: self.invoker.function_arn(),
            last,
            invokes,
            now: (self.now)(),
        };
        let payload = self
            .destination
            .wants_payload()
            .then(|| String::from_utf8(batch.payload()).expect("JSON is UTF-8"));
        let info = KinesisBatchInfo::of(batch.records(), &self.source.stream_arn);
        let record = FailureRecord::for_batch(failed, info, payload);
        let location = self.destination.send(record).await?;
        debug!(%location, records = batch.len(), ?condition, "batch sent to the on-failure destination");
        report.counters.failed_batches += 1;
        report.counters.failed_records += batch.len() as u64;
        report.failure_locations.push(location);
        Ok(())
    }
}

/// One lane's view of the step's [`EngineGaps`].
#[derive(Clone, Copy)]
struct Clock<'g> {
    gaps: &'g Mutex<EngineGaps>,
    lane: usize,
}

impl Clock<'_> {
    fn request(self) {
        self.gaps.lock().expect("not poisoned").request(self.lane);
    }

    fn answered(self, ok: bool) {
        let mut gaps = self.gaps.lock().expect("not poisoned");
        if ok {
            gaps.answer(self.lane);
        } else {
            gaps.forget(self.lane);
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod batching_tests;
