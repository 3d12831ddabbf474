//! The events the engine builds are the events the mapping delivers: the
//! `aws_lambda_events` crate's own fixtures and the sample events in
//! `events/`, taken apart into records and built again, come out identical.

use std::path::{Path, PathBuf};

use aws_lambda_events::event::kinesis::KinesisEvent;
use rewind_engine::model::event::{self, DeliveredEvent, EventSource};
use rewind_engine::{ArrivalTime, Record};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Rebuilds `fixture` from its records and compares both the typed event and
/// the JSON bytes' meaning (field names, types, values; not whitespace).
fn assert_rebuilds(fixture: &Path) {
    let text = std::fs::read_to_string(fixture).unwrap();
    let original: Value = serde_json::from_str(&text).unwrap();
    let parsed: KinesisEvent = serde_json::from_str(&text).unwrap();
    assert!(!parsed.records.is_empty(), "{}", fixture.display());
    let first = &parsed.records[0];
    let source = EventSource::new(
        first.event_source_arn.clone().unwrap(),
        first.invoke_identity_arn.clone().unwrap(),
    )
    .unwrap();
    assert_eq!(Some(&source.region), first.aws_region.as_ref());
    let delivered = DeliveredEvent::from_slice(text.as_bytes()).unwrap();
    assert_eq!(delivered.stream_arn.as_ref(), Some(&source.stream_arn));
    let records = delivered.records;

    let rebuilt = event::kinesis_event(&records, &source);
    assert_eq!(rebuilt.records.len(), parsed.records.len());
    for (ours, theirs) in rebuilt.records.iter().zip(&parsed.records) {
        // Every typed field but the arrival time, which the crate's own
        // parser can misread (see `crate_parser_misreads_round_milliseconds`).
        assert_eq!(ours.event_id, theirs.event_id);
        assert_eq!(ours.event_source_arn, theirs.event_source_arn);
        assert_eq!(ours.kinesis.data, theirs.kinesis.data);
        assert_eq!(ours.kinesis.encryption_type, theirs.kinesis.encryption_type);
        assert_eq!(ours.kinesis.partition_key, theirs.kinesis.partition_key);
    }

    let bytes = event::payload(&rebuilt);
    let json: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(json, original, "{}", fixture.display());
    // The timestamp is a JSON number, as the mapping sends it.
    assert!(json["Records"][0]["kinesis"]["approximateArrivalTimestamp"].is_f64());
}

#[test]
fn crate_fixture_is_rebuilt_exactly() {
    assert_rebuilds(&repo().join("tests/fixtures/aws_lambda_events/example-kinesis-event.json"));
}

#[test]
fn encrypted_crate_fixture_is_rebuilt_exactly() {
    assert_rebuilds(
        &repo().join("tests/fixtures/aws_lambda_events/example-kinesis-event-encrypted.json"),
    );
}

#[test]
fn sample_events_are_rebuilt_exactly() {
    let mut seen = 0;
    for entry in std::fs::read_dir(repo().join("events")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("kinesis-") && name.ends_with(".json") {
            assert_rebuilds(&path);
            seen += 1;
        }
    }
    assert!(seen > 0, "events/ holds no kinesis-*.json sample event");
}

#[test]
fn sample_event_records_deaggregate() {
    let text = std::fs::read_to_string(repo().join("events/kinesis-batch.json")).unwrap();
    let mut users = Vec::new();
    for r in DeliveredEvent::from_slice(text.as_bytes()).unwrap().records {
        users.extend(r.deaggregate().unwrap());
    }
    let aggregated: Vec<&Record> = users
        .iter()
        .filter(|r| r.sub_sequence_number.is_some())
        .collect();
    assert!(aggregated.len() >= 2, "the sample holds a KPL aggregate");
    // User records of one aggregate share its sequence number and count up.
    for pair in aggregated.windows(2) {
        if pair[0].sequence_number == pair[1].sequence_number {
            assert_eq!(
                pair[0].sub_sequence_number.unwrap() + 1,
                pair[1].sub_sequence_number.unwrap()
            );
        }
    }
}

/// `aws_lambda_events` 1.2 reads `1732233600.5` as 5 ms past the second.
/// The engine parses delivered events itself; if the crate is fixed, this
/// test says so and the workaround can go.
#[test]
fn crate_parser_misreads_round_milliseconds() {
    let text = std::fs::read_to_string(repo().join("events/kinesis-batch.json")).unwrap();
    let theirs: KinesisEvent = serde_json::from_str(&text).unwrap();
    let ours = DeliveredEvent::from_slice(text.as_bytes()).unwrap();
    // The second record arrived at 1732233600.5.
    assert_eq!(
        ours.records[1].approximate_arrival_timestamp,
        ArrivalTime::from_epoch_millis(1_732_233_600_500)
    );
    assert_eq!(
        theirs.records[1]
            .kinesis
            .approximate_arrival_timestamp
            .timestamp_millis(),
        1_732_233_600_005,
        "aws_lambda_events parses arrival times correctly now: use its parser"
    );
}

#[test]
fn malformed_events_are_rejected_naming_the_field() {
    let text = std::fs::read_to_string(repo().join("events/kinesis-batch.json")).unwrap();
    let cases = [
        (
            "\"eventID\": \"shardId-000000000000:",
            "\"eventID\": \"shardId-000000000000:1",
            "eventID must be <shardId>:<sequenceNumber>",
        ),
        ("stream/orders", "table/orders", "eventSourceARN"),
        (
            "\"sequenceNumber\": \"4",
            "\"sequenceNumber\": \"04",
            "kinesis.sequenceNumber",
        ),
        ("\"aws:kinesis\"", "\"aws:dynamodb\"", "only aws:kinesis"),
    ];
    for (from, to, expected) in cases {
        let bad = text.replacen(from, to, 1);
        assert_ne!(bad, text, "{from}");
        let err = DeliveredEvent::from_slice(bad.as_bytes()).unwrap_err();
        assert!(err.to_string().contains(expected), "{expected}: {err}");
    }
}
