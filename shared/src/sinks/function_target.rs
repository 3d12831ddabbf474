//! The function target: records to a function exactly as the event source
//! mapping delivers them ([`Delivery`]), failed batches to the DLQ.

use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use crate::model::event::EventSource;
use crate::model::record::{ArrivalTime, Record};
use crate::sinks::dlq::FailureDestination;
use crate::sinks::lambda::Delivery;
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
}

impl<I: Invoker, D: FailureDestination> Target for FunctionTarget<I, D> {
    /// A batch per lane.
    fn piece(&self) -> usize {
        (self.options.batch_size * self.options.parallelization_factor).max(1)
    }

    fn settle(
        &self,
        piece: Vec<Record>,
        stop_at: Instant,
    ) -> BoxFuture<'_, Result<Settled, TargetError>> {
        Box::pin(async move {
            let delivery = Delivery {
                invoker: &self.invoker,
                destination: &self.destination,
                source: &self.source,
                options: &self.options,
                now: self.now,
                base_backoff: self.base_backoff,
            };
            let (report, unsettled) = delivery.deliver_until(piece, Some(stop_at)).await?;
            Ok(Settled { report, unsettled })
        })
    }
}
