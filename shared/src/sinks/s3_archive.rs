//! The S3 archive: where each record of a stream is kept, and the batch
//! writer the archiver function runs on every delivered batch.
//!
//! Layout (Hive-style, so Athena and Glue can prune by stream, day and hour):
//!
//! ```text
//! <prefix>/stream=<name>/dt=YYYY-MM-DD/hour=HH/<shardId>/<first>-<last>.jsonl.gz
//! ```
//!
//! `dt` and `hour` are the records' arrival time (UTC); `<first>` and
//! `<last>` their positions in the shard. The key is derived from the batch
//! alone, so a retried invocation with the same batch rewrites the same
//! object instead of adding a duplicate. (A batch the mapping bisected or
//! resumed mid-way can overlap an earlier object: readers deduplicate.)

use std::ops::Range;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use crate::model::chunk::{ChunkError, ChunkReader, ChunkSummary, ChunkWriter, Compression};
use crate::model::record::{ArrivalTime, Record};
use crate::model::seqno::{SequenceNumber, UserRecordId};
use crate::store::{ObjectReader, ObjectStore, PutObject, StoreError};

/// Uncompressed record-line bytes one archive object holds at most. A
/// delivered batch is at most 6 MB of event (10,000 records), so this only
/// splits batches whose records were deaggregated or are unusually large; it
/// keeps each object small enough for one in-memory upload and a quick read.
pub const DEFAULT_MAX_OBJECT_BYTES: usize = 64 * 1024 * 1024;

/// Where and how the archive stores records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveLayout {
    /// Key prefix without a trailing slash; empty for the bucket root.
    pub prefix: String,
    pub compression: Compression,
    pub max_object_bytes: usize,
}

impl Default for ArchiveLayout {
    fn default() -> Self {
        Self {
            prefix: "archive".to_owned(),
            compression: Compression::Gzip,
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
        }
    }
}

impl ArchiveLayout {
    /// The partition folder of a stream's records that arrived in `hour`.
    pub fn partition(&self, stream: &str, hour: DateTime<Utc>) -> String {
        let folder = format!(
            "stream={stream}/dt={}/hour={}",
            hour.format("%Y-%m-%d"),
            hour.format("%H")
        );
        if self.prefix.is_empty() {
            folder
        } else {
            format!("{}/{folder}", self.prefix)
        }
    }

    /// The key of the object holding a shard's records `first..=last`.
    pub fn object_key(
        &self,
        stream: &str,
        hour: DateTime<Utc>,
        first: &UserRecordId,
        last: &UserRecordId,
    ) -> String {
        format!(
            "{}/{}/{}-{}.{}",
            self.partition(stream, hour),
            first.shard_id,
            position(first),
            position(last),
            self.compression.extension()
        )
    }

    /// Splits a delivered batch into the objects that will hold it: one per
    /// run of records sharing stream, shard and arrival hour, cut further
    /// where an object would pass `max_object_bytes`. Order is kept.
    pub fn plan(&self, records: &[Record]) -> Vec<Range<usize>> {
        let mut plan = Vec::new();
        let mut start = 0;
        let mut bytes = 0usize;
        for (i, record) in records.iter().enumerate() {
            let size = line_size_estimate(record);
            if i > start {
                let head = &records[start];
                let same_place = head.stream == record.stream
                    && head.shard_id == record.shard_id
                    && hour_of(head) == hour_of(record);
                if !same_place || bytes + size > self.max_object_bytes {
                    plan.push(start..i);
                    start = i;
                    bytes = 0;
                }
            }
            bytes += size;
        }
        if start < records.len() {
            plan.push(start..records.len());
        }
        plan
    }
}

/// `<sequence>` or `<sequence>.<sub-sequence>`: sorts and reads as the
/// position it names.
fn position(id: &UserRecordId) -> String {
    match id.sub_sequence_number {
        Some(sub) => format!("{}.{sub}", id.sequence_number),
        None => id.sequence_number.to_string(),
    }
}

/// The start of the hour the record arrived in.
pub fn hour_of(record: &Record) -> DateTime<Utc> {
    let millis = record.approximate_arrival_timestamp.epoch_millis();
    ArrivalTime::from_epoch_millis(millis - millis.rem_euclid(3_600_000)).to_datetime()
}

/// A record line's size, near enough to bound an object: base64 grows data
/// by 4/3, and metadata is a few hundred bytes at most.
fn line_size_estimate(record: &Record) -> usize {
    record.data.len().div_ceil(3) * 4 + record.partition_key.len() + 256
}

/// One object written for a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedObject {
    pub key: String,
    pub summary: ChunkSummary,
    pub compressed_bytes: usize,
}

/// What became of a batch.
#[derive(Debug, Default)]
pub struct ArchiveOutcome {
    pub written: Vec<ArchivedObject>,
    /// The first record that is not stored, per shard, with why. The
    /// mapping resumes a shard from its lowest failed sequence number, so
    /// nothing after it in that shard counts as stored either.
    pub failed: Vec<(UserRecordId, ArchiveError)>,
}

/// Why part of a batch was not archived.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Encode(#[from] ChunkError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Writes a delivered batch to the archive, object by object, in order.
///
/// On the first failure in a shard it stops writing that shard (its later
/// records are re-delivered from the failed one and rewritten under the same
/// keys) and goes on with the other shards.
pub async fn archive_batch<S: ObjectStore>(
    store: &S,
    layout: &ArchiveLayout,
    records: &[Record],
) -> ArchiveOutcome {
    let mut outcome = ArchiveOutcome::default();
    for range in layout.plan(records) {
        let group = &records[range];
        let first = &group[0];
        if outcome
            .failed
            .iter()
            .any(|(id, _)| id.shard_id == first.shard_id)
        {
            continue;
        }
        match write_object(store, layout, group).await {
            Ok(object) => {
                info!(
                    key = %object.key,
                    records = object.summary.records,
                    bytes = object.compressed_bytes,
                    "archived"
                );
                outcome.written.push(object);
            }
            Err(error) => {
                warn!(shard = %first.shard_id, first = %first.sequence_number, error = &error as &(dyn std::error::Error + 'static), "archive write failed");
                outcome.failed.push((first.id(), error));
            }
        }
    }
    outcome
}

async fn write_object<S: ObjectStore>(
    store: &S,
    layout: &ArchiveLayout,
    group: &[Record],
) -> Result<ArchivedObject, ArchiveError> {
    let (first, last) = (&group[0], &group[group.len() - 1]);
    let key = layout.object_key(&first.stream, hour_of(first), &first.id(), &last.id());
    let mut writer = ChunkWriter::new(key.clone(), Vec::new(), layout.compression)?;
    for record in group {
        writer.write(record)?;
    }
    let (body, summary) = writer.finish()?;
    let compressed_bytes = body.len();
    store
        .put(PutObject {
            key: key.clone(),
            body,
            content_type: layout.compression.content_type(),
            content_encoding: layout.compression.content_encoding(),
        })
        .await?;
    Ok(ArchivedObject {
        key,
        summary,
        compressed_bytes,
    })
}

/// An archive object, known from its key alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub key: String,
    pub shard_id: String,
    pub first: (SequenceNumber, Option<u64>),
    pub last: (SequenceNumber, Option<u64>),
}

/// Parses `…/<shardId>/<first>-<last>.<extension>`; `None` for keys the
/// archiver did not write (the caller skips them).
pub fn parse_object_key(key: &str) -> Option<ObjectRef> {
    let (folder, file) = key.rsplit_once('/')?;
    let shard_id = folder.rsplit('/').next()?;
    let stem = &file[..file.find(".jsonl")?];
    let (first, last) = stem.split_once('-')?;
    let position = |text: &str| -> Option<(SequenceNumber, Option<u64>)> {
        match text.split_once('.') {
            Some((seq, sub)) => Some((SequenceNumber::parse(seq).ok()?, Some(sub.parse().ok()?))),
            None => Some((SequenceNumber::parse(text).ok()?, None)),
        }
    };
    Some(ObjectRef {
        key: key.to_owned(),
        shard_id: shard_id.to_owned(),
        first: position(first)?,
        last: position(last)?,
    })
}

/// The hour partitions that can hold records that arrived in `from..to`.
pub fn hours_between(from: ArrivalTime, to: ArrivalTime) -> Vec<DateTime<Utc>> {
    const HOUR: i64 = 3_600_000;
    let start = from.epoch_millis() - from.epoch_millis().rem_euclid(HOUR);
    let mut hours = Vec::new();
    let mut at = start;
    while at < to.epoch_millis() {
        hours.push(ArrivalTime::from_epoch_millis(at).to_datetime());
        at += HOUR;
    }
    hours
}

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

/// Why an archive scan stopped.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Chunk(#[from] ChunkError),
}

/// Reads one shard's archived records of a window in sequence order, each
/// user record once, one object in memory at a time.
///
/// Objects can overlap (a batch the mapping bisected or resumed is written
/// again from its failed record): ordered by first position, a record at or
/// before the last one emitted has been emitted already and is skipped.
#[derive(Debug)]
pub struct ShardScan {
    objects: std::vec::IntoIter<ObjectRef>,
    from: ArrivalTime,
    to: ArrivalTime,
    last: Option<(SequenceNumber, Option<u64>)>,
}

impl ShardScan {
    /// Records that arrived in `from..to` (`to` exclusive).
    pub fn new(objects: Vec<ObjectRef>, from: ArrivalTime, to: ArrivalTime) -> Self {
        Self {
            objects: objects.into_iter(),
            from,
            to,
            last: None,
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
        if self.last.as_ref().is_some_and(|last| object.last <= *last) {
            return Ok(Some(Vec::new()));
        }
        let bytes = reader.get(&object.key).await?;
        let mut out = Vec::new();
        for record in ChunkReader::new(object.key.as_str(), bytes.as_slice())? {
            let record = record?;
            let position = (record.sequence_number.clone(), record.sub_sequence_number);
            if self.last.as_ref().is_some_and(|last| position <= *last) {
                continue;
            }
            self.last = Some(position);
            let at = record.approximate_arrival_timestamp;
            if at >= self.from && at < self.to {
                out.push(record);
            }
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::chunk;
    use crate::model::record::ArrivalTime;
    use crate::model::seqno::SequenceNumber;
    use crate::store::MemoryStore;

    fn record(shard: u32, seq: u32, millis: i64) -> Record {
        Record {
            stream: "orders".into(),
            shard_id: format!("shardId-{shard:012}"),
            sequence_number: SequenceNumber::parse(&format!(
                "4959033827149025660855969253836157109592157598913{seq:07}"
            ))
            .unwrap(),
            sub_sequence_number: None,
            partition_key: format!("k{seq}"),
            explicit_hash_key: None,
            encryption_type: None,
            approximate_arrival_timestamp: ArrivalTime::from_epoch_millis(millis),
            data: vec![seq as u8; 100],
        }
    }

    // 2024-11-22T00:59:59.000Z
    const BEFORE_HOUR: i64 = 1_732_237_199_000;

    #[test]
    fn keys_follow_the_hive_layout() {
        let layout = ArchiveLayout::default();
        let r = record(3, 1, BEFORE_HOUR);
        let mut last = r.id();
        last.sub_sequence_number = Some(4);
        assert_eq!(
            layout.object_key("orders", hour_of(&r), &r.id(), &last),
            "archive/stream=orders/dt=2024-11-22/hour=00/shardId-000000000003/\
             49590338271490256608559692538361571095921575989130000001-\
             49590338271490256608559692538361571095921575989130000001.4.jsonl.gz"
        );
        let root = ArchiveLayout {
            prefix: String::new(),
            compression: Compression::Zstd,
            ..ArchiveLayout::default()
        };
        assert!(
            root.object_key("s", hour_of(&r), &r.id(), &r.id())
                .starts_with("stream=s/dt=2024-11-22/hour=00/")
        );
    }

    #[test]
    fn plan_cuts_at_hour_shard_and_size() {
        let records = vec![
            record(0, 1, BEFORE_HOUR),
            record(0, 2, BEFORE_HOUR + 999),
            record(0, 3, BEFORE_HOUR + 1000), // 01:00:00.000, next hour
            record(1, 4, BEFORE_HOUR + 1001),
            record(1, 5, BEFORE_HOUR + 1002),
        ];
        let layout = ArchiveLayout::default();
        assert_eq!(layout.plan(&records), vec![0..2, 2..3, 3..5]);
        let small = ArchiveLayout {
            max_object_bytes: 2 * line_size_estimate(&records[0]),
            ..ArchiveLayout::default()
        };
        assert_eq!(small.plan(&records), vec![0..2, 2..3, 3..5]);
        let tiny = ArchiveLayout {
            max_object_bytes: 1,
            ..ArchiveLayout::default()
        };
        assert_eq!(tiny.plan(&records), vec![0..1, 1..2, 2..3, 3..4, 4..5]);
        assert!(layout.plan(&[]).is_empty());
    }

    #[tokio::test]
    async fn retried_batch_rewrites_the_same_keys() {
        let store = MemoryStore::default();
        let layout = ArchiveLayout::default();
        let records: Vec<Record> = (0..10)
            .map(|i| record(0, i, BEFORE_HOUR + i as i64 * 400))
            .collect();
        let first = archive_batch(&store, &layout, &records).await;
        let again = archive_batch(&store, &layout, &records).await;
        assert!(first.failed.is_empty() && again.failed.is_empty());
        let keys = |o: &ArchiveOutcome| o.written.iter().map(|w| w.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&first), keys(&again));
        assert_eq!(first.written.len(), 2, "the batch spans an hour boundary");
        let objects = store.objects();
        assert_eq!(objects.len(), 2, "a retry adds no object");
        let mut stored = Vec::new();
        for (key, object) in &objects {
            assert_eq!(object.content_encoding.as_deref(), Some("gzip"));
            stored.extend(chunk::decode(key, &object.body).unwrap());
        }
        assert_eq!(stored, records);
    }

    #[tokio::test]
    async fn a_failed_object_fails_the_rest_of_its_shard_only() {
        let records = vec![
            record(0, 1, BEFORE_HOUR),
            record(0, 2, BEFORE_HOUR + 1000),
            record(0, 3, BEFORE_HOUR + 1001),
            record(1, 4, BEFORE_HOUR),
        ];
        let layout = ArchiveLayout::default();
        let failing_key = layout.object_key(
            "orders",
            hour_of(&records[1]),
            &records[1].id(),
            &records[2].id(),
        );
        let store = MemoryStore::default().failing_on(&failing_key);
        let outcome = archive_batch(&store, &layout, &records).await;
        let failed: Vec<_> = outcome.failed.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(failed, vec![records[1].id()]);
        let written: Vec<_> = outcome
            .written
            .iter()
            .map(|w| w.summary.first.clone().unwrap())
            .collect();
        assert_eq!(written, vec![records[0].id(), records[3].id()]);
        let failed: Vec<UserRecordId> = outcome.failed.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(
            serde_json::to_value(crate::jobs::archiver::batch_response(&failed)).unwrap(),
            serde_json::json!({"batchItemFailures": [{"itemIdentifier": records[1].sequence_number.to_string()}]})
        );
    }

    #[test]
    fn object_keys_parse_back() {
        let layout = ArchiveLayout::default();
        let r = record(3, 1, BEFORE_HOUR);
        let mut last = r.id();
        last.sub_sequence_number = Some(4);
        let key = layout.object_key("orders", hour_of(&r), &r.id(), &last);
        let parsed = parse_object_key(&key).unwrap();
        assert_eq!(parsed.shard_id, "shardId-000000000003");
        assert_eq!(parsed.first, (r.sequence_number.clone(), None));
        assert_eq!(parsed.last, (r.sequence_number.clone(), Some(4)));
        assert_eq!(
            parse_object_key("archive/stream=s/dt=x/hour=1/shardId-1/notes.txt"),
            None
        );
        assert_eq!(
            parse_object_key("archive/stream=s/shardId-1/01-2.jsonl.gz"),
            None
        );
    }

    #[test]
    fn window_hours() {
        let from = ArrivalTime::from_epoch_millis(BEFORE_HOUR); // 00:59:59
        let to = ArrivalTime::from_epoch_millis(BEFORE_HOUR + 1000 + 3_600_000); // 02:00:00, exclusive
        let hours: Vec<String> = hours_between(from, to)
            .iter()
            .map(|h| h.format("%H").to_string())
            .collect();
        assert_eq!(hours, ["00", "01"]);
        assert!(hours_between(to, from).is_empty());
    }

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
