//! The S3 archive read back: [`ArchiveSource`], a replay's bounded source,
//! and the whole-window scan the CLI's and the tests' archive readers use
//! (the objects of a window, listing only its hour partitions, then one
//! shard's records in sequence order, each user record once, one object's
//! records at a time, its bytes streamed).

mod source;
#[cfg(test)]
mod tests;

pub use source::{ArchiveSource, ShardLister};

use std::collections::BTreeMap;

use tracing::warn;

use crate::model::archive::{ArchiveLayout, ObjectRef, hours_between, parse_object_key};
use crate::model::record::{ArrivalTime, Record};
use crate::model::seqno::Position;
use crate::pipeline::dedupe::Dedupe;
use crate::sources::object::ObjectRecords;
pub use crate::sources::object::ScanError;
use crate::store::{ObjectReader, StoreError};

/// Lists the archive objects of `stream` that can hold records that arrived
/// in `from..to` (listing only the hour partitions of the window), grouped
/// by shard and ordered by their first position.
pub async fn plan_scan<R: ObjectReader>(
    reader: &R,
    layout: &ArchiveLayout,
    stream: &str,
    from: ArrivalTime,
    to: ArrivalTime,
) -> Result<BTreeMap<String, Vec<ObjectRef>>, StoreError> {
    let mut shards: BTreeMap<String, Vec<ObjectRef>> = BTreeMap::new();
    for hour in hours_between(from, to) {
        let prefix = format!("{}/", layout.partition(stream, hour));
        for key in reader.list(&prefix).await? {
            match parse_object_key(&key) {
                Some(object) => shards
                    .entry(object.shard_id.clone())
                    .or_default()
                    .push(object),
                None => warn!(%key, "skipping an object the archiver did not write"),
            }
        }
    }
    for objects in shards.values_mut() {
        objects.sort_by(|a, b| a.first.cmp(&b.first).then_with(|| a.last.cmp(&b.last)));
    }
    Ok(shards)
}

/// Reads one shard's archived records of a window in sequence order, each
/// user record once, one object's records in memory at a time (its bytes
/// streamed).
///
/// Objects can overlap (a batch the mapping bisected or resumed is written
/// again from its failed record): ordered by first position, a record at or
/// before the last one emitted has been emitted already and is skipped.
#[derive(Debug)]
pub struct ShardScan {
    objects: std::vec::IntoIter<ObjectRef>,
    from: ArrivalTime,
    to: ArrivalTime,
    seen: Dedupe,
}

impl ShardScan {
    /// Records that arrived in `from..to` (`to` exclusive).
    pub fn new(objects: Vec<ObjectRef>, from: ArrivalTime, to: ArrivalTime) -> Self {
        Self {
            objects: objects.into_iter(),
            from,
            to,
            seen: Dedupe::default(),
        }
    }

    /// Only the records after `position` (a resumed replay's last settled
    /// record).
    pub fn after(self, position: Option<Position>) -> Self {
        Self {
            seen: Dedupe::after(position),
            ..self
        }
    }

    /// The next object's records in the window, not seen before; `None` at
    /// the end. An empty vector means the object held nothing new.
    pub async fn next_batch<R: ObjectReader>(
        &mut self,
        reader: &R,
    ) -> Result<Option<Vec<Record>>, ScanError> {
        let Some(object) = self.objects.next() else {
            return Ok(None);
        };
        read_object(reader, &object, &mut self.seen, (self.from, self.to))
            .await
            .map(Some)
    }
}

/// The records of `object` that arrived in `from..to`, not seen before; an
/// object that holds nothing after the last one seen is not read at all.
pub(crate) async fn read_object<R: ObjectReader>(
    reader: &R,
    object: &ObjectRef,
    seen: &mut Dedupe,
    window: (ArrivalTime, ArrivalTime),
) -> Result<Vec<Record>, ScanError> {
    if holds_nothing_new(object, seen) {
        return Ok(Vec::new());
    }
    let mut records = ObjectRecords::open(reader, &object.key).await?;
    let mut out = Vec::new();
    while let Some(record) = next_in_window(&mut records, seen, window).await? {
        out.push(record);
    }
    Ok(out)
}

/// Whether every record of `object` is at or before the last one seen.
pub(crate) fn holds_nothing_new(object: &ObjectRef, seen: &Dedupe) -> bool {
    seen.last().is_some_and(|last| object.last <= *last)
}

/// The object's next record that arrived in `from..to` and was not seen
/// before; `None` at its end.
pub(crate) async fn next_in_window(
    records: &mut ObjectRecords,
    seen: &mut Dedupe,
    (from, to): (ArrivalTime, ArrivalTime),
) -> Result<Option<Record>, ScanError> {
    while let Some(record) = records.next().await? {
        if !seen.first_time(&record) {
            continue;
        }
        let at = record.approximate_arrival_timestamp;
        if at >= from && at < to {
            return Ok(Some(record));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod scan_tests {
    use super::*;
    use crate::model::archive::tests::{BEFORE_HOUR, record};
    use crate::sinks::s3_archive::archive_batch;
    use crate::store::{MemoryStore, ObjectStore, PutObject};

    /// Overlapping objects (a batch re-delivered from a failed record and
    /// written again), several hours and shards: the scan yields each
    /// record once, in order, only inside the window.
    #[tokio::test]
    async fn scan_reads_each_record_once_in_order_within_the_window() {
        let store = MemoryStore::default();
        let layout = ArchiveLayout::default();
        let shard0: Vec<Record> = (0..30)
            .map(|i| record(0, i, BEFORE_HOUR - 10_000 + i as i64 * 1000))
            .collect();
        let shard1: Vec<Record> = (100..105)
            .map(|i| record(1, i, BEFORE_HOUR + 5_000))
            .collect();
        // First delivery stored 0..20; the mapping re-delivered 12..30.
        for batch in [&shard0[..20], &shard0[12..], &shard1[..], &shard0[5..9]] {
            let outcome = archive_batch(&store, &layout, batch).await;
            assert!(outcome.failed.is_empty());
        }
        // Window: [00:59:55, 01:00:10): records 5..=19 of shard 0, all of shard 1.
        let from = ArrivalTime::from_epoch_millis(BEFORE_HOUR - 5_000);
        let to = ArrivalTime::from_epoch_millis(BEFORE_HOUR + 10_000);
        let plan = plan_scan(&store, &layout, "orders", from, to)
            .await
            .unwrap();
        assert_eq!(
            plan.keys().collect::<Vec<_>>(),
            ["shardId-000000000000", "shardId-000000000001"]
        );
        let mut read: BTreeMap<String, Vec<Record>> = BTreeMap::new();
        for (shard, objects) in plan {
            let mut scan = ShardScan::new(objects, from, to);
            while let Some(batch) = scan.next_batch(&store).await.unwrap() {
                read.entry(shard.clone()).or_default().extend(batch);
            }
        }
        assert_eq!(read["shardId-000000000000"], shard0[5..20].to_vec());
        assert_eq!(read["shardId-000000000001"], shard1);
    }

    #[tokio::test]
    async fn a_corrupt_object_stops_the_scan_with_its_key() {
        let store = MemoryStore::default();
        let layout = ArchiveLayout::default();
        let records: Vec<Record> = (0..3).map(|i| record(0, i, BEFORE_HOUR)).collect();
        let outcome = archive_batch(&store, &layout, &records).await;
        let key = outcome.written[0].key.clone();
        let mut body = store.objects()[&key].body.clone();
        body.truncate(body.len() - 5);
        store
            .put(PutObject {
                key: key.clone(),
                body,
                content_type: "x",
                content_encoding: None,
            })
            .await
            .unwrap();
        let from = ArrivalTime::from_epoch_millis(0);
        let to = ArrivalTime::from_epoch_millis(BEFORE_HOUR + 1);
        let plan = plan_scan(
            &store,
            &layout,
            "orders",
            ArrivalTime::from_epoch_millis(BEFORE_HOUR - 1),
            to,
        )
        .await
        .unwrap();
        let mut scan = ShardScan::new(plan.into_values().next().unwrap(), from, to);
        let err = scan.next_batch(&store).await.unwrap_err();
        assert!(err.to_string().starts_with(&key), "{err}");
    }
}
