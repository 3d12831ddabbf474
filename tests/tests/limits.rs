//! Kinesis per-shard limits at the endpoint, and injected faults.

use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::ShardIteratorType;
use rewind_local::{Fault, FaultKind};
use rewind_tests::{create_stream, unique};

use crate::stack;

async fn one_shard_stream(kinesis: &Client) -> anyhow::Result<(String, String)> {
    let name = unique("limits");
    create_stream(kinesis, &name, 1).await?;
    let shards = kinesis.list_shards().stream_name(&name).send().await?;
    let shard = shards.shards()[0].shard_id().to_owned();
    Ok((name, shard))
}

/// A client that surfaces every throttle (no retries), to count them.
async fn counting_client() -> Client {
    let config = stack().sdk_config().await;
    let config = aws_sdk_kinesis::config::Builder::from(&config)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(config)
}

async fn get_records_throttled(kinesis: &Client, iterator: &str) -> anyhow::Result<bool> {
    match kinesis.get_records().shard_iterator(iterator).send().await {
        Ok(_) => Ok(false),
        Err(error) => {
            let error = error.into_service_error();
            anyhow::ensure!(
                error.is_provisioned_throughput_exceeded_exception(),
                "{error:?}"
            );
            let message = error.to_string();
            anyhow::ensure!(message.contains("Rate exceeded for shard"), "{message}");
            Ok(true)
        }
    }
}

/// A `TRIM_HORIZON` iterator of `shard`.
async fn trim_horizon(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    shard: &str,
) -> anyhow::Result<Option<String>> {
    Ok(kinesis
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await?
        .shard_iterator)
}

#[tokio::test]
async fn get_records_above_five_per_second_is_throttled() -> anyhow::Result<()> {
    let kinesis = counting_client().await;
    let (stream, shard) = one_shard_stream(&kinesis).await?;
    let iterator = trim_horizon(&kinesis, &stream, &shard).await?.unwrap();

    // A burst: ten calls at once. Sent one after another they would spread
    // over more than a second on a loaded machine, and the bucket (five
    // calls' worth, refilled at five a second) would refill between them.
    let burst = (0..10).map(|_| get_records_throttled(&kinesis, &iterator));
    let mut throttled = 0;
    for was_throttled in futures_util::future::join_all(burst).await {
        throttled += usize::from(was_throttled?);
    }
    assert!(
        throttled >= 4,
        "a burst of 10 calls got {throttled} throttles"
    );

    // Let the shard's budget refill, then stay at 5 calls/s for two seconds.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let start = Instant::now();
    for i in 0..10 {
        let due = start + Duration::from_millis(200 * i);
        tokio::time::sleep_until(due.into()).await;
        assert!(
            !get_records_throttled(&kinesis, &iterator).await?,
            "call {i} at 5/s throttled"
        );
    }
    kinesis.delete_stream().stream_name(&stream).send().await?;
    Ok(())
}

#[tokio::test]
async fn injected_throttles_are_retried_by_the_sdk() -> anyhow::Result<()> {
    let stack = stack();
    // The default client: standard retries (3 attempts).
    let kinesis = Client::new(&stack.sdk_config().await);
    let (stream, _) = one_shard_stream(&kinesis).await?;
    let admin = stack.admin();
    admin
        .inject(
            &Fault::count("kinesis", "DescribeStreamSummary", FaultKind::Throttle, 2)
                .matching(&stream),
        )
        .await?;
    let summary = kinesis
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await?;
    assert_eq!(
        summary.stream_description_summary().unwrap().stream_name(),
        stream
    );
    let left = admin.faults().await?;
    assert!(
        left.iter()
            .all(|fault| fault.matching.as_deref() != Some(stream.as_str())),
        "both injected throttles were answered: {left:?}"
    );
    kinesis.delete_stream().stream_name(&stream).send().await?;
    Ok(())
}

#[tokio::test]
async fn put_records_above_a_shards_write_limit_fails_only_the_entries_over_it()
-> anyhow::Result<()> {
    use aws_sdk_kinesis::primitives::Blob;
    use aws_sdk_kinesis::types::PutRecordsRequestEntry;
    let kinesis = counting_client().await;
    let (stream, shard) = one_shard_stream(&kinesis).await?;
    // Three calls of 500 records at once: past 1,000 records/s on one shard
    // (the endpoint admits entries when a call arrives, so sent together
    // they share one second's budget however slow the backend is).
    let call = |call: usize| {
        let entries = (0..500)
            .map(|n| {
                PutRecordsRequestEntry::builder()
                    .partition_key(format!("key-{n}"))
                    .data(Blob::new(format!("call {call} record {n}")))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>();
        let kinesis = kinesis.clone();
        let stream = stream.clone();
        async move {
            // A partly refused call must still be answered (its shorter
            // body forwarded whole), never hang.
            let output = tokio::time::timeout(
                Duration::from_secs(30),
                kinesis
                    .put_records()
                    .stream_name(&stream)
                    .set_records(Some(entries?))
                    .send(),
            )
            .await??;
            anyhow::Ok(output)
        }
    };
    let (a, b, c) = tokio::join!(call(0), call(1), call(2));
    let mut accepted = 0usize;
    let mut throttled = 0;
    for output in [a?, b?, c?] {
        let mut failed = 0;
        for entry in output.records() {
            match entry.error_code() {
                None => accepted += 1,
                Some("ProvisionedThroughputExceededException") => failed += 1,
                Some(other) => anyhow::bail!("unexpected error code {other}"),
            }
        }
        assert_eq!(output.failed_record_count(), Some(failed));
        throttled += failed as usize;
    }
    assert!(
        throttled > 0,
        "1,500 records in well under a second on one shard"
    );
    assert_eq!(accepted + throttled, 1500);
    assert!(accepted >= 1000, "the first second's budget is written");
    // Exactly the accepted records are in the shard.
    let mut iterator = trim_horizon(&kinesis, &stream, &shard)
        .await?
        .unwrap_or_default();
    let mut read = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let page = kinesis
            .get_records()
            .shard_iterator(&iterator)
            .send()
            .await?;
        read += page.records().len();
        if page.records().is_empty() || (page.millis_behind_latest() == Some(0) && read >= accepted)
        {
            break;
        }
        iterator = page.next_shard_iterator().unwrap_or_default().to_owned();
    }
    assert_eq!(read, accepted);
    Ok(())
}
