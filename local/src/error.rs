//! The local stack's one error type: each variant says what failed and, where
//! there is one, what to do about it.

use std::path::PathBuf;

/// Everything that can go wrong installing, starting, driving or stopping the
/// local stack.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not find the workspace root (a Cargo.toml with [workspace]) above {start}")]
    NoWorkspace { start: PathBuf },

    #[error("{what}: {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("could not run `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },

    #[error("`{command}` failed ({status}); its output is in {log}")]
    CommandFailed {
        command: String,
        status: std::process::ExitStatus,
        log: PathBuf,
    },

    #[error("{tool} is needed for the local stack and was not found: {hint}")]
    MissingTool {
        tool: &'static str,
        hint: &'static str,
    },

    #[error(
        "kinesis-local's main.js no longer holds the host literal \"0.0.0.0\" exactly once ({found} found): re-check the patch that makes it listen on loopback"
    )]
    PatchKinesisMock { found: usize },

    #[error("{service} did not become ready within {seconds} s; its log is {log}")]
    NotReady {
        service: &'static str,
        seconds: u64,
        log: PathBuf,
    },

    #[error("{service} exited during start-up ({status}); its log is {log}")]
    Exited {
        service: &'static str,
        status: std::process::ExitStatus,
        log: PathBuf,
    },

    #[error("could not read the workspace's functions from `cargo metadata`")]
    Metadata(#[source] serde_json::Error),

    #[error("the local stack's endpoint {endpoint} did not answer: {message}")]
    Admin { endpoint: String, message: String },

    #[error("the local stack's endpoint {endpoint} did not answer: reading the answer failed")]
    AdminBody {
        endpoint: String,
        #[source]
        source: hyper::Error,
    },

    #[error("HTTP request to {url} failed")]
    Http {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },

    #[error("no local stack is running (no {state})")]
    NotRunning { state: PathBuf },

    #[error("the stack state file {path} is not valid")]
    State {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error(transparent)]
    Template(#[from] crate::statemachine::TemplateError),

    #[error("execution {name} of the local stack's Step Functions: could not {doing} it")]
    Execution {
        name: String,
        /// `start` or `describe`.
        doing: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("execution {name} of the local stack's Step Functions: still running after {limit:?}")]
    ExecutionTimedOut {
        name: String,
        limit: std::time::Duration,
    },

    #[error("describing {stream}")]
    DescribeStream {
        stream: String,
        #[source]
        source: Box<
            aws_sdk_kinesis::error::SdkError<
                aws_sdk_kinesis::operation::describe_stream_summary::DescribeStreamSummaryError,
            >,
        >,
    },

    #[error("stream {stream} not ACTIVE after {seconds} s")]
    NotActive { stream: String, seconds: u64 },

    #[error("could not create state machine {name} in the local stack")]
    CreateStateMachine {
        name: String,
        #[source]
        source: Box<
            aws_sdk_sfn::error::SdkError<
                aws_sdk_sfn::operation::create_state_machine::CreateStateMachineError,
            >,
        >,
    },
}

impl Error {
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { what, path, source }
    }
}
