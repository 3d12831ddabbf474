//! The local event source mapping (`rewind_engine::jobs::mapping`) runs the real
//! archiver function, served by the local stack with its `ARCHIVE_BUCKET`,
//! against kinesis-mock with the endpoint's shard limits enforced. Records
//! are put on a fresh two-shard stream, the mapping starts, and while it
//! polls the stream is resharded (UpdateShardCount 2 -> 4: both shards
//! split) and more records are put: the children exist only as the parents'
//! `ChildShards`, found when the mapping reads a parent to its end. Every
//! PutRecords answer (shard, sequence number, data) is the oracle; the S3
//! archive, read back with the archive's own reader (which drops overlaps
//! by shard, sequence and sub-sequence number), must hold exactly those
//! records, each once, in sequence order per shard.

use std::collections::BTreeMap;
use std::time::Duration;

use rewind_engine::ArrivalTime;
use rewind_engine::jobs::mapping::report::{ShardStatus, Stopped};
use rewind_engine::jobs::mapping::wall_clock;
use rewind_engine::model::archive::ArchiveLayout;
use rewind_engine::model::seqno::SequenceNumber;
use rewind_engine::sinks::dlq::LogOnlyDestination;
use rewind_engine::sinks::lambda::invoker::LambdaInvoker;
use rewind_engine::sources::s3_archive::{self, ShardScan};
use rewind_engine::store::S3Store;
use rewind_local::stack::LOCAL_ARCHIVE_BUCKET;
use rewind_tests::{ArchiveClients, archiver_mapping, create_stream, put_all, reshard, unique};

use crate::stack;

type Oracle = BTreeMap<String, Vec<(SequenceNumber, Vec<u8>)>>;

/// Puts `count` records, retrying only failed entries; adds what the stream
/// accepted to `oracle`.
async fn put(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    batch: usize,
    count: usize,
    oracle: &mut Oracle,
) -> anyhow::Result<()> {
    let pending: Vec<(String, Vec<u8>)> = (0..count)
        .map(|n| {
            (
                format!("key-{batch}-{}", n % 37),
                format!("batch {batch} record {n}").into_bytes(),
            )
        })
        .collect();
    for put in put_all(kinesis, stream, pending).await? {
        oracle
            .entry(put.shard)
            .or_default()
            .push((put.sequence, put.data));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapping_archives_every_record_once_across_a_reshard() -> anyhow::Result<()> {
    let stack = stack();
    let ArchiveClients {
        kinesis,
        s3,
        lambda,
    } = stack.archive_clients().await;
    let started_at = wall_clock();

    let stream = unique("mapping");
    create_stream(&kinesis, &stream, 2).await?;
    let mut oracle = Oracle::new();
    put(&kinesis, &stream, 0, 150, &mut oracle).await?;

    // The idle exit is longer than a reshard takes: the mapping ends once
    // the stream has been quiet that long after the last put.
    let (mapping, shards) = archiver_mapping(
        &kinesis,
        &stream,
        40,
        Duration::from_millis(500),
        Duration::from_secs(8),
    )
    .await?;
    // Listed before the reshard: only the two parents.
    anyhow::ensure!(shards.len() == 2, "{shards:?}");
    let invoker = LambdaInvoker::new(lambda, "archiver", None);
    // The mapping may not outlive the test.
    let deadline = tokio::time::sleep(Duration::from_secs(240));
    let producer = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        reshard(&kinesis, &stream, 4).await?;
        put(&kinesis, &stream, 1, 150, &mut oracle).await?;
        anyhow::Ok(())
    };
    let (report, produced) = tokio::join!(
        mapping.run(&invoker, &LogOnlyDestination, shards, deadline),
        producer
    );
    produced?;
    let report = report?;
    anyhow::ensure!(report.stopped == Stopped::Idle, "{report:#?}");

    // Lineage: two parents ended, four children found at their ends.
    let ended: Vec<&str> = report
        .shards
        .iter()
        .filter(|s| s.status == ShardStatus::Ended)
        .map(|s| s.shard_id.as_str())
        .collect();
    anyhow::ensure!(ended.len() == 2 && report.shards.len() == 6, "{report:#?}");
    for shard in &report.shards {
        anyhow::ensure!(
            shard.counters.failed_records == 0 && shard.in_flight == 0,
            "{shard:?}"
        );
        let expected = oracle.get(&shard.shard_id).map_or(0, Vec::len) as u64;
        anyhow::ensure!(shard.records == expected, "{shard:?}: {expected} put");
        anyhow::ensure!(
            shard.checkpoint.as_ref()
                == oracle
                    .get(&shard.shard_id)
                    .and_then(|r| r.last())
                    .map(|r| &r.0),
            "{shard:?}"
        );
    }

    // The archive, read as archive readers read it.
    let store = S3Store::new(s3, LOCAL_ARCHIVE_BUCKET);
    let layout = ArchiveLayout::default();
    let from = ArrivalTime::from_epoch_millis(started_at.epoch_millis() - 60_000);
    let to = ArrivalTime::from_epoch_millis(wall_clock().epoch_millis() + 60_000);
    let mut archived = Oracle::new();
    for (shard_id, objects) in s3_archive::plan_scan(&store, &layout, &stream, from, to).await? {
        let mut scan = ShardScan::new(objects, from, to);
        while let Some(records) = scan.next_batch(&store).await? {
            for record in records {
                anyhow::ensure!(record.stream == stream, "{record:?}");
                anyhow::ensure!(record.shard_id == shard_id, "{record:?}");
                archived
                    .entry(shard_id.clone())
                    .or_default()
                    .push((record.sequence_number, record.data));
            }
        }
    }
    let total: usize = oracle.values().map(Vec::len).sum();
    anyhow::ensure!(total == 300, "{total} records put");
    anyhow::ensure!(oracle.len() == 6, "records on {} shards", oracle.len());
    for (shard_id, expected) in &oracle {
        let got = archived
            .get(shard_id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        anyhow::ensure!(
            got == expected.as_slice(),
            "{shard_id}: archived {} records, put {}; first difference at {:?}",
            got.len(),
            expected.len(),
            got.iter().zip(expected).position(|(a, b)| a != b)
        );
    }
    anyhow::ensure!(
        archived.keys().all(|shard| oracle.contains_key(shard)),
        "archived shards {:?}",
        archived.keys()
    );
    Ok(())
}
