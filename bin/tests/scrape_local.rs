//! `rewind scrape` against the local stack (kinesis-mock, shard limits
//! enforced): every record put is in the output folder's chunks, once, in
//! order, and the manifest says so.

use aws_sdk_kinesis::primitives::Blob;
use rewind_engine::model::chunk;
use rewind_engine::model::manifest::Manifest;
use rewind_local::{Layout, LocalStack, Options};

mod common;
use common::{create_stream, rewind, sdk_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_a_stream_into_a_local_folder() {
    let layout = Layout::current().expect("inside the workspace");
    let stack = LocalStack::start(&layout, Options::default())
        .await
        .expect("local stack");
    let endpoint = stack.endpoint_url();
    let kinesis = aws_sdk_kinesis::Client::new(&sdk_config(&endpoint).await);
    let stream = format!("cli-scrape-{}", std::process::id());
    create_stream(&kinesis, &stream, 1).await;
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

    let dir = std::env::temp_dir().join(format!("rewind-cli-scrape-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
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
    let output = rewind(
        &endpoint,
        &[
            "scrape",
            "--json",
            "--chunk-records",
            "10",
            "--request",
            request.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ],
    );
    stack.stop().await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["status"], "SUCCEEDED", "{answer}");
    let key = answer["manifest"]["key"].as_str().unwrap();
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(out_dir.join(key)).unwrap()).unwrap();
    assert_eq!(manifest.records, 30);
    let shard = &manifest.shards[0];
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
    std::fs::remove_dir_all(&dir).unwrap();
}
