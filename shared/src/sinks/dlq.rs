//! Where the batches a delivery gives up on go: the mapping's on-failure
//! invocation record, the [`FailureDestination`] seam and its S3, SQS, SNS
//! and log-only destinations.

use std::future::Future;

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::model::record::{ArrivalTime, Record};
use crate::sinks::lambda::invoker::Invocation;
use crate::store::{ObjectStore, PutObject, StoreError};

/// Why a batch went to the on-failure destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureCondition {
    RetryAttemptsExhausted,
    RecordAgeExceeded,
}

/// The mapping's on-failure invocation record, field for field as AWS
/// writes it (<https://docs.aws.amazon.com/lambda/latest/dg/kinesis-on-failure-destination.html>);
/// [`FailureRecord::for_batch`] fills it for each condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureRecord {
    pub request_context: RequestContext,
    /// Absent for `RecordAgeExceeded`: AWS writes none, invoked or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_context: Option<ResponseContext>,
    pub version: String,
    /// ISO 8601, milliseconds, UTC.
    pub timestamp: String,
    #[serde(rename = "KinesisBatchInfo")]
    pub kinesis_batch_info: KinesisBatchInfo,
    /// The whole invocation event, as JSON text (S3 destinations only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestContext {
    /// The request id of the invocation the record describes (a UUID).
    pub request_id: String,
    /// The full function ARN, with the qualifier the mapping invokes.
    pub function_arn: String,
    pub condition: FailureCondition,
    pub approximate_invoke_count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseContext {
    pub status_code: i32,
    pub executed_version: String,
    /// `Unhandled`/`Handled`, or `null` when the function answered without
    /// an error (a batch failed by its partial batch response): AWS writes
    /// the key either way.
    #[serde(default)]
    pub function_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KinesisBatchInfo {
    pub shard_id: String,
    pub start_sequence_number: String,
    pub end_sequence_number: String,
    pub approximate_arrival_of_first_record: String,
    pub approximate_arrival_of_last_record: String,
    pub batch_size: usize,
    pub stream_arn: String,
}

impl KinesisBatchInfo {
    /// The batch's first and last records, and its size. `batch` is never
    /// empty: only a batch that was cut goes to the destination.
    pub fn of<R: std::borrow::Borrow<Record>>(batch: &[R], stream_arn: &str) -> Self {
        let (first, last) = (batch[0].borrow(), batch[batch.len() - 1].borrow());
        Self {
            shard_id: first.shard_id.clone(),
            start_sequence_number: first.sequence_number.to_string(),
            end_sequence_number: last.sequence_number.to_string(),
            approximate_arrival_of_first_record: first.approximate_arrival_timestamp.to_string(),
            approximate_arrival_of_last_record: last.approximate_arrival_timestamp.to_string(),
            batch_size: batch.len(),
            stream_arn: stream_arn.to_owned(),
        }
    }
}

/// What the on-failure record says of the batch and its invocations.
#[derive(Debug, Clone, Copy)]
pub struct FailedBatch<'a> {
    pub condition: FailureCondition,
    /// The full function ARN (with its qualifier).
    pub function_arn: &'a str,
    /// The batch's last invocation, if it had one.
    pub last: Option<&'a Invocation>,
    /// Invocations of this batch so far.
    pub invokes: u64,
    pub now: ArrivalTime,
}

impl FailureRecord {
    /// The record AWS writes for `failed.condition`:
    /// - `RetryAttemptsExhausted`: the last invocation's request id and
    ///   response (`functionError` `null` when the function answered
    ///   without one, as for a failed partial batch response);
    /// - `RecordAgeExceeded`: no `responseContext`, a request id (the last
    ///   invocation's, or a new UUID) and `approximateInvokeCount` at least
    ///   1, even for a batch that was never invoked.
    pub fn for_batch(
        failed: FailedBatch<'_>,
        info: KinesisBatchInfo,
        payload: Option<String>,
    ) -> Self {
        let request_id = failed
            .last
            .map(|i| i.request_id.clone())
            .filter(|id| !id.is_empty())
            .unwrap_or_else(new_request_id);
        let (response_context, approximate_invoke_count) = match failed.condition {
            FailureCondition::RecordAgeExceeded => (None, failed.invokes.max(1)),
            FailureCondition::RetryAttemptsExhausted => (
                failed.last.map(|i| ResponseContext {
                    status_code: i.status_code,
                    executed_version: i
                        .executed_version
                        .clone()
                        .unwrap_or_else(|| "$LATEST".to_owned()),
                    function_error: i.function_error.clone(),
                }),
                failed.invokes,
            ),
        };
        Self {
            request_context: RequestContext {
                request_id,
                function_arn: failed.function_arn.to_owned(),
                condition: failed.condition,
                approximate_invoke_count,
            },
            response_context,
            version: "1.0".to_owned(),
            timestamp: failed.now.to_string(),
            kinesis_batch_info: info,
            payload,
        }
    }
}

/// A request id as Lambda makes them: a random (version 4) UUID.
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Storing a failed batch failed: the delivery can't go on without losing
/// it.
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    #[error("writing a failed batch to the S3 on-failure destination failed")]
    S3(#[source] StoreError),
    #[error("sending a failed batch to the SQS on-failure destination {queue_url} failed")]
    Sqs {
        queue_url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("publishing a failed batch to the SNS on-failure destination {topic_arn} failed")]
    Sns {
        topic_arn: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Where exhausted batches go.
pub trait FailureDestination: Send + Sync {
    /// Stores one record; returns where (an S3 key or an SQS message id).
    fn send(
        &self,
        record: FailureRecord,
    ) -> impl Future<Output = Result<String, DestinationError>> + Send;
    /// Whether records carry the full event payload (S3 destinations do).
    fn wants_payload(&self) -> bool;
}

/// The S3 on-failure destination: one object per failed batch, with the
/// whole invocation event in `payload`, under the key layout the mapping
/// uses: `aws/lambda/<mapping id>/<shardId>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<id>`.
pub struct S3FailureDestination<S> {
    pub store: S,
    /// Stands in for the event source mapping's UUID: the replay run's id.
    pub mapping_id: String,
    /// Prefix before `aws/lambda/` (empty for the bucket root, as the
    /// mapping writes).
    pub prefix: String,
}

impl<S: ObjectStore> FailureDestination for S3FailureDestination<S> {
    async fn send(&self, record: FailureRecord) -> Result<String, DestinationError> {
        // `timestamp` is ISO 8601 (`2024-11-22T10:00:00.000Z`).
        let t = &record.timestamp;
        let (date, time) = t.split_once('T').unwrap_or((t.as_str(), ""));
        let stamp = format!(
            "{date}T{}",
            time.get(..8).unwrap_or("00:00:00").replace(':', ".")
        );
        let key = format!(
            "{}aws/lambda/{}/{}/{}/{stamp}-{:016x}{:016x}",
            if self.prefix.is_empty() {
                String::new()
            } else {
                format!("{}/", self.prefix.trim_end_matches('/'))
            },
            self.mapping_id,
            record.kinesis_batch_info.shard_id,
            date.replace('-', "/"),
            fastrand::u64(..),
            fastrand::u64(..),
        );
        let body = serde_json::to_vec(&record).expect("a failure record always serialises");
        self.store
            .put(PutObject {
                key: key.clone(),
                body,
                content_type: "application/json",
                content_encoding: None,
            })
            .await
            .map_err(DestinationError::S3)?;
        Ok(key)
    }

    fn wants_payload(&self) -> bool {
        true
    }
}

/// The SQS on-failure destination: the mapping's invocation record (no
/// payload; the records are read back from the stream or the archive by
/// their `KinesisBatchInfo`).
#[derive(Debug, Clone)]
pub struct SqsFailureDestination {
    pub client: aws_sdk_sqs::Client,
    pub queue_url: String,
}

impl FailureDestination for SqsFailureDestination {
    async fn send(&self, record: FailureRecord) -> Result<String, DestinationError> {
        let body = serde_json::to_string(&record).expect("a failure record always serialises");
        let output = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(|error| DestinationError::Sqs {
                queue_url: self.queue_url.clone(),
                source: Box::new(error),
            })?;
        Ok(format!(
            "{}#{}",
            self.queue_url,
            output.message_id().unwrap_or_default()
        ))
    }

    fn wants_payload(&self) -> bool {
        false
    }
}

/// The SNS on-failure destination: the record as the SQS destination sends
/// it (no payload), as the message. An SNS message holds at most 256 KB;
/// the record without its payload is well under 1 KB.
#[derive(Debug, Clone)]
pub struct SnsFailureDestination {
    pub client: aws_sdk_sns::Client,
    pub topic_arn: String,
}

impl FailureDestination for SnsFailureDestination {
    async fn send(&self, record: FailureRecord) -> Result<String, DestinationError> {
        let body = serde_json::to_string(&record).expect("a failure record always serialises");
        let output = self
            .client
            .publish()
            .topic_arn(&self.topic_arn)
            .message(body)
            .send()
            .await
            .map_err(|error| DestinationError::Sns {
                topic_arn: self.topic_arn.clone(),
                source: Box::new(error),
            })?;
        Ok(format!(
            "{}#{}",
            self.topic_arn,
            output.message_id().unwrap_or_default()
        ))
    }

    fn wants_payload(&self) -> bool {
        false
    }
}

/// A destination for mappings configured without one: Lambda then drops a
/// discarded batch, with nothing but its metrics to show. Locally it is
/// logged (stream, shard, sequence range; never the records) at `warn`, so
/// it is never silent, and counted as a failed batch.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogOnlyDestination;

impl FailureDestination for LogOnlyDestination {
    async fn send(&self, record: FailureRecord) -> Result<String, DestinationError> {
        let info = &record.kinesis_batch_info;
        warn!(
            stream = %info.stream_arn,
            shard = %info.shard_id,
            first = %info.start_sequence_number,
            last = %info.end_sequence_number,
            records = info.batch_size,
            condition = ?record.request_context.condition,
            "batch discarded (no on-failure destination configured)"
        );
        Ok(format!(
            "discarded:{}:{}-{}",
            info.shard_id, info.start_sequence_number, info.end_sequence_number
        ))
    }

    fn wants_payload(&self) -> bool {
        false
    }
}

/// A DLQ of any kind: the one place a job chooses between an S3, an SQS
/// and an SNS on-failure destination.
pub enum Dlq<A, B, C = SnsFailureDestination> {
    S3(A),
    Sqs(B),
    Sns(C),
}

impl<A: FailureDestination, B: FailureDestination, C: FailureDestination> FailureDestination
    for Dlq<A, B, C>
{
    async fn send(&self, record: FailureRecord) -> Result<String, DestinationError> {
        match self {
            Self::S3(destination) => destination.send(record).await,
            Self::Sqs(destination) => destination.send(record).await,
            Self::Sns(destination) => destination.send(record).await,
        }
    }

    fn wants_payload(&self) -> bool {
        match self {
            Self::S3(destination) => destination.wants_payload(),
            Self::Sqs(destination) => destination.wants_payload(),
            Self::Sns(destination) => destination.wants_payload(),
        }
    }
}

/// A mapping's destination, when it has one; [`LogOnlyDestination`] when it
/// has none.
impl<D: FailureDestination> FailureDestination for Option<D> {
    async fn send(&self, record: FailureRecord) -> Result<String, DestinationError> {
        match self {
            Some(destination) => destination.send(record).await,
            None => LogOnlyDestination.send(record).await,
        }
    }

    fn wants_payload(&self) -> bool {
        self.as_ref().is_some_and(FailureDestination::wants_payload)
    }
}

/// An in-memory DLQ for the delivery and mapping tests: keeps every record
/// it is sent, in order.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct MemoryDlq {
    pub records: std::sync::Mutex<Vec<FailureRecord>>,
    /// Whether it asks for the batch's records, as the S3 destination does.
    pub with_payload: bool,
}

#[cfg(test)]
impl FailureDestination for MemoryDlq {
    async fn send(&self, record: FailureRecord) -> Result<String, DestinationError> {
        let mut records = self.records.lock().unwrap();
        records.push(record);
        Ok(format!("dlq-{}", records.len()))
    }

    fn wants_payload(&self) -> bool {
        self.with_payload
    }
}

#[cfg(test)]
mod tests;
