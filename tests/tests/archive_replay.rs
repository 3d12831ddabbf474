//! Replays from the S3 archive on the local stack: KPL aggregates reach a
//! function whole (issue 12, point 1), the events carry the archived
//! stream's ARN from its shard markers (issue 14, item 2), and a shard's
//! listing is bounded to its own folders from its cursor on, against the
//! real S3 emulator's `ListObjectsV2` (issue 14, item 3).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_s3::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept};
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Input;
use rewind_engine::model::archive::{ArchiveLayout, HashKeyRange, ShardMarker};
use rewind_engine::model::kpl::{UserRecord, aggregate};
use rewind_engine::model::record::{ArrivalTime, Record, decode_base64};
use rewind_engine::model::seqno::{Position, SequenceNumber};
use rewind_engine::pipeline::deaggregate::deaggregate_all;
use rewind_engine::sinks::s3_archive::archive_batch;
use rewind_engine::sources::RecordSource;
use rewind_engine::sources::s3_archive::ArchiveSource;
use rewind_engine::store::{ObjectStore, PutObject, S3Store};
use rewind_local::sdk::s3_client;
use rewind_tests::unique;
use serde_json::{Value, json};

use crate::replay::Replay;
use crate::stack;

/// Two shards of Kinesis records a second apart from `t0` (epoch ms): every
/// other one a KPL aggregate of three user records (one with an explicit
/// hash key), the rest plain.
fn kpl_records(stream: &str, t0: i64) -> anyhow::Result<Vec<Record>> {
    let mut records = Vec::new();
    for shard in 0..2 {
        for n in 0..8 {
            let (partition_key, explicit_hash_key, data) = if n % 2 == 0 {
                let users = (0..3).map(|i| UserRecord {
                    partition_key: format!("user-{shard}-{n}-{i}"),
                    explicit_hash_key: (i == 1).then(|| format!("{}", 1000 + n)),
                    data: format!("{{\"shard\":{shard},\"n\":{n},\"i\":{i}}}").into_bytes(),
                });
                let mut aggregates = aggregate(users)?;
                anyhow::ensure!(aggregates.len() == 1);
                let whole = aggregates.remove(0);
                (whole.partition_key, whole.explicit_hash_key, whole.data)
            } else {
                (
                    format!("plain-{shard}-{n}"),
                    None,
                    format!("plain {shard}/{n}").into_bytes(),
                )
            };
            let seq = format!(
                "4965662637242791438523726206339647815341865821831{:06}",
                n * 11 + 3
            );
            records.push(Record {
                explicit_hash_key,
                ..record(stream, shard, &seq, partition_key, t0 + n * 1000, data)
            });
        }
    }
    Ok(records)
}

/// Record `seq` of shard `shard`, arrived at `at` (epoch ms).
fn record(
    stream: &str,
    shard: u32,
    seq: &str,
    partition_key: String,
    at: i64,
    data: Vec<u8>,
) -> Record {
    Record {
        stream: stream.to_owned(),
        shard_id: format!("shardId-00000000000{shard}"),
        sequence_number: SequenceNumber::parse(seq).expect("a sequence number"),
        sub_sequence_number: None,
        partition_key,
        explicit_hash_key: None,
        encryption_type: None,
        approximate_arrival_timestamp: ArrivalTime::from_epoch_millis(at),
        data,
        aggregate: None,
    }
}

/// Marks each shard of `stream` as the archiver does, with `stream_arn`.
async fn mark(
    store: &S3Store,
    stream: &str,
    stream_arn: &str,
    shards: &[&str],
) -> anyhow::Result<()> {
    let layout = ArchiveLayout::default();
    for shard in shards {
        let marker = ShardMarker {
            shard_id: (*shard).to_owned(),
            stream_arn: stream_arn.to_owned(),
            parent_shard_id: None,
            adjacent_parent_shard_id: None,
            hash_key_range: HashKeyRange {
                starting_hash_key: "0".to_owned(),
                ending_hash_key: "340282366920938463463374607431768211455".to_owned(),
            },
        };
        store
            .put(PutObject {
                key: layout.shard_marker_key(stream, shard),
                body: serde_json::to_vec(&marker)?,
                content_type: "application/json",
                content_encoding: None,
            })
            .await?;
    }
    Ok(())
}

/// An event record as the fixture kept it: partition key, data,
/// `eventSourceARN` and `awsRegion`.
type Kept = (String, Vec<u8>, String, String);

/// What the `target` fixture accepted for `stream`, by eventID; an eventID
/// twice fails.
fn delivered(stream: &str) -> anyhow::Result<BTreeMap<String, Kept>> {
    let path = stack()
        .layout
        .run_dir()
        .join("fixtures/target")
        .join(format!("{stream}.jsonl"));
    let mut seen = BTreeMap::new();
    for line in std::fs::read_to_string(&path)?.lines() {
        let batch: Value = serde_json::from_str(line)?;
        for record in batch["records"].as_array().into_iter().flatten() {
            let text = |name: &str| record[name].as_str().unwrap_or_default().to_owned();
            let value = (
                text("partitionKey"),
                decode_base64(&text("data"))?,
                text("eventSourceARN"),
                text("awsRegion"),
            );
            anyhow::ensure!(
                seen.insert(text("eventID"), value).is_none(),
                "{record}: eventID delivered twice"
            );
        }
    }
    Ok(seen)
}

/// Issue 12, point 1, as the live mapping delivers them (one event record
/// per Kinesis record, aggregate bytes and all, under the Kinesis record's
/// partition key): an archive of a KPL-aggregated window, kept whole and
/// kept as user records (`ArchiveDeaggregate`: what the archiver stores,
/// `deaggregate_all`), replayed by the replay state machine into the
/// `target` fixture. Every Kinesis record arrives once, whole, byte for
/// byte, under its own eventID. The deaggregated archive has shard markers
/// from another account and region: the events carry that stream's ARN
/// and region.
#[tokio::test]
async fn kpl_aggregates_are_replayed_whole_from_either_archive_form() -> anyhow::Result<()> {
    let replay = Replay::new("replay-kpl").await?;
    let store = S3Store::new(replay.s3.clone(), &replay.bucket);
    let layout = ArchiveLayout::default();
    let t0 = 1_732_251_600_000;
    let whole = unique("kpl-whole");
    let users = unique("kpl-users");
    let foreign = format!("arn:aws:kinesis:eu-west-1:210987654321:stream/{users}");
    for (stream, deaggregated) in [(&whole, false), (&users, true)] {
        let records = kpl_records(stream, t0)?;
        let stored = if deaggregated {
            let stored = deaggregate_all(&records);
            anyhow::ensure!(stored.len() == records.len() + 2 * 8, "{}", stored.len());
            stored
        } else {
            records.clone()
        };
        let outcome = archive_batch(&store, &layout, &stored).await;
        anyhow::ensure!(outcome.failed.is_empty(), "{:?}", outcome.failed);
        if deaggregated {
            mark(
                &store,
                stream,
                &foreign,
                &["shardId-000000000000", "shardId-000000000001"],
            )
            .await?;
        }

        let run = unique("run");
        let input = json!({
            "source": {"type": "ARCHIVE", "bucket": replay.bucket, "stream": stream,
                       "from": t0 / 1000, "to": t0 / 1000 + 60},
            "target": {"type": "FUNCTION", "functionName": "target"},
            "options": {"BatchSize": 3},
            "dlq": {"type": "S3", "bucket": replay.bucket}
        });
        let output = replay.run(&run, &input).await?;
        let (arn, region) = if deaggregated {
            (foreign.clone(), "eu-west-1")
        } else {
            (
                format!(
                    "arn:aws:kinesis:us-east-1:{}:stream/{stream}",
                    rewind_local::proxy::ACCOUNT
                ),
                "us-east-1",
            )
        };
        assert_eq!(output["streamArn"], json!(arn), "{output}");
        let expected: BTreeMap<String, Kept> = records
            .iter()
            .map(|r| {
                (
                    format!("{}:{}", r.shard_id, r.sequence_number),
                    (
                        r.partition_key.clone(),
                        r.data.clone(),
                        arn.clone(),
                        region.to_owned(),
                    ),
                )
            })
            .collect();
        assert_eq!(delivered(stream)?, expected, "{stream}");
        assert_eq!(
            output["summary"]["totals"]["records"],
            json!(records.len()),
            "{output}"
        );
    }
    Ok(())
}

/// A `ListObjectsV2` request: its prefix and `StartAfter`.
type Listing = (String, Option<String>);

/// Every `ListObjectsV2` a client sends.
#[derive(Debug, Default, Clone)]
struct Listings(Arc<Mutex<Vec<Listing>>>);

impl Intercept for Listings {
    fn name(&self) -> &'static str {
        "Listings"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        if let Some(input) = context.input().downcast_ref::<ListObjectsV2Input>() {
            self.0.lock().unwrap().push((
                input.prefix().unwrap_or_default().to_owned(),
                input.start_after().map(str::to_owned),
            ));
        }
        Ok(())
    }
}

impl Listings {
    fn take(&self) -> Vec<Listing> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Issue 14, item 3, against the S3 emulator: a shard's pages list only
/// that shard's folder of each hour (one request a page, counted on the
/// wire), a resumed read only from its cursor's object on, and both read
/// exactly the records the whole-window scan reads.
#[tokio::test]
async fn a_shards_listing_is_bounded_to_its_folders_from_its_cursor() -> anyhow::Result<()> {
    let stack = stack();
    let config = stack.sdk_config().await;
    let listings = Listings::default();
    let plain = s3_client(&config);
    let s3 = aws_sdk_s3::Client::from_conf(
        plain
            .config()
            .to_builder()
            .interceptor(listings.clone())
            .build(),
    );
    let bucket = unique("bounded").to_lowercase();
    s3.create_bucket().bucket(&bucket).send().await?;
    let store = S3Store::new(s3.clone(), &bucket);
    let layout = ArchiveLayout::default();
    let stream = unique("bounded");
    // Two hours; shard 0 has 40 objects in the first, 5 in the second;
    // shard 1 as many.
    let t0 = 1_732_255_200_000;
    let mut shard0 = Vec::new();
    for (hour, objects) in [(0, 40), (1, 5)] {
        for i in 0..objects {
            for shard in 0..2 {
                let at = t0 + hour * 3_600_000 + i * 10;
                let batch: Vec<Record> = (0..2)
                    .map(|j| {
                        let seq = format!(
                            "4965662637242791438523726206339647815341865821832{:06}",
                            hour * 1000 + i * 2 + j
                        );
                        let data = format!("{shard}/{hour}/{i}/{j}").into_bytes();
                        record(&stream, shard, &seq, format!("k{i}"), at, data)
                    })
                    .collect();
                let outcome = archive_batch(&store, &layout, &batch).await;
                anyhow::ensure!(outcome.failed.is_empty(), "{:?}", outcome.failed);
                if shard == 0 {
                    shard0.extend(batch);
                }
            }
        }
    }
    let (from, to) = (
        ArrivalTime::from_epoch_millis(t0),
        ArrivalTime::from_epoch_millis(t0 + 2 * 3_600_000),
    );
    let source = ArchiveSource::open(store.clone(), &layout, &stream, (from, to), None).await?;
    let planned = source.plan_shards().await?;
    assert_eq!(
        planned.groups,
        [vec!["shardId-000000000000", "shardId-000000000001"]],
        "no markers, no stream: one group"
    );
    let plan_listings = listings.take();
    assert_eq!(
        plan_listings.len(),
        1 + 2 + 1,
        "markers at open, a folder listing per hour, markers: {plan_listings:?}"
    );

    let hour_folder = |hour: i64| {
        let at = ArrivalTime::from_epoch_millis(t0 + hour * 3_600_000).to_datetime();
        format!("{}/shardId-000000000000/", layout.partition(&stream, at))
    };
    // The object holding records 50 and 51 (the 26th of hour 0).
    let object = layout.object_key(
        &stream,
        ArrivalTime::from_epoch_millis(t0).to_datetime(),
        &shard0[50].id(),
        &shard0[51].id(),
    );
    let mut pages = source.pages("shardId-000000000000", None).await?;
    let mut read = Vec::new();
    let mut cursor = None;
    while let Some(page) = pages.next_page().await? {
        if page.contains(&shard0[50]) {
            cursor = pages.cursor();
        }
        read.extend(page);
    }
    assert_eq!(read, shard0);
    assert_eq!(
        cursor.as_deref(),
        Some(object.as_str()),
        "where record 50 came from"
    );
    assert_eq!(
        listings.take(),
        [(hour_folder(0), None), (hour_folder(1), None)],
        "shard 0's folders only, one page each"
    );

    // A step that settled record 50 resumes inside its object.
    let after = Position::of(&shard0[50]);
    let mut pages = source
        .pages_from("shardId-000000000000", Some(&after), cursor.as_deref())
        .await?;
    let mut resumed = Vec::new();
    while let Some(page) = pages.next_page().await? {
        resumed.extend(page);
    }
    assert_eq!(resumed, shard0[51..]);
    let resumed_listings = listings.take();
    assert_eq!(resumed_listings.len(), 2, "{resumed_listings:?}");
    assert_eq!(resumed_listings[0].0, hour_folder(0));
    assert!(
        resumed_listings[0]
            .1
            .as_deref()
            .is_some_and(|start| start.starts_with(&hour_folder(0))),
        "{resumed_listings:?}"
    );
    assert_eq!(resumed_listings[1], (hour_folder(1), None));
    Ok(())
}
