//! Records as Kinesis would have stored them, for tests that write an
//! archive or record files directly.

use rewind_engine::model::record::{ArrivalTime, Record};
use rewind_engine::model::seqno::SequenceNumber;

/// A plain (not aggregated, not encrypted) record of `stream`'s `shard`,
/// with no explicit hash key.
pub fn record(
    stream: &str,
    shard: &str,
    sequence: &str,
    partition_key: String,
    arrival_ms: i64,
    data: Vec<u8>,
) -> Record {
    Record {
        stream: stream.to_owned(),
        shard_id: shard.to_owned(),
        sequence_number: SequenceNumber::parse(sequence).expect("a sequence number"),
        sub_sequence_number: None,
        partition_key,
        explicit_hash_key: None,
        encryption_type: None,
        aggregate: None,
        approximate_arrival_timestamp: ArrivalTime::from_epoch_millis(arrival_ms),
        data,
    }
}
