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

use tracing::{info, warn};

use crate::model::archive::{ArchiveLayout, hour_of};
use crate::model::chunk::{self, ChunkError, ChunkSummary, Compression};
use crate::model::record::{Record, RecordData};
use crate::model::seqno::UserRecordId;
use crate::store::{ObjectStore, PutObject, StoreError};

/// The archiver's compression level when none is set
/// (`ARCHIVE_COMPRESSION_LEVEL`, the template's `ArchiveCompressionLevel`),
/// chosen by the archiver bench's numbers (BENCHMARKS.md, "Archiver"). Zstd
/// 1, the archiver's default compression, is the cheapest level that keeps
/// objects near gzip's size, and under the archiver's 50 ms target: 47 ms
/// of CPU per 10,000 records of 1 KiB, for objects 24% larger than gzip
/// 6's (zstd 2 takes 83 ms for 2% larger). Gzip 2 is gzip's knee: 39% less
/// CPU than its usual 6 for objects 5% larger, where gzip 1 makes them 59%
/// larger.
pub fn default_level(compression: Compression) -> Option<u32> {
    match compression {
        Compression::Zstd => Some(1),
        Compression::Gzip => Some(2),
        Compression::None => None,
    }
}

impl ArchiveLayout {
    /// Splits a delivered batch into the objects that will hold it: one per
    /// run of records sharing stream, shard and arrival hour, cut further
    /// where an object would pass `max_object_bytes`. Order is kept.
    pub fn plan<D: RecordData>(&self, records: &[Record<D>]) -> Vec<Range<usize>> {
        let mut plan = Vec::new();
        let mut start = 0;
        let mut bytes = 0usize;
        for (i, record) in records.iter().enumerate() {
            let size = line_size_estimate(record);
            if i > start {
                let head = &records[start];
                let same_place = head.stream == record.stream
                    && head.shard_id == record.shard_id
                    && hour_index(head) == hour_index(record);
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

/// The arrival hour as a number, for comparing hours without making
/// dates of them ([`hour_of`]'s hour, counted from the epoch).
fn hour_index<D>(record: &Record<D>) -> i64 {
    record
        .approximate_arrival_timestamp
        .epoch_millis()
        .div_euclid(3_600_000)
}

/// A record line's size, near enough to bound an object: its data's base64
/// and a few hundred bytes of metadata at most.
fn line_size_estimate<D: RecordData>(record: &Record<D>) -> usize {
    record.data.base64_len() + record.partition_key.len() + 256
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
pub async fn archive_batch<S: ObjectStore, D: RecordData>(
    store: &S,
    layout: &ArchiveLayout,
    records: &[Record<D>],
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

async fn write_object<S: ObjectStore, D: RecordData>(
    store: &S,
    layout: &ArchiveLayout,
    group: &[Record<D>],
) -> Result<ArchivedObject, ArchiveError> {
    let (first, last) = (&group[0], &group[group.len() - 1]);
    let key = layout.object_key(&first.stream, hour_of(first), &first.id(), &last.id());
    // The lines in memory, then compressed in one call (`encode_whole`).
    let (body, summary) = chunk::encode_whole(
        &key,
        group,
        layout.compression,
        layout.compression_level,
        group.iter().map(line_size_estimate).sum(),
    )?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::archive::tests::{BEFORE_HOUR, record};
    use crate::model::chunk;
    use crate::store::MemoryStore;

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
        assert!(layout.plan::<Vec<u8>>(&[]).is_empty());
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
}
