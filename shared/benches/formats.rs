//! Throughput of the formats on 1 KiB records: chunk encode and decode
//! (gzip, zstd) and KPL deaggregation. Run with
//! `cargo bench -p rewind-engine --bench formats`; BENCHMARKS.md has the
//! method and the numbers.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rewind_engine::chunk::{self, Compression};
use rewind_engine::kpl::{self, UserRecord};
use rewind_engine::{ArrivalTime, Record, SequenceNumber};

const RECORDS: usize = 2_000;
const RECORD_BYTES: usize = 1024;

/// JSON-ish payloads with some repetition, like real telemetry: incompressible
/// random bytes would understate gzip's cost per MiB and overstate its size.
fn payload(i: usize) -> Vec<u8> {
    let mut data = format!(
        "{{\"id\":{i},\"device\":\"dev-{:05}\",\"kind\":\"reading\",\"values\":[",
        i % 997
    )
    .into_bytes();
    let mut x = i as u64 * 2_654_435_761 + 1;
    while data.len() < RECORD_BYTES - 2 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(format!("{},", x % 100_000).as_bytes());
    }
    data.truncate(RECORD_BYTES - 2);
    data.extend_from_slice(b"]}");
    data
}

fn records() -> Vec<Record> {
    (0..RECORDS)
        .map(|i| Record {
            stream: "bench".into(),
            shard_id: "shardId-000000000000".into(),
            sequence_number: SequenceNumber::parse(&format!(
                "49590338271490256608559692538361571095921575989{i:09}"
            ))
            .expect("valid sequence number"),
            sub_sequence_number: None,
            partition_key: format!("device-{}", i % 997),
            explicit_hash_key: None,
            encryption_type: None,
            approximate_arrival_timestamp: ArrivalTime::from_epoch_millis(
                1_700_000_000_000 + i as i64 * 3,
            ),
            data: payload(i),
        })
        .collect()
}

fn chunks(c: &mut Criterion) {
    let input = records();
    let bytes: u64 = input.iter().map(|r| r.data.len() as u64).sum();
    let mut group = c.benchmark_group("chunk");
    for compression in [Compression::Gzip, Compression::Zstd] {
        group.throughput(Throughput::ElementsAndBytes {
            elements: RECORDS as u64,
            bytes,
        });
        group.bench_with_input(
            BenchmarkId::new("encode", compression),
            &compression,
            |b, &compression| {
                b.iter(|| chunk::encode("bench", black_box(&input), compression).expect("encode"))
            },
        );
        let (encoded, _) = chunk::encode("bench", &input, compression).expect("encode");
        group.bench_with_input(
            BenchmarkId::new("decode", compression),
            &encoded,
            |b, encoded| {
                b.iter(|| {
                    chunk::ChunkReader::new("bench", black_box(encoded.as_slice()))
                        .expect("open")
                        .map(|r| r.expect("record").data.len())
                        .sum::<usize>()
                })
            },
        );
    }
    group.finish();
}

fn deaggregation(c: &mut Criterion) {
    let users: Vec<UserRecord> = records()
        .into_iter()
        .map(|r| UserRecord {
            partition_key: r.partition_key,
            explicit_hash_key: None,
            data: r.data,
        })
        .collect();
    let bytes: u64 = users.iter().map(|u| u.data.len() as u64).sum();
    let aggregates = kpl::aggregate(users).expect("aggregate");
    let mut group = c.benchmark_group("kpl");
    group.throughput(Throughput::ElementsAndBytes {
        elements: RECORDS as u64,
        bytes,
    });
    group.bench_function("deaggregate", |b| {
        b.iter(|| {
            aggregates
                .iter()
                .map(|a| {
                    kpl::deaggregate(black_box(&a.data))
                        .expect("valid")
                        .expect("aggregated")
                        .len()
                })
                .sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(benches, chunks, deaggregation);
criterion_main!(benches);
