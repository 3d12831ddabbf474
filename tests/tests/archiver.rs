//! The archiver function, served by the local stack (S3 archive only, KPL
//! aggregates kept whole: no `ARCHIVE_TABLE`, no `ARCHIVE_DEAGGREGATE`),
//! behind the engine's local event source mapping, through a retried and a
//! bisected batch; the archive is then read back with the engine's reading
//! API and compared with what the stream accepted and holds.
//!
//! - Shard markers: each shard's `_shards/<shardId>.json` holds its lineage
//!   and hash key range as `ListShards` gives them and the stream's ARN.
//! - Retried batch: S3 `PutObject` answers `InternalError` for as many
//!   attempts as the archiver's SDK client makes (`ARCHIVE_MAX_ATTEMPTS`,
//!   5), so one invocation reports its shard's first record in
//!   `batchItemFailures` and the mapping delivers from there again.
//! - Bisected batch: the archiver reports every store failure per record
//!   and never fails a well-formed invocation; its only whole-invocation
//!   failure (besides a crash or a timeout, which the local endpoint can't
//!   cause) is an event it can't read. So the invoker below garbles one
//!   record of one delivered event in transit (`kinesis.data` not base64):
//!   the real function fails with an unhandled error, the endpoint answers
//!   `X-Amz-Function-Error: Unhandled`, and the mapping, with
//!   `BisectBatchOnFunctionError`, delivers the two halves intact.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use rewind_engine::jobs::mapping::wall_clock;
use rewind_engine::model::archive::{ArchiveLayout, HashKeyRange, ShardMarker};
use rewind_engine::model::chunk;
use rewind_engine::model::kpl::{self, UserRecord};
use rewind_engine::model::seqno::SequenceNumber;
use rewind_engine::model::window::StartPosition;
use rewind_engine::sinks::lambda::invoker::{Invocation, InvokeError, Invoker, LambdaInvoker};
use rewind_engine::sources::kinesis::{ReadOptions, ShardPoller};
use rewind_engine::sources::s3_archive::{self, ShardScan};
use rewind_engine::store::{ObjectReader, S3Store};
use rewind_engine::{ArrivalTime, Record};
use rewind_local::stack::LOCAL_ARCHIVE_BUCKET;
use rewind_local::{Fault, FaultKind};
use rewind_tests::{
    ArchiveClients, archiver_mapping, create_stream, put_all, put_entries, run_to_idle, unique,
};

use crate::stack;

/// `ARCHIVE_MAX_ATTEMPTS` of the locally served archiver (its default): one
/// fault per attempt makes exactly one `PutObject` give up.
const ARCHIVER_S3_ATTEMPTS: u32 = 5;

/// What the stream accepted for one record.
#[derive(Debug, Clone)]
struct Put {
    shard: String,
    sequence: SequenceNumber,
    partition_key: String,
    data: Vec<u8>,
    /// The user records of a KPL aggregate, as the producer handed them.
    users: Option<Vec<UserRecord>>,
}

/// A payload holding every byte value, starting at `n` so payloads differ.
fn binary(n: usize, extra: usize) -> Vec<u8> {
    (0..256 + extra).map(|i| ((i + n) % 256) as u8).collect()
}

/// Puts KPL aggregates as the KPL does (partition key and explicit hash key
/// of the first user record), retrying only the entries that failed.
async fn put_aggregates(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    aggregates: Vec<(kpl::AggregatedRecord, Vec<UserRecord>)>,
) -> anyhow::Result<Vec<Put>> {
    let entries = aggregates
        .iter()
        .map(|(aggregate, _)| {
            (
                aggregate.partition_key.clone(),
                aggregate.explicit_hash_key.clone(),
                aggregate.data.clone(),
            )
        })
        .collect();
    // Every aggregate's bytes differ (its user records' payloads do): they
    // find each accepted entry's user records.
    let mut users_of: BTreeMap<Vec<u8>, Vec<UserRecord>> = aggregates
        .into_iter()
        .map(|(aggregate, users)| (aggregate.data, users))
        .collect();
    put_entries(kinesis, stream, entries)
        .await?
        .into_iter()
        .map(|put| {
            let users = users_of
                .remove(&put.data)
                .ok_or_else(|| anyhow::anyhow!("{}: an aggregate accepted twice", put.sequence))?;
            Ok(Put {
                shard: put.shard,
                sequence: put.sequence,
                partition_key: put.partition_key,
                data: put.data,
                users: Some(users),
            })
        })
        .collect()
}

/// One invocation as the invoker saw it.
#[derive(Debug, Clone)]
struct Call {
    shard: String,
    sequences: Vec<String>,
    garbled: bool,
    function_error: Option<String>,
    /// `itemIdentifier`s of the function's partial batch response.
    item_failures: Vec<String>,
}

/// The real archiver through the local Lambda endpoint; garbles one record
/// of the first event of more than one record (see the module's doc), and
/// keeps every invocation for the test to check what the mapping did.
struct GarbleOnce {
    inner: LambdaInvoker,
    garble: Mutex<bool>,
    calls: Mutex<Vec<Call>>,
}

impl Invoker for GarbleOnce {
    async fn invoke(&self, payload: Vec<u8>) -> Result<Invocation, InvokeError> {
        let mut event: serde_json::Value =
            serde_json::from_slice(&payload).expect("the mapping sends JSON");
        let records = event["Records"].as_array().expect("Records").clone();
        let shard = records[0]["eventID"]
            .as_str()
            .and_then(|id| id.split_once(':'))
            .map(|(shard, _)| shard.to_owned())
            .expect("eventID is <shardId>:<sequence>");
        let sequences: Vec<String> = records
            .iter()
            .map(|r| r["kinesis"]["sequenceNumber"].as_str().unwrap().to_owned())
            .collect();
        let garbled = {
            let mut garble = self.garble.lock().unwrap();
            let now = *garble && records.len() > 1;
            if now {
                *garble = false;
            }
            now
        };
        let payload = if garbled {
            event["Records"][0]["kinesis"]["data"] = "*not base64*".into();
            serde_json::to_vec(&event).unwrap()
        } else {
            payload
        };
        let result = self.inner.invoke(payload).await;
        if let Ok(invocation) = &result {
            let response: serde_json::Value =
                serde_json::from_slice(&invocation.payload).unwrap_or_default();
            let item_failures = response["batchItemFailures"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|i| i["itemIdentifier"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            self.calls.lock().unwrap().push(Call {
                shard,
                sequences,
                garbled,
                function_error: invocation.function_error.clone(),
                item_failures,
            });
        }
        result
    }

    fn function_arn(&self) -> &str {
        self.inner.function_arn()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiver_keeps_every_record_once_through_retries_and_bisects() -> anyhow::Result<()> {
    let stack = stack();
    let ArchiveClients {
        kinesis,
        s3,
        lambda,
    } = stack.archive_clients().await;
    let started_at = wall_clock();

    let stream = unique("archiver");
    create_stream(&kinesis, &stream, 3).await?;

    // Plain records: binary payloads, partition keys spread over the shards.
    let plain: Vec<(String, Vec<u8>)> = (0..120)
        .map(|n| (format!("plain-{}", n % 29), binary(n, n * 7 % 200)))
        .collect();
    let mut puts: Vec<Put> = put_all(&kinesis, &stream, plain)
        .await?
        .into_iter()
        .map(|a| Put {
            shard: a.shard,
            sequence: a.sequence,
            partition_key: a.partition_key,
            data: a.data,
            users: None,
        })
        .collect();
    // KPL aggregates of five user records each; some user records carry an
    // explicit hash key (one in each third of the hash space, so aggregates
    // led by one land on each of the three shards).
    let thirds = [
        "0".to_owned(),
        (u128::MAX / 3 + 1).to_string(),
        (u128::MAX / 3 * 2 + 1).to_string(),
    ];
    let mut aggregates = Vec::new();
    for a in 0..15 {
        let users: Vec<UserRecord> = (0..5)
            .map(|u| UserRecord {
                partition_key: format!("user-{a}-{u}"),
                explicit_hash_key: (u % 2 == 0).then(|| thirds[(a + u) % 3].clone()),
                data: binary(a * 5 + u, (a * 31 + u * 17) % 300),
            })
            .collect();
        let mut packed = kpl::aggregate(users.clone())?;
        anyhow::ensure!(packed.len() == 1 && packed[0].user_records == 5);
        aggregates.push((packed.remove(0), users));
    }
    puts.extend(put_aggregates(&kinesis, &stream, aggregates).await?);
    let put_at = wall_clock();
    let mut by_shard: BTreeMap<String, Vec<Put>> = BTreeMap::new();
    for put in puts {
        by_shard.entry(put.shard.clone()).or_default().push(put);
    }
    anyhow::ensure!(by_shard.len() == 3, "records on {} shards", by_shard.len());
    for puts in by_shard.values_mut() {
        puts.sort_by(|a, b| a.sequence.cmp(&b.sequence));
        anyhow::ensure!(
            puts.iter().any(|p| p.users.is_some()) && puts.iter().any(|p| p.users.is_none()),
            "every shard holds plain records and aggregates"
        );
    }

    // Exactly one PutObject of this stream's archive fails every attempt:
    // one of the first shard's objects. The shards' invocations run at once,
    // as on Lambda, so a rule for the whole stream would share its faults
    // out between objects of different shards, failing none every attempt.
    let first_shard = by_shard.keys().next().cloned().unwrap_or_default();
    let admin = stack.admin();
    admin
        .inject(
            &Fault::count(
                "s3",
                "PutObject",
                FaultKind::ServerError,
                ARCHIVER_S3_ATTEMPTS,
            )
            .matching(&stream)
            .and_matching(&format!("/{first_shard}/")),
        )
        .await?;

    // Every record is on the stream before the mapping starts; the idle
    // exit only has to outlast the gaps between polls.
    let (mapping, shards) = archiver_mapping(
        &kinesis,
        &stream,
        20,
        Duration::ZERO,
        Duration::from_secs(5),
    )
    .await?;
    let invoker = GarbleOnce {
        inner: LambdaInvoker::new(lambda, "archiver", None),
        garble: Mutex::new(true),
        calls: Mutex::new(Vec::new()),
    };
    let report = run_to_idle(&mapping, &invoker, shards, Duration::from_secs(240)).await?;
    let left = admin.faults().await?;
    anyhow::ensure!(
        left.iter()
            .all(|f| f.matching.as_deref() != Some(stream.as_str())),
        "the injected S3 faults were not all answered: {left:?}"
    );

    // What the mapping did: every record settled, none discarded; one
    // function error (the garbled event); one retry after a partial
    // response; the bisect's two halves in place of one invocation.
    let calls = invoker.calls.lock().unwrap().clone();
    let sum = |f: fn(&rewind_engine::jobs::mapping::report::ShardReport) -> u64| -> u64 {
        report.shards.iter().map(f).sum()
    };
    for shard in &report.shards {
        let expected = by_shard.get(&shard.shard_id).map_or(0, Vec::len) as u64;
        anyhow::ensure!(
            shard.records == expected
                && shard.counters.delivered == expected
                && shard.counters.failed_records == 0
                && shard.in_flight == 0,
            "{shard:?}: {expected} put"
        );
    }
    anyhow::ensure!(sum(|s| s.counters.function_errors) == 1, "{report:#?}");
    anyhow::ensure!(
        sum(|s| s.counters.invocations) == sum(|s| s.batches) + 3
            && calls.len() as u64 == sum(|s| s.counters.invocations),
        "batches + the garbled invocation + one more half + one retry: {report:#?}\n{calls:#?}"
    );
    let garbled: Vec<usize> = (0..calls.len()).filter(|&i| calls[i].garbled).collect();
    anyhow::ensure!(garbled.len() == 1, "{calls:#?}");
    let poisoned = &calls[garbled[0]];
    anyhow::ensure!(
        poisoned.function_error.as_deref() == Some("Unhandled"),
        "{poisoned:?}"
    );
    // The shard's invocations after it: the first half, then (after any
    // retry of it) the second, together exactly the garbled batch.
    let after: Vec<&Call> = calls[garbled[0] + 1..]
        .iter()
        .filter(|c| c.shard == poisoned.shard)
        .collect();
    let half = poisoned.sequences.len() / 2;
    anyhow::ensure!(
        after
            .first()
            .is_some_and(|c| c.sequences == poisoned.sequences[..half]),
        "first half delivered next: {poisoned:?} then {after:#?}"
    );
    anyhow::ensure!(
        after
            .iter()
            .any(|c| c.sequences == poisoned.sequences[half..] && c.function_error.is_none()),
        "second half delivered: {poisoned:?} then {after:#?}"
    );
    let partial: Vec<usize> = (0..calls.len())
        .filter(|&i| !calls[i].item_failures.is_empty())
        .collect();
    anyhow::ensure!(partial.len() == 1, "{calls:#?}");
    let failed = &calls[partial[0]];
    anyhow::ensure!(
        failed.function_error.is_none() && failed.item_failures == failed.sequences[..1],
        "the object failed: its shard's first record reported {failed:?}"
    );
    anyhow::ensure!(
        calls[partial[0] + 1..]
            .iter()
            .find(|c| c.shard == failed.shard)
            .is_some_and(|c| c.sequences == failed.sequences && c.item_failures.is_empty()),
        "the same records delivered again, and stored: {calls:#?}"
    );

    // The stream as Kinesis holds it (arrival times, as GetRecords gives
    // them): the archive must hold these records exactly.
    let mut held: BTreeMap<String, Vec<Record>> = BTreeMap::new();
    for (shard_id, puts) in &by_shard {
        let mut poller = ShardPoller::new(
            &mapping.source,
            shard_id.clone(),
            StartPosition::TrimHorizon,
            ReadOptions::default(),
        );
        let records = held.entry(shard_id.clone()).or_default();
        for _ in 0..50 {
            if records.len() >= puts.len() {
                break;
            }
            records.extend(poller.next_page(10_000).await?.records);
        }
        anyhow::ensure!(records.len() == puts.len(), "{shard_id}: {records:?}");
    }

    // The archive through the engine's reader (overlaps dropped, sequence
    // order per shard), and its raw lines (every object, every line).
    let store = S3Store::new(s3, LOCAL_ARCHIVE_BUCKET);
    let layout = ArchiveLayout::default();
    let from = ArrivalTime::from_epoch_millis(started_at.epoch_millis() - 60_000);
    let to = ArrivalTime::from_epoch_millis(wall_clock().epoch_millis() + 60_000);
    let mut archived: BTreeMap<String, Vec<Record>> = BTreeMap::new();
    for (shard_id, objects) in s3_archive::plan_scan(&store, &layout, &stream, from, to).await? {
        let mut scan = ShardScan::new(objects, from, to);
        while let Some(records) = scan.next_batch(&store).await? {
            archived
                .entry(shard_id.clone())
                .or_default()
                .extend(records);
        }
    }
    let mut lines = 0usize;
    let mut distinct = BTreeSet::new();
    let (markers, keys): (Vec<String>, Vec<String>) = store
        .list(&format!("{}/stream={stream}/", layout.prefix))
        .await?
        .into_iter()
        .partition(|key| key.starts_with(&layout.shard_markers(&stream)));
    for key in &keys {
        for record in chunk::decode(key, &store.get(key).await?)? {
            lines += 1;
            distinct.insert(record.id());
        }
    }
    let total: usize = by_shard.values().map(Vec::len).sum();
    println!(
        "{total} records put; {} objects, {lines} lines, {} distinct; {} invocations, {} function error",
        keys.len(),
        distinct.len(),
        calls.len(),
        sum(|s| s.counters.function_errors)
    );
    // The failed invocations stored nothing and the retry rewrote the same
    // key: here even the raw archive holds each record once.
    anyhow::ensure!(
        distinct.len() == total && lines == total,
        "{total} put, {lines} lines, {} distinct",
        distinct.len()
    );

    // One marker per shard beside the partitions, holding what ListShards
    // says of the shard and the stream's ARN (the events' eventSourceARN).
    let listed = kinesis.list_shards().stream_name(&stream).send().await?;
    let stream_arn = kinesis
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await?
        .stream_description_summary()
        .map(|s| s.stream_arn().to_owned())
        .unwrap_or_default();
    anyhow::ensure!(
        markers.len() == by_shard.len(),
        "one marker per shard: {markers:?}"
    );
    for shard in listed.shards() {
        let key = layout.shard_marker_key(&stream, shard.shard_id());
        let marker: ShardMarker = serde_json::from_slice(&store.get(&key).await?)?;
        let range = shard
            .hash_key_range()
            .expect("a listed shard has its range");
        anyhow::ensure!(
            marker
                == ShardMarker {
                    shard_id: shard.shard_id().to_owned(),
                    stream_arn: stream_arn.clone(),
                    parent_shard_id: shard.parent_shard_id().map(str::to_owned),
                    adjacent_parent_shard_id: shard.adjacent_parent_shard_id().map(str::to_owned),
                    hash_key_range: HashKeyRange {
                        starting_hash_key: range.starting_hash_key().to_owned(),
                        ending_hash_key: range.ending_hash_key().to_owned(),
                    },
                },
            "{key}: {marker:?}"
        );
    }

    anyhow::ensure!(archived.keys().eq(by_shard.keys()), "{:?}", archived.keys());
    for (shard_id, puts) in &by_shard {
        let got = &archived[shard_id];
        anyhow::ensure!(
            *got == held[shard_id],
            "{shard_id}: the archive differs from the stream"
        );
        anyhow::ensure!(got.len() == puts.len(), "{shard_id}");
        for (record, put) in got.iter().zip(puts) {
            let at = record.approximate_arrival_timestamp.epoch_millis();
            anyhow::ensure!(
                record.stream == stream
                    && record.shard_id == put.shard
                    && record.sequence_number == put.sequence
                    && record.sub_sequence_number.is_none()
                    && record.partition_key == put.partition_key
                    && record.data == put.data
                    // GetRecords gives no explicit hash key: unknown, so absent.
                    && record.explicit_hash_key.is_none()
                    && at >= started_at.epoch_millis() - 5_000
                    && at <= put_at.epoch_millis() + 5_000,
                "{record:?} is not {put:?}"
            );
            // Kept whole as received (no ARCHIVE_DEAGGREGATE): the user
            // records, keys and all, come back out of the stored aggregate.
            match &put.users {
                Some(users) => {
                    let inside = record.clone().deaggregate()?;
                    let got: Vec<UserRecord> = inside
                        .iter()
                        .map(|r| UserRecord {
                            partition_key: r.partition_key.clone(),
                            explicit_hash_key: r.explicit_hash_key.clone(),
                            data: r.data.clone(),
                        })
                        .collect();
                    anyhow::ensure!(got == *users, "{record:?}");
                    anyhow::ensure!(
                        inside
                            .iter()
                            .enumerate()
                            .all(|(i, r)| r.sub_sequence_number == Some(i as u64)
                                && r.sequence_number == put.sequence),
                        "{inside:?}"
                    );
                }
                None => anyhow::ensure!(!record.is_aggregated(), "{record:?}"),
            }
        }
    }
    Ok(())
}
