use std::sync::{Arc, Mutex};

use super::*;
use crate::jobs::step::ErrorType;
use crate::model::chunk::{ChunkWriter, Compression};
use crate::model::event::DeliveredEvent;
use crate::model::manifest::{Manifest, ManifestChunk, ManifestShard};
use crate::model::record::Record;
use crate::model::seqno::Position;
use crate::model::window::{StartPosition, StopCondition};
use crate::pipeline::lineage::lineage_groups;
use crate::sinks::dlq::{DestinationError, FailureDestination, FailureRecord};
use crate::sinks::kinesis::tests::FakeStream;
use crate::sinks::kinesis::{Entry, RecordSink};
use crate::sinks::lambda::DeliveryError;
use crate::sinks::lambda::invoker::{FunctionIdentity, Invocation, InvokeError};
use crate::store::PutObject;
use crate::store::{MemoryStore, ObjectStore, StoreError};

/// One bucket for every name.
#[derive(Clone, Default)]
struct Mem(Arc<MemoryStore>);

impl ObjectStore for Mem {
    async fn put(&self, object: PutObject) -> Result<(), StoreError> {
        self.0.put(object).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.0.delete(key).await
    }
}

impl ObjectReader for Mem {
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.0.list(prefix).await
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.0.get(key).await
    }
}

impl crate::store::CreateNew for Mem {
    async fn create_new(&self, object: PutObject) -> Result<crate::store::Created, StoreError> {
        self.0.create_new(object).await
    }
}

impl Buckets for Mem {
    type Store = Mem;

    fn bucket(&self, _name: &str) -> Mem {
        self.clone()
    }
}

/// A target that fails (Unhandled) on batches holding a record whose data
/// starts with `POISON`, and keeps every batch it accepted.
#[derive(Clone, Default)]
struct Target {
    accepted: Arc<Mutex<Vec<Vec<Record>>>>,
    invokes: Arc<Mutex<u64>>,
    /// The invoke with this number (from 1) fails as the call itself: the
    /// step fails, as a killed one would.
    broken_call: Arc<Mutex<Option<u64>>>,
    /// The execution role its configuration names, when it has one.
    role: Option<&'static str>,
    /// Configuration look-ups, and the events' `invokeIdentityArn`s.
    lookups: Arc<Mutex<u64>>,
    identities: Arc<Mutex<std::collections::BTreeSet<String>>>,
    /// How long each invoke takes (none: it answers at once).
    takes: Arc<Mutex<Option<std::time::Duration>>>,
}

impl Invoker for Target {
    async fn invoke(&self, payload: Vec<u8>) -> Result<Invocation, InvokeError> {
        let call = {
            let mut invokes = self.invokes.lock().unwrap();
            *invokes += 1;
            *invokes
        };
        let takes = *self.takes.lock().unwrap();
        if let Some(takes) = takes {
            tokio::time::sleep(takes).await;
        }
        if *self.broken_call.lock().unwrap() == Some(call) {
            return Err(InvokeError::Fatal {
                function: "target".into(),
                source: "connection reset".into(),
            });
        }
        let event: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        for record in event["Records"].as_array().unwrap() {
            let identity = record["invokeIdentityArn"].as_str().unwrap().to_owned();
            self.identities.lock().unwrap().insert(identity);
        }
        let records = DeliveredEvent::from_slice(&payload).unwrap().records;
        let ok = Invocation {
            request_id: "req".into(),
            status_code: 200,
            executed_version: Some("$LATEST".into()),
            function_error: None,
            payload: b"null".to_vec(),
        };
        if records.iter().any(|r| r.data.starts_with(b"POISON")) {
            return Ok(Invocation {
                function_error: Some("Unhandled".into()),
                ..ok
            });
        }
        self.accepted.lock().unwrap().push(records);
        Ok(ok)
    }

    fn function_arn(&self) -> &str {
        "arn:aws:lambda:eu-west-1:123456789012:function:target"
    }

    async fn identity(&self) -> Result<FunctionIdentity, InvokeError> {
        *self.lookups.lock().unwrap() += 1;
        Ok(FunctionIdentity {
            function_arn: self.function_arn().to_owned(),
            role: self.role.unwrap_or_default().to_owned(),
        })
    }
}

impl Targets for Target {
    type Invoker = Target;

    fn invoker(&self, _function_name: &str, _qualifier: Option<&str>) -> Target {
        self.clone()
    }
}

/// Target streams: one fake stream, whatever the name, remembering the
/// names it was asked for.
#[derive(Clone, Default)]
struct Stream {
    fake: FakeStream,
    arns: Arc<Mutex<Vec<String>>>,
}

impl RecordSink for Stream {
    async fn put_records(
        &self,
        entries: Vec<Entry>,
    ) -> Result<Vec<crate::sinks::kinesis::EntryResult>, crate::sinks::kinesis::PutError> {
        self.fake.put_records(entries).await
    }
}

impl Streams for Stream {
    type Sink = Stream;

    fn sink(&self, stream_arn: &str) -> Stream {
        self.arns.lock().unwrap().push(stream_arn.to_owned());
        self.clone()
    }
}

/// An SQS queue in memory.
#[derive(Clone, Default)]
struct Queue(Arc<Mutex<Vec<(String, FailureRecord)>>>);

impl FailureDestination for Queue {
    async fn send(&self, record: FailureRecord) -> Result<String, DestinationError> {
        let mut messages = self.0.lock().unwrap();
        messages.push((String::new(), record));
        Ok(format!("message-{}", messages.len()))
    }

    fn wants_payload(&self) -> bool {
        false
    }
}

impl Queues for Queue {
    type Destination = Queue;

    fn queue(&self, queue_url: &str) -> Queue {
        for message in self.0.lock().unwrap().iter_mut() {
            message.0 = queue_url.to_owned();
        }
        self.clone()
    }
}

/// SNS topics are queues too here: the same record, the topic's ARN kept
/// as the queue's URL is.
impl Topics for Queue {
    type Destination = Queue;

    fn topic(&self, topic_arn: &str) -> Queue {
        self.queue(topic_arn)
    }
}

type TestReplayer = Replayer<Mem, Target, Stream, Queue, Queue>;

fn replayer() -> TestReplayer {
    Replayer {
        buckets: Mem::default(),
        targets: Target::default(),
        streams: Stream::default(),
        queues: Queue::default(),
        topics: Queue::default(),
        tables: None,
        partition: "aws".into(),
        region: "eu-west-1".into(),
        account_id: "123456789012".into(),
        invoke_identity_arn: "arn:aws:iam::123456789012:role/replay".into(),
        base_backoff: std::time::Duration::from_millis(1),
    }
}

/// The first step of shard 0 of run `run-1`, stopping at `stop_at`.
async fn first_step(
    replayer: &TestReplayer,
    request: &ReplayRequest,
    stop_at: Instant,
) -> ShardReplay {
    replayer
        .step(
            request,
            "run-1",
            &ShardReplay::new("shardId-000000000000"),
            stop_at,
        )
        .await
        .unwrap()
}

/// Shard 0's first step of run `run-1`, its invoke number `call` (counted
/// from 1) failing as the call itself, which fails the step
/// (`InvokeRejected`); returns the continuation the step started from,
/// which the state machine retries it with.
async fn first_step_broken_at(
    replayer: &TestReplayer,
    request: &ReplayRequest,
    call: u64,
) -> ShardReplay {
    *replayer.targets.broken_call.lock().unwrap() = Some(call);
    let start = ShardReplay::new("shardId-000000000000");
    let error = replayer
        .step(request, "run-1", &start, far())
        .await
        .unwrap_err();
    assert_eq!(error.error_type(), "InvokeRejected");
    start
}

/// A scrape of two shards, `a` and `b`, `per_chunk` records a chunk.
async fn write_two_shards(buckets: &Mem, a: &[Record], b: &[Record], per_chunk: usize) {
    write_scrape(
        buckets,
        &[
            ("shardId-000000000000", a.to_vec()),
            ("shardId-000000000001", b.to_vec()),
        ],
        per_chunk,
    )
    .await;
}

fn records(shard: &str, n: usize, poison: &[usize]) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            shard_id: shard.into(),
            partition_key: format!("key-{}", i % 3),
            approximate_arrival_timestamp: ArrivalTime::from_epoch_millis(
                1_700_000_000_000 + i as i64 * 1000,
            ),
            data: if poison.contains(&i) {
                format!("POISON {i}").into_bytes()
            } else {
                format!("record {i}").into_bytes()
            },
            ..crate::model::record::tests::record(0, i)
        })
        .collect()
}

/// Writes `shards` as a scrape would, `per_chunk` records a chunk.
async fn write_scrape(store: &Mem, shards: &[(&str, Vec<Record>)], per_chunk: usize) {
    let mut manifest_shards = Vec::new();
    for (shard_id, records) in shards {
        let mut chunks = Vec::new();
        for (n, piece) in records.chunks(per_chunk).enumerate() {
            let (first, last) = (&piece[0], &piece[piece.len() - 1]);
            let key = format!(
                "scrapes/run/{shard_id}/{n}-{}-{}.jsonl.gz",
                first.sequence_number, last.sequence_number
            );
            let mut writer = ChunkWriter::new(key.clone(), Vec::new(), Compression::Gzip).unwrap();
            for r in piece {
                writer.write(r).unwrap();
            }
            let (body, _) = writer.finish().unwrap();
            store
                .put(PutObject {
                    key: key.clone(),
                    body,
                    content_type: "application/x-ndjson",
                    content_encoding: None,
                })
                .await
                .unwrap();
            chunks.push(ManifestChunk {
                key,
                first_sequence_number: first.sequence_number.clone(),
                last_sequence_number: last.sequence_number.clone(),
            });
        }
        manifest_shards.push(ManifestShard {
            shard_id: (*shard_id).into(),
            parent_shard_ids: Vec::new(),
            records: records.len() as u64,
            // As a manifest from before per-shard manifests: chunks inline.
            chunks,
            manifest: None,
            first_sequence_number: records.first().map(|r| r.sequence_number.clone()),
            last_sequence_number: records.last().map(|r| r.sequence_number.clone()),
            first_arrival: None,
            last_arrival: None,
            stop_reason: None,
            child_shard_ids: Vec::new(),
        });
    }
    let manifest = Manifest {
        stream: "orders".into(),
        stream_arn: "arn:aws:kinesis:us-east-2:210987654321:stream/orders".into(),
        run_id: "run".into(),
        bucket: "bucket".into(),
        prefix: "scrapes".into(),
        compression: Compression::Gzip,
        start: StartPosition::TrimHorizon,
        stop: StopCondition::Latest { as_of: None },
        records: shards.iter().map(|(_, r)| r.len() as u64).sum(),
        shards: manifest_shards,
    };
    store
        .put(PutObject {
            key: "scrapes/run/manifest.json".into(),
            body: serde_json::to_vec(&manifest).unwrap(),
            content_type: "application/json",
            content_encoding: None,
        })
        .await
        .unwrap();
}

fn manifest_request() -> ReplayRequest {
    ReplayRequest::parse(
        br#"{
            "source": {"type": "MANIFEST", "bucket": "bucket", "key": "scrapes/run/manifest.json"},
            "target": {"type": "FUNCTION", "functionName": "target"},
            "options": {"BatchSize": 4, "BisectBatchOnFunctionError": true, "MaximumRetryAttempts": 1},
            "dlq": {"type": "S3", "bucket": "bucket"}
        }"#,
    )
    .unwrap()
}

fn far() -> Instant {
    Instant::now() + std::time::Duration::from_secs(600)
}

async fn run_all(replayer: &TestReplayer, request: &ReplayRequest) -> ReplaySummary {
    let plan = replayer.plan(request, "run-1", None).await.unwrap();
    for progress in plan.groups.iter().flatten() {
        let mut progress = progress.clone();
        while !progress.done {
            progress = replayer
                .step(request, "run-1", &progress, far())
                .await
                .unwrap();
        }
    }
    replayer
        .summary(request, "run-1", &plan.shards)
        .await
        .unwrap()
}

fn accepted(target: &Target) -> Vec<(String, String)> {
    target
        .accepted
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .map(|r| (r.shard_id.clone(), r.sequence_number.to_string()))
        .collect()
}

#[test]
fn every_sample_replay_request_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("replay-") && name.ends_with(".json") {
            let bytes = std::fs::read(&path).unwrap();
            ReplayRequest::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            seen += 1;
        }
    }
    assert!(seen >= 2, "expected the sample replay requests in {dir:?}");
}

#[test]
fn errors_name_the_field() {
    let base = serde_json::json!({
        "source": {"type": "ARCHIVE", "bucket": "b", "stream": "orders", "from": 1700000000, "to": 1700003600},
        "target": {"type": "FUNCTION", "functionName": "target"},
        "dlq": {"type": "S3", "bucket": "b"}
    });
    let field = |patch: &dyn Fn(&mut serde_json::Value)| {
        let mut value = base.clone();
        patch(&mut value);
        ReplayRequest::parse(&serde_json::to_vec(&value).unwrap())
            .unwrap_err()
            .field
    };
    ReplayRequest::parse(&serde_json::to_vec(&base).unwrap()).unwrap();
    assert_eq!(field(&|v| v["source"]["to"] = 1.0.into()), "source.to");
    assert_eq!(
        field(&|v| v["source"]["stream"] = "a b".into()),
        "source.stream"
    );
    assert_eq!(field(&|v| v["source"]["extra"] = 1.into()), "source");
    assert_eq!(
        field(&|v| v["source"]["type"] = "KINESIS".into()),
        "source.type"
    );
    assert_eq!(
        field(&|v| v["target"]["functionName"] = "".into()),
        "target.functionName"
    );
    assert_eq!(
        field(&|v| v["options"] = serde_json::json!({"BatchSize": 0})),
        "options.BatchSize"
    );
    assert_eq!(
        field(&|v| v["options"] = serde_json::json!({"batchSize": 10})),
        "options.batchSize"
    );
    assert_eq!(field(&|v| v["dlq"]["bucket"] = "".into()), "dlq.bucket");
    assert_eq!(field(&|v| v["maxConcurrency"] = 0.into()), "maxConcurrency");
    assert_eq!(field(&|v| v["dryRun"] = "yes".into()), "dryRun");
    assert_eq!(field(&|v| v["surprise"] = 1.into()), "surprise");
}

#[tokio::test]
async fn a_manifest_is_replayed_in_order_with_exactly_the_poison_records_in_the_dlq() {
    let replayer = replayer();
    let a = records("shardId-000000000000", 23, &[5, 17]);
    let b = records("shardId-000000000001", 9, &[]);
    write_two_shards(&replayer.buckets, &a, &b, 7).await;
    let request = manifest_request();
    let summary = run_all(&replayer, &request).await;

    let expected: Vec<(String, String)> = a
        .iter()
        .chain(&b)
        .filter(|r| !r.data.starts_with(b"POISON"))
        .map(|r| (r.shard_id.clone(), r.sequence_number.to_string()))
        .collect();
    let mut got = accepted(&replayer.targets);
    // Lanes run one per shard (ParallelizationFactor 1): in order.
    assert_eq!(got, expected);
    got.dedup();
    assert_eq!(got.len(), expected.len());

    assert_eq!(summary.totals.records, 32);
    assert_eq!(summary.totals.counters.delivered, 30);
    assert_eq!(summary.totals.counters.failed_records, 2);
    assert_eq!(summary.totals.dlq_locations, 2);
    assert_eq!(summary.shards[0].dlq_keys.len(), 2);
    assert_eq!(
        summary.shards[0].last_sequence_number.as_ref(),
        Some(&a[22].sequence_number)
    );
    let mut poisoned = Vec::new();
    for key in summary.shards[0].dlq_keys.iter() {
        let key = key.strip_prefix("s3://bucket/").unwrap();
        assert!(key.starts_with("dlq/aws/lambda/run-1/shardId-000000000000/"));
        let record: crate::sinks::dlq::FailureRecord =
            serde_json::from_slice(&replayer.buckets.get(key).await.unwrap()).unwrap();
        assert_eq!(record.kinesis_batch_info.batch_size, 1);
        assert_eq!(
            record.kinesis_batch_info.stream_arn,
            "arn:aws:kinesis:us-east-2:210987654321:stream/orders"
        );
        poisoned.push(record.kinesis_batch_info.start_sequence_number);
    }
    poisoned.sort();
    assert_eq!(
        poisoned,
        vec![
            a[5].sequence_number.to_string(),
            a[17].sequence_number.to_string()
        ]
    );
}

#[tokio::test]
async fn a_step_resumes_after_the_last_settled_record() {
    let replayer = replayer();
    let a = records("shardId-000000000000", 20, &[]);
    write_scrape(&replayer.buckets, &[("shardId-000000000000", a.clone())], 6).await;
    let request = manifest_request();
    let mut progress = ShardReplay::new("shardId-000000000000");
    progress.last = Some(Position::of(&a[8]));
    progress.records = 9;
    let progress = replayer
        .step(&request, "run-1", &progress, far())
        .await
        .unwrap();
    assert!(progress.done);
    assert_eq!(progress.records, 20);
    let got = accepted(&replayer.targets);
    let expected: Vec<_> = a[9..]
        .iter()
        .map(|r| (r.shard_id.clone(), r.sequence_number.to_string()))
        .collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn a_step_out_of_time_stops_before_delivering_and_keeps_its_place() {
    let replayer = replayer();
    let a = records("shardId-000000000000", 5, &[]);
    write_scrape(&replayer.buckets, &[("shardId-000000000000", a)], 6).await;
    let request = manifest_request();
    let progress = ShardReplay::new("shardId-000000000000");
    let next = replayer
        .step(&request, "run-1", &progress, Instant::now())
        .await
        .unwrap();
    assert!(!next.done);
    assert!(next.started_at.is_some());
    assert_eq!(
        ShardReplay {
            started_at: None,
            ..next
        },
        progress
    );
    assert_eq!(*replayer.targets.invokes.lock().unwrap(), 0);
}

#[tokio::test]
async fn a_dry_run_counts_without_invoking() {
    let replayer = replayer();
    write_scrape(
        &replayer.buckets,
        &[(
            "shardId-000000000000",
            records("shardId-000000000000", 12, &[3]),
        )],
        5,
    )
    .await;
    let mut request = manifest_request();
    request.dry_run = true;
    let summary = run_all(&replayer, &request).await;
    assert_eq!(*replayer.targets.invokes.lock().unwrap(), 0);
    assert_eq!(summary.totals.records, 12);
    assert_eq!(summary.totals.counters.delivered, 0);
    assert!(summary.dry_run);
}

#[tokio::test]
async fn an_archive_window_is_replayed_parents_first_with_the_replay_accounts_arn() {
    let replayer = replayer();
    let layout = ArchiveLayout::default();
    let parent = records("shardId-000000000000", 10, &[]);
    let child = records("shardId-000000000002", 4, &[3]);
    for batch in [&child, &parent] {
        let outcome =
            crate::sinks::s3_archive::archive_batch(&replayer.buckets, &layout, batch.as_slice())
                .await;
        assert!(outcome.failed.is_empty());
    }
    // The window leaves each shard's first two records out.
    let request = ReplayRequest::parse(
        br#"{
            "source": {"type": "ARCHIVE", "bucket": "bucket", "stream": "orders",
                       "from": 1700000002, "to": 1700003600},
            "target": {"type": "FUNCTION", "functionName": "target"},
            "options": {"BatchSize": 3, "BisectBatchOnFunctionError": true, "MaximumRetryAttempts": 1},
            "dlq": {"type": "S3", "bucket": "bucket", "prefix": "replay-dlq"}
        }"#,
    )
    .unwrap();
    let plan = replayer.plan(&request, "run-1", None).await.unwrap();
    assert_eq!(
        plan.shards,
        ["shardId-000000000000", "shardId-000000000002"]
    );
    assert_eq!(
        plan.stream_arn,
        "arn:aws:kinesis:eu-west-1:123456789012:stream/orders"
    );
    let summary = run_all(&replayer, &request).await;
    let expected: Vec<_> = parent[2..]
        .iter()
        .chain(&child[2..3])
        .map(|r| (r.shard_id.clone(), r.sequence_number.to_string()))
        .collect();
    assert_eq!(accepted(&replayer.targets), expected);
    assert_eq!(summary.totals.records, 10);
    assert_eq!(summary.totals.counters.delivered, 9);
    assert_eq!(summary.totals.counters.failed_records, 1);
    assert!(
        summary.shards[1].dlq_keys[0]
            .starts_with("s3://bucket/replay-dlq/aws/lambda/run-1/shardId-000000000002/")
    );
    let events = replayer.targets.accepted.lock().unwrap().len();
    assert!(events > 0);
}

#[tokio::test]
async fn a_summary_before_a_shard_finished_says_which() {
    let replayer = replayer();
    let error = replayer
        .summary(
            &manifest_request(),
            "run-1",
            &["shardId-000000000000".into()],
        )
        .await
        .unwrap_err();
    assert_eq!(error.error_type(), "ShardUnfinished");
}

#[test]
fn events_parse_by_action() {
    let request = serde_json::to_value(manifest_request()).unwrap();
    let step = serde_json::json!({
        "action": "step", "request": request, "runId": "r",
        "progress": {"shardId": "shardId-000000000000", "records": 0, "delivered": 0,
            "filtered": 0, "failedRecords": 0, "failedBatches": 0, "invocations": 0,
            "functionErrors": 0, "dlqLocations": 0}
    });
    assert!(matches!(
        ReplayEvent::parse(&serde_json::to_vec(&step).unwrap()).unwrap(),
        ReplayEvent::Step { .. }
    ));
    let bad = serde_json::json!({"action": "plan", "request": {"source": {}}});
    let error = ReplayEvent::parse(&serde_json::to_vec(&bad).unwrap()).unwrap_err();
    assert!(error.message.contains("`type`"), "{error}");
}

#[test]
fn new_fields_are_validated_by_name() {
    let function = serde_json::json!({
        "source": {"type": "ARCHIVE", "bucket": "b", "stream": "orders", "from": 1700000000, "to": 1700003600},
        "target": {"type": "FUNCTION", "functionName": "target"},
        "dlq": {"type": "SQS", "queueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/dlq"},
        "output": {"bucket": "b"}
    });
    let stream = serde_json::json!({
        "source": {"type": "MANIFEST", "bucket": "b", "key": "scrapes/r/manifest.json"},
        "target": {"type": "STREAM", "stream": "orders-replay", "includeMetadata": true},
        "output": {"bucket": "b"}
    });
    let error = |base: &serde_json::Value, patch: &dyn Fn(&mut serde_json::Value)| {
        let mut value = base.clone();
        patch(&mut value);
        ReplayRequest::parse(&serde_json::to_vec(&value).unwrap()).unwrap_err()
    };
    ReplayRequest::parse(&serde_json::to_vec(&function).unwrap()).unwrap();
    ReplayRequest::parse(&serde_json::to_vec(&stream).unwrap()).unwrap();
    let e = error(&function, &|v| {
        v.as_object_mut().unwrap().remove("output");
    });
    assert_eq!(e.field, "output");
    let e = error(&function, &|v| {
        v.as_object_mut().unwrap().remove("dlq");
    });
    assert_eq!(e.field, "dlq");
    assert!(e.message.contains("\"SQS\""), "{e}");
    assert_eq!(
        error(&function, &|v| v["dlq"]["queueUrl"] = "dlq".into()).field,
        "dlq.queueUrl"
    );
    assert_eq!(
        error(&function, &|v| v["recordsPerSecond"] = 0.into()).field,
        "recordsPerSecond"
    );
    assert_eq!(
        error(&stream, &|v| v["target"]["speedup"] = (-1.0).into()).field,
        "target.speedup"
    );
    assert_eq!(
        error(&stream, &|v| v["target"]["separator"] = "".into()).field,
        "target.separator"
    );
    assert_eq!(
        error(&stream, &|v| v["target"]["stream"] = "no spaces".into()).field,
        "target.stream"
    );
    assert_eq!(
        error(&stream, &|v| v["dlq"] =
            serde_json::json!({"type": "S3", "bucket": "b"}))
        .field,
        "dlq"
    );
    assert_eq!(
        error(&stream, &|v| v["options"] =
            serde_json::json!({"BatchSize": 10}))
        .field,
        "options"
    );
    // FilterCriteria applies to streams too.
    let mut filtered = stream.clone();
    filtered["options"] = serde_json::json!({"FilterCriteria": {"Filters": [{"Pattern": "{\"data\": {\"kind\": [\"order\"]}}"}]}});
    ReplayRequest::parse(&serde_json::to_vec(&filtered).unwrap()).unwrap();
    let e = error(&stream, &|v| {
        v["source"] = serde_json::json!({"type": "SCRAPE", "request": {
            "stream": "orders", "start": {"type": "TRIM_HORIZON"}, "stop": {"type": "LATEST"},
            "output": {"bucket": "b"}, "pollBatchSize": 0}})
    });
    assert_eq!(e.field, "source.request.pollBatchSize");
    assert_eq!(
        error(&function, &|v| v["source"] = serde_json::json!({
            "type": "DYNAMODB", "table": "archive", "stream": "orders", "partitionKey": "",
        }))
        .field,
        "source.partitionKey"
    );
}

#[tokio::test]
async fn a_scrape_source_is_left_to_the_state_machine() {
    let request = ReplayRequest::parse(
        br#"{
            "source": {"type": "SCRAPE", "request": {"stream": "orders", "start": {"type": "TRIM_HORIZON"},
                       "stop": {"type": "LATEST"}, "output": {"bucket": "b"}}},
            "target": {"type": "FUNCTION", "functionName": "target"},
            "dlq": {"type": "S3", "bucket": "b"}
        }"#,
    )
    .unwrap();
    let error = replayer().plan(&request, "r", None).await.unwrap_err();
    assert_eq!(error.error_type(), "InvalidRequest");
    assert!(error.to_string().contains("state machine"), "{error}");
}

#[test]
fn lineage_groups_keep_related_shards_together_parents_first() {
    let shards: Vec<(String, Vec<String>)> = [
        ("shardId-0", vec![]),
        ("shardId-1", vec![]),
        ("shardId-2", vec![]),
        ("shardId-3", vec!["shardId-0"]),
        ("shardId-4", vec!["shardId-0"]),
        ("shardId-5", vec!["shardId-4", "shardId-2"]),
        // A parent outside the window links nothing.
        ("shardId-6", vec!["shardId-99"]),
    ]
    .into_iter()
    .map(|(id, parents)| {
        (
            id.to_owned(),
            parents.into_iter().map(String::from).collect(),
        )
    })
    .collect();
    assert_eq!(
        lineage_groups(&shards),
        vec![
            vec![
                "shardId-0",
                "shardId-2",
                "shardId-3",
                "shardId-4",
                "shardId-5"
            ],
            vec!["shardId-1"],
            vec!["shardId-6"],
        ]
    );
}

#[tokio::test]
async fn failed_batches_go_to_an_sqs_dlq_and_progress_to_the_output_bucket() {
    let (replayer, summary) = replay_poison_4(serde_json::json!(
        {"type": "SQS", "queueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/dlq"}
    ))
    .await;
    assert_eq!(summary.totals.counters.delivered, 9);
    assert_eq!(summary.totals.counters.failed_records, 1);
    assert_eq!(
        summary.dlq.as_deref(),
        Some("https://sqs.eu-west-1.amazonaws.com/123456789012/dlq")
    );
    let messages = replayer.queues.0.lock().unwrap().clone();
    assert_eq!(messages.len(), 1);
    let info = &messages[0].1.kinesis_batch_info;
    assert_eq!(
        (info.batch_size, info.start_sequence_number.as_str()),
        (1, a_seq(4).as_str())
    );
    assert!(
        messages[0].1.payload.is_none(),
        "SQS records carry no payload"
    );
    assert!(
        replayer
            .buckets
            .get("runs/run-1/shardId-000000000000/_progress.json")
            .await
            .is_ok()
    );
}

/// Issue 12, point 6: SNS, the mapping's third destination type, gets the
/// record the SQS destination sends. "You can configure any Amazon SNS
/// topic or Amazon SQS queue as a destination"
/// (https://docs.aws.amazon.com/lambda/latest/dg/kinesis-on-failure-destination.html).
#[tokio::test]
async fn failed_batches_go_to_an_sns_dlq_as_the_sqs_dlq_gets_them() {
    let topic = "arn:aws:sns:eu-west-1:123456789012:replay-dlq";
    let (replayer, summary) =
        replay_poison_4(serde_json::json!({"type": "SNS", "topicArn": topic})).await;
    assert_eq!(summary.totals.counters.delivered, 9);
    assert_eq!(summary.totals.counters.failed_records, 1);
    assert_eq!(summary.dlq.as_deref(), Some(topic));
    assert!(
        replayer.queues.0.lock().unwrap().is_empty(),
        "nothing to SQS"
    );
    let messages = replayer.topics.0.lock().unwrap().clone();
    assert_eq!(messages.len(), 1);
    let record = &messages[0].1;
    assert_eq!(
        (
            record.kinesis_batch_info.batch_size,
            record.kinesis_batch_info.start_sequence_number.as_str()
        ),
        (1, a_seq(4).as_str())
    );
    assert!(record.payload.is_none(), "as SQS: no payload");

    // Refused before any work, naming the field and what it accepts.
    for bad in [
        "replay-dlq",
        "arn:aws:sqs:eu-west-1:123456789012:replay-dlq",
        "arn:aws:sns:eu-west-1:1234:replay-dlq",
        // "an Amazon SNS FIFO topic" is an unsupported destination type
        // (https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-retain-records.html).
        "arn:aws:sns:eu-west-1:123456789012:replay-dlq.fifo",
    ] {
        let mut value = poison_4_request(serde_json::json!({"type": "SNS", "topicArn": topic}));
        value["dlq"]["topicArn"] = bad.into();
        let error = ReplayRequest::parse(&serde_json::to_vec(&value).unwrap()).unwrap_err();
        assert_eq!(error.field, "dlq.topicArn", "{bad}");
        assert!(
            error.message.contains("accepted values: an SNS topic ARN"),
            "{error}"
        );
    }
}

/// Issue 12, point 4: a live event's `invokeIdentityArn` is the consuming
/// function's execution role ("invokeIdentityArn":
/// "arn:aws:iam::123456789012:role/lambda-role" in the developer guide's
/// example event, https://docs.aws.amazon.com/lambda/latest/dg/with-kinesis.html):
/// the target's own role, looked up once per step, unless the request
/// names one.
#[tokio::test]
async fn events_name_the_targets_own_role_unless_the_request_names_one() {
    let mut replayer = replayer();
    replayer.targets.role = Some("arn:aws:iam::123456789012:role/target-role");
    let a = records("shardId-000000000000", 10, &[]);
    write_scrape(&replayer.buckets, &[("shardId-000000000000", a)], 5).await;
    let request = manifest_request();
    let summary = run_all(&replayer, &request).await;
    assert_eq!(summary.totals.counters.delivered, 10);
    assert_eq!(
        *replayer.targets.identities.lock().unwrap(),
        ["arn:aws:iam::123456789012:role/target-role".to_owned()].into()
    );
    // One shard, one step of several batches: one look-up.
    assert_eq!(*replayer.targets.lookups.lock().unwrap(), 1);
    assert!(*replayer.targets.invokes.lock().unwrap() >= 3);

    let mut replayer_named = self::replayer();
    replayer_named.targets.role = Some("arn:aws:iam::123456789012:role/target-role");
    let a = records("shardId-000000000000", 10, &[]);
    write_scrape(&replayer_named.buckets, &[("shardId-000000000000", a)], 5).await;
    let mut value = serde_json::to_value(&request).unwrap();
    value["target"]["invokeIdentityArn"] = "arn:aws:iam::123456789012:role/named".into();
    let named = ReplayRequest::parse(&serde_json::to_vec(&value).unwrap()).unwrap();
    run_all(&replayer_named, &named).await;
    assert_eq!(
        *replayer_named.targets.identities.lock().unwrap(),
        ["arn:aws:iam::123456789012:role/named".to_owned()].into()
    );
}

/// Ten records of one shard, the fifth poison, in a scrape; replayed with
/// bisection and no retries into `dlq`.
fn poison_4_request(dlq: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "source": {"type": "MANIFEST", "bucket": "bucket", "key": "scrapes/run/manifest.json"},
        "target": {"type": "FUNCTION", "functionName": "target"},
        "options": {"BatchSize": 4, "BisectBatchOnFunctionError": true, "MaximumRetryAttempts": 0},
        "dlq": dlq,
        "output": {"bucket": "bucket", "prefix": "runs"}
    })
}

async fn replay_poison_4(dlq: serde_json::Value) -> (TestReplayer, ReplaySummary) {
    let replayer = replayer();
    let a = records("shardId-000000000000", 10, &[4]);
    write_scrape(&replayer.buckets, &[("shardId-000000000000", a)], 5).await;
    let request = poison_4_request(dlq);
    let request = ReplayRequest::parse(&serde_json::to_vec(&request).unwrap()).unwrap();
    let summary = run_all(&replayer, &request).await;
    (replayer, summary)
}

fn a_seq(i: usize) -> String {
    records("shardId-000000000000", i + 1, &[])[i]
        .sequence_number
        .to_string()
}

#[tokio::test]
async fn a_stream_target_puts_every_record_once_in_key_order_in_the_envelope() {
    let mut replayer = replayer();
    // Every third entry offered is throttled and retried.
    replayer.streams.fake.nth = 3;
    let a = records("shardId-000000000000", 40, &[]);
    let b = records("shardId-000000000001", 25, &[]);
    write_two_shards(&replayer.buckets, &a, &b, 9).await;
    let request = ReplayRequest::parse(
        br#"{
            "source": {"type": "MANIFEST", "bucket": "bucket", "key": "scrapes/run/manifest.json"},
            "target": {"type": "STREAM", "stream": "orders-copy", "includeMetadata": true, "separator": "\u0001"},
            "output": {"bucket": "bucket"}
        }"#,
    )
    .unwrap();
    let summary = run_all(&replayer, &request).await;
    assert_eq!(summary.totals.records, 65);
    assert_eq!(summary.totals.counters.delivered, 65);
    assert_eq!(summary.target, "orders-copy");
    assert_eq!(*replayer.streams.arns.lock().unwrap(), ["orders-copy"; 2]);
    assert!(summary.dlq.is_none());
    let stored = replayer.streams.fake.stored.lock().unwrap().clone();
    assert_eq!(stored.len(), 65, "each record once");
    // Per partition key, the original order.
    for key in ["key-0", "key-1", "key-2"] {
        let got: Vec<String> = stored
            .iter()
            .filter(|e| e.partition_key == key)
            .map(|e| {
                let text = String::from_utf8(e.data.clone()).unwrap();
                let mut parts = text.splitn(3, '\u{1}');
                assert_eq!(parts.next(), Some(""));
                let metadata: serde_json::Value =
                    serde_json::from_str(parts.next().unwrap()).unwrap();
                format!(
                    "{}/{}/{}",
                    metadata["originalShardId"].as_str().unwrap(),
                    metadata["originalSequenceNumber"].as_str().unwrap(),
                    parts.next().unwrap()
                )
            })
            .collect();
        let want: Vec<String> = a
            .iter()
            .chain(&b)
            .filter(|r| r.partition_key == key)
            .map(|r| {
                format!(
                    "{}/{}/{}",
                    r.shard_id,
                    r.sequence_number,
                    String::from_utf8_lossy(&r.data)
                )
            })
            .collect();
        assert_eq!(got, want, "{key}");
    }
}

#[tokio::test]
async fn a_sped_up_stream_replay_keeps_the_order_and_resumes_its_pace() {
    let replayer = replayer();
    // Records one second apart, replayed 100 times faster.
    let a = records("shardId-000000000000", 6, &[]);
    write_scrape(&replayer.buckets, &[("shardId-000000000000", a.clone())], 6).await;
    let request = ReplayRequest::parse(
        br#"{
            "source": {"type": "MANIFEST", "bucket": "bucket", "key": "scrapes/run/manifest.json"},
            "target": {"type": "STREAM", "stream": "orders-copy", "speedup": 100},
            "output": {"bucket": "bucket"},
            "recordsPerSecond": 1000
        }"#,
    )
    .unwrap();
    let progress = first_step(&replayer, &request, far()).await;
    assert!(progress.done);
    let pace = progress.pace.expect("the pace's origin is kept");
    assert_eq!(pace.arrival, a[0].approximate_arrival_timestamp);
    let stored: Vec<Vec<u8>> = replayer
        .streams
        .fake
        .stored
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.data.clone())
        .collect();
    let want: Vec<Vec<u8>> = a.iter().map(|r| r.data.clone()).collect();
    assert_eq!(stored, want);
}

#[tokio::test]
async fn a_stream_replay_that_must_wait_past_its_deadline_ends_the_step_in_place() {
    let replayer = replayer();
    // The second record is due 1000 s after the first: the step can't wait.
    let mut a = records("shardId-000000000000", 2, &[]);
    a[1].approximate_arrival_timestamp = ArrivalTime::from_epoch_millis(1_700_001_000_000);
    write_scrape(&replayer.buckets, &[("shardId-000000000000", a.clone())], 6).await;
    let request = ReplayRequest::parse(
        br#"{
            "source": {"type": "MANIFEST", "bucket": "bucket", "key": "scrapes/run/manifest.json"},
            "target": {"type": "STREAM", "stream": "orders-copy", "speedup": 1},
            "output": {"bucket": "bucket"}
        }"#,
    )
    .unwrap();
    let progress = first_step(
        &replayer,
        &request,
        Instant::now() + std::time::Duration::from_secs(3),
    )
    .await;
    assert!(!progress.done);
    assert_eq!(progress.last, Some(Position::of(&a[0])));
    assert_eq!(replayer.streams.fake.stored.lock().unwrap().len(), 1);
}

/// Shard 0 of a scrape of 12 records in one chunk, record 6 poison.
async fn poisoned_at_six() -> (TestReplayer, Vec<Record>) {
    let replayer = replayer();
    let a = records("shardId-000000000000", 12, &[6]);
    write_scrape(
        &replayer.buckets,
        &[("shardId-000000000000", a.clone())],
        12,
    )
    .await;
    (replayer, a)
}

#[tokio::test]
async fn a_step_out_of_time_in_endless_retries_keeps_the_settled_records_and_stops() {
    let (replayer, a) = poisoned_at_six().await;
    // MaximumRetryAttempts -1: the poison batch is retried until the step's
    // time runs out; the step then ends before its deadline, having settled
    // the batch before it.
    let request = ReplayRequest::parse(
        br#"{
            "source": {"type": "MANIFEST", "bucket": "bucket", "key": "scrapes/run/manifest.json"},
            "target": {"type": "FUNCTION", "functionName": "target"},
            "options": {"BatchSize": 4},
            "dlq": {"type": "S3", "bucket": "bucket"}
        }"#,
    )
    .unwrap();
    let deadline = Instant::now() + std::time::Duration::from_millis(600);
    let progress = first_step(&replayer, &request, deadline).await;
    assert!(!progress.done);
    assert!(Instant::now() <= deadline, "the step ended in time");
    assert_eq!(progress.last, Some(Position::of(&a[3])));
    assert_eq!(progress.records, 4);
    assert_eq!(progress.counters.delivered, 4);
    assert!(progress.counters.function_errors >= 1);
    assert_eq!(progress.counters.failed_records, 0);
}

#[tokio::test]
async fn validate_checks_the_whole_request_before_any_work() {
    let replayer = replayer();
    let request = serde_json::to_value(manifest_request()).unwrap();
    let event = ReplayEvent::parse(
        &serde_json::to_vec(&serde_json::json!({"action": "validate", "request": request}))
            .unwrap(),
    )
    .unwrap();
    let answer = replayer.handle(event, far(), "r").await.unwrap();
    assert_eq!(
        serde_json::to_value(answer).unwrap(),
        serde_json::json!({"valid": true})
    );
    // Nothing was read or invoked.
    assert!(replayer.buckets.0.objects().is_empty());
    assert_eq!(*replayer.targets.invokes.lock().unwrap(), 0);
    let mut bad = request.clone();
    bad["options"]["BatchSize"] = 0.into();
    let error = ReplayEvent::parse(
        &serde_json::to_vec(&serde_json::json!({"action": "validate", "request": bad})).unwrap(),
    )
    .unwrap_err();
    assert_eq!(error.field, "options.BatchSize");
}

#[test]
fn rejected_invokes_are_not_retried_by_the_state_machine() {
    let rejected = ReplayError::Delivery(DeliveryError::Invoke(InvokeError::Fatal {
        function: "target".into(),
        source: "AccessDeniedException: denied".into(),
    }));
    assert_eq!(rejected.error_type(), "InvokeRejected");
    let throttled = ReplayError::Delivery(DeliveryError::Invoke(InvokeError::Retryable {
        function: "target".into(),
        source: "TooManyRequestsException".into(),
    }));
    assert_eq!(throttled.error_type(), "InvokeFailed");
    let asl: serde_json::Value =
        serde_json::from_str(include_str!("../../../../statemachines/replay.asl.json")).unwrap();
    let step = &asl["States"]["ReplayGroups"]["ItemProcessor"]["States"]["ReplayShards"]["ItemProcessor"]
        ["States"]["Step"];
    let retried: Vec<&str> = step["Retry"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["ErrorEquals"].as_array().unwrap())
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(retried.contains(&"InvokeFailed"));
    assert!(!retried.contains(&"InvokeRejected"));
    assert!(!retried.contains(&"InvalidRequest"));
}

#[tokio::test]
async fn a_failed_step_is_retried_from_its_last_settled_piece() {
    let replayer = replayer();
    let a = records("shardId-000000000000", 20, &[]);
    write_scrape(
        &replayer.buckets,
        &[("shardId-000000000000", a.clone())],
        20,
    )
    .await;
    let request = manifest_request(); // BatchSize 4
    // The third invoke breaks: two pieces (8 records) were settled.
    let start = first_step_broken_at(&replayer, &request, 3).await;
    // The state machine retries the step with the same continuation.
    let progress = replayer
        .step(&request, "run-1", &start, far())
        .await
        .unwrap();
    assert!(progress.done);
    assert_eq!(progress.records, 20);
    assert_eq!(progress.counters.delivered, 20);
    let got = accepted(&replayer.targets);
    let want: Vec<_> = a
        .iter()
        .map(|r| (r.shard_id.clone(), r.sequence_number.to_string()))
        .collect();
    assert_eq!(got, want, "each record accepted once");
}

/// The state machine's path: `plan` stores the groups as the Map's items,
/// each step runs on an item read back from there, and `summary` reads the
/// plan back and writes the per-shard summary to S3, answering only the
/// totals and where it is.
#[tokio::test]
async fn the_state_machine_plan_and_summary_go_through_s3() {
    let replayer = replayer();
    let a = records("shardId-000000000000", 23, &[5]);
    let b = records("shardId-000000000001", 9, &[]);
    write_two_shards(&replayer.buckets, &a, &b, 7).await;
    let request = manifest_request();
    let plan = match replayer
        .handle(
            ReplayEvent::Plan {
                request: request.clone(),
            },
            far(),
            "run-1",
        )
        .await
        .unwrap()
    {
        ReplayOutput::Plan(plan) => plan,
        other => panic!("{other:?}"),
    };
    assert_eq!((plan.shards, plan.groups), (2, 2));
    assert_eq!(plan.items.key, "dlq/replays/run-1/_plan.json");
    let body = replayer.buckets.get(&plan.items.key).await.unwrap();
    // What ItemReader (InputType JSON) reads: an array of groups.
    let groups: Vec<Vec<ShardReplay>> = serde_json::from_slice(&body).unwrap();
    assert_eq!(groups.len(), 2);
    for progress in groups.iter().flatten() {
        let mut progress = progress.clone();
        while !progress.done {
            progress = replayer
                .step(&request, "run-1", &progress, far())
                .await
                .unwrap();
        }
    }
    let summary = match replayer
        .handle(
            ReplayEvent::Summary {
                request: request.clone(),
                run_id: "run-1".into(),
                plan: plan.items.clone(),
            },
            far(),
            "run-1",
        )
        .await
        .unwrap()
    {
        ReplayOutput::Summary(summary) => summary,
        other => panic!("{other:?}"),
    };
    let whole = replayer
        .summary(
            &request,
            "run-1",
            &["shardId-000000000000".into(), "shardId-000000000001".into()],
        )
        .await
        .unwrap();
    assert_eq!(summary.totals, whole.totals);
    assert_eq!(summary.totals.records, 32);
    assert_eq!(summary.key, "dlq/replays/run-1/summary.json");
    let stored: SummaryOutput =
        serde_json::from_slice(&replayer.buckets.get(&summary.key).await.unwrap()).unwrap();
    assert_eq!(stored, summary);
    assert_eq!(
        summary.pages,
        vec!["dlq/replays/run-1/_summary/00000.jsonl"]
    );
    let page = replayer.buckets.get(&summary.pages[0]).await.unwrap();
    let shards: Vec<ShardSummary> = serde_json::Deserializer::from_slice(&page)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(shards, whole.shards);
    // The answer reads as a summary of no shards (the demo reads it so).
    let read: ReplaySummary =
        serde_json::from_value(serde_json::to_value(&summary).unwrap()).unwrap();
    assert_eq!((read.totals, read.shards.len()), (whole.totals, 0));
}

/// A summary of more shards than a page holds is written page by page, in
/// the plan's order, and totals every shard.
#[tokio::test]
async fn a_summary_is_written_a_page_of_shards_at_a_time() {
    let replayer = replayer();
    let request = manifest_request();
    let folder = request.progress_folder("run-1");
    let shards = 2 * SUMMARY_PAGE + 5;
    let groups: Vec<Vec<ShardReplay>> = (0..shards)
        .map(|i| vec![ShardReplay::new(format!("shardId-{i:012}"))])
        .collect();
    for group in &groups {
        let done = ShardReplay {
            records: 2,
            done: true,
            ..group[0].clone()
        };
        save(
            &replayer.buckets,
            format!("{folder}/{}/_progress.json", done.shard_id),
            &done,
        )
        .await
        .unwrap();
    }
    let plan = ItemsLocation {
        bucket: "bucket".into(),
        key: format!("{folder}/_plan.json"),
    };
    write_items(&replayer.buckets, &plan.key, &groups)
        .await
        .unwrap();
    let summary = replayer
        .write_summary(&request, "run-1", &plan)
        .await
        .unwrap();
    assert_eq!(summary.totals.shards, shards as u64);
    assert_eq!(summary.totals.records, 2 * shards as u64);
    assert_eq!(summary.pages.len(), 3);
    let mut seen = Vec::new();
    for (n, key) in summary.pages.iter().enumerate() {
        let page = replayer.buckets.get(key).await.unwrap();
        let lines: Vec<ShardSummary> = serde_json::Deserializer::from_slice(&page)
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(lines.len(), if n < 2 { SUMMARY_PAGE } else { 5 }, "{key}");
        seen.extend(lines.into_iter().map(|s| s.progress.shard_id));
    }
    let planned: Vec<String> = groups
        .iter()
        .flatten()
        .map(|s| s.shard_id.clone())
        .collect();
    assert_eq!(seen, planned);
    // A shard without final progress fails the summary, naming it.
    replayer
        .buckets
        .delete(&format!(
            "{folder}/shardId-{:012}/_progress.json",
            shards - 1
        ))
        .await
        .unwrap();
    let error = replayer
        .write_summary(&request, "run-1", &plan)
        .await
        .unwrap_err();
    assert_eq!(error.error_type(), "ShardUnfinished");
    assert!(
        error
            .to_string()
            .contains(&format!("shardId-{:012}", shards - 1))
    );
}

/// Issue 12 point 1: the DynamoDB archive keeps user records only, so a
/// function target must opt in to them; Validate names the field and its
/// values before any work. A stream target puts user records anyway.
#[test]
fn a_dynamodb_replay_to_a_function_must_opt_in_to_user_records() {
    let mut request = serde_json::json!({
        "source": {"type": "DYNAMODB", "table": "archive", "stream": "orders", "partitionKey": "k"},
        "target": {"type": "FUNCTION", "functionName": "target"},
        "dlq": {"type": "S3", "bucket": "b"}
    });
    let err = ReplayRequest::parse(&serde_json::to_vec(&request).unwrap()).unwrap_err();
    assert_eq!(err.field, "deliver");
    assert!(
        err.message.contains("KINESIS_RECORDS") && err.message.contains("USER_RECORDS"),
        "{}",
        err.message
    );
    request["deliver"] = "USER_RECORDS".into();
    let parsed = ReplayRequest::parse(&serde_json::to_vec(&request).unwrap()).unwrap();
    assert_eq!(
        parsed.deliver,
        crate::pipeline::deaggregate::Deliver::UserRecords
    );
    request["deliver"] = "SOME".into();
    let err = ReplayRequest::parse(&serde_json::to_vec(&request).unwrap()).unwrap_err();
    assert!(err.to_string().contains("deliver"), "{err}");

    let to_stream = serde_json::json!({
        "source": {"type": "DYNAMODB", "table": "archive", "stream": "orders", "partitionKey": "k"},
        "target": {"type": "STREAM", "stream": "copy"},
        "output": {"bucket": "b"}
    });
    ReplayRequest::parse(&serde_json::to_vec(&to_stream).unwrap()).unwrap();
}
/// `TumblingWindowInSeconds` is the mapping's option (0 to 900) and a
/// FUNCTION target's; a STREAM target refuses it like the other delivery
/// options.
#[test]
fn a_request_may_name_a_tumbling_window() {
    let mut request = serde_json::json!({
        "source": {"type": "MANIFEST", "bucket": "b", "key": "scrapes/r/manifest.json"},
        "target": {"type": "FUNCTION", "functionName": "target"},
        "options": {"TumblingWindowInSeconds": 120},
        "dlq": {"type": "S3", "bucket": "b"}
    });
    let parsed = ReplayRequest::parse(&serde_json::to_vec(&request).unwrap()).unwrap();
    assert_eq!(parsed.options.tumbling_window(), Some(120));
    request["options"]["TumblingWindowInSeconds"] = 901.into();
    let e = ReplayRequest::parse(&serde_json::to_vec(&request).unwrap()).unwrap_err();
    assert_eq!(e.field, "options.TumblingWindowInSeconds");
    assert!(e.message.contains("0 (no window) or 1 to 900"), "{e}");
    let stream = serde_json::json!({
        "source": {"type": "MANIFEST", "bucket": "b", "key": "scrapes/r/manifest.json"},
        "target": {"type": "STREAM", "stream": "orders-replay"},
        "options": {"TumblingWindowInSeconds": 120},
        "output": {"bucket": "b"}
    });
    let e = ReplayRequest::parse(&serde_json::to_vec(&stream).unwrap()).unwrap_err();
    assert_eq!(e.field, "options");
}

/// `maxStepSeconds` bounds a step as a short function timeout would, however
/// far the invocation's deadline: the step stops in time, its settled
/// records kept, and the field is refused out of its range.
#[tokio::test]
async fn max_step_seconds_ends_a_step_before_the_deadline() {
    let (replayer, a) = poisoned_at_six().await;
    // The poison batch is retried endlessly: only the step's bound ends it.
    let mut request = serde_json::json!({
        "source": {"type": "MANIFEST", "bucket": "bucket", "key": "scrapes/run/manifest.json"},
        "target": {"type": "FUNCTION", "functionName": "target"},
        "options": {"BatchSize": 4},
        "dlq": {"type": "S3", "bucket": "bucket"},
        "maxStepSeconds": 1
    });
    let parsed = ReplayRequest::parse(&serde_json::to_vec(&request).unwrap()).unwrap();
    let started = Instant::now();
    let progress = first_step(&replayer, &parsed, far()).await;
    assert!(!progress.done);
    assert!(started.elapsed() <= std::time::Duration::from_secs(1));
    assert_eq!(progress.last, Some(Position::of(&a[3])));
    for refused in [0, 901] {
        request["maxStepSeconds"] = refused.into();
        let e = ReplayRequest::parse(&serde_json::to_vec(&request).unwrap()).unwrap_err();
        assert_eq!(e.field, "maxStepSeconds");
        assert!(e.message.contains("accepted values: 1 to 900"), "{e}");
    }
}

/// The step's work beside a piece that is out: the next piece made ready,
/// the next page read.
mod ahead;

/// `ParallelizationFactor` lanes that don't wait for each other, and steps
/// that end while some are ahead.
mod lanes;
