//! The traffic: each phase put with PutRecords, the outage's resharded
//! halfway, and what the stream accepted counted from its answers.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_kinesis::types::ScalingType;
use rewind_engine::ArrivalTime;
use rewind_engine::jobs::mapping::wall_clock;
use rewind_engine::model::seqno::SequenceNumber;
use rewind_engine::sinks::kinesis::{Entry, KinesisSink, ReinjectOptions, put_entries};

use super::plan::{Phase, PhaseName, Put};
use super::{SHARDS, SHARDS_AFTER_RESHARD, progress};

/// A Kinesis record by where the stream put it.
pub(super) type RecordId = (String, SequenceNumber);

/// What the stream accepted of one phase.
#[derive(Debug, Default)]
pub(super) struct Placed {
    pub(super) records: BTreeSet<RecordId>,
    pub(super) poison: BTreeSet<RecordId>,
    pub(super) user_records: usize,
    pub(super) aggregates: usize,
    pub(super) users_in_aggregates: usize,
}

/// What the producers did.
pub(super) struct Traffic {
    pub(super) placed: Vec<(PhaseName, Placed)>,
    /// The outage window `[from, to)`, epoch seconds.
    pub(super) window: (i64, i64),
    /// Before the first put.
    pub(super) started: ArrivalTime,
    pub(super) shards_after: usize,
}

/// Puts the phases, a whole second apart: the outage window `[T1, T2)`
/// starts at the first whole second after the last record before it, and
/// ends at the first whole second after its own last record, and the next
/// phase starts only once the clock is past each bound. Arrival times are
/// stamped between a PutRecords call's start and its answer, so no record
/// of a neighbouring phase can fall inside the window. (The archive read
/// back checks it.)
pub(super) async fn produce(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    phases: &[Phase],
) -> anyhow::Result<Traffic> {
    let started = wall_clock();
    let mut placed = Vec::new();
    let mut window = (0, 0);
    for phase in phases {
        let boundary = next_second(wall_clock());
        match phase.name {
            PhaseName::BeforeOutage => {}
            PhaseName::Outage => window.0 = boundary,
            PhaseName::AfterOutage => window.1 = boundary,
        }
        if phase.name != PhaseName::BeforeOutage {
            sleep_past(boundary).await;
        }
        let mut accepted = Placed::default();
        match phase.reshard_after {
            Some(split) => {
                put_all(kinesis, stream, &phase.puts[..split], &mut accepted).await?;
                progress(format_args!(
                    "outage: resharding {stream} {SHARDS} -> {SHARDS_AFTER_RESHARD} shards (UniformScaling)"
                ));
                kinesis
                    .update_shard_count()
                    .stream_name(stream)
                    .target_shard_count(SHARDS_AFTER_RESHARD)
                    .scaling_type(ScalingType::UniformScaling)
                    .send()
                    .await
                    .with_context(|| format!("resharding {stream}"))?;
                rewind_local::sdk::wait_active(kinesis, stream).await?;
                put_all(kinesis, stream, &phase.puts[split..], &mut accepted).await?;
            }
            None => put_all(kinesis, stream, &phase.puts, &mut accepted).await?,
        }
        progress(format_args!(
            "{}: put {} user records as {} Kinesis records ({} KPL aggregates, {} poison)",
            phase.name.label(),
            accepted.user_records,
            accepted.records.len(),
            accepted.aggregates,
            accepted.poison.len()
        ));
        placed.push((phase.name, accepted));
    }
    let shards_after = kinesis
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .with_context(|| format!("listing the shards of {stream}"))?
        .shards()
        .len();
    Ok(Traffic {
        placed,
        window,
        started,
        shards_after,
    })
}

/// The first whole epoch second after `at` (a whole second itself moves to
/// the next, so the bound is strictly after every earlier arrival).
fn next_second(at: ArrivalTime) -> i64 {
    at.epoch_millis().div_euclid(1000) + 1
}

/// Sleeps until the wall clock is past `second` (with a margin for clocks
/// read in different processes).
async fn sleep_past(second: i64) {
    let wait = second * 1000 + 50 - wall_clock().epoch_millis();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
}

/// Puts `puts` through the engine's re-injection: each partition key's
/// records stored in order, only the entries the shard limits throttled
/// retried; records where each one went.
async fn put_all(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    puts: &[Put],
    accepted: &mut Placed,
) -> anyhow::Result<()> {
    let entries = puts.iter().map(|put| Entry {
        partition_key: put.key.clone(),
        explicit_hash_key: None,
        data: put.data.clone(),
    });
    let sink = KinesisSink::new(kinesis.clone(), stream);
    put_entries(
        &sink,
        entries,
        &ReinjectOptions::default(),
        |index, _, stored| {
            let put = &puts[index];
            let id = (stored.shard_id, stored.sequence_number);
            if put.poison {
                accepted.poison.insert(id.clone());
            }
            accepted.records.insert(id);
            accepted.user_records += put.user_records;
            if put.aggregate {
                accepted.aggregates += 1;
                accepted.users_in_aggregates += put.user_records;
            }
        },
    )
    .await
    .with_context(|| format!("putting records on {stream}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_bounds_are_strictly_after_the_last_arrival() {
        assert_eq!(next_second(ArrivalTime::from_epoch_millis(1_000)), 2);
        assert_eq!(next_second(ArrivalTime::from_epoch_millis(1_999)), 2);
    }
}
