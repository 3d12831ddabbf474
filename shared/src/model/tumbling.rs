//! Tumbling windows (`TumblingWindowInSeconds`) as the Lambda developer
//! guide's "Time windows" section for Kinesis describes them
//! (<https://docs.aws.amazon.com/lambda/latest/dg/services-kinesis-windows.html>):
//! the window a record belongs to, the fields the mapping adds to the event
//! (`window`, `state`, `shardId`, `eventSourceARN`, `isFinalInvokeForWindow`,
//! `isWindowTerminatedEarly`), the state a function returns and its size
//! limit, and [`OpenWindow`], where one shard's window stands between
//! invocations (what a replay keeps beside its checkpoint).
//!
//! Not to be confused with [`crate::model::window`], the part of a shard a
//! request reads.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::event::{self, EventSource};
use crate::model::record::{ArrivalTime, Record};

/// `TumblingWindowInSeconds` accepts 0 (no window) to 900.
pub const MAX_WINDOW_SECONDS: u32 = 900;

/// "Your state can be a maximum of 1 MB per shard. If it exceeds that size,
/// Lambda terminates the window early." Taken as 1 MiB of the state's JSON.
pub const MAX_STATE_BYTES: usize = 1024 * 1024;

/// What a function returns and gets back: any JSON object (the guide's
/// example holds numbers; Java functions use `Map<String, String>`).
pub type State = Map<String, Value>;

/// One window: `[start, end)`, aligned to multiples of its length since the
/// epoch (the guide's 120-second example runs 07:04:00 to 07:06:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TumblingWindow {
    pub start: ArrivalTime,
    pub end: ArrivalTime,
}

impl TumblingWindow {
    /// "Lambda determines tumbling window boundaries based on the time when
    /// records were inserted into the stream": the window holding `at`.
    pub fn of(at: ArrivalTime, seconds: u32) -> Self {
        let length = i64::from(seconds.max(1)) * 1000;
        let start = at.epoch_millis().div_euclid(length) * length;
        Self {
            start: ArrivalTime::from_epoch_millis(start),
            end: ArrivalTime::from_epoch_millis(start + length),
        }
    }
}

/// Where one shard's window stands: its start, the state the function last
/// returned for it, and whether a final invoke is owed for a state that
/// outgrew [`MAX_STATE_BYTES`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenWindow {
    pub shard_id: String,
    pub start: ArrivalTime,
    pub state: State,
    /// The state outgrew the limit: the window's early final invoke is
    /// owed before anything else of the shard is delivered.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub terminated_early: bool,
    /// Nothing was aggregated since the window was terminated early: its
    /// end owes no second final invoke for an empty state.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restarted: bool,
}

impl OpenWindow {
    pub fn new(shard_id: impl Into<String>, start: ArrivalTime) -> Self {
        Self {
            shard_id: shard_id.into(),
            start,
            state: State::new(),
            terminated_early: false,
            restarted: false,
        }
    }
}

/// The fields the mapping adds around `Records` (the guide's
/// `KinesisTimeWindowEvent`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowFields<'a> {
    window: WireWindow,
    state: &'a State,
    shard_id: &'a str,
    #[serde(rename = "eventSourceARN")]
    event_source_arn: &'a str,
    is_final_invoke_for_window: bool,
    is_window_terminated_early: bool,
}

/// ISO 8601 to the second, with `Z`, as in the guide's example
/// (`"2020-12-09T07:04:00Z"`).
#[derive(Debug, Serialize)]
struct WireWindow {
    start: String,
    end: String,
}

impl<'a> WindowFields<'a> {
    /// The fields of an invocation for `window` under `seconds`;
    /// `is_final` for the window's final invoke, `early` when it ends
    /// because its state outgrew the limit.
    pub fn new(
        window: &'a OpenWindow,
        seconds: u32,
        source: &'a EventSource,
        is_final: bool,
        early: bool,
    ) -> Self {
        let bounds = TumblingWindow::of(window.start, seconds);
        let iso = |t: ArrivalTime| {
            t.to_datetime()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        };
        Self {
            window: WireWindow {
                start: iso(bounds.start),
                end: iso(bounds.end),
            },
            state: &window.state,
            shard_id: &window.shard_id,
            event_source_arn: &source.stream_arn,
            is_final_invoke_for_window: is_final,
            is_window_terminated_early: early,
        }
    }

    /// Bytes these fields add to a payload (the comma before them included).
    pub fn payload_len(&self) -> usize {
        serde_json::to_vec(self)
            .expect("window fields serialise")
            .len()
            - 1
    }
}

/// The invocation payload: the mapping's event for `records` (empty for a
/// final invoke) with the window fields after `Records`.
pub fn payload(records: &[Record], source: &EventSource, fields: &WindowFields<'_>) -> Vec<u8> {
    with_fields(
        event::payload(&event::kinesis_event(records, source)),
        fields,
    )
}

/// `event` (the mapping's payload, `{"Records":[…]}`) with the window fields
/// after `Records`.
pub fn with_fields(event: Vec<u8>, fields: &WindowFields<'_>) -> Vec<u8> {
    let mut out = event;
    // The fields go before the event's closing brace.
    let close = out.pop();
    debug_assert_eq!(close, Some(b'}'));
    let extra = serde_json::to_vec(fields).expect("window fields serialise");
    out.push(b',');
    out.extend_from_slice(&extra[1..]);
    out
}

/// The `state` of a function's response. "When using tumbling windows, your
/// Lambda function response must contain a state property. If the response
/// does not contain a state property, Lambda considers this a failed
/// invocation": `None` for a response without one (or whose `state` is not
/// an object, which no function written for the mapping returns).
pub fn returned_state(response: &[u8]) -> Option<State> {
    match serde_json::from_slice::<Value>(response).ok()? {
        Value::Object(mut body) => match body.remove("state")? {
            Value::Object(state) => Some(state),
            _ => None,
        },
        _ => None,
    }
}

/// The state's size as the limit counts it: its JSON.
pub fn state_len(state: &State) -> usize {
    serde_json::to_vec(state)
        .expect("a JSON map serialises")
        .len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::DeliveredEvent;
    use crate::model::event::tests::source;
    use crate::model::record::tests::record;

    const GUIDE: &str =
        "https://docs.aws.amazon.com/lambda/latest/dg/services-kinesis-windows.html";

    /// The guide: boundaries come from the records' arrival times; its
    /// example window of 120 s runs 07:04:00 to 07:06:00, so windows are
    /// aligned to the epoch. A record at the end instant opens the next one.
    #[test]
    fn a_record_belongs_to_the_window_of_its_arrival_time() {
        let at = |s: &str| {
            ArrivalTime::from_datetime(chrono::DateTime::parse_from_rfc3339(s).unwrap().into())
        };
        let window = TumblingWindow::of(at("2020-12-09T07:05:59.999Z"), 120);
        assert_eq!(window.start, at("2020-12-09T07:04:00Z"), "{GUIDE}");
        assert_eq!(window.end, at("2020-12-09T07:06:00Z"));
        assert_eq!(
            TumblingWindow::of(at("2020-12-09T07:06:00Z"), 120).start,
            at("2020-12-09T07:06:00Z")
        );
        assert_eq!(
            TumblingWindow::of(at("2020-12-09T07:04:00Z"), 120).start,
            at("2020-12-09T07:04:00Z")
        );
        // One second: each second its own window.
        let one = TumblingWindow::of(at("2020-12-09T07:04:00.500Z"), 1);
        assert_eq!(
            (one.start, one.end),
            (at("2020-12-09T07:04:00Z"), at("2020-12-09T07:04:01Z"))
        );
    }

    /// The guide's `KinesisTimeWindowEvent`: `Records` as the mapping sends
    /// them, then `window` {start, end}, `state`, `shardId`,
    /// `eventSourceARN`, `isFinalInvokeForWindow`, `isWindowTerminatedEarly`.
    #[test]
    fn the_event_carries_the_guides_window_fields() {
        let source = source();
        let mut records = vec![record(6, 1), record(6, 2)];
        records[0].approximate_arrival_timestamp =
            ArrivalTime::from_epoch_millis(1_607_497_475_000);
        let mut window = OpenWindow::new(
            "shardId-000000000006",
            TumblingWindow::of(records[0].approximate_arrival_timestamp, 120).start,
        );
        window.state.insert("1".into(), 282.into());
        window.state.insert("2".into(), 715.into());
        let fields = WindowFields::new(&window, 120, &source, false, false);
        let bytes = payload(&records, &source, &fields);
        let event: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            event["window"],
            serde_json::json!({"start": "2020-12-09T07:04:00Z", "end": "2020-12-09T07:06:00Z"}),
            "{GUIDE}"
        );
        assert_eq!(event["state"], serde_json::json!({"1": 282, "2": 715}));
        assert_eq!(event["shardId"], "shardId-000000000006");
        assert_eq!(event["eventSourceARN"], source.stream_arn.as_str());
        assert_eq!(event["isFinalInvokeForWindow"], false);
        assert_eq!(event["isWindowTerminatedEarly"], false);
        let keys: Vec<&str> = event
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 7, "{keys:?}");
        // The records are the mapping's, untouched.
        assert_eq!(
            DeliveredEvent::from_slice(&bytes).unwrap().records,
            DeliveredEvent::from_slice(&event::payload(&event::kinesis_event(&records, &source)))
                .unwrap()
                .records
        );
        // The fields' length is predicted to the byte (the 6 MB cut uses it).
        assert_eq!(
            bytes.len(),
            event::payload(&event::kinesis_event(&records, &source)).len() + fields.payload_len()
        );
        // A final invoke: no records, the state, the flag.
        let last = payload(
            &[],
            &source,
            &WindowFields::new(&window, 120, &source, true, true),
        );
        let last: Value = serde_json::from_slice(&last).unwrap();
        assert_eq!(last["Records"], serde_json::json!([]));
        assert_eq!(last["isFinalInvokeForWindow"], true);
        assert_eq!(last["isWindowTerminatedEarly"], true);
        assert_eq!(last["state"], serde_json::json!({"1": 282, "2": 715}));
    }

    /// A Rust function reads the event with `aws_lambda_events`'
    /// `KinesisTimeWindowEvent` (state as `Map<String, String>`, as the
    /// guide advises for typed languages): the fields must parse there.
    #[test]
    fn aws_lambda_events_reads_the_window_event() {
        use aws_lambda_events::event::kinesis::KinesisTimeWindowEvent;
        let source = source();
        let records = vec![record(6, 1)];
        let mut window = OpenWindow::new(
            "shardId-000000000006",
            ArrivalTime::from_epoch_millis(1_607_497_440_000),
        );
        window.state.insert("sum".into(), "282".into());
        let bytes = payload(
            &records,
            &source,
            &WindowFields::new(&window, 120, &source, true, false),
        );
        let event: KinesisTimeWindowEvent = serde_json::from_slice(&bytes).unwrap();
        let props = &event.time_window_properties;
        assert_eq!(props.window.start.to_rfc3339(), "2020-12-09T07:04:00+00:00");
        assert_eq!(props.window.end.to_rfc3339(), "2020-12-09T07:06:00+00:00");
        assert_eq!(props.state.get("sum").map(String::as_str), Some("282"));
        assert_eq!(props.shard_id.as_deref(), Some("shardId-000000000006"));
        assert_eq!(
            props.event_source_arn.as_deref(),
            Some(source.stream_arn.as_str())
        );
        assert!(props.is_final_invoke_for_window && !props.is_window_terminated_early);
        assert_eq!(event.kinesis_event.records.len(), 1);
    }

    /// The guide: "If the response does not contain a state property,
    /// Lambda considers this a failed invocation"; its
    /// `TimeWindowEventResponse` is `{"state": {…}, "batchItemFailures": []}`.
    #[test]
    fn a_response_without_state_is_a_failed_invocation() {
        let state = returned_state(br#"{"state":{"1":282,"2":715},"batchItemFailures":[]}"#);
        assert_eq!(
            state.map(Value::Object),
            Some(serde_json::json!({"1": 282, "2": 715})),
            "{GUIDE}"
        );
        assert_eq!(returned_state(br#"{"state":{}}"#), Some(State::new()));
        for refused in [
            &br#"{"batchItemFailures":[]}"#[..],
            b"null",
            b"",
            b"not json",
            br#"{"state":null}"#,
            br#"{"state":7}"#,
            br#"[{"state":{}}]"#,
        ] {
            assert_eq!(
                returned_state(refused),
                None,
                "{}",
                String::from_utf8_lossy(refused)
            );
        }
    }

    #[test]
    fn the_state_is_measured_as_json() {
        let mut state = State::new();
        assert_eq!(state_len(&state), 2);
        state.insert("total".into(), 42.into());
        assert_eq!(state_len(&state), r#"{"total":42}"#.len());
    }

    #[test]
    fn an_open_window_round_trips() {
        let mut window = OpenWindow::new(
            "shardId-000000000001",
            ArrivalTime::from_epoch_millis(60_000),
        );
        window.state.insert("sum".into(), 3.into());
        let json = serde_json::to_string(&window).unwrap();
        assert!(!json.contains("terminatedEarly"), "{json}");
        assert_eq!(serde_json::from_str::<OpenWindow>(&json).unwrap(), window);
        window.terminated_early = true;
        let json = serde_json::to_string(&window).unwrap();
        assert_eq!(serde_json::from_str::<OpenWindow>(&json).unwrap(), window);
    }
}
