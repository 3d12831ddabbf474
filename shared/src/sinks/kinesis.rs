//! Putting records back onto a stream: `PutRecords` within its call limits
//! (500 records, 5 MiB), retrying only the entries that failed, never
//! reordering the records of one partition key, optionally wrapped in the
//! Node.js Kinesis archiver's metadata envelope.
//!
//! `PutRecords` gives no order between the entries of one call: if the
//! second of two records of a key succeeded and the first was throttled,
//! retrying the first would put it behind the second. So a call holds at most
//! one record per partition key, and a key's next record waits until the one
//! before it is stored. Throughput per key is one record per call, which is
//! what ordering costs; different keys fill a call.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use serde::Serialize;
use tracing::debug;

use crate::model::record::Record;
use crate::model::seqno::SequenceNumber;

/// PutRecords limits: entries per call and bytes per call (data plus keys).
pub const MAX_ENTRIES: usize = 500;
pub const MAX_CALL_BYTES: usize = 5 * 1024 * 1024;

/// One entry to put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data: Vec<u8>,
}

impl Entry {
    fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// Where PutRecords stored an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub shard_id: String,
    pub sequence_number: SequenceNumber,
}

/// What PutRecords said of one entry: where it was stored, or its error
/// code.
pub type EntryResult = Result<Stored, String>;

/// A PutRecords call that failed as a whole; the source says why.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// Throttled, an internal failure, a timeout, an answer that doesn't
    /// match the request: retried.
    #[error("PutRecords throttled or failed, will retry")]
    Retryable {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Denied, no such stream, an invalid request: retrying can't help.
    #[error("PutRecords failed")]
    Fatal {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Where records are put.
pub trait RecordSink: Send + Sync {
    /// One `PutRecords` call; one result per entry, in order.
    fn put_records(
        &self,
        entries: Vec<Entry>,
    ) -> impl Future<Output = Result<Vec<EntryResult>, PutError>> + Send;
}

/// The Node.js archiver's envelope:
/// `<sep>{"originalApproximateArrivalTimestamp",…}<sep><payload>`, the
/// payload's bytes untouched, so consumers can tell a replayed record by its
/// first byte.
pub fn envelope(record: &Record, separator: &[u8]) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Metadata<'a> {
        original_approximate_arrival_timestamp: f64,
        original_shard_id: &'a str,
        original_sequence_number: &'a str,
        original_stream_name: &'a str,
    }
    let metadata = serde_json::to_vec(&Metadata {
        original_approximate_arrival_timestamp: record
            .approximate_arrival_timestamp
            .as_epoch_seconds(),
        original_shard_id: &record.shard_id,
        original_sequence_number: record.sequence_number.as_str(),
        original_stream_name: &record.stream,
    })
    .expect("metadata always serialises");
    let mut out = Vec::with_capacity(separator.len() * 2 + metadata.len() + record.data.len());
    out.extend_from_slice(separator);
    out.extend_from_slice(&metadata);
    out.extend_from_slice(separator);
    out.extend_from_slice(&record.data);
    out
}

/// How to re-inject.
#[derive(Debug, Clone)]
pub struct ReinjectOptions {
    /// Wrap payloads in the metadata envelope with this separator.
    pub envelope_separator: Option<Vec<u8>>,
    /// Keep the records' explicit hash keys (their original shards' ranges).
    pub keep_explicit_hash_key: bool,
    /// Attempts per entry (throttled entries back off between attempts).
    pub max_attempts: u32,
    pub base_backoff: Duration,
}

impl Default for ReinjectOptions {
    fn default() -> Self {
        Self {
            envelope_separator: None,
            keep_explicit_hash_key: false,
            max_attempts: 20,
            base_backoff: Duration::from_millis(100),
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReinjectReport {
    pub put: u64,
    pub calls: u64,
    /// Entries retried after a per-entry failure (throttling, mostly).
    pub retried_entries: u64,
}

/// Why re-injection stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReinjectError {
    #[error(transparent)]
    Put(#[from] PutError),
    #[error("record {partition_key:?} could not be put after {attempts} attempts: {code}")]
    Exhausted {
        partition_key: String,
        attempts: u32,
        code: String,
    },
}

struct Pending {
    /// Its place in the input.
    index: usize,
    entry: Entry,
    attempts: u32,
}

/// Puts `records` in order per partition key.
pub async fn reinject<S: RecordSink>(
    sink: &S,
    records: impl IntoIterator<Item = Record>,
    options: &ReinjectOptions,
) -> Result<ReinjectReport, ReinjectError> {
    let entries = records.into_iter().map(|record| Entry {
        data: match &options.envelope_separator {
            Some(separator) => envelope(&record, separator),
            None => record.data,
        },
        explicit_hash_key: record
            .explicit_hash_key
            .filter(|_| options.keep_explicit_hash_key),
        partition_key: record.partition_key,
    });
    put_entries(sink, entries, options, |_, _, _| {}).await
}

/// Puts `entries` as they are (the options' envelope and hash-key choices
/// don't apply), in order per partition key, and tells `on_stored` where
/// each one was stored, with its index in the input, in the order they were
/// stored. Producers use it to put records with the same guarantee as a
/// re-injection.
pub async fn put_entries<S: RecordSink>(
    sink: &S,
    entries: impl IntoIterator<Item = Entry>,
    options: &ReinjectOptions,
    mut on_stored: impl FnMut(usize, &Entry, Stored),
) -> Result<ReinjectReport, ReinjectError> {
    let mut input = entries.into_iter().enumerate();
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut report = ReinjectReport::default();
    let mut failing_rounds = 0u32;
    loop {
        // Keep a window of records to choose from: enough to fill a call
        // with distinct keys, bounded whatever the input's size.
        while pending.len() < MAX_ENTRIES * 4 {
            match input.next() {
                Some((index, entry)) => pending.push_back(Pending {
                    index,
                    entry,
                    attempts: 0,
                }),
                None => break,
            }
        }
        if pending.is_empty() {
            return Ok(report);
        }
        let chosen = choose(&pending);
        let entries: Vec<Entry> = chosen.iter().map(|&i| pending[i].entry.clone()).collect();
        report.calls += 1;
        let results = match sink.put_records(entries).await {
            Ok(results) => results,
            Err(error @ PutError::Retryable { .. }) => {
                failing_rounds += 1;
                {
                    // Scoped: a `&dyn Error` held across the sleep would make
                    // the future not `Send`.
                    let error = &error as &(dyn std::error::Error + 'static);
                    debug!(error, "PutRecords failed as a whole; retrying");
                }
                tokio::time::sleep(crate::backoff::backoff(
                    options.base_backoff,
                    failing_rounds,
                ))
                .await;
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        let mut stored = Vec::new();
        let mut any_failed = false;
        for (&index, result) in chosen.iter().zip(results) {
            match result {
                Ok(place) => {
                    on_stored(pending[index].index, &pending[index].entry, place);
                    stored.push(index);
                }
                Err(code) => {
                    any_failed = true;
                    let item = &mut pending[index];
                    item.attempts += 1;
                    report.retried_entries += 1;
                    if item.attempts >= options.max_attempts {
                        return Err(ReinjectError::Exhausted {
                            partition_key: item.entry.partition_key.clone(),
                            attempts: item.attempts,
                            code,
                        });
                    }
                }
            }
        }
        report.put += stored.len() as u64;
        for index in stored.into_iter().rev() {
            pending.remove(index);
        }
        if any_failed {
            failing_rounds += 1;
            tokio::time::sleep(crate::backoff::backoff(
                options.base_backoff,
                failing_rounds.min(6),
            ))
            .await;
        } else {
            failing_rounds = 0;
        }
    }
}

/// The entries of the next call, by index into `pending`: in order, at most
/// one per partition key, and none of a key whose earlier record is not in
/// this call (it must be stored first).
fn choose(pending: &VecDeque<Pending>) -> Vec<usize> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut chosen = Vec::new();
    let mut bytes = 0;
    for (index, item) in pending.iter().enumerate() {
        let key = item.entry.partition_key.as_str();
        if !seen.insert(key) {
            continue;
        }
        if chosen.len() == MAX_ENTRIES
            || (!chosen.is_empty() && bytes + item.entry.size() > MAX_CALL_BYTES)
        {
            break;
        }
        bytes += item.entry.size();
        chosen.push(index);
    }
    chosen
}

/// A stream, through the official client.
#[derive(Debug, Clone)]
pub struct KinesisSink {
    client: aws_sdk_kinesis::Client,
    /// A name or an ARN.
    stream: String,
}

impl KinesisSink {
    /// `stream` is a name (in the client's account and region) or an ARN.
    pub fn new(client: aws_sdk_kinesis::Client, stream: impl Into<String>) -> Self {
        Self {
            client,
            stream: stream.into(),
        }
    }
}

impl RecordSink for KinesisSink {
    async fn put_records(&self, entries: Vec<Entry>) -> Result<Vec<EntryResult>, PutError> {
        let count = entries.len();
        let request: Vec<PutRecordsRequestEntry> = entries
            .into_iter()
            .map(|e| {
                PutRecordsRequestEntry::builder()
                    .partition_key(e.partition_key)
                    .set_explicit_hash_key(e.explicit_hash_key)
                    .data(Blob::new(e.data))
                    .build()
                    .expect("partition key and data are set")
            })
            .collect();
        let output = self
            .client
            .put_records()
            .set_stream_arn(self.stream.starts_with("arn:").then(|| self.stream.clone()))
            .set_stream_name((!self.stream.starts_with("arn:")).then(|| self.stream.clone()))
            .set_records(Some(request))
            .send()
            .await
            .map_err(|error| {
                let retryable = matches!(
                    aws_sdk_kinesis::error::ProvideErrorMetadata::code(&error),
                    Some(
                        "ProvisionedThroughputExceededException"
                            | "LimitExceededException"
                            | "InternalFailure"
                            | "KMSThrottlingException"
                    )
                ) || matches!(
                    error,
                    aws_sdk_kinesis::error::SdkError::TimeoutError(_)
                        | aws_sdk_kinesis::error::SdkError::DispatchFailure(_)
                );
                let source = Box::new(error);
                if retryable {
                    PutError::Retryable { source }
                } else {
                    PutError::Fatal { source }
                }
            })?;
        let results = output
            .records()
            .iter()
            .map(|r| match (r.error_code(), r.shard_id(), r.sequence_number()) {
                (Some(code), _, _) => Ok(Err(code.to_owned())),
                (None, Some(shard_id), Some(sequence)) => Ok(Ok(Stored {
                    shard_id: shard_id.to_owned(),
                    sequence_number: SequenceNumber::parse(sequence).map_err(|error| {
                        PutError::Fatal {
                            source: Box::new(error),
                        }
                    })?,
                })),
                // Stored, but not said where: putting it again would
                // duplicate it, so stop instead.
                (None, _, _) => Err(PutError::Fatal {
                    source: "PutRecords stored an entry without naming its shard and sequence number".into(),
                }),
            })
            .collect::<Result<Vec<EntryResult>, PutError>>()?;
        if results.len() != count {
            return Err(PutError::Retryable {
                source: format!(
                    "PutRecords answered {} results for {count} entries",
                    results.len()
                )
                .into(),
            });
        }
        Ok(results)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::model::record::ArrivalTime;

    /// A stream that throttles every `nth` entry it is offered (0: none),
    /// keeps what it stored in order, and checks each call's limits. Clones
    /// share what they saw.
    #[derive(Clone, Default)]
    pub(crate) struct FakeStream {
        pub nth: usize,
        pub offered: Arc<Mutex<usize>>,
        pub stored: Arc<Mutex<Vec<Entry>>>,
        pub calls: Arc<Mutex<Vec<usize>>>,
    }

    impl RecordSink for FakeStream {
        async fn put_records(&self, entries: Vec<Entry>) -> Result<Vec<EntryResult>, PutError> {
            assert!(entries.len() <= MAX_ENTRIES);
            assert!(
                entries.iter().map(Entry::size).sum::<usize>() <= MAX_CALL_BYTES
                    || entries.len() == 1
            );
            self.calls.lock().unwrap().push(entries.len());
            let mut results = Vec::new();
            for entry in entries {
                let mut offered = self.offered.lock().unwrap();
                *offered += 1;
                if self.nth > 0 && (*offered).is_multiple_of(self.nth) {
                    results.push(Err("ProvisionedThroughputExceededException".to_owned()));
                } else {
                    let mut stored = self.stored.lock().unwrap();
                    stored.push(entry);
                    results.push(Ok(stored_at(stored.len())));
                }
            }
            Ok(results)
        }
    }

    /// Where a fake stream stored its `n`th entry.
    pub(crate) fn stored_at(n: usize) -> Stored {
        Stored {
            shard_id: "shardId-000000000000".to_owned(),
            sequence_number: SequenceNumber::parse(&n.to_string()).unwrap(),
        }
    }

    fn records(n: usize, keys: usize) -> Vec<Record> {
        (0..n)
            .map(|i| Record {
                partition_key: format!("key-{}", i % keys),
                explicit_hash_key: Some(format!("{}", i * 1000)),
                approximate_arrival_timestamp: ArrivalTime::from_epoch_millis(1_700_000_000_123),
                data: vec![i as u8, 0, 255],
                ..crate::model::record::tests::record(1, i)
            })
            .collect()
    }

    fn fast() -> ReinjectOptions {
        ReinjectOptions {
            base_backoff: Duration::ZERO,
            ..ReinjectOptions::default()
        }
    }

    #[tokio::test]
    async fn put_entries_names_where_each_entry_went_once_in_key_order() {
        let entries: Vec<Entry> = records(1_000, 7)
            .into_iter()
            .map(|r| Entry {
                partition_key: r.partition_key,
                explicit_hash_key: None,
                data: r.data,
            })
            .collect();
        let stream = FakeStream {
            nth: 5,
            ..FakeStream::default()
        };
        let mut told: Vec<(usize, String, Stored)> = Vec::new();
        let report = put_entries(&stream, entries.clone(), &fast(), |index, entry, place| {
            told.push((index, entry.partition_key.clone(), place))
        })
        .await
        .unwrap();
        assert_eq!(report.put, 1_000);
        assert!(report.retried_entries > 0);
        // Each entry once, where the stream says it stored it.
        let mut indices: Vec<usize> = told.iter().map(|(i, _, _)| *i).collect();
        indices.sort_unstable();
        assert_eq!(indices, (0..1_000).collect::<Vec<_>>());
        for (n, (index, key, place)) in told.iter().enumerate() {
            assert_eq!(key, &entries[*index].partition_key);
            assert_eq!(place, &stored_at(n + 1));
        }
        // A key's entries are stored in input order, throttling and all.
        let mut last: BTreeMap<&str, usize> = BTreeMap::new();
        for (index, key, _) in &told {
            if let Some(before) = last.insert(key, *index) {
                assert!(before < *index, "{key}: {index} stored after {before}");
            }
        }
    }

    #[tokio::test]
    async fn partial_failures_are_retried_and_per_key_order_is_kept() {
        let input = records(3_000, 40);
        let stream = FakeStream {
            nth: 7,
            ..FakeStream::default()
        };
        let report = reinject(&stream, input.clone(), &fast()).await.unwrap();
        assert_eq!(report.put, 3_000);
        assert!(report.retried_entries > 0);
        let stored = stream.stored.lock().unwrap();
        assert_eq!(stored.len(), 3_000, "each record stored once");
        let mut by_key: BTreeMap<&str, Vec<&[u8]>> = BTreeMap::new();
        for e in stored.iter() {
            by_key.entry(&e.partition_key).or_default().push(&e.data);
        }
        for (key, seen) in by_key {
            let expected: Vec<&[u8]> = input
                .iter()
                .filter(|r| r.partition_key == key)
                .map(|r| r.data.as_slice())
                .collect();
            assert_eq!(seen, expected, "{key}");
        }
        assert!(
            stored.iter().all(|e| e.explicit_hash_key.is_none()),
            "not kept unless asked"
        );
    }

    #[tokio::test]
    async fn calls_hold_distinct_keys_up_to_the_limits() {
        let stream = FakeStream::default();
        let options = ReinjectOptions {
            keep_explicit_hash_key: true,
            ..fast()
        };
        reinject(&stream, records(1_200, 1_000), &options)
            .await
            .unwrap();
        assert_eq!(stream.calls.lock().unwrap()[0], MAX_ENTRIES);
        assert!(
            stream
                .stored
                .lock()
                .unwrap()
                .iter()
                .all(|e| e.explicit_hash_key.is_some())
        );
    }

    #[tokio::test]
    async fn an_entry_that_never_goes_through_is_an_error() {
        let stream = FakeStream {
            nth: 1,
            ..FakeStream::default()
        };
        let options = ReinjectOptions {
            max_attempts: 3,
            ..fast()
        };
        let err = reinject(&stream, records(2, 2), &options)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "record \"key-0\" could not be put after 3 attempts: ProvisionedThroughputExceededException"
        );
    }

    #[test]
    fn the_envelope_is_binary_safe_and_decodable() {
        let record = &records(1, 1)[0];
        let wrapped = envelope(record, b"|");
        assert_eq!(wrapped[0], b'|');
        let end = 1 + wrapped[1..].iter().position(|&b| b == b'|').unwrap();
        let metadata: serde_json::Value = serde_json::from_slice(&wrapped[1..end]).unwrap();
        assert_eq!(
            metadata,
            serde_json::json!({
                "originalApproximateArrivalTimestamp": 1700000000.123,
                "originalShardId": "shardId-000000000001",
                "originalSequenceNumber": record.sequence_number.as_str(),
                "originalStreamName": "orders",
            })
        );
        assert_eq!(&wrapped[end + 1..], record.data.as_slice());
    }
}
