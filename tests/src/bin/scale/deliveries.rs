//! What the stream stored, and the checks of what came out the other end:
//! the scrape's records, and the batches `target` accepted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use rewind_engine::model::record::decode_base64;
use rewind_engine::model::seqno::SequenceNumber;
use rewind_tests::Accepted;
use serde_json::Value;

/// A record as the checks compare it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub shard: String,
    pub sequence: SequenceNumber,
    pub partition_key: String,
    pub data: Vec<u8>,
}

type Id = (String, SequenceNumber);

/// Every record the stream stored, by (shard, sequence number).
pub struct Expected {
    records: HashMap<Id, (String, Vec<u8>)>,
    per_shard: BTreeMap<String, u64>,
    bytes: u64,
}

impl Expected {
    pub fn new(accepted: Vec<Accepted>) -> Self {
        let mut expected = Expected {
            records: HashMap::with_capacity(accepted.len()),
            per_shard: BTreeMap::new(),
            bytes: 0,
        };
        for a in accepted {
            // What Kinesis counts against a shard's limits: data and key.
            expected.bytes += (a.data.len() + a.partition_key.len()) as u64;
            *expected.per_shard.entry(a.shard.clone()).or_default() += 1;
            expected
                .records
                .insert((a.shard, a.sequence), (a.partition_key, a.data));
        }
        expected
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn shard_ids(&self) -> Vec<String> {
        self.per_shard.keys().cloned().collect()
    }

    pub fn on_shard(&self, shard: &str) -> u64 {
        self.per_shard.get(shard).copied().unwrap_or_default()
    }

    /// `record` is one the stream stored, byte for byte.
    fn check(&self, record: &Record) -> anyhow::Result<()> {
        let id = (record.shard.clone(), record.sequence.clone());
        match self.records.get(&id) {
            Some((key, data)) if *key == record.partition_key && *data == record.data => Ok(()),
            Some(_) => anyhow::bail!("{}:{} differs from what was put", id.0, id.1),
            None => anyhow::bail!("{}:{} was never put", id.0, id.1),
        }
    }

    /// Each id of `seen` once; together every record.
    fn check_complete(&self, seen: &BTreeSet<Id>, what: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            seen.len() == self.records.len(),
            "{what}: {} of {} records",
            seen.len(),
            self.records.len()
        );
        Ok(())
    }

    /// The scrape read every record once, each shard in sequence order.
    pub fn check_scraped(&self, records: Vec<Record>) -> anyhow::Result<()> {
        let mut seen = BTreeSet::new();
        let mut last: BTreeMap<String, SequenceNumber> = BTreeMap::new();
        for record in records {
            self.check(&record)?;
            if let Some(previous) = last.get(&record.shard) {
                anyhow::ensure!(
                    *previous < record.sequence,
                    "scrape: {} {} read after {previous}",
                    record.shard,
                    record.sequence
                );
            }
            last.insert(record.shard.clone(), record.sequence.clone());
            anyhow::ensure!(
                seen.insert((record.shard.clone(), record.sequence.clone())),
                "scrape: {}:{} read twice",
                record.shard,
                record.sequence
            );
        }
        self.check_complete(&seen, "scrape")
    }

    /// `target` accepted every record exactly once (no fault is injected,
    /// so no step is retried: the contract's at-least-once allows no
    /// duplicate here), each partition key's records in sequence order,
    /// each with the stream's ARN.
    pub fn check_replayed(&self, batches: &[Batch], stream_arn: &str) -> anyhow::Result<Checked> {
        let mut seen = BTreeSet::new();
        let mut last: BTreeMap<(String, String), SequenceNumber> = BTreeMap::new();
        let mut bytes = 0;
        for batch in batches {
            for (record, arn) in &batch.records {
                anyhow::ensure!(
                    arn == stream_arn,
                    "{}:{} came with eventSourceARN {arn}, not {stream_arn}",
                    record.shard,
                    record.sequence
                );
                self.check(record)?;
                bytes += (record.data.len() + record.partition_key.len()) as u64;
                let lane = (record.shard.clone(), record.partition_key.clone());
                if let Some(previous) = last.get(&lane) {
                    anyhow::ensure!(
                        *previous < record.sequence,
                        "replay: key {} of {}: {} accepted after {previous}",
                        lane.1,
                        lane.0,
                        record.sequence
                    );
                }
                last.insert(lane, record.sequence.clone());
                anyhow::ensure!(
                    seen.insert((record.shard.clone(), record.sequence.clone())),
                    "replay: {}:{} accepted twice",
                    record.shard,
                    record.sequence
                );
            }
        }
        self.check_complete(&seen, "replay")?;
        Ok(Checked {
            records: seen.len(),
            batches: batches.len(),
            bytes,
            peak_in_flight: peak_in_flight(batches),
            first_started_us: batches
                .iter()
                .map(|b| b.started_us)
                .min()
                .unwrap_or_default(),
            last_ended_us: batches.iter().map(|b| b.ended_us).max().unwrap_or_default(),
        })
    }
}

/// What [`Expected::check_replayed`] found.
#[derive(Debug)]
pub struct Checked {
    pub records: usize,
    pub batches: usize,
    pub bytes: u64,
    /// The most batches `target` ran at once.
    pub peak_in_flight: usize,
    /// When `target` started its first batch and ended its last (µs since
    /// the epoch).
    pub first_started_us: u64,
    pub last_ended_us: u64,
}

/// One batch `target` accepted: its records with their `eventSourceARN`,
/// and when its handler ran (µs since the epoch).
#[derive(Debug)]
pub struct Batch {
    pub records: Vec<(Record, String)>,
    pub started_us: u64,
    pub ended_us: u64,
}

/// The batches `target` kept in `path` (one JSON line each), in the order
/// it accepted them.
pub fn read(path: &Path) -> anyhow::Result<Vec<Batch>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut batches = Vec::new();
    for line in text.lines() {
        let batch: Value = serde_json::from_str(line)?;
        let mut records = Vec::new();
        for record in batch["records"].as_array().into_iter().flatten() {
            let text = |name: &str| record[name].as_str().unwrap_or_default().to_owned();
            let event_id = text("eventID");
            let (shard, sequence) = event_id
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("eventID {event_id:?}"))?;
            records.push((
                Record {
                    shard: shard.to_owned(),
                    sequence: SequenceNumber::parse(sequence)?,
                    partition_key: text("partitionKey"),
                    data: decode_base64(&text("data"))?,
                },
                text("eventSourceARN"),
            ));
        }
        batches.push(Batch {
            records,
            started_us: batch["startedUs"].as_u64().unwrap_or_default(),
            ended_us: batch["endedUs"].as_u64().unwrap_or_default(),
        });
    }
    Ok(batches)
}

/// The most batches whose handler times overlap at one instant.
fn peak_in_flight(batches: &[Batch]) -> usize {
    // Ends sort before starts at the same instant: back-to-back batches of
    // one instance don't count as overlapping.
    let mut edges: Vec<(u64, i64)> = batches
        .iter()
        .flat_map(|b| [(b.started_us, 1), (b.ended_us, -1)])
        .collect();
    edges.sort();
    let (mut now, mut peak) = (0i64, 0i64);
    for (_, step) in edges {
        now += step;
        peak = peak.max(now);
    }
    peak as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(shard: &str, sequence: u32, key: &str) -> Record {
        Record {
            shard: shard.to_owned(),
            sequence: SequenceNumber::parse(&sequence.to_string()).unwrap(),
            partition_key: key.to_owned(),
            data: format!("{shard}/{sequence}").into_bytes(),
        }
    }

    fn expected(records: &[Record]) -> Expected {
        Expected::new(
            records
                .iter()
                .map(|r| Accepted {
                    shard: r.shard.clone(),
                    sequence: r.sequence.clone(),
                    partition_key: r.partition_key.clone(),
                    data: r.data.clone(),
                })
                .collect(),
        )
    }

    fn batch(records: &[&Record], started_us: u64, ended_us: u64) -> Batch {
        Batch {
            records: records
                .iter()
                .map(|r| ((*r).clone(), "arn".into()))
                .collect(),
            started_us,
            ended_us,
        }
    }

    #[test]
    fn a_replay_must_deliver_each_record_once_and_each_key_in_order() {
        let (a, b, c) = (
            record("s0", 1, "k"),
            record("s0", 2, "k"),
            record("s1", 3, "j"),
        );
        let all = expected(&[a.clone(), b.clone(), c.clone()]);
        let good = [
            batch(&[&a], 0, 10),
            batch(&[&c], 5, 15),
            batch(&[&b], 10, 20),
        ];
        let checked = all.check_replayed(&good, "arn").unwrap();
        assert_eq!(
            (checked.records, checked.batches, checked.peak_in_flight),
            (3, 3, 2)
        );

        let twice = [batch(&[&a, &b], 0, 1), batch(&[&b, &c], 1, 2)];
        assert!(all.check_replayed(&twice, "arn").is_err());
        let missing = [batch(&[&a, &b], 0, 1)];
        assert!(all.check_replayed(&missing, "arn").is_err());
        let reordered = [batch(&[&b, &a, &c], 0, 1)];
        assert!(all.check_replayed(&reordered, "arn").is_err());
        assert!(all.check_replayed(&good, "another arn").is_err());
        let mut changed = c.clone();
        changed.data.push(b'!');
        let altered = [batch(&[&a, &b, &changed], 0, 1)];
        assert!(all.check_replayed(&altered, "arn").is_err());
    }

    #[test]
    fn a_scrape_must_read_each_record_once_in_shard_order() {
        let (a, b) = (record("s0", 1, "k"), record("s0", 2, "j"));
        let all = expected(&[a.clone(), b.clone()]);
        all.check_scraped(vec![a.clone(), b.clone()]).unwrap();
        assert!(all.check_scraped(vec![b.clone(), a.clone()]).is_err());
        assert!(all.check_scraped(vec![a.clone()]).is_err());
        assert!(all.check_scraped(vec![a.clone(), a, b]).is_err());
    }
}
