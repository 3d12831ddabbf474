//! Archiving a stream for real: the archiver function, served by the local
//! stack, behind the engine's local event source mapping.

use std::time::Duration;

use rewind_engine::jobs::mapping::report::{MappingReport, Stopped};
use rewind_engine::jobs::mapping::stream::StreamMapping;
use rewind_engine::pipeline::lineage::PlannedShard;
use rewind_engine::sinks::dlq::LogOnlyDestination;
use rewind_engine::sinks::lambda::invoker::{Invoker, LambdaInvoker};

use crate::archiver_mapping;

/// Archives what `stream` holds, in batches of `batch_size` (no batching
/// window), until every shard has been idle for 5 s, leaving out the shards
/// in `done` (archived by an earlier run: after a reshard, a second run
/// polls only the children, whose parents it then doesn't wait for). Fails
/// unless every record read was archived; returns the mapping's report.
pub async fn archive_stream(
    kinesis: &aws_sdk_kinesis::Client,
    lambda: &aws_sdk_lambda::Client,
    stream: &str,
    batch_size: usize,
    done: &[String],
) -> anyhow::Result<MappingReport> {
    let (mapping, mut shards) = archiver_mapping(
        kinesis,
        stream,
        batch_size,
        Duration::ZERO,
        Duration::from_secs(5),
    )
    .await?;
    shards.retain(|shard| !done.contains(&shard.shard_id));
    let invoker = LambdaInvoker::new(lambda.clone(), "archiver", None);
    let report = run_to_idle(&mapping, &invoker, shards, Duration::from_secs(240)).await?;
    for shard in &report.shards {
        anyhow::ensure!(
            shard.counters.delivered == shard.records && shard.counters.failed_records == 0,
            "{shard:?}"
        );
    }
    Ok(report)
}

/// Runs `mapping` of `shards` into `invoker` (discarded batches only
/// logged) until every shard is idle; fails if that takes past `limit` (the
/// mapping may not outlive the test) or it stops otherwise.
pub async fn run_to_idle(
    mapping: &StreamMapping,
    invoker: &impl Invoker,
    shards: Vec<PlannedShard>,
    limit: Duration,
) -> anyhow::Result<MappingReport> {
    let report = mapping
        .run(
            invoker,
            &LogOnlyDestination,
            shards,
            tokio::time::sleep(limit),
        )
        .await?;
    anyhow::ensure!(report.stopped == Stopped::Idle, "{report:#?}");
    Ok(report)
}
