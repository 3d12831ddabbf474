//! How fast a Kinesis backend answers GetRecords with nothing else in the
//! way: the ceiling a scrape's aggregate read rate is read against when the
//! emulator, not the scraper, bounds it. The calls are the engine's own
//! (`KinesisSource`, as the scraper makes them), without its pacing.

use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use rewind_engine::model::window::StartPosition;
use rewind_engine::sources::kinesis::{KinesisSource, ShardSource, SourceError};

/// GetRecords' largest `Limit`.
const LIMIT: i32 = 10_000;

/// Reads every shard of `shard_ids` from its start to its end (a read that
/// returns nothing), all at once or one after another; returns the bytes
/// read (data and partition keys, as Kinesis counts them) and the time.
pub async fn read_stream(
    source: &KinesisSource,
    shard_ids: &[String],
    parallel: bool,
) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let bytes = if parallel {
        try_join_all(shard_ids.iter().map(|s| read_shard(source, s)))
            .await?
            .into_iter()
            .sum()
    } else {
        let mut bytes = 0;
        for shard in shard_ids {
            bytes += read_shard(source, shard).await?;
        }
        bytes
    };
    Ok((bytes, started.elapsed()))
}

async fn read_shard(source: &KinesisSource, shard: &str) -> anyhow::Result<u64> {
    let mut iterator = source
        .shard_iterator(shard, &StartPosition::TrimHorizon)
        .await?;
    let mut bytes = 0u64;
    loop {
        let page = match source.records(shard, &iterator, LIMIT).await {
            Ok(page) => page,
            // Through the endpoint a read past the shard's limit is refused;
            // wait as a reader would, for the shard's budget to refill.
            Err(SourceError::Throttled { .. }) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        if page.records.is_empty() {
            return Ok(bytes);
        }
        bytes += page.bytes as u64;
        match page.next_iterator {
            Some(next) => iterator = next,
            None => return Ok(bytes),
        }
    }
}
