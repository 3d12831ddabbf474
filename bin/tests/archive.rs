//! `rewind archive scan | query` against the local stack (moto's S3 and
//! DynamoDB), reading what the archiver's engine wrote.

use std::process::Output;
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use rewind_engine::model::archive::ArchiveLayout;
use rewind_engine::model::chunk;
use rewind_engine::model::record::{ArrivalTime, Record};
use rewind_engine::model::seqno::SequenceNumber;
use rewind_engine::sinks::dynamodb::{ArchiveMode, DynamoArchive, StreamSettings};
use rewind_engine::sinks::s3_archive;
use rewind_engine::store::S3Store;
use rewind_local::sdk::s3_client;
use rewind_tests::unique;

use crate::common::{rewind, stack};

// 2024-11-22T00:59:59.000Z: windows cross an hour partition.
const BEFORE_HOUR: i64 = 1_732_237_199_000;

fn record(shard: u32, i: u32, millis: i64, key: &str) -> Record {
    Record {
        stream: "orders".into(),
        shard_id: format!("shardId-{shard:012}"),
        // 55 digits, then 56: numeric order, not string order.
        sequence_number: SequenceNumber::parse(&if i < 10 {
            format!("9{}{i}", "9".repeat(53))
        } else {
            format!("1{}{i:02}", "0".repeat(53))
        })
        .unwrap(),
        sub_sequence_number: None,
        partition_key: key.into(),
        explicit_hash_key: None,
        encryption_type: None,
        approximate_arrival_timestamp: ArrivalTime::from_epoch_millis(millis),
        data: format!("payload {shard}/{i}").into_bytes(),
        aggregate: None,
    }
}

/// `rewind archive query` of `key` in the `orders` stream of `table`, with
/// `extra` arguments.
fn query(endpoint: &str, table: &str, key: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "archive",
        "query",
        "--table",
        table,
        "--stream",
        "orders",
        "--partition-key",
        key,
    ];
    args.extend_from_slice(extra);
    rewind(endpoint, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_and_query_the_archive() {
    let stack = stack();
    let endpoint = stack.endpoint.clone();
    let config = stack.sdk_config().await;
    let s3 = s3_client(&config);
    let bucket = unique("archive");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let store = S3Store::new(s3.clone(), bucket.clone());

    // Shard 0: 20 records over the hour boundary, delivered twice in part
    // (a retried batch); shard 1: 5 records.
    let shard0: Vec<Record> = (0..20)
        .map(|i| {
            record(
                0,
                i,
                BEFORE_HOUR - 10_000 + i as i64 * 1000,
                &format!("k{}", i % 3),
            )
        })
        .collect();
    let shard1: Vec<Record> = (0..5)
        .map(|i| record(1, i, BEFORE_HOUR + 2_000, "k9"))
        .collect();
    for batch in [&shard0[..12], &shard0[8..], &shard1[..]] {
        let outcome = s3_archive::archive_batch(&store, &ArchiveLayout::default(), batch).await;
        assert!(outcome.failed.is_empty());
    }
    let from = (BEFORE_HOUR - 5_000) as f64 / 1000.0;
    let to = (BEFORE_HOUR + 5_000) as f64 / 1000.0;
    let out = rewind(
        &endpoint,
        &[
            "archive",
            "scan",
            "--bucket",
            &bucket,
            "--stream",
            "orders",
            "--from",
            &from.to_string(),
            "--to",
            &to.to_string(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scanned = chunk::decode("stdout", &out.stdout).unwrap();
    let mut expected: Vec<Record> = shard0[5..15].to_vec();
    expected.extend(shard1.clone());
    assert_eq!(
        scanned, expected,
        "each record once, in order per shard, inside the window"
    );

    // DynamoDB: ALL and LATEST for the same records.
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let table = unique("archive");
    dynamodb
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("sk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("sk")
                .key_type(KeyType::Range)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let archive = DynamoArchive::new(dynamodb, table.clone(), store, "archive");
    let settings = StreamSettings {
        modes: vec![ArchiveMode::All, ArchiveMode::Latest],
        ttl: Some(Duration::from_secs(3600)),
    };
    // Delivered out of order: the LATEST item must still be the newest.
    let mut shuffled = shard0.clone();
    shuffled.reverse();
    assert!(
        archive
            .write(&shuffled, &settings, 1_732_237_000)
            .await
            .is_empty()
    );

    let k1: Vec<&Record> = shard0.iter().filter(|r| r.partition_key == "k1").collect();
    let out = query(&endpoint, &table, "k1", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let queried = chunk::decode("stdout", &out.stdout).unwrap();
    assert_eq!(
        queried.iter().collect::<Vec<_>>(),
        k1,
        "numeric sequence order across 55 and 56 digits"
    );

    let (low, high) = (
        k1[1].sequence_number.to_string(),
        k1[4].sequence_number.to_string(),
    );
    let out = query(
        &endpoint,
        &table,
        "k1",
        &[
            "--from-sequence",
            &low,
            "--to-sequence",
            &high,
            "--output",
            "data",
        ],
    );
    let expected: String = k1[1..=4]
        .iter()
        .map(|r| format!("{}\n", String::from_utf8_lossy(&r.data)))
        .collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);

    let out = query(&endpoint, &table, "k1", &["--latest"]);
    let latest = chunk::decode("stdout", &out.stdout).unwrap();
    assert_eq!(latest, vec![(*k1.last().unwrap()).clone()]);

    let out = rewind(
        &endpoint,
        &[
            "archive", "scan", "--bucket", &bucket, "--stream", "orders", "--from", "10", "--to",
            "5",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "bad input");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--from must be before --to"));
    let out = query(&endpoint, &table, "k", &["--from-sequence", "01"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("leading zero"));
}
