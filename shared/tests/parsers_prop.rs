//! Every parser of outside input, fed arbitrary bytes and damaged versions
//! of valid documents: the KPL deaggregator, the record line and chunk
//! readers, the scrape and replay request and event parsers, the Lambda
//! event parser and the filter-pattern compiler. None may panic, and each
//! refusal must say something: a request error names its field and has a
//! message, every other error displays as a non-empty sentence.
//!
//! Arbitrary bytes mostly stop at the first byte of a JSON or gzip parser;
//! the damaged documents (a valid sample with one value replaced, cut
//! short, or a valid envelope around arbitrary contents) reach the checks
//! behind it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use proptest::prelude::*;
use rewind_engine::Record;
use rewind_engine::jobs::replay::{ReplayEvent, ReplayRequest};
use rewind_engine::jobs::scrape::{ScrapeRequest, ScraperEvent};
use rewind_engine::model::chunk::ChunkReader;
use rewind_engine::model::event::DeliveredEvent;
use rewind_engine::model::kpl::{self, MAGIC};
use rewind_engine::pipeline::filter::{FilterCriteria, FilterEntry, Filters};
use rewind_engine::request::RequestError;
use serde_json::Value;

fn sample(name: &str) -> Value {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// A refused request names a field and says why.
fn said(error: &RequestError) -> Result<(), TestCaseError> {
    prop_assert!(!error.field.is_empty(), "{error:?}");
    prop_assert!(!error.message.trim().is_empty(), "{error:?}");
    Ok(())
}

fn said_error(error: &dyn std::error::Error) -> Result<(), TestCaseError> {
    prop_assert!(!error.to_string().trim().is_empty(), "{error:?}");
    Ok(())
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        // Values the parsers look for, in places they don't expect them.
        prop_oneof![
            Just("ALL"),
            Just("TRIM_HORIZON"),
            Just("LATEST"),
            Just("AT_TIMESTAMP"),
            Just("FUNCTION"),
            Just("S3"),
            Just("SCRAPE"),
            Just("arn:aws:kinesis:us-east-1:123456789012:stream/x"),
            Just("49656626372427914385237262063396478153418658218305732610"),
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every path to a value of `value` (object keys and array indexes).
fn paths(value: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match value {
        Value::Object(fields) => {
            for (key, inner) in fields {
                at.push(key.clone());
                out.push(at.clone());
                paths(inner, at, out);
                at.pop();
            }
        }
        Value::Array(items) => {
            for (i, inner) in items.iter().enumerate() {
                at.push(i.to_string());
                out.push(at.clone());
                paths(inner, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

/// `document` with the value at one of its paths (chosen by `pick`)
/// replaced by `with`, or removed when `with` is `None`.
fn damaged(document: &Value, pick: usize, with: Option<Value>) -> Value {
    let mut all = Vec::new();
    paths(document, &mut Vec::new(), &mut all);
    let mut document = document.clone();
    let path = &all[pick % all.len()];
    let (last, parents) = path.split_last().expect("paths are never empty");
    let mut at = &mut document;
    for step in parents {
        at = match at {
            Value::Object(fields) => fields.get_mut(step).expect("the path exists"),
            Value::Array(items) => &mut items[step.parse::<usize>().expect("an index")],
            _ => unreachable!("paths only go through containers"),
        };
    }
    match (at, with) {
        (Value::Object(fields), Some(value)) => {
            fields.insert(last.clone(), value);
        }
        (Value::Object(fields), None) => {
            fields.remove(last);
        }
        (Value::Array(items), Some(value)) => items[last.parse::<usize>().unwrap()] = value,
        (Value::Array(items), None) => {
            items.remove(last.parse::<usize>().unwrap());
        }
        _ => unreachable!("paths only go through containers"),
    }
    document
}

fn check_scrape(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Err(error) = ScrapeRequest::parse(bytes) {
        said(&error)?;
    }
    if let Err(error) = ScraperEvent::parse(bytes) {
        said(&error)?;
    }
    Ok(())
}

fn check_replay(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Err(error) = ReplayRequest::parse(bytes) {
        said(&error)?;
    }
    if let Err(error) = ReplayRequest::parse_local(bytes) {
        said(&error)?;
    }
    if let Err(error) = ReplayEvent::parse(bytes) {
        said(&error)?;
    }
    Ok(())
}

const SCRAPES: &[&str] = &[
    "scrape-all-shards-to-latest.json",
    "scrape-by-count.json",
    "scrape-by-sequence.json",
    "scrape-by-time.json",
];

const REPLAYS: &[&str] = &[
    "replay-from-archive.json",
    "replay-from-dynamodb.json",
    "replay-from-manifest.json",
    "replay-scrape-first.json",
    "replay-to-stream.json",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn kpl_deaggregation_of_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Err(error) = kpl::deaggregate(&bytes) {
            said_error(&error)?;
        }
    }

    /// The magic and a matching digest around arbitrary protobuf bytes: the
    /// digest check passes and the decoder and the table checks are reached.
    #[test]
    fn kpl_deaggregation_of_any_body_with_a_good_digest(
        body in prop::collection::vec(any::<u8>(), 1..512),
    ) {
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&body);
        data.extend_from_slice(&Md5::digest(&body));
        if let Err(error) = kpl::deaggregate(&data) {
            said_error(&error)?;
        }
    }

    #[test]
    fn record_lines_of_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Err(error) = Record::from_line(&bytes) {
            said_error(&error)?;
        }
    }

    #[test]
    fn damaged_record_lines(pick in any::<usize>(), with in prop::option::of(any_json())) {
        let line = serde_json::json!({
            "stream": "orders", "shardId": "shardId-000000000000",
            "sequenceNumber": "49656626372427914385237262063396478153418658218305732610",
            "subSequenceNumber": 1, "partitionKey": "k", "explicitHashKey": "7",
            "encryptionType": "KMS", "approximateArrivalTimestamp": 1732233600.123,
            "data": "eyJ4IjoxfQ==",
        });
        let bytes = serde_json::to_vec(&damaged(&line, pick, with)).unwrap();
        if let Err(error) = Record::from_line(&bytes) {
            said_error(&error)?;
        }
    }

    /// Plain, gzip and zstd envelopes around arbitrary contents, and any
    /// bytes: each line is a record or an error naming the object and line.
    #[test]
    fn chunks_of_any_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        envelope in 0..3u8,
        cut in any::<usize>(),
    ) {
        let data = match envelope {
            0 => bytes,
            1 => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                encoder.write_all(&bytes).unwrap();
                let mut gz = encoder.finish().unwrap();
                // Sometimes cut short, as an interrupted upload would be.
                if cut % 2 == 0 && !gz.is_empty() {
                    gz.truncate(cut % gz.len());
                }
                gz
            }
            _ => zstd::encode_all(bytes.as_slice(), 1).unwrap(),
        };
        match ChunkReader::new("chunk", data.as_slice()) {
            Ok(reader) => {
                for line in reader.take(10_000) {
                    if let Err(error) = line {
                        said_error(&error)?;
                        prop_assert!(error.to_string().contains("chunk"), "{error}");
                    }
                }
            }
            Err(error) => said_error(&error)?,
        }
    }

    #[test]
    fn scrape_requests_and_events_of_any_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        check_scrape(&bytes)?;
    }

    #[test]
    fn damaged_scrape_requests(
        sample_index in 0..SCRAPES.len(),
        pick in any::<usize>(),
        with in prop::option::of(any_json()),
        action in prop_oneof![Just(None), Just(Some("plan")), Just(Some("planForReplay")),
                              Just(Some("step")), Just(Some("manifest")), Just(Some("run"))],
    ) {
        let request = damaged(&sample(SCRAPES[sample_index]), pick, with);
        check_scrape(&serde_json::to_vec(&request).unwrap())?;
        if let Some(action) = action {
            let event = serde_json::json!({"action": action, "request": request,
                "streamArn": "arn:aws:kinesis:us-east-1:123456789012:stream/orders",
                "runId": "r", "shards": [], "progress": {"cursor": {"shardId": "s"}, "chunks": 0}});
            check_scrape(&serde_json::to_vec(&event).unwrap())?;
        }
    }

    #[test]
    fn replay_requests_and_events_of_any_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        check_replay(&bytes)?;
    }

    #[test]
    fn damaged_replay_requests(
        sample_index in 0..REPLAYS.len(),
        pick in any::<usize>(),
        with in prop::option::of(any_json()),
        action in prop_oneof![Just(None), Just(Some("validate")), Just(Some("plan")),
                              Just(Some("step")), Just(Some("summary"))],
    ) {
        let request = damaged(&sample(REPLAYS[sample_index]), pick, with);
        check_replay(&serde_json::to_vec(&request).unwrap())?;
        if let Some(action) = action {
            let event = serde_json::json!({"action": action, "request": request, "runId": "r",
                "progress": {"shardId": "s"}, "shards": []});
            check_replay(&serde_json::to_vec(&event).unwrap())?;
        }
    }

    #[test]
    fn lambda_events_of_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Err(error) = DeliveredEvent::from_slice(&bytes) {
            said_error(&error)?;
        }
    }

    #[test]
    fn damaged_lambda_events(pick in any::<usize>(), with in prop::option::of(any_json())) {
        let event = damaged(&sample("kinesis-batch.json"), pick, with);
        if let Err(error) = DeliveredEvent::from_slice(&serde_json::to_vec(&event).unwrap()) {
            said_error(&error)?;
        }
    }

    #[test]
    fn filter_patterns_of_any_text(pattern in ".{0,64}") {
        let criteria = FilterCriteria { filters: vec![FilterEntry { pattern }] };
        if let Err(error) = Filters::compile(&criteria) {
            said(&error)?;
            prop_assert!(error.field.starts_with("FilterCriteria.Filters[0]"), "{error:?}");
        }
    }

    /// Patterns of arbitrary JSON under the keys a pattern may use, so the
    /// rule checks behind the JSON parse are reached.
    #[test]
    fn filter_patterns_of_any_json(
        key in prop_oneof![Just("data"), Just("partitionKey"), Just("sequenceNumber"),
                           Just("approximateArrivalTimestamp"), Just("kinesisSchemaVersion"),
                           Just("other")],
        rule in any_json(),
    ) {
        let pattern = serde_json::json!({ key: rule }).to_string();
        let criteria = FilterCriteria { filters: vec![FilterEntry { pattern }] };
        if let Err(error) = Filters::compile(&criteria) {
            said(&error)?;
        }
    }
}
