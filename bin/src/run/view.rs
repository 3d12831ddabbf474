//! What `rewind run` prints about an execution: its description as text or
//! JSON, its output, and a failed one as an error.

use anyhow::Context as _;
use aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput;
use aws_sdk_sfn::primitives::{DateTime, DateTimeFormat};
use serde_json::{Value, json};

use super::error::RunError;
use super::tally::Tally;

pub(super) fn ended(described: &DescribeExecutionOutput) -> RunError {
    RunError::Ended {
        name: described
            .name()
            .unwrap_or(described.execution_arn())
            .to_owned(),
        status: described.status().to_string(),
        error: described.error().map(str::to_owned),
        cause: described.cause().map(readable_cause),
    }
}

/// A Lambda error's cause is its JSON error object; its message is what a
/// person needs (the JSON views keep the whole cause).
fn readable_cause(cause: &str) -> String {
    serde_json::from_str::<Value>(cause)
        .ok()
        .and_then(|v| v.get("errorMessage")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| cause.to_owned())
}

/// The execution's output as JSON (as text if it is not JSON).
pub(super) fn output(described: &DescribeExecutionOutput) -> Value {
    match described.output() {
        Some(text) => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.into())),
        None => Value::Null,
    }
}

pub(super) fn view(described: &DescribeExecutionOutput, tally: Option<&Tally>) -> Value {
    let mut view = json!({
        "executionArn": described.execution_arn(),
        "stateMachineArn": described.state_machine_arn(),
        "name": described.name(),
        "status": described.status().as_str(),
        "startDate": date(Some(described.start_date())),
        "stopDate": date(described.stop_date()),
        "output": output(described),
        "error": described.error(),
        "cause": described.cause(),
    });
    if let Some(tally) = tally {
        view["progress"] = tally.json();
    }
    view
}

pub(super) fn print_status(described: &DescribeExecutionOutput) -> anyhow::Result<()> {
    println!("execution  {}", described.execution_arn());
    println!("status     {}", described.status());
    println!(
        "started    {}",
        date(Some(described.start_date())).unwrap_or_default()
    );
    if let Some(stopped) = date(described.stop_date()) {
        println!("stopped    {stopped} (after {})", elapsed(described));
    }
    if let Some(error) = described.error() {
        println!("error      {error}");
    }
    if let Some(cause) = described.cause() {
        println!("cause      {cause}");
    }
    if described.output().is_some() {
        println!("output");
        print_json(&output(described))?;
    }
    Ok(())
}

pub(super) fn date(date: Option<&DateTime>) -> Option<String> {
    date.and_then(|d| d.fmt(DateTimeFormat::DateTime).ok())
}

/// Run time so far, or until the stop date.
pub(super) fn elapsed(described: &DescribeExecutionOutput) -> String {
    let millis = |d: &DateTime| d.to_millis().unwrap_or(0);
    let end = described
        .stop_date()
        .map(millis)
        .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
    let seconds = (end - millis(described.start_date())).max(0) as f64 / 1000.0;
    format!("{seconds:.1}s")
}

pub(super) fn print_json(value: &Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("formatting JSON")?;
    println!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_causes_read_as_their_message() {
        assert_eq!(
            readable_cause(r#"{"errorType":"InvalidRequest","errorMessage":"shards: no"}"#),
            "shards: no"
        );
        assert_eq!(readable_cause("States.Timeout"), "States.Timeout");
    }
}
