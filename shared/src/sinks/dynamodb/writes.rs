//! The DynamoDB archive's write path, at shard speed: a shard delivers up
//! to 1,000 records/s, so the requests of one batch go out concurrently, at
//! most [`DynamoArchive::with_concurrency`] at a time (16 by default) for
//! `ALL`'s BatchWriteItem calls and as many for `LATEST`'s conditional
//! puts. One call after another, 1,000 distinct keys took seconds a batch
//! at a few milliseconds a round trip: the shard fell behind.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use futures_util::StreamExt as _;
use futures_util::stream;
use tracing::{debug, warn};

use super::{
    ArchiveMode, BATCH_WRITE_LIMIT, DynamoArchive, DynamoError, ITEM_SIZE_MARGIN, MAX_ITEM_BYTES,
    SharedError, StreamSettings, item, item_size, overflow_key,
};
use crate::model::record::Record;
use crate::model::seqno::{Position, UserRecordId};
use crate::store::{ObjectStore, PutObject};

type Item = HashMap<String, AttributeValue>;

/// What a write did.
#[derive(Debug, Default)]
pub struct DynamoWritten {
    /// The records that were not stored, each with its error; the rest are
    /// stored (or, for `LATEST`, superseded by a newer record).
    pub failed: Vec<(UserRecordId, DynamoError)>,
    /// Items the table accepted: `ALL` items and `LATEST` puts whose
    /// condition held (a put losing to a newer record writes nothing).
    pub items: u64,
}

/// What one group of at most 25 items came to.
#[derive(Default)]
struct GroupOutcome {
    failed: Vec<(usize, DynamoError)>,
    failed_keys: Vec<(String, String)>,
    written: u64,
}

impl<S: ObjectStore> DynamoArchive<S> {
    /// Writes user records (already deaggregated) for the given modes.
    /// Returns the records that were not stored, each with its error; the
    /// rest are stored (or, for `LATEST`, superseded by a newer record).
    pub async fn write(
        &self,
        records: &[Record],
        settings: &StreamSettings,
        archived_at_epoch_seconds: i64,
    ) -> Vec<(UserRecordId, DynamoError)> {
        self.store(records, settings, archived_at_epoch_seconds)
            .await
            .failed
    }

    /// As [`Self::write`], with the count of items written.
    pub async fn store(
        &self,
        records: &[Record],
        settings: &StreamSettings,
        archived_at_epoch_seconds: i64,
    ) -> DynamoWritten {
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
        let data_of = &|index: usize| match data_keys.get(&index) {
            Some(key) => Err(key.as_str()),
            None => Ok(records[index].data.as_slice()),
        };
        let pending: Vec<usize> = (0..records.len())
            .filter(|&i| !failed.contains_key(&records[i].id()))
            .collect();

        let all = async {
            if !settings.modes.contains(&ArchiveMode::All) {
                return (Vec::new(), 0);
            }
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
            self.batch_write(items.collect()).await
        };
        let latest = async {
            if !settings.modes.contains(&ArchiveMode::Latest) {
                return Vec::new();
            }
            // One conditional put per key and batch: the newest record of
            // the key; the older ones could only lose the condition.
            stream::iter(latest_candidates(records, &pending))
                .map(|index| async move {
                    let item = item(
                        &records[index],
                        ArchiveMode::Latest,
                        archived_at_epoch_seconds,
                        settings.ttl,
                        data_of(index),
                    );
                    (index, self.put_latest(item).await)
                })
                .buffer_unordered(self.concurrency)
                .collect::<Vec<_>>()
                .await
        };
        let ((all_failed, all_written), puts) = futures_util::future::join(all, latest).await;
        let mut items = all_written;
        for (index, error) in all_failed {
            failed.entry(records[index].id()).or_insert(error);
        }
        for (index, result) in puts {
            let record = &records[index];
            match result {
                Ok(written) => items += u64::from(written),
                Err(source) => {
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
        DynamoWritten {
            failed: failed.into_iter().collect(),
            items,
        }
    }

    /// BatchWriteItem in groups of 25, at most `concurrency` calls at a
    /// time, retrying unprocessed items with jittered exponential backoff.
    /// Returns the indexes not written and how many items were.
    async fn batch_write(&self, items: Vec<(usize, Item)>) -> (Vec<(usize, DynamoError)>, u64) {
        // The same (pk, sk) twice in one request is a ValidationException;
        // a batch can hold a record twice only if it was delivered twice,
        // and then the last copy is the same item.
        let mut unique: BTreeMap<(String, String), (usize, Item)> = BTreeMap::new();
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
        let all: Vec<(usize, Item)> = unique.into_values().collect();
        let outcomes: Vec<GroupOutcome> = stream::iter(all.chunks(BATCH_WRITE_LIMIT))
            .map(|group| self.write_group(group.to_vec()))
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let mut failed = Vec::new();
        let mut failed_keys = Vec::new();
        let mut written = 0;
        for outcome in outcomes {
            failed.extend(outcome.failed);
            failed_keys.extend(outcome.failed_keys);
            written += outcome.written;
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
        (failed, written)
    }

    /// One BatchWriteItem group, its unprocessed items retried.
    async fn write_group(&self, mut pending: Vec<(usize, Item)>) -> GroupOutcome {
        let mut outcome = GroupOutcome::default();
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
            let sent = pending.len() as u64;
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
                        outcome.failed_keys.push(item_key(&item));
                        outcome.failed.push((index, self.write_error(&source)));
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
                    outcome.written += sent - pending.len() as u64;
                    if pending.is_empty() {
                        break;
                    }
                    if attempt >= self.unprocessed_attempts {
                        let items = pending.len();
                        for (index, item) in pending.drain(..) {
                            outcome.failed_keys.push(item_key(&item));
                            outcome.failed.push((
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
        outcome
    }

    /// Puts a `LATEST` item unless the table holds a newer (or the same)
    /// record for the key. Losing the condition is success: the newest is
    /// kept, which is the whole point. `Ok(true)`: the item was written.
    /// `Err`: the SDK's error, for every record of the key.
    async fn put_latest(&self, item: Item) -> Result<bool, SharedError> {
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
            Ok(_) => Ok(true),
            Err(error)
                if matches!(
                    error.as_service_error(),
                    Some(PutItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                debug!(table = %self.table, "LATEST item already holds a newer record");
                Ok(false)
            }
            Err(error) => Err(Arc::new(error)),
        }
    }
}

/// Only the newest record of each key in a batch needs a conditional put.
pub(super) fn latest_candidates(records: &[Record], pending: &[usize]) -> Vec<usize> {
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

pub(super) fn item_key(item: &Item) -> (String, String) {
    let text = |name: &str| match item.get(name) {
        Some(AttributeValue::S(s)) => s.clone(),
        _ => String::new(),
    };
    (text("pk"), text("sk"))
}
