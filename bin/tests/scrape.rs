//! `rewind scrape` against the local stack (kinesis-mock, shard limits
//! enforced): every record put is in the output folder's chunks, once, in
//! order, and the manifest says so (for a resharded stream too, its
//! lineage groups scraped at once); a bad request fails before anything
//! connects.

use std::path::Path;

use aws_sdk_kinesis::primitives::Blob;
use rewind_engine::model::chunk;
use rewind_engine::model::manifest::{Manifest, ShardManifest};
use rewind_tests::{create_stream, unique};

use crate::common::{Scratch, bare, rewind, stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_a_stream_into_a_local_folder() {
    let stack = stack();
    let endpoint = &stack.endpoint;
    let kinesis = aws_sdk_kinesis::Client::new(&stack.sdk_config().await);
    let stream = unique("cli-scrape");
    create_stream(&kinesis, &stream, 1)
        .await
        .expect("creating the stream");
    let mut put = Vec::new();
    for i in 0..30u8 {
        let data = vec![i, 0, 255, b'x'];
        let out = kinesis
            .put_record()
            .stream_name(&stream)
            .partition_key(format!("k{}", i % 4))
            .data(Blob::new(data.clone()))
            .send()
            .await
            .unwrap();
        put.push((out.sequence_number().to_owned(), data));
    }

    let scratch = Scratch::new("scrape");
    let dir = &scratch.0;
    let request = dir.join("request.json");
    std::fs::write(
        &request,
        serde_json::json!({
            "stream": stream,
            "start": {"type": "TRIM_HORIZON"},
            "stop": {"type": "LATEST"},
            "pollBatchSize": 7,
            "output": {"bucket": "unused-with-out", "prefix": "scrapes"},
        })
        .to_string(),
    )
    .unwrap();
    let out_dir = dir.join("out");
    let manifest = scrape_to(
        endpoint,
        &["--chunk-records", "10"],
        request.to_str().unwrap(),
        &out_dir,
    );
    assert_eq!(manifest.records, 30);
    // The shard's chunks are in its own manifest, which the entry names.
    let own = manifest.shards[0].manifest.as_deref().unwrap();
    let own: ShardManifest =
        serde_json::from_slice(&std::fs::read(out_dir.join(own)).unwrap()).unwrap();
    let shard = &own.shard;
    assert!(
        shard.chunks.len() >= 3,
        "chunks of at most 10 records (one page over): {}",
        shard.chunks.len()
    );
    let mut read = Vec::new();
    for c in &shard.chunks {
        read.extend(chunk::decode(&c.key, &std::fs::read(out_dir.join(&c.key)).unwrap()).unwrap());
    }
    let read: Vec<(String, Vec<u8>)> = read
        .into_iter()
        .map(|r| (r.sequence_number.to_string(), r.data))
        .collect();
    assert_eq!(read, put, "every record once, in order");
}

#[test]
fn scrape_rejects_a_bad_request_before_connecting() {
    let scratch = Scratch::new("scrape-bad");
    let file = scratch.path("request.json");
    std::fs::write(
        &file,
        r#"{"stream": "orders", "start": {"type": "TRIM_HORIZON"}, "stop": {"type": "LATEST"},
            "pollBatchSize": 20000, "output": {"bucket": "b"}}"#,
    )
    .unwrap();
    // An endpoint nothing listens on: the request must fail before any call.
    let out = bare(&[
        "scrape",
        "--request",
        &file,
        "--endpoint-url",
        "http://127.0.0.1:9",
        "--region",
        "us-east-1",
    ]);
    assert_eq!(out.status.code(), Some(2), "bad input");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid scrape request: pollBatchSize: 20000 is out of range; accepted values: 1 to 10000"),
        "{stderr}"
    );
    let out = bare(&["scrape", "--request", "/nonexistent/request.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading /nonexistent/request.json"));
    let out = bare(&["scrape"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a missing flag is a usage error"
    );
}

/// A resharded stream (2 shards split into 4) scraped with its lineage
/// groups at once: every shard's records once, in order, and the manifest
/// lists parents before children. `--max-concurrency` out of its range is
/// refused before anything connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resharded_stream_is_scraped_with_its_groups_at_once() {
    use std::collections::BTreeMap;

    use rewind_tests::{put_all, reshard};

    let stack = stack();
    let kinesis = aws_sdk_kinesis::Client::new(&stack.sdk_config().await);
    let stream = unique("cli-scrape-groups");
    create_stream(&kinesis, &stream, 2)
        .await
        .expect("creating the stream");
    let batch = |from: usize| -> Vec<(String, Vec<u8>)> {
        (from..from + 24)
            .map(|i| (format!("k{}", i % 8), format!("record {i}").into_bytes()))
            .collect()
    };
    let mut accepted = put_all(&kinesis, &stream, batch(0)).await.unwrap();
    reshard(&kinesis, &stream, 4).await.unwrap();
    accepted.extend(put_all(&kinesis, &stream, batch(24)).await.unwrap());
    let mut expected: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    for a in accepted {
        expected
            .entry(a.shard)
            .or_default()
            .push((a.sequence.to_string(), a.data));
    }

    let scratch = Scratch::new("scrape-groups");
    let request = scratch.write(
        "request.json",
        &serde_json::json!({
            "stream": stream,
            "start": {"type": "TRIM_HORIZON"},
            "stop": {"type": "LATEST"},
            "output": {"bucket": "unused-with-out", "prefix": "scrapes"},
        }),
    );
    let out_dir = scratch.path("out");
    let out_dir = Path::new(&out_dir);
    let manifest = scrape_to(&stack.endpoint, &[], &request, out_dir);
    assert_eq!(manifest.records, 48);
    assert_eq!(manifest.shards.len(), 6, "2 parents and 4 children");
    let position = |id: &str| manifest.shards.iter().position(|s| s.shard_id == id);
    let mut read: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    for shard in &manifest.shards {
        for parent in &shard.parent_shard_ids {
            assert!(
                position(parent) < position(&shard.shard_id),
                "{parent} listed before its child {}",
                shard.shard_id
            );
        }
        let records = read.entry(shard.shard_id.clone()).or_default();
        // The chunks are in the shard's own manifest, which the entry names.
        let own = shard.manifest.as_deref().unwrap();
        let own: ShardManifest =
            serde_json::from_slice(&std::fs::read(out_dir.join(own)).unwrap()).unwrap();
        for c in &own.shard.chunks {
            let bytes = std::fs::read(out_dir.join(&c.key)).unwrap();
            records.extend(
                chunk::decode(&c.key, &bytes)
                    .unwrap()
                    .into_iter()
                    .map(|r| (r.sequence_number.to_string(), r.data)),
            );
        }
    }
    read.retain(|_, records| !records.is_empty());
    assert_eq!(read, expected, "every record once, in order, per shard");

    for bad in ["0", "1001"] {
        let out = bare(&["scrape", "--max-concurrency", bad, "--request", &request]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("--max-concurrency") && stderr.contains("1..=1000"),
            "{stderr}"
        );
    }
}

/// Runs `rewind scrape --json` of `request` (with `extra` flags) into the
/// folder `out_dir`, and reads back the manifest it says it wrote.
fn scrape_to(endpoint: &str, extra: &[&str], request: &str, out_dir: &Path) -> Manifest {
    let out = out_dir.to_str().unwrap();
    let args = [
        &["scrape", "--json"][..],
        extra,
        &["--request", request, "--out", out],
    ];
    let output = rewind(endpoint, &args.concat());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["status"], "SUCCEEDED", "{answer}");
    let key = answer["manifest"]["key"].as_str().unwrap();
    serde_json::from_slice(&std::fs::read(out_dir.join(key)).unwrap()).unwrap()
}
