//! Cutting a shard's records into invocations as the mapping does: batches
//! of at most `BatchSize` records under Lambda's 6 MB payload, and the
//! `ParallelizationFactor` lane each partition key is delivered in.

use std::collections::VecDeque;

use crate::model::event::{self, EventSource, PAYLOAD_ENVELOPE_LEN};
use crate::model::record::Record;

/// Lambda's synchronous invocation payload limit (6 MB): a payload must be
/// smaller than this. Lambda refuses one of exactly 6,291,456 bytes with
/// "Request must be smaller than 6291456 bytes for the InvokeFunction
/// operation" (RequestEntityTooLargeException), as reported, for example,
/// in github.com/pelmers/streetwarp-web/issues/14.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

/// The mapping's lane for a partition key: the same key always lands in the
/// same lane, so its records stay in order.
pub fn lane_of(partition_key: &str, lanes: usize) -> usize {
    // FNV-1a: stable across runs and platforms, unlike the std hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in partition_key.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % lanes.max(1) as u64) as usize
}

/// A batch and its event records, each written once ([`event::write_record`])
/// when the batch was cut: every invoke of it, or of any part of it
/// (a partial-response retry, a bisected half, the fresh records beside
/// expired ones), copies these bytes instead of writing the records again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch<'r> {
    records: Vec<&'r Record>,
    /// The event records joined by commas.
    json: Vec<u8>,
    /// Where each record's JSON ends in `json`.
    ends: Vec<usize>,
}

impl<'r> Batch<'r> {
    pub fn records(&self) -> &[&'r Record] {
        &self.records
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The invocation payload: the same bytes as
    /// `event::payload(&event::kinesis_event(records, source))`.
    pub fn payload(&self) -> Vec<u8> {
        event::payload_from_records(&self.json)
    }

    /// The payload's length, without building it.
    pub fn payload_len(&self) -> usize {
        PAYLOAD_ENVELOPE_LEN + self.json.len()
    }

    /// Records `range` as a batch of their own.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Batch<'r> {
        self.select(|i| range.contains(&i))
    }

    /// The records whose index `keep` accepts, in order, as a batch.
    pub fn select(&self, keep: impl Fn(usize) -> bool) -> Batch<'r> {
        let mut out = Batch {
            records: Vec::new(),
            json: Vec::new(),
            ends: Vec::new(),
        };
        for (i, record) in self.records.iter().enumerate() {
            if keep(i) {
                out.push_encoded(record, self.record_json(i));
            }
        }
        out
    }

    fn record_json(&self, i: usize) -> &[u8] {
        let start = match i {
            0 => 0,
            _ => self.ends[i - 1] + 1, // past the comma
        };
        &self.json[start..self.ends[i]]
    }

    fn push_encoded(&mut self, record: &'r Record, json: &[u8]) {
        if !self.records.is_empty() {
            self.json.push(b',');
        }
        self.json.extend_from_slice(json);
        self.ends.push(self.json.len());
        self.records.push(record);
    }
}

/// A batch's event JSON without its records: cut ahead (while another
/// invoke is out) and joined to its records when the batch is due, so the
/// writing is not done between an answer and the next invoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutBatch {
    json: Vec<u8>,
    ends: Vec<usize>,
}

impl CutBatch {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The batch again, its records taken off the front of `queue`: the
    /// caller knows they are the records it was cut from (the same records
    /// in the same order), which is what makes the bytes right. `None`, and
    /// `queue` untouched, when the queue is too short to be that.
    pub fn attach<'r>(self, queue: &mut VecDeque<&'r Record>) -> Option<Batch<'r>> {
        if queue.len() < self.len() {
            return None;
        }
        let records = queue.drain(..self.len()).collect();
        Some(Batch {
            records,
            json: self.json,
            ends: self.ends,
        })
    }
}

impl Batch<'_> {
    /// Its bytes, without the borrow of its records.
    pub fn detach(self) -> CutBatch {
        CutBatch {
            json: self.json,
            ends: self.ends,
        }
    }
}

/// Cuts the next batch off the front of `queue`: at most `batch_size`
/// records and a payload smaller than [`MAX_PAYLOAD_BYTES`] (one record
/// always fits: Kinesis records are at most 1 MiB). Each record is written
/// once; only the one that doesn't fit is written again, by the next batch.
pub fn next_batch<'r>(
    queue: &mut VecDeque<&'r Record>,
    batch_size: usize,
    source: &EventSource,
) -> Batch<'r> {
    let mut batch = Batch {
        records: Vec::new(),
        json: Vec::new(),
        ends: Vec::new(),
    };
    while let Some(&record) = queue.front() {
        if batch.len() >= batch_size {
            break;
        }
        let before = batch.json.len();
        if !batch.is_empty() {
            batch.json.push(b',');
        }
        event::write_record(&mut batch.json, record, source)
            .expect("writing JSON to a Vec can't fail");
        if !batch.is_empty() && PAYLOAD_ENVELOPE_LEN + batch.json.len() >= MAX_PAYLOAD_BYTES {
            batch.json.truncate(before);
            break;
        }
        batch.ends.push(batch.json.len());
        batch.records.push(record);
        queue.pop_front();
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::tests::source;

    fn record(i: usize, key_len: usize, data_len: usize) -> Record {
        Record {
            partition_key: "k".repeat(key_len),
            data: vec![b'x'; data_len],
            ..crate::model::record::tests::record(0, i)
        }
    }

    /// A payload of exactly 6,291,456 bytes is refused by Lambda, so the
    /// record that would make it that size starts the next batch.
    #[test]
    fn a_payload_of_exactly_the_limit_is_cut_before_its_last_record() {
        let source = source();
        let first: Vec<Record> = (0..4).map(|i| record(i, 8, 1024 * 1024)).collect();
        let used = PAYLOAD_ENVELOPE_LEN
            + first
                .iter()
                .map(|r| event::record_payload_len(r, &source))
                .sum::<usize>()
            + (first.len() - 1);
        // The last record, comma included, fills the payload to the byte:
        // its key's length moves its size one byte at a time.
        let room = MAX_PAYLOAD_BYTES - used - 1;
        let last = (1..=256)
            .flat_map(|key_len| (0..4).map(move |extra| (key_len, extra)))
            .map(|(key_len, extra)| {
                let base = event::record_payload_len(&record(4, key_len, 0), &source);
                let data_len = (room.saturating_sub(base) / 4) * 3 + extra;
                record(4, key_len, data_len)
            })
            .find(|r| event::record_payload_len(r, &source) == room)
            .expect("some key length and data length fill the room exactly");
        let mut queue: VecDeque<&Record> = first.iter().chain([&last]).collect();
        let batch = next_batch(&mut queue, 10_000, &source);
        assert_eq!(
            batch.records(),
            first.iter().collect::<Vec<_>>(),
            "the last record would make exactly 6,291,456 bytes"
        );
        assert_eq!(batch.payload_len(), MAX_PAYLOAD_BYTES - room - 1);
        assert_eq!(queue.front(), Some(&&last));
        // One byte less and it fits.
        let shorter = Record {
            partition_key: last.partition_key[1..].to_owned(),
            ..last.clone()
        };
        let mut queue: VecDeque<&Record> = first.iter().chain([&shorter]).collect();
        let batch = next_batch(&mut queue, 10_000, &source);
        assert_eq!(batch.len(), 5);
        assert_eq!(batch.payload_len(), MAX_PAYLOAD_BYTES - 1);
        assert_eq!(batch.payload().len(), MAX_PAYLOAD_BYTES - 1);
    }
}
