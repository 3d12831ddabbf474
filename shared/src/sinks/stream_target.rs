//! The stream target: records back onto a stream ([`reinject`]), those the
//! filters keep.

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use crate::model::counters::Counters;
use crate::model::record::Record;
use crate::pipeline::filter::Filters;
use crate::sinks::kinesis::{MAX_ENTRIES, RecordSink, ReinjectOptions, reinject};
use crate::sinks::lambda::DeliveryReport;
use crate::sinks::{LaneStops, Settled, Target, TargetError};

/// Re-injection onto one stream.
pub struct StreamTarget<S> {
    pub sink: S,
    pub options: ReinjectOptions,
    pub filters: Filters,
}

impl<S: RecordSink> Target for StreamTarget<S> {
    /// One PutRecords call's worth: a stream has no batches of its own.
    fn piece(&self) -> usize {
        MAX_ENTRIES
    }

    fn settle<'a>(
        &'a self,
        piece: &'a [Record],
        _stop_at: Instant,
    ) -> BoxFuture<'a, Result<Settled, TargetError>> {
        Box::pin(async move {
            let total = piece.len();
            let matched: Vec<Record> = piece
                .iter()
                .filter(|r| self.filters.matches(r))
                .cloned()
                .collect();
            let filtered = (total - matched.len()) as u64;
            let report = reinject(&self.sink, matched, &self.options).await?;
            Ok(Settled {
                report: DeliveryReport {
                    counters: Counters {
                        delivered: report.put,
                        filtered,
                        invocations: report.calls,
                        ..Counters::default()
                    },
                    ..DeliveryReport::default()
                },
                stops: LaneStops::default(),
                failed: None,
            })
        })
    }
}
