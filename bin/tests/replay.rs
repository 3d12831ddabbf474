//! `rewind replay` and `rewind reinject` against the local stack: record
//! files replayed into the `target` fixture function (which fails any batch
//! holding a record marked `POISON`) deliver every unmarked record once and
//! put exactly the marked ones in the DLQ folder (exit code 4); the same
//! files re-injected onto a stream are all there, in the envelope; bad
//! requests and flags fail with exit code 2 before anything is sent; the
//! shards of a replay run at once, up to `--max-concurrency`.

use std::path::Path;

use aws_sdk_kinesis::types::ShardIteratorType;
use rewind_engine::Record;
use rewind_engine::model::chunk::{ChunkWriter, Compression};
use rewind_tests::{create_stream, record, unique};
use serde_json::{Value, json};

use crate::common::{Scratch, accepted_batches, rewind, stack};

pub(crate) fn records(stream: &str, shard: &str, n: usize, marked: &[usize]) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let data = if marked.contains(&i) {
                format!("POISON {shard} {i}")
            } else {
                format!("{{\"shard\":\"{shard}\",\"i\":{i}}}")
            };
            record(
                stream,
                shard,
                &format!("49656626372427914385237262063396478153418658218305{i:06}"),
                format!("key-{}", i % 3),
                1_732_233_600_000 + i as i64,
                data.into_bytes(),
            )
        })
        .collect()
}

pub(crate) fn write(path: &Path, records: &[Record]) {
    let mut writer =
        ChunkWriter::new(path.display().to_string(), Vec::new(), Compression::Gzip).unwrap();
    for r in records {
        writer.write(r).unwrap();
    }
    std::fs::write(path, writer.finish().unwrap().0).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_replayed_to_a_function_and_reinjected_onto_a_stream() {
    let stack = stack();
    let endpoint = stack.endpoint.clone();
    let stream = unique("cli-replay");
    let scratch = Scratch::new("replay");
    let dir = &scratch.0;
    let a = records(&stream, "shardId-000000000000", 20, &[4, 13]);
    let b = records(&stream, "shardId-000000000001", 10, &[]);
    let (file_a, file_b) = (dir.join("a.jsonl.gz"), dir.join("b.jsonl.gz"));
    write(&file_a, &a);
    write(&file_b, &b);
    let files = [file_a.to_str().unwrap(), file_b.to_str().unwrap()];

    // Replay into the target function, DLQ and progress in a folder.
    let request = dir.join("request.json");
    std::fs::write(
        &request,
        json!({
            "target": {"type": "FUNCTION", "functionName": "target"},
            "options": {"BatchSize": 5, "BisectBatchOnFunctionError": true, "MaximumRetryAttempts": 0},
            "dlq": {"type": "S3", "bucket": "dlq-bucket", "prefix": "dlq"},
            "runId": "cli-run"
        })
        .to_string(),
    )
    .unwrap();
    let out_dir = dir.join("out");
    let stream_arn = format!("arn:aws:kinesis:us-east-1:123456789012:stream/{stream}");
    // `rewind replay` of the files with the request, `extra` before them.
    let replay_files = |extra: &[&str]| {
        let request = request.to_str().unwrap();
        let head = ["replay", "--request", request, "--stream-arn", &stream_arn];
        rewind(
            &endpoint,
            &[&head[..], extra, &["--files"], &files].concat(),
        )
    };
    let out = replay_files(&["--dir", out_dir.to_str().unwrap(), "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("2 records in 2 batches went to the DLQ"),
        "{stderr}"
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["totals"]["records"], json!(30), "{summary}");
    assert_eq!(summary["totals"]["delivered"], json!(28), "{summary}");
    assert_eq!(summary["totals"]["failedRecords"], json!(2), "{summary}");
    let dlq = out_dir.join("dlq/aws/lambda/cli-run/shardId-000000000000");
    let mut dlq_files = Vec::new();
    for day in walk(&dlq) {
        dlq_files.push(day);
    }
    assert_eq!(dlq_files.len(), 2, "{dlq_files:?}");
    let delivered: usize = accepted_batches(stack, &stream).iter().map(Vec::len).sum();
    assert_eq!(delivered, 28);

    // Re-inject the same files onto a stream.
    let kinesis = aws_sdk_kinesis::Client::new(&stack.sdk_config().await);
    let target = unique("cli-reinject");
    create_stream(&kinesis, &target, 1)
        .await
        .expect("creating the stream");
    let mut args = vec![
        "reinject",
        "--stream",
        &target,
        "--include-metadata",
        "--json",
        "--files",
    ];
    // The first file twice, as overlapping archive objects would be: each
    // record is still put once.
    args.extend(files);
    args.push(files[0]);
    let out = rewind(&endpoint, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shards = kinesis
        .list_shards()
        .stream_name(&target)
        .send()
        .await
        .unwrap();
    let iterator = kinesis
        .get_shard_iterator()
        .stream_name(&target)
        .shard_id(shards.shards()[0].shard_id())
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap();
    let page = kinesis
        .get_records()
        .shard_iterator(iterator.shard_iterator().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(page.records().len(), 30);
    for record in page.records() {
        assert_eq!(record.data().as_ref().first(), Some(&b'|'));
    }

    // Bad input: named, exit code 2, nothing sent.
    std::fs::write(
        &request,
        json!({
            "target": {"type": "FUNCTION", "functionName": "target"},
            "options": {"BatchSize": 0},
            "dlq": {"type": "S3", "bucket": "dlq-bucket"}
        })
        .to_string(),
    )
    .unwrap();
    let out = replay_files(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid replay request: options.BatchSize"),
        "{stderr}"
    );
    let out = rewind(
        &endpoint,
        &["replay", "--request", "x.json", "--files", "a"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--stream-arn"));
    let out = rewind(&endpoint, &["reinject", "--stream", "s"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("name what to put"));
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// The batches `target` accepted from `stream`, each as (shard, started µs,
/// ended µs) from the function's own clock.
fn spans(stack: &rewind_tests::Stack, stream: &str) -> Vec<(String, u64, u64)> {
    rewind_tests::target_batches(&stack.layout, stream)
        .unwrap()
        .into_iter()
        .map(|batch| (batch.records[0].0.clone(), batch.started_us, batch.ended_us))
        .collect()
}

/// Whether a batch of one shard ran while a batch of another did.
fn shards_overlapped(spans: &[(String, u64, u64)]) -> bool {
    spans.iter().any(|(a, start_a, end_a)| {
        spans
            .iter()
            .any(|(b, start_b, end_b)| a != b && start_a < end_b && start_b < end_a)
    })
}

/// Two shards' files, every batch taking 300 ms in the function: by
/// default the shards are replayed at once (their batches overlap); with
/// `--max-concurrency 1` one after the other (none do). Out-of-range values
/// are refused, naming the flag and the accepted range, before anything is
/// sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_are_replayed_at_once_up_to_max_concurrency() {
    let stack = stack();
    let endpoint = stack.endpoint.clone();
    let scratch = Scratch::new("replay-concurrency");
    let dir = &scratch.0;
    let request = scratch.write(
        "request.json",
        &json!({
            "target": {"type": "FUNCTION", "functionName": "target"},
            "options": {"BatchSize": 2},
            "dlq": {"type": "S3", "bucket": "dlq-bucket", "prefix": "dlq"},
        }),
    );
    let run = |stream: &str, extra: &[&str]| {
        let mut files = Vec::new();
        for shard in ["shardId-000000000000", "shardId-000000000001"] {
            let mut records = records(stream, shard, 6, &[]);
            for record in &mut records {
                record.data = format!("SLEEP 300 {shard}").into_bytes();
            }
            let path = dir.join(format!("{stream}-{shard}.jsonl.gz"));
            write(&path, &records);
            files.push(path.display().to_string());
        }
        let stream_arn = format!("arn:aws:kinesis:us-east-1:123456789012:stream/{stream}");
        let out_dir = dir.join(format!("{stream}-out"));
        let head = [
            "replay",
            "--json",
            "--request",
            &request,
            "--stream-arn",
            &stream_arn,
            "--dir",
            out_dir.to_str().unwrap(),
        ];
        let files: Vec<&str> = files.iter().map(String::as_str).collect();
        rewind(
            &endpoint,
            &[&head[..], extra, &["--files"], &files].concat(),
        )
    };

    let parallel = unique("cli-parallel");
    let out = run(&parallel, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parallel_spans = spans(stack, &parallel);
    assert_eq!(parallel_spans.len(), 6, "{parallel_spans:?}");
    assert!(shards_overlapped(&parallel_spans), "{parallel_spans:?}");

    let serial = unique("cli-serial");
    let out = run(&serial, &["--max-concurrency", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let serial_spans = spans(stack, &serial);
    assert_eq!(serial_spans.len(), 6, "{serial_spans:?}");
    assert!(!shards_overlapped(&serial_spans), "{serial_spans:?}");

    for bad in ["0", "1001", "many"] {
        let refused = unique("cli-refused");
        let out = run(&refused, &["--max-concurrency", bad]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("--max-concurrency"), "{stderr}");
        if bad != "many" {
            assert!(stderr.contains("1..=1000"), "{stderr}");
        }
        assert!(
            !stack
                .layout
                .run_dir()
                .join(format!("fixtures/target/{refused}.jsonl"))
                .exists(),
            "nothing sent"
        );
    }
}
