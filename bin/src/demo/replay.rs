//! The replay: template.yaml's replay state machine over the outage window
//! into the `target` consumer, the DLQ it left (saved, since the stack's S3
//! goes with the stack), and what the consumer says it accepted.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aws_sdk_sfn::types::ExecutionStatus;
use rewind_engine::jobs::replay::ReplaySummary;
use rewind_engine::model::seqno::SequenceNumber;
use rewind_engine::sinks::dlq::FailureRecord;
use rewind_local::Layout;
use rewind_local::stack::LOCAL_ARCHIVE_BUCKET;
use rewind_local::statemachine::{self, Context};
use serde::Serialize;
use serde_json::json;

use super::scenario::Clients;
use super::traffic::RecordId;
use super::{ARCHIVE_PREFIX, progress};

/// How long the replay may take to finish: far above what it takes, so only
/// a hang hits it.
const EXECUTION_LIMIT: Duration = Duration::from_secs(300);

/// What the replay execution did.
pub(super) struct ReplayOutcome {
    pub(super) execution_arn: String,
    pub(super) run_id: String,
    pub(super) summary: ReplaySummary,
    pub(super) dlq: DlqContents,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DlqContents {
    /// Failure records (one object each).
    pub(super) objects: usize,
    /// Kinesis records they name (`KinesisBatchInfo.batchSize`).
    pub(super) records: u64,
    /// Their (shard, first sequence number), to match against the poison.
    #[serde(skip)]
    pub(super) starts: BTreeSet<RecordId>,
    /// Where the demo saved them: the stack's S3 goes away with the stack.
    pub(super) saved_to: PathBuf,
}

/// Runs template.yaml's replay state machine over the outage window into the
/// `target` consumer.
pub(super) async fn replay(
    clients: &Clients,
    layout: &Layout,
    stream: &str,
    bucket: &str,
    window: (i64, i64),
) -> anyhow::Result<ReplayOutcome> {
    let template = layout.root.join("template.yaml");
    let machine = statemachine::load(&template, "ReplayStateMachine", &Context::default())
        .with_context(|| format!("loading ReplayStateMachine from {}", template.display()))?;
    let pid = std::process::id();
    let machine_arn = statemachine::create(&clients.sfn, &format!("rewind-demo-{pid}"), &machine)
        .await
        .context("creating the replay state machine")?;
    let run_id = format!("demo-{pid}-{}", window.0);
    let input = json!({
        "source": {"type": "ARCHIVE", "bucket": LOCAL_ARCHIVE_BUCKET, "prefix": ARCHIVE_PREFIX,
                   "stream": stream, "from": window.0, "to": window.1},
        "target": {"type": "FUNCTION", "functionName": "target"},
        "options": {"BatchSize": 25, "BisectBatchOnFunctionError": true, "MaximumRetryAttempts": 1,
                    "FunctionResponseTypes": ["ReportBatchItemFailures"]},
        "dlq": {"type": "S3", "bucket": bucket, "prefix": "dlq"},
        "maxConcurrency": 2
    });
    progress(format_args!(
        "replaying the outage window [{}, {}) from the archive into `target` (execution {run_id})",
        window.0, window.1
    ));
    let begun = Instant::now();
    let described = statemachine::execute(
        &clients.sfn,
        &machine_arn,
        &run_id,
        &input.to_string(),
        EXECUTION_LIMIT,
    )
    .await
    .context("running the replay execution")?;
    let execution_arn = described.execution_arn().to_owned();
    anyhow::ensure!(
        *described.status() == ExecutionStatus::Succeeded,
        "the replay execution {execution_arn} ended {}: {} {} (logs: {})",
        described.status(),
        described.error().unwrap_or_default(),
        described.cause().unwrap_or_default(),
        layout.logs().display()
    );
    let output: serde_json::Value = serde_json::from_str(described.output().unwrap_or("null"))
        .with_context(|| format!("the output of {execution_arn}"))?;
    let summary: ReplaySummary = serde_json::from_value(output["summary"].clone())
        .with_context(|| format!("the replay summary in the output of {execution_arn}"))?;
    progress(format_args!(
        "replay done in {:.0} s",
        begun.elapsed().as_secs_f64()
    ));
    let saved_to = layout.run_dir().join("demo").join(&run_id).join("dlq");
    let dlq = read_dlq(
        &clients.s3,
        bucket,
        &format!("dlq/aws/lambda/{run_id}/"),
        saved_to,
    )
    .await?;
    Ok(ReplayOutcome {
        execution_arn,
        run_id,
        summary,
        dlq,
    })
}

/// Reads the run's DLQ folder, and saves each failure record under
/// `saved_to` (the stack's S3 is gone once the demo ends).
async fn read_dlq(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    saved_to: PathBuf,
) -> anyhow::Result<DlqContents> {
    let mut contents = DlqContents {
        saved_to,
        ..DlqContents::default()
    };
    let mut pages = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.with_context(|| format!("listing s3://{bucket}/{prefix}"))?;
        for object in page.contents() {
            let key = object.key().unwrap_or_default();
            let body = s3
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .with_context(|| format!("reading s3://{bucket}/{key}"))?
                .body
                .collect()
                .await
                .with_context(|| format!("reading s3://{bucket}/{key}"))?
                .into_bytes();
            let record: FailureRecord = serde_json::from_slice(&body)
                .with_context(|| format!("s3://{bucket}/{key} is not a failure record"))?;
            let info = &record.kinesis_batch_info;
            contents.objects += 1;
            contents.records += info.batch_size as u64;
            contents.starts.insert((
                info.shard_id.clone(),
                SequenceNumber::parse(&info.start_sequence_number)?,
            ));
            let path = contents
                .saved_to
                .join(key.strip_prefix(prefix).unwrap_or(key));
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::write(&path, &body).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(contents)
}

/// What the consumer accepted, from its own file: records, and distinct
/// event ids among them.
pub(super) fn consumer_count(path: &Path) -> anyhow::Result<(usize, usize)> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        // No accepted batch: the consumer never wrote.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    };
    let mut records = 0;
    let mut ids = BTreeSet::new();
    for line in text.lines() {
        let batch: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("a line of {} is not JSON", path.display()))?;
        for record in batch["records"].as_array().into_iter().flatten() {
            records += 1;
            ids.insert(record["eventID"].as_str().unwrap_or_default().to_owned());
        }
    }
    Ok((records, ids.len()))
}
