//! Cutting a shard's records into invocations as the mapping does: batches
//! of at most `BatchSize` records under Lambda's 6 MB payload, and the
//! `ParallelizationFactor` lane each partition key is delivered in.

use std::collections::VecDeque;

use crate::model::event::{self, EventSource, PAYLOAD_ENVELOPE_LEN};
use crate::model::record::Record;

/// Lambda's synchronous invocation payload limit (6 MB).
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
/// records and a payload under 6 MB (one record always fits: Kinesis
/// records are at most 1 MiB).
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
        if !batch.is_empty() && bytes + size > MAX_PAYLOAD_BYTES {
            break;
        }
        bytes += size;
        batch.push(queue.pop_front().expect("front exists"));
    }
    batch
}
