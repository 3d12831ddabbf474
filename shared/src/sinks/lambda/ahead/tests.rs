use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::model::event::tests::source;
use crate::model::record::ArrivalTime;
use crate::pipeline::filter::{FilterCriteria, FilterEntry};
use crate::sinks::dlq::MemoryDlq;
use crate::sinks::lambda::gaps::EngineGaps;
use crate::sinks::lambda::invoker::{Invocation, InvokeError};
use crate::sinks::lambda::options::MappingOptions;

/// Keeps every payload it is sent, and answers success.
#[derive(Default)]
struct Payloads(Mutex<Vec<Vec<u8>>>);

impl Invoker for Payloads {
    async fn invoke(&self, payload: Vec<u8>) -> Result<Invocation, InvokeError> {
        self.0.lock().unwrap().push(payload);
        Ok(Invocation {
            status_code: 200,
            ..Invocation::default()
        })
    }

    fn function_arn(&self) -> &str {
        "arn:aws:lambda:eu-west-1:111122223333:function:consumer"
    }
}

/// 40 records over 7 keys; every fourth is dropped by [`options`]' filter.
fn records() -> Vec<Record> {
    (0..40)
        .map(|i| Record {
            partition_key: format!("key-{}", i % 7),
            data: format!(r#"{{"keep": {}, "i": {i}}}"#, i % 4 != 3).into_bytes(),
            ..crate::model::record::tests::record(0, i)
        })
        .collect()
}

/// Three lanes of batches of 4, with a filter.
fn options() -> MappingOptions {
    MappingOptions {
        batch_size: 4,
        parallelization_factor: 3,
        filter_criteria: Some(FilterCriteria {
            filters: vec![FilterEntry {
                pattern: r#"{"data": {"keep": [true]}}"#.into(),
            }],
        }),
        ..MappingOptions::default()
    }
}

/// What a delivery borrows.
struct Parts {
    invoker: Payloads,
    dlq: MemoryDlq,
    source: crate::model::event::EventSource,
    options: MappingOptions,
}

impl Parts {
    fn new(options: MappingOptions) -> Self {
        Self {
            invoker: Payloads::default(),
            dlq: MemoryDlq::default(),
            source: source(),
            options,
        }
    }

    fn delivery(&self) -> Delivery<'_, Payloads, MemoryDlq> {
        Delivery {
            invoker: &self.invoker,
            destination: &self.dlq,
            source: &self.source,
            options: &self.options,
            now: || ArrivalTime::from_epoch_millis(1_700_000_100_000),
            base_backoff: Duration::ZERO,
        }
    }

    /// The payloads the function got, sorted (lanes interleave).
    fn payloads(self) -> Vec<Vec<u8>> {
        let mut payloads = self.invoker.0.into_inner().unwrap();
        payloads.sort();
        payloads
    }
}

/// Delivers `piece` with `ahead` made from `made_from` (none: cut on the
/// spot); the payloads the function got, in the order each lane sent them
/// (lanes interleave, so sorted), and the filtered count.
async fn deliver(piece: &[Record], made_from: Option<&[Record]>) -> (Vec<Vec<u8>>, u64) {
    let parts = Parts::new(options());
    let delivery = parts.delivery();
    let ahead = made_from.map(|records| delivery.cut_ahead(records).unwrap());
    let gaps = Mutex::new(EngineGaps::default());
    let end = delivery
        .deliver_ahead(piece, ahead, None, &gaps)
        .await
        .unwrap();
    assert!(end.error.is_none());
    assert_eq!(end.stops.first_unsettled(), None);
    let report = end.report;
    assert_eq!(
        report.counters.delivered + report.counters.filtered,
        piece.len() as u64
    );
    (parts.payloads(), report.counters.filtered)
}

#[tokio::test]
async fn a_piece_made_ready_ahead_is_delivered_byte_for_byte_as_one_cut_when_due() {
    let page = records();
    let piece = &page[..24];
    let fresh = deliver(piece, None).await;
    assert_eq!(fresh.1, 6, "every fourth record filtered");
    assert!(fresh.0.len() > 3, "more than one batch a lane");
    assert_eq!(deliver(piece, Some(piece)).await, fresh);
}

#[tokio::test]
async fn an_ahead_made_from_other_records_is_not_used() {
    let page = records();
    let guess = &page[..24];
    // Pacing made the piece shorter, the next page's dedupe moved its
    // start, or the piece is longer than the guess.
    for piece in [&page[..16], &page[4..28], &page[..28]] {
        assert_eq!(
            deliver(piece, Some(guess)).await,
            deliver(piece, None).await
        );
    }
}

#[test]
fn an_ahead_is_for_the_same_records_in_the_same_order_only() {
    let page = records();
    let parts = Parts::new(options());
    let ahead = parts.delivery().cut_ahead(&page[..8]).unwrap();
    assert!(ahead.is_for(&page[..8]));
    assert!(!ahead.is_for(&page[..7]));
    assert!(!ahead.is_for(&page[1..9]));
    let mut swapped = page[..8].to_vec();
    swapped.swap(2, 3);
    assert!(!ahead.is_for(&swapped));
    // A KPL user record is another record than its aggregate's first.
    let mut user = page[..8].to_vec();
    user[5].sub_sequence_number = Some(0);
    assert!(!ahead.is_for(&user));
}

#[test]
fn refused_filters_make_nothing_ready() {
    let parts = Parts::new(MappingOptions {
        filter_criteria: Some(FilterCriteria {
            filters: vec![FilterEntry {
                pattern: "not json".into(),
            }],
        }),
        ..MappingOptions::default()
    });
    assert_eq!(parts.delivery().cut_ahead(&records()), None);
}

/// What is made ahead is not done again: each lane's first batch goes out
/// as the bytes written ahead (shown here by making them from records at
/// the same positions with other data), the later batches as written
/// when due.
#[tokio::test]
async fn the_first_batch_of_each_lane_is_sent_as_written_ahead() {
    let page = records();
    let marked: Vec<Record> = page
        .iter()
        .map(|r| Record {
            data: [b"ahead ".as_slice(), &r.data].concat(),
            ..r.clone()
        })
        .collect();
    // No filter: the marked data is no JSON.
    let parts = Parts::new(MappingOptions {
        filter_criteria: None,
        ..options()
    });
    let delivery = parts.delivery();
    let ahead = delivery.cut_ahead(&marked).unwrap();
    let gaps = Mutex::new(EngineGaps::default());
    delivery
        .deliver_ahead(&page, Some(ahead), None, &gaps)
        .await
        .unwrap();
    let mut batches: Vec<Vec<bool>> = (parts.payloads().iter())
        .map(|payload| {
            let records = crate::model::event::DeliveredEvent::from_slice(payload)
                .unwrap()
                .records;
            records
                .iter()
                .map(|r| r.data.starts_with(b"ahead "))
                .collect()
        })
        .collect();
    batches.sort();
    // 40 records over 3 lanes of batches of 4: the first batch of each
    // lane written ahead, every record of every other batch written now.
    let ahead: Vec<&Vec<bool>> = batches.iter().filter(|b| b.iter().all(|&m| m)).collect();
    assert_eq!(ahead.len(), 3, "{batches:?}");
    assert!(ahead.iter().all(|b| b.len() == 4));
    assert!(
        batches
            .iter()
            .filter(|b| !b.iter().all(|&m| m))
            .all(|b| b.iter().all(|&m| !m)),
        "{batches:?}"
    );
    assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 40);
}
