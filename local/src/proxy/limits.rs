//! Kinesis per-shard limits, which no emulator enforces: GetRecords 5 calls/s
//! and 2 MiB/s per shard, PutRecord(s) 1,000 records/s and 1 MiB/s per shard.
//!
//! Shards are known from what passes through the endpoint: GetShardIterator
//! and GetRecords responses tie each iterator to its shard (iterators are
//! opaque and differ between backends), and a stream's hash key ranges
//! (fetched with ListShards) place each put record on its shard the way
//! Kinesis does, by the MD5 of its partition key or its explicit hash key.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

const MIB: f64 = 1024.0 * 1024.0;
/// Iterators expire after 5 minutes on Kinesis; older entries are dropped.
const ITERATOR_LIFETIME: Duration = Duration::from_secs(300);
/// How long a stream's shard map is trusted without a reshard seen.
const SHARD_MAP_LIFETIME: Duration = Duration::from_secs(5);

/// A shard of a stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ShardKey {
    pub stream: String,
    pub shard: String,
}

/// An open shard's hash key range.
#[derive(Clone, Debug)]
pub struct ShardRange {
    pub shard: String,
    pub start: u128,
    pub end: u128,
}

/// A token bucket refilled continuously at `rate` per second up to one
/// second's worth. GetRecords may overdraw the byte bucket (one call may
/// return up to 10 MiB), after which calls are refused until it refills.
#[derive(Debug)]
struct Bucket {
    level: f64,
    rate: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64, now: Instant) -> Self {
        Bucket {
            level: rate,
            rate,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) -> &mut Self {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + elapsed * self.rate).min(self.rate);
        self.at = now;
        self
    }
}

/// The limits' state, shared by every connection of the endpoint.
#[derive(Debug)]
pub struct ShardLimits {
    pub enabled: bool,
    account: String,
    iterators: HashMap<String, (ShardKey, Instant)>,
    get_calls: HashMap<ShardKey, Bucket>,
    get_bytes: HashMap<ShardKey, Bucket>,
    put_records: HashMap<ShardKey, Bucket>,
    put_bytes: HashMap<ShardKey, Bucket>,
    shard_maps: HashMap<String, (Vec<ShardRange>, Instant)>,
}

impl ShardLimits {
    pub fn new(enabled: bool, account: &str) -> Self {
        ShardLimits {
            enabled,
            account: account.to_owned(),
            iterators: HashMap::new(),
            get_calls: HashMap::new(),
            get_bytes: HashMap::new(),
            put_records: HashMap::new(),
            put_bytes: HashMap::new(),
            shard_maps: HashMap::new(),
        }
    }

    /// The message Kinesis gives with `ProvisionedThroughputExceededException`.
    pub fn message(&self, key: &ShardKey) -> String {
        format!(
            "Rate exceeded for shard {} in stream {} under account {}.",
            key.shard, key.stream, self.account
        )
    }

    pub fn remember_iterator(&mut self, iterator: &str, key: ShardKey, now: Instant) {
        if self.iterators.len() > 10_000 {
            self.iterators
                .retain(|_, (_, at)| now.duration_since(*at) < ITERATOR_LIFETIME);
        }
        self.iterators.insert(iterator.to_owned(), (key, now));
    }

    /// The stream an iterator was issued for, if the endpoint saw it issued.
    pub fn iterator_stream(&self, iterator: &str) -> Option<&str> {
        self.iterators
            .get(iterator)
            .map(|(key, _)| key.stream.as_str())
    }

    /// Admits a GetRecords call on `iterator`, or names the shard whose limit
    /// it exceeds. Calls on iterators the endpoint never saw are admitted.
    pub fn admit_get(
        &mut self,
        iterator: &str,
        now: Instant,
    ) -> Result<Option<ShardKey>, ShardKey> {
        let Some((key, _)) = self.iterators.get(iterator) else {
            return Ok(None);
        };
        let key = key.clone();
        let calls = self
            .get_calls
            .entry(key.clone())
            .or_insert_with(|| Bucket::new(5.0, now))
            .refill(now);
        let bytes_ok = self
            .get_bytes
            .get_mut(&key)
            .is_none_or(|bucket| bucket.refill(now).level > 0.0);
        if calls.level < 1.0 || !bytes_ok {
            return Err(key);
        }
        calls.level -= 1.0;
        Ok(Some(key))
    }

    /// Charges the bytes a GetRecords call returned to its shard.
    pub fn charge_get(&mut self, key: &ShardKey, bytes: usize, now: Instant) {
        let bucket = self
            .get_bytes
            .entry(key.clone())
            .or_insert_with(|| Bucket::new(2.0 * MIB, now))
            .refill(now);
        bucket.level -= bytes as f64;
    }

    /// Admits one put record of `bytes` (data plus partition key) on a shard,
    /// or refuses it without charging anything.
    pub fn admit_put(&mut self, key: &ShardKey, bytes: usize, now: Instant) -> bool {
        let records = self
            .put_records
            .entry(key.clone())
            .or_insert_with(|| Bucket::new(1000.0, now))
            .refill(now);
        if records.level < 1.0 {
            return false;
        }
        let volume = self
            .put_bytes
            .entry(key.clone())
            .or_insert_with(|| Bucket::new(MIB, now))
            .refill(now);
        if volume.level < bytes as f64 {
            return false;
        }
        volume.level -= bytes as f64;
        if let Some(records) = self.put_records.get_mut(key) {
            records.level -= 1.0;
        }
        true
    }

    pub fn shard_map(&self, stream: &str, now: Instant) -> Option<&[ShardRange]> {
        self.shard_maps
            .get(stream)
            .filter(|(_, at)| now.duration_since(*at) < SHARD_MAP_LIFETIME)
            .map(|(ranges, _)| ranges.as_slice())
    }

    pub fn set_shard_map(&mut self, stream: &str, ranges: Vec<ShardRange>, now: Instant) {
        self.shard_maps.insert(stream.to_owned(), (ranges, now));
    }

    /// Forgets a stream's shard map after a call that changes it.
    pub fn forget_shard_map(&mut self, stream: &str) {
        self.shard_maps.remove(stream);
    }
}

/// The hash key Kinesis places a record by.
pub fn hash_key(partition_key: &str, explicit: Option<&str>) -> u128 {
    if let Some(value) = explicit.and_then(|text| text.parse::<u128>().ok()) {
        return value;
    }
    let digest = Md5::digest(partition_key.as_bytes());
    u128::from_be_bytes(digest.into())
}

/// The open shard whose range holds `hash`.
pub fn shard_for(ranges: &[ShardRange], hash: u128) -> Option<&str> {
    ranges
        .iter()
        .find(|range| range.start <= hash && hash <= range.end)
        .map(|range| range.shard.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ShardKey {
        ShardKey {
            stream: "s".into(),
            shard: "shardId-000000000000".into(),
        }
    }

    #[test]
    fn get_records_five_per_second_then_refills() {
        let mut limits = ShardLimits::new(true, "123456789012");
        let t0 = Instant::now();
        limits.remember_iterator("it", key(), t0);
        for _ in 0..5 {
            assert_eq!(limits.admit_get("it", t0), Ok(Some(key())));
        }
        assert_eq!(limits.admit_get("it", t0), Err(key()));
        assert!(
            limits
                .admit_get("it", t0 + Duration::from_millis(200))
                .is_ok()
        );
        assert_eq!(limits.admit_get("unknown", t0), Ok(None));
    }

    #[test]
    fn get_records_bytes_overdraw_blocks_until_refilled() {
        let mut limits = ShardLimits::new(true, "123456789012");
        let t0 = Instant::now();
        limits.remember_iterator("it", key(), t0);
        limits.admit_get("it", t0).unwrap();
        limits.charge_get(&key(), 6 * 1024 * 1024, t0);
        assert!(limits.admit_get("it", t0 + Duration::from_secs(1)).is_err());
        assert!(
            limits
                .admit_get("it", t0 + Duration::from_millis(2100))
                .is_ok()
        );
    }

    #[test]
    fn puts_limited_by_records_and_bytes() {
        let mut limits = ShardLimits::new(true, "123456789012");
        let t0 = Instant::now();
        let admitted = (0..1500)
            .filter(|_| limits.admit_put(&key(), 10, t0))
            .count();
        assert_eq!(admitted, 1000);
        let other = ShardKey {
            shard: "shardId-000000000001".into(),
            ..key()
        };
        assert!(limits.admit_put(&other, 1024 * 1024, t0));
        assert!(!limits.admit_put(&other, 1, t0));
        assert!(limits.admit_put(&other, 1024, t0 + Duration::from_millis(2)));
    }

    #[test]
    fn records_land_on_the_shard_of_their_hash() {
        // Two shards splitting the key space in half, as CreateStream does.
        let half = u128::MAX / 2;
        let ranges = vec![
            ShardRange {
                shard: "a".into(),
                start: 0,
                end: half,
            },
            ShardRange {
                shard: "b".into(),
                start: half + 1,
                end: u128::MAX,
            },
        ];
        assert_eq!(shard_for(&ranges, hash_key("x", Some("0"))), Some("a"));
        assert_eq!(
            shard_for(&ranges, hash_key("x", Some(&u128::MAX.to_string()))),
            Some("b")
        );
        // MD5("a") = 0cc175b9c0f1b6a831c399e269772661: below half.
        assert_eq!(hash_key("a", None), 0x0cc175b9c0f1b6a831c399e269772661);
        assert_eq!(shard_for(&ranges, hash_key("a", None)), Some("a"));
    }
}
