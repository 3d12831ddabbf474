//! The window's state across steps: a step boundary and a retried step
//! re-deliver from the checkpoint with the state as of that checkpoint
//! (the guide's at-least-once: "some records might be processed more than
//! once", but never aggregated twice into the state a window ends with).

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::model::event::tests::source;
use crate::model::seqno::Position;
use crate::sinks::dlq::MemoryDlq;
use crate::sinks::lambda::window::tests::{GUIDE, Summer, now, options, record, sum, totals};
use crate::store::MemoryStore;

const KEY: &str = "dlq/replays/run/shardId-000000000001/_window.json";

fn target(store: MemoryStore, summer: Summer) -> WindowTarget<Summer, MemoryDlq, MemoryStore> {
    WindowTarget::new(
        FunctionTarget {
            invoker: summer,
            destination: MemoryDlq::default(),
            source: source(),
            options: options(4),
            now,
            base_backoff: Duration::ZERO,
            gaps: Default::default(),
            ahead: Default::default(),
        },
        store,
        KEY.to_owned(),
    )
}

fn later() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

/// 20 records, one every 5 s: windows 0-59 s (12 records) and 60-119 s (8).
fn input() -> Vec<Record> {
    (0..20)
        .map(|i| record(i, 5 * i as i64, i as i64 + 1))
        .collect()
}

fn finals(summers: &[&Summer]) -> Vec<(String, i64)> {
    summers
        .iter()
        .flat_map(|s| s.finals())
        .map(|(w, s, _)| (w, s))
        .collect()
}

#[tokio::test]
async fn a_retried_step_redelivers_with_the_state_as_of_its_checkpoint() {
    let records = input();
    let pieces: Vec<Vec<Record>> = records.chunks(4).map(<[Record]>::to_vec).collect();
    // Step 1 settles three pieces; the replay's checkpoint after the second,
    // written while the third is delivered, fails (and the step with it),
    // so it stays after the first.
    let mut first = target(MemoryStore::default(), Summer::default());
    for piece in &pieces[..3] {
        let settled = first.settle(piece, later()).await.unwrap();
        assert_eq!(settled.stops.first_unsettled(), None);
    }
    let summer1 = std::mem::take(&mut first.function.invoker);
    // The retry starts after the checkpoint: the second piece again.
    let retry = target(first.store, Summer::default());
    for piece in &pieces[1..] {
        retry.settle(piece, later()).await.unwrap();
    }
    assert!(retry.finish(later()).await.unwrap().done);
    let calls = retry.function.invoker.calls();
    assert_eq!(calls[0].values, vec![5, 6, 7, 8]);
    assert_eq!(
        sum(&calls[0].state),
        1 + 2 + 3 + 4,
        "the state as of the checkpoint, not as of the failed attempt's last piece"
    );
    let expected: Vec<(String, i64)> = totals(&records).into_iter().collect();
    assert_eq!(
        finals(&[&summer1, &retry.function.invoker]),
        expected,
        "{GUIDE}"
    );
    // The object holds at most three generations, the latest the shard's
    // end.
    let saved: Saved = serde_json::from_slice(&retry.store.objects()[KEY].body).unwrap();
    assert_eq!(saved.generations.len(), GENERATIONS);
    assert_eq!(saved.generations[2].open, None);
    assert_eq!(saved.generations[2].last, Some(Position::of(&records[19])));
}

/// A step boundary in the middle of a window, and one at the window's end
/// with its final invoke still owed: each next step goes on from the
/// object, and every window's final total is the records' own.
#[tokio::test]
async fn step_boundaries_carry_the_open_window_and_the_owed_final_invoke() {
    let records = input();
    let mut summers = Vec::new();
    let mut store = MemoryStore::default();
    // Steps of 5 records, then the shard's end with a final invoke that
    // fails until its step's stop time, and succeeds in the next step.
    for piece in records.chunks(5) {
        let mut step = target(store, Summer::default());
        step.settle(piece, later()).await.unwrap();
        summers.push(std::mem::take(&mut step.function.invoker));
        store = step.store;
    }
    let failing = Summer {
        failing_finals: std::sync::Mutex::new(u32::MAX),
        ..Summer::default()
    };
    let step = target(store, failing);
    let stop = Instant::now() + Duration::from_millis(50);
    assert!(!step.finish(stop).await.unwrap().done);
    let mut step = target(step.store, Summer::default());
    let finished = step.finish(later()).await.unwrap();
    assert!(finished.done);
    assert_eq!(finished.report.counters.invocations, 1);
    summers.push(std::mem::take(&mut step.function.invoker));
    let all: Vec<&Summer> = summers.iter().collect();
    let expected: Vec<(String, i64)> = totals(&records).into_iter().collect();
    assert_eq!(finals(&all), expected, "{GUIDE}");
    // Nothing left owed: a further finish invokes nothing.
    let step = target(step.store, Summer::default());
    assert_eq!(
        step.finish(later())
            .await
            .unwrap()
            .report
            .counters
            .invocations,
        0
    );
}

#[test]
fn generations_keep_the_three_latest_and_drop_what_a_failed_attempt_wrote() {
    let records = input();
    let at = |i: usize| Some(Position::of(&records[i]));
    let window = |sum: i64| {
        let mut w = OpenWindow::new(
            "shardId-000000000001",
            records[0].approximate_arrival_timestamp,
        );
        w.state.insert("sum".into(), sum.into());
        Some(w)
    };
    let mut saved = Saved::default();
    assert_eq!(saved.before(at(0).as_ref()), None);
    saved.record(at(1), window(3));
    saved.record(at(3), window(10));
    saved.record(at(7), window(36));
    saved.record(at(11), window(78));
    assert_eq!(saved.generations.len(), 3);
    // Resuming after record 3 (the checkpoint, two pieces behind), 7 or 11.
    assert_eq!(saved.before(at(4).as_ref()), window(10));
    assert_eq!(saved.before(at(8).as_ref()), window(36));
    assert_eq!(saved.before(at(12).as_ref()), window(78));
    assert_eq!(saved.before(None), window(78));
    // A retry from 7 that settles less than the failed attempt did: the
    // failed attempt's generation goes.
    saved.record(at(9), window(55));
    let lasts: BTreeMap<_, _> = saved
        .generations
        .iter()
        .map(|g| (g.last.clone(), g.open.clone()))
        .collect();
    assert_eq!(
        lasts.keys().cloned().collect::<Vec<_>>(),
        vec![at(3), at(7), at(9)]
    );
}

#[tokio::test]
async fn a_corrupt_window_object_is_an_error_naming_it() {
    let store = MemoryStore::default();
    store
        .put(PutObject {
            key: KEY.to_owned(),
            body: b"{\"generations\": 7}".to_vec(),
            content_type: "application/json",
            content_encoding: None,
        })
        .await
        .unwrap();
    let step = target(store, Summer::default());
    let error = step.settle(&input()[..4], later()).await.unwrap_err();
    assert!(error.to_string().contains(KEY), "{error}");
    assert!(std::error::Error::source(&error).is_some());
}
