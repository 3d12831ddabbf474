//! The S3 archive's key layout (Hive-style, so Athena and Glue can prune by
//! stream, day and hour), which the archive's writer and its scan share:
//!
//! ```text
//! <prefix>/stream=<name>/dt=YYYY-MM-DD/hour=HH/<shardId>/<first>-<last>.jsonl.gz
//! ```
//!
//! `dt` and `hour` are the records' arrival time (UTC); `<first>` and
//! `<last>` their positions in the shard.
//!
//! Beside the partitions, one small marker per shard the archiver has seen
//! records the shard's lineage and the stream's ARN, which the records
//! themselves don't carry and a replay needs after the stream is gone:
//!
//! ```text
//! <prefix>/stream=<name>/_shards/<shardId>.json
//! ```
//!
//! The `_` keeps the folder out of Athena's and Glue's partition scans
//! (both skip names starting with `_`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::chunk::Compression;
use crate::model::record::{ArrivalTime, Record};
use crate::model::seqno::{Position, SequenceNumber, UserRecordId};

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
    /// Within `compression.levels()`; `None`: the compressor's default.
    pub compression_level: Option<u32>,
    pub max_object_bytes: usize,
}

impl Default for ArchiveLayout {
    fn default() -> Self {
        Self {
            prefix: "archive".to_owned(),
            compression: Compression::Gzip,
            compression_level: None,
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

    /// The folder of a stream's shard markers (with its trailing slash, as a
    /// listing prefix).
    pub fn shard_markers(&self, stream: &str) -> String {
        let folder = format!("stream={stream}/_shards/");
        if self.prefix.is_empty() {
            folder
        } else {
            format!("{}/{folder}", self.prefix)
        }
    }

    /// The key of one shard's marker.
    pub fn shard_marker_key(&self, stream: &str, shard_id: &str) -> String {
        format!("{}{shard_id}.json", self.shard_markers(stream))
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
pub fn hour_of<D>(record: &Record<D>) -> DateTime<Utc> {
    let millis = record.approximate_arrival_timestamp.epoch_millis();
    ArrivalTime::from_epoch_millis(millis - millis.rem_euclid(3_600_000)).to_datetime()
}

/// What the archive keeps about one shard, once: the lineage a replay plan
/// groups shards by (children after their parents, unrelated shards in
/// parallel) and the ARN the replayed events carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardMarker {
    pub shard_id: String,
    /// The stream's ARN, from the event's `eventSourceARN`: its account and
    /// region are the archived stream's, whoever replays it.
    pub stream_arn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_shard_id: Option<String>,
    /// The other parent of a merged shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adjacent_parent_shard_id: Option<String>,
    pub hash_key_range: HashKeyRange,
}

/// A shard's hash key range, decimal strings as `ListShards` gives them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HashKeyRange {
    pub starting_hash_key: String,
    pub ending_hash_key: String,
}

/// An archive object, known from its key alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub key: String,
    pub shard_id: String,
    pub first: Position,
    pub last: Position,
}

/// Parses `…/<shardId>/<first>-<last>.<extension>`; `None` for keys the
/// archiver did not write (the caller skips them).
pub fn parse_object_key(key: &str) -> Option<ObjectRef> {
    let (folder, file) = key.rsplit_once('/')?;
    let shard_id = folder.rsplit('/').next()?;
    let stem = &file[..file.find(".jsonl")?];
    let (first, last) = stem.split_once('-')?;
    let position = |text: &str| -> Option<Position> {
        let (seq, sub) = match text.split_once('.') {
            Some((seq, sub)) => (seq, Some(sub.parse().ok()?)),
            None => (text, None),
        };
        Some(Position {
            sequence_number: SequenceNumber::parse(seq).ok()?,
            sub_sequence_number: sub,
        })
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
    hours(from, to).collect()
}

/// [`hours_between`] one at a time (nothing held for a long window).
pub fn hours(from: ArrivalTime, to: ArrivalTime) -> impl Iterator<Item = DateTime<Utc>> {
    let start = hour_start(from.epoch_millis());
    let end = to.epoch_millis();
    (0..)
        .map(move |n| start + n * HOUR)
        .take_while(move |at| *at < end)
        .map(|at| ArrivalTime::from_epoch_millis(at).to_datetime())
}

const HOUR: i64 = 3_600_000;

fn hour_start(millis: i64) -> i64 {
    millis - millis.rem_euclid(HOUR)
}

/// The hour partition an archive key sits in (`…/dt=YYYY-MM-DD/hour=HH/…`).
pub fn partition_hour(key: &str) -> Option<DateTime<Utc>> {
    let at = key
        .find("/dt=")
        .map(|i| i + 1)
        .or_else(|| key.starts_with("dt=").then_some(0))?;
    let rest = key[at..].strip_prefix("dt=")?;
    let day = rest.get(..10)?;
    let hour = rest.get(10..)?.strip_prefix("/hour=")?.get(..2)?;
    let at = chrono::NaiveDateTime::parse_from_str(&format!("{day} {hour}:00"), "%Y-%m-%d %H:%M")
        .ok()?;
    Some(at.and_utc())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn record(shard: u32, seq: u32, millis: i64) -> Record {
        Record {
            partition_key: format!("k{seq}"),
            approximate_arrival_timestamp: ArrivalTime::from_epoch_millis(millis),
            data: vec![seq as u8; 100],
            ..crate::model::record::tests::record(shard, seq as usize)
        }
    }

    // 2024-11-22T00:59:59.000Z
    pub(crate) const BEFORE_HOUR: i64 = 1_732_237_199_000;

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
    fn object_keys_parse_back() {
        let layout = ArchiveLayout::default();
        let r = record(3, 1, BEFORE_HOUR);
        let mut last = r.id();
        last.sub_sequence_number = Some(4);
        let key = layout.object_key("orders", hour_of(&r), &r.id(), &last);
        let parsed = parse_object_key(&key).unwrap();
        assert_eq!(parsed.shard_id, "shardId-000000000003");
        assert_eq!(parsed.first, Position::of(&r));
        assert_eq!(
            parsed.last,
            Position {
                sub_sequence_number: Some(4),
                ..Position::of(&r)
            }
        );
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
    fn shard_markers_sit_beside_the_partitions() {
        let layout = ArchiveLayout::default();
        assert_eq!(
            layout.shard_marker_key("orders", "shardId-000000000003"),
            "archive/stream=orders/_shards/shardId-000000000003.json"
        );
        // Not an archive object: a scan of the stream's folder skips it.
        assert_eq!(
            parse_object_key(&layout.shard_marker_key("orders", "shardId-1")),
            None
        );
        let root = ArchiveLayout {
            prefix: String::new(),
            ..ArchiveLayout::default()
        };
        assert_eq!(root.shard_markers("s"), "stream=s/_shards/");

        let marker = ShardMarker {
            shard_id: "shardId-000000000003".to_owned(),
            stream_arn: "arn:aws:kinesis:eu-west-1:123456789012:stream/orders".to_owned(),
            parent_shard_id: Some("shardId-000000000001".to_owned()),
            adjacent_parent_shard_id: None,
            hash_key_range: HashKeyRange {
                starting_hash_key: "0".to_owned(),
                ending_hash_key: "170141183460469231731687303715884105727".to_owned(),
            },
        };
        let json = serde_json::to_value(&marker).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "shardId": "shardId-000000000003",
                "streamArn": "arn:aws:kinesis:eu-west-1:123456789012:stream/orders",
                "parentShardId": "shardId-000000000001",
                "hashKeyRange": {
                    "startingHashKey": "0",
                    "endingHashKey": "170141183460469231731687303715884105727"
                }
            })
        );
        assert_eq!(serde_json::from_value::<ShardMarker>(json).unwrap(), marker);
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

    #[test]
    fn keys_name_their_hour() {
        let layout = ArchiveLayout::default();
        let r = record(3, 1, BEFORE_HOUR);
        let key = layout.object_key("orders", hour_of(&r), &r.id(), &r.id());
        assert_eq!(partition_hour(&key), Some(hour_of(&r)));
        let root = ArchiveLayout {
            prefix: String::new(),
            ..ArchiveLayout::default()
        };
        let key = root.object_key("orders", hour_of(&r), &r.id(), &r.id());
        assert_eq!(partition_hour(&key), Some(hour_of(&r)));
        assert_eq!(
            partition_hour("archive/stream=s/_shards/shardId-1.json"),
            None
        );
        assert_eq!(
            partition_hour("archive/stream=s/dt=2024-13-01/hour=00/x"),
            None
        );
    }
}
