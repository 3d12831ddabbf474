//! A fault storm that loses nothing: the whole story on the local stack
//! while the endpoint injects faults into every service it fronts.
//!
//! The story: records are put on a fresh two-shard stream; the real
//! archiver, behind the engine's local event source mapping (set up as
//! template.yaml sets up the live one: retries until the records expire,
//! bisect, batch item failures), archives them to S3; the archiver's
//! engine writes them to a DynamoDB archive table too (the locally served
//! archiver has no table, so this leg runs the same `DynamoArchive` the
//! function runs, in this process); then the replay state machine of
//! template.yaml replays the window from the S3 archive into the `target`
//! fixture function.
//!
//! The storm, from the moment the records are on the stream until the
//! replay ends: every call of Kinesis, Lambda, S3 and DynamoDB that names
//! this run's stream (its reads, the archiver's and the target's invokes,
//! the archive's objects, the run's bucket and table; not Step Functions'
//! invokes of the replay function, see below) is answered with a fault at
//! [`RATES`]: the service's throttle
//! (`ProvisionedThroughputExceededException`, `TooManyRequestsException`
//! 429, S3 `SlowDown` 503, DynamoDB `ThrottlingException`) 10 %, a 500
//! (`InternalFailure`, Lambda `ServiceException`, S3 `InternalError`) 6 %,
//! a dropped connection 4 %, and a quarter of DynamoDB batch writes half
//! unprocessed. Each rule draws from the run's seed.
//!
//! What must hold, for each seed: every record put is in the S3 archive
//! and in the table, and nothing else is (the archive may hold a record
//! twice: the README allows it for a retried or bisected batch, and readers
//! deduplicate); every record is acknowledged by the target, in sequence
//! order per shard, and the summary counts them all delivered; a record
//! reaches the target twice only where the README's at-least-once contract
//! allows it, after a replay step failed in the middle of a piece: never
//! without a failed step, and never more than a piece (`BatchSize`) per
//! failed step. Each run reports the faults it injected and survived.
//!
//! The soak (`bin/soak`, or `cargo nextest run -p rewind-tests
//! --run-ignored only fault_storm_soak`) runs more seeds with more records;
//! its figures are in README's RELIABILITY section.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_config::retry::RetryConfig;
use aws_sdk_sfn::types::{ExecutionStatus, HistoryEventType};
use rewind_engine::Record;
use rewind_engine::jobs::mapping::config::MappingConfig;
use rewind_engine::jobs::mapping::stream::StreamMapping;
use rewind_engine::model::archive::ArchiveLayout;
use rewind_engine::model::chunk;
use rewind_engine::model::record::decode_base64;
use rewind_engine::model::seqno::SequenceNumber;
use rewind_engine::sinks::dynamodb::{ArchiveMode, DynamoArchive, StreamSettings};
use rewind_engine::sinks::lambda::invoker::LambdaInvoker;
use rewind_engine::sinks::lambda::options::{FunctionResponseType, MappingOptions};
use rewind_engine::sources::kinesis::resolve_stream_arn;
use rewind_engine::store::{ObjectReader, S3Store};
use rewind_local::stack::LOCAL_ARCHIVE_BUCKET;
use rewind_local::statemachine::{self, Context};
use rewind_local::{Fault, FaultKind};
use rewind_tests::{create_archive_table, create_stream, put_all, run_to_idle, unique};
use serde_json::{Value, json};

use crate::stack;

/// The rate of each fault on each service (first match decides, so the
/// rates add up per call: about 20 % of calls fail).
const RATES: [(FaultKind, f64); 3] = [
    (FaultKind::Throttle, 0.10),
    (FaultKind::ServerError, 0.06),
    (FaultKind::Drop, 0.04),
];

/// DynamoDB batch writes answered with half their items unprocessed.
const UNPROCESSED_RATE: f64 = 0.25;

const SERVICES: [&str; 4] = ["kinesis", "lambda", "s3", "dynamodb"];

/// Records per replayed batch; a piece of a step is one batch (no lanes).
const BATCH_SIZE: usize = 25;

/// (shard, sequence number) of a record.
type Id = (String, SequenceNumber);

/// What one run of the storm did.
#[derive(Debug)]
pub struct StormRun {
    pub seed: u64,
    pub records: usize,
    /// Faults injected, by `service kind`.
    pub injected: BTreeMap<String, u64>,
    pub archived_twice: usize,
    pub delivered_twice: usize,
    pub failed_steps: usize,
    pub elapsed: Duration,
}

impl StormRun {
    pub fn total_injected(&self) -> u64 {
        self.injected.values().sum()
    }
}

fn epoch_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// One run of the story under the storm, drawn from `seed`.
pub async fn storm(seed: u64, count: usize) -> anyhow::Result<StormRun> {
    let started = Instant::now();
    let stack = stack();
    let sdk = stack.sdk_config().await;
    // The test's own producers and the local mapping stand in for AWS (the
    // producers, Lambda's event source mapping): patient clients, so that
    // what the storm tests is the archiver and the replay, not them.
    let patient = sdk
        .to_builder()
        .retry_config(RetryConfig::standard().with_max_attempts(10))
        .build();
    let kinesis = aws_sdk_kinesis::Client::new(&patient);
    let lambda = aws_sdk_lambda::Client::new(&patient);
    let s3 = rewind_local::sdk::s3_client(&sdk);
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let sfn = aws_sdk_sfn::Client::new(&sdk);

    // One name for the stream, the bucket and the table: every call of the
    // run names it, so the faults reach this run's calls and no other
    // test's.
    let name = unique("storm");
    create_stream(&kinesis, &name, 2).await?;
    s3.create_bucket().bucket(&name).send().await?;
    create_archive_table(&dynamodb, &name).await?;
    let template = stack.layout.root.join("template.yaml");
    let definition = statemachine::load(&template, "ReplayStateMachine", &Context::default())?;
    let machine = statemachine::create(&sfn, &name, &definition).await?;

    let from = epoch_seconds() - 1;
    let pending: Vec<(String, Vec<u8>)> = (0..count)
        .map(|n| {
            (
                format!("key-{}", n % 17),
                format!("{{\"seed\":{seed},\"n\":{n}}}").into_bytes(),
            )
        })
        .collect();
    let put: BTreeMap<Id, Vec<u8>> = put_all(&kinesis, &name, pending)
        .await?
        .into_iter()
        .map(|a| ((a.shard, a.sequence), a.data))
        .collect();
    anyhow::ensure!(put.len() == count, "{} of {count} records put", put.len());
    let to = epoch_seconds() + 2;

    let admin = stack.admin();
    let mut n = 0;
    for service in SERVICES {
        // Lambda: the invokes of the archiver and of the target. Step
        // Functions' own invokes of the replay function are left alone:
        // moto's engine reports a throttled or failed Invoke as a bare
        // `Exception`, which no Retry matches, where AWS reports
        // `Lambda.TooManyRequestsException` or `Lambda.ServiceException`
        // and the definitions retry them.
        let scopes: &[Option<&str>] = match service {
            "lambda" => &[Some("/functions/archiver/"), Some("/functions/target/")],
            _ => &[None],
        };
        for scope in scopes {
            for (kind, rate) in RATES {
                n += 1;
                let mut rule = Fault::rate(service, "*", kind, rate)
                    .matching(&name)
                    .seeded(seed * 100 + n);
                if let Some(scope) = scope {
                    rule = rule.and_matching(scope);
                }
                admin.inject(&rule).await?;
            }
        }
    }
    admin
        .inject(
            &Fault::rate(
                "dynamodb",
                "BatchWriteItem",
                FaultKind::Unprocessed,
                UNPROCESSED_RATE,
            )
            .matching(&name)
            .seeded(seed * 100 + 99),
        )
        .await?;
    let outcome = story(
        &kinesis, &lambda, &s3, &dynamodb, &sfn, &machine, &name, &put, from, to,
    )
    .await;
    // The storm's rules, with what they injected, then gone: whatever the
    // story's outcome, the checks below and other tests see no fault.
    let rules = admin.faults().await?;
    admin.remove_faults(&name).await?;
    let (delivered_twice, failed_steps) = outcome?;
    let mut injected = BTreeMap::new();
    for rule in rules
        .iter()
        .filter(|r| r.matching.as_deref() == Some(name.as_str()))
    {
        *injected
            .entry(format!("{} {:?}", rule.service, rule.kind))
            .or_insert(0) += rule.injected;
    }

    let archived = archived(&s3, &name).await?;
    let archived_once: BTreeSet<&Id> = archived.iter().collect();
    let put_ids: BTreeSet<&Id> = put.keys().collect();
    anyhow::ensure!(
        archived_once == put_ids,
        "seed {seed}: the S3 archive holds {} distinct records, {} put; missing {:?}, foreign {:?}",
        archived_once.len(),
        put_ids.len(),
        put_ids
            .difference(&archived_once)
            .take(5)
            .collect::<Vec<_>>(),
        archived_once
            .difference(&put_ids)
            .take(5)
            .collect::<Vec<_>>(),
    );
    let in_table = table_records(&dynamodb, &name).await?;
    anyhow::ensure!(
        in_table.iter().collect::<BTreeSet<_>>() == put_ids && in_table.len() == put.len(),
        "seed {seed}: the table holds {} items for {} records",
        in_table.len(),
        put.len()
    );
    Ok(StormRun {
        seed,
        records: count,
        injected,
        archived_twice: archived.len() - archived_once.len(),
        delivered_twice,
        failed_steps,
        elapsed: started.elapsed(),
    })
}

/// The three legs under the storm; returns (records delivered twice,
/// replay steps that failed).
#[allow(clippy::too_many_arguments)]
async fn story(
    kinesis: &aws_sdk_kinesis::Client,
    lambda: &aws_sdk_lambda::Client,
    s3: &aws_sdk_s3::Client,
    dynamodb: &aws_sdk_dynamodb::Client,
    sfn: &aws_sdk_sfn::Client,
    machine: &str,
    name: &str,
    put: &BTreeMap<Id, Vec<u8>>,
    from: i64,
    to: i64,
) -> anyhow::Result<(usize, usize)> {
    // Leg 1: the archiver behind the mapping, as the template sets it up.
    let config = MappingConfig {
        options: MappingOptions {
            batch_size: 50,
            maximum_retry_attempts: -1,
            bisect_batch_on_function_error: true,
            function_response_types: vec![FunctionResponseType::ReportBatchItemFailures],
            ..MappingOptions::default()
        },
        idle_exit: Some(Duration::from_secs(4)),
        ..MappingConfig::default()
    };
    let stream_arn = resolve_stream_arn(kinesis, name).await?;
    let (mapping, shards) = StreamMapping::open(
        kinesis,
        &stream_arn,
        "arn:aws:iam::123456789012:role/archiver",
        config,
    )
    .await?;
    let invoker = LambdaInvoker::new(lambda.clone(), "archiver", None);
    let report = run_to_idle(&mapping, &invoker, shards, Duration::from_secs(150)).await?;
    anyhow::ensure!(
        report.records() == put.len() as u64
            && report.shards.iter().all(|s| s.counters.failed_records == 0),
        "the mapping settled {} of {} records: {report:#?}",
        report.records(),
        put.len()
    );

    // Leg 2: the archiver's DynamoDB archive, as the function writes it; a
    // record it reports failed is written again, as the mapping would
    // deliver it again.
    let archive = DynamoArchive::new(
        dynamodb.clone(),
        name,
        S3Store::new(s3.clone(), name),
        "archive",
    );
    let settings = StreamSettings {
        modes: vec![ArchiveMode::All],
        ttl: None,
    };
    let mut records: Vec<Record> = archived_records(s3, name).await?;
    for attempt in 1.. {
        let failed = archive.write(&records, &settings, epoch_seconds()).await;
        if failed.is_empty() {
            break;
        }
        anyhow::ensure!(attempt < 20, "DynamoDB writes still failing: {failed:?}");
        let failed: BTreeSet<_> = failed.into_iter().map(|(id, _)| id).collect();
        records.retain(|r| failed.contains(&r.id()));
    }

    // Leg 3: the replay state machine, from the S3 archive into `target`.
    let run = unique("run");
    let input = json!({
        "source": {"type": "ARCHIVE", "bucket": LOCAL_ARCHIVE_BUCKET, "stream": name,
                   "from": from, "to": to},
        "target": {"type": "FUNCTION", "functionName": "target"},
        "options": {"BatchSize": BATCH_SIZE},
        "dlq": {"type": "S3", "bucket": name}
    });
    let described = statemachine::execute(
        sfn,
        machine,
        &run,
        &input.to_string(),
        Duration::from_secs(240),
    )
    .await?;
    let failed_steps = failed_steps(sfn, described.execution_arn()).await?;
    anyhow::ensure!(
        *described.status() == ExecutionStatus::Succeeded,
        "replay {run}: {:?} {:?} {:?}",
        described.status(),
        described.error(),
        described.cause()
    );
    let output: Value = serde_json::from_str(described.output().unwrap_or("null"))?;
    let totals = &output["summary"]["totals"];
    anyhow::ensure!(
        totals["records"] == json!(put.len()) && totals["delivered"] == json!(put.len()),
        "{output}"
    );
    let (firsts, delivered_twice) = delivered(name)?;
    anyhow::ensure!(
        firsts == *put,
        "the target acknowledged {} distinct records of {}",
        firsts.len(),
        put.len()
    );
    anyhow::ensure!(
        delivered_twice <= failed_steps * BATCH_SIZE,
        "{delivered_twice} records delivered twice after {failed_steps} failed steps: more than a piece each"
    );
    Ok((delivered_twice, failed_steps))
}

/// Every record line of the run's archive objects (a record once per
/// object it is in).
async fn archived_records(s3: &aws_sdk_s3::Client, stream: &str) -> anyhow::Result<Vec<Record>> {
    let store = S3Store::new(s3.clone(), LOCAL_ARCHIVE_BUCKET);
    let layout = ArchiveLayout::default();
    let mut records = Vec::new();
    for key in store
        .list(&format!("{}/stream={stream}/dt=", layout.prefix))
        .await?
    {
        records.extend(chunk::decode(&key, &store.get(&key).await?)?);
    }
    Ok(records)
}

async fn archived(s3: &aws_sdk_s3::Client, stream: &str) -> anyhow::Result<Vec<Id>> {
    Ok(archived_records(s3, stream)
        .await?
        .into_iter()
        .map(|r| (r.shard_id, r.sequence_number))
        .collect())
}

/// The records of the table's `ALL` items.
async fn table_records(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> anyhow::Result<Vec<Id>> {
    let mut ids = Vec::new();
    let mut pages = dynamodb.scan().table_name(table).into_paginator().send();
    while let Some(page) = pages.next().await {
        for item in page?.items() {
            let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
            if text("sk").as_deref() == Some("LATEST") {
                continue;
            }
            let (Some(shard), Some(sequence)) = (text("shardId"), text("sequenceNumber")) else {
                anyhow::bail!("an item without shardId or sequenceNumber: {item:?}");
            };
            ids.push((shard, SequenceNumber::parse(&sequence)?));
        }
    }
    Ok(ids)
}

/// Replay steps that failed (each retried by the state machine).
async fn failed_steps(sfn: &aws_sdk_sfn::Client, execution: &str) -> anyhow::Result<usize> {
    let mut failed = 0;
    let mut pages = sfn
        .get_execution_history()
        .execution_arn(execution)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        failed += page?
            .events()
            .iter()
            .filter(|event| {
                matches!(
                    event.r#type(),
                    HistoryEventType::TaskFailed
                        | HistoryEventType::LambdaFunctionFailed
                        | HistoryEventType::TaskTimedOut
                        | HistoryEventType::LambdaFunctionTimedOut
                )
            })
            .count();
    }
    Ok(failed)
}

/// What `target` acknowledged for `stream`: each record's data, from its
/// first delivery (which must come in sequence order per shard), and how
/// many deliveries were repeats.
fn delivered(stream: &str) -> anyhow::Result<(BTreeMap<Id, Vec<u8>>, usize)> {
    let mut firsts = BTreeMap::new();
    let mut repeats = 0;
    let mut last: BTreeMap<String, SequenceNumber> = BTreeMap::new();
    for (shard, sequence, record) in crate::replay::deliveries(stream)? {
        let id = (shard, sequence);
        if firsts.contains_key(&id) {
            repeats += 1;
            continue;
        }
        if let Some(previous) = last.get(&id.0) {
            anyhow::ensure!(
                *previous < id.1,
                "{}: {} first after {previous}",
                id.0,
                id.1
            );
        }
        last.insert(id.0.clone(), id.1.clone());
        let data = decode_base64(record["data"].as_str().unwrap_or_default())?;
        firsts.insert(id, data);
    }
    Ok((firsts, repeats))
}

/// Runs `seeds` side by side (each on its own stream, bucket and table) and
/// prints each run's figures.
async fn storms(seeds: std::ops::Range<u64>, records: usize) -> anyhow::Result<Vec<StormRun>> {
    // One task polls them all: a run's future borrows the shared stack, so
    // it can't be spawned, and the runs wait on the stack, not on CPU.
    let runs = futures_util::future::join_all(seeds.map(|seed| storm(seed, records))).await;
    let mut done = Vec::new();
    for run in runs {
        let run = run?;
        eprintln!(
            "fault storm: seed {} records {} faults injected and survived {} ({:?}) records lost 0 archived twice {} delivered twice {} after {} failed steps, {:.1} s",
            run.seed,
            run.records,
            run.total_injected(),
            run.injected,
            run.archived_twice,
            run.delivered_twice,
            run.failed_steps,
            run.elapsed.as_secs_f64()
        );
        done.push(run);
    }
    done.sort_by_key(|run| run.seed);
    Ok(done)
}

#[tokio::test]
async fn a_fault_storm_over_the_whole_story_loses_no_record() -> anyhow::Result<()> {
    let runs = storms(1..4, 120).await?;
    // Enough calls that every service met faults: a storm that injected
    // nothing would prove nothing. (One run of 120 records makes a few
    // dozen calls of each service, so one of them may draw none.)
    for service in SERVICES {
        let met: u64 = runs
            .iter()
            .flat_map(|run| &run.injected)
            .filter(|(rule, _)| rule.starts_with(service))
            .map(|(_, n)| n)
            .sum();
        assert!(met > 0, "no {service} fault injected: {runs:?}");
    }
    for run in &runs {
        assert!(run.total_injected() > 0, "{run:?}");
    }
    Ok(())
}

/// The longer soak: `SOAK_SEEDS` seeds (default 10) of `SOAK_RECORDS`
/// records (default 1000), three at a time.
#[tokio::test]
#[ignore = "a soak of several minutes: bin/soak"]
async fn fault_storm_soak() -> anyhow::Result<()> {
    let number = |name: &str, default: u64| -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (seeds, records) = (number("SOAK_SEEDS", 10), number("SOAK_RECORDS", 1000));
    let mut total = 0;
    let mut first = 100;
    while first < 100 + seeds {
        let last = (first + 3).min(100 + seeds);
        total += storms(first..last, records as usize)
            .await?
            .iter()
            .map(StormRun::total_injected)
            .sum::<u64>();
        first = last;
    }
    eprintln!(
        "fault storm soak: {seeds} runs of {records} records, {total} faults injected and survived, 0 records lost"
    );
    Ok(())
}
