//! The Step Functions calls that start and describe an execution, their
//! errors sorted into bad input and unknown outcomes.

use aws_sdk_sfn::Client;
use aws_sdk_sfn::operation::describe_execution::{DescribeExecutionError, DescribeExecutionOutput};
use aws_sdk_sfn::operation::start_execution::StartExecutionError;
use aws_sdk_sfn::primitives::DateTime;

use super::error::{RunError, service_error};
use super::request::Checked;

pub(super) struct Started {
    pub(super) execution_arn: String,
    pub(super) start_date: DateTime,
}

pub(super) async fn start(
    client: &Client,
    machine: &str,
    checked: &Checked,
) -> anyhow::Result<Started> {
    let output = client
        .start_execution()
        .state_machine_arn(machine)
        .name(&checked.name)
        .input(&checked.input)
        .send()
        .await
        .map_err(|error| {
            let doing = format!("starting execution {} of {machine}", checked.name);
            service_error(error, start_refused, doing)
        })?;
    Ok(Started {
        execution_arn: output.execution_arn().to_owned(),
        start_date: *output.start_date(),
    })
}

pub(super) async fn describe(
    client: &Client,
    arn: &str,
) -> Result<DescribeExecutionOutput, RunError> {
    client
        .describe_execution()
        .execution_arn(arn)
        .send()
        .await
        .map_err(|error| {
            service_error(
                error,
                describe_refused,
                format!("describing execution {arn}"),
            )
        })
}

/// Start errors that are the request's fault (bad input, not an unknown
/// outcome).
fn start_refused(error: &StartExecutionError) -> bool {
    matches!(
        error,
        StartExecutionError::ExecutionAlreadyExists(_)
            | StartExecutionError::InvalidArn(_)
            | StartExecutionError::InvalidExecutionInput(_)
            | StartExecutionError::InvalidName(_)
            | StartExecutionError::StateMachineDeleting(_)
            | StartExecutionError::StateMachineDoesNotExist(_)
            | StartExecutionError::ValidationException(_)
    )
}

/// Describe errors that are the request's fault.
fn describe_refused(error: &DescribeExecutionError) -> bool {
    matches!(
        error,
        DescribeExecutionError::ExecutionDoesNotExist(_) | DescribeExecutionError::InvalidArn(_)
    )
}
