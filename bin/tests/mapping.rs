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

/// `--filter-criteria`: refused before anything connects when it is not
/// FilterCriteria or names a field Kinesis filtering doesn't take; else
/// the records no filter matches are read and counted, never sent, and
/// batches hold `BatchSize` matching records
/// (https://docs.aws.amazon.com/lambda/latest/dg/invocation-eventfiltering.html:
/// "If a record from your event source satisfies one or more of your
/// filters, Lambda includes the record in the next event it sends to your
/// function").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_mapping_sends_only_matching_records_in_full_batches() {
    let stack = stack();
    let endpoint = stack.endpoint.clone();
    let mapping = |stream: &str, criteria: &str| {
        rewind(
            &endpoint,
            &[
                "local",
                "mapping",
                "--stream",
                stream,
                "--function",
                "target",
                "--batch-size",
                "5",
                "--batching-window",
                "2",
                "--filter-criteria",
                criteria,
                "--idle-exit",
                "3",
                "--json",
            ],
        )
    };
    for (criteria, named) in [
        ("{\"Filters\": 3}", "--filter-criteria"),
        (
            r#"{"Filters": [{"Pattern": "{\"partitionKey\": [\"k1\"]}"}]}"#,
            "FilterCriteria.Filters[0].Pattern",
        ),
    ] {
        let out = mapping("s", criteria);
        assert_eq!(out.status.code(), Some(2), "{criteria}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(named), "{stderr}");
    }
    // A setting out of range is named as the mapping's, with what it takes.
    let args = ["local", "mapping", "--stream", "s", "--function", "target"];
    let out = rewind(&endpoint, &[&args[..], &["--batch-size", "0"]].concat());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid mapping setting BatchSize: 0; accepted values: 1 to 10000"),
        "{stderr}"
    );

    let kinesis = aws_sdk_kinesis::Client::new(&stack.sdk_config().await);
    let stream = unique("cli-filtered");
    create_stream(&kinesis, &stream, 1)
        .await
        .expect("creating the stream");
    for i in 0..40 {
        kinesis
            .put_record()
            .stream_name(&stream)
            .partition_key(format!("k{}", i % 4))
            .data(Blob::new(format!("{{\"i\":{i},\"keep\":{}}}", i % 2 == 0)))
            .send()
            .await
            .unwrap();
    }
    let out = mapping(
        &stream,
        r#"{"Filters": [{"Pattern": "{\"data\": {\"keep\": [true]}}"}]}"#,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let shard = &report["shards"][0];
    assert_eq!(shard["records"], 40, "{report}");
    assert_eq!(shard["delivered"], 20, "{report}");
    assert_eq!(shard["filtered"], 20, "{report}");
    let batches = accepted_batches(stack, &stream);
    assert_eq!(
        batches.iter().map(Vec::len).collect::<Vec<_>>(),
        [5, 5, 5, 5],
        "{batches:?}"
    );
    for record in batches.iter().flatten() {
        let data = rewind_engine::model::record::decode_base64(record["data"].as_str().unwrap());
        let data: Value = serde_json::from_slice(&data.unwrap()).unwrap();
        assert_eq!(data["keep"], true, "{data}");
    }
}
