//! How fast a Kinesis backend answers GetRecords with nothing else in the
//! way: the ceiling a scrape's aggregate read rate is read against when the
//! emulator, not the scraper, bounds it.

use std::time::{Duration, Instant};

use aws_sdk_kinesis::types::ShardIteratorType;
use futures_util::future::try_join_all;

/// GetRecords' largest `Limit`.
const LIMIT: i32 = 10_000;

/// Reads every shard of `shard_ids` from its start to its end (a read that
/// returns nothing), all at once or one after another; returns the bytes
/// read (data and partition keys, as Kinesis counts them) and the time.
pub async fn read_stream(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    shard_ids: &[String],
    parallel: bool,
) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let bytes = if parallel {
        try_join_all(shard_ids.iter().map(|s| read_shard(kinesis, stream, s)))
            .await?
            .into_iter()
            .sum()
    } else {
        let mut bytes = 0;
        for shard in shard_ids {
            bytes += read_shard(kinesis, stream, shard).await?;
        }
        bytes
    };
    Ok((bytes, started.elapsed()))
}

async fn read_shard(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    shard: &str,
) -> anyhow::Result<u64> {
    let mut iterator = kinesis
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await?
        .shard_iterator
        .ok_or_else(|| anyhow::anyhow!("{shard}: no iterator"))?;
    let mut bytes = 0u64;
    loop {
        let answer = kinesis
            .get_records()
            .shard_iterator(&iterator)
            .limit(LIMIT)
            .send()
            .await;
        let output = match answer {
            Ok(output) => output,
            // Through the endpoint a read past the shard's limit is refused;
            // wait as a reader would, for the shard's budget to refill.
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_provisioned_throughput_exceeded_exception()) =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        if output.records().is_empty() {
            return Ok(bytes);
        }
        bytes += output
            .records()
            .iter()
            .map(|r| (r.data().as_ref().len() + r.partition_key().map_or(0, str::len)) as u64)
            .sum::<u64>();
        match output.next_shard_iterator {
            Some(next) => iterator = next,
            None => return Ok(bytes),
        }
    }
}
