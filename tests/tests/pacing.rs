//! The shard reader's pacing against the endpoint's enforced read limits
//! when the backend is slow to answer.
//!
//! Kinesis admits a GetRecords call when it arrives and charges the bytes
//! it returns against the shard's 2 MiB/s; "if a call returns 10 MiB of
//! data, subsequent calls made within the next 5 seconds throw
//! ProvisionedThroughputExceededException"
//! (<https://docs.aws.amazon.com/kinesis/latest/APIReference/API_GetRecords.html>).
//! The endpoint charges when the backend's answer is complete, as a shard
//! does (`local/src/proxy/limits.rs`); an injected delay makes the backend
//! slow, after the endpoint admitted the call.

use std::time::{Duration, Instant};

use rewind_engine::model::window::StartPosition;
use rewind_engine::sources::kinesis::{KinesisSource, ReadOptions, ShardPoller};
use rewind_local::{Fault, FaultKind};
use rewind_tests::{create_stream, put_all, unique};

use crate::stack;

/// 6,000 records of 1 KiB (5.9 MiB: well over the shard's one-second
/// budget) come back in one `Limit` 10,000 page, from a backend that takes
/// 4 s to answer, longer than the page's 3 s of budget. A pacer counting
/// that budget from the call's start would call again as soon as it was
/// answered, when the shard is still about 4 MiB overdrawn; paced from the
/// answer, no call is throttled.
#[tokio::test]
async fn a_slow_backend_with_limit_10000_is_not_throttled() -> anyhow::Result<()> {
    let config = stack().sdk_config().await;
    // No SDK retries: every throttle reaches the reader, which counts it.
    let kinesis = aws_sdk_kinesis::Client::from_conf(
        aws_sdk_kinesis::config::Builder::from(&config)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build(),
    );
    let stream = unique("pacing");
    create_stream(&kinesis, &stream, 1).await?;
    let records: Vec<(String, Vec<u8>)> = (0..6_000)
        .map(|i| (format!("key-{}", i % 100), vec![b'x'; 1024]))
        .collect();
    // Putting goes through the SDK's retries: the endpoint enforces the
    // write limit too.
    let put = put_all(
        &aws_sdk_kinesis::Client::new(&config),
        &stream,
        records.clone(),
    )
    .await?;
    assert_eq!(put.len(), records.len());
    let summary = kinesis
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await?;
    let description = summary
        .stream_description_summary()
        .expect("a stream summary");
    let source = KinesisSource::new(kinesis.clone(), description.stream_arn());
    let shard = kinesis.list_shards().stream_name(&stream).send().await?;
    let shard_id = shard.shards()[0].shard_id().to_owned();
    let mut poller = ShardPoller::new(
        &source,
        shard_id,
        StartPosition::TrimHorizon,
        ReadOptions::default(),
    );

    stack()
        .admin()
        .inject(
            &Fault::count("kinesis", "GetRecords", FaultKind::Delay { ms: 4_000 }, 1)
                .matching(&stream),
        )
        .await?;
    let started = Instant::now();
    let first = poller.next_page(10_000).await?;
    let took = started.elapsed();
    let bytes = first.bytes;
    let mut read = first.records.len();
    // The premise: the page is over the shard's one-second budget and took
    // longer than its share of the budget to come back.
    assert_eq!(read, records.len(), "the whole shard in one page");
    let budget = Duration::from_secs_f64(bytes as f64 / (2.0 * 1024.0 * 1024.0));
    assert!(
        bytes > 2 * 1024 * 1024 && took > budget,
        "a {bytes}-byte page answered in {took:?}, within its {budget:?} of budget: \
         the backend was not slow"
    );
    // The call right after the big page is the one a start-counted pacer
    // sends too early; one more at the tip.
    for _ in 0..2 {
        read += poller.next_page(10_000).await?.records.len();
    }
    assert_eq!(read, records.len());
    assert_eq!(poller.throttles(), 0, "throttled GetRecords calls");
    kinesis.delete_stream().stream_name(&stream).send().await?;
    Ok(())
}
