//! Throughput of the formats on 1 KiB records: chunk encode and decode
//! (gzip, zstd) and KPL deaggregation. Run with
//! `cargo bench -p rewind-engine --bench formats`; BENCHMARKS.md has the
//! method and the numbers.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rewind_engine::Record;
use rewind_engine::model::chunk::{self, Compression};
use rewind_engine::model::kpl::{self, UserRecord};

const RECORDS: usize = 2_000;
const RECORD_BYTES: usize = 1024;

mod common;

fn records() -> Vec<Record> {
    common::telemetry_records(RECORDS, RECORD_BYTES, 997, 3)
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
