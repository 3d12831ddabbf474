//! What the benches share: realistic records, and the local stack serving
//! Kinesis for volume runs.

#![allow(dead_code)] // Each bench binary uses its own part of it.

use aws_config::{BehaviorVersion, Region};
use aws_sdk_kinesis::config::Credentials;
use rewind_engine::{ArrivalTime, Record, SequenceNumber};
use rewind_local::{KinesisBackend, Layout, LocalStack, Options};

/// JSON-ish telemetry of `bytes` bytes from one of `devices` devices, with
/// some repetition: compresses as real producer payloads do, unlike zeros
/// (overstate gzip) or random bytes (understate it).
pub fn telemetry(i: usize, bytes: usize, devices: usize) -> Vec<u8> {
    let mut data = format!(
        "{{\"id\":{i},\"device\":\"dev-{:05}\",\"kind\":\"reading\",\"values\":[",
        i % devices
    )
    .into_bytes();
    let mut x = i as u64 * 2_654_435_761 + 1;
    while data.len() < bytes - 2 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(format!("{},", x % 100_000).as_bytes());
    }
    data.truncate(bytes - 2);
    data.extend_from_slice(b"]}");
    data
}

/// `n` telemetry records of one shard, partition key the device, arriving
/// `step_ms` apart.
pub fn telemetry_records(n: usize, bytes: usize, devices: usize, step_ms: i64) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            stream: "bench".into(),
            shard_id: "shardId-000000000000".into(),
            sequence_number: SequenceNumber::parse(&format!(
                "49590338271490256608559692538361571095921575989{i:09}"
            ))
            .expect("valid sequence number"),
            sub_sequence_number: None,
            partition_key: format!("device-{}", i % devices),
            explicit_hash_key: None,
            encryption_type: None,
            approximate_arrival_timestamp: ArrivalTime::from_epoch_millis(
                1_700_000_000_000 + i as i64 * step_ms,
            ),
            data: telemetry(i, bytes, devices),
        })
        .collect()
}

/// The local stack with Kinesis served by moto (kinesis-mock slows down
/// past a few thousand records a stream) and the endpoint enforcing the
/// shard limits, and a Kinesis client of it. The caller stops the stack.
pub async fn moto_stack() -> (LocalStack, aws_sdk_kinesis::Client) {
    let layout = Layout::current().expect("run inside the workspace");
    let stack = LocalStack::start(
        &layout,
        Options {
            kinesis: KinesisBackend::Moto,
            shard_limits: true,
            ..Options::default()
        },
    )
    .await
    .expect("local stack");
    let config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(stack.endpoint_url())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::for_tests())
        .load()
        .await;
    let kinesis = aws_sdk_kinesis::Client::new(&config);
    (stack, kinesis)
}
