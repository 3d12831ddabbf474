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
use crate::sinks::lambda::ahead::Ahead;
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
    /// The next piece, made ready while the current one is out.
    pub ahead: Mutex<Option<Ahead>>,
}

impl<I, D> FunctionTarget<I, D> {
    /// Its records' delivery, as the mapping would make it.
    pub fn delivery(&self) -> Delivery<'_, I, D> {
        Delivery {
            invoker: &self.invoker,
            destination: &self.destination,
            source: &self.source,
            options: &self.options,
            now: self.now,
            base_backoff: self.base_backoff,
        }
    }
}

impl<I: Invoker, D: FailureDestination> Target for FunctionTarget<I, D> {
    fn piece(&self) -> usize {
        self.options.piece()
    }

    fn lane(&self, record: &Record) -> usize {
        self.options.lane(record)
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

    /// Each lane's first batch of `next` cut and written.
    fn prepare(&self, next: &[Record]) {
        let ahead = self.delivery().cut_ahead(next);
        *self.ahead.lock().expect("not poisoned") = ahead;
    }

    fn settle<'a>(
        &'a self,
        piece: &'a [Record],
        stop_at: Instant,
    ) -> BoxFuture<'a, Result<Settled, TargetError>> {
        // Taken now, before a prepare for the piece after this one can
        // replace it.
        let ahead = self.ahead.lock().expect("not poisoned").take();
        Box::pin(async move {
            let end = self
                .delivery()
                .deliver_ahead(piece, ahead, Some(stop_at), &self.gaps)
                .await?;
            Ok(Settled {
                report: end.report,
                stops: end.stops,
                failed: end.error.map(TargetError::from),
            })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::DeliveredEvent;
    use crate::model::event::tests::source;
    use crate::pipeline::filter::{FilterCriteria, FilterEntry};
    use crate::sinks::dlq::MemoryDlq;
    use crate::sinks::lambda::invoker::{Invocation, InvokeError};

    #[derive(Default)]
    struct Sizes(Mutex<Vec<usize>>);

    impl Invoker for Sizes {
        async fn invoke(&self, payload: Vec<u8>) -> Result<Invocation, InvokeError> {
            let records = DeliveredEvent::from_slice(&payload).unwrap().records;
            self.0.lock().unwrap().push(records.len());
            Ok(Invocation {
                status_code: 200,
                ..Invocation::default()
            })
        }

        fn function_arn(&self) -> &str {
            "arn:aws:lambda:eu-west-1:111122223333:function:consumer"
        }
    }

    fn target(filter: Option<&str>) -> FunctionTarget<Sizes, MemoryDlq> {
        FunctionTarget {
            invoker: Sizes::default(),
            destination: MemoryDlq::default(),
            source: source(),
            options: MappingOptions {
                batch_size: 4,
                filter_criteria: filter.map(|p| FilterCriteria {
                    filters: vec![FilterEntry { pattern: p.into() }],
                }),
                ..MappingOptions::default()
            },
            now: || ArrivalTime::from_epoch_millis(1_700_000_100_000),
            base_backoff: Duration::ZERO,
            gaps: Mutex::default(),
            ahead: Mutex::default(),
        }
    }

    /// Runs a page through `target` piece by piece, as the replay step
    /// does; returns the records each invoke held and the filtered count.
    async fn replay_page(target: &FunctionTarget<Sizes, MemoryDlq>, page: &[Record]) -> u64 {
        let (mut at, mut filtered) = (0, 0);
        while at < page.len() {
            let n = target.piece_end(&page[at..]);
            let settled = target
                .settle(&page[at..at + n], Instant::now() + Duration::from_secs(60))
                .await
                .unwrap();
            assert_eq!(settled.stops.first_unsettled(), None);
            filtered += settled.report.counters.filtered;
            at += n;
        }
        filtered
    }

    /// invocation-eventfiltering.html: "If a record from your event source
    /// satisfies one or more of your filters, Lambda includes the record in
    /// the next event it sends to your function": a batch is filled with
    /// matching records, not cut first and filtered after.
    #[tokio::test]
    async fn filtered_pieces_are_filled_with_matching_records() {
        // Every third record matches: 10 of 30.
        let page: Vec<Record> = (0..30)
            .map(|i| Record {
                data: format!(r#"{{"keep": {}}}"#, i % 3 == 0).into_bytes(),
                ..crate::model::record::tests::record(0, i)
            })
            .collect();
        let filtered = target(Some(r#"{"data": {"keep": [true]}}"#));
        assert_eq!(replay_page(&filtered, &page).await, 20);
        assert_eq!(*filtered.invoker.0.lock().unwrap(), vec![4, 4, 2]);
        // Without filters a piece is a batch of records as they come.
        let all = target(None);
        assert_eq!(replay_page(&all, &page).await, 0);
        assert_eq!(*all.invoker.0.lock().unwrap(), vec![4, 4, 4, 4, 4, 4, 4, 2]);
    }

    #[test]
    fn a_piece_ends_after_its_last_matching_record() {
        let filters = Filters::compile(&FilterCriteria {
            filters: vec![FilterEntry {
                pattern: r#"{"data": {"k": [1]}}"#.into(),
            }],
        })
        .unwrap();
        let page: Vec<Record> = [0, 1, 0, 0, 1, 0]
            .iter()
            .enumerate()
            .map(|(i, k)| Record {
                data: format!(r#"{{"k": {k}}}"#).into_bytes(),
                ..crate::model::record::tests::record(0, i)
            })
            .collect();
        assert_eq!(filled_end(&filters, &page, 1), 2);
        assert_eq!(filled_end(&filters, &page, 2), 5);
        // Fewer matching records than asked for: the whole page.
        assert_eq!(filled_end(&filters, &page, 3), 6);
    }
}
