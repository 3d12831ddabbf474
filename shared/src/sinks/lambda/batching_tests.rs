//! How delivery cuts and splits batches: record age judged per record, and
//! every part of a batch invoked with the bytes its records were written
//! as once.

use std::sync::Mutex;

use super::*;
use crate::model::event::tests::source;
use crate::model::event::{DeliveredEvent, kinesis_event, payload};
use crate::sinks::dlq::MemoryDlq;

/// Answers every invoke with success (or a partial failure of the
/// sequence numbers in `fail_once`, the first time it sees them) and keeps
/// each payload it got.
#[derive(Default)]
struct Recorder {
    payloads: Mutex<Vec<Vec<u8>>>,
    fail_once: Mutex<Vec<String>>,
}

impl Invoker for Recorder {
    async fn invoke(&self, payload: Vec<u8>) -> Result<Invocation, InvokeError> {
        let records = DeliveredEvent::from_slice(&payload).unwrap().records;
        self.payloads.lock().unwrap().push(payload);
        let mut fail = self.fail_once.lock().unwrap();
        let failed: Vec<String> = records
            .iter()
            .map(|r| r.sequence_number.to_string())
            .filter(|s| fail.contains(s))
            .collect();
        fail.retain(|s| !failed.contains(s));
        let items: Vec<String> = failed
            .iter()
            .map(|s| format!(r#"{{"itemIdentifier":"{s}"}}"#))
            .collect();
        Ok(Invocation {
            request_id: "req".into(),
            status_code: 200,
            executed_version: Some("$LATEST".into()),
            function_error: None,
            payload: format!(r#"{{"batchItemFailures":[{}]}}"#, items.join(",")).into_bytes(),
        })
    }

    fn function_arn(&self) -> &str {
        "arn:aws:lambda:eu-west-1:111122223333:function:consumer"
    }
}

const NOW: i64 = 1_700_000_100_000;

fn now() -> ArrivalTime {
    ArrivalTime::from_epoch_millis(NOW)
}

/// `ages[i]` milliseconds before "now", one partition key (one lane).
fn records(ages: &[i64]) -> Vec<Record> {
    ages.iter()
        .enumerate()
        .map(|(i, age)| Record {
            partition_key: "k".into(),
            approximate_arrival_timestamp: ArrivalTime::from_epoch_millis(NOW - age),
            data: format!("{{\"i\":{i}}}").into_bytes(),
            ..crate::model::record::tests::record(3, i)
        })
        .collect()
}

async fn deliver(
    invoker: &Recorder,
    dlq: &MemoryDlq,
    options: MappingOptions,
    input: &[Record],
) -> DeliveryReport {
    options.validate().unwrap();
    let source = source();
    let gaps = Mutex::new(EngineGaps::default());
    let (report, unsettled) = Delivery {
        invoker,
        destination: dlq,
        source: &source,
        options: &options,
        now,
        base_backoff: Duration::ZERO,
    }
    .deliver_timed(input, None, &gaps)
    .await
    .unwrap();
    assert_eq!(unsettled, None);
    report
}

fn invoked(invoker: &Recorder) -> Vec<Vec<String>> {
    invoker
        .payloads
        .lock()
        .unwrap()
        .iter()
        .map(|p| {
            DeliveredEvent::from_slice(p)
                .unwrap()
                .records
                .iter()
                .map(|r| r.sequence_number.to_string())
                .collect()
        })
        .collect()
}

fn seqs(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| r.sequence_number.to_string())
        .collect()
}

/// `MaximumRecordAgeInSeconds`: "Discard records older than the specified
/// age" (Lambda API reference, CreateEventSourceMapping,
/// https://docs.aws.amazon.com/lambda/latest/api/API_CreateEventSourceMapping.html;
/// "-1 means infinite: Lambda doesn't discard records",
/// https://docs.aws.amazon.com/lambda/latest/dg/services-kinesis-parameters.html).
/// The age is the record's, not the batch's: in a batch whose oldest
/// records are too old, those go to the on-failure destination (its
/// `batchSize` counts only them) and the function still gets the fresh
/// ones, in the same invoke they were cut for.
#[tokio::test]
async fn a_mixed_batch_sends_its_expired_records_away_and_invokes_the_fresh_ones() {
    // 61 s is past a 60 s limit; 60 s exactly is not (older than, not as old as).
    let input = records(&[90_000, 61_000, 60_001, 60_000, 1_000, 0]);
    let invoker = Recorder::default();
    let dlq = MemoryDlq::default();
    let options = MappingOptions {
        batch_size: 6,
        maximum_record_age_in_seconds: 60,
        ..MappingOptions::default()
    };
    let report = deliver(&invoker, &dlq, options, &input).await;
    assert_eq!(invoked(&invoker), vec![seqs(&input[3..])]);
    assert_eq!(report.counters.delivered, 3);
    assert_eq!(report.counters.failed_records, 3);
    assert_eq!(report.counters.failed_batches, 1);
    assert_eq!(report.counters.invocations, 1);
    let sent = dlq.records.lock().unwrap();
    assert_eq!(sent.len(), 1);
    let record = &sent[0];
    assert_eq!(
        record.request_context.condition,
        FailureCondition::RecordAgeExceeded
    );
    assert_eq!(
        record.request_context.function_arn,
        "arn:aws:lambda:eu-west-1:111122223333:function:consumer"
    );
    // The record AWS writes for RecordAgeExceeded, field by field: no
    // responseContext, a UUID requestId of its own (not the fresh
    // records' invoke's), approximateInvokeCount 1 though these records
    // were never sent (kinesis-on-failure-destination.html and what AWS
    // was recorded writing).
    let json = serde_json::to_value(record).unwrap();
    assert!(json.get("responseContext").is_none(), "{json}");
    assert!(
        super::tests::is_uuid_v4(&record.request_context.request_id),
        "{}",
        record.request_context.request_id
    );
    assert_eq!(record.request_context.approximate_invoke_count, 1);
    let mut fields: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        ["KinesisBatchInfo", "requestContext", "timestamp", "version"],
        "an SQS or SNS record; the S3 one adds the payload"
    );
    assert_eq!(record.version, "1.0");
    assert_eq!(record.timestamp, now().to_string());
    let info = &record.kinesis_batch_info;
    assert_eq!(info.batch_size, 3, "only the expired records");
    assert_eq!(info.shard_id, input[0].shard_id);
    assert_eq!(
        info.start_sequence_number,
        input[0].sequence_number.to_string()
    );
    assert_eq!(
        info.end_sequence_number,
        input[2].sequence_number.to_string()
    );
    assert_eq!(
        info.approximate_arrival_of_first_record,
        input[0].approximate_arrival_timestamp.to_string()
    );
    assert_eq!(
        info.approximate_arrival_of_last_record,
        input[2].approximate_arrival_timestamp.to_string()
    );
    assert_eq!(info.stream_arn, source().stream_arn);
}

/// The S3 destination's payload holds exactly the expired records' event.
#[tokio::test]
async fn the_destinations_payload_holds_only_the_expired_records() {
    let input = records(&[70_000, 65_000, 5_000]);
    let invoker = Recorder::default();
    let dlq = MemoryDlq {
        with_payload: true,
        ..MemoryDlq::default()
    };
    let options = MappingOptions {
        maximum_record_age_in_seconds: 60,
        ..MappingOptions::default()
    };
    deliver(&invoker, &dlq, options, &input).await;
    let sent = dlq.records.lock().unwrap();
    let expected = payload(&kinesis_event(&input[..2], &source()));
    assert_eq!(
        sent[0].payload.as_deref().map(str::as_bytes),
        Some(&expected[..])
    );
}

/// Arrival times out of order in a shard (a later record that arrived
/// earlier): the fresh records before it are invoked first, so everything
/// before the first unsettled record is always settled and nothing is sent
/// twice when a step resumes.
#[tokio::test]
async fn an_expired_record_after_fresh_ones_waits_its_turn() {
    let input = records(&[1_000, 2_000, 70_000, 3_000]);
    let invoker = Recorder::default();
    let dlq = MemoryDlq::default();
    let options = MappingOptions {
        batch_size: 4,
        maximum_record_age_in_seconds: 60,
        ..MappingOptions::default()
    };
    let report = deliver(&invoker, &dlq, options, &input).await;
    assert_eq!(
        invoked(&invoker),
        vec![seqs(&input[..2]), seqs(&input[3..])]
    );
    let sent = dlq.records.lock().unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].kinesis_batch_info.start_sequence_number,
        input[2].sequence_number.to_string()
    );
    assert_eq!(sent[0].kinesis_batch_info.batch_size, 1);
    assert_eq!(report.counters.delivered, 3);
}

/// Every invoke, of a whole batch or of the part a partial response left,
/// carries the very bytes the event path builds for its records.
#[tokio::test]
async fn retried_parts_are_invoked_with_the_events_own_bytes() {
    let input = records(&[0; 5]);
    let invoker = Recorder {
        fail_once: Mutex::new(vec![input[2].sequence_number.to_string()]),
        ..Recorder::default()
    };
    let dlq = MemoryDlq::default();
    let options = MappingOptions {
        batch_size: 5,
        function_response_types: vec![options::FunctionResponseType::ReportBatchItemFailures],
        ..MappingOptions::default()
    };
    let report = deliver(&invoker, &dlq, options, &input).await;
    assert_eq!(report.counters.delivered, 5);
    let src = source();
    assert_eq!(
        *invoker.payloads.lock().unwrap(),
        vec![
            payload(&kinesis_event(&input, &src)),
            payload(&kinesis_event(&input[2..], &src)),
        ]
    );
}
