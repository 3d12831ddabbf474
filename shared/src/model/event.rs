//! The Kinesis event exactly as a Lambda event source mapping delivers it.
//!
//! A replayed function must not be able to tell a replay from the live
//! mapping, so records become [`KinesisEvent`]s with every field the mapping
//! sets (`eventSource`, `eventVersion`, `eventID` = `<shardId>:<sequence>`,
//! `eventName`, `invokeIdentityArn`, `awsRegion`, the real stream's
//! `eventSourceARN`, and `kinesis{…}`), and [`payload`] serialises them as
//! the mapping does.
//!
//! The serialisation is ours, not `aws_lambda_events`' `Serialize`: that one
//! writes `approximateArrivalTimestamp` as a JSON *string*
//! (`"1480641523.477"`) and always adds `"encryptionType":"NONE"`, while the
//! mapping writes a number and mentions the encryption only for KMS streams.
//! A Python or Node function would see the difference.

use std::borrow::Cow;
use std::io::Write;

use aws_lambda_events::event::kinesis::{
    KinesisEncryptionType, KinesisEvent, KinesisEventRecord, KinesisRecord,
};
use serde::Serialize;

use crate::model::record::{ArrivalTime, EncryptionType, Record, encode_base64};

mod delivered;

pub use delivered::{DeliveredEvent, EventError};

pub const EVENT_SOURCE: &str = "aws:kinesis";
pub const EVENT_NAME: &str = "aws:kinesis:record";
pub const EVENT_VERSION: &str = "1.0";
pub const KINESIS_SCHEMA_VERSION: &str = "1.0";

/// Where the events come from, as the mapping would name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSource {
    /// ARN of the real stream the records were read from.
    pub stream_arn: String,
    /// Region of that stream (the mapping's `awsRegion`).
    pub region: String,
    /// The role the mapping invokes with (the target function's execution
    /// role for a live mapping).
    pub invoke_identity_arn: String,
}

/// A stream ARN that can't be used as `eventSourceARN`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stream ARN {arn:?} is not arn:<partition>:kinesis:<region>:<account>:stream/<name>")]
pub struct StreamArnError {
    pub arn: String,
}

impl EventSource {
    /// The region is read from the ARN, never assumed: events replayed from
    /// another region's stream keep their own `awsRegion`.
    pub fn new(
        stream_arn: impl Into<String>,
        invoke_identity_arn: impl Into<String>,
    ) -> Result<Self, StreamArnError> {
        let stream_arn = stream_arn.into();
        let region = match stream_arn.split(':').collect::<Vec<_>>().as_slice() {
            ["arn", _, "kinesis", region, _, resource]
                if !region.is_empty() && resource.starts_with("stream/") && resource.len() > 7 =>
            {
                (*region).to_owned()
            }
            _ => return Err(StreamArnError { arn: stream_arn }),
        };
        Ok(Self {
            stream_arn,
            region,
            invoke_identity_arn: invoke_identity_arn.into(),
        })
    }
}

/// One event record for `record`, as the mapping builds it.
pub fn event_record(record: &Record, source: &EventSource) -> KinesisEventRecord {
    let mut kinesis = KinesisRecord::default();
    // Both wrappers are `#[non_exhaustive]`: fill the defaults in place.
    *kinesis.approximate_arrival_timestamp = record.approximate_arrival_timestamp.to_datetime();
    kinesis.data.0 = record.data.clone();
    kinesis.encryption_type = match record.encryption_type {
        Some(EncryptionType::Kms) => KinesisEncryptionType::Kms,
        _ => KinesisEncryptionType::None,
    };
    kinesis.partition_key = record.partition_key.clone();
    kinesis.sequence_number = record.sequence_number.to_string();
    kinesis.kinesis_schema_version = Some(KINESIS_SCHEMA_VERSION.to_owned());

    let mut event_record = KinesisEventRecord::default();
    event_record.aws_region = Some(source.region.clone());
    event_record.event_id = Some(event_id(record));
    event_record.event_name = Some(EVENT_NAME.to_owned());
    event_record.event_source = Some(EVENT_SOURCE.to_owned());
    event_record.event_source_arn = Some(source.stream_arn.clone());
    event_record.event_version = Some(EVENT_VERSION.to_owned());
    event_record.invoke_identity_arn = Some(source.invoke_identity_arn.clone());
    event_record.kinesis = kinesis;
    event_record
}

/// The mapping's `eventID` for `record`: `<shardId>:<sequenceNumber>`.
pub fn event_id(record: &Record) -> String {
    match record.sub_sequence_number {
        // A user record delivered on its own (a request's `deliver:
        // USER_RECORDS`) shares its aggregate's sequence number: its
        // sub-sequence number keeps its eventID its own.
        Some(sub) => format!("{}:{}:{sub}", record.shard_id, record.sequence_number),
        None => format!("{}:{}", record.shard_id, record.sequence_number),
    }
}

/// The event for a batch of records, in the order given.
pub fn kinesis_event<'a>(
    records: impl IntoIterator<Item = &'a Record>,
    source: &EventSource,
) -> KinesisEvent {
    let mut event = KinesisEvent::default();
    event.records = records
        .into_iter()
        .map(|record| event_record(record, source))
        .collect();
    event
}

/// The invocation payload: the bytes the mapping would send.
pub fn payload(event: &KinesisEvent) -> Vec<u8> {
    let mut out = Vec::new();
    write_payload(&mut out, event).expect("writing JSON to a Vec can't fail");
    out
}

/// Streams the invocation payload into `out`.
pub fn write_payload(out: &mut impl Write, event: &KinesisEvent) -> std::io::Result<()> {
    let wire = WireEvent {
        records: event.records.iter().map(WireRecord::from).collect(),
    };
    serde_json::to_writer(out, &wire).map_err(std::io::Error::other)
}

/// Bytes that `record` adds to a payload (its JSON object; add one per
/// separating comma). Lets batchers keep an invoke under Lambda's 6 MB
/// request limit without serialising whole batches to measure them.
pub fn record_payload_len(record: &Record, source: &EventSource) -> usize {
    let mut counter = ByteCounter(0);
    write_record(&mut counter, record, source).expect("counting bytes can't fail");
    counter.0
}

/// Writes `record`'s event record (its JSON object, the bytes
/// [`payload`] writes for it) straight from the record: no
/// [`KinesisEventRecord`] in between, so its data is never copied before
/// it is base64-encoded. Batchers write each record once and assemble
/// payloads from these bytes with [`payload_from_records`].
pub fn write_record(
    out: &mut impl Write,
    record: &Record,
    source: &EventSource,
) -> std::io::Result<()> {
    let wire = WireRecord {
        kinesis: WireKinesis {
            kinesis_schema_version: Cow::Borrowed(KINESIS_SCHEMA_VERSION),
            partition_key: Cow::Borrowed(&record.partition_key),
            sequence_number: Cow::Borrowed(record.sequence_number.as_str()),
            data: Cow::Owned(encode_base64(&record.data)),
            approximate_arrival_timestamp: record.approximate_arrival_timestamp,
            encryption_type: match record.encryption_type {
                Some(EncryptionType::Kms) => Some(Cow::Borrowed("KMS")),
                _ => None,
            },
        },
        event_source: Cow::Borrowed(EVENT_SOURCE),
        event_version: Cow::Borrowed(EVENT_VERSION),
        event_id: Cow::Owned(event_id(record)),
        event_name: Cow::Borrowed(EVENT_NAME),
        invoke_identity_arn: Cow::Borrowed(&source.invoke_identity_arn),
        aws_region: Cow::Borrowed(&source.region),
        event_source_arn: Cow::Borrowed(&source.stream_arn),
    };
    serde_json::to_writer(out, &wire).map_err(std::io::Error::other)
}

/// The invocation payload around event records already written with
/// [`write_record`] and joined by commas: the same bytes as [`payload`].
pub fn payload_from_records(records: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PAYLOAD_ENVELOPE_LEN + records.len());
    out.extend_from_slice(PAYLOAD_PREFIX);
    out.extend_from_slice(records);
    out.extend_from_slice(PAYLOAD_SUFFIX);
    out
}

const PAYLOAD_PREFIX: &[u8] = br#"{"Records":["#;
const PAYLOAD_SUFFIX: &[u8] = b"]}";

/// Bytes of a payload around its records: `{"Records":[` and `]}`.
pub const PAYLOAD_ENVELOPE_LEN: usize = PAYLOAD_PREFIX.len() + PAYLOAD_SUFFIX.len();

struct ByteCounter(usize);

impl Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The mapping's field order and types (what it delivered is parsed in
/// [`delivered`]).
#[derive(Serialize)]
struct WireEvent<'a> {
    #[serde(rename = "Records")]
    records: Vec<WireRecord<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireRecord<'a> {
    kinesis: WireKinesis<'a>,
    event_source: Cow<'a, str>,
    event_version: Cow<'a, str>,
    #[serde(rename = "eventID")]
    event_id: Cow<'a, str>,
    event_name: Cow<'a, str>,
    invoke_identity_arn: Cow<'a, str>,
    aws_region: Cow<'a, str>,
    #[serde(rename = "eventSourceARN")]
    event_source_arn: Cow<'a, str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireKinesis<'a> {
    kinesis_schema_version: Cow<'a, str>,
    partition_key: Cow<'a, str>,
    sequence_number: Cow<'a, str>,
    data: Cow<'a, str>,
    /// A JSON number, as the mapping writes it.
    approximate_arrival_timestamp: ArrivalTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    encryption_type: Option<Cow<'a, str>>,
}

impl<'a> From<&'a KinesisEventRecord> for WireRecord<'a> {
    fn from(record: &'a KinesisEventRecord) -> Self {
        let kinesis = &record.kinesis;
        let text = |value: &'a Option<String>, default: &'static str| {
            Cow::Borrowed(value.as_deref().unwrap_or(default))
        };
        Self {
            kinesis: WireKinesis {
                kinesis_schema_version: text(
                    &kinesis.kinesis_schema_version,
                    KINESIS_SCHEMA_VERSION,
                ),
                partition_key: Cow::Borrowed(&kinesis.partition_key),
                sequence_number: Cow::Borrowed(&kinesis.sequence_number),
                data: Cow::Owned(encode_base64(&kinesis.data.0)),
                approximate_arrival_timestamp: ArrivalTime::from_datetime(
                    *kinesis.approximate_arrival_timestamp,
                ),
                encryption_type: match kinesis.encryption_type {
                    KinesisEncryptionType::Kms => Some(Cow::Borrowed("KMS")),
                    _ => None,
                },
            },
            event_source: text(&record.event_source, EVENT_SOURCE),
            event_version: text(&record.event_version, EVENT_VERSION),
            event_id: text(&record.event_id, ""),
            event_name: text(&record.event_name, EVENT_NAME),
            invoke_identity_arn: text(&record.invoke_identity_arn, ""),
            aws_region: text(&record.aws_region, ""),
            event_source_arn: text(&record.event_source_arn, ""),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::record::tests::arb_record;
    use proptest::prelude::*;

    /// The event source the engine's tests deliver from.
    pub(crate) fn source() -> EventSource {
        EventSource::new(
            "arn:aws:kinesis:eu-west-1:111122223333:stream/orders",
            "arn:aws:iam::111122223333:role/consumer",
        )
        .unwrap()
    }

    #[test]
    fn region_comes_from_the_stream_arn() {
        assert_eq!(source().region, "eu-west-1");
        for bad in [
            "orders",
            "arn:aws:kinesis::1:stream/orders",
            "arn:aws:kinesis:eu-west-1:1:stream/",
            "arn:aws:sqs:eu-west-1:1:stream/x",
        ] {
            let err = EventSource::new(bad, "r").unwrap_err();
            assert!(err.to_string().contains("stream/<name>"), "{err}");
        }
    }

    proptest! {
        #[test]
        fn payload_length_is_predicted_exactly(records in proptest::collection::vec(arb_record(), 0..8)) {
            let src = source();
            let bytes = payload(&kinesis_event(&records, &src));
            let predicted = PAYLOAD_ENVELOPE_LEN
                + records.iter().map(|r| record_payload_len(r, &src)).sum::<usize>()
                + records.len().saturating_sub(1);
            prop_assert_eq!(bytes.len(), predicted);
        }

        /// The batcher's path (each record written once, joined) gives the
        /// very bytes of the event path, so either can build an invoke.
        #[test]
        fn records_written_once_make_the_same_payload(records in proptest::collection::vec(arb_record(), 0..8)) {
            let src = source();
            let mut joined = Vec::new();
            for (i, record) in records.iter().enumerate() {
                if i > 0 {
                    joined.push(b',');
                }
                write_record(&mut joined, record, &src).unwrap();
            }
            prop_assert_eq!(
                String::from_utf8(payload_from_records(&joined)).unwrap(),
                String::from_utf8(payload(&kinesis_event(&records, &src))).unwrap()
            );
        }

        #[test]
        fn payload_parses_back_to_the_records(records in proptest::collection::vec(arb_record(), 1..8)) {
            let src = source();
            let bytes = payload(&kinesis_event(&records, &src));
            let parsed = DeliveredEvent::from_slice(&bytes).unwrap();
            prop_assert_eq!(parsed.records.len(), records.len());
            for (back, record) in parsed.records.iter().zip(&records) {
                prop_assert_eq!(&back.data, &record.data);
                prop_assert_eq!(&back.sequence_number, &record.sequence_number);
                prop_assert_eq!(&back.shard_id, &record.shard_id);
                prop_assert_eq!(&back.partition_key, &record.partition_key);
                prop_assert_eq!(back.approximate_arrival_timestamp, record.approximate_arrival_timestamp);
                prop_assert_eq!(back.encryption_type, record.encryption_type);
                prop_assert_eq!(back.stream.as_str(), "orders");
                // A user record's own eventID carries its sub-sequence number.
                prop_assert_eq!(back.sub_sequence_number, record.sub_sequence_number);
            }
        }
    }
}
