//! Issue 14, item 2, end to end on the local stack: a stream archived by the
//! real archiver (behind the local mapping) while it had two shards, split
//! to four (UpdateShardCount: each parent into two children), and archived
//! again; the archive's shard markers, which the archiver wrote, give the
//! replay's plan its lineage groups (parent 0 with its children, parent 1
//! with its own), and the replay state machine, with `maxConcurrency` 2,
//! runs the two groups at once into the `target` fixture. Every record of
//! the `SLEEP` prefix makes the fixture take a while on each batch, so that
//! batches of the two groups are seen to overlap in time (from the
//! fixture's own start and end times); each partition key's records still
//! arrive in the order the stream stored them, parents' before children's;
//! the events carry the archived stream's real ARN.

use std::collections::{BTreeMap, BTreeSet};

use rewind_engine::jobs::mapping::wall_clock;
use rewind_engine::model::seqno::SequenceNumber;
use rewind_engine::sources::kinesis::resolve_stream_arn;
use rewind_local::stack::LOCAL_ARCHIVE_BUCKET;
use rewind_tests::{
    ArchiveClients, TargetBatch, archive_stream, create_stream, put_all, reshard, state_output,
    target_batches, unique,
};
use serde_json::json;

use crate::replay::Replay;
use crate::stack;

/// How long the fixture takes on each batch: long enough that the groups'
/// batches overlap whenever the groups run at once.
const SLEEP_MS: u64 = 300;

/// `count` records of phase `phase`, over 8 partition keys, each asking
/// the fixture to sleep.
fn records(phase: usize, count: usize) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|n| {
            (
                format!("key-{}", n % 8),
                format!("SLEEP {SLEEP_MS} phase {phase} record {n}").into_bytes(),
            )
        })
        .collect()
}

/// The first and last microsecond of each batch the fixture took, by the
/// lineage group (its root shard) of the batch's shard.
fn spans(
    batches: &[TargetBatch],
    root: &BTreeMap<String, String>,
) -> anyhow::Result<BTreeMap<String, Vec<(u64, u64)>>> {
    let mut spans: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for batch in batches {
        let shard = &batch.records[0].0;
        anyhow::ensure!(
            batch.records.iter().all(|(s, _, _)| s == shard),
            "a batch of several shards: {batch:?}"
        );
        let group = root
            .get(shard)
            .ok_or_else(|| anyhow::anyhow!("{shard}: not a shard of the stream"))?;
        spans
            .entry(group.clone())
            .or_default()
            .push((batch.started_us, batch.ended_us));
    }
    Ok(spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_of_a_resharded_stream_replays_its_groups_at_once_in_key_order()
-> anyhow::Result<()> {
    let stack = stack();
    let ArchiveClients {
        kinesis, lambda, ..
    } = stack.archive_clients().await;
    let replay = Replay::new("archive-reshard").await?;
    let started_at = wall_clock();
    let stream = unique("archive-reshard");
    create_stream(&kinesis, &stream, 2).await?;

    // Archived with two shards, split to four, the rest archived after.
    let mut puts = put_all(&kinesis, &stream, records(0, 40)).await?;
    let parents: Vec<String> = archive_stream(&kinesis, &lambda, &stream, 10, &[])
        .await?
        .shards
        .into_iter()
        .map(|s| s.shard_id)
        .collect();
    anyhow::ensure!(parents.len() == 2, "{parents:?}");
    reshard(&kinesis, &stream, 4).await?;
    puts.extend(put_all(&kinesis, &stream, records(1, 40)).await?);
    let children = archive_stream(&kinesis, &lambda, &stream, 10, &parents).await?;
    anyhow::ensure!(children.shards.len() == 4, "{children:#?}");

    // Each shard's lineage group, named by its root, as ListShards says.
    let stream_arn = resolve_stream_arn(&kinesis, &stream).await?;
    let listed = kinesis.list_shards().stream_arn(&stream_arn).send().await?;
    let root: BTreeMap<String, String> = listed
        .shards()
        .iter()
        .map(|s| {
            let parent = s.parent_shard_id().unwrap_or(s.shard_id());
            (s.shard_id().to_owned(), parent.to_owned())
        })
        .collect();
    anyhow::ensure!(
        root.len() == 6 && root.values().collect::<BTreeSet<_>>().len() == 2,
        "two parents split in two: {root:?}"
    );
    anyhow::ensure!(
        puts.iter().any(|p| p.shard == parents[0]) && puts.iter().any(|p| p.shard == parents[1]),
        "records on both parents"
    );

    let run = unique("run");
    let input = json!({
        "source": {"type": "ARCHIVE", "bucket": LOCAL_ARCHIVE_BUCKET, "stream": stream,
                   "from": started_at.epoch_millis() / 1000 - 60,
                   "to": wall_clock().epoch_millis() / 1000 + 60},
        "target": {"type": "FUNCTION", "functionName": "target"},
        "options": {"BatchSize": 4},
        "dlq": {"type": "S3", "bucket": replay.bucket},
        "maxConcurrency": 2
    });
    let output = replay.run(&run, &input).await?;
    assert_eq!(output["streamArn"], json!(stream_arn), "{output}");
    assert_eq!(
        output["summary"]["totals"]["records"],
        json!(puts.len()),
        "{output}"
    );
    let planned = state_output(&replay.sfn, &replay.machine, &run, "Plan").await?;
    assert_eq!(planned["plan"]["lineage"], json!("MARKERS"), "{planned}");
    assert_eq!(planned["plan"]["groups"], json!(2), "{planned}");

    // Every record once, each key's in the order the stream stored them
    // (a parent's before its children's), under the stream's real ARN.
    let batches = target_batches(&stack.layout, &stream)?;
    let mut delivered: BTreeMap<String, Vec<(String, SequenceNumber)>> = BTreeMap::new();
    for (shard, sequence, record) in batches.iter().flat_map(|b| &b.records) {
        assert_eq!(record["eventSourceARN"], json!(stream_arn), "{record}");
        let key = record["partitionKey"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        delivered
            .entry(key)
            .or_default()
            .push((shard.clone(), sequence.clone()));
    }
    let mut stored: BTreeMap<String, Vec<(String, SequenceNumber)>> = BTreeMap::new();
    for put in &puts {
        stored
            .entry(put.partition_key.clone())
            .or_default()
            .push((put.shard.clone(), put.sequence.clone()));
    }
    assert_eq!(delivered, stored);

    // The two groups' deliveries overlap: some batch of one started before
    // a batch of the other ended, and ended after it started.
    let spans = spans(&batches, &root)?;
    anyhow::ensure!(spans.len() == 2, "{spans:?}");
    let (first, second) = (&spans[&parents[0]], &spans[&parents[1]]);
    let overlap = first
        .iter()
        .any(|a| second.iter().any(|b| a.0 < b.1 && b.0 < a.1));
    anyhow::ensure!(
        overlap,
        "the groups ran one after the other: {parents:?} {spans:?}"
    );
    Ok(())
}
