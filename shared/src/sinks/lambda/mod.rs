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

pub mod invoker;
pub mod options;

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::model::counters::Counters;
use crate::model::event::{self, EventSource};
use crate::model::record::{ArrivalTime, Record};
use crate::pipeline::batch::{lane_of, next_batch};
use crate::request::RequestError;
use crate::sinks::dlq::{
    DestinationError, FailedBatch, FailureCondition, FailureDestination, FailureRecord,
    KinesisBatchInfo,
};
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
fn judge_response(invocation: &Invocation, batch: &[Record], reports: bool) -> Verdict {
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
        let filters = self.options.filters().map_err(DeliveryError::Options)?;
        let lanes = self.options.parallelization_factor.max(1);
        let mut queues: Vec<VecDeque<Record>> = vec![VecDeque::new(); lanes];
        let mut report = DeliveryReport::default();
        for record in records {
            if filters.matches(&record) {
                queues[lane_of(&record.partition_key, lanes)].push_back(record);
            } else {
                report.counters.filtered += 1;
            }
        }
        let results = futures_util::future::join_all(
            queues.into_iter().map(|q| self.deliver_lane(q, stop_at)),
        )
        .await;
        let mut unsettled: Option<Unsettled> = None;
        for result in results {
            let (lane, stopped) = result?;
            report.counters += lane.counters;
            report.failure_locations.extend(lane.failure_locations);
            if let Some(position) = stopped {
                unsettled = Some(match unsettled {
                    Some(lowest) => lowest.min(position),
                    None => position,
                });
            }
        }
        Ok((report, unsettled))
    }

    async fn deliver_lane(
        &self,
        mut queue: VecDeque<Record>,
        stop_at: Option<tokio::time::Instant>,
    ) -> Result<(DeliveryReport, Option<Unsettled>), DeliveryError> {
        let mut report = DeliveryReport::default();
        while !queue.is_empty() {
            let batch = next_batch(&mut queue, self.options.batch_size, self.source);
            if let Some(stopped) = self.deliver_batch(batch, 0, stop_at, &mut report).await? {
                return Ok((report, Some(stopped)));
            }
        }
        Ok((report, None))
    }

    /// One batch until it succeeds or goes to the destination. Bisecting
    /// handles each half the same way, with the retries already used. At
    /// `stop_at` it returns the first record it has not settled: the rest
    /// of the batch, and the halves still pending, come after it.
    async fn deliver_batch(
        &self,
        batch: Vec<Record>,
        retries: i64,
        stop_at: Option<tokio::time::Instant>,
        report: &mut DeliveryReport,
    ) -> Result<Option<Unsettled>, DeliveryError> {
        let mut pending = vec![(batch, retries)];
        while let Some((mut batch, mut retries)) = pending.pop() {
            loop {
                if batch.is_empty() {
                    break;
                }
                if stop_at.is_some_and(|at| tokio::time::Instant::now() >= at) {
                    let first = &batch[0];
                    return Ok(Some(crate::model::seqno::Position::of(first)));
                }
                if self.too_old(&batch) {
                    self.fail(
                        &batch,
                        FailureCondition::RecordAgeExceeded,
                        None,
                        retries as u64,
                        report,
                    )
                    .await?;
                    break;
                }
                let Some(invocation) = self.invoke(&batch, stop_at, report).await? else {
                    // The two checks above give up on it.
                    continue;
                };
                match judge_response(&invocation, &batch, self.options.reports_item_failures()) {
                    Verdict::Success => {
                        report.counters.delivered += batch.len() as u64;
                        break;
                    }
                    Verdict::PartialFrom(index) => {
                        report.counters.delivered += index as u64;
                        batch.drain(..index);
                    }
                    Verdict::Failure => {
                        report.counters.function_errors += 1;
                        if self.options.bisect_batch_on_function_error && batch.len() > 1 {
                            // Halving doesn't consume the retry quota. The
                            // second half waits until the first is settled,
                            // keeping the shard's order.
                            let second = batch.split_off(batch.len() / 2);
                            pending.push((second, retries));
                            pending.push((batch, retries));
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

    fn too_old(&self, batch: &[Record]) -> bool {
        let max = self.options.maximum_record_age_in_seconds;
        max >= 0
            && batch.first().is_some_and(|r| {
                (self.now)().epoch_millis() - r.approximate_arrival_timestamp.epoch_millis()
                    > max * 1000
            })
    }

    /// `None`: throttled or failed calls lasted until the stop time or the
    /// record age limit, which the caller's checks then settle.
    async fn invoke(
        &self,
        batch: &[Record],
        stop_at: Option<tokio::time::Instant>,
        report: &mut DeliveryReport,
    ) -> Result<Option<Invocation>, DeliveryError> {
        let payload = event::payload(&event::kinesis_event(batch, self.source));
        let give_up =
            || stop_at.is_some_and(|at| tokio::time::Instant::now() >= at) || self.too_old(batch);
        let invocation =
            invoker::invoke_retrying(self.invoker, &payload, self.base_backoff, stop_at, give_up)
                .await?;
        // Calls that never reached the function are not invocations.
        if invocation.is_some() {
            report.counters.invocations += 1;
        }
        Ok(invocation)
    }

    async fn fail(
        &self,
        batch: &[Record],
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
        let payload = self.destination.wants_payload().then(|| {
            String::from_utf8(event::payload(&event::kinesis_event(batch, self.source)))
                .expect("JSON is UTF-8")
        });
        let info = KinesisBatchInfo::of(batch, &self.source.stream_arn);
        let record = FailureRecord::for_batch(failed, info, payload);
        let location = self.destination.send(record).await?;
        debug!(%location, records = batch.len(), ?condition, "batch sent to the on-failure destination");
        report.counters.failed_batches += 1;
        report.counters.failed_records += batch.len() as u64;
        report.failure_locations.push(location);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
