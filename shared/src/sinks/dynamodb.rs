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

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use tracing::{debug, warn};

use crate::model::dynamodb_item::{LATEST_SORT_KEY, hash_key, position_key};
use crate::model::record::{EncryptionType, Record};
use crate::model::seqno::{Position, UserRecordId};
use crate::store::{ObjectStore, PutObject, StoreError};

/// DynamoDB's item size limit (400 KB, counted as KiB by DynamoDB).
pub const MAX_ITEM_BYTES: usize = 400 * 1024;
/// Items are moved to S3 below the limit by this much, so the estimate's
/// error never matters.
const ITEM_SIZE_MARGIN: usize = 2 * 1024;
/// BatchWriteItem takes at most 25 requests.
const BATCH_WRITE_LIMIT: usize = 25;
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
        }
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

    /// Writes user records (already deaggregated) for the given modes.
    /// Returns the records that were not stored, each with its error; the
    /// rest are stored (or, for `LATEST`, superseded by a newer record).
    pub async fn write(
        &self,
        records: &[Record],
        settings: &StreamSettings,
        archived_at_epoch_seconds: i64,
    ) -> Vec<(UserRecordId, DynamoError)> {
        let mut failed: BTreeMap<UserRecordId, DynamoError> = BTreeMap::new();
        // Data of oversized records goes to S3 first: an item must never
        // point at an object that isn't there.
        let mut data_keys: HashMap<usize, String> = HashMap::new();
        for (index, record) in records.iter().enumerate() {
            let probe = item(
                record,
                ArchiveMode::All,
                archived_at_epoch_seconds,
                settings.ttl,
                Ok(&record.data),
            );
            if item_size(&probe) + ITEM_SIZE_MARGIN <= MAX_ITEM_BYTES {
                continue;
            }
            let key = overflow_key(&self.overflow_prefix, record);
            let put = PutObject {
                key: key.clone(),
                body: record.data.clone(),
                content_type: "application/octet-stream",
                content_encoding: None,
            };
            match self.overflow.put(put).await {
                Ok(()) => {
                    data_keys.insert(index, key);
                }
                Err(error) => {
                    failed.insert(record.id(), DynamoError::Overflow(error));
                }
            }
        }
        let data_of = |index: usize| match data_keys.get(&index) {
            Some(key) => Err(key.as_str()),
            None => Ok(records[index].data.as_slice()),
        };
        let pending: Vec<usize> = (0..records.len())
            .filter(|&i| !failed.contains_key(&records[i].id()))
            .collect();

        if settings.modes.contains(&ArchiveMode::All) {
            let items = pending.iter().map(|&i| {
                (
                    i,
                    item(
                        &records[i],
                        ArchiveMode::All,
                        archived_at_epoch_seconds,
                        settings.ttl,
                        data_of(i),
                    ),
                )
            });
            for (index, error) in self.batch_write(items.collect()).await {
                failed.entry(records[index].id()).or_insert(error);
            }
        }
        if settings.modes.contains(&ArchiveMode::Latest) {
            for index in latest_candidates(records, &pending) {
                let record = &records[index];
                let item = item(
                    record,
                    ArchiveMode::Latest,
                    archived_at_epoch_seconds,
                    settings.ttl,
                    data_of(index),
                );
                if let Err(source) = self.put_latest(item).await {
                    // Every record of this key that was not written is not
                    // stored: the newest was the one that mattered.
                    for &i in &pending {
                        if records[i].partition_key == record.partition_key
                            && records[i].stream == record.stream
                        {
                            failed
                                .entry(records[i].id())
                                .or_insert_with(|| self.write_error(&source));
                        }
                    }
                }
            }
        }
        failed.into_iter().collect()
    }

    /// BatchWriteItem in groups of 25, retrying unprocessed items with
    /// jittered exponential backoff. Returns the indexes not written.
    async fn batch_write(
        &self,
        items: Vec<(usize, HashMap<String, AttributeValue>)>,
    ) -> Vec<(usize, DynamoError)> {
        let mut failed = Vec::new();
        // The same (pk, sk) twice in one request is a ValidationException;
        // a batch can hold a record twice only if it was delivered twice,
        // and then the last copy is the same item.
        let mut unique: BTreeMap<(String, String), (usize, HashMap<String, AttributeValue>)> =
            BTreeMap::new();
        let mut duplicates: Vec<(usize, (String, String))> = Vec::new();
        for (index, item) in items {
            match unique.entry(item_key(&item)) {
                std::collections::btree_map::Entry::Occupied(seen) => {
                    duplicates.push((index, seen.key().clone()));
                }
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert((index, item));
                }
            }
        }
        let all: Vec<(usize, HashMap<String, AttributeValue>)> = unique.into_values().collect();
        let mut failed_keys = Vec::new();
        for group in all.chunks(BATCH_WRITE_LIMIT) {
            let mut pending: Vec<(usize, HashMap<String, AttributeValue>)> = group.to_vec();
            let mut attempt = 0;
            while !pending.is_empty() {
                attempt += 1;
                let requests: Vec<WriteRequest> = pending
                    .iter()
                    .map(|(_, item)| {
                        WriteRequest::builder()
                            .put_request(
                                PutRequest::builder()
                                    .set_item(Some(item.clone()))
                                    .build()
                                    .expect("item is set"),
                            )
                            .build()
                    })
                    .collect();
                let result = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests)
                    .send()
                    .await;
                match result {
                    Err(error) => {
                        let source: SharedError = Arc::new(error);
                        let shown = source.as_ref() as &(dyn std::error::Error + 'static);
                        warn!(table = %self.table, error = shown, "BatchWriteItem failed");
                        for (index, item) in pending.drain(..) {
                            failed_keys.push(item_key(&item));
                            failed.push((index, self.write_error(&source)));
                        }
                    }
                    Ok(output) => {
                        let unprocessed: Vec<(String, String)> = output
                            .unprocessed_items()
                            .and_then(|m| m.get(&self.table))
                            .map(|requests| {
                                requests
                                    .iter()
                                    .filter_map(|r| r.put_request())
                                    .map(|p| item_key(p.item()))
                                    .collect()
                            })
                            .unwrap_or_default();
                        pending.retain(|(_, item)| unprocessed.contains(&item_key(item)));
                        if pending.is_empty() {
                            break;
                        }
                        if attempt >= self.unprocessed_attempts {
                            let items = pending.len();
                            for (index, item) in pending.drain(..) {
                                failed_keys.push(item_key(&item));
                                failed.push((
                                    index,
                                    DynamoError::Unprocessed {
                                        table: self.table.clone(),
                                        items,
                                        attempts: attempt,
                                    },
                                ));
                            }
                            break;
                        }
                        let delay = crate::backoff::backoff(self.base_backoff, attempt);
                        debug!(table = %self.table, unprocessed = pending.len(), ?delay, "retrying unprocessed items");
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
        for (index, key) in duplicates {
            if failed_keys.contains(&key) {
                failed.push((
                    index,
                    DynamoError::Unprocessed {
                        table: self.table.clone(),
                        items: 1,
                        attempts: 0,
                    },
                ));
            }
        }
        failed
    }

    /// Puts a `LATEST` item unless the table holds a newer (or the same)
    /// record for the key. Losing the condition is success: the newest is
    /// kept, which is the whole point.
    /// `Err`: the SDK's error, for every record of the key.
    async fn put_latest(&self, item: HashMap<String, AttributeValue>) -> Result<(), SharedError> {
        let position = item["position"].clone();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR #position < :position")
            .expression_attribute_names("#position", "position")
            .expression_attribute_values(":position", position)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error)
                if matches!(
                    error.as_service_error(),
                    Some(PutItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                debug!(table = %self.table, "LATEST item already holds a newer record");
                Ok(())
            }
            Err(error) => Err(Arc::new(error)),
        }
    }
}

/// Only the newest record of each key in a batch needs a conditional put.
fn latest_candidates(records: &[Record], pending: &[usize]) -> Vec<usize> {
    let mut newest: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for &i in pending {
        let r = &records[i];
        let entry = newest
            .entry((r.stream.as_str(), r.partition_key.as_str()))
            .or_insert(i);
        let current = &records[*entry];
        if Position::of(r) > Position::of(current) {
            *entry = i;
        }
    }
    newest.into_values().collect()
}

fn item_key(item: &HashMap<String, AttributeValue>) -> (String, String) {
    let text = |name: &str| match item.get(name) {
        Some(AttributeValue::S(s)) => s.clone(),
        _ => String::new(),
    };
    (text("pk"), text("sk"))
}

#[cfg(test)]
pub(crate) mod tests;
