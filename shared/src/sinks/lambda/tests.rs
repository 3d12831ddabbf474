use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use super::options::FunctionResponseType;
use super::*;
use crate::model::event::DeliveredEvent;
use crate::model::event::tests::source;
use crate::model::seqno::Position;
use crate::pipeline::batch::{MAX_PAYLOAD_BYTES, lane_of};
use crate::sinks::dlq::MemoryDlq as Dlq;

/// A target function: fails (Unhandled) on batches holding a poison
/// record, or reports it as a batch item failure; keeps every batch it
/// accepted, as the integration fixture does.
#[derive(Default)]
struct Target {
    poison: BTreeSet<String>,
    /// Report poison records as batchItemFailures instead of failing.
    partial: bool,
    /// A fixed response body overriding the above.
    response: Option<&'static str>,
    /// Transport failures to answer before each real invoke.
    transport_failures: Mutex<u32>,
    /// How far each transport failure moves [`clock`] on, in milliseconds.
    failure_takes_millis: i64,
    accepted: Mutex<Vec<Vec<Record>>>,
    invokes: Mutex<u64>,
    largest_payload: Mutex<usize>,
}

impl Invoker for Target {
    async fn invoke(&self, payload: Vec<u8>) -> Result<Invocation, InvokeError> {
        {
            let mut left = self.transport_failures.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                CLOCK.with(|c| c.set(c.get() + self.failure_takes_millis));
                return Err(InvokeError::Retryable {
                    function: "consumer".into(),
                    source: "TooManyRequestsException".into(),
                });
            }
        }
        let invoke = {
            let mut invokes = self.invokes.lock().unwrap();
            *invokes += 1;
            *invokes
        };
        let mut largest = self.largest_payload.lock().unwrap();
        *largest = (*largest).max(payload.len());
        let records = DeliveredEvent::from_slice(&payload).unwrap().records;
        let poisoned: Vec<&Record> = records
            .iter()
            .filter(|r| self.poison.contains(r.sequence_number.as_str()))
            .collect();
        let ok = |body: String| Invocation {
            request_id: format!("req-{invoke}"),
            status_code: 200,
            executed_version: Some("$LATEST".into()),
            function_error: None,
            payload: body.into_bytes(),
        };
        if let Some(body) = self.response {
            return Ok(ok(body.to_owned()));
        }
        if poisoned.is_empty() {
            self.accepted.lock().unwrap().push(records);
            return Ok(ok(r#"{"batchItemFailures":[]}"#.into()));
        }
        if self.partial {
            let first = records
                .iter()
                .position(|r| self.poison.contains(r.sequence_number.as_str()))
                .unwrap();
            self.accepted
                .lock()
                .unwrap()
                .push(records[..first].to_vec());
            let ids: Vec<String> = poisoned
                .iter()
                .map(|r| format!(r#"{{"itemIdentifier":"{}"}}"#, r.sequence_number))
                .collect();
            return Ok(ok(format!(
                r#"{{"batchItemFailures":[{}]}}"#,
                ids.join(",")
            )));
        }
        Ok(Invocation {
            function_error: Some("Unhandled".into()),
            ..ok(r#"{"errorType":"Poison","errorMessage":"poison record"}"#.into())
        })
    }

    fn function_arn(&self) -> &str {
        "arn:aws:lambda:eu-west-1:111122223333:function:consumer"
    }
}

fn records(n: usize, size: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            partition_key: format!("key-{}", i % 13),
            data: vec![b'x'; size],
            ..crate::model::record::tests::record(4, i)
        })
        .collect()
}

fn now() -> ArrivalTime {
    ArrivalTime::from_epoch_millis(1_700_000_100_000)
}

thread_local! {
    /// A clock that [`Target`]'s transport failures move on (each test
    /// runs on a thread of its own).
    static CLOCK: std::cell::Cell<i64> = std::cell::Cell::new(now().epoch_millis());
}

fn clock() -> ArrivalTime {
    ArrivalTime::from_epoch_millis(CLOCK.with(std::cell::Cell::get))
}

async fn run(
    target: &Target,
    dlq: &Dlq,
    options: MappingOptions,
    input: Vec<Record>,
) -> DeliveryReport {
    run_until(target, dlq, options, input, (now, Duration::ZERO), None)
        .await
        .0
}

/// As [`run`], with its own clock and first backoff, and a stop time.
async fn run_until(
    target: &Target,
    dlq: &Dlq,
    options: MappingOptions,
    input: Vec<Record>,
    (now, base_backoff): (fn() -> ArrivalTime, Duration),
    stop_at: Option<tokio::time::Instant>,
) -> (DeliveryReport, Option<Unsettled>) {
    options.validate().unwrap();
    let source = source();
    Delivery {
        invoker: target,
        destination: dlq,
        source: &source,
        options: &options,
        now,
        base_backoff,
    }
    .deliver_until(input, stop_at)
    .await
    .unwrap()
}

fn accepted_ids(target: &Target) -> Vec<String> {
    target
        .accepted
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .map(|r| r.sequence_number.to_string())
        .collect()
}

#[tokio::test]
async fn bisect_isolates_exactly_the_poison_records_in_logarithmic_invokes() {
    let input = records(10_000, 8);
    let poison: BTreeSet<String> = [1234, 8765]
        .iter()
        .map(|&i| input[i].sequence_number.to_string())
        .collect();
    let target = Target {
        poison: poison.clone(),
        ..Target::default()
    };
    let dlq = Dlq::default();
    let options = MappingOptions {
        batch_size: 10_000,
        maximum_retry_attempts: 2,
        bisect_batch_on_function_error: true,
        ..MappingOptions::default()
    };
    let report = run(&target, &dlq, options, input.clone()).await;
    assert_eq!(report.counters.delivered, 9_998);
    assert_eq!(report.counters.failed_records, 2);
    let dead: Vec<String> = dlq
        .records
        .lock()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(
                r.kinesis_batch_info.batch_size, 1,
                "bisected down to the failing record"
            );
            assert_eq!(
                r.request_context.condition,
                FailureCondition::RetryAttemptsExhausted
            );
            assert_eq!(
                r.request_context.approximate_invoke_count, 3,
                "first try and two retries"
            );
            r.kinesis_batch_info.start_sequence_number.clone()
        })
        .collect();
    assert_eq!(dead.into_iter().collect::<BTreeSet<_>>(), poison);
    // Every other record acknowledged once, in order.
    let expected: Vec<String> = input
        .iter()
        .map(|r| r.sequence_number.to_string())
        .filter(|s| !poison.contains(s))
        .collect();
    assert_eq!(accepted_ids(&target), expected);
    // ~2 × log2(10,000) halvings per poison record plus the retries: far
    // from the 10,000 a record-by-record search would take.
    assert!(
        report.counters.invocations <= 2 * 2 * 14 + 2 * 3 + 2,
        "{} invokes",
        report.counters.invocations
    );
}

#[tokio::test]
async fn retries_are_counted_and_then_the_batch_goes_to_the_destination() {
    let input = records(10, 8);
    let target = Target {
        poison: [input[3].sequence_number.to_string()].into(),
        ..Target::default()
    };
    let dlq = Dlq {
        with_payload: true,
        ..Dlq::default()
    };
    let options = MappingOptions {
        batch_size: 5,
        maximum_retry_attempts: 3,
        ..MappingOptions::default()
    };
    let report = run(&target, &dlq, options, input.clone()).await;
    assert_eq!(
        report.counters.invocations,
        4 + 1,
        "the failing batch 4 times, the next once"
    );
    assert_eq!(report.counters.function_errors, 4);
    assert_eq!(report.counters.delivered, 5);
    let dead = dlq.records.lock().unwrap();
    assert_eq!(dead.len(), 1);
    let info = &dead[0].kinesis_batch_info;
    assert_eq!(
        (info.batch_size, info.start_sequence_number.as_str()),
        (5, input[0].sequence_number.as_str())
    );
    assert_eq!(
        info.end_sequence_number,
        input[4].sequence_number.to_string()
    );
    assert_eq!(
        info.approximate_arrival_of_first_record,
        "2023-11-14T22:13:20.000Z"
    );
    assert_eq!(
        dead[0]
            .response_context
            .as_ref()
            .unwrap()
            .function_error
            .as_deref(),
        Some("Unhandled")
    );
    assert_eq!(dead[0].request_context.approximate_invoke_count, 4);
    // The S3 form carries the whole event the function was sent.
    let payload = DeliveredEvent::from_slice(dead[0].payload.as_ref().unwrap().as_bytes()).unwrap();
    assert_eq!(payload.records, input[..5].to_vec());
    let json = serde_json::to_value(&dead[0]).unwrap();
    for field in [
        "requestContext",
        "responseContext",
        "version",
        "timestamp",
        "KinesisBatchInfo",
    ] {
        assert!(json.get(field).is_some(), "{field}");
    }
}

#[tokio::test]
async fn partial_batch_responses_move_the_checkpoint_to_the_lowest_failure() {
    let input = records(10, 8);
    let target = Target {
        poison: [
            input[6].sequence_number.to_string(),
            input[4].sequence_number.to_string(),
        ]
        .into(),
        partial: true,
        ..Target::default()
    };
    let dlq = Dlq::default();
    let options = MappingOptions {
        batch_size: 10,
        maximum_retry_attempts: 1,
        function_response_types: vec![FunctionResponseType::ReportBatchItemFailures],
        ..MappingOptions::default()
    };
    let report = run(&target, &dlq, options, input.clone()).await;
    // First call: 0..4 acknowledged; retry from 4 once; then 4..10 to the DLQ.
    assert_eq!(report.counters.delivered, 4);
    assert_eq!(report.counters.invocations, 2);
    let dead = dlq.records.lock().unwrap();
    assert_eq!(
        dead[0].kinesis_batch_info.start_sequence_number,
        input[4].sequence_number.to_string()
    );
    assert_eq!(dead[0].kinesis_batch_info.batch_size, 6);
    assert_eq!(
        dead[0].response_context.as_ref().unwrap().function_error,
        None
    );
}

#[tokio::test]
async fn malformed_partial_responses_fail_the_whole_batch() {
    for body in [
        r#"{"batchItemFailures":[{"itemIdentifier":""}]}"#,
        r#"{"batchItemFailures":[{"itemIdentifier":null}]}"#,
        r#"{"batchItemFailures":[{"id":"1"}]}"#,
        r#"{"batchItemFailures":[{"itemIdentifier":"123"}]}"#,
        r#"{"batchItemFailures":"all"}"#,
        "not json",
    ] {
        let target = Target {
            response: Some(body),
            ..Target::default()
        };
        let dlq = Dlq::default();
        let options = MappingOptions {
            batch_size: 10,
            maximum_retry_attempts: 0,
            function_response_types: vec![FunctionResponseType::ReportBatchItemFailures],
            ..MappingOptions::default()
        };
        let report = run(&target, &dlq, options, records(3, 8)).await;
        assert_eq!(
            (report.counters.delivered, report.counters.failed_records),
            (0, 3),
            "{body}"
        );
    }
    for body in [
        "",
        "null",
        "{}",
        r#"{"batchItemFailures":[]}"#,
        r#"{"batchItemFailures":null}"#,
    ] {
        let target = Target {
            response: Some(body),
            ..Target::default()
        };
        let options = MappingOptions {
            function_response_types: vec![FunctionResponseType::ReportBatchItemFailures],
            ..MappingOptions::default()
        };
        let report = run(&target, &Dlq::default(), options, records(3, 8)).await;
        assert_eq!(report.counters.delivered, 3, "{body:?} is a success");
    }
}

#[tokio::test]
async fn batches_are_split_to_stay_under_six_megabytes() {
    let input = records(9, 1024 * 1024);
    let target = Target::default();
    let report = run(
        &target,
        &Dlq::default(),
        MappingOptions {
            batch_size: 10_000,
            ..MappingOptions::default()
        },
        input.clone(),
    )
    .await;
    assert_eq!(report.counters.delivered, 9);
    assert!(*target.largest_payload.lock().unwrap() < MAX_PAYLOAD_BYTES);
    let sizes: Vec<usize> = target
        .accepted
        .lock()
        .unwrap()
        .iter()
        .map(Vec::len)
        .collect();
    assert_eq!(sizes, [4, 4, 1], "1 MiB records are ~1.4 MB of base64 each");
    assert_eq!(
        accepted_ids(&target),
        input
            .iter()
            .map(|r| r.sequence_number.to_string())
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn parallel_lanes_keep_each_partition_keys_order() {
    let input = records(500, 8);
    let target = Target::default();
    let options = MappingOptions {
        batch_size: 7,
        parallelization_factor: 4,
        ..MappingOptions::default()
    };
    let report = run(&target, &Dlq::default(), options, input.clone()).await;
    assert_eq!(report.counters.delivered, 500);
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for record in target.accepted.lock().unwrap().iter().flatten() {
        by_key
            .entry(record.partition_key.clone())
            .or_default()
            .push(record.sequence_number.to_string());
    }
    for (key, seen) in by_key {
        let expected: Vec<String> = input
            .iter()
            .filter(|r| r.partition_key == key)
            .map(|r| r.sequence_number.to_string())
            .collect();
        assert_eq!(seen, expected, "{key}");
    }
    for batch in target.accepted.lock().unwrap().iter() {
        let lanes: BTreeSet<usize> = batch.iter().map(|r| lane_of(&r.partition_key, 4)).collect();
        assert_eq!(lanes.len(), 1, "a batch holds one lane's records");
    }
}

#[tokio::test]
async fn records_past_the_maximum_age_go_to_the_destination_unsent() {
    let mut input = records(6, 8);
    // The last three arrived within the minute before "now".
    for r in &mut input[3..] {
        r.approximate_arrival_timestamp =
            ArrivalTime::from_epoch_millis(now().epoch_millis() - 30_000);
    }
    let target = Target::default();
    let dlq = Dlq::default();
    let options = MappingOptions {
        batch_size: 3,
        maximum_record_age_in_seconds: 60,
        ..MappingOptions::default()
    };
    let report = run(&target, &dlq, options, input).await;
    assert_eq!(
        (
            report.counters.delivered,
            report.counters.failed_records,
            report.counters.invocations
        ),
        (3, 3, 1)
    );
    assert_eq!(
        dlq.records.lock().unwrap()[0].request_context.condition,
        FailureCondition::RecordAgeExceeded
    );
}

#[tokio::test]
async fn throttled_invokes_are_retried_and_not_function_errors() {
    let target = Target {
        transport_failures: Mutex::new(3),
        ..Target::default()
    };
    let report = run(
        &target,
        &Dlq::default(),
        MappingOptions::default(),
        records(5, 8),
    )
    .await;
    assert_eq!(
        (
            report.counters.delivered,
            report.counters.invocations,
            report.counters.function_errors
        ),
        (5, 1, 0)
    );
}

#[test]
fn options_are_validated_with_the_mapping_ranges() {
    let err = MappingOptions {
        batch_size: 0,
        ..MappingOptions::default()
    }
    .validate()
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid request: BatchSize: 0; accepted values: 1 to 10000"
    );
    let err = MappingOptions {
        maximum_record_age_in_seconds: 10,
        ..MappingOptions::default()
    }
    .validate()
    .unwrap_err();
    assert_eq!(err.field, "MaximumRecordAgeInSeconds");
    let err = MappingOptions {
        parallelization_factor: 11,
        ..MappingOptions::default()
    }
    .validate()
    .unwrap_err();
    assert_eq!(err.field, "ParallelizationFactor");
    let parsed: MappingOptions = serde_json::from_str(
        r#"{"BatchSize": 500, "FunctionResponseTypes": ["ReportBatchItemFailures"]}"#,
    )
    .unwrap();
    assert_eq!(parsed.batch_size, 500);
    assert!(parsed.reports_item_failures());
    assert_eq!(parsed.maximum_retry_attempts, -1);
}

#[tokio::test]
async fn filtered_records_are_not_sent_and_count_as_processed() {
    let mut input = records(6, 8);
    for (i, r) in input.iter_mut().enumerate() {
        r.data = format!(
            r#"{{"kind": "{}", "n": {i}}}"#,
            if i % 2 == 0 { "order" } else { "ping" }
        )
        .into_bytes();
    }
    let target = Target::default();
    let options: MappingOptions = serde_json::from_str(
        r#"{"BatchSize": 10, "FilterCriteria": {"Filters": [{"Pattern": "{\"data\": {\"kind\": [\"order\"]}}"}]}}"#,
    )
    .unwrap();
    let report = run(&target, &Dlq::default(), options, input.clone()).await;
    assert_eq!(
        (
            report.counters.delivered,
            report.counters.filtered,
            report.counters.invocations
        ),
        (3, 3, 1)
    );
    let sent: Vec<String> = input
        .iter()
        .step_by(2)
        .map(|r| r.sequence_number.to_string())
        .collect();
    assert_eq!(accepted_ids(&target), sent);
    let bad: MappingOptions =
        serde_json::from_str(r#"{"FilterCriteria": {"Filters": [{"Pattern": "{\"body\": {}}"}]}}"#)
            .unwrap();
    assert!(
        bad.validate()
            .unwrap_err()
            .to_string()
            .contains("FilterCriteria.Filters[0].Pattern")
    );
}

#[tokio::test]
async fn a_deadline_stops_endless_retries_at_the_first_unsettled_record() {
    // MaximumRetryAttempts -1 (the mapping's default) and a record that
    // always fails: the live mapping retries until the record expires. A
    // delivery with a deadline stops there instead of running past it, and
    // names the first record it did not settle.
    let input = records(30, 10);
    let poison = input[14].sequence_number.to_string();
    let target = Target {
        poison: [poison.clone()].into(),
        ..Target::default()
    };
    let dlq = Dlq::default();
    let options = MappingOptions {
        batch_size: 10,
        ..MappingOptions::default()
    };
    let source = source();
    let delivery = Delivery {
        invoker: &target,
        destination: &dlq,
        source: &source,
        options: &options,
        now,
        base_backoff: Duration::ZERO,
    };
    let stop_at = tokio::time::Instant::now() + Duration::from_millis(200);
    let (report, unsettled) = delivery
        .deliver_until(input.clone(), Some(stop_at))
        .await
        .unwrap();
    // The first batch (records 0-9) is settled; the second (10-19) holds
    // the poison and was retried until the deadline; the third never went.
    assert_eq!(unsettled, Some(Position::of(&input[10])), "{report:?}");
    assert_eq!(report.counters.delivered, 10);
    assert!(report.counters.function_errors >= 1);
    assert_eq!(report.counters.failed_records, 0, "nothing is given up on");
    assert_eq!(accepted_ids(&target).len(), 10);

    // A deadline already passed invokes nothing and settles nothing.
    let target = Target::default();
    let delivery = Delivery {
        invoker: &target,
        ..delivery
    };
    let (report, unsettled) = delivery
        .deliver_until(input.clone(), Some(tokio::time::Instant::now()))
        .await
        .unwrap();
    assert_eq!(unsettled, Some(Position::of(&input[0])));
    assert_eq!(*target.invokes.lock().unwrap(), 0);
    assert_eq!(report, DeliveryReport::default());
}

pub(super) fn is_uuid_v4(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.iter().map(|g| g.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && id.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit())
        && groups[2].starts_with('4')
}

/// Issue 12, points 3 and 6. "If a Lambda event source mapping is unable
/// to invoke the function due to throttling or other issues, it retries
/// until the records expire or exceed the maximum age configured on the
/// event source mapping"
/// (https://docs.aws.amazon.com/lambda/latest/dg/kinesis-on-failure-destination.html).
/// The batch then goes to the destination as AWS writes a
/// `RecordAgeExceeded` record: no `responseContext`, a UUID `requestId`,
/// `approximateInvokeCount` 1 although the function never ran.
#[tokio::test]
async fn throttles_stop_at_the_record_age_limit_with_the_record_aws_writes() {
    // The records are 100 s old; every throttled call takes 10 s.
    let input = records(4, 8);
    let target = Target {
        transport_failures: Mutex::new(u32::MAX),
        failure_takes_millis: 10_000,
        ..Target::default()
    };
    let dlq = Dlq::default();
    let options = MappingOptions {
        batch_size: 10,
        maximum_record_age_in_seconds: 120,
        ..MappingOptions::default()
    };
    let (report, unsettled) = run_until(
        &target,
        &dlq,
        options,
        input.clone(),
        (clock, Duration::ZERO),
        None,
    )
    .await;
    assert_eq!(unsettled, None);
    assert_eq!(
        (
            report.counters.invocations,
            report.counters.failed_batches,
            report.counters.failed_records
        ),
        (0, 1, 4)
    );
    assert_eq!(*target.invokes.lock().unwrap(), 0, "the function never ran");
    // 30 s of throttles took the batch past 120 s, and no further.
    assert_eq!(clock().epoch_millis() - now().epoch_millis(), 30_000);
    let dead = dlq.records.lock().unwrap();
    let json = serde_json::to_value(&dead[0]).unwrap();
    assert!(json.get("responseContext").is_none(), "{json}");
    let context = &dead[0].request_context;
    assert_eq!(context.condition, FailureCondition::RecordAgeExceeded);
    assert_eq!(context.approximate_invoke_count, 1);
    assert!(is_uuid_v4(&context.request_id), "{}", context.request_id);
    assert_eq!(
        context.function_arn,
        "arn:aws:lambda:eu-west-1:111122223333:function:consumer"
    );
    let info = &dead[0].kinesis_batch_info;
    assert_eq!(info.batch_size, 4);
    assert_eq!(
        info.start_sequence_number,
        input[0].sequence_number.to_string()
    );
    assert_eq!(
        info.end_sequence_number,
        input[3].sequence_number.to_string()
    );
}

/// Issue 12, point 6: a step's stop time ends the throttle retries too,
/// naming the first record not settled; nothing goes to the destination,
/// so nothing is lost and the next step takes the batch again.
#[tokio::test(start_paused = true)]
async fn throttles_stop_at_the_steps_stop_time_at_the_first_unsettled_record() {
    let input = records(25, 8);
    let target = Target {
        transport_failures: Mutex::new(u32::MAX),
        ..Target::default()
    };
    let dlq = Dlq::default();
    let options = MappingOptions {
        batch_size: 10,
        ..MappingOptions::default()
    };
    let stop_at = tokio::time::Instant::now() + Duration::from_secs(30);
    let (report, unsettled) = run_until(
        &target,
        &dlq,
        options,
        input.clone(),
        (now, Duration::from_millis(200)),
        Some(stop_at),
    )
    .await;
    let stopped = tokio::time::Instant::now();
    assert_eq!(unsettled, Some(Position::of(&input[0])));
    assert_eq!(report, DeliveryReport::default());
    assert!(dlq.records.lock().unwrap().is_empty());
    // No wait ran past the stop time.
    assert!(
        stopped >= stop_at && stopped - stop_at < Duration::from_millis(1),
        "{:?}",
        stopped - stop_at
    );
}

/// Issue 12, point 3: a batch failed by an invalid partial batch response
/// is retried and then written with `"functionError": null` (the function
/// answered without an error), the last invocation's request id, and the
/// full function ARN. The page's example record
/// (https://docs.aws.amazon.com/lambda/latest/dg/kinesis-on-failure-destination.html)
/// has the same fields for a function error: `"functionError": "Unhandled"`.
#[tokio::test]
async fn the_record_takes_the_last_invocations_request_id_and_response() {
    let target = Target {
        response: Some(r#"{"batchItemFailures":[{"itemIdentifier":""}]}"#),
        ..Target::default()
    };
    let dlq = Dlq::default();
    let options = MappingOptions {
        batch_size: 10,
        maximum_retry_attempts: 2,
        function_response_types: vec![FunctionResponseType::ReportBatchItemFailures],
        ..MappingOptions::default()
    };
    run(&target, &dlq, options, records(3, 8)).await;
    let json = serde_json::to_value(&dlq.records.lock().unwrap()[0]).unwrap();
    assert_eq!(
        json["responseContext"],
        serde_json::json!({"statusCode": 200, "executedVersion": "$LATEST", "functionError": null})
    );
    assert_eq!(
        json["requestContext"],
        serde_json::json!({
            "requestId": "req-3",
            "functionArn": "arn:aws:lambda:eu-west-1:111122223333:function:consumer",
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 3
        })
    );

    let input = records(2, 8);
    let target = Target {
        poison: [input[1].sequence_number.to_string()].into(),
        ..Target::default()
    };
    let dlq = Dlq::default();
    let options = MappingOptions {
        maximum_retry_attempts: 1,
        ..MappingOptions::default()
    };
    run(&target, &dlq, options, input).await;
    let json = serde_json::to_value(&dlq.records.lock().unwrap()[0]).unwrap();
    assert_eq!(json["responseContext"]["functionError"], "Unhandled");
    assert_eq!(json["requestContext"]["requestId"], "req-2");
}
