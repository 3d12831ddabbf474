//! Run ids that cannot collide, on the local stack with the state machines
//! of template.yaml. Execution names are unique only within one state
//! machine (and for 90 days), so each collision below uses a second
//! machine of the same definition, as a stack created again, or a name
//! reused after 90 days, would. For each case of issue 13: nothing of the
//! earlier run is deleted or changed, nothing foreign is delivered, nothing
//! is skipped.
//!
//! - A scrape run id reused for another request: the plan's claim of the
//!   folder (`_run.json`, written with `If-None-Match: *`) refuses it with
//!   `InvalidRequest` naming the run id; the same request goes on.
//! - A scrape-first replay named as a scrape: it scrapes into
//!   `scrapes/replay=<run>/`, never the scrape's `scrapes/<run>/`.
//! - A replay run id reused for another request: refused before anything is
//!   delivered (its checkpoints would have made it skip records); the same
//!   request goes on from its checkpoints, delivering nothing twice.
//!
//! S3 conditional writes:
//! <https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html>

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_sfn::types::ExecutionStatus;
use rewind_engine::model::manifest::Manifest;
use rewind_local::statemachine::{self, Context};
use rewind_tests::{create_stream, execute, get_object, put_all, unique};
use serde_json::{Value, json};

use crate::replay::{Replay, Seen, accepted, archive, archived_records, seen};
use crate::stack;

/// Every object under `prefix`, with its body.
async fn folder(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let listed = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await?;
    let mut objects = BTreeMap::new();
    for object in listed.contents() {
        let key = object.key().unwrap_or_default();
        objects.insert(key.to_owned(), get_object(s3, bucket, key).await?);
    }
    Ok(objects)
}

/// Another state machine of `kind`'s definition in template.yaml.
async fn machine(sfn: &aws_sdk_sfn::Client, kind: &str) -> anyhow::Result<String> {
    let template = stack().layout.root.join("template.yaml");
    let definition = statemachine::load(&template, kind, &Context::default())?;
    Ok(statemachine::create(sfn, &unique("machine"), &definition).await?)
}

/// `replay`'s bucket and clients with another state machine.
fn on(replay: &Replay, machine: String) -> Replay {
    Replay {
        kinesis: replay.kinesis.clone(),
        s3: replay.s3.clone(),
        sfn: replay.sfn.clone(),
        machine,
        bucket: replay.bucket.clone(),
    }
}

/// Runs a scrape execution named `run` on a new scrape state machine; returns
/// its output once it succeeded.
async fn scrape_on_a_new_machine(
    sfn: &aws_sdk_sfn::Client,
    run: &str,
    input: &Value,
) -> anyhow::Result<Value> {
    let machine = machine(sfn, "ScrapeStateMachine").await?;
    execute(sfn, &machine, run, input, Duration::from_secs(120)).await
}

/// Runs an execution that must fail with `InvalidRequest` naming `run`.
async fn refused(
    sfn: &aws_sdk_sfn::Client,
    machine: &str,
    run: &str,
    input: &Value,
) -> anyhow::Result<()> {
    let described = statemachine::execute(
        sfn,
        machine,
        run,
        &input.to_string(),
        Duration::from_secs(120),
    )
    .await?;
    anyhow::ensure!(
        *described.status() == ExecutionStatus::Failed,
        "{run}: {:?} {:?}",
        described.status(),
        described.output()
    );
    let cause = described.cause().unwrap_or_default();
    anyhow::ensure!(
        cause.contains("InvalidRequest") || described.error() == Some("InvalidRequest"),
        "{:?} {cause}",
        described.error()
    );
    // The cause is the function's error as JSON (quotes escaped).
    anyhow::ensure!(
        cause.contains("runId") && cause.contains(run) && cause.contains("accepted values"),
        "the cause names the run id: {cause}"
    );
    Ok(())
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A two-shard stream holding `first` records, then (after a mark, epoch
/// seconds) `second` more; returns the mark.
async fn two_batches(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    first: usize,
    second: usize,
) -> anyhow::Result<(Seen, f64, Seen)> {
    create_stream(kinesis, stream, 2).await?;
    let records = |batch: usize, count: usize| -> Vec<(String, Vec<u8>)> {
        (0..count)
            .map(|n| {
                (
                    format!("key-{n}"),
                    format!("batch {batch} record {n}").into_bytes(),
                )
            })
            .collect()
    };
    let to_seen = |accepted: Vec<rewind_tests::Accepted>| -> Seen {
        accepted
            .into_iter()
            .map(|a| ((a.shard, a.sequence), a.data))
            .collect()
    };
    let before = to_seen(put_all(kinesis, stream, records(0, first)).await?);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mark = epoch_ms() as f64 / 1000.0;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let after = to_seen(put_all(kinesis, stream, records(1, second)).await?);
    Ok((before, mark, after))
}

fn scrape_request(stream: &str, bucket: &str, start: Value, stop: Value) -> Value {
    json!({
        "stream": stream,
        "start": start,
        "stop": stop,
        "pollBatchSize": 25,
        "maxEmptyPolls": 2,
        "output": {"bucket": bucket, "prefix": "scrapes"},
    })
}

#[tokio::test]
async fn a_scrape_run_id_reused_for_another_request_is_refused_and_deletes_nothing()
-> anyhow::Result<()> {
    let replay = Replay::new("runid-scrape").await?;
    let (s3, sfn, bucket) = (&replay.s3, &replay.sfn, &replay.bucket);
    let stream = unique("runid-scrape");
    let (before, mark, _after) = two_batches(&replay.kinesis, &stream, 40, 30).await?;
    let first = scrape_request(
        &stream,
        bucket,
        json!({"type": "TRIM_HORIZON"}),
        json!({"type": "BEFORE_TIMESTAMP", "timestamp": mark}),
    );
    let run = unique("nightly");
    let output = scrape_on_a_new_machine(sfn, &run, &first).await?;
    assert_eq!(
        output["manifest"]["records"],
        json!(before.len()),
        "{output}"
    );
    let kept = folder(s3, bucket, &format!("scrapes/{run}/")).await?;
    assert!(
        kept.contains_key(&format!("scrapes/{run}/_run.json")),
        "{kept:?}"
    );
    assert!(kept.keys().filter(|k| k.ends_with(".jsonl.gz")).count() >= 2);

    // The same name on another machine, for the whole stream: a scrape
    // step would delete the first run's chunks, and its manifest pick up
    // their records beside its own.
    let other = scrape_request(
        &stream,
        bucket,
        json!({"type": "TRIM_HORIZON"}),
        json!({"type": "LATEST"}),
    );
    refused(
        sfn,
        &machine(sfn, "ScrapeStateMachine").await?,
        &run,
        &other,
    )
    .await?;
    assert_eq!(
        folder(s3, bucket, &format!("scrapes/{run}/")).await?,
        kept,
        "the first run's folder is as it was"
    );

    // The same request again (a re-run of that execution) goes on and ends
    // with the same records, its chunks replaced by their equals.
    let again = scrape_on_a_new_machine(sfn, &run, &first).await?;
    assert_eq!(again["manifest"], output["manifest"], "{again}");
    let manifest: Manifest = serde_json::from_slice(
        &get_object(s3, bucket, &format!("scrapes/{run}/manifest.json")).await?,
    )?;
    assert_eq!(manifest.records, before.len() as u64);
    Ok(())
}

#[tokio::test]
async fn a_scrape_first_replay_named_as_a_scrape_keeps_to_its_own_folder() -> anyhow::Result<()> {
    let replay = Replay::new("runid-first").await?;
    let (s3, sfn, bucket) = (&replay.s3, &replay.sfn, &replay.bucket);
    let stream = unique("runid-first");
    let (before, mark, after) = two_batches(&replay.kinesis, &stream, 40, 30).await?;
    let run = unique("incident");
    // A scrape of the first batch, named `run`.
    let scrape = scrape_request(
        &stream,
        bucket,
        json!({"type": "TRIM_HORIZON"}),
        json!({"type": "BEFORE_TIMESTAMP", "timestamp": mark}),
    );
    let scraped = scrape_on_a_new_machine(sfn, &run, &scrape).await?;
    assert_eq!(scraped["manifest"]["records"], json!(before.len()));
    let kept = folder(s3, bucket, &format!("scrapes/{run}/")).await?;

    // A replay named `run` too, scraping the second batch first into the
    // same bucket and prefix.
    let input = json!({
        "source": {"type": "SCRAPE", "request": scrape_request(
            &stream,
            bucket,
            json!({"type": "AT_TIMESTAMP", "timestamp": mark}),
            json!({"type": "LATEST"}),
        )},
        "target": {"type": "FUNCTION", "functionName": "target"},
        "options": {"BatchSize": 10},
        "dlq": {"type": "S3", "bucket": bucket}
    });
    let output = replay.run(&run, &input).await?;
    assert_eq!(
        output["scrape"]["key"],
        json!(format!("scrapes/replay={run}/manifest.json")),
        "{output}"
    );
    assert_eq!(
        folder(s3, bucket, &format!("scrapes/{run}/")).await?,
        kept,
        "the scrape's folder is untouched"
    );
    // Exactly the second batch reached the target, each record once:
    // nothing of the scrape's batch, nothing skipped.
    assert_eq!(accepted(&stream, false)?, after);
    assert_eq!(output["summary"]["totals"]["delivered"], json!(after.len()));
    Ok(())
}

#[tokio::test]
async fn a_replay_run_id_reused_for_another_request_delivers_nothing_and_skips_nothing()
-> anyhow::Result<()> {
    let replay = Replay::new("runid-replay").await?;
    let t0 = 1_732_300_000_000;
    let (one, two) = (unique("runid-one"), unique("runid-two"));
    let (records_one, records_two) = (
        archived_records(&one, t0, 20, 1000),
        archived_records(&two, t0, 20, 1000),
    );
    archive(&replay, &records_one).await?;
    archive(&replay, &records_two).await?;
    let request = |stream: &str| {
        json!({
            "source": {"type": "ARCHIVE", "bucket": replay.bucket, "stream": stream,
                       "from": t0 / 1000, "to": t0 / 1000 + 20},
            "target": {"type": "FUNCTION", "functionName": "target"},
            "options": {"BatchSize": 7},
            "dlq": {"type": "S3", "bucket": replay.bucket}
        })
    };
    let run = unique("incident");
    let output = replay.run(&run, &request(&one)).await?;
    let all_one = seen(&records_one.iter().collect::<Vec<_>>());
    assert_eq!(accepted(&one, false)?, all_one);
    let progress = folder(&replay.s3, &replay.bucket, &format!("dlq/replays/{run}/")).await?;
    assert!(progress.contains_key(&format!("dlq/replays/{run}/_run.json")));

    // The same name on another machine, for another stream: its steps would
    // adopt the first run's checkpoints and skip that many records.
    let sfn = &replay.sfn;
    refused(
        sfn,
        &machine(sfn, "ReplayStateMachine").await?,
        &run,
        &request(&two),
    )
    .await?;
    assert_eq!(accepted(&two, false)?, Seen::new(), "nothing delivered");
    assert_eq!(
        folder(&replay.s3, &replay.bucket, &format!("dlq/replays/{run}/")).await?,
        progress,
        "the first run's progress is as it was"
    );

    // Under a new name the other request delivers every record of its own.
    let other = on(&replay, machine(sfn, "ReplayStateMachine").await?);
    other.run(&unique("incident"), &request(&two)).await?;
    assert_eq!(
        accepted(&two, false)?,
        seen(&records_two.iter().collect::<Vec<_>>()),
        "nothing skipped"
    );

    // The first request again, under its own name: it goes on from its
    // checkpoints, and its records stay delivered once each.
    let again = on(&replay, machine(sfn, "ReplayStateMachine").await?);
    let output_again = again.run(&run, &request(&one)).await?;
    assert_eq!(accepted(&one, false)?, all_one);
    assert_eq!(
        output_again["summary"]["totals"]["delivered"],
        output["summary"]["totals"]["delivered"]
    );
    Ok(())
}
