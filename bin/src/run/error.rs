//! How a `rewind run` command fails, by what the caller can do about it:
//! each kind its exit code.

use std::process::ExitCode;

use aws_sdk_sfn::error::SdkError;

/// How a `rewind run` command failed; each kind has its exit code.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Flags, the request, a name or an ARN: nothing was started.
    #[error(transparent)]
    BadInput(anyhow::Error),
    /// The execution ended without succeeding.
    #[error("execution {name} {status}{}", describe_failure(.error, .cause))]
    Ended {
        name: String,
        status: String,
        error: Option<String>,
        cause: Option<String>,
    },
    /// Step Functions could not be asked; the outcome is unknown.
    #[error(transparent)]
    Unknown(anyhow::Error),
}

fn describe_failure(error: &Option<String>, cause: &Option<String>) -> String {
    let mut text = String::new();
    for part in [error, cause].into_iter().flatten() {
        text.push_str(": ");
        text.push_str(part);
    }
    text
}

impl RunError {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            RunError::Ended { .. } => 1,
            RunError::BadInput(_) => 2,
            RunError::Unknown(_) => 3,
        })
    }
}

pub(super) fn bad_input(error: impl Into<anyhow::Error>) -> RunError {
    RunError::BadInput(error.into())
}

/// An SDK error as bad input when the service says the caller's input is
/// wrong (`input` decides), as an unknown outcome otherwise.
pub(super) fn service_error<E, R>(
    error: SdkError<E, R>,
    input: impl FnOnce(&E) -> bool,
    doing: String,
) -> RunError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let bad = error.as_service_error().is_some_and(input);
    let error = anyhow::Error::new(error).context(doing);
    if bad {
        RunError::BadInput(error)
    } else {
        RunError::Unknown(error)
    }
}
