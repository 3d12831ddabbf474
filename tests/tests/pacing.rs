//! The shard reader's pacing against the endpoint's enforced read limits
//! when the backend is slow to answer.
//!
//! Kinesis admits a GetRecords call when it arrives and charges the bytes
//! it returns against the shard's 2 MiB/s; "if a call returns 10 MiB of
//! data, subsequent calls made within the next 5 seconds throw
//! ProvisionedThroughputExceededException"
//! (<https://docs.aws.amazon.com/kinesis/latest/APIReference/API_GetRecords.html>).
//! The endpoint charges when the backend's answer is complete, as a shard
//! does (`local/src/proxy/limits.rs`).

use std::time::Duration;

use rewind_engine::model::window::StartPosition;
use rewind_engine::sources::kinesis::{
    KinesisSource, ReadOptions, RecordsPage, ShardPoller, ShardSource, SourceError,
};
use rewind_tests::{create_stream, put_all, unique};

use crate::stack;

/// The real source, each GetRecords call held back `delay` before it is
/// sent: from the reader's side a call that takes that much longer to
/// answer, with the bytes charged at its end.
struct SlowSource {
    inner: KinesisSource,
    delay: Duration,
}

impl ShardSource for SlowSource {
    async fn shard_iterator(
        &self,
        shard_id: &str,
        start: &StartPosition,
    ) -> Result<String, SourceError> {
        self.inner.shard_iterator(shard_id, start).await
    }

    async fn records(
        &self,
        shard_id: &str,
        iterator: &str,
        limit: i32,
    ) -> Result<RecordsPage, SourceError> {
        tokio::time::sleep(self.delay).await;
        self.inner.records(shard_id, iterator, limit).await
    }
}

/// 3,000 records of 1 KiB (3 MiB: more than the shard's one-second budget)
/// come back in one `Limit` 10,000 page from a call that takes 2 s. A pacer
/// counting the page's 1.5 s of budget from the call's start would call
/// again as soon as it was answered, when the shard is still 1 MiB
/// overdrawn; paced from the answer, no call is throttled.
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
    let records: Vec<(String, Vec<u8>)> = (0..3_000)
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
    let source = SlowSource {
        inner: KinesisSource::new(kinesis.clone(), description.stream_arn()),
        delay: Duration::from_secs(2),
    };
    let shard = kinesis.list_shards().stream_name(&stream).send().await?;
    let shard_id = shard.shards()[0].shard_id().to_owned();
    let mut poller = ShardPoller::new(
        &source,
        shard_id,
        StartPosition::TrimHorizon,
        ReadOptions::default(),
    );

    let mut read = 0;
    let mut calls = 0;
    // The whole shard, then one page at the tip: the call right after the
    // 3 MiB page is the one a start-counted pacer sends too early.
    while read < records.len() || calls < 2 {
        let page = poller.next_page(10_000).await?;
        read += page.records.len();
        calls += 1;
        assert!(calls <= 4, "3,000 records in {calls} pages");
    }
    assert_eq!(read, records.len());
    assert_eq!(poller.throttles(), 0, "throttled GetRecords calls");
    kinesis.delete_stream().stream_name(&stream).send().await?;
    Ok(())
}
