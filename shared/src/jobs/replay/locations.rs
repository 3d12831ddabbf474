//! Where a replay's records come from and go, and where its failures and
//! progress go: the parts of a replay request that name places.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::jobs::scrape::ScrapeRequest;
use crate::model::record::ArrivalTime;
use crate::model::seqno::SequenceNumber;

/// Where the records come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
pub enum ReplaySource {
    /// A scrape's manifest.
    Manifest { bucket: String, key: String },
    /// The S3 archive of `stream`, records that arrived in `from..to`.
    Archive {
        bucket: String,
        #[serde(default = "default_archive_prefix")]
        prefix: String,
        /// Stream name, as the archive's partitions name it.
        stream: String,
        /// Epoch seconds, inclusive.
        from: ArrivalTime,
        /// Epoch seconds, exclusive.
        to: ArrivalTime,
    },
    /// The DynamoDB archive (`ALL` items) of one partition key, sequence
    /// numbers in `fromSequenceNumber..=toSequenceNumber`.
    #[serde(rename = "DYNAMODB", rename_all = "camelCase")]
    Dynamodb {
        table: String,
        stream: String,
        partition_key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from_sequence_number: Option<SequenceNumber>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to_sequence_number: Option<SequenceNumber>,
        /// The archive bucket, where records too large for an item keep
        /// their data.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        overflow_bucket: Option<String>,
    },
    /// A scrape request: the replay state machine scrapes first, then
    /// replays the scrape's manifest.
    Scrape { request: Box<ScrapeRequest> },
    /// Local record-line files (the CLI's `--files`; the function refuses
    /// them): each one shard's records in sequence order.
    #[serde(rename_all = "camelCase")]
    Files {
        paths: Vec<PathBuf>,
        /// The stream the records were read from (the events'
        /// `eventSourceARN`); without it, the files' stream in the replay's
        /// own account and region.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream_arn: Option<String>,
    },
}

impl ReplaySource {
    /// Local record-line files.
    pub fn files(paths: Vec<PathBuf>, stream_arn: Option<String>) -> Self {
        Self::Files { paths, stream_arn }
    }
}

fn default_archive_prefix() -> String {
    "archive".to_owned()
}

/// Where the records go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
pub enum ReplayTarget {
    #[serde(rename_all = "camelCase")]
    Function {
        /// Name, ARN or partial ARN.
        function_name: String,
        /// Version or alias.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        qualifier: Option<String>,
        /// The events' `invokeIdentityArn` (a live mapping shows the target
        /// function's execution role); the replay function's default when
        /// absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        invoke_identity_arn: Option<String>,
    },
    /// Re-injection: `PutRecords` onto a stream.
    #[serde(rename_all = "camelCase")]
    Stream {
        /// Name or ARN.
        stream: String,
        /// Wrap each payload in the Node.js archiver's metadata envelope
        /// (`<sep>{originalApproximateArrivalTimestamp,…}<sep><payload>`).
        #[serde(default)]
        include_metadata: bool,
        /// The envelope's separator (1 to 16 bytes of UTF-8).
        #[serde(default = "default_separator")]
        separator: String,
        /// Put records with their original explicit hash keys (to the same
        /// hash ranges), when the record lines have them.
        #[serde(default)]
        keep_explicit_hash_key: bool,
        /// Keep each shard's original inter-arrival timing, this many times
        /// faster (2: twice as fast); absent: as fast as the limits allow.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        speedup: Option<f64>,
    },
}

fn default_separator() -> String {
    "|".to_owned()
}

/// Where failed batches go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
pub enum DlqLocation {
    /// One object per failed batch, with the whole event, as the mapping's
    /// S3 on-failure destination writes it.
    S3 {
        bucket: String,
        #[serde(default = "default_dlq_prefix")]
        prefix: String,
    },
    /// One message per failed batch: the mapping's on-failure record,
    /// without the records.
    #[serde(rename_all = "camelCase")]
    Sqs { queue_url: String },
    /// One message per failed batch to a topic: the record the SQS
    /// destination sends.
    #[serde(rename_all = "camelCase")]
    Sns { topic_arn: String },
}

fn default_dlq_prefix() -> String {
    "dlq".to_owned()
}

/// Where a run keeps its per-shard progress (read by the summary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunOutput {
    pub bucket: String,
    #[serde(default = "default_output_prefix")]
    pub prefix: String,
}

/// Under the S3 DLQ's default prefix, where the stack lets the replay
/// function write (`ReplayPrefix`).
fn default_output_prefix() -> String {
    "dlq/replays".to_owned()
}
