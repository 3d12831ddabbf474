//! `rewind cat | convert`: record-line chunks read, rewritten and refused
//! as a user runs them, no stack needed.

use rewind_engine::model::chunk::{self, Compression};
use rewind_engine::model::kpl::{self, UserRecord};
use rewind_engine::{ArrivalTime, Record, SequenceNumber};

use crate::common::{Scratch, bare as rewind};

fn record(i: u32, data: Vec<u8>) -> Record {
    Record {
        stream: "orders".into(),
        shard_id: "shardId-000000000003".into(),
        sequence_number: SequenceNumber::parse(&format!(
            "4959033827149025660855969253836157109592157598913658{i:04}"
        ))
        .unwrap(),
        sub_sequence_number: None,
        partition_key: format!("k{i}"),
        explicit_hash_key: None,
        encryption_type: None,
        approximate_arrival_timestamp: ArrivalTime::from_epoch_millis(1_545_084_650_987 + i as i64),
        data,
        aggregate: None,
    }
}

fn records() -> Vec<Record> {
    let aggregate = kpl::aggregate((0..3).map(|i| UserRecord {
        partition_key: format!("user-{i}"),
        explicit_hash_key: None,
        data: format!("inner {i}").into_bytes(),
    }))
    .unwrap()
    .remove(0);
    vec![
        record(1, b"first".to_vec()),
        record(2, aggregate.data),
        record(3, vec![0, 159, 146, 150]),
    ]
}

#[test]
fn cat_prints_record_lines_and_payloads() {
    let scratch = Scratch::new("cat");
    let file = scratch.path("c.jsonl.zst");
    let input = records();
    let (bytes, _) = chunk::encode(&file, &input, Compression::Zstd).unwrap();
    std::fs::write(&file, bytes).unwrap();

    let out = rewind(&["cat", &file]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = chunk::decode("stdout", &out.stdout).unwrap();
    assert_eq!(back, input);

    let out = rewind(&["cat", "--deaggregate", "--output", "data", &file]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "first\ninner 0\ninner 1\ninner 2\n\u{0}\u{FFFD}\u{FFFD}\u{FFFD}\n"
    );
}

#[test]
fn convert_rewrites_with_another_compression() {
    let scratch = Scratch::new("convert");
    let (src, dst) = (scratch.path("in.jsonl"), scratch.path("out.jsonl.gz"));
    let (bytes, _) = chunk::encode(&src, &records(), Compression::None).unwrap();
    std::fs::write(&src, bytes).unwrap();

    let out = rewind(&[
        "convert",
        "--deaggregate",
        "--compression",
        "gzip",
        "-o",
        &dst,
        &src,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("5 records"));
    let written = std::fs::read(&dst).unwrap();
    assert_eq!(&written[..2], &[0x1f, 0x8b], "gzip");
    let back = chunk::decode(&dst, &written).unwrap();
    let subs: Vec<Option<u64>> = back.iter().map(|r| r.sub_sequence_number).collect();
    assert_eq!(subs, [None, Some(0), Some(1), Some(2), None]);
}

#[test]
fn corrupt_chunk_fails_naming_file_and_line() {
    let scratch = Scratch::new("corrupt");
    let file = scratch.path("bad.jsonl");
    let mut bytes = Vec::new();
    records()[0].write_line(&mut bytes);
    bytes.extend_from_slice(b"{\"not\":\"a record\"}\n");
    std::fs::write(&file, bytes).unwrap();

    let out = rewind(&["cat", &file]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{file}: line 2 is not a record line")),
        "{stderr}"
    );
    // The good line before the bad one was printed: output is streamed.
    assert_eq!(chunk::decode("stdout", &out.stdout).unwrap().len(), 1);
}

#[test]
fn bad_flags_are_usage_errors() {
    let out = rewind(&["convert", "-o", "/dev/null", "--compression", "lz4", "x"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("accepted values: gzip, zstd, none"),
        "{stderr}"
    );

    let out = rewind(&["cat", "/nonexistent/file.jsonl.gz"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("opening /nonexistent/file.jsonl.gz"));
}
