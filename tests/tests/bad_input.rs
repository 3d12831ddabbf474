//! Bad input, everywhere: a table of bad scrape and replay requests, bad
//! Lambda events and bad environment settings, each given to the real
//! function on the local stack (the settings: to the function's binary, as
//! Lambda starts it). Each must be refused with an error that names the
//! field and says what it accepts, and before any work: every request names
//! this test's stream and bucket, and rules on the endpoint that answer (and
//! count) every call naming them find none, so nothing was read, written,
//! claimed or delivered.

use std::collections::BTreeMap;
use std::process::Command;

use aws_sdk_lambda::primitives::Blob;
use rewind_local::{Fault, FaultKind};
use rewind_tests::unique;
use serde_json::{Value, json};

use crate::stack;

/// Who gets the input.
#[derive(Clone, Copy, Debug)]
enum To {
    Scraper,
    Replay,
    Archiver,
}

impl To {
    fn function(self) -> &'static str {
        match self {
            To::Scraper => "scraper",
            To::Replay => "replay",
            To::Archiver => "archiver",
        }
    }
}

/// One bad input: what the error must name (`field`) and the words that
/// say what is accepted (`accepted`).
struct Row {
    name: &'static str,
    to: To,
    event: Value,
    field: &'static str,
    accepted: &'static str,
}

/// A valid scrape request of `stream` into `bucket`, with `change` applied
/// (`null` removes a field; keys with dots reach into objects).
fn scrape(stream: &str, bucket: &str, change: Value) -> Value {
    let base = json!({
        "stream": stream,
        "shards": "ALL",
        "start": {"type": "TRIM_HORIZON"},
        "stop": {"type": "LATEST"},
        "output": {"bucket": bucket, "prefix": "scrapes"},
    });
    json!({"action": "plan", "request": changed(base, change)})
}

/// A valid replay request (the archive of `stream` in `bucket` into
/// `target`), with `change` applied.
fn replay(stream: &str, bucket: &str, change: Value) -> Value {
    let base = json!({
        "source": {"type": "ARCHIVE", "bucket": bucket, "stream": stream,
                   "from": 1732233600, "to": 1732237200},
        "target": {"type": "FUNCTION", "functionName": "target"},
        "options": {"BatchSize": 10},
        "dlq": {"type": "S3", "bucket": bucket},
    });
    json!({"action": "plan", "request": changed(base, change)})
}

/// A one-record Kinesis event of `stream`, with `change` applied to the
/// record.
fn event(stream: &str, change: Value) -> Value {
    let sequence = "49656626372427914385237262063396478153418658218305732610";
    let record = json!({
        "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "k",
                    "sequenceNumber": sequence, "data": "eyJ4IjoxfQ==",
                    "approximateArrivalTimestamp": 1732233600.123},
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": format!("shardId-000000000000:{sequence}"),
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/archiver",
        "awsRegion": "us-east-1",
        "eventSourceARN": format!("arn:aws:kinesis:us-east-1:123456789012:stream/{stream}"),
    });
    json!({"Records": [changed(record, change)]})
}

fn changed(mut base: Value, change: Value) -> Value {
    for (path, value) in change.as_object().into_iter().flatten() {
        let mut at = &mut base;
        let parts: Vec<&str> = path.split('.').collect();
        let (last, parents) = parts.split_last().expect("a path");
        for part in parents {
            at = &mut at[*part];
        }
        match (at.as_object_mut(), value) {
            (Some(fields), Value::Null) => {
                fields.remove(*last);
            }
            (Some(fields), value) => {
                fields.insert((*last).to_owned(), value.clone());
            }
            (None, _) => panic!("{path} is not inside an object"),
        }
    }
    base
}

fn rows(stream: &str, bucket: &str) -> Vec<Row> {
    let s = |change: Value| scrape(stream, bucket, change);
    let r = |change: Value| replay(stream, bucket, change);
    let e = |change: Value| event(stream, change);
    let row = |name, to, event, field, accepted| Row {
        name,
        to,
        event,
        field,
        accepted,
    };
    use To::{Archiver, Replay, Scraper};
    let arn = |resource: &str| format!("arn:aws:kinesis:us-east-1:123456789012:{resource}");
    vec![
        // Scrape requests.
        row(
            "scrape: no stream",
            Scraper,
            s(json!({"stream": null})),
            "stream",
            "missing field",
        ),
        row(
            "scrape: stream name with a space",
            Scraper,
            s(json!({"stream": "my stream"})),
            "stream",
            "[a-zA-Z0-9_.-]{1,128}",
        ),
        row(
            "scrape: stream ARN of a table",
            Scraper,
            s(json!({"stream": arn("table/orders")})),
            "stream",
            "arn:aws:kinesis:<region>:<account>:stream/<name>",
        ),
        row(
            "scrape: empty shard list",
            Scraper,
            s(json!({"shards": []})),
            "shards",
            "accepted values: \"ALL\" or a list of shard ids",
        ),
        row(
            "scrape: shards neither ALL nor a list",
            Scraper,
            s(json!({"shards": "SOME"})),
            "shards",
            "accepted values: \"ALL\" or a list of shard ids",
        ),
        row(
            "scrape: a shard id with a slash",
            Scraper,
            s(json!({"shards": ["shardId/0"]})),
            "shards",
            "for example shardId-000000000000",
        ),
        row(
            "scrape: a sequence start over all shards",
            Scraper,
            s(json!({"start": {"type": "AT_SEQUENCE_NUMBER", "sequenceNumber": "1"}})),
            "shards",
            "name exactly one shard",
        ),
        row(
            "scrape: unknown start type",
            Scraper,
            s(json!({"start": {"type": "SOMETIME"}})),
            "start",
            "TRIM_HORIZON",
        ),
        row(
            "scrape: AT_TIMESTAMP start without a timestamp",
            Scraper,
            s(json!({"start": {"type": "AT_TIMESTAMP"}})),
            "start",
            "timestamp",
        ),
        row(
            "scrape: unknown stop type",
            Scraper,
            s(json!({"stop": {"type": "WHENEVER"}})),
            "stop",
            "TOTAL_RECORDS_PER_SHARD",
        ),
        row(
            "scrape: a sequence stop that is not a number",
            Scraper,
            s(json!({"stop": {"type": "AT_SEQUENCE_NUMBER", "sequenceNumber": "12ab"}})),
            "stop",
            "decimal",
        ),
        row(
            "scrape: pollBatchSize 0",
            Scraper,
            s(json!({"pollBatchSize": 0})),
            "pollBatchSize",
            "accepted values: 1 to 10000",
        ),
        row(
            "scrape: pollBatchSize 20000",
            Scraper,
            s(json!({"pollBatchSize": 20000})),
            "pollBatchSize",
            "accepted values: 1 to 10000",
        ),
        row(
            "scrape: pollDelayMs too long",
            Scraper,
            s(json!({"pollDelayMs": 60000})),
            "pollDelayMs",
            "accepted values: 0 to 10000",
        ),
        row(
            "scrape: maxEmptyPolls 0",
            Scraper,
            s(json!({"maxEmptyPolls": 0})),
            "maxEmptyPolls",
            "accepted values: 1 or more",
        ),
        row(
            "scrape: readShare 0",
            Scraper,
            s(json!({"readShare": 0.0})),
            "readShare",
            "accepted values: more than 0, at most 1",
        ),
        row(
            "scrape: readShare 1.5",
            Scraper,
            s(json!({"readShare": 1.5})),
            "readShare",
            "accepted values: more than 0, at most 1",
        ),
        row(
            "scrape: no output",
            Scraper,
            s(json!({"output": null})),
            "output",
            "missing field",
        ),
        row(
            "scrape: empty output bucket",
            Scraper,
            s(json!({"output.bucket": ""})),
            "output.bucket",
            "accepted values",
        ),
        row(
            "scrape: output prefix from the root",
            Scraper,
            s(json!({"output.prefix": "/scrapes"})),
            "output.prefix",
            "must not start with /",
        ),
        row(
            "scrape: unknown compression",
            Scraper,
            s(json!({"compression": "lz4"})),
            "compression",
            "gzip",
        ),
        row(
            "scrape: runId with a slash",
            Scraper,
            s(json!({"runId": "a/b"})),
            "runId",
            "accepted values: 1 to 80 of",
        ),
        row(
            "scrape: maxConcurrency 0",
            Scraper,
            s(json!({"maxConcurrency": 0})),
            "maxConcurrency",
            "accepted values: 1 to 1000",
        ),
        row(
            "scrape: a misspelt field",
            Scraper,
            s(json!({"shard": "ALL"})),
            "shard",
            "expected one of",
        ),
        // Replay requests.
        row(
            "replay: unknown source type",
            Replay,
            r(json!({"source": {"type": "KAFKA"}})),
            "source",
            "ARCHIVE",
        ),
        row(
            "replay: archive window that ends before it starts",
            Replay,
            r(json!({"source.to": 1732233000})),
            "source.to",
            "is not after source.from",
        ),
        row(
            "replay: archive stream name with a space",
            Replay,
            r(json!({"source.stream": "my stream"})),
            "source.stream",
            "[a-zA-Z0-9_.-]{1,128}",
        ),
        row(
            "replay: manifest without a key",
            Replay,
            r(json!({"source": {"type": "MANIFEST", "bucket": bucket, "key": ""}})),
            "source.key",
            "<prefix>/<runId>/manifest.json",
        ),
        row(
            "replay: empty function name",
            Replay,
            r(json!({"target.functionName": ""})),
            "target.functionName",
            "accepted values: a function name or ARN",
        ),
        row(
            "replay: qualifier with a space",
            Replay,
            r(json!({"target.qualifier": "v 1"})),
            "target.qualifier",
            "accepted values: $LATEST, a version number or an alias",
        ),
        row(
            "replay: unknown target type",
            Replay,
            r(json!({"target": {"type": "QUEUE"}})),
            "target",
            "FUNCTION",
        ),
        row(
            "replay: BatchSize 0",
            Replay,
            r(json!({"options.BatchSize": 0})),
            "options.BatchSize",
            "10000",
        ),
        row(
            "replay: BatchSize 20000",
            Replay,
            r(json!({"options.BatchSize": 20000})),
            "options.BatchSize",
            "10000",
        ),
        row(
            "replay: MaximumRetryAttempts -2",
            Replay,
            r(json!({"options.MaximumRetryAttempts": -2})),
            "options.MaximumRetryAttempts",
            "-1",
        ),
        row(
            "replay: ParallelizationFactor 11",
            Replay,
            r(json!({"options.ParallelizationFactor": 11})),
            "options.ParallelizationFactor",
            "10",
        ),
        row(
            "replay: unknown FunctionResponseTypes",
            Replay,
            r(json!({"options.FunctionResponseTypes": ["Everything"]})),
            "FunctionResponseTypes",
            "ReportBatchItemFailures",
        ),
        row(
            "replay: a filter pattern that is not JSON",
            Replay,
            r(json!({"options.FilterCriteria": {"Filters": [{"Pattern": "{data"}]}})),
            "FilterCriteria.Filters[0].Pattern",
            "accepted values",
        ),
        row(
            "replay: a filter on an unknown property",
            Replay,
            r(
                json!({"options.FilterCriteria": {"Filters": [{"Pattern": "{\"colour\": [\"red\"]}"}]}}),
            ),
            "FilterCriteria.Filters[0].Pattern",
            "accepted: data",
        ),
        row(
            "replay: unknown DLQ type",
            Replay,
            r(json!({"dlq": {"type": "EMAIL"}})),
            "dlq",
            "S3",
        ),
        row(
            "replay: a DLQ queue URL that is not one",
            Replay,
            r(json!({"dlq": {"type": "SQS", "queueUrl": "ftp://queue"}})),
            "dlq.queueUrl",
            "accepted values: an SQS queue URL",
        ),
        row(
            "replay: empty DLQ bucket",
            Replay,
            r(json!({"dlq.bucket": ""})),
            "dlq.bucket",
            "accepted values",
        ),
        row(
            "replay: a scrape source with a bad scrape request",
            Replay,
            r(
                json!({"source": {"type": "SCRAPE", "request": {"stream": stream, "start": {"type": "TRIM_HORIZON"}, "stop": {"type": "LATEST"}, "pollBatchSize": 0, "output": {"bucket": bucket}}}}),
            ),
            "pollBatchSize",
            "accepted values: 1 to 10000",
        ),
        row(
            "replay: maxConcurrency 1001",
            Replay,
            r(json!({"maxConcurrency": 1001})),
            "maxConcurrency",
            "accepted values: 1 to 1000",
        ),
        row(
            "replay: runId with a space",
            Replay,
            r(json!({"runId": "run 1"})),
            "runId",
            "accepted values: 1 to 80 of",
        ),
        // Lambda events.
        row(
            "scraper event: unknown action",
            Scraper,
            json!({"action": "launch", "request": {}}),
            "action",
            "plan",
        ),
        row(
            "scraper event: a step without its progress",
            Scraper,
            {
                let mut event = s(json!({}));
                event["action"] = json!("step");
                event["streamArn"] = json!(arn(&format!("stream/{stream}")));
                event["runId"] = json!("r");
                event
            },
            "progress",
            "missing field",
        ),
        row(
            "replay event: unknown action",
            Replay,
            json!({"action": "rewind", "request": {}}),
            "action",
            "validate",
        ),
        row(
            "archiver event: not from Kinesis",
            Archiver,
            e(json!({"eventSource": "aws:sqs"})),
            "eventSource",
            "aws:kinesis",
        ),
        row(
            "archiver event: a sequence number with letters",
            Archiver,
            e(json!({"kinesis.sequenceNumber": "12ab"})),
            "kinesis.sequenceNumber",
            "decimal",
        ),
        row(
            "archiver event: an eventID of another record",
            Archiver,
            e(json!({"eventID": "shardId-000000000000:1"})),
            "eventID",
            "<shardId>:<sequenceNumber>",
        ),
        row(
            "archiver event: data that is not base64",
            Archiver,
            e(json!({"kinesis.data": "not base64!"})),
            "kinesis.data",
            "base64",
        ),
        row(
            "archiver event: an eventSourceARN of a table",
            Archiver,
            e(json!({"eventSourceARN": arn("table/orders")})),
            "eventSourceARN",
            "stream/",
        ),
    ]
}

/// One environment setting a function refuses to start with.
struct Setting {
    binary: &'static str,
    vars: &'static [(&'static str, &'static str)],
    field: &'static str,
    accepted: &'static str,
}

const SETTINGS: &[Setting] = &[
    Setting {
        binary: "archiver",
        vars: &[],
        field: "ARCHIVE_BUCKET",
        accepted: "required",
    },
    Setting {
        binary: "archiver",
        vars: &[("ARCHIVE_BUCKET", "b"), ("ARCHIVE_COMPRESSION", "lz4")],
        field: "ARCHIVE_COMPRESSION",
        accepted: "gzip, zstd",
    },
    Setting {
        binary: "archiver",
        vars: &[("ARCHIVE_BUCKET", "b"), ("ARCHIVE_MODE", "SOME")],
        field: "ARCHIVE_MODE",
        accepted: "ALL, LATEST, ALL,LATEST, NONE",
    },
    Setting {
        binary: "archiver",
        vars: &[("ARCHIVE_BUCKET", "b"), ("ARCHIVE_TTL_SECONDS", "-5")],
        field: "ARCHIVE_TTL_SECONDS",
        accepted: "a whole number of seconds",
    },
    Setting {
        binary: "archiver",
        vars: &[("ARCHIVE_BUCKET", "b"), ("ARCHIVE_MAX_ATTEMPTS", "0")],
        field: "ARCHIVE_MAX_ATTEMPTS",
        accepted: "from 1 to 20",
    },
    Setting {
        binary: "archiver",
        vars: &[("ARCHIVE_BUCKET", "b"), ("ARCHIVE_DEAGGREGATE", "yes")],
        field: "ARCHIVE_DEAGGREGATE",
        accepted: "true, false",
    },
    Setting {
        binary: "scraper",
        vars: &[("SCRAPER_MAX_RECORDS_PER_CHUNK", "0")],
        field: "SCRAPER_MAX_RECORDS_PER_CHUNK",
        accepted: "from 1 to",
    },
    Setting {
        binary: "scraper",
        vars: &[("SCRAPER_MAX_STEP_SECONDS", "901")],
        field: "SCRAPER_MAX_STEP_SECONDS",
        accepted: "from 0 to 900",
    },
    Setting {
        binary: "replay",
        vars: &[],
        field: "REPLAY_ACCOUNT_ID",
        accepted: "required",
    },
    Setting {
        binary: "replay",
        vars: &[("REPLAY_ACCOUNT_ID", "12345")],
        field: "REPLAY_ACCOUNT_ID",
        accepted: "12 digits",
    },
    Setting {
        binary: "replay",
        vars: &[
            ("REPLAY_ACCOUNT_ID", "123456789012"),
            ("REPLAY_DYNAMODB", "maybe"),
        ],
        field: "REPLAY_DYNAMODB",
        accepted: "true, false",
    },
];

/// What the function answered: its error type and message, if it failed.
async fn invoke(
    lambda: &aws_sdk_lambda::Client,
    to: To,
    event: &Value,
) -> anyhow::Result<Option<(String, String)>> {
    let answer = lambda
        .invoke()
        .function_name(to.function())
        .payload(Blob::new(event.to_string()))
        .send()
        .await?;
    if answer.function_error().is_none() {
        return Ok(None);
    }
    let body: Value = serde_json::from_slice(answer.payload().map_or(&[][..], |p| p.as_ref()))?;
    Ok(Some((
        body["errorType"].as_str().unwrap_or_default().to_owned(),
        body["errorMessage"].as_str().unwrap_or_default().to_owned(),
    )))
}

#[tokio::test]
async fn every_bad_input_is_refused_before_any_work_naming_the_field_and_what_it_accepts()
-> anyhow::Result<()> {
    let stack = stack();
    let sdk = stack.sdk_config().await;
    let lambda = aws_sdk_lambda::Client::new(&sdk);
    let stream = unique("bad-input");
    let bucket = stream.clone();
    // Counters of any work: every call naming the stream or the bucket
    // (reads, writes, claims, deliveries) is answered by one of these, and
    // counted.
    let admin = stack.admin();
    for service in ["kinesis", "s3", "dynamodb", "sqs"] {
        admin
            .inject(
                &Fault::count(service, "*", FaultKind::ServerError, 1_000_000).matching(&stream),
            )
            .await?;
    }
    // The invocations of the functions under test name the stream too; only
    // a delivery to the target counts as work.
    admin
        .inject(
            &Fault::count("lambda", "Invoke", FaultKind::ServerError, 1_000_000)
                .matching(&stream)
                .and_matching("/functions/target/"),
        )
        .await?;
    let rows = rows(&stream, &bucket);
    // Side by side, as the functions run up to 10 invocations at once.
    let mut answers = tokio::task::JoinSet::new();
    for (i, row) in rows.iter().enumerate() {
        let (lambda, to, event) = (lambda.clone(), row.to, row.event.clone());
        answers.spawn(async move { (i, invoke(&lambda, to, &event).await) });
    }
    let mut answered = BTreeMap::new();
    while let Some(answer) = answers.join_next().await {
        let (i, answer) = answer?;
        answered.insert(i, answer);
    }
    let mut wrong = Vec::new();
    for (row, (_, answer)) in rows.iter().zip(answered) {
        match answer {
            Ok(Some((error_type, message))) => {
                let named = message.contains(row.field) && message.contains(row.accepted);
                let typed = match row.to {
                    To::Archiver => true,
                    _ => error_type == "InvalidRequest",
                };
                if !(named && typed) {
                    wrong.push(format!("{}: {error_type}: {message}", row.name));
                }
            }
            Ok(None) => wrong.push(format!("{}: accepted", row.name)),
            Err(error) => wrong.push(format!("{}: invoke failed: {error:#}", row.name)),
        }
    }
    let rules = admin.faults().await?;
    admin.remove_faults(&stream).await?;
    assert!(
        wrong.is_empty(),
        "{} of {} rows wrong:\n{}",
        wrong.len(),
        rows.len(),
        wrong.join("\n")
    );

    let functions = stack_binaries()?;
    for setting in SETTINGS {
        let output = Command::new(functions.join(setting.binary))
            .env_clear()
            .envs(setting.vars.iter().copied())
            .output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{} {:?} started",
            setting.binary,
            setting.vars
        );
        assert!(
            stderr.contains(setting.field) && stderr.contains(setting.accepted),
            "{} {:?}: {stderr}",
            setting.binary,
            setting.vars
        );
    }
    let table = rows.len() + SETTINGS.len();
    assert!(table >= 40, "{table} rows");

    // No work: the rules answered nothing.
    for rule in rules
        .iter()
        .filter(|r| r.matching.as_deref() == Some(stream.as_str()))
    {
        assert_eq!(rule.injected, 0, "work was done: {rule:?}");
    }
    Ok(())
}

/// The folder of the functions' binaries the local stack built (beside
/// this test binary's `deps/`).
fn stack_binaries() -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or_else(|| anyhow::anyhow!("no folder above {}", exe.display()))?;
    anyhow::ensure!(
        dir.join("archiver").exists(),
        "no archiver in {}",
        dir.display()
    );
    Ok(dir.to_path_buf())
}
