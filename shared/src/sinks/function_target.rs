//! The function target: records to a function exactly as the event source
//! mapping delivers them ([`Delivery`]), failed batches to the DLQ.

use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;
use tracing::info;

use crate::model::event::EventSource;
use crate::model::record::{ArrivalTime, Record};
use crate::pipeline::filter::Filters;
use crate::sinks::dlq::FailureDestination;
use crate::sinks::lambda::Delivery;
use crate::sinks::lambda::gaps::EngineGaps;
use crate::sinks::lambda::invoker::Invoker;
use crate::sinks::lambda::options::MappingOptions;
use crate::sinks::{Settled, Target, TargetError};

/// One function, with its DLQ, as a mapping with `options` would invoke it.
pub struct FunctionTarget<I, D> {
    pub invoker: I,
    pub destination: D,
    pub source: EventSource,
    pub options: MappingOptions,
    /// "Now" for record age, and the on-failure record's timestamp.
    pub now: fn() -> ArrivalTime,
    pub base_backoff: Duration,
    /// The engine's time between invokes over the target's life (a step),
    /// pieces and their checkpoints included; logged when it ends.
    pub gaps: Mutex<EngineGaps>,
}

impl<I: Invoker, D: FailureDestination> Target for FunctionTarget<I, D> {
    /// A batch per lane.
    fn piece(&self) -> usize {
        (self.options.batch_size * self.options.parallelization_factor).max(1)
    }

    /// Filled with records the filters keep, as the mapping fills a batch
    /// with matching records: the records it drops ride along uncounted.
    fn piece_end(&self, records: &[Record]) -> usize {
        match self.options.filters() {
            Ok(filters) if !filters.is_empty() => filled_end(&filters, records, self.piece()),
            // Bad filters are refused by settle, before any invoke.
            _ => self.piece().min(records.len()),
        }
    }

    fn settle<'a>(
        &'a self,
        piece: &'a [Record],
        stop_at: Instant,
    ) -> BoxFuture<'a, Result<Settled, TargetError>> {
        Box::pin(async move {
            let delivery = Delivery {
                invoker: &self.invoker,
                destination: &self.destination,
                source: &self.source,
                options: &self.options,
                now: self.now,
                base_backoff: self.base_backoff,
            };
            let (report, unsettled) = delivery
                .deliver_timed(piece, Some(stop_at), &self.gaps)
                .await?;
            Ok(Settled { report, unsettled })
        })
    }
}

/// Where the piece of `records` holding `matching` kept records ends: just
/// after its last kept record, or at the end.
pub fn filled_end(filters: &Filters, records: &[Record], matching: usize) -> usize {
    let mut kept = 0;
    for (i, record) in records.iter().enumerate() {
        if filters.matches(record) {
            kept += 1;
            if kept == matching {
                return i + 1;
            }
        }
    }
    records.len()
}

impl<I, D> Drop for FunctionTarget<I, D> {
    /// The step's figure, for benches and for anyone tuning a replay.
    fn drop(&mut self) {
        let gaps = self.gaps.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = gaps.summary() {
            info!(
                gaps = s.count,
                median_us = s.median.as_micros() as u64,
                p90_us = s.p90.as_micros() as u64,
                mean_us = s.mean.as_micros() as u64,
                max_us = s.max.as_micros() as u64,
                "engine time between invokes"
            );
        }
    }
}
