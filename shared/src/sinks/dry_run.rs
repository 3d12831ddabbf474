//! The dry-run target: every record read and filtered, nothing sent.

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use crate::model::counters::Counters;
use crate::model::record::Record;
use crate::pipeline::filter::Filters;
use crate::sinks::lambda::DeliveryReport;
use crate::sinks::{LaneStops, Settled, Target, TargetError};

/// Counts what the filters keep out, sends nothing.
pub struct DryRun {
    pub filters: Filters,
    /// The pieces of the target it stands in for.
    pub piece: usize,
}

impl Target for DryRun {
    fn piece(&self) -> usize {
        self.piece
    }

    fn settle<'a>(
        &'a self,
        piece: &'a [Record],
        _stop_at: Instant,
    ) -> BoxFuture<'a, Result<Settled, TargetError>> {
        let matched = piece.iter().filter(|r| self.filters.matches(r)).count() as u64;
        let report = DeliveryReport {
            counters: Counters {
                filtered: piece.len() as u64 - matched,
                ..Counters::default()
            },
            ..DeliveryReport::default()
        };
        Box::pin(async move {
            Ok(Settled {
                report,
                stops: LaneStops::default(),
                failed: None,
            })
        })
    }
}
