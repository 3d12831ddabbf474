use std::time::Duration;

use super::*;
use crate::model::manifest::ManifestShard;
use crate::model::record::Record;
use crate::model::window::StopReason;
use crate::sources::kinesis::tests::{MemoryShard, shard_records};
use crate::sources::manifest::read_shard_chunks;
use crate::store::MemoryStore;

fn request(json: &str) -> Result<ScrapeRequest, RequestError> {
    ScrapeRequest::parse(json.as_bytes())
}

const ARN: &str = "arn:aws:kinesis:us-east-1:123456789012:stream/orders";

const GOOD: &str = r#"{
    "stream": "orders",
    "start": {"type": "TRIM_HORIZON"},
    "stop": {"type": "AT_TIMESTAMP", "timestamp": 1700000000.010},
    "output": {"bucket": "scrapes-bucket"}
}"#;

#[test]
fn a_minimal_request_gets_the_documented_defaults() {
    let r = request(GOOD).unwrap();
    assert_eq!(r.shards, ShardSelection::All);
    assert_eq!(r.poll_batch_size, 10_000);
    assert_eq!(r.max_empty_polls, 3);
    assert_eq!(r.read_share, 1.0);
    assert_eq!(r.output.prefix, "scrapes");
    assert_eq!(r.compression, Compression::Gzip);
    assert_eq!(r.run_folder("run-1"), "scrapes/run-1");
    let round: ScrapeRequest = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(round, r);
}

#[test]
fn bad_requests_name_the_field_and_the_accepted_values() {
    let cases: Vec<(String, &str, &str)> = vec![
        (
            GOOD.replace("TRIM_HORIZON", "BEGINNING"),
            "start.type",
            "unknown variant `BEGINNING`, expected one of `TRIM_HORIZON`",
        ),
        (
            GOOD.replace("AT_TIMESTAMP", "WHENEVER"),
            "stop.type",
            "expected one of `TOTAL_RECORDS_PER_SHARD`",
        ),
        (
            GOOD.replace("\"orders\"", "\"orders\", \"shards\": \"SOME\""),
            "shards",
            "accepted values: \"ALL\" or a list of shard ids",
        ),
        (
            GOOD.replace("\"orders\"", "\"orders\", \"pollBatchSize\": 20000"),
            "pollBatchSize",
            "accepted values: 1 to 10000",
        ),
        (
            GOOD.replace("\"orders\"", "\"orders\", \"pollDelayMs\": 60000"),
            "pollDelayMs",
            "accepted values: 0 to 10000",
        ),
        (
            GOOD.replace("\"orders\"", "\"orders\", \"readShare\": 0"),
            "readShare",
            "more than 0, at most 1",
        ),
        (
            GOOD.replace("\"orders\"", "\"orders\", \"compression\": \"lz4\""),
            "compression",
            "unknown variant `lz4`",
        ),
        (
            GOOD.replace("\"orders\"", "\"orders\", \"shard\": \"x\""),
            "shard",
            "unknown field `shard`, expected one of `stream`, `shards`",
        ),
        (
            GOOD.replace("\"orders\"", "\"or ders\""),
            "stream",
            "neither a stream name",
        ),
        (
            GOOD.replace("\"scrapes-bucket\"", "\"\""),
            "output.bucket",
            "is empty",
        ),
        (
            GOOD.replace(
                "{\"type\": \"TRIM_HORIZON\"}",
                "{\"type\": \"AT_SEQUENCE_NUMBER\", \"sequenceNumber\": \"12\"}",
            ),
            "shards",
            "name exactly one shard",
        ),
        (
            GOOD.replace("\"timestamp\": 1700000000.010", "\"timestamp\": \"soon\""),
            "stop.timestamp",
            "invalid type",
        ),
        (
            GOOD.replace("\"timestamp\": 1700000000.010", "\"sequenceNumber\": \"5\""),
            "stop",
            "sequenceNumber does not go with type AT_TIMESTAMP",
        ),
        (
            GOOD.replace(", \"timestamp\": 1700000000.010", ""),
            "stop",
            "timestamp is required with type AT_TIMESTAMP",
        ),
        (
            GOOD.replace(
                "{\"type\": \"TRIM_HORIZON\"}",
                "{\"type\": \"TRIM_HORIZON\", \"count\": 5}",
            ),
            "start",
            "count does not go with type TRIM_HORIZON",
        ),
    ];
    for (json, field, message) in cases {
        let err = request(&json).unwrap_err();
        assert_eq!(err.field, field, "{err}");
        assert!(err.message.contains(message), "{err}");
        assert!(
            ScraperError::from(err)
                .to_string()
                .starts_with(&format!("invalid scrape request: {field}: "))
        );
    }
}

async fn run_shard(
    shard: &MemoryShard,
    store: &MemoryStore,
    request: &ScrapeRequest,
    step_records: u64,
) -> ShardProgress {
    let window = request.window("orders");
    let planned = PlannedShard {
        shard_id: "shardId-000000000000".into(),
        parent_shard_ids: vec![],
    };
    let mut progress = ShardProgress::new(&planned);
    let mut steps = 0;
    while !progress.is_done() {
        steps += 1;
        assert!(steps < 100);
        let budget = StepBudget {
            deadline: Instant::now() + Duration::from_secs(600),
            max_records: step_records,
        };
        // Through JSON, as through the state machine.
        let carried: ShardProgress =
            serde_json::from_slice(&serde_json::to_vec(&progress).unwrap()).unwrap();
        progress = scrape_step(
            shard,
            store,
            &window,
            ARN,
            &request.run_folder("run-1"),
            request.compression,
            &carried,
            budget,
        )
        .await
        .unwrap();
    }
    progress
}

#[tokio::test(start_paused = true)]
async fn steps_write_chunks_and_the_manifest_describes_them() {
    let records = shard_records();
    let shard = MemoryShard::new(records.clone(), true);
    let store = MemoryStore::default();
    let mut req = request(GOOD).unwrap();
    req.compression = Compression::Zstd;
    let progress = run_shard(&shard, &store, &req, 7).await;
    // AT_TIMESTAMP 1700000000.010: two records per millisecond, 0..=10 ms.
    let expected: Vec<Record> = records[..22].to_vec();
    assert_eq!(progress.cursor.records, 22);
    // The budget is checked between GetRecords calls (pages of 3 here): 9 + 9 + 4.
    assert_eq!(progress.chunks, 3);

    let planned = vec![PlannedShard {
        shard_id: "shardId-000000000000".into(),
        parent_shard_ids: vec![],
    }];
    let (manifest, key) = write_manifest(&store, &req, ARN, "run-1", &planned)
        .await
        .unwrap();
    assert_eq!(key, "scrapes/run-1/manifest.json");
    assert_eq!(manifest.records, 22);
    // The top-level manifest names the shard's own, which its last step
    // wrote: its chunks, the shard's totals, the stream.
    let entry = &manifest.shards[0];
    assert!(entry.chunks.is_empty(), "{entry:?}");
    let shard_key = "scrapes/run-1/shardId-000000000000/manifest.json";
    assert_eq!(entry.manifest.as_deref(), Some(shard_key));
    let own: ShardManifest = serde_json::from_slice(&store.objects()[shard_key].body).unwrap();
    assert_eq!(
        (own.stream_arn.as_str(), own.compression),
        (ARN, Compression::Zstd)
    );
    assert_eq!(
        ManifestShard {
            chunks: Vec::new(),
            manifest: entry.manifest.clone(),
            ..own.shard.clone()
        },
        *entry
    );
    let shard_manifest = &own.shard;
    assert_eq!(shard_manifest.chunks.len(), 3);
    assert!(
        shard_manifest.chunks[0]
            .key
            .starts_with("scrapes/run-1/shardId-000000000000/0-")
    );
    assert!(shard_manifest.chunks[0].key.ends_with(".jsonl.zst"));
    assert_eq!(shard_manifest.stop_reason, Some(StopReason::StopCondition));
    assert_eq!(
        shard_manifest.first_sequence_number.as_ref(),
        Some(&expected[0].sequence_number)
    );
    assert_eq!(
        shard_manifest.last_sequence_number.as_ref(),
        Some(&expected[21].sequence_number)
    );
    assert_eq!(
        shard_manifest.last_arrival,
        Some(expected[21].approximate_arrival_timestamp)
    );
    let mut read = Vec::new();
    read_shard_chunks(&store, shard_manifest, |r| read.push(r))
        .await
        .unwrap();
    assert_eq!(read, expected, "each record once, in order");
    let stored: Manifest = serde_json::from_slice(&store.objects()[&key].body).unwrap();
    assert_eq!(stored, manifest);
}

/// A step killed after storing its chunk but before the state machine got
/// its result runs again from the same progress: the leftover chunk is
/// replaced, not kept beside the new one.
#[tokio::test(start_paused = true)]
async fn a_retried_step_replaces_its_leftover_chunk() {
    let records = shard_records();
    let shard = MemoryShard::new(records.clone(), true);
    let store = MemoryStore::default();
    let req = request(&GOOD.replace(
        "{\"type\": \"AT_TIMESTAMP\", \"timestamp\": 1700000000.010}",
        "{\"type\": \"TOTAL_RECORDS_PER_SHARD\", \"count\": 30}",
    ))
    .unwrap();
    let window = req.window("orders");
    let planned = PlannedShard {
        shard_id: "shardId-000000000000".into(),
        parent_shard_ids: vec![],
    };
    let start = ShardProgress::new(&planned);
    // One step from `progress`, of at most `n` records.
    let (shard_ref, store_ref, window_ref) = (&shard, &store, &window);
    let step = |progress: ShardProgress, n| async move {
        let budget = StepBudget {
            deadline: Instant::now() + Duration::from_secs(600),
            max_records: n,
        };
        let run = "scrapes/run-1";
        scrape_step(
            shard_ref,
            store_ref,
            window_ref,
            ARN,
            run,
            req.compression,
            &progress,
            budget,
        )
        .await
        .unwrap()
    };
    // The lost attempt read 12 records into chunk 0.
    let lost = step(start.clone(), 12).await;
    assert_eq!(lost.chunks, 1);
    // The retry reads 5 into chunk 0, then the run goes on from there.
    let mut progress = step(start, 5).await;
    let chunk0: Vec<String> = store
        .objects()
        .keys()
        .filter(|k| k.contains("/0-"))
        .cloned()
        .collect();
    assert_eq!(chunk0.len(), 1, "one chunk 0: {chunk0:?}");
    while !progress.is_done() {
        progress = step(progress, 9).await;
    }
    let (manifest, _) = write_manifest(
        &store,
        &req,
        "arn:aws:kinesis:us-east-1:1:stream/orders",
        "run-1",
        &[planned],
    )
    .await
    .unwrap();
    let own = manifest.shards[0].manifest.as_deref().unwrap();
    let own: ShardManifest = serde_json::from_slice(&store.objects()[own].body).unwrap();
    let mut read = Vec::new();
    read_shard_chunks(&store, &own.shard, |r| read.push(r))
        .await
        .unwrap();
    assert_eq!(read, records[..30].to_vec());
}

#[tokio::test]
async fn a_manifest_of_an_unfinished_shard_is_refused() {
    let store = MemoryStore::default();
    let req = request(GOOD).unwrap();
    let planned = vec![PlannedShard {
        shard_id: "shardId-000000000007".into(),
        parent_shard_ids: vec![],
    }];
    let err = write_manifest(
        &store,
        &req,
        "arn:aws:kinesis:us-east-1:1:stream/orders",
        "run-1",
        &planned,
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "shard shardId-000000000007 has no final progress at scrapes/run-1/shardId-000000000007/_progress.json: its scrape did not finish"
    );
}

#[test]
fn scraper_events_parse_as_actions_or_a_bare_request() {
    let bare = ScraperEvent::parse(GOOD.as_bytes()).unwrap();
    assert!(matches!(
        bare,
        ScraperEvent::Run {
            stream_arn: None,
            shards: None,
            ..
        }
    ));
    let plan = format!(r#"{{"action": "plan", "request": {GOOD}}}"#);
    assert!(matches!(
        ScraperEvent::parse(plan.as_bytes()).unwrap(),
        ScraperEvent::Plan { .. }
    ));
    let err =
        ScraperEvent::parse(format!(r#"{{"action": "scrape", "request": {GOOD}}}"#).as_bytes())
            .unwrap_err();
    assert!(
        err.message.contains(
            "unknown variant `scrape`, expected one of `plan`, `step`, `manifest`, `run`"
        ),
        "{err}"
    );
    // The request inside an action is validated too, naming its path.
    let bad = format!(
        r#"{{"action": "plan", "request": {}}}"#,
        GOOD.replace("\"orders\"", "\"orders\", \"pollBatchSize\": 0")
    );
    let err = ScraperEvent::parse(bad.as_bytes()).unwrap_err();
    assert_eq!(err.field, "pollBatchSize");
    let step = format!(
        r#"{{"action": "step", "request": {GOOD}, "streamArn": "arn:aws:kinesis:us-east-1:1:stream/orders", "runId": "r", "progress": {{"cursor": {{"shardId": "shardId-000000000000", "records": 0}}, "chunks": 0}}}}"#
    );
    assert!(matches!(
        ScraperEvent::parse(step.as_bytes()).unwrap(),
        ScraperEvent::Step { .. }
    ));
}

#[test]
fn sample_scrape_events_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("scrape-") && name.ends_with(".json") {
            let bytes = std::fs::read(&path).unwrap();
            ScraperEvent::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            seen += 1;
        }
    }
    assert!(
        seen >= 4,
        "events/ holds sample scrape requests by time, sequence range, count and all shards"
    );
}
