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

/// Cuts the next batch off the front of `queue`: at most `batch_size`
/// records and a payload smaller than [`MAX_PAYLOAD_BYTES`] (one record
/// always fits: Kinesis records are at most 1 MiB).
pub fn next_batch(
    queue: &mut VecDeque<Record>,
    batch_size: usize,
    source: &EventSource,
) -> Vec<Record> {
    let mut batch = Vec::new();
    let mut bytes = PAYLOAD_ENVELOPE_LEN;
    while let Some(record) = queue.front() {
        if batch.len() >= batch_size {
            break;
        }
        let size = event::record_payload_len(record, source) + usize::from(!batch.is_empty());
        if !batch.is_empty() && bytes + size >= MAX_PAYLOAD_BYTES {
            break;
        }
        bytes += size;
        batch.push(queue.pop_front().expect("front exists"));
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
        let mut queue: VecDeque<Record> = first.iter().cloned().chain([last.clone()]).collect();
        let batch = next_batch(&mut queue, 10_000, &source);
        assert_eq!(
            batch, first,
            "the last record would make exactly 6,291,456 bytes"
        );
        assert_eq!(queue.front(), Some(&last));
        // One byte less and it fits.
        let shorter = Record {
            partition_key: last.partition_key[1..].to_owned(),
            ..last.clone()
        };
        let mut queue: VecDeque<Record> = first.iter().cloned().chain([shorter]).collect();
        assert_eq!(next_batch(&mut queue, 10_000, &source).len(), 5);
    }
}
