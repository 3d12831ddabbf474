//! `rewind local mapping` against the local stack: a stream's records
//! delivered to the `target` fixture function in mapping-shaped batches
//! until the stream is idle, the batch holding a record marked `POISON`
//! bisected down to it and discarded after its retries, everything else
//! accepted once; bad settings refused before anything connects.

use aws_sdk_kinesis::primitives::Blob;
use rewind_tests::{create_stream, unique};
use serde_json::Value;

use crate::common::{accepted_batches, rewind, stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_delivered_to_a_function_until_idle() {
    let stack = stack();
    let endpoint = stack.endpoint.clone();

    // Refused before anything connects: exit code 2 and the setting named.
    let out = rewind(
        &endpoint,
        &[
            "local",
            "mapping",
            "--stream",
            "s",
            "--function",
            "target",
            "--batch-size",
            "0",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("BatchSize"), "{stderr}");
    let out = rewind(&endpoint, &["local", "mapping", "--stream", "s"]);
    assert_eq!(out.status.code(), Some(2), "--function is required");

    let kinesis = aws_sdk_kinesis::Client::new(&stack.sdk_config().await);
    let stream = unique("cli-mapping");
    create_stream(&kinesis, &stream, 1)
        .await
        .expect("creating the stream");
    for i in 0..40 {
        let data = if i == 17 {
            "POISON 17".to_owned()
        } else {
            format!("{{\"i\":{i}}}")
        };
        kinesis
            .put_record()
            .stream_name(&stream)
            .partition_key(format!("k{}", i % 4))
            .data(Blob::new(data))
            .send()
            .await
            .unwrap();
    }

    let out = rewind(
        &endpoint,
        &[
            "local",
            "mapping",
            "--stream",
            &stream,
            "--function",
            "target",
            "--batch-size",
            "10",
            "--maximum-retry-attempts",
            "1",
            "--bisect-batch-on-function-error",
            "--idle-exit",
            "3",
            "--json",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let shard = &report["shards"][0];
    assert_eq!(shard["records"], 40, "{report}");
    assert_eq!(shard["delivered"], 39, "{report}");
    assert_eq!(shard["failedRecords"], 1, "{report}");
    assert_eq!(shard["failedBatches"], 1, "{report}");

    let mut delivered: Vec<String> = accepted_batches(stack, &stream)
        .iter()
        .flatten()
        .map(|r| r["sequenceNumber"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(delivered.len(), 39);
    delivered.dedup();
    assert_eq!(delivered.len(), 39, "each record accepted once");
}
