//! The capacity check: real runs of both state machines (template.yaml's
//! own definitions) on the local stack, their history events and largest
//! payloads measured with `GetExecutionHistory`, extrapolated with the
//! template's defaults and the engine's step sizing to a 1,000-shard × 24 h
//! scrape and a 1,000-shard × 7-day replay (1 KiB records at 1 MiB/s a
//! shard, as issue 14 sizes them). It fails if any execution, parent or
//! Distributed Map child, would pass 80% of Step Functions' 25,000 history
//! events, or any payload 80% of its 256 KiB
//! (https://docs.aws.amazon.com/step-functions/latest/dg/service-quotas.html).
//!
//! moto runs a Distributed Map's children without keeping their histories
//! (nor listing them as executions). A child execution on AWS is an
//! execution of the Map's `ItemProcessor` with the input its `ItemSelector`
//! makes of the item; that is what this test starts, from the deployed
//! definition, for each item of the real run's plan (read from S3), with the
//! input evaluated from the Map state's real input: its events are the
//! child's. What it measures:
//! - per execution: the parent's events (none per shard: asserted) and each
//!   child's fixed events;
//! - per shard: a child's events outside its step loops;
//! - per step: one turn of a step loop (`Step` entered to `ShardDone?`
//!   exited).

use std::time::Duration;

use aws_sdk_sfn::types::{HistoryEvent, HistoryEventType as T};
use rewind_local::sdk::s3_client;
use rewind_local::stack::LOCAL_SCRAPER_CHUNK;
use rewind_local::statemachine::{self, Context, StateMachine, parameter_default};
use rewind_tests::{create_stream, get_object, put_all, unique};
use serde_json::{Value, json};

use crate::stack;

/// Step Functions' quotas (standard workflows), and the share of them the
/// check allows.
const HISTORY_LIMIT: f64 = 25_000.0;
const PAYLOAD_LIMIT: f64 = 256.0 * 1024.0;
const MARGIN: f64 = 0.8;

/// The sizing issue 14 uses: 1 KiB records at 1 MiB/s a shard.
const RECORD_BYTES: f64 = 1024.0;
const SHARD_WRITE_BYTES_PER_SECOND: f64 = 1024.0 * 1024.0;
/// GetRecords' read limit of a shard (2 MiB/s): a scrape step reads no
/// faster. https://docs.aws.amazon.com/streams/latest/dev/service-sizes-and-limits.html
const SHARD_READ_BYTES_PER_SECOND: f64 = 2.0 * 1024.0 * 1024.0;
const SHARDS: f64 = 1000.0;
const SCRAPE_WINDOW_SECONDS: f64 = 24.0 * 3600.0;
const REPLAY_WINDOW_SECONDS: f64 = 7.0 * 24.0 * 3600.0;

/// What one run of a state machine measured.
#[derive(Debug, Default)]
struct Measured {
    /// The parent's events, whatever the shard count.
    parent_events: usize,
    /// A child's events outside its shards.
    child_fixed: f64,
    /// A child's events per shard, outside its step loops.
    per_shard: f64,
    /// One turn of a step loop.
    per_step: usize,
    /// The largest payload (an input or output), parent or child, and how
    /// much of it grows with the shards in a child's group.
    largest_payload: usize,
    payload_per_group_shard: f64,
    /// Shards of the largest group of the plan, and of the plan.
    largest_group: usize,
    shards: usize,
}

/// The whole history of an execution, with its data.
async fn history(sfn: &aws_sdk_sfn::Client, arn: &str) -> anyhow::Result<Vec<HistoryEvent>> {
    let mut events = Vec::new();
    let mut pages = sfn
        .get_execution_history()
        .execution_arn(arn)
        .include_execution_data(true)
        .max_results(1000)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        events.extend(page?.events().iter().cloned());
    }
    Ok(events)
}

/// The sizes of an event's payloads (inputs, outputs, task parameters).
fn payloads(event: &HistoryEvent) -> impl Iterator<Item = usize> {
    [
        event
            .execution_started_event_details()
            .and_then(|d| d.input()),
        event
            .execution_succeeded_event_details()
            .and_then(|d| d.output()),
        event.state_entered_event_details().and_then(|d| d.input()),
        event.state_exited_event_details().and_then(|d| d.output()),
        event
            .lambda_function_scheduled_event_details()
            .and_then(|d| d.input()),
        event
            .lambda_function_succeeded_event_details()
            .and_then(|d| d.output()),
        event.task_scheduled_event_details().map(|d| d.parameters()),
        event
            .task_succeeded_event_details()
            .and_then(|d| d.output()),
    ]
    .into_iter()
    .flatten()
    .map(str::len)
    .collect::<Vec<_>>()
    .into_iter()
}

fn largest(events: &[HistoryEvent]) -> usize {
    events.iter().flat_map(payloads).max().unwrap_or(0)
}

fn entered(event: &HistoryEvent) -> Option<&str> {
    event.state_entered_event_details().map(|d| d.name())
}

fn exited(event: &HistoryEvent) -> Option<&str> {
    event.state_exited_event_details().map(|d| d.name())
}

/// Events of each turn of the step loop: `Step` entered to `ShardDone?`
/// exited.
fn step_turns(events: &[HistoryEvent]) -> Vec<usize> {
    let mut turns = Vec::new();
    let mut start = None;
    for (i, event) in events.iter().enumerate() {
        if *event.r#type() == T::TaskStateEntered && entered(event) == Some("Step") {
            start = Some(i);
        }
        if *event.r#type() == T::ChoiceStateExited
            && exited(event) == Some("ShardDone?")
            && let Some(at) = start.take()
        {
            turns.push(i - at + 1);
        }
    }
    turns
}

/// The value of a Payload Template (an `ItemSelector`) for `input` and the
/// Map item `item`: `"k.$": "$.a.b"` and `"$$.Map.Item.Value"` paths, and
/// nested objects, as the definitions use them.
fn select(template: &Value, input: &Value, item: &Value) -> anyhow::Result<Value> {
    let Some(fields) = template.as_object() else {
        return Ok(template.clone());
    };
    let mut out = serde_json::Map::new();
    for (key, value) in fields {
        match key.strip_suffix(".$") {
            Some(name) => {
                let path = value.as_str().unwrap_or_default();
                let found = if path == "$$.Map.Item.Value" {
                    item.clone()
                } else {
                    let pointer = path
                        .strip_prefix('$')
                        .ok_or_else(|| anyhow::anyhow!("{path}: not a path"))?
                        .replace('.', "/");
                    input
                        .pointer(&pointer)
                        .cloned()
                        .ok_or_else(|| anyhow::anyhow!("{path}: not in the Map's input"))?
                };
                out.insert(name.to_owned(), found);
            }
            None => {
                out.insert(key.clone(), select(value, input, item)?);
            }
        }
    }
    Ok(Value::Object(out))
}

/// Runs `machine` (the deployed definition) with `input`, then one child
/// execution per item of its Distributed Map `map`, and measures them.
async fn measure(
    machine: &StateMachine,
    map: &str,
    name: &str,
    input: &Value,
) -> anyhow::Result<Measured> {
    let stack = stack();
    let config = stack.sdk_config().await;
    let sfn = aws_sdk_sfn::Client::new(&config);
    let s3 = s3_client(&config);
    let limit = Duration::from_secs(300);
    let arn = statemachine::create(&sfn, &unique(name), machine).await?;
    let run = unique(name);
    let described = statemachine::execute(&sfn, &arn, &run, &input.to_string(), limit).await?;
    anyhow::ensure!(
        *described.status() == aws_sdk_sfn::types::ExecutionStatus::Succeeded,
        "{described:?}"
    );
    let parent = history(&sfn, described.execution_arn()).await?;
    // Nothing of an item is in the parent's history: its events don't grow
    // with the shards.
    anyhow::ensure!(
        !parent.iter().any(|e| matches!(
            e.r#type(),
            T::MapIterationStarted | T::MapIterationSucceeded
        ) || matches!(entered(e), Some("Step" | "ScrapeStep"))),
        "the parent's history has per-item events"
    );

    let definition: Value = serde_json::from_str(&machine.definition)?;
    let state = &definition["States"][map];
    anyhow::ensure!(
        state["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED",
        "{map} is not a Distributed Map"
    );
    let map_input: Value = parent
        .iter()
        .find(|e| *e.r#type() == T::MapStateEntered && entered(e) == Some(map))
        .and_then(|e| e.state_entered_event_details()?.input())
        .map(serde_json::from_str)
        .transpose()?
        .ok_or_else(|| anyhow::anyhow!("{map} was not entered"))?;
    let reader = &state["ItemReader"]["Parameters"];
    let (bucket, key) = (
        select(
            &json!({"v.$": reader["Bucket.$"]}),
            &map_input,
            &Value::Null,
        )?["v"]
            .clone(),
        select(&json!({"v.$": reader["Key.$"]}), &map_input, &Value::Null)?["v"].clone(),
    );
    let items: Vec<Value> = serde_json::from_slice(
        &get_object(
            &s3,
            bucket.as_str().unwrap_or_default(),
            key.as_str().unwrap_or_default(),
        )
        .await?,
    )?;
    let processor = &state["ItemProcessor"];
    let child = StateMachine {
        logical_id: format!("{}/{map}", machine.logical_id),
        definition: json!({"StartAt": processor["StartAt"], "States": processor["States"]})
            .to_string(),
    };
    let child_arn = statemachine::create(&sfn, &unique(&format!("{name}-child")), &child).await?;

    let mut measured = Measured {
        parent_events: parent.len(),
        largest_payload: largest(&parent),
        ..Measured::default()
    };
    let shards: usize = items.iter().map(|i| i.as_array().map_or(1, Vec::len)).sum();
    let largest_group = items
        .iter()
        .map(|i| i.as_array().map_or(1, Vec::len))
        .max()
        .unwrap_or(1);
    (measured.largest_group, measured.shards) = (largest_group, shards);
    let (mut fixed, mut outside_steps, mut payload_growth) = (Vec::new(), 0.0, Vec::new());
    for item in &items {
        let input = select(&state["ItemSelector"], &map_input, item)?;
        let described =
            statemachine::execute(&sfn, &child_arn, &unique(name), &input.to_string(), limit)
                .await?;
        anyhow::ensure!(
            *described.status() == aws_sdk_sfn::types::ExecutionStatus::Succeeded,
            "{described:?}"
        );
        let events = history(&sfn, described.execution_arn()).await?;
        let turns = step_turns(&events);
        anyhow::ensure!(!turns.is_empty(), "no step in {events:?}");
        measured.per_step = measured.per_step.max(*turns.iter().max().unwrap_or(&0));
        let in_group = item.as_array().map_or(1, Vec::len);
        // Outside the step loops: the child's own events and, for a group,
        // those of each of its shards (the inline Map's iterations).
        let iterations = events
            .iter()
            .filter(|e| *e.r#type() == T::MapIterationStarted)
            .count();
        let rest = events.len() - turns.iter().sum::<usize>();
        if iterations > 0 {
            let inside: usize =
                iteration_spans(&events).iter().sum::<usize>() - turns.iter().sum::<usize>();
            outside_steps += inside as f64 / in_group as f64;
            fixed.push((rest - inside) as f64);
        } else {
            fixed.push(rest as f64);
        }
        let size = largest(&events);
        measured.largest_payload = measured.largest_payload.max(size);
        payload_growth.push((in_group, size));
    }
    measured.child_fixed = fixed.iter().cloned().fold(0.0, f64::max);
    measured.per_shard = outside_steps / items.len() as f64;
    // A child's input holds its group: the growth per shard of the group,
    // from the children measured (one-shard groups grow by a shard's size).
    measured.payload_per_group_shard = payload_growth
        .iter()
        .map(|(n, size)| *size as f64 / *n as f64)
        .fold(0.0, f64::max);
    Ok(measured)
}

/// Events of each inline Map iteration, started to succeeded.
fn iteration_spans(events: &[HistoryEvent]) -> Vec<usize> {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, event) in events.iter().enumerate() {
        match event.r#type() {
            T::MapIterationStarted => start = Some(i),
            T::MapIterationSucceeded => {
                if let Some(at) = start.take() {
                    spans.push(i - at + 1);
                }
            }
            _ => {}
        }
    }
    spans
}

/// A template parameter's default, as a number.
fn default(name: &str) -> anyhow::Result<f64> {
    let template = stack().layout.root.join("template.yaml");
    parameter_default(&template, name)?
        .ok_or_else(|| anyhow::anyhow!("{name} has no default"))?
        .parse()
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))
}

/// What an execution of the projected run would reach; errors name each
/// limit passed.
fn judge(what: &str, events: f64, payload: f64, failures: &mut Vec<String>) {
    eprintln!("{what}: {events:.0} history events, largest payload {payload:.0} bytes");
    if events > MARGIN * HISTORY_LIMIT {
        failures.push(format!(
            "{what}: {events:.0} history events, past {:.0} (80% of 25,000)",
            MARGIN * HISTORY_LIMIT
        ));
    }
    if payload > MARGIN * PAYLOAD_LIMIT {
        failures.push(format!(
            "{what}: a {payload:.0}-byte payload, past {:.0} (80% of 256 KiB)",
            MARGIN * PAYLOAD_LIMIT
        ));
    }
}

/// A two-shard stream with `per_shard` records a shard (several scrape
/// steps each on the local stack) and a scrape request of all of it.
async fn stream_and_request(name: &str, per_shard: usize) -> anyhow::Result<(String, Value)> {
    let config = stack().sdk_config().await;
    let kinesis = aws_sdk_kinesis::Client::new(&config);
    let s3 = s3_client(&config);
    let stream = unique(name);
    let bucket = stream.to_lowercase();
    s3.create_bucket().bucket(&bucket).send().await?;
    create_stream(&kinesis, &stream, 2).await?;
    // Keys that land on both shards.
    let records = (0..2 * per_shard)
        .map(|n| (format!("key-{n}"), format!("record {n}").into_bytes()))
        .collect();
    put_all(&kinesis, &stream, records).await?;
    let request = json!({
        "stream": stream,
        "shards": "ALL",
        "start": {"type": "TRIM_HORIZON"},
        "stop": {"type": "LATEST"},
        "pollBatchSize": 50,
        "maxEmptyPolls": 2,
        "output": {"bucket": bucket, "prefix": "scrapes"},
    });
    Ok((bucket, request))
}

#[tokio::test]
async fn a_day_of_1000_shards_scraped_and_a_week_replayed_fit_step_functions_limits()
-> anyhow::Result<()> {
    let template = stack().layout.root.join("template.yaml");
    // More records a shard than a local step takes: several steps a shard.
    let per_shard = 2 * LOCAL_SCRAPER_CHUNK as usize + 30;
    let (bucket, request) = stream_and_request("capacity", per_shard).await?;
    let scrape = statemachine::load(&template, "ScrapeStateMachine", &Context::default())?;
    let scraped = measure(&scrape, "ScrapeShards", "cap-scrape", &request).await?;
    eprintln!("scrape measured: {scraped:?}");

    let replay = statemachine::load(&template, "ReplayStateMachine", &Context::default())?;
    let input = json!({
        "source": {"type": "SCRAPE", "request": request},
        "target": {"type": "FUNCTION", "functionName": "target"},
        "options": {"BatchSize": 100},
        "dlq": {"type": "S3", "bucket": bucket, "prefix": "dlq"},
    });
    let replayed = measure(&replay, "ReplayGroups", "cap-replay", &input).await?;
    eprintln!("replay measured: {replayed:?}");

    let mut failures = Vec::new();
    // Scrape: a step reads at most a chunk, and no more than the shard's
    // read limit allows in the step's time (the function's timeout, less
    // the scraper's margin).
    let step_seconds = match default("ScraperMaxStepSeconds")? {
        0.0 => default("ScraperTimeout")?,
        seconds => seconds,
    } - rewind_engine::jobs::scrape::STEP_MARGIN.as_secs_f64();
    let per_step = default("ScraperMaxRecordsPerChunk")?
        .min(step_seconds * SHARD_READ_BYTES_PER_SECOND / RECORD_BYTES);
    let records = SCRAPE_WINDOW_SECONDS * SHARD_WRITE_BYTES_PER_SECOND / RECORD_BYTES;
    let steps = (records / per_step).ceil();
    eprintln!("scrape: {records:.0} records a shard, {per_step:.0} a step, {steps:.0} steps");
    judge(
        "1,000-shard x 24 h scrape, parent",
        scraped.parent_events as f64,
        scraped.largest_payload as f64,
        &mut failures,
    );
    judge(
        "1,000-shard x 24 h scrape, a shard's child",
        scraped.child_fixed + scraped.per_shard + steps * scraped.per_step as f64,
        scraped.largest_payload as f64,
        &mut failures,
    );

    // Replay: a step delivers until its deadline (the function's timeout
    // less the replay's margin); a target that keeps up with the stream
    // takes the shard's rate, so a step covers that many seconds of it.
    let step_seconds =
        default("ReplayTimeout")? - rewind_engine::jobs::replay::STEP_MARGIN.as_secs_f64();
    let steps = (REPLAY_WINDOW_SECONDS / step_seconds).ceil();
    // The plan's groups are lineage groups (the streams here are not
    // resharded: one shard each), unless it put every shard in one group,
    // which it would do with 1,000 too.
    let group = if replayed.largest_group == replayed.shards && replayed.shards > 1 {
        SHARDS
    } else {
        replayed.largest_group as f64
    };
    eprintln!("replay: {steps:.0} steps a shard, {group:.0} shards a group");
    judge(
        "1,000-shard x 7-day replay, parent",
        replayed.parent_events as f64,
        replayed.largest_payload as f64,
        &mut failures,
    );
    judge(
        "1,000-shard x 7-day replay, a group's child",
        replayed.child_fixed + group * (replayed.per_shard + steps * replayed.per_step as f64),
        replayed.largest_payload as f64 + (group - 1.0) * replayed.payload_per_group_shard,
        &mut failures,
    );
    assert!(failures.is_empty(), "{failures:#?}");
    Ok(())
}
