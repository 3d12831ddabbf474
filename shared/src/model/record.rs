//! The record model and the record-line format.
//!
//! A [`Record`] is one Kinesis record, or one user record of a KPL aggregate,
//! with every piece of metadata Kinesis gave it. It is what flows between
//! every source and sink of the engine, and what one line of an S3 chunk or a
//! local file holds:
//!
//! ```json
//! {"stream":"orders","shardId":"shardId-000000000000","sequenceNumber":"4956…","partitionKey":"k1","approximateArrivalTimestamp":1480641523.477,"data":"SGVsbG8="}
//! ```
//!
//! `subSequenceNumber`, `explicitHashKey` and `encryptionType` appear only
//! when known. `data` is the base64 of the exact bytes, so binary payloads
//! round-trip byte for byte; `approximateArrivalTimestamp` is epoch seconds
//! with milliseconds, a JSON number, as Lambda shows it.
//!
//! A KPL aggregate stored as its user records (the S3 archive with
//! `ArchiveDeaggregate`) keeps the Kinesis record it came from on the line of
//! its first user record (`subSequenceNumber` 0), so that a replay to a
//! function can deliver it whole, as the mapping does:
//!
//! ```json
//! {…,"subSequenceNumber":0,"partitionKey":"user-key","data":"dXNlcg==","aggregate":{"partitionKey":"kpl-key","explicitHashKey":"1234","data":"84mawg…"}}
//! ```
//!
//! One nested object, absent on every other line: a query reading user
//! records (`SELECT partitionKey, data …`) sees each once and never needs
//! it; `aggregate.data` is the aggregate's bytes, magic and digest included.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::kpl::{self, KplError};
use crate::model::seqno::{SequenceNumber, UserRecordId};

mod data;

use data::base64_data;
pub use data::{Base64, RecordData};

/// When Kinesis accepted a record, to the millisecond (the precision
/// Kinesis keeps and Lambda shows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArrivalTime {
    epoch_millis: i64,
}

impl ArrivalTime {
    pub const fn from_epoch_millis(epoch_millis: i64) -> Self {
        Self { epoch_millis }
    }

    pub const fn epoch_millis(self) -> i64 {
        self.epoch_millis
    }

    /// Truncates to the millisecond, as Kinesis does.
    pub fn from_datetime(at: DateTime<Utc>) -> Self {
        Self::from_epoch_millis(at.timestamp_millis())
    }

    pub fn to_datetime(self) -> DateTime<Utc> {
        // Every i64 millisecond count that chrono can't represent is far
        // outside any arrival time Kinesis can produce; clamp rather than
        // panic on a hand-written file.
        Utc.timestamp_millis_opt(self.epoch_millis)
            .single()
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// Epoch seconds as the event source mapping writes them: a JSON number
    /// with up to three decimals (`1480641523.477`). The f64 nearest to the
    /// decimal prints back as that decimal, so nothing is lost.
    pub fn as_epoch_seconds(self) -> f64 {
        self.epoch_millis as f64 / 1000.0
    }

    /// Inverse of [`Self::as_epoch_seconds`]; rounds to the millisecond.
    pub fn from_epoch_seconds(seconds: f64) -> Option<Self> {
        let millis = (seconds * 1000.0).round();
        (millis.is_finite() && millis.abs() < 9.0e15)
            .then(|| Self::from_epoch_millis(millis as i64))
    }
}

impl fmt::Display for ArrivalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            self.to_datetime()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        )
    }
}

impl Serialize for ArrivalTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.as_epoch_seconds())
    }
}

impl<'de> Deserialize<'de> for ArrivalTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let seconds = f64::deserialize(deserializer)?;
        Self::from_epoch_seconds(seconds).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "approximateArrivalTimestamp {seconds} is not epoch seconds"
            ))
        })
    }
}

/// One record with all of its metadata. See the module docs for its line form.
///
/// `D` is how the record holds its data: its bytes, as every source and sink
/// but the archiver's S3 path uses it, or [`Base64`], the text an event
/// delivered it as, which an archive line takes as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    bound(serialize = "D: RecordData", deserialize = "D: RecordData")
)]
pub struct Record<D = Vec<u8>> {
    /// Stream name (not ARN): ARNs are rebuilt for the account and region
    /// that a replay targets.
    pub stream: String,
    pub shard_id: String,
    pub sequence_number: SequenceNumber,
    /// Index of the user record inside a KPL aggregate; only for
    /// deaggregated records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_sequence_number: Option<u64>,
    pub partition_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explicit_hash_key: Option<String>,
    /// `KMS` for records of an encrypted stream; the mapping shows it in
    /// the event, so a replay must too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_type: Option<EncryptionType>,
    pub approximate_arrival_timestamp: ArrivalTime,
    #[serde(with = "base64_data")]
    pub data: D,
    /// On the first user record of a deaggregated KPL aggregate: the
    /// Kinesis record it came from (see the module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<Box<Aggregate>>,
}

/// The Kinesis record a KPL aggregate arrived in, as the stream held it:
/// what a user record can't tell (the aggregate's own keys and bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Aggregate {
    pub partition_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explicit_hash_key: Option<String>,
    #[serde(with = "base64_data")]
    pub data: Vec<u8>,
}

/// Server-side encryption of the record in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EncryptionType {
    None,
    Kms,
}

/// A record whose KPL aggregate can't be read.
#[derive(Debug, thiserror::Error)]
#[error("record {id}: KPL aggregate can't be read")]
pub struct DeaggregateError {
    pub id: UserRecordId,
    #[source]
    pub source: KplError,
}

impl<D> Record<D> {
    /// Where this record sits in its shard.
    pub fn id(&self) -> UserRecordId {
        UserRecordId {
            shard_id: self.shard_id.clone(),
            sequence_number: self.sequence_number.clone(),
            sub_sequence_number: self.sub_sequence_number,
        }
    }

    /// The same record with its data held another way.
    pub fn map_data<E>(self, f: impl FnOnce(D) -> E) -> Record<E> {
        Record {
            stream: self.stream,
            shard_id: self.shard_id,
            sequence_number: self.sequence_number,
            sub_sequence_number: self.sub_sequence_number,
            partition_key: self.partition_key,
            explicit_hash_key: self.explicit_hash_key,
            encryption_type: self.encryption_type,
            approximate_arrival_timestamp: self.approximate_arrival_timestamp,
            data: f(self.data),
            aggregate: self.aggregate,
        }
    }
}

impl<D: RecordData> Record<D> {
    /// Whether `data` is a KPL aggregate.
    pub fn is_aggregated(&self) -> bool {
        self.data.is_aggregated()
    }

    /// This record with its data as bytes.
    pub fn into_bytes(self) -> Record {
        self.map_data(RecordData::into_bytes)
    }

    /// Appends this record's line (JSON and a newline) to `out`: the bytes
    /// serde writes for the record, field by field, with the data's base64
    /// copied in as it is rather than through serde_json's string writer,
    /// which looks at every byte for escapes that base64 never needs.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        fn value(out: &mut Vec<u8>, value: &impl Serialize) {
            // Plain strings, integers, an f64 and base64 into a Vec can't
            // fail: serde_json only errors on I/O or non-string map keys.
            serde_json::to_writer(&mut *out, value).expect("a Record always serialises");
        }
        out.extend_from_slice(b"{\"stream\":");
        value(out, &self.stream);
        out.extend_from_slice(b",\"shardId\":");
        value(out, &self.shard_id);
        out.extend_from_slice(b",\"sequenceNumber\":");
        value(out, &self.sequence_number);
        if let Some(sub) = self.sub_sequence_number {
            out.extend_from_slice(b",\"subSequenceNumber\":");
            value(out, &sub);
        }
        out.extend_from_slice(b",\"partitionKey\":");
        value(out, &self.partition_key);
        if let Some(key) = &self.explicit_hash_key {
            out.extend_from_slice(b",\"explicitHashKey\":");
            value(out, key);
        }
        if let Some(encryption) = self.encryption_type {
            out.extend_from_slice(b",\"encryptionType\":");
            value(out, &encryption);
        }
        out.extend_from_slice(b",\"approximateArrivalTimestamp\":");
        value(out, &self.approximate_arrival_timestamp);
        out.extend_from_slice(b",\"data\":\"");
        self.data.write_base64(out);
        out.push(b'"');
        if let Some(aggregate) = &self.aggregate {
            out.extend_from_slice(b",\"aggregate\":");
            value(out, aggregate);
        }
        out.extend_from_slice(b"}\n");
    }
}

impl Record {
    /// The user records inside this record: the record itself when it is
    /// not a KPL aggregate, otherwise one record per user record, with the
    /// aggregate's sequence number and arrival time, its index as the
    /// sub-sequence number, and its own partition and explicit hash keys.
    pub fn deaggregate(self) -> Result<Vec<Self>, DeaggregateError> {
        let users = match kpl::deaggregate(&self.data) {
            Ok(Some(users)) => users,
            Ok(None) => return Ok(vec![self]),
            Err(source) => {
                return Err(DeaggregateError {
                    id: self.id(),
                    source,
                });
            }
        };
        Ok(users
            .into_iter()
            .enumerate()
            .map(|(index, user)| Self {
                stream: self.stream.clone(),
                shard_id: self.shard_id.clone(),
                sequence_number: self.sequence_number.clone(),
                sub_sequence_number: Some(index as u64),
                partition_key: user.partition_key,
                explicit_hash_key: user.explicit_hash_key,
                encryption_type: self.encryption_type,
                approximate_arrival_timestamp: self.approximate_arrival_timestamp,
                data: user.data,
                aggregate: None,
            })
            .collect())
    }

    /// Parses one record line (without needing its newline).
    pub fn from_line(line: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(line)
    }
}

/// `arn:<partition>:kinesis:<region>:<account>:stream/<name>` → `<name>`.
pub fn stream_name_from_arn(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(_), Some("kinesis"), Some(_), Some(_), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let name = resource.strip_prefix("stream/")?;
    // A consumer ARN (`stream/<name>/consumer/<c>:<t>`) names its stream first.
    let name = name.split('/').next()?;
    (!name.is_empty()).then_some(name)
}

/// Base64 as Kinesis and Lambda write it (standard alphabet, padded).
pub fn encode_base64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// Inverse of [`encode_base64`].
pub fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    BASE64.decode(text.as_bytes())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The error and its sources, `a: b: c`, as the functions and the CLI
    /// print them: what a test of an error's text compares.
    pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
        let errors = std::iter::successors(Some(error), |error| error.source());
        errors
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": ")
    }

    /// Record `i` of shard `shard` of stream `orders`, for tests: key
    /// `key-{i}`, arrived `i` ms after 1,700,000,000,000, no data. A test
    /// sets what it is about: `Record { data, ..record(0, i) }`.
    pub(crate) fn record(shard: u32, i: usize) -> Record {
        Record {
            stream: "orders".into(),
            shard_id: format!("shardId-{shard:012}"),
            sequence_number: SequenceNumber::parse(&format!(
                "4959033827149025660855969253836157109592157598913{i:07}"
            ))
            .unwrap(),
            sub_sequence_number: None,
            partition_key: format!("key-{i}"),
            explicit_hash_key: None,
            encryption_type: None,
            approximate_arrival_timestamp: ArrivalTime::from_epoch_millis(
                1_700_000_000_000 + i as i64,
            ),
            data: Vec::new(),
            aggregate: None,
        }
    }

    pub(crate) fn arb_record() -> impl Strategy<Value = Record> {
        (
            "[a-zA-Z0-9_.-]{1,128}",
            0u32..4096,
            "[1-9][0-9]{0,60}",
            proptest::option::of(0u64..100_000),
            "\\PC{1,64}",
            proptest::option::of("[1-9][0-9]{0,38}"),
            proptest::bool::ANY,
            0i64..4_102_444_800_000,
            proptest::collection::vec(any::<u8>(), 0..2048),
        )
            .prop_map(
                |(stream, shard, seq, sub, pk, ehk, kms, millis, data)| Record {
                    stream,
                    shard_id: format!("shardId-{shard:012}"),
                    sequence_number: SequenceNumber::parse(&seq).unwrap(),
                    sub_sequence_number: sub,
                    partition_key: pk,
                    explicit_hash_key: ehk,
                    encryption_type: kms.then_some(EncryptionType::Kms),
                    approximate_arrival_timestamp: ArrivalTime::from_epoch_millis(millis),
                    data,
                    aggregate: None,
                },
            )
    }

    /// [`arb_record`], some with the aggregate a deaggregated user record
    /// keeps.
    fn arb_line_record() -> impl Strategy<Value = Record> {
        let aggregate = (
            "\\PC{1,16}",
            proptest::option::of("[1-9][0-9]{0,38}"),
            proptest::collection::vec(any::<u8>(), 0..64),
        );
        (arb_record(), proptest::option::of(aggregate)).prop_map(|(record, aggregate)| Record {
            aggregate: aggregate.map(|(partition_key, explicit_hash_key, data)| {
                Box::new(Aggregate {
                    partition_key,
                    explicit_hash_key,
                    data,
                })
            }),
            ..record
        })
    }

    proptest! {
        /// A line is the bytes serde writes for the record, whether the
        /// record holds its data's bytes or its base64: the archive's
        /// objects are what they were before lines were written by hand.
        #[test]
        fn lines_are_the_serde_bytes_of_the_record(record in arb_line_record()) {
            let mut expected = serde_json::to_vec(&record).unwrap();
            expected.push(b'\n');
            let mut line = Vec::new();
            record.write_line(&mut line);
            prop_assert_eq!(String::from_utf8(line).unwrap(), String::from_utf8(expected.clone()).unwrap());
            let text = record.clone().map_data(|data| Base64::encode(&data));
            let mut line = Vec::new();
            text.write_line(&mut line);
            prop_assert_eq!(&line, &expected);
            prop_assert_eq!(serde_json::to_vec(&text).unwrap(), serde_json::to_vec(&record).unwrap());
            prop_assert_eq!(text.into_bytes(), record);
        }

        #[test]
        fn record_line_round_trips_binary_payloads(record in arb_record()) {
            let mut line = Vec::new();
            record.write_line(&mut line);
            prop_assert_eq!(line.last(), Some(&b'\n'));
            prop_assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "one line per record");
            let back = Record::from_line(&line).unwrap();
            prop_assert_eq!(back, record);
        }

        #[test]
        fn arrival_time_prints_as_its_decimal(millis in 0i64..4_102_444_800_000) {
            let t = ArrivalTime::from_epoch_millis(millis);
            let printed = serde_json::to_string(&t).unwrap();
            let expected = format!("{}.{:03}", millis / 1000, millis % 1000);
            let expected = expected.trim_end_matches('0');
            let expected = if expected.ends_with('.') { format!("{expected}0") } else { expected.to_owned() };
            prop_assert_eq!(printed, expected);
        }
    }

    #[test]
    fn line_has_the_documented_field_names() {
        let record = Record {
            stream: "orders".into(),
            shard_id: "shardId-000000000001".into(),
            sequence_number: SequenceNumber::parse(
                "49568167373333333333333333333333333333333333333333333333",
            )
            .unwrap(),
            sub_sequence_number: Some(2),
            partition_key: "k1".into(),
            explicit_hash_key: Some("12345".into()),
            encryption_type: None,
            approximate_arrival_timestamp: ArrivalTime::from_epoch_millis(1_480_641_523_477),
            data: b"Hello World".to_vec(),
            aggregate: None,
        };
        let mut line = Vec::new();
        record.write_line(&mut line);
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            "{\"stream\":\"orders\",\"shardId\":\"shardId-000000000001\",\
             \"sequenceNumber\":\"49568167373333333333333333333333333333333333333333333333\",\
             \"subSequenceNumber\":2,\"partitionKey\":\"k1\",\"explicitHashKey\":\"12345\",\
             \"approximateArrivalTimestamp\":1480641523.477,\"data\":\"SGVsbG8gV29ybGQ=\"}\n"
        );
    }

    #[test]
    fn bad_lines_say_which_field() {
        let err = Record::from_line(br#"{"stream":"s","shardId":"a","sequenceNumber":"01","partitionKey":"k","approximateArrivalTimestamp":1,"data":""}"#).unwrap_err();
        assert!(err.to_string().contains("leading zero"), "{err}");
        let err = Record::from_line(br#"{"stream":"s","shardId":"a","sequenceNumber":"1","partitionKey":"k","approximateArrivalTimestamp":1,"data":"***"}"#).unwrap_err();
        assert!(err.to_string().contains("base64"), "{err}");
        let err = Record::from_line(br#"{"stream":"s","shardId":"a","sequenceNumber":"1","partitionKey":"k","approximateArrivalTimestamp":1,"data":"","extra":1}"#).unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");
    }

    #[test]
    fn stream_names_from_arns() {
        assert_eq!(
            stream_name_from_arn("arn:aws:kinesis:us-east-1:123456789012:stream/simple-stream"),
            Some("simple-stream")
        );
        assert_eq!(
            stream_name_from_arn(
                "arn:aws-cn:kinesis:cn-north-1:123456789012:stream/s/consumer/c:1"
            ),
            Some("s")
        );
        assert_eq!(stream_name_from_arn("arn:aws:sqs:us-east-1:1:q"), None);
        assert_eq!(stream_name_from_arn("simple-stream"), None);
    }
}
