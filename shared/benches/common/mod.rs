//! What the benches share: realistic records, and the local stack serving
//! Kinesis for volume runs.

#![allow(dead_code)] // Each bench binary uses its own part of it.

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

/// A record of the bench's one shard, arriving `offset_ms` after the
/// bench's epoch.
pub fn record(
    sequence_number: &str,
    partition_key: String,
    offset_ms: i64,
    data: Vec<u8>,
) -> Record {
    Record {
        stream: "bench".into(),
        shard_id: "shardId-000000000000".into(),
        sequence_number: SequenceNumber::parse(sequence_number).expect("valid sequence number"),
        sub_sequence_number: None,
        partition_key,
        explicit_hash_key: None,
        encryption_type: None,
        approximate_arrival_timestamp: ArrivalTime::from_epoch_millis(
            1_700_000_000_000 + offset_ms,
        ),
        data,
        aggregate: None,
    }
}

/// `n` telemetry records of one shard, partition key the device, arriving
/// `step_ms` apart.
pub fn telemetry_records(n: usize, bytes: usize, devices: usize, step_ms: i64) -> Vec<Record> {
    (0..n)
        .map(|i| {
            record(
                &format!("49590338271490256608559692538361571095921575989{i:09}"),
                format!("device-{}", i % devices),
                i as i64 * step_ms,
                telemetry(i, bytes, devices),
            )
        })
        .collect()
}

/// Creates `stream` with `shards` shards on the stack; returns its ARN once
/// it is `ACTIVE`.
pub async fn create_stream(kinesis: &aws_sdk_kinesis::Client, stream: &str, shards: i32) -> String {
    kinesis
        .create_stream()
        .stream_name(stream)
        .shard_count(shards)
        .send()
        .await
        .expect("create stream");
    rewind_local::sdk::wait_active(kinesis, stream)
        .await
        .expect("stream active");
    kinesis
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .expect("describe")
        .stream_description_summary()
        .expect("summary")
        .stream_arn()
        .to_owned()
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
    let config = rewind_local::sdk::config(&stack.endpoint_url()).await;
    let kinesis = aws_sdk_kinesis::Client::new(&config);
    (stack, kinesis)
}
