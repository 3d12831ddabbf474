//! Each rule of the guide's "Time windows" section
//! (<https://docs.aws.amazon.com/lambda/latest/dg/services-kinesis-windows.html>)
//! against a function that sums the numbers in its records per window, as
//! the integration fixture does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::model::event::tests::source;
use crate::model::record::ArrivalTime;
use crate::model::tumbling::State;
use crate::sinks::dlq::MemoryDlq;
use crate::sinks::lambda::invoker::InvokeError;
use crate::sinks::lambda::options::{FunctionResponseType, MappingOptions};

pub(crate) const GUIDE: &str =
    "https://docs.aws.amazon.com/lambda/latest/dg/services-kinesis-windows.html";

/// 60-second windows from here; records `i` arrive `i` seconds after it.
pub(crate) const T0: i64 = 1_700_000_040_000;

/// Record `i` of shard 1, holding the number `value`, arriving `second`
/// seconds after [`T0`].
pub(crate) fn record(i: usize, second: i64, value: i64) -> Record {
    Record {
        data: value.to_string().into_bytes(),
        approximate_arrival_timestamp: ArrivalTime::from_epoch_millis(T0 + second * 1000),
        ..crate::model::record::tests::record(1, i)
    }
}

/// What one invocation carried.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub shard_id: String,
    pub event_source_arn: String,
    pub window_start: String,
    pub state: State,
    pub values: Vec<i64>,
    pub is_final: bool,
    pub early: bool,
}

/// A tumbling-window function: adds each record's number to `sum` in the
/// state. Numbers in `poison` fail the invocation (or, with `partial`, are
/// reported as batch item failures); `stateless` answers without a state;
/// `pad` bytes of padding grow the state on every aggregating invoke;
/// `failing_finals` final invokes fail before one succeeds.
#[derive(Default)]
pub(crate) struct Summer {
    pub poison: BTreeSet<i64>,
    pub partial: bool,
    pub stateless: bool,
    pub pad: usize,
    pub failing_finals: Mutex<u32>,
    pub calls: Mutex<Vec<Call>>,
}

impl Summer {
    pub(crate) fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// The final state of each window, in order (early finals included).
    pub(crate) fn finals(&self) -> Vec<(String, i64, bool)> {
        self.calls()
            .into_iter()
            .filter(|c| c.is_final)
            .map(|c| (c.window_start, sum(&c.state), c.early))
            .collect()
    }
}

pub(crate) fn sum(state: &State) -> i64 {
    state.get("sum").and_then(Value::as_i64).unwrap_or(0)
}

impl Invoker for Summer {
    async fn invoke(&self, payload: Vec<u8>) -> Result<Invocation, InvokeError> {
        let event: Value = serde_json::from_slice(&payload).unwrap();
        let records = event["Records"].as_array().unwrap();
        let values: Vec<i64> = records
            .iter()
            .map(|r| {
                let data =
                    crate::model::record::decode_base64(r["kinesis"]["data"].as_str().unwrap());
                value_of(&data.unwrap())
            })
            .collect();
        let mut state = event["state"].as_object().cloned().unwrap();
        let call = Call {
            shard_id: event["shardId"].as_str().unwrap().to_owned(),
            event_source_arn: event["eventSourceARN"].as_str().unwrap().to_owned(),
            window_start: event["window"]["start"].as_str().unwrap().to_owned(),
            state: state.clone(),
            values: values.clone(),
            is_final: event["isFinalInvokeForWindow"].as_bool().unwrap(),
            early: event["isWindowTerminatedEarly"].as_bool().unwrap(),
        };
        // The window's shard and stream are the records' own.
        for r in records {
            let shard = r["eventID"].as_str().unwrap().split(':').next().unwrap();
            assert_eq!(event["shardId"].as_str(), Some(shard));
            assert_eq!(event["eventSourceARN"], r["eventSourceARN"]);
        }
        self.calls.lock().unwrap().push(call.clone());
        let answer = |body: Value, error: Option<&str>| Invocation {
            request_id: "req".into(),
            status_code: 200,
            executed_version: Some("$LATEST".into()),
            function_error: error.map(str::to_owned),
            payload: serde_json::to_vec(&body).unwrap(),
        };
        if call.is_final {
            assert!(records.is_empty(), "a final invoke carries no records");
            let mut failing = self.failing_finals.lock().unwrap();
            if *failing > 0 {
                *failing -= 1;
                return Ok(answer(json!({"errorType": "Busy"}), Some("Unhandled")));
            }
            return Ok(answer(json!({"state": state}), None));
        }
        let first_poison = values.iter().position(|v| self.poison.contains(v));
        if first_poison.is_some() && !self.partial {
            return Ok(answer(json!({"errorType": "Poison"}), Some("Unhandled")));
        }
        let taken = first_poison.unwrap_or(values.len());
        let total = sum(&state) + values[..taken].iter().sum::<i64>();
        state.insert("sum".into(), total.into());
        if self.pad > 0 {
            let padding = state.get("pad").and_then(Value::as_str).unwrap_or("").len();
            state.insert("pad".into(), "p".repeat(padding + self.pad).into());
        }
        if self.stateless {
            return Ok(answer(json!({"batchItemFailures": []}), None));
        }
        let failures: Vec<Value> = records[taken..]
            .iter()
            .take(usize::from(first_poison.is_some()))
            .map(|r| json!({"itemIdentifier": r["kinesis"]["sequenceNumber"]}))
            .collect();
        Ok(answer(
            json!({"state": state, "batchItemFailures": failures}),
            None,
        ))
    }

    fn function_arn(&self) -> &str {
        "arn:aws:lambda:eu-west-1:111122223333:function:windows"
    }
}

pub(crate) fn now() -> ArrivalTime {
    ArrivalTime::from_epoch_millis(T0 + 3_600_000)
}

pub(crate) fn options(batch_size: usize) -> MappingOptions {
    MappingOptions {
        batch_size,
        tumbling_window_in_seconds: 60,
        ..MappingOptions::default()
    }
}

async fn deliver(
    summer: &Summer,
    dlq: &MemoryDlq,
    options: &MappingOptions,
    records: Vec<Record>,
    open: &mut Option<OpenWindow>,
    stop_at: Option<Instant>,
) -> (DeliveryReport, Option<Unsettled>) {
    options.validate().unwrap();
    let source = source();
    Delivery {
        invoker: summer,
        destination: dlq,
        source: &source,
        options,
        now,
        base_backoff: Duration::ZERO,
    }
    .deliver_windowed(&records, open, stop_at, &Mutex::default())
    .await
    .unwrap()
}

async fn close(summer: &Summer, options: &MappingOptions, open: &mut Option<OpenWindow>) -> bool {
    let source = source();
    let mut report = DeliveryReport::default();
    Delivery {
        invoker: summer,
        destination: &MemoryDlq::default(),
        source: &source,
        options,
        now,
        base_backoff: Duration::ZERO,
    }
    .close_window(open, None, &Mutex::default(), &mut report)
    .await
    .unwrap()
}

/// A record's number: its data is the number (`7`) or an object holding it
/// (`{"value": 7}`, for filters, which match objects only).
fn value_of(data: &[u8]) -> i64 {
    let value: Value = serde_json::from_slice(data).unwrap();
    value.get("value").unwrap_or(&value).as_i64().unwrap()
}

/// Totals per window (its ISO start), computed from the records directly.
pub(crate) fn totals(records: &[Record]) -> BTreeMap<String, i64> {
    let mut totals = BTreeMap::new();
    for r in records {
        let start = TumblingWindow::of(r.approximate_arrival_timestamp, 60)
            .start
            .to_datetime()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let value = value_of(&r.data);
        *totals.entry(start).or_insert(0) += value;
    }
    totals
}

/// Three windows of 60 s: 0-59 s, 60-119 s, 120-179 s.
fn three_windows() -> Vec<Record> {
    [0, 10, 20, 30, 40, 50, 59, 60, 61, 62, 150, 179]
        .iter()
        .enumerate()
        .map(|(i, &second)| record(i, second, i as i64 + 1))
        .collect()
}

/// The guide: the records of a window come in several batches, each
/// invocation gets the state the last one returned; at the window's end a
/// final invoke with `isFinalInvokeForWindow` and the state (replay sends
/// it with no records, as the mapping does once the window has passed).
#[tokio::test]
async fn batches_hold_one_window_and_carry_its_state_to_a_final_invoke() {
    let summer = Summer::default();
    let dlq = MemoryDlq::default();
    let input = three_windows();
    let mut open = None;
    let (report, unsettled) =
        deliver(&summer, &dlq, &options(4), input.clone(), &mut open, None).await;
    assert_eq!(unsettled, None);
    assert_eq!(report.counters.delivered, 12);
    assert!(close(&summer, &options(4), &mut open).await);
    assert_eq!(open, None);
    let calls = summer.calls();
    let shape: Vec<(String, Vec<i64>, i64, bool)> = calls
        .iter()
        .map(|c| {
            (
                c.window_start[11..19].to_owned(),
                c.values.clone(),
                sum(&c.state),
                c.is_final,
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            ("22:14:00".into(), vec![1, 2, 3, 4], 0, false),
            ("22:14:00".into(), vec![5, 6, 7], 10, false),
            ("22:14:00".into(), vec![], 28, true),
            ("22:15:00".into(), vec![8, 9, 10], 0, false),
            ("22:15:00".into(), vec![], 27, true),
            ("22:16:00".into(), vec![11, 12], 0, false),
            ("22:16:00".into(), vec![], 23, true),
        ],
        "{GUIDE}"
    );
    let finals: BTreeMap<String, i64> = summer
        .finals()
        .into_iter()
        .map(|(w, s, _)| (w, s))
        .collect();
    assert_eq!(finals, totals(&input));
    assert!(
        calls
            .iter()
            .all(|c| c.shard_id == "shardId-000000000001"
                && c.event_source_arn == source().stream_arn)
    );
    // Every invocation, finals included, is counted.
    assert_eq!(report.counters.invocations, 6);
}

/// The guide: "If the response does not contain a state property, Lambda
/// considers this a failed invocation" (retried, then the destination).
#[tokio::test]
async fn a_response_without_state_fails_the_batch() {
    let summer = Summer {
        stateless: true,
        ..Summer::default()
    };
    let dlq = MemoryDlq::default();
    let options = MappingOptions {
        maximum_retry_attempts: 1,
        ..options(10)
    };
    let input: Vec<Record> = (0..3).map(|i| record(i, i as i64, 1)).collect();
    let mut open = None;
    let (report, _) = deliver(&summer, &dlq, &options, input, &mut open, None).await;
    assert_eq!(
        (
            report.counters.delivered,
            report.counters.failed_records,
            report.counters.function_errors
        ),
        (0, 3, 2),
        "{GUIDE}: {report:?}"
    );
    let records = dlq.records.lock().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].request_context.approximate_invoke_count, 2);
    // The state is the one before the batch: nothing was aggregated.
    assert_eq!(open.map(|w| w.state), Some(State::new()));
}

/// "Tumbling windows fully support the existing retry policies": a failed
/// batch is bisected and retried with the state as it was before it, so the
/// window's total holds every good record once and no poison record.
#[tokio::test]
async fn a_failed_batch_is_retried_and_bisected_with_the_state_before_it() {
    let summer = Summer {
        poison: [3].into(),
        ..Summer::default()
    };
    let dlq = MemoryDlq::default();
    let options = MappingOptions {
        maximum_retry_attempts: 0,
        bisect_batch_on_function_error: true,
        ..options(10)
    };
    let input: Vec<Record> = (0..6).map(|i| record(i, i as i64, i as i64 + 1)).collect();
    let mut open = None;
    let (report, _) = deliver(&summer, &dlq, &options, input, &mut open, None).await;
    assert_eq!(
        (report.counters.delivered, report.counters.failed_records),
        (5, 1)
    );
    assert!(close(&summer, &options, &mut open).await);
    assert_eq!(
        summer.finals(),
        vec![("2023-11-14T22:14:00Z".into(), 1 + 2 + 4 + 5 + 6, false)]
    );
}

/// With `ReportBatchItemFailures` the state of a partial success is kept
/// (the function returned it for the records it acknowledged) and the
/// reported records are retried with it.
#[tokio::test]
async fn a_partial_success_keeps_its_state_and_retries_the_rest_with_it() {
    let summer = Summer {
        poison: [3].into(),
        partial: true,
        ..Summer::default()
    };
    let dlq = MemoryDlq::default();
    let options = MappingOptions {
        maximum_retry_attempts: 1,
        function_response_types: vec![FunctionResponseType::ReportBatchItemFailures],
        ..options(10)
    };
    let input: Vec<Record> = (0..5).map(|i| record(i, i as i64, i as i64 + 1)).collect();
    let mut open = None;
    let (report, _) = deliver(&summer, &dlq, &options, input, &mut open, None).await;
    // 1 and 2 acknowledged; 3, 4, 5 retried once with state 3, then to the
    // destination from the reported record on.
    assert_eq!(
        (report.counters.delivered, report.counters.failed_records),
        (2, 3)
    );
    let states: Vec<i64> = summer.calls().iter().map(|c| sum(&c.state)).collect();
    assert_eq!(states, vec![0, 3]);
    assert_eq!(open.as_ref().map(|w| sum(&w.state)), Some(3));
}

/// "Your state can be a maximum of 1 MB per shard. If it exceeds that size,
/// Lambda terminates the window early": a final invoke with
/// `isWindowTerminatedEarly`, then the same window goes on with a fresh
/// state.
#[tokio::test]
async fn a_state_over_one_megabyte_terminates_the_window_early() {
    let summer = Summer {
        pad: 400 * 1024,
        ..Summer::default()
    };
    let dlq = MemoryDlq::default();
    let input: Vec<Record> = (0..5).map(|i| record(i, i as i64, 1)).collect();
    let mut open = None;
    deliver(&summer, &dlq, &options(1), input.clone(), &mut open, None).await;
    assert!(close(&summer, &options(1), &mut open).await);
    let finals = summer.finals();
    // Three records make 1.2 MB: the window ends early after the third,
    // and again at its end for the last two.
    assert_eq!(
        finals.iter().map(|(_, s, e)| (*s, *e)).collect::<Vec<_>>(),
        vec![(3, true), (2, false)],
        "{GUIDE}"
    );
    assert!(finals.iter().all(|(w, _, _)| w == "2023-11-14T22:14:00Z"));
    let after_early = &summer.calls()[4];
    assert_eq!(
        (after_early.values.clone(), after_early.state.clone()),
        (vec![1], State::new())
    );
}

/// "If invocation is unsuccessful, your Lambda function suspends further
/// processing until a successful invocation": a failing final invoke is
/// retried, never sent to the destination, and the next window waits.
#[tokio::test]
async fn a_failed_final_invoke_is_retried_until_it_succeeds() {
    let summer = Summer {
        failing_finals: Mutex::new(3),
        ..Summer::default()
    };
    let dlq = MemoryDlq::default();
    let input = vec![record(0, 0, 5), record(1, 70, 7)];
    let mut open = None;
    let (report, _) = deliver(
        &summer,
        &dlq,
        &MappingOptions {
            maximum_retry_attempts: 0,
            ..options(10)
        },
        input,
        &mut open,
        None,
    )
    .await;
    assert_eq!(report.counters.function_errors, 3, "{GUIDE}");
    assert!(dlq.records.lock().unwrap().is_empty());
    let calls = summer.calls();
    assert_eq!(calls.iter().filter(|c| c.is_final).count(), 4);
    // The next window's batch came after the final invoke succeeded.
    assert_eq!(calls.last().unwrap().values, vec![7]);
}

/// A stop time stops delivery before the next invoke: the window stays
/// open with the state as of the records settled, and delivering the rest
/// from there later gives the same totals.
#[tokio::test]
async fn a_stop_leaves_the_window_as_of_the_settled_records() {
    let input = three_windows();
    let summer = Summer::default();
    let dlq = MemoryDlq::default();
    let mut open = None;
    let passed = Instant::now();
    let (report, unsettled) = deliver(
        &summer,
        &dlq,
        &options(4),
        input.clone(),
        &mut open,
        Some(passed),
    )
    .await;
    assert_eq!(report.counters.invocations, 0);
    assert_eq!(unsettled, Some(Position::of(&input[0])));
    assert_eq!(open, None);
    // Half the records now, the rest later.
    let (first, rest) = input.split_at(8);
    deliver(&summer, &dlq, &options(4), first.to_vec(), &mut open, None).await;
    assert_eq!(open.as_ref().map(|w| sum(&w.state)), Some(8));
    deliver(&summer, &dlq, &options(4), rest.to_vec(), &mut open, None).await;
    assert!(close(&summer, &options(4), &mut open).await);
    let finals: BTreeMap<String, i64> = summer
        .finals()
        .into_iter()
        .map(|(w, s, _)| (w, s))
        .collect();
    assert_eq!(finals, totals(&input));
}

/// Filters drop records before windows are cut: a window none of whose
/// records match gets no invocation at all.
#[tokio::test]
async fn filtered_records_leave_no_trace_in_the_windows() {
    let summer = Summer::default();
    let dlq = MemoryDlq::default();
    let options: MappingOptions = serde_json::from_value(json!({
        "BatchSize": 10,
        "TumblingWindowInSeconds": 60,
        "FilterCriteria": {"Filters": [{"Pattern": "{\"data\": {\"keep\": [true]}}"}]}
    }))
    .unwrap();
    let kept = |i: usize, second: i64, value: i64, keep: bool| Record {
        data: json!({"value": value, "keep": keep})
            .to_string()
            .into_bytes(),
        ..record(i, second, value)
    };
    let input = vec![
        kept(0, 0, 1, true),
        kept(1, 1, 2, true),
        kept(2, 70, 3, false),
    ];
    let mut open = None;
    let (report, _) = deliver(&summer, &dlq, &options, input, &mut open, None).await;
    assert!(close(&summer, &options, &mut open).await);
    assert_eq!(report.counters.filtered, 1);
    assert_eq!(
        summer.finals(),
        vec![("2023-11-14T22:14:00Z".into(), 3, false)]
    );
}

/// Payloads stay under Lambda's limit with the window fields and the state
/// counted in: records that fill 6 MB alone are cut before it.
#[test]
fn a_batch_leaves_room_for_the_state() {
    let source = source();
    let options = options(10_000);
    let summer = Summer::default();
    let dlq = MemoryDlq::default();
    let delivery = Delivery {
        invoker: &summer,
        destination: &dlq,
        source: &source,
        options: &options,
        now,
        base_backoff: Duration::ZERO,
    };
    let mut window = OpenWindow::new("shardId-000000000001", ArrivalTime::from_epoch_millis(T0));
    window
        .state
        .insert("pad".into(), "p".repeat(900 * 1024).into());
    let big = |i: usize| Record {
        data: vec![b'1'; 700 * 1024],
        ..record(i, 1, 0)
    };
    let records: Vec<Record> = (0..8).map(big).collect();
    let mut queue: VecDeque<&Record> = records.iter().collect();
    let batch = delivery.window_batch(&mut queue, &window, 60);
    let fields = WindowFields::new(&window, 60, &source, false, false);
    let bytes = tumbling::with_fields(batch.payload(), &fields).len();
    assert!(bytes < MAX_PAYLOAD_BYTES, "{bytes}");
    assert_eq!(
        bytes,
        tumbling::payload(&records[..batch.len()], &source, &fields).len()
    );
    // Without the state, one more record would have fitted.
    let plain = batch.payload().len();
    assert!(plain + event::record_payload_len(queue[0], &source) + 1 < MAX_PAYLOAD_BYTES);
    assert_eq!(batch.len() + queue.len(), 8);
}

/// `TumblingWindowInSeconds` takes 0 (no window) to 900, as the mapping's
/// API does; a window's state is per shard, so it needs one lane.
#[test]
fn the_window_length_is_validated() {
    let parsed: MappingOptions =
        serde_json::from_value(json!({"TumblingWindowInSeconds": 900})).unwrap();
    assert_eq!(parsed.tumbling_window(), Some(900));
    parsed.validate().unwrap();
    assert_eq!(MappingOptions::default().tumbling_window(), None);
    // The default is left out when the options are written back.
    let written = serde_json::to_value(MappingOptions::default()).unwrap();
    assert!(
        written.get("TumblingWindowInSeconds").is_none(),
        "{written}"
    );
    let err = MappingOptions {
        tumbling_window_in_seconds: 901,
        ..MappingOptions::default()
    }
    .validate()
    .unwrap_err();
    assert_eq!(err.field, "TumblingWindowInSeconds");
    assert_eq!(
        err.message,
        "901; accepted values: 0 (no window) or 1 to 900"
    );
    let err = MappingOptions {
        tumbling_window_in_seconds: 60,
        parallelization_factor: 2,
        ..MappingOptions::default()
    }
    .validate()
    .unwrap_err();
    assert_eq!(err.field, "TumblingWindowInSeconds");
    assert!(
        err.message.contains("ParallelizationFactor 1 only"),
        "{err}"
    );
}
