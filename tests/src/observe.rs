//! What a run did, as its parts saw it: the batches the `target` fixture
//! accepted, and a state's output in an execution's history.

use rewind_engine::model::seqno::SequenceNumber;
use rewind_local::Layout;
use serde_json::Value;

/// One batch the `target` fixture accepted.
#[derive(Debug, Clone)]
pub struct TargetBatch {
    /// When its handler started and ended (microseconds since the epoch).
    pub started_us: u64,
    pub ended_us: u64,
    /// Each record's shard and sequence number (from its `eventID`), and the
    /// record as the fixture kept it.
    pub records: Vec<(String, SequenceNumber, Value)>,
}

/// The batches the `target` fixture accepted for `stream`, in the order it
/// accepted them (none yet: none).
pub fn target_batches(layout: &Layout, stream: &str) -> anyhow::Result<Vec<TargetBatch>> {
    let path = layout
        .run_dir()
        .join("fixtures/target")
        .join(format!("{stream}.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut batches = Vec::new();
    for line in text.lines() {
        let mut batch: Value = serde_json::from_str(line)?;
        let time = |name: &str| {
            batch[name]
                .as_u64()
                .ok_or_else(|| anyhow::anyhow!("{path:?}: a batch without {name}"))
        };
        let (started_us, ended_us) = (time("startedUs")?, time("endedUs")?);
        let mut records = Vec::new();
        if let Value::Array(kept) = batch["records"].take() {
            for record in kept {
                let event_id = record["eventID"].as_str().unwrap_or_default();
                let (shard, sequence) = event_id
                    .split_once(':')
                    .ok_or_else(|| anyhow::anyhow!("eventID {event_id:?}"))?;
                let sequence = SequenceNumber::parse(sequence)?;
                records.push((shard.to_owned(), sequence, record));
            }
        }
        batches.push(TargetBatch {
            started_us,
            ended_us,
            records,
        });
    }
    Ok(batches)
}

/// The output of the first `state` to exit in execution `name` of
/// `machine` (the state's whole data, its result at its `ResultPath`).
pub async fn state_output(
    sfn: &aws_sdk_sfn::Client,
    machine: &str,
    name: &str,
    state: &str,
) -> anyhow::Result<Value> {
    let executions = sfn
        .list_executions()
        .state_machine_arn(machine)
        .send()
        .await?;
    let execution = executions
        .executions()
        .iter()
        .find(|e| e.name() == name)
        .ok_or_else(|| anyhow::anyhow!("no execution {name} of {machine}"))?;
    let mut events = sfn
        .get_execution_history()
        .execution_arn(execution.execution_arn())
        .include_execution_data(true)
        .into_paginator()
        .items()
        .send();
    while let Some(event) = events.next().await {
        if let Some(exited) = event?.state_exited_event_details()
            && exited.name() == state
        {
            return Ok(serde_json::from_str(exited.output().unwrap_or("null"))?);
        }
    }
    anyhow::bail!("{state} never exited in execution {name}")
}
