//! The KPL (Kinesis Producer Library) aggregation format: many user records
//! packed into one Kinesis record, as the KPL and the aws-kinesis-agg
//! libraries write it.
//!
//! An aggregate is the 4-byte [`MAGIC`], a protobuf `AggregatedRecord` (see
//! the private `proto` module), then the 16-byte MD5 of that protobuf:
//!
//! - [`deaggregate`] splits an aggregate back into its [`UserRecord`]s (and
//!   says `None` for a record that is not an aggregate);
//! - [`Aggregator`] and [`aggregate`] pack user records for re-injection,
//!   byte for byte as aws-kinesis-agg 1.2.3's Python `RecordAggregator` packs
//!   them (test vectors: `tests/fixtures/kpl/`).

use std::collections::HashMap;
use std::fmt;

use md5::{Digest as _, Md5};
use prost::Message as _;

/// Marks a Kinesis record's data as a KPL aggregate.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// Length of the MD5 trailer.
pub const DIGEST_LEN: usize = 16;

/// The largest aggregate [`Aggregator`] builds by default, and the largest
/// it accepts: Kinesis' 1 MiB record size limit, as aws-kinesis-agg has it.
pub const MAX_AGGREGATED_BYTES: usize = 1024 * 1024;

/// Bytes of an aggregate that are not protobuf.
const OVERHEAD: usize = MAGIC.len() + DIGEST_LEN;

/// The wire format, written by hand from the KPL's `messages.proto` (proto2).
mod proto {
    // `required` rather than `optional`/plain: a required field is always
    // encoded, so a partition key index of 0 and empty data appear on the
    // wire exactly as the reference (Python protobuf) encoder writes them.
    // prost does not check that required fields are present when decoding;
    // a record without them reads as index 0 / empty data.

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AggregatedRecord {
        #[prost(string, repeated, tag = "1")]
        pub partition_key_table: Vec<String>,
        #[prost(string, repeated, tag = "2")]
        pub explicit_hash_key_table: Vec<String>,
        #[prost(message, repeated, tag = "3")]
        pub records: Vec<Record>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Record {
        #[prost(uint64, required, tag = "1")]
        pub partition_key_index: u64,
        #[prost(uint64, optional, tag = "2")]
        pub explicit_hash_key_index: Option<u64>,
        #[prost(bytes = "vec", required, tag = "3")]
        pub data: Vec<u8>,
        // Never written; declared so that a producer's malformed tags are a
        // decode error, as they are for the reference decoder.
        #[prost(message, repeated, tag = "4")]
        pub tags: Vec<Tag>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Tag {
        #[prost(string, required, tag = "1")]
        pub key: String,
        #[prost(string, optional, tag = "2")]
        pub value: Option<String>,
    }
}

/// One record as its producer put it, before aggregation or after
/// deaggregation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data: Vec<u8>,
}

/// A finished aggregate, ready to be put to Kinesis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregatedRecord {
    /// The first user record's partition key, as aws-kinesis-agg uses.
    pub partition_key: String,
    /// The first user record's explicit hash key. aws-kinesis-agg 1.2.3
    /// computes none from the partition key (that code is commented out), so
    /// neither do we: without one, Kinesis hashes `partition_key`, which
    /// routes the aggregate to the shard the first user record would go to.
    pub explicit_hash_key: Option<String>,
    /// Magic, protobuf, MD5.
    pub data: Vec<u8>,
    /// How many user records `data` holds.
    pub user_records: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum KplError {
    #[error(
        "corrupt KPL aggregate: the MD5 of its protobuf body is {} but its last 16 bytes say {}",
        Hex(.computed),
        Hex(.stored)
    )]
    DigestMismatch {
        stored: [u8; DIGEST_LEN],
        computed: [u8; DIGEST_LEN],
    },
    #[error("corrupt KPL aggregate: its MD5 matches but its protobuf body does not decode")]
    Decode {
        #[source]
        source: prost::DecodeError,
    },
    #[error(
        "corrupt KPL aggregate: user record {record} refers to partition key #{index}, \
         but the partition key table has only {table_len} entries"
    )]
    PartitionKeyIndexOutOfRange {
        record: usize,
        index: u64,
        table_len: usize,
    },
    #[error(
        "corrupt KPL aggregate: user record {record} refers to explicit hash key #{index}, \
         but the explicit hash key table has only {table_len} entries"
    )]
    ExplicitHashKeyIndexOutOfRange {
        record: usize,
        index: u64,
        table_len: usize,
    },
    #[error(
        "user record with partition key {partition_key:?} and {data_len} bytes of data \
         would make a {size}-byte aggregate on its own, over the {max_bytes}-byte limit"
    )]
    RecordTooLarge {
        partition_key: String,
        data_len: usize,
        size: usize,
        max_bytes: usize,
    },
    #[error(
        "an aggregate may be at most {MAX_AGGREGATED_BYTES} bytes (the Kinesis record \
         size limit), not {requested}"
    )]
    MaxBytesTooLarge { requested: usize },
}

struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Whether `data` starts with the KPL magic and has room for a protobuf
/// body and the MD5 after it.
///
/// An empty body counts as not aggregated, as in aws-kinesis-agg, which
/// passes `MAGIC + 16 bytes` through as a plain record.
pub fn is_aggregated(data: &[u8]) -> bool {
    data.len() > OVERHEAD && data.starts_with(&MAGIC)
}

/// The user records of a KPL aggregate, in order (a user record's index is
/// its sub-sequence number), or `None` when `data` is not an aggregate and
/// is a user record itself.
///
/// A record with the magic whose MD5 does not match, or whose protobuf does
/// not decode, or that refers to keys its tables do not have, is an error.
/// The reference does otherwise: aws-kinesis-agg passes a record whose MD5
/// or protobuf is bad through as if it were not aggregated, and on a bad
/// key index logs, yields the user records before it and drops the rest
/// (or raises, for an explicit hash key index). We
/// refuse instead: the magic is not valid UTF-8, so no text payload starts
/// with it and a binary one does by a 1-in-2³² coincidence; a record that
/// has it is a damaged aggregate, and handing its bytes on as one user
/// record would silently replace the user records with garbage.
pub fn deaggregate(data: &[u8]) -> Result<Option<Vec<UserRecord>>, KplError> {
    if !is_aggregated(data) {
        return Ok(None);
    }
    let Some((body, stored)) = data
        .strip_prefix(&MAGIC)
        .and_then(|rest| rest.split_last_chunk::<DIGEST_LEN>())
    else {
        return Ok(None);
    };
    let computed: [u8; DIGEST_LEN] = Md5::digest(body).into();
    if computed != *stored {
        return Err(KplError::DigestMismatch {
            stored: *stored,
            computed,
        });
    }
    let aggregate =
        proto::AggregatedRecord::decode(body).map_err(|source| KplError::Decode { source })?;
    let table_entry = |table: &[String], index: u64| {
        usize::try_from(index)
            .ok()
            .and_then(|i| table.get(i))
            .cloned()
    };
    aggregate
        .records
        .into_iter()
        .enumerate()
        .map(|(record, r)| {
            let partition_key = table_entry(&aggregate.partition_key_table, r.partition_key_index)
                .ok_or(KplError::PartitionKeyIndexOutOfRange {
                    record,
                    index: r.partition_key_index,
                    table_len: aggregate.partition_key_table.len(),
                })?;
            let explicit_hash_key = match r.explicit_hash_key_index {
                None => None,
                Some(index) => Some(
                    table_entry(&aggregate.explicit_hash_key_table, index).ok_or(
                        KplError::ExplicitHashKeyIndexOutOfRange {
                            record,
                            index,
                            table_len: aggregate.explicit_hash_key_table.len(),
                        },
                    )?,
                ),
            };
            Ok(UserRecord {
                partition_key,
                explicit_hash_key,
                data: r.data,
            })
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

/// Packs user records into aggregates of at most `max_bytes`, deciding when
/// an aggregate is full exactly as aws-kinesis-agg's `RecordAggregator`
/// does, so that the same user records make the same aggregates.
///
/// That decision uses the reference's *estimate* of the aggregate's size,
/// not its encoded size. The estimate adds, per user record, the protobuf
/// bytes of the record and of its partition key and explicit hash key
/// table entries, plus magic and MD5 once. Its quirks, reproduced here:
///
/// - it charges a table entry for a key even when the key is already in
///   the table (its lookup compares the key's UTF-8 bytes with the stored
///   `str`, which never match in Python 3), so repeated keys cost an
///   aggregate room they do not take on the wire;
/// - for the same reason it sizes each index as if the key were new, i.e.
///   as the varint of the table's current length;
/// - an empty explicit hash key is charged for but, as in the reference,
///   never stored: the user record goes without one.
///
/// A user record is added to the pending aggregate when the estimate stays
/// within `max_bytes`; otherwise the pending aggregate is complete and the
/// record starts the next one. Where the reference fails we differ, always
/// by refusing rather than by producing other bytes: a user record that
/// cannot fit even in an empty aggregate is [`KplError::RecordTooLarge`]
/// (the reference raises `ValueError` when the record alone exceeds
/// `max_bytes`, but when it exceeds it only with magic and MD5 it returns
/// an empty aggregate and silently drops the record), and a record that
/// fits an empty aggregate but is over `max_bytes` against the pending
/// one's larger indexes starts the next aggregate (the reference raises).
#[derive(Debug, Clone)]
pub struct Aggregator {
    max_bytes: usize,
    pending: proto::AggregatedRecord,
    partition_keys: HashMap<String, u64>,
    explicit_hash_keys: HashMap<String, u64>,
    /// The reference's estimate of `pending`'s protobuf size.
    estimated_body_len: usize,
    partition_key: String,
    explicit_hash_key: Option<String>,
}

impl Default for Aggregator {
    fn default() -> Self {
        Self::new()
    }
}

impl Aggregator {
    /// Aggregates of up to [`MAX_AGGREGATED_BYTES`].
    pub fn new() -> Self {
        Self {
            max_bytes: MAX_AGGREGATED_BYTES,
            pending: proto::AggregatedRecord::default(),
            partition_keys: HashMap::new(),
            explicit_hash_keys: HashMap::new(),
            estimated_body_len: 0,
            partition_key: String::new(),
            explicit_hash_key: None,
        }
    }

    /// Aggregates of up to `max_bytes` (magic and MD5 included), which may
    /// not exceed [`MAX_AGGREGATED_BYTES`].
    pub fn with_max_bytes(max_bytes: usize) -> Result<Self, KplError> {
        if max_bytes > MAX_AGGREGATED_BYTES {
            return Err(KplError::MaxBytesTooLarge {
                requested: max_bytes,
            });
        }
        Ok(Self {
            max_bytes,
            ..Self::new()
        })
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// User records in the pending aggregate.
    pub fn len(&self) -> usize {
        self.pending.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.records.is_empty()
    }

    /// Adds `record`, returning the pending aggregate when `record` did not
    /// fit in it (`record` then starts the next one). On error nothing
    /// changes: the pending aggregate is still pending.
    pub fn add(&mut self, record: UserRecord) -> Result<Option<AggregatedRecord>, KplError> {
        let size = estimated_record_len(
            &record,
            self.pending.partition_key_table.len(),
            self.pending.explicit_hash_key_table.len(),
        );
        if OVERHEAD
            .saturating_add(self.estimated_body_len)
            .saturating_add(size)
            <= self.max_bytes
        {
            self.push(record, size);
            return Ok(None);
        }
        let alone = estimated_record_len(&record, 0, 0);
        let alone_total = OVERHEAD.saturating_add(alone);
        if alone_total > self.max_bytes {
            return Err(KplError::RecordTooLarge {
                partition_key: record.partition_key,
                data_len: record.data.len(),
                size: alone_total,
                max_bytes: self.max_bytes,
            });
        }
        // `record` would have fitted if nothing were pending, so something is.
        let full = self.flush();
        self.push(record, alone);
        Ok(full)
    }

    /// The pending aggregate, if it holds any user record; the aggregator
    /// is empty afterwards.
    pub fn flush(&mut self) -> Option<AggregatedRecord> {
        if self.pending.records.is_empty() {
            return None;
        }
        let pending = std::mem::take(&mut self.pending);
        let body = pending.encode_to_vec();
        let mut data = Vec::with_capacity(OVERHEAD + body.len());
        data.extend_from_slice(&MAGIC);
        data.extend_from_slice(&body);
        data.extend_from_slice(&Md5::digest(&body));
        self.partition_keys.clear();
        self.explicit_hash_keys.clear();
        self.estimated_body_len = 0;
        Some(AggregatedRecord {
            partition_key: std::mem::take(&mut self.partition_key),
            explicit_hash_key: self.explicit_hash_key.take(),
            data,
            user_records: pending.records.len(),
        })
    }

    fn push(&mut self, record: UserRecord, estimated_len: usize) {
        let UserRecord {
            partition_key,
            explicit_hash_key,
            data,
        } = record;
        if self.pending.records.is_empty() {
            self.partition_key.clone_from(&partition_key);
            // An empty explicit hash key is no key (see `Aggregator`), and
            // Kinesis would refuse the aggregate with one.
            self.explicit_hash_key = explicit_hash_key.clone().filter(|k| !k.is_empty());
        }
        let partition_key_index = table_index(
            &mut self.pending.partition_key_table,
            &mut self.partition_keys,
            partition_key,
        );
        let explicit_hash_key_index = explicit_hash_key.filter(|k| !k.is_empty()).map(|k| {
            table_index(
                &mut self.pending.explicit_hash_key_table,
                &mut self.explicit_hash_keys,
                k,
            )
        });
        self.pending.records.push(proto::Record {
            partition_key_index,
            explicit_hash_key_index,
            data,
            tags: Vec::new(),
        });
        self.estimated_body_len = self.estimated_body_len.saturating_add(estimated_len);
    }
}

/// Packs `records` into as few aggregates as [`Aggregator::new`] makes.
pub fn aggregate(
    records: impl IntoIterator<Item = UserRecord>,
) -> Result<Vec<AggregatedRecord>, KplError> {
    let mut aggregator = Aggregator::new();
    let mut out = Vec::new();
    for record in records {
        out.extend(aggregator.add(record)?);
    }
    out.extend(aggregator.flush());
    Ok(out)
}

fn table_index(table: &mut Vec<String>, lookup: &mut HashMap<String, u64>, key: String) -> u64 {
    if let Some(&index) = lookup.get(&key) {
        return index;
    }
    let index = table.len() as u64;
    table.push(key.clone());
    lookup.insert(key, index);
    index
}

/// aws-kinesis-agg's `AggRecord._calculate_record_size`: what adding
/// `record` adds to the estimate, given the current table lengths.
fn estimated_record_len(
    record: &UserRecord,
    partition_key_table_len: usize,
    explicit_hash_key_table_len: usize,
) -> usize {
    // A length-delimited field: tag byte, length varint, bytes.
    let delimited = |len: usize| {
        1usize
            .saturating_add(varint_len(len as u64))
            .saturating_add(len)
    };
    let ehk = record.explicit_hash_key.as_deref();

    let mut tables = delimited(record.partition_key.len());
    let mut inner = 1 + varint_len(partition_key_table_len as u64);
    if let Some(ehk) = ehk {
        tables = tables.saturating_add(delimited(ehk.len()));
        inner += 1 + varint_len(explicit_hash_key_table_len as u64);
    }
    inner = inner.saturating_add(delimited(record.data.len()));
    tables.saturating_add(delimited(inner))
}

fn varint_len(value: u64) -> usize {
    // 7 bits a byte; 0 still takes one.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

#[cfg(test)]
mod tests;
