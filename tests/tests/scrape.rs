//! The scrape state machine, created from template.yaml's own definition
//! (`ScrapeStateMachine`), runs the real scraper function against
//! kinesis-mock with the endpoint's shard limits enforced. Each test puts
//! records on a fresh two-shard stream, reshards it between put batches
//! (UpdateShardCount 2 -> 4: both shards split; then, with a third batch,
//! 4 -> 2: the four children merge pairwise, each merged shard with two
//! parents) and puts more, keeping every PutRecords answer (shard and
//! sequence number) as the oracle; a window's manifest must list exactly the
//! oracle's records of that window, each once, in sequence order per shard,
//! parents before children.
//!
//! The local stack serves the scraper with `SCRAPER_MAX_RECORDS_PER_CHUNK`
//! = 100 and the requests poll 25 records per call, so shards with more
//! than 100 records in the window take several steps (several chunks). It
//! also sets `SCRAPER_MAX_STEP_SECONDS` = 6 (a step reads for about 4 s),
//! which only reads slowed by a poll delay meet.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_sfn::types::{ExecutionStatus, HistoryEventType};
use rewind_engine::model::chunk::ChunkReader;
use rewind_engine::model::manifest::{Manifest, ManifestShard, ShardManifest, shard_manifest_key};
use rewind_engine::model::seqno::SequenceNumber;
use rewind_local::sdk::s3_client;
use rewind_local::stack::{LOCAL_SCRAPER_CHUNK, LOCAL_SCRAPER_MAX_STEP_SECONDS};
use rewind_local::statemachine::{self, Context};
use rewind_local::{Fault, FaultKind};
use rewind_tests::{create_stream, execute, get_object, put_all, reshard, unique};
use serde_json::{Value, json};

use crate::stack;

/// One record the stream accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Put {
    shard: String,
    sequence: SequenceNumber,
    data: Vec<u8>,
}

/// A resharded stream and what was put on it.
struct Fixture {
    kinesis: aws_sdk_kinesis::Client,
    s3: aws_sdk_s3::Client,
    sfn: aws_sdk_sfn::Client,
    machine: String,
    stream: String,
    bucket: String,
    /// Every accepted record, in put order.
    puts: Vec<Put>,
    /// Wall-clock instants (epoch ms) between the put batches: `marks[i]` is
    /// after batch `i` and before batch `i + 1`.
    marks: Vec<u64>,
    /// Parents of each shard (from ListShards after the reshard).
    parents: BTreeMap<String, Vec<String>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

impl Fixture {
    /// Puts `batches[0]` records, splits 2 -> 4, puts `batches[1]`, merges
    /// 4 -> 2, then puts the other batches, with a second between batches
    /// (and a mark in the middle of each gap).
    async fn new(name: &str, batches: &[usize]) -> anyhow::Result<Self> {
        let stack = stack();
        let config = stack.sdk_config().await;
        let kinesis = aws_sdk_kinesis::Client::new(&config);
        let s3 = s3_client(&config);
        let sfn = aws_sdk_sfn::Client::new(&config);
        let bucket = unique(name).to_lowercase();
        s3.create_bucket().bucket(&bucket).send().await?;
        let template = stack.layout.root.join("template.yaml");
        let definition = statemachine::load(&template, "ScrapeStateMachine", &Context::default())?;
        let machine = statemachine::create(&sfn, &unique(name), &definition).await?;

        let stream = unique(name);
        create_stream(&kinesis, &stream, 2).await?;
        let mut fixture = Fixture {
            kinesis,
            s3,
            sfn,
            machine,
            stream,
            bucket,
            puts: Vec::new(),
            marks: Vec::new(),
            parents: BTreeMap::new(),
        };
        for (i, &count) in batches.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(600)).await;
                fixture.marks.push(now_ms());
                tokio::time::sleep(Duration::from_millis(600)).await;
            }
            // Split, then merge: UniformScaling halves every open shard's
            // hash range (2 -> 4), then joins adjacent pairs back (4 -> 2).
            let target = match i {
                1 => Some(4),
                2 => Some(2),
                _ => None,
            };
            if let Some(target) = target {
                reshard(&fixture.kinesis, &fixture.stream, target).await?;
            }
            fixture.put(i, count).await?;
        }
        let shards = fixture
            .kinesis
            .list_shards()
            .stream_name(&fixture.stream)
            .send()
            .await?;
        for shard in shards.shards() {
            fixture.parents.insert(
                shard.shard_id().to_owned(),
                shard
                    .parent_shard_id()
                    .into_iter()
                    .chain(shard.adjacent_parent_shard_id())
                    .map(str::to_owned)
                    .collect(),
            );
        }
        Ok(fixture)
    }

    /// Puts `count` records (random partition keys), retrying only the
    /// entries that failed, and keeps what the stream answered.
    async fn put(&mut self, batch: usize, count: usize) -> anyhow::Result<()> {
        let pending: Vec<(String, Vec<u8>)> = (0..count)
            .map(|n| {
                (
                    format!("key-{}", fastrand_key(batch * 100_000 + n)),
                    format!("batch {batch} record {n}").into_bytes(),
                )
            })
            .collect();
        for put in put_all(&self.kinesis, &self.stream, pending).await? {
            self.puts.push(Put {
                shard: put.shard,
                sequence: put.sequence,
                data: put.data,
            });
        }
        Ok(())
    }

    /// The request's common fields around `window` (stream, shards, start,
    /// stop, ...).
    fn request(&self, window: Value) -> Value {
        let mut request = json!({
            "stream": self.stream,
            "pollBatchSize": 25,
            "maxEmptyPolls": 2,
            "output": { "bucket": self.bucket, "prefix": "scrapes" },
        });
        let object = request.as_object_mut().expect("an object");
        for (key, value) in window.as_object().expect("an object") {
            object.insert(key.clone(), value.clone());
        }
        request
    }

    /// Runs the state machine; returns its output once it succeeded.
    async fn scrape(&self, input: &Value) -> anyhow::Result<Value> {
        let name = unique("scrape");
        let output = execute(
            &self.sfn,
            &self.machine,
            &name,
            input,
            Duration::from_secs(120),
        )
        .await?;
        anyhow::ensure!(output["runId"] == json!(name), "{output}");
        Ok(output)
    }

    /// The manifest the output names, and every record of its chunks (per
    /// shard, in chunk order).
    async fn read(&self, output: &Value) -> anyhow::Result<(Manifest, BTreeMap<String, Vec<Put>>)> {
        let location = &output["manifest"];
        anyhow::ensure!(location["bucket"] == json!(self.bucket), "{output}");
        let key = location["key"].as_str().unwrap_or_default();
        let mut manifest: Manifest = serde_json::from_slice(&self.get(key).await?)?;
        anyhow::ensure!(
            location["records"] == json!(manifest.records),
            "{output} vs {}",
            manifest.records
        );
        // Each entry names the shard's own manifest (written by its last
        // step), which holds its chunks: read as the entry's from here on.
        for shard in manifest.shards.iter_mut() {
            let own = shard_manifest_key(key, &shard.shard_id);
            anyhow::ensure!(
                shard.chunks.is_empty() && shard.manifest.as_deref() == Some(own.as_str()),
                "{shard:?}"
            );
            let own: ShardManifest = serde_json::from_slice(&self.get(&own).await?)?;
            anyhow::ensure!(
                own.stream_arn == manifest.stream_arn
                    && ManifestShard {
                        chunks: Vec::new(),
                        manifest: shard.manifest.clone(),
                        ..own.shard.clone()
                    } == *shard,
                "{own:?} vs {shard:?}"
            );
            shard.chunks = own.shard.chunks;
        }
        let mut read = BTreeMap::new();
        for shard in &manifest.shards {
            let mut records = Vec::new();
            for chunk in &shard.chunks {
                let bytes = self.get(&chunk.key).await?;
                for record in ChunkReader::new(chunk.key.as_str(), bytes.as_slice())? {
                    let record = record?;
                    anyhow::ensure!(record.stream == self.stream, "{record:?}");
                    anyhow::ensure!(record.shard_id == shard.shard_id, "{record:?}");
                    records.push(Put {
                        shard: record.shard_id,
                        sequence: record.sequence_number,
                        data: record.data,
                    });
                }
            }
            anyhow::ensure!(
                records.len() as u64 == shard.records,
                "{}: manifest says {} records, chunks hold {}",
                shard.shard_id,
                shard.records,
                records.len()
            );
            read.insert(shard.shard_id.clone(), records);
        }
        Ok((manifest, read))
    }

    /// Records in each chunk of `shard`, in chunk order.
    async fn chunk_sizes(&self, shard: &ManifestShard) -> anyhow::Result<Vec<usize>> {
        let mut sizes = Vec::new();
        for chunk in &shard.chunks {
            let bytes = self.get(&chunk.key).await?;
            sizes.push(ChunkReader::new(chunk.key.as_str(), bytes.as_slice())?.count());
        }
        Ok(sizes)
    }

    async fn get(&self, key: &str) -> anyhow::Result<Vec<u8>> {
        get_object(&self.s3, &self.bucket, key).await
    }

    /// Checks that the scrape read exactly `expected`: per shard, the same
    /// records in sequence order; parents listed before their children.
    fn check(
        &self,
        manifest: &Manifest,
        read: &BTreeMap<String, Vec<Put>>,
        expected: impl Fn(&Put) -> bool,
    ) -> anyhow::Result<usize> {
        let mut want: BTreeMap<String, Vec<Put>> = BTreeMap::new();
        for put in self.puts.iter().filter(|p| expected(p)) {
            want.entry(put.shard.clone()).or_default().push(put.clone());
        }
        for records in want.values_mut() {
            records.sort_by(|a, b| a.sequence.cmp(&b.sequence));
        }
        let got: BTreeMap<String, Vec<Put>> = read
            .iter()
            .filter(|(_, records)| !records.is_empty())
            .map(|(shard, records)| (shard.clone(), records.clone()))
            .collect();
        for (shard, records) in &got {
            for pair in records.windows(2) {
                anyhow::ensure!(
                    pair[0].sequence < pair[1].sequence,
                    "{shard}: {} then {} (out of order or duplicated)",
                    pair[0].sequence,
                    pair[1].sequence
                );
            }
        }
        for shard in want.keys().chain(got.keys()) {
            let (w, g) = (
                want.get(shard).map_or(&[][..], Vec::as_slice),
                got.get(shard).map_or(&[][..], Vec::as_slice),
            );
            anyhow::ensure!(
                w == g,
                "{shard}: expected {} records, read {}; first missing {:?}, first extra {:?}",
                w.len(),
                g.len(),
                w.iter().find(|p| !g.contains(p)).map(|p| &p.sequence),
                g.iter().find(|p| !w.contains(p)).map(|p| &p.sequence)
            );
        }
        let order: Vec<&str> = manifest
            .shards
            .iter()
            .map(|s| s.shard_id.as_str())
            .collect();
        for (position, shard) in order.iter().enumerate() {
            for parent in self.parents.get(*shard).into_iter().flatten() {
                if let Some(at) = order.iter().position(|s| s == parent) {
                    anyhow::ensure!(at < position, "{parent} after its child {shard}: {order:?}");
                }
            }
        }
        Ok(want.values().map(Vec::len).sum())
    }

    async fn delete(self) -> anyhow::Result<()> {
        self.kinesis
            .delete_stream()
            .stream_name(&self.stream)
            .send()
            .await?;
        Ok(())
    }
}

/// A spread of partition keys (both halves of the hash range) without a
/// random number generator.
fn fastrand_key(n: usize) -> u64 {
    let mut x = n as u64 ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 29)
}

fn seconds(ms: u64) -> Value {
    json!(ms as f64 / 1000.0)
}

#[tokio::test]
async fn all_shards_trim_horizon_to_latest_reads_parents_and_children() -> anyhow::Result<()> {
    let started = Instant::now();
    // Records before the split, between the split and the merge, and after
    // the merge.
    let fixture = Fixture::new("scrape-all", &[100, 100, 100]).await?;
    let setup = started.elapsed();
    let input = fixture.request(json!({
        "shards": "ALL",
        "start": { "type": "TRIM_HORIZON" },
        "stop": { "type": "LATEST" },
    }));
    let output = fixture.scrape(&input).await?;
    let (manifest, read) = fixture.read(&output).await?;
    let expected = fixture.check(&manifest, &read, |_| true)?;
    assert_eq!(expected, 300);
    assert_eq!(
        manifest.shards.len(),
        8,
        "2 originals, 4 split children, 2 merged"
    );
    assert!(output["manifest"].get("unscrapedChildShardIds").is_none());
    let with_parents = |n: usize| {
        manifest
            .shards
            .iter()
            .filter(move |s| s.parent_shard_ids.len() == n)
    };
    assert_eq!(with_parents(0).count(), 2);
    for original in with_parents(0) {
        assert_eq!(original.child_shard_ids.len(), 2, "{original:?}");
    }
    assert_eq!(with_parents(1).count(), 4);
    for split in with_parents(1) {
        assert_eq!(split.child_shard_ids.len(), 1, "{split:?}");
    }
    assert_eq!(with_parents(2).count(), 2);
    // Every generation holds records of its own batch (keys spread over the
    // whole hash range), so each was read, not just listed.
    for merged in with_parents(2) {
        assert!(merged.records > 0, "{merged:?}");
        assert!(merged.child_shard_ids.is_empty(), "{merged:?}");
    }
    eprintln!("setup {setup:?}, scrape {:?}", started.elapsed() - setup);
    fixture.delete().await
}

#[tokio::test]
async fn a_time_window_spans_the_split_and_the_merge() -> anyhow::Result<()> {
    let fixture = Fixture::new("scrape-time", &[50, 50, 50, 50]).await?;
    // From between batches 0 and 1 (before the split) to between batches 2
    // and 3 (after the merge): batches 1 and 2, in the split children and
    // the merged shards; batch 0 (the originals) and batch 3 (also in the
    // merged shards) are outside.
    let (from, to) = (fixture.marks[0], fixture.marks[2]);
    let inside: Vec<SequenceNumber> = fixture.puts[50..150]
        .iter()
        .map(|p| p.sequence.clone())
        .collect();
    let input = fixture.request(json!({
        "shards": "ALL",
        "start": { "type": "AT_TIMESTAMP", "timestamp": seconds(from) },
        "stop": { "type": "BEFORE_TIMESTAMP", "timestamp": seconds(to) },
    }));
    let output = fixture.scrape(&input).await?;
    let (manifest, read) = fixture.read(&output).await?;
    let expected = fixture.check(&manifest, &read, |p| inside.contains(&p.sequence))?;
    assert_eq!(expected, 100);
    let merged = manifest
        .shards
        .iter()
        .filter(|s| s.parent_shard_ids.len() == 2)
        .count();
    assert_eq!(merged, 2, "{:?}", manifest.shards);
    fixture.delete().await
}

/// The arrival time of each record of the stream exactly as Kinesis wrote
/// it on the wire (read from GetRecords' raw answers, not through the
/// SDK's `f64`).
type WireArrivals = BTreeMap<(String, SequenceNumber), i64>;

/// Keeps the raw body of every answer the client reads.
#[derive(Debug, Clone, Default)]
struct RawBodies(std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

impl aws_sdk_kinesis::config::Intercept for RawBodies {
    fn name(&self) -> &'static str {
        "RawBodies"
    }

    fn read_after_deserialization(
        &self,
        context: &aws_sdk_kinesis::config::interceptors::AfterDeserializationInterceptorContextRef<
            '_,
        >,
        _components: &aws_sdk_kinesis::config::RuntimeComponents,
        _cfg: &mut aws_sdk_kinesis::config::ConfigBag,
    ) -> Result<(), aws_sdk_kinesis::error::BoxError> {
        if let Some(bytes) = context.response().body().bytes() {
            self.0.lock().expect("not poisoned").push(bytes.to_vec());
        }
        Ok(())
    }
}

/// Epoch milliseconds of a JSON number's text (`1732237199.869`, or an
/// exponent form), in exact decimal arithmetic.
fn wire_millis(text: &str) -> anyhow::Result<i64> {
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>()?),
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{fraction}");
    // Digits after the decimal point, once the exponent has moved it.
    let decimals = fraction.len() as i32 - exponent;
    let value: i128 = digits.parse()?;
    let millis = if decimals <= 3 {
        value * 10_i128.pow((3 - decimals) as u32)
    } else {
        let scale = 10_i128.pow((decimals - 3) as u32);
        anyhow::ensure!(value % scale == 0, "{text} is finer than a millisecond");
        value / scale
    };
    Ok(i64::try_from(millis)?)
}

impl Fixture {
    /// Every record's arrival time as sent, read with GetRecords.
    async fn wire_arrivals(&self) -> anyhow::Result<WireArrivals> {
        let raw = RawBodies::default();
        let config = stack().sdk_config().await;
        let client = aws_sdk_kinesis::Client::from_conf(
            aws_sdk_kinesis::config::Builder::from(&config)
                .interceptor(raw.clone())
                .build(),
        );
        for shard in self.parents.keys() {
            let mut iterator = client
                .get_shard_iterator()
                .stream_name(&self.stream)
                .shard_id(shard)
                .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
                .send()
                .await?
                .shard_iterator;
            while let Some(it) = iterator {
                // 5 calls/s per shard, enforced by the endpoint.
                tokio::time::sleep(Duration::from_millis(250)).await;
                let page = client.get_records().shard_iterator(it).send().await?;
                if page.records().is_empty() {
                    break;
                }
                iterator = page.next_shard_iterator;
            }
        }
        let mut arrivals = WireArrivals::new();
        let bodies = raw.0.lock().expect("not poisoned").clone();
        for body in bodies {
            let text = String::from_utf8(body)?;
            let value: Value = serde_json::from_str(&text)?;
            // GetShardIterator answers, and the empty page at the tip.
            let Some(records) = value["Records"].as_array().filter(|r| !r.is_empty()) else {
                continue;
            };
            // The numbers' own text, in record order: serde_json's f64
            // would round them as the SDK does.
            let stamps: Vec<&str> = text
                .split("\"ApproximateArrivalTimestamp\":")
                .skip(1)
                .map(|rest| {
                    rest.trim_start()
                        .split([',', '}'])
                        .next()
                        .unwrap_or("")
                        .trim()
                })
                .collect();
            anyhow::ensure!(stamps.len() == records.len(), "{text}");
            let shard = self
                .puts
                .iter()
                .find(|p| p.sequence.as_str() == records[0]["SequenceNumber"])
                .map(|p| p.shard.clone())
                .unwrap_or_default();
            for (record, stamp) in records.iter().zip(stamps) {
                let sequence =
                    SequenceNumber::parse(record["SequenceNumber"].as_str().unwrap_or(""))?;
                arrivals.insert((shard.clone(), sequence), wire_millis(stamp)?);
            }
        }
        anyhow::ensure!(
            arrivals.len() == self.puts.len(),
            "{} of {} read",
            arrivals.len(),
            self.puts.len()
        );
        Ok(arrivals)
    }
}

/// Issue 12, point 7: stops at a record's exact arrival time, as Kinesis
/// sent it. `t` is one that the SDK's `f64` lies just below (read with the
/// old truncation it came out 1 ms early, so `BEFORE_TIMESTAMP t` kept the
/// records that arrived at `t`).
#[tokio::test]
async fn timestamp_stops_sit_on_records_exact_arrival_times() -> anyhow::Result<()> {
    // Small puts a few milliseconds apart: many distinct arrival times.
    let mut fixture = Fixture::new("scrape-exact", &[10]).await?;
    for batch in 1..=20 {
        tokio::time::sleep(Duration::from_millis(7)).await;
        fixture.put(batch, 10).await?;
    }
    let arrivals = fixture.wire_arrivals().await?;
    let truncated = |millis: i64| {
        aws_sdk_kinesis::primitives::DateTime::from_secs_f64(
            format!("{}.{:03}", millis / 1000, millis % 1000)
                .parse()
                .unwrap_or(0.0),
        )
        .to_millis()
        .unwrap_or(0)
            != millis
    };
    let mut candidates: Vec<i64> = arrivals
        .values()
        .copied()
        .filter(|&m| truncated(m))
        .collect();
    candidates.sort_unstable();
    anyhow::ensure!(
        !candidates.is_empty(),
        "no arrival time the f64 gets wrong: {arrivals:?}"
    );
    let t = candidates[candidates.len() / 2];
    let arrival = |p: &Put| arrivals[&(p.shard.clone(), p.sequence.clone())];
    // AFTER_TIMESTAMP also takes each shard's first record past t.
    let mut first_past: BTreeMap<String, SequenceNumber> = BTreeMap::new();
    for ((shard, sequence), &at) in &arrivals {
        if at > t && !first_past.contains_key(shard) {
            first_past.insert(shard.clone(), sequence.clone());
        }
    }
    let at_t = arrivals.values().filter(|&&m| m == t).count();
    type Expected<'a> = &'a dyn Fn(&Put) -> bool;
    let cases: [(&str, Expected); 3] = [
        ("BEFORE_TIMESTAMP", &|p| arrival(p) < t),
        ("AT_TIMESTAMP", &|p| arrival(p) <= t),
        ("AFTER_TIMESTAMP", &|p| {
            arrival(p) <= t || first_past.get(&p.shard) == Some(&p.sequence)
        }),
    ];
    let mut kept = Vec::new();
    for (stop, expected) in cases {
        let input = fixture.request(json!({
            "shards": "ALL",
            "start": { "type": "TRIM_HORIZON" },
            "stop": { "type": stop, "timestamp": seconds(t as u64) },
        }));
        let output = fixture.scrape(&input).await?;
        let (manifest, read) = fixture.read(&output).await?;
        kept.push(fixture.check(&manifest, &read, expected)?);
    }
    // The stops differ exactly by the records at t, and the ones past it.
    assert_eq!(kept[1] - kept[0], at_t, "{kept:?}");
    assert!(kept[2] > kept[1], "{kept:?}");
    fixture.delete().await
}

#[tokio::test]
async fn a_sequence_range_of_one_shard() -> anyhow::Result<()> {
    let fixture = Fixture::new("scrape-seq", &[200, 40]).await?;
    let shard = fixture.puts[0].shard.clone();
    let mut own: Vec<&Put> = fixture.puts.iter().filter(|p| p.shard == shard).collect();
    own.sort_by(|a, b| a.sequence.cmp(&b.sequence));
    anyhow::ensure!(own.len() > 20, "{} records on {shard}", own.len());
    let (first, last) = (own[3].sequence.clone(), own[own.len() - 4].sequence.clone());
    let input = fixture.request(json!({
        "shards": [shard],
        "start": { "type": "AT_SEQUENCE_NUMBER", "sequenceNumber": first },
        "stop": { "type": "AT_SEQUENCE_NUMBER", "sequenceNumber": last },
    }));
    let output = fixture.scrape(&input).await?;
    let (manifest, read) = fixture.read(&output).await?;
    let expected = fixture.check(&manifest, &read, |p| {
        p.shard == shard && p.sequence >= first && p.sequence <= last
    })?;
    assert_eq!(expected, own.len() - 6);
    assert_eq!(manifest.shards.len(), 1);
    fixture.delete().await
}

#[tokio::test]
async fn a_count_per_shard() -> anyhow::Result<()> {
    let fixture = Fixture::new("scrape-count", &[100, 100]).await?;
    let count = 30;
    let input = fixture.request(json!({
        "shards": "ALL",
        "start": { "type": "TRIM_HORIZON" },
        "stop": { "type": "TOTAL_RECORDS_PER_SHARD", "count": count },
    }));
    let output = fixture.scrape(&input).await?;
    let (manifest, read) = fixture.read(&output).await?;
    // Per shard, its first `count` records.
    let mut firsts: BTreeMap<&str, Vec<&SequenceNumber>> = BTreeMap::new();
    for put in &fixture.puts {
        firsts.entry(&put.shard).or_default().push(&put.sequence);
    }
    for list in firsts.values_mut() {
        list.sort();
        list.truncate(count);
    }
    fixture.check(&manifest, &read, |p| {
        firsts[p.shard.as_str()].contains(&&p.sequence)
    })?;
    fixture.delete().await
}

#[tokio::test]
async fn steps_that_stop_early_or_fail_leave_no_gap_or_duplicate() -> anyhow::Result<()> {
    let fixture = Fixture::new("scrape-steps", &[500, 60]).await?;
    // The first chunk write of this run fails past the SDK's own retries
    // (5 attempts): the step fails with OutputWriteFailed and the state
    // machine retries it from the same continuation. One shard at a time, so
    // that one step meets the five failures in a row. Only writes under a
    // shard's folder: the plan's claim of the run folder (`_run.json`)
    // comes first and is not a chunk.
    let admin = stack().admin();
    admin
        .inject(
            &Fault::count("s3", "PutObject", FaultKind::ServerError, 6)
                .matching(&fixture.bucket)
                .and_matching("/shardId-"),
        )
        .await?;
    let input = fixture.request(json!({
        "shards": "ALL",
        "start": { "type": "TRIM_HORIZON" },
        "stop": { "type": "LATEST" },
        "maxConcurrency": 1,
    }));
    let output = fixture.scrape(&input).await?;
    let left = admin.faults().await?;
    assert!(
        left.iter()
            .all(|f| f.matching.as_deref() != Some(fixture.bucket.as_str())),
        "the injected faults were all hit: {left:?}"
    );
    let (manifest, read) = fixture.read(&output).await?;
    assert_eq!(fixture.check(&manifest, &read, |_| true)?, 560);
    let parents: Vec<_> = manifest
        .shards
        .iter()
        .filter(|s| s.parent_shard_ids.is_empty())
        .collect();
    for parent in parents {
        // About 250 records each, at most 100 (+ one 25-record page) a step.
        assert!(parent.chunks.len() >= 3, "{parent:?}");
    }
    fixture.delete().await
}

#[tokio::test]
async fn steps_that_run_out_of_time_resume_without_gap_or_duplicate() -> anyhow::Result<()> {
    let fixture = Fixture::new("scrape-time-budget", &[200, 60]).await?;
    // A step reads for two thirds of its 6 s (it keeps a third as margin),
    // and every call waits 1.5 s first (plus 0.2 s of pacing after the
    // first): two calls of at most 25 records a step, never the 100 of its
    // chunk budget. Every step but a shard's last stops because its time is
    // up.
    let delay_ms = 1500;
    let reading_ms = LOCAL_SCRAPER_MAX_STEP_SECONDS * 1000 * 2 / 3;
    let max_calls = (reading_ms / delay_ms).max(1);
    assert!(max_calls * 25 < LOCAL_SCRAPER_CHUNK);
    let input = fixture.request(json!({
        "shards": "ALL",
        "start": { "type": "TRIM_HORIZON" },
        "stop": { "type": "LATEST" },
        "pollDelayMs": delay_ms,
    }));
    let output = fixture.scrape(&input).await?;
    let (manifest, read) = fixture.read(&output).await?;
    assert_eq!(fixture.check(&manifest, &read, |_| true)?, 260);
    let mut stopped_on_time = 0;
    for shard in &manifest.shards {
        let sizes = fixture.chunk_sizes(shard).await?;
        assert!(
            sizes.iter().all(|&n| (n as u64) < LOCAL_SCRAPER_CHUNK),
            "{}: {sizes:?}",
            shard.shard_id
        );
        stopped_on_time += sizes.len().saturating_sub(1);
        if shard.parent_shard_ids.is_empty() {
            // About 100 records each: at least two steps.
            assert!(sizes.len() >= 2, "{}: {sizes:?}", shard.shard_id);
        }
    }
    assert!(
        stopped_on_time >= 2,
        "{stopped_on_time} steps stopped on time"
    );
    fixture.delete().await
}

/// A direct `run` invocation (no state machine) steps through the shards
/// until its own deadline and answers `IN_PROGRESS` with its continuation.
/// Its deadline here (6 s) is closer than the 20 s margin a step keeps from
/// a long one: it must still read, and each invocation go further.
#[tokio::test]
async fn direct_run_invocations_with_a_short_deadline_make_progress() -> anyhow::Result<()> {
    use aws_sdk_lambda::primitives::Blob;
    let fixture = Fixture::new("scrape-run", &[200]).await?;
    let lambda = aws_sdk_lambda::Client::new(&stack().sdk_config().await);
    // About 36 records/s with a 0.5 s poll delay: ~150 records, and
    // several chunks, per invocation.
    let mut event = fixture.request(json!({
        "shards": "ALL",
        "start": { "type": "TRIM_HORIZON" },
        "stop": { "type": "LATEST" },
        "pollDelayMs": 500,
        "runId": unique("run"),
    }));
    let mut records = 0;
    let mut invocations = 0;
    let output = loop {
        invocations += 1;
        anyhow::ensure!(invocations <= 20, "still in progress: {event}");
        let answer = lambda
            .invoke()
            .function_name("scraper")
            .payload(Blob::new(event.to_string()))
            .send()
            .await?;
        anyhow::ensure!(answer.function_error().is_none(), "{answer:?}");
        let answer: Value =
            serde_json::from_slice(answer.payload().map_or(&[][..], |p| p.as_ref()))?;
        match answer["status"].as_str() {
            Some("SUCCEEDED") => break answer,
            Some("IN_PROGRESS") => {
                let now = answer["records"].as_u64().unwrap_or_default();
                anyhow::ensure!(now > records, "no progress: {records} then {answer}");
                records = now;
                event = answer["next"].clone();
            }
            _ => anyhow::bail!("unexpected answer {answer}"),
        }
    };
    assert!(invocations >= 2, "one invocation read it all: {output}");
    let (manifest, read) = fixture.read(&output).await?;
    assert_eq!(fixture.check(&manifest, &read, |_| true)?, 200);
    fixture.delete().await
}

#[tokio::test]
async fn an_invalid_request_fails_without_retries() -> anyhow::Result<()> {
    let stack = stack();
    let sfn = aws_sdk_sfn::Client::new(&stack.sdk_config().await);
    let template = stack.layout.root.join("template.yaml");
    let definition = statemachine::load(&template, "ScrapeStateMachine", &Context::default())?;
    let machine = statemachine::create(&sfn, &unique("scrape-bad"), &definition).await?;
    let input = json!({
        "stream": "no-such-stream",
        "start": { "type": "TRIM_HORIZON" },
        "stop": { "type": "LATEST" },
        "pollBatchSize": 20000,
        "output": { "bucket": "b" },
    });
    let (name, input) = (unique("bad"), input.to_string());
    let limit = Duration::from_secs(60);
    let described = statemachine::execute(&sfn, &machine, &name, &input, limit).await?;
    assert_eq!(*described.status(), ExecutionStatus::Failed);
    assert_eq!(described.error(), Some("InvalidRequest"));
    assert!(
        described
            .cause()
            .unwrap_or_default()
            .contains("pollBatchSize"),
        "{:?}",
        described.cause()
    );
    // No retry: the plan's invocation was scheduled once.
    let history = sfn
        .get_execution_history()
        .execution_arn(described.execution_arn())
        .max_results(1000)
        .send()
        .await?;
    let invocations = history
        .events()
        .iter()
        .filter(|event| {
            matches!(
                event.r#type(),
                HistoryEventType::LambdaFunctionScheduled | HistoryEventType::TaskScheduled
            )
        })
        .count();
    assert_eq!(invocations, 1, "{:?}", history.events());
    Ok(())
}
