//! The DynamoDB archive: every user record (`ALL`), or only the newest per
//! partition key (`LATEST`), in one table keyed for look-ups by key.
//!
//! One table holds both modes:
//!
//! | attribute | `ALL` item | `LATEST` item |
//! |---|---|---|
//! | `pk` (hash) | `<stream>#<partitionKey>` | same |
//! | `sk` (range) | `<position>` | `LATEST` |
//!
//! `<position>` is the sequence number zero-padded to 129 digits, `#`, and
//! the sub-sequence number zero-padded to 20: string order is numeric order,
//! so a `BETWEEN` on `sk` is a sequence range, and the `LATEST` condition
//! (`position < :new`) keeps the newest record whatever the lengths of the
//! numbers. Stream names can't hold `#`, so `pk` splits unambiguously.
//!
//! KPL aggregates are deaggregated first so that keys are the producers'
//! partition keys. A record whose item would pass DynamoDB's 400 KB item
//! limit keeps its data in S3 and the item points to it (`dataS3Key`):
//! nothing is dropped.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::model::dynamodb_item::{LATEST_SORT_KEY, hash_key, position_key};
use crate::model::record::{EncryptionType, Record};
use crate::model::seqno::Position;
use crate::store::{ObjectStore, StoreError};

/// DynamoDB's item size limit (400 KB, counted as KiB by DynamoDB).
pub const MAX_ITEM_BYTES: usize = 400 * 1024;
/// Items are moved to S3 below the limit by this much, so the estimate's
/// error never matters.
const ITEM_SIZE_MARGIN: usize = 2 * 1024;
/// BatchWriteItem takes at most 25 requests.
const BATCH_WRITE_LIMIT: usize = 25;
/// Requests in flight per mode: 16 BatchWriteItem calls are 400 items, so
/// one shard's second of records (1,000) goes out in three rounds of round
/// trips; 16 conditional puts at a time take a batch of 1,000 distinct keys
/// in about 63 rounds. BENCHMARKS.md has the measured rates.
pub const DEFAULT_WRITE_CONCURRENCY: usize = 16;
/// What the DynamoDB archive keeps for a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ArchiveMode {
    /// Every user record.
    All,
    /// The newest record per partition key.
    Latest,
}

impl ArchiveMode {
    pub const ACCEPTED: &'static str = "ALL, LATEST";
}

impl fmt::Display for ArchiveMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::All => "ALL",
            Self::Latest => "LATEST",
        })
    }
}

/// An unknown archive mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown archive mode {value:?}; accepted values: {}",
    ArchiveMode::ACCEPTED
)]
pub struct UnknownMode {
    pub value: String,
}

impl FromStr for ArchiveMode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "ALL" => Ok(Self::All),
            "LATEST" => Ok(Self::Latest),
            _ => Err(UnknownMode {
                value: s.to_owned(),
            }),
        }
    }
}

/// How one stream is archived in DynamoDB.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamSettings {
    /// Empty: not archived in DynamoDB.
    pub modes: Vec<ArchiveMode>,
    /// Items expire this long after archival (`expireAfter`, epoch seconds).
    pub ttl: Option<Duration>,
}

/// Where a record's data goes when its item would be too large.
pub fn overflow_key(prefix: &str, record: &Record) -> String {
    let name = match record.sub_sequence_number {
        Some(sub) => format!("{}.{sub}", record.sequence_number),
        None => record.sequence_number.to_string(),
    };
    let key = format!(
        "overflow/stream={}/{}/{name}.bin",
        record.stream, record.shard_id
    );
    if prefix.is_empty() {
        key
    } else {
        format!("{prefix}/{key}")
    }
}

/// The item for `record`. `data` is `Err(key)` when the payload lives in S3.
pub fn item(
    record: &Record,
    mode: ArchiveMode,
    archived_at_epoch_seconds: i64,
    ttl: Option<Duration>,
    data: Result<&[u8], &str>,
) -> HashMap<String, AttributeValue> {
    let position = position_key(&Position::of(record));
    let mut item = HashMap::new();
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let n = |v: String| AttributeValue::N(v);
    item.insert(
        "pk".into(),
        s(&hash_key(&record.stream, &record.partition_key)),
    );
    item.insert(
        "sk".into(),
        s(match mode {
            ArchiveMode::All => &position,
            ArchiveMode::Latest => LATEST_SORT_KEY,
        }),
    );
    item.insert("position".into(), AttributeValue::S(position));
    item.insert("stream".into(), s(&record.stream));
    item.insert("shardId".into(), s(&record.shard_id));
    item.insert("sequenceNumber".into(), s(record.sequence_number.as_str()));
    if let Some(sub) = record.sub_sequence_number {
        item.insert("subSequenceNumber".into(), n(sub.to_string()));
    }
    item.insert("partitionKey".into(), s(&record.partition_key));
    if let Some(ehk) = &record.explicit_hash_key {
        item.insert("explicitHashKey".into(), s(ehk));
    }
    if record.encryption_type == Some(EncryptionType::Kms) {
        item.insert("encryptionType".into(), s("KMS"));
    }
    item.insert(
        "approximateArrivalTimestamp".into(),
        n(serde_json::to_string(&record.approximate_arrival_timestamp)
            .expect("an f64 always serialises")),
    );
    item.insert(
        "archivedAt".into(),
        n(archived_at_epoch_seconds.to_string()),
    );
    if let Some(ttl) = ttl {
        let expire = archived_at_epoch_seconds.saturating_add(ttl.as_secs() as i64);
        item.insert("expireAfter".into(), n(expire.to_string()));
    }
    match data {
        Ok(bytes) => {
            item.insert("data".into(), AttributeValue::B(Blob::new(bytes)));
        }
        Err(key) => {
            item.insert("dataS3Key".into(), s(key));
            item.insert("dataBytes".into(), n(record.data.len().to_string()));
        }
    }
    item
}

/// DynamoDB's own item size rule: attribute names plus values (strings and
/// binaries by length, numbers by about one byte per two digits plus one).
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    AttributeValue::S(s) => s.len(),
                    AttributeValue::N(n) => n.len().div_ceil(2) + 1,
                    AttributeValue::B(b) => b.as_ref().len(),
                    _ => 0,
                }
        })
        .sum()
}

/// Why some records could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DynamoError {
    /// The SDK's error, shared by every record the failed call held.
    #[error("writing to DynamoDB table {table} failed")]
    Write {
        table: String,
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "DynamoDB table {table} left {items} items unprocessed after {attempts} attempts (throttled)"
    )]
    Unprocessed {
        table: String,
        items: usize,
        attempts: u32,
    },
    #[error("storing an oversized record's data in S3 failed")]
    Overflow(#[from] StoreError),
}

/// One SDK error, shared by the records of the call it failed.
type SharedError = Arc<dyn std::error::Error + Send + Sync>;

/// Writes to the DynamoDB archive table.
pub struct DynamoArchive<S> {
    client: aws_sdk_dynamodb::Client,
    table: String,
    /// Holds the data of records too large for an item.
    overflow: S,
    overflow_prefix: String,
    /// Attempts for items BatchWriteItem hands back unprocessed (throttled
    /// partitions); the SDK retries whole-request failures itself.
    unprocessed_attempts: u32,
    base_backoff: Duration,
    /// Requests in flight at once, per mode.
    concurrency: usize,
}

impl<S: ObjectStore> DynamoArchive<S> {
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        overflow: S,
        overflow_prefix: impl Into<String>,
    ) -> Self {
        Self {
            client,
            table: table.into(),
            overflow,
            overflow_prefix: overflow_prefix.into(),
            unprocessed_attempts: 8,
            base_backoff: Duration::from_millis(50),
            concurrency: DEFAULT_WRITE_CONCURRENCY,
        }
    }

    /// At most `requests` BatchWriteItem calls (`ALL`) and as many
    /// conditional puts (`LATEST`) in flight at once.
    pub fn with_concurrency(mut self, requests: usize) -> Self {
        self.concurrency = requests.max(1);
        self
    }

    /// Overrides the retry of unprocessed items (tests use a zero backoff).
    pub fn with_unprocessed_retry(mut self, attempts: u32, base_backoff: Duration) -> Self {
        self.unprocessed_attempts = attempts.max(1);
        self.base_backoff = base_backoff;
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn write_error(&self, source: &SharedError) -> DynamoError {
        DynamoError::Write {
            table: self.table.clone(),
            source: Arc::clone(source),
        }
    }
}

mod writes;
pub use writes::DynamoWritten;
#[cfg(test)]
use writes::{item_key, latest_candidates};

#[cfg(test)]
pub(crate) mod tests;
