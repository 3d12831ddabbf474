//! The replay state machine, created from template.yaml's own definition
//! (`ReplayStateMachine`), runs the real replay function (and, for a SCRAPE
//! source, the real scraper) on the local stack with shard limits enforced,
//! into the `target` fixture function: a Kinesis consumer that keeps only
//! the batches it accepts and fails any batch holding a record marked
//! `POISON`. With `BisectBatchOnFunctionError` and a retry, every unmarked
//! record must be acknowledged by exactly one successful invocation, in
//! sequence order per shard, and exactly the marked records must be in the
//! S3 DLQ, one batch each, in the mapping's on-failure format.
//!
//! Re-injection: the archive replayed onto a fresh stream; reading that
//! stream back finds every record once, its envelope decodable, and each
//! partition key's records in their original order.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_kinesis::types::ShardIteratorType;
use rewind_engine::model::archive::ArchiveLayout;
use rewind_engine::model::record::{Record, decode_base64};
use rewind_engine::model::seqno::SequenceNumber;
use rewind_engine::sinks::dlq::FailureRecord;
use rewind_engine::sinks::s3_archive::archive_batch;
use rewind_engine::store::S3Store;
use rewind_local::proxy::ACCOUNT;
use rewind_local::sdk::s3_client;
use rewind_local::statemachine::{self, Context};
use rewind_tests::{
    create_stream, execute, get_object, put_all, record, reshard, target_batches, unique,
};
use serde_json::{Value, json};

use crate::stack;

/// (shard, sequence number) of a record, and its data.
pub(crate) type Seen = BTreeMap<(String, SequenceNumber), Vec<u8>>;

pub(crate) struct Replay {
    pub(crate) kinesis: aws_sdk_kinesis::Client,
    pub(crate) s3: aws_sdk_s3::Client,
    pub(crate) sfn: aws_sdk_sfn::Client,
    pub(crate) machine: String,
    pub(crate) bucket: String,
}

impl Replay {
    pub(crate) async fn new(name: &str) -> anyhow::Result<Self> {
        let stack = stack();
        let config = stack.sdk_config().await;
        let sfn = aws_sdk_sfn::Client::new(&config);
        let s3 = s3_client(&config);
        let bucket = unique(name).to_lowercase();
        s3.create_bucket().bucket(&bucket).send().await?;
        let template = stack.layout.root.join("template.yaml");
        let definition = statemachine::load(&template, "ReplayStateMachine", &Context::default())?;
        let machine = statemachine::create(&sfn, &unique(name), &definition).await?;
        Ok(Self {
            kinesis: aws_sdk_kinesis::Client::new(&config),
            s3,
            sfn,
            machine,
            bucket,
        })
    }

    pub(crate) async fn run(&self, name: &str, input: &Value) -> anyhow::Result<Value> {
        let output = execute(
            &self.sfn,
            &self.machine,
            name,
            input,
            Duration::from_secs(300),
        )
        .await?;
        anyhow::ensure!(output["runId"] == json!(name), "{output}");
        Ok(output)
    }

    /// The failure records of a run's S3 DLQ, by the marked record each
    /// holds; each must hold exactly one record, with the full event.
    async fn dlq(&self, run: &str, stream_arn: &str) -> anyhow::Result<Seen> {
        let listed = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("dlq/aws/lambda/{run}/"))
            .send()
            .await?;
        let mut seen = Seen::new();
        for object in listed.contents() {
            let key = object.key().unwrap_or_default();
            let record: FailureRecord =
                serde_json::from_slice(&get_object(&self.s3, &self.bucket, key).await?)?;
            let info = &record.kinesis_batch_info;
            anyhow::ensure!(info.batch_size == 1, "{key}: {info:?}");
            anyhow::ensure!(info.stream_arn == stream_arn, "{key}: {info:?}");
            anyhow::ensure!(
                key.starts_with(&format!("dlq/aws/lambda/{run}/{}/", info.shard_id)),
                "{key}"
            );
            let event: Value = serde_json::from_str(record.payload.as_deref().unwrap_or("{}"))?;
            let records = event["Records"].as_array().cloned().unwrap_or_default();
            anyhow::ensure!(records.len() == 1, "{key}: {event}");
            let data = decode_base64(records[0]["kinesis"]["data"].as_str().unwrap_or_default())?;
            anyhow::ensure!(
                records[0]["kinesis"]["sequenceNumber"] == json!(info.start_sequence_number),
                "{key}"
            );
            seen.insert(
                (
                    info.shard_id.clone(),
                    SequenceNumber::parse(&info.start_sequence_number)?,
                ),
                data,
            );
        }
        Ok(seen)
    }
}

/// What the `target` fixture accepted for `stream`: every record once (a
/// duplicate fails the test), and in sequence order per shard, or per shard
/// and partition key with `per_key` (a `ParallelizationFactor` above 1 keeps
/// only each key's order, as the mapping does).
pub(crate) fn accepted(stream: &str, per_key: bool) -> anyhow::Result<Seen> {
    let mut seen = Seen::new();
    let mut last: BTreeMap<String, SequenceNumber> = BTreeMap::new();
    for (shard, sequence, record) in deliveries(stream)? {
        let event_id = record["eventID"].as_str().unwrap_or_default();
        let lane = if per_key {
            format!("{shard} {}", record["partitionKey"])
        } else {
            shard.clone()
        };
        anyhow::ensure!(
            record["sequenceNumber"] == json!(sequence.to_string()),
            "{record}"
        );
        if let Some(previous) = last.get(&lane) {
            anyhow::ensure!(
                *previous < sequence,
                "{lane}: {sequence} accepted after {previous}"
            );
        }
        last.insert(lane, sequence.clone());
        let data = decode_base64(record["data"].as_str().unwrap_or_default())?;
        anyhow::ensure!(
            seen.insert((shard, sequence), data).is_none(),
            "{event_id} accepted twice"
        );
    }
    Ok(seen)
}

/// Every record the `target` fixture accepted for `stream`, in the order
/// it accepted them: shard and sequence number (from `eventID`) and the
/// event record.
pub(crate) fn deliveries(stream: &str) -> anyhow::Result<Vec<(String, SequenceNumber, Value)>> {
    Ok(target_batches(&stack().layout, stream)?
        .into_iter()
        .flat_map(|batch| batch.records)
        .collect())
}

fn is_marked(data: &[u8]) -> bool {
    data.starts_with(b"POISON")
}

/// Splits `records` into (unmarked, marked).
fn split(records: &Seen) -> (Seen, Seen) {
    records
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .partition(|(_, data)| !is_marked(data))
}

/// Puts `count` records on `stream`, every `poison_every`th marked; returns
/// what the stream accepted.
async fn put(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    batch: usize,
    count: usize,
    poison_every: usize,
) -> anyhow::Result<Seen> {
    let mut seen = Seen::new();
    let pending: Vec<(String, Vec<u8>)> = (0..count)
        .map(|n| {
            let data = if n % poison_every == poison_every / 2 {
                format!("POISON batch {batch} record {n}")
            } else {
                format!("{{\"batch\":{batch},\"record\":{n}}}")
            };
            (format!("key-{}", n % 11), data.into_bytes())
        })
        .collect();
    for put in put_all(kinesis, stream, pending).await? {
        seen.insert((put.shard, put.sequence), put.data);
    }
    Ok(seen)
}

#[tokio::test]
async fn a_scrape_request_is_scraped_then_replayed_across_a_reshard() -> anyhow::Result<()> {
    let replay = Replay::new("replay-scrape").await?;
    let stream = unique("replay-scrape");
    create_stream(&replay.kinesis, &stream, 2).await?;
    let mut put_records = put(&replay.kinesis, &stream, 0, 45, 13).await?;
    reshard(&replay.kinesis, &stream, 4).await?;
    put_records.extend(put(&replay.kinesis, &stream, 1, 45, 13).await?);

    let run = unique("run");
    let input = json!({
        "source": {"type": "SCRAPE", "request": {
            "stream": stream,
            "start": {"type": "TRIM_HORIZON"},
            "stop": {"type": "LATEST"},
            "pollBatchSize": 25,
            "maxEmptyPolls": 2,
            "output": {"bucket": replay.bucket, "prefix": "scrapes"}
        }},
        "target": {"type": "FUNCTION", "functionName": "target"},
        "options": {"BatchSize": 10, "BisectBatchOnFunctionError": true, "MaximumRetryAttempts": 1},
        "dlq": {"type": "S3", "bucket": replay.bucket, "prefix": "dlq"},
        "maxConcurrency": 2
    });
    let output = replay.run(&run, &input).await?;
    let stream_arn = format!("arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/{stream}");
    assert_eq!(output["streamArn"], json!(stream_arn), "{output}");
    assert_eq!(
        output["scrape"]["key"],
        json!(format!("scrapes/replay={run}/manifest.json")),
        "{output}"
    );

    let (unmarked, marked) = split(&put_records);
    assert!(!marked.is_empty() && marked.len() < put_records.len());
    let got = accepted(&stream, false)?;
    assert_eq!(got, unmarked, "every unmarked record acknowledged once");
    assert_eq!(replay.dlq(&run, &stream_arn).await?, marked);

    let totals = &output["summary"]["totals"];
    assert_eq!(totals["records"], json!(put_records.len()), "{output}");
    assert_eq!(totals["delivered"], json!(unmarked.len()), "{output}");
    assert_eq!(totals["failedRecords"], json!(marked.len()), "{output}");
    assert_eq!(totals["dlqLocations"], json!(marked.len()), "{output}");
    assert_eq!(totals["shards"], json!(6), "{output}");
    assert_eq!(
        output["summary"]["dlq"],
        json!(format!("s3://{}/dlq/aws/lambda/{run}", replay.bucket))
    );
    Ok(())
}

/// Records of two shards, one a second apart from `t0` (epoch ms), every
/// `poison_every`th marked; a key's records all in one shard.
pub(crate) fn archived_records(
    stream: &str,
    t0: i64,
    per_shard: usize,
    poison_every: usize,
) -> Vec<Record> {
    let mut records = Vec::new();
    for shard in 0..2 {
        for n in 0..per_shard {
            let data = if n % poison_every == poison_every / 2 {
                format!("POISON {shard}/{n}")
            } else {
                format!("{{\"shard\":{shard},\"n\":{n}}}")
            };
            records.push(record(
                stream,
                &format!("shardId-00000000000{shard}"),
                &format!(
                    "4965662637242791438523726206339647815341865821830{:06}",
                    n * 7 + 1
                ),
                format!("key-{shard}-{}", n % 5),
                t0 + n as i64 * 1000,
                data.into_bytes(),
            ));
        }
    }
    records
}

pub(crate) async fn archive(replay: &Replay, records: &[Record]) -> anyhow::Result<()> {
    let store = S3Store::new(replay.s3.clone(), &replay.bucket);
    let outcome = archive_batch(&store, &ArchiveLayout::default(), records).await;
    anyhow::ensure!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    Ok(())
}

pub(crate) fn seen(records: &[&Record]) -> Seen {
    records
        .iter()
        .map(|r| {
            (
                (r.shard_id.clone(), r.sequence_number.clone()),
                r.data.clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_archive_window_is_replayed_with_exactly_the_marked_records_in_the_dlq()
-> anyhow::Result<()> {
    let replay = Replay::new("replay-archive").await?;
    let stream = unique("replay-archive");
    let t0 = 1_732_233_600_000;
    let records = archived_records(&stream, t0, 40, 9);
    archive(&replay, &records).await?;
    // The window leaves out each shard's first 5 and last 5 records.
    let (from, to) = (t0 / 1000 + 5, t0 / 1000 + 35);
    let window: Vec<&Record> = records
        .iter()
        .filter(|r| {
            let t = r.approximate_arrival_timestamp.epoch_millis() / 1000;
            t >= from && t < to
        })
        .collect();

    let run = unique("run");
    let input = json!({
        "source": {"type": "ARCHIVE", "bucket": replay.bucket, "stream": stream, "from": from, "to": to},
        "target": {"type": "FUNCTION", "functionName": "target"},
        "options": {"BatchSize": 7, "BisectBatchOnFunctionError": true, "MaximumRetryAttempts": 0,
                    "FunctionResponseTypes": ["ReportBatchItemFailures"], "ParallelizationFactor": 2},
        "dlq": {"type": "S3", "bucket": replay.bucket}
    });
    let output = replay.run(&run, &input).await?;
    let stream_arn = format!("arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/{stream}");
    let (unmarked, marked) = split(&seen(&window));
    assert!(!marked.is_empty());
    assert_eq!(accepted(&stream, true)?, unmarked);
    assert_eq!(replay.dlq(&run, &stream_arn).await?, marked);
    let totals = &output["summary"]["totals"];
    assert_eq!(totals["records"], json!(window.len()), "{output}");
    assert_eq!(totals["delivered"], json!(unmarked.len()), "{output}");
    assert_eq!(output["scrape"], Value::Null, "{output}");
    Ok(())
}

/// Issue 12 on the local stack: failed batches reach an SNS topic (read
/// through an SQS subscription) as the SQS destination sends them, each
/// record as AWS writes it for a function error
/// (https://docs.aws.amazon.com/lambda/latest/dg/kinesis-on-failure-destination.html):
/// the request id of the invocation it describes (the endpoint's
/// `x-amzn-RequestId`), the full function ARN, `functionError`
/// `Unhandled`. The events name the target's own execution role.
#[tokio::test]
async fn failed_batches_reach_an_sns_topic_as_aws_writes_them() -> anyhow::Result<()> {
    let replay = Replay::new("replay-sns").await?;
    let config = stack().sdk_config().await;
    let sns = aws_sdk_sns::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let topic_arn = sns
        .create_topic()
        .name(unique("replay-dlq"))
        .send()
        .await?
        .topic_arn
        .unwrap_or_default();
    let queue_url = sqs
        .create_queue()
        .queue_name(unique("replay-dlq-sub"))
        .send()
        .await?
        .queue_url
        .unwrap_or_default();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .cloned()
        })
        .unwrap_or_default();
    sns.subscribe()
        .topic_arn(&topic_arn)
        .protocol("sqs")
        .endpoint(&queue_arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await?;

    let stream = unique("replay-sns");
    let t0 = 1_732_250_000_000;
    let records = archived_records(&stream, t0, 20, 7);
    archive(&replay, &records).await?;
    let run = unique("run");
    let input = json!({
        "source": {"type": "ARCHIVE", "bucket": replay.bucket, "stream": stream,
                   "from": t0 / 1000, "to": t0 / 1000 + 3600},
        "target": {"type": "FUNCTION", "functionName": "target"},
        "options": {"BatchSize": 5, "BisectBatchOnFunctionError": true, "MaximumRetryAttempts": 0},
        "dlq": {"type": "SNS", "topicArn": topic_arn},
        "output": {"bucket": replay.bucket, "prefix": "runs"}
    });
    let output = replay.run(&run, &input).await?;
    let all: Vec<&Record> = records.iter().collect();
    let (unmarked, marked) = split(&seen(&all));
    assert!(!marked.is_empty());
    assert_eq!(accepted(&stream, false)?, unmarked);
    assert_eq!(output["summary"]["dlq"], json!(topic_arn), "{output}");

    let mut dead = Seen::new();
    let mut request_ids = BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while dead.len() < marked.len() && std::time::Instant::now() < deadline {
        let messages = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await?;
        for message in messages.messages() {
            let body = message.body().unwrap_or_default();
            let record: FailureRecord = serde_json::from_str(body)?;
            let context = &record.request_context;
            anyhow::ensure!(context.request_id.len() == 36, "{body}");
            request_ids.insert(context.request_id.clone());
            anyhow::ensure!(
                context.function_arn
                    == format!("arn:aws:lambda:us-east-1:{ACCOUNT}:function:target"),
                "{body}"
            );
            let response = record.response_context.as_ref();
            anyhow::ensure!(
                response.and_then(|r| r.function_error.as_deref()) == Some("Unhandled"),
                "{body}"
            );
            anyhow::ensure!(record.payload.is_none(), "{body}");
            let info = &record.kinesis_batch_info;
            anyhow::ensure!(info.batch_size == 1, "{body}");
            let key = (
                info.shard_id.clone(),
                SequenceNumber::parse(&info.start_sequence_number)?,
            );
            let data = marked.get(&key).cloned().unwrap_or_default();
            anyhow::ensure!(dead.insert(key, data).is_none(), "sent twice: {body}");
        }
    }
    assert_eq!(dead, marked);
    // Each record names the invocation it describes: no two the same.
    assert_eq!(request_ids.len(), marked.len(), "{request_ids:?}");
    // The events name the target's role, from its configuration.
    let text = std::fs::read_to_string(
        stack()
            .layout
            .run_dir()
            .join("fixtures/target")
            .join(format!("{stream}.jsonl")),
    )?;
    for line in text.lines() {
        let batch: Value = serde_json::from_str(line)?;
        for record in batch["records"].as_array().into_iter().flatten() {
            assert_eq!(
                record["invokeIdentityArn"],
                json!(format!("arn:aws:iam::{ACCOUNT}:role/target-role")),
                "{record}"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn the_archive_is_reinjected_onto_a_stream_in_key_order_with_the_envelope()
-> anyhow::Result<()> {
    let replay = Replay::new("reinject").await?;
    let source = unique("reinject-src");
    let target = unique("reinject-dst");
    create_stream(&replay.kinesis, &target, 2).await?;
    let t0 = 1_732_240_000_000;
    let records = archived_records(&source, t0, 60, 1000);
    archive(&replay, &records).await?;

    let run = unique("run");
    let input = json!({
        "source": {"type": "ARCHIVE", "bucket": replay.bucket, "stream": source,
                   "from": t0 / 1000, "to": t0 / 1000 + 3600},
        "target": {"type": "STREAM", "stream": target, "includeMetadata": true, "separator": "|"},
        "output": {"bucket": replay.bucket, "prefix": "runs"}
    });
    let output = replay.run(&run, &input).await?;
    assert_eq!(
        output["summary"]["totals"]["delivered"],
        json!(records.len()),
        "{output}"
    );

    // Read the target stream back, shard by shard.
    let shards = replay
        .kinesis
        .list_shards()
        .stream_name(&target)
        .send()
        .await?;
    let mut by_key: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut count = 0;
    for shard in shards.shards() {
        let mut iterator = replay
            .kinesis
            .get_shard_iterator()
            .stream_name(&target)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await?
            .shard_iterator
            .unwrap_or_default();
        let mut empty = 0;
        while empty < 2 {
            // 5 calls/s per shard, enforced by the endpoint.
            tokio::time::sleep(Duration::from_millis(250)).await;
            let page = replay
                .kinesis
                .get_records()
                .shard_iterator(&iterator)
                .send()
                .await?;
            if page.records().is_empty() {
                empty += 1;
            }
            for record in page.records() {
                count += 1;
                let data = record.data().as_ref();
                anyhow::ensure!(data.first() == Some(&b'|'), "no envelope: {data:?}");
                let text = std::str::from_utf8(data)?;
                let mut parts = text.splitn(3, '|');
                parts.next();
                let metadata: Value = serde_json::from_str(parts.next().unwrap_or_default())?;
                anyhow::ensure!(
                    metadata["originalStreamName"] == json!(source),
                    "{metadata}"
                );
                by_key
                    .entry(record.partition_key().unwrap_or_default().to_owned())
                    .or_default()
                    .push((
                        metadata["originalSequenceNumber"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        parts.next().unwrap_or_default().to_owned(),
                    ));
            }
            match page.next_shard_iterator() {
                Some(next) => iterator = next.to_owned(),
                None => break,
            }
        }
    }
    assert_eq!(count, records.len(), "every record once");
    let mut want: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for r in &records {
        want.entry(r.partition_key.clone()).or_default().push((
            r.sequence_number.to_string(),
            String::from_utf8(r.data.clone())?,
        ));
    }
    assert_eq!(by_key, want, "each key's records in their original order");
    let keys: BTreeSet<&String> = by_key.keys().collect();
    assert_eq!(keys.len(), 10);
    Ok(())
}

#[tokio::test]
async fn a_partition_key_is_replayed_from_the_dynamodb_archive_large_records_included()
-> anyhow::Result<()> {
    use rewind_engine::sinks::dynamodb::{ArchiveMode, DynamoArchive, StreamSettings};

    let replay = Replay::new("replay-dynamodb").await?;
    let dynamodb = aws_sdk_dynamodb::Client::new(&stack().sdk_config().await);
    let table = unique("archive");
    rewind_tests::create_archive_table(&dynamodb, &table).await?;
    let stream = unique("replay-dynamodb");
    let mut records = archived_records(&stream, 1_732_250_000_000, 30, 7);
    // One record too large for an item: its data is kept in S3.
    records[8].data = vec![b'x'; 450 * 1024];
    let store = S3Store::new(replay.s3.clone(), &replay.bucket);
    let archive = DynamoArchive::new(dynamodb, table.clone(), store, "archive");
    let settings = StreamSettings {
        modes: vec![ArchiveMode::All],
        ttl: None,
    };
    let failed = archive.write(&records, &settings, 1_732_260_000).await;
    anyhow::ensure!(failed.is_empty(), "{failed:?}");

    let key = records[8].partition_key.clone();
    let of_key: Vec<&Record> = records.iter().filter(|r| r.partition_key == key).collect();
    let run = unique("run");
    let input = json!({
        "source": {"type": "DYNAMODB", "table": table, "stream": stream, "partitionKey": key,
                   "overflowBucket": replay.bucket},
        "target": {"type": "FUNCTION", "functionName": "target"},
        "options": {"BatchSize": 2, "BisectBatchOnFunctionError": true, "MaximumRetryAttempts": 0},
        "dlq": {"type": "S3", "bucket": replay.bucket},
        // The DynamoDB archive keeps user records only.
        "deliver": "USER_RECORDS"
    });
    let output = replay.run(&run, &input).await?;
    let (unmarked, marked) = split(&seen(&of_key));
    assert!(!marked.is_empty());
    assert!(unmarked.values().any(|data| data.len() == 450 * 1024));
    assert_eq!(accepted(&stream, false)?, unmarked);
    let stream_arn = format!("arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/{stream}");
    assert_eq!(replay.dlq(&run, &stream_arn).await?, marked);
    assert_eq!(
        output["summary"]["totals"]["records"],
        json!(of_key.len()),
        "{output}"
    );
    Ok(())
}

/// A step that fails past its retries (here at once: the target does not
/// exist, `InvokeRejected`) fails its group's child execution, and the Map
/// Run fails with it (its tolerated failure threshold is 0), as on AWS
/// (https://docs.aws.amazon.com/step-functions/latest/dg/maprun-fail-threshold.html:
/// `States.ExceedToleratedFailureThreshold`; the local stack adds this to
/// moto): the execution ends in GroupFailed, with the Map Run's cause,
/// before any summary.
#[tokio::test]
async fn a_failed_group_fails_the_map_run_and_the_execution() -> anyhow::Result<()> {
    let replay = Replay::new("replay-rejected").await?;
    let stream = unique("replay-rejected");
    let t0 = 1_732_233_600_000;
    archive(&replay, &archived_records(&stream, t0, 5, 100)).await?;
    let run = unique("run");
    let input = json!({
        "source": {"type": "ARCHIVE", "bucket": replay.bucket, "stream": stream,
                   "from": t0 / 1000, "to": t0 / 1000 + 60},
        "target": {"type": "FUNCTION", "functionName": "no-such-function"},
        "dlq": {"type": "S3", "bucket": replay.bucket}
    });
    let described = statemachine::execute(
        &replay.sfn,
        &replay.machine,
        &run,
        &input.to_string(),
        Duration::from_secs(120),
    )
    .await?;
    assert_eq!(
        *described.status(),
        aws_sdk_sfn::types::ExecutionStatus::Failed,
        "{described:?}"
    );
    assert_eq!(described.error(), Some("GroupFailed"), "{described:?}");
    assert!(
        described
            .cause()
            .is_some_and(|c| c.contains("tolerated failure threshold was exceeded: 1 of 1")),
        "{:?}",
        described.cause()
    );
    let history = replay
        .sfn
        .get_execution_history()
        .execution_arn(described.execution_arn())
        .send()
        .await?;
    let entered: Vec<&str> = history
        .events()
        .iter()
        .filter_map(|e| e.state_entered_event_details().map(|d| d.name()))
        .collect();
    assert!(entered.contains(&"ReplayGroups"), "{entered:?}");
    assert!(!entered.contains(&"Summary"), "{entered:?}");
    assert_eq!(entered.last(), Some(&"GroupFailed"), "{entered:?}");
    Ok(())
}
