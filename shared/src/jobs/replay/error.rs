//! Why a replay invocation failed, and the stable error type names the
//! replay state machine matches.

use crate::model::event::StreamArnError;
use crate::request::RequestError;
use crate::sinks::kinesis::ReinjectError;
use crate::sinks::lambda::DeliveryError;
use crate::sources::dynamodb::ReadError;
use crate::store::StoreError;

/// Why a replay invocation failed, with a stable type name that the state
/// machine matches.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("invalid replay request: {}: {}", .0.field, .0.message)]
    InvalidRequest(#[from] RequestError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading the source failed: {0}")]
    Source(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Dynamo(#[from] ReadError),
    #[error("{key}: not a scrape manifest: {source}")]
    Manifest {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "invalid replay request: source: a SCRAPE source is scraped by the replay state machine first; the replay function takes MANIFEST, ARCHIVE and DYNAMODB sources"
    )]
    ScrapeFirst,
    #[error(transparent)]
    StreamArn(#[from] StreamArnError),
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error("re-injection failed: {0}")]
    Reinject(#[from] ReinjectError),
    #[error("writing the run's progress failed: {0}")]
    Progress(#[source] StoreError),
    #[error("shard {shard_id} has no final progress at {key}: its replay did not finish")]
    Unfinished { shard_id: String, key: String },
}

impl ReplayError {
    /// `InvalidRequest` fails the execution at once; the others are retried.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_)
            | Self::Manifest { .. }
            | Self::StreamArn(_)
            | Self::ScrapeFirst => "InvalidRequest",
            Self::Delivery(DeliveryError::Options { .. }) => "InvalidRequest",
            // Denied, no such function: retrying won't help.
            Self::Delivery(DeliveryError::Invoke(crate::sinks::lambda::InvokeError::Fatal {
                ..
            })) => "InvokeRejected",
            Self::Delivery(DeliveryError::Invoke(_)) => "InvokeFailed",
            Self::Progress(_) => "OutputWriteFailed",
            Self::Delivery(DeliveryError::Destination { .. }) => "DlqWriteFailed",
            Self::Reinject(_) => "ReinjectFailed",
            Self::Store(_) | Self::Source(_) | Self::Dynamo(_) => "SourceReadFailed",
            Self::Unfinished { .. } => "ShardUnfinished",
        }
    }
}
