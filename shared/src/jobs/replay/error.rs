//! Why a replay invocation failed, and the stable error type names the
//! replay state machine matches.

use crate::jobs::step::ErrorType;
use crate::model::event::StreamArnError;
use crate::request::RequestError;
use crate::sinks::TargetError;
use crate::sinks::kinesis::ReinjectError;
use crate::sinks::lambda::DeliveryError;
use crate::sinks::lambda::invoker::InvokeError;
use crate::sources::SourceError;
use crate::store::StoreError;

/// Why a replay invocation failed, with a stable type name that the state
/// machine matches.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Not the error's source: its text is all in this message already,
    /// and a source would print it again (as a scrape request's).
    #[error("invalid replay request: {}: {}", .0.field, .0.message)]
    InvalidRequest(RequestError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(
        "invalid replay request: source: a SCRAPE source is scraped by the replay state machine first; the replay function takes MANIFEST, ARCHIVE and DYNAMODB sources"
    )]
    ScrapeFirst,
    #[error(transparent)]
    StreamArn(#[from] StreamArnError),
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    /// Re-injection failed (the error names the stream and the entry).
    #[error(transparent)]
    Reinject(#[from] ReinjectError),
    /// Writing the run's progress failed (the error names the object).
    #[error(transparent)]
    Progress(StoreError),
    /// Reading or writing a tumbling window's state beside the checkpoint
    /// failed (the error names the object).
    #[error(transparent)]
    WindowState(#[from] crate::sinks::window_target::WindowStateError),
    #[error("shard {shard_id} has no final progress at {key}: its replay did not finish")]
    Unfinished { shard_id: String, key: String },
    /// The plan's stored shards could not be read back.
    #[error(transparent)]
    Plan(#[from] crate::jobs::items::ItemsError),
}

impl From<RequestError> for ReplayError {
    fn from(error: RequestError) -> Self {
        Self::InvalidRequest(error)
    }
}

impl From<TargetError> for ReplayError {
    fn from(error: TargetError) -> Self {
        match error {
            TargetError::Delivery(error) => Self::Delivery(error),
            TargetError::Reinject(error) => Self::Reinject(error),
            TargetError::Window(error) => Self::WindowState(error),
        }
    }
}

impl From<crate::sources::files::FilesError> for ReplayError {
    fn from(error: crate::sources::files::FilesError) -> Self {
        Self::Source(error.into())
    }
}

/// `InvalidRequest` fails the execution at once; the others are retried.
impl ErrorType for ReplayError {
    fn error_type(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_)
            | Self::Source(SourceError::Manifest { .. } | SourceError::Request(_))
            | Self::StreamArn(_)
            | Self::ScrapeFirst => "InvalidRequest",
            Self::Delivery(DeliveryError::Options { .. }) => "InvalidRequest",
            // Denied, no such function: retrying won't help.
            Self::Delivery(DeliveryError::Invoke(
                InvokeError::Fatal { .. }
                | InvokeError::Configuration {
                    retryable: false, ..
                },
            )) => "InvokeRejected",
            Self::Delivery(DeliveryError::Invoke(_)) => "InvokeFailed",
            Self::Progress(_) | Self::Plan(_) | Self::WindowState(_) => "OutputWriteFailed",
            Self::Delivery(DeliveryError::Destination { .. }) => "DlqWriteFailed",
            Self::Reinject(_) => "ReinjectFailed",
            Self::Store(_) | Self::Source(_) => "SourceReadFailed",
            Self::Unfinished { .. } => "ShardUnfinished",
        }
    }
}
