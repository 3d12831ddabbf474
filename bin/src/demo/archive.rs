//! The archive read back with the engine's own reader: what the archiver
//! holds of the stream, and when it holds everything put.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rewind_engine::ArrivalTime;
use rewind_engine::jobs::mapping::wall_clock;
use rewind_engine::model::archive::ArchiveLayout;
use rewind_engine::sources::s3_archive::{ShardScan, plan_scan};
use rewind_engine::store::S3Store;

use super::progress;
use super::traffic::RecordId;

/// How long the mapping may take to archive what was put: far above what it
/// takes, so only a hang hits it.
const ARCHIVE_LIMIT: Duration = Duration::from_secs(180);

/// The archive's records of `stream` that arrived in `from..to`, each once
/// (the archive's own reader: overlapping objects deduplicated).
pub(super) async fn read_archive(
    store: &S3Store,
    stream: &str,
    from: ArrivalTime,
    to: ArrivalTime,
) -> anyhow::Result<BTreeSet<RecordId>> {
    let layout = ArchiveLayout::default();
    let shards = plan_scan(store, &layout, stream, from, to)
        .await
        .with_context(|| format!("listing the archive of {stream}"))?;
    let mut records = BTreeSet::new();
    for (shard, objects) in shards {
        let mut scan = ShardScan::new(objects, from, to);
        while let Some(batch) = scan
            .next_batch(store)
            .await
            .with_context(|| format!("reading the archive of {stream}, {shard}"))?
        {
            records.extend(
                batch
                    .into_iter()
                    .map(|record| (record.shard_id, record.sequence_number)),
            );
        }
    }
    Ok(records)
}

/// Waits until the archive holds every record put (the mapping has
/// delivered them all to the archiver, across the reshard); returns what it
/// holds.
pub(super) async fn wait_archived(
    store: &S3Store,
    stream: &str,
    put: &BTreeSet<RecordId>,
    started: ArrivalTime,
) -> anyhow::Result<BTreeSet<RecordId>> {
    progress(format_args!(
        "waiting for the archiver to hold all {} Kinesis records",
        put.len()
    ));
    let begun = Instant::now();
    // Wide bounds: every record of this run arrived between them.
    let from = ArrivalTime::from_epoch_millis(started.epoch_millis() - 60_000);
    loop {
        let to = ArrivalTime::from_epoch_millis(wall_clock().epoch_millis() + 60_000);
        let archived = read_archive(store, stream, from, to).await?;
        if archived.is_superset(put) {
            progress(format_args!(
                "archived: {} Kinesis records in {:.0} s",
                archived.len(),
                begun.elapsed().as_secs_f64()
            ));
            return Ok(archived);
        }
        anyhow::ensure!(
            begun.elapsed() < ARCHIVE_LIMIT,
            "the archive holds {} of the {} records put after {ARCHIVE_LIMIT:?} (see .local/logs/demo.log)",
            archived.intersection(put).count(),
            put.len()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
