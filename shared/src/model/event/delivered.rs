//! Parsing what a mapping delivered: the invocation payload into
//! [`Record`]s, their data as bytes or, for the archiver, as the base64 text
//! the event carried ([`Base64`](crate::model::record::Base64)).
//!
//! Ours rather than `aws_lambda_events`' parser, which misreads arrival
//! times whose milliseconds end in zero (`1732233600.5` becomes 5 ms past
//! the second, not 500: it reads the digits after the point as
//! milliseconds). Every string is borrowed from the payload where it has no
//! escapes, so a record's data is copied once: decoded into its bytes, or
//! into the text a `Base64` keeps.

use std::borrow::Cow;

use serde::Deserialize;

use super::{EVENT_SOURCE, StreamArnError};
use crate::model::record::{ArrivalTime, EncryptionType, Record, RecordData, stream_name_from_arn};
use crate::model::seqno::{SequenceNumber, SequenceNumberError};

/// A delivered event record that can't be taken as a [`Record`].
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("event record {event_id:?}: kinesis.sequenceNumber")]
    SequenceNumber {
        event_id: String,
        #[source]
        source: SequenceNumberError,
    },
    #[error(
        "event record {event_id:?}: eventID must be <shardId>:<sequenceNumber>, as the event source mapping writes it (or <shardId>:<sequenceNumber>:<subSequenceNumber> for a user record replayed on its own)"
    )]
    EventId { event_id: String },
    #[error("event record {event_id:?}: eventSourceARN")]
    StreamArn {
        event_id: String,
        #[source]
        source: StreamArnError,
    },
    #[error("event record {event_id:?}: kinesis.data is not base64")]
    Data {
        event_id: String,
        #[source]
        source: base64::DecodeError,
    },
    #[error(
        "event record {event_id:?}: eventSource is {value:?}; only aws:kinesis events are accepted"
    )]
    NotKinesis { event_id: String, value: String },
}

/// The records of an event a Kinesis event source mapping delivered, in the
/// order delivered. Deserialise the invocation payload into it:
/// `DeliveredEvent` holds each record's bytes, `DeliveredEvent<Base64>` the
/// base64 text as delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredEvent<D = Vec<u8>> {
    pub records: Vec<Record<D>>,
    /// `eventSourceARN` of the first record (one mapping, one stream).
    pub stream_arn: Option<String>,
}

impl DeliveredEvent {
    /// Parses an invocation payload.
    pub fn from_slice(payload: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(payload)
    }
}

impl<'de, D: RecordData> Deserialize<'de> for DeliveredEvent<D> {
    fn deserialize<De: serde::Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        let event = InEvent::<Records<D>>::deserialize(deserializer)?;
        Ok(Self {
            records: event.records.records,
            stream_arn: event.records.stream_arn,
        })
    }
}

/// The event as delivered. Every field the mapping always writes is
/// required, and each string is borrowed where it can be.
#[derive(Deserialize)]
struct InEvent<R> {
    #[serde(rename = "Records")]
    records: R,
}

/// The `Records` array, each record made a [`Record`] as soon as it is
/// read: the parsed event records are never all held at once.
struct Records<D> {
    records: Vec<Record<D>>,
    stream_arn: Option<String>,
}

impl<'de, D: RecordData> Deserialize<'de> for Records<D> {
    fn deserialize<De: serde::Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        struct Visit<D>(std::marker::PhantomData<D>);

        impl<'de, D: RecordData> serde::de::Visitor<'de> for Visit<D> {
            type Value = Records<D>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of Kinesis event records")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut records = Vec::new();
                let mut stream_arn = None;
                while let Some(record) = seq.next_element::<InRecord<'de>>()? {
                    // One mapping, one stream: the first record's.
                    if stream_arn.is_none() {
                        stream_arn = Some(record.event_source_arn.to_string());
                    }
                    // serde's error keeps text only: the causes go in with
                    // it, once, or the message would say which field but
                    // not what is wrong.
                    let record = record_from_wire(record)
                        .map_err(|error| serde::de::Error::custom(with_causes(&error)))?;
                    records.push(record);
                }
                Ok(Records {
                    records,
                    stream_arn,
                })
            }
        }

        deserializer.deserialize_seq(Visit(std::marker::PhantomData))
    }
}

// The fields read only so that they are checked as before (required, or
// strings when present) are never used: hence `dead_code`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct InRecord<'a> {
    #[serde(borrow)]
    kinesis: InKinesis<'a>,
    #[serde(borrow)]
    event_source: Cow<'a, str>,
    #[serde(borrow)]
    event_version: Cow<'a, str>,
    #[serde(rename = "eventID", borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    event_name: Cow<'a, str>,
    #[serde(default, borrow)]
    invoke_identity_arn: Cow<'a, str>,
    #[serde(default, borrow)]
    aws_region: Cow<'a, str>,
    #[serde(rename = "eventSourceARN", borrow)]
    event_source_arn: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct InKinesis<'a> {
    #[serde(default, borrow)]
    kinesis_schema_version: Cow<'a, str>,
    #[serde(borrow)]
    partition_key: Cow<'a, str>,
    #[serde(borrow)]
    sequence_number: Cow<'a, str>,
    /// Bytes: base64's check makes serde_json's of UTF-8 redundant.
    #[serde(borrow)]
    data: Cow<'a, [u8]>,
    /// A JSON number, as the mapping writes it.
    approximate_arrival_timestamp: ArrivalTime,
    #[serde(default, borrow)]
    encryption_type: Option<Cow<'a, str>>,
}

fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    std::iter::successors(Some(error), |error| error.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// The shard is only in `eventID` and the stream only in `eventSourceARN`:
/// the mapping puts them nowhere else.
fn record_from_wire<D: RecordData>(record: InRecord<'_>) -> Result<Record<D>, EventError> {
    let InRecord {
        kinesis,
        event_source,
        event_id,
        event_source_arn,
        ..
    } = record;
    let event_id = event_id.as_ref();
    if event_source != EVENT_SOURCE {
        return Err(EventError::NotKinesis {
            event_id: event_id.to_owned(),
            value: event_source.into_owned(),
        });
    }
    let sequence_number = SequenceNumber::parse(&kinesis.sequence_number).map_err(|source| {
        EventError::SequenceNumber {
            event_id: event_id.to_owned(),
            source,
        }
    })?;
    // `<shardId>:<sequenceNumber>`, or with `:<subSequenceNumber>` for a
    // user record delivered on its own (see `event_record`).
    let bad = || EventError::EventId {
        event_id: event_id.to_owned(),
    };
    let (shard_id, rest) = event_id
        .split_once(':')
        .filter(|(shard, _)| !shard.is_empty())
        .ok_or_else(bad)?;
    let sub_sequence_number = match rest.strip_prefix(sequence_number.as_str()) {
        Some("") => None,
        Some(sub) => Some(
            sub.strip_prefix(':')
                .and_then(|sub| sub.parse::<u64>().ok())
                .ok_or_else(bad)?,
        ),
        None => return Err(bad()),
    };
    let stream = stream_name_from_arn(&event_source_arn).ok_or_else(|| EventError::StreamArn {
        event_id: event_id.to_owned(),
        source: StreamArnError {
            arn: event_source_arn.to_string(),
        },
    })?;
    let data = D::from_base64(kinesis.data).map_err(|source| EventError::Data {
        event_id: event_id.to_owned(),
        source,
    })?;
    Ok(Record {
        stream: stream.to_owned(),
        shard_id: shard_id.to_owned(),
        sequence_number,
        sub_sequence_number,
        partition_key: kinesis.partition_key.into_owned(),
        explicit_hash_key: None,
        encryption_type: match kinesis.encryption_type.as_deref() {
            Some("KMS") => Some(EncryptionType::Kms),
            _ => None,
        },
        approximate_arrival_timestamp: kinesis.approximate_arrival_timestamp,
        data,
        aggregate: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::tests::source;
    use crate::model::event::{kinesis_event, payload};
    use crate::model::record::Base64;
    use crate::model::record::tests::{arb_record, chain};
    use proptest::prelude::*;

    proptest! {
        /// The archiver's records (data as delivered) are the records
        /// every other user parses, once decoded.
        #[test]
        fn records_parse_the_same_with_data_as_text(records in proptest::collection::vec(arb_record(), 1..8)) {
            let bytes = payload(&kinesis_event(&records, &source()));
            let decoded = DeliveredEvent::from_slice(&bytes).unwrap();
            let text: DeliveredEvent<Base64> = serde_json::from_slice(&bytes).unwrap();
            prop_assert_eq!(&text.stream_arn, &decoded.stream_arn);
            for (text, decoded) in text.records.into_iter().zip(&decoded.records) {
                prop_assert_eq!(&text.data.decode(), &decoded.data);
                prop_assert_eq!(&text.into_bytes(), decoded);
            }
        }
    }

    /// Bad data is refused before anything is archived, in the same words
    /// whichever way the records hold it.
    #[test]
    fn bad_data_is_refused_either_way() {
        let records = [crate::model::record::tests::record(0, 1)];
        let good = String::from_utf8(payload(&kinesis_event(&records, &source()))).unwrap();
        for (data, says) in [
            ("SGVs*G8=", "Invalid symbol 42, offset 4"),
            ("SGVsbG9=", "Invalid last symbol 57, offset 6"),
            ("SGVsbG8", "Invalid padding"),
        ] {
            let bad = good.replace(r#""data":"""#, &format!(r#""data":"{data}""#));
            assert_ne!(bad, good);
            let decoded = DeliveredEvent::from_slice(bad.as_bytes()).unwrap_err();
            let text =
                serde_json::from_slice::<DeliveredEvent<Base64>>(bad.as_bytes()).unwrap_err();
            assert_eq!(chain(&text), chain(&decoded));
            assert!(
                text.to_string()
                    .contains(&format!("kinesis.data is not base64: {says}")),
                "{text}"
            );
        }
    }
}
