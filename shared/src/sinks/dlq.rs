//! Where the batches a delivery gives up on go: the mapping's on-failure
//! invocation record, the [`FailureDestination`] seam and its S3, SQS and
//! log-only destinations.

use std::future::Future;

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::store::{ObjectStore, PutObject, StoreError};

/// Why a batch went to the on-failure destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureCondition {
    RetryAttemptsExhausted,
    RecordAgeExceeded,
}

/// The mapping's on-failure invocation record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureRecord {
    pub request_context: RequestContext,
    pub response_context: ResponseContext,
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
    pub request_id: String,
    pub function_arn: String,
    pub condition: FailureCondition,
    pub approximate_invoke_count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseContext {
    pub status_code: i32,
    pub executed_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// A DLQ of either kind: the one place a job chooses between an S3 and an
/// SQS on-failure destination.
pub enum Dlq<A, B> {
    S3(A),
    Sqs(B),
}

impl<A: FailureDestination, B: FailureDestination> FailureDestination for Dlq<A, B> {
    async fn send(&self, record: FailureRecord) -> Result<String, DestinationError> {
        match self {
            Self::S3(destination) => destination.send(record).await,
            Self::Sqs(destination) => destination.send(record).await,
        }
    }

    fn wants_payload(&self) -> bool {
        match self {
            Self::S3(destination) => destination.wants_payload(),
            Self::Sqs(destination) => destination.wants_payload(),
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
mod tests {
    use super::*;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    fn failure_record() -> FailureRecord {
        FailureRecord {
            request_context: RequestContext {
                request_id: "r".into(),
                function_arn: "arn:aws:lambda:us-east-1:1:function:f".into(),
                condition: FailureCondition::RetryAttemptsExhausted,
                approximate_invoke_count: 3,
            },
            response_context: ResponseContext {
                status_code: 200,
                executed_version: "$LATEST".into(),
                function_error: Some("Unhandled".into()),
            },
            version: "1.0".into(),
            timestamp: "2024-11-22T10:04:05.123Z".into(),
            kinesis_batch_info: KinesisBatchInfo {
                shard_id: "shardId-000000000001".into(),
                start_sequence_number: "1".into(),
                end_sequence_number: "2".into(),
                approximate_arrival_of_first_record: "2024-11-22T10:00:00.000Z".into(),
                approximate_arrival_of_last_record: "2024-11-22T10:00:01.000Z".into(),
                batch_size: 2,
                stream_arn: "arn:aws:kinesis:us-east-1:1:stream/s".into(),
            },
            payload: Some("{\"Records\":[]}".into()),
        }
    }

    #[tokio::test]
    async fn no_destination_logs_the_batch_and_some_sends_it() {
        let none: Option<MemoryDlq> = None;
        assert!(!none.wants_payload());
        assert_eq!(
            none.send(failure_record()).await.unwrap(),
            "discarded:shardId-000000000001:1-2"
        );
        let some = Some(MemoryDlq {
            with_payload: true,
            ..MemoryDlq::default()
        });
        assert!(some.wants_payload());
        assert_eq!(some.send(failure_record()).await.unwrap(), "dlq-1");
        let kept = some.as_ref().unwrap().records.lock().unwrap();
        assert_eq!(kept.len(), 1);
    }

    #[tokio::test]
    async fn failed_batches_land_under_the_mappings_key_layout() {
        let destination = S3FailureDestination {
            store: crate::store::MemoryStore::default(),
            mapping_id: "replay-42".into(),
            prefix: "dlq".into(),
        };
        let record = failure_record();
        let key = destination.send(record.clone()).await.unwrap();
        assert!(
            key.starts_with(
                "dlq/aws/lambda/replay-42/shardId-000000000001/2024/11/22/2024-11-22T10.04.05-"
            ),
            "{key}"
        );
        let stored = destination.store.objects();
        let back: FailureRecord = serde_json::from_slice(&stored[&key].body).unwrap();
        assert_eq!(back, record);
    }

    #[tokio::test]
    async fn sqs_destination_sends_the_record_without_payload() {
        use aws_sdk_sqs::operation::send_message::SendMessageOutput;
        let rule = mock!(aws_sdk_sqs::Client::send_message)
            .match_requests(|r| {
                let body: serde_json::Value =
                    serde_json::from_str(r.message_body().unwrap()).unwrap();
                r.queue_url() == Some("https://sqs.local/q")
                    && body["KinesisBatchInfo"]["shardId"] == "shardId-000000000009"
                    && body.get("payload").is_none()
            })
            .then_output(|| SendMessageOutput::builder().message_id("m-1").build());
        let client = mock_client!(aws_sdk_sqs, RuleMode::Sequential, [&rule]);
        let destination = SqsFailureDestination {
            client,
            queue_url: "https://sqs.local/q".into(),
        };
        assert!(!destination.wants_payload());
        let record: FailureRecord = serde_json::from_value(serde_json::json!({
            "requestContext": {"requestId": "r", "functionArn": "f", "condition": "RecordAgeExceeded", "approximateInvokeCount": 0},
            "responseContext": {"statusCode": 0, "executedVersion": "$LATEST"},
            "version": "1.0",
            "timestamp": "2024-11-22T10:04:05.123Z",
            "KinesisBatchInfo": {
                "shardId": "shardId-000000000009", "startSequenceNumber": "1", "endSequenceNumber": "1",
                "approximateArrivalOfFirstRecord": "2024-11-22T10:00:00.000Z", "approximateArrivalOfLastRecord": "2024-11-22T10:00:00.000Z",
                "batchSize": 1, "streamArn": "arn:aws:kinesis:us-east-1:1:stream/s"
            }
        }))
        .unwrap();
        assert_eq!(
            destination.send(record).await.unwrap(),
            "https://sqs.local/q#m-1"
        );
        assert_eq!(rule.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_refused_send_names_the_queue_and_keeps_the_sdk_error() {
        let rule = mock!(aws_sdk_sqs::Client::send_message)
            .sequence()
            .http_status(
                400,
                Some(
                    r#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"The specified queue does not exist."}"#
                        .into(),
                ),
            )
            .build();
        let client = mock_client!(aws_sdk_sqs, RuleMode::Sequential, [&rule], |c| c
            .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled()));
        let destination = SqsFailureDestination {
            client,
            queue_url: "https://sqs.local/gone".into(),
        };
        let error = destination.send(failure_record()).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "sending a failed batch to the SQS on-failure destination https://sqs.local/gone failed"
        );
        let source = std::error::Error::source(&error).expect("the SDK error");
        assert!(
            source
                .downcast_ref::<aws_sdk_sqs::error::SdkError<
                    aws_sdk_sqs::operation::send_message::SendMessageError,
                >>()
                .is_some()
        );
    }

    #[tokio::test]
    async fn a_failed_s3_write_keeps_the_store_error() {
        let key = "dlq/aws/lambda/replay-42/shardId-000000000001/2024/11/22/";
        let destination = S3FailureDestination {
            store: FailingStore,
            mapping_id: "replay-42".into(),
            prefix: "dlq".into(),
        };
        let error = destination.send(failure_record()).await.unwrap_err();
        let DestinationError::S3(store) = &error else {
            panic!("{error:?}");
        };
        assert_eq!(store.kind, crate::store::StoreErrorKind::Throttled);
        assert!(store.location.starts_with(key), "{store}");
    }

    /// Every put is throttled, as a bucket answering 503 would be.
    struct FailingStore;

    impl ObjectStore for FailingStore {
        async fn put(&self, object: PutObject) -> Result<(), StoreError> {
            Err(StoreError {
                operation: crate::store::Operation::Put,
                location: object.key,
                kind: crate::store::StoreErrorKind::Throttled,
                source: Some("SlowDown".into()),
            })
        }

        async fn delete(&self, _key: &str) -> Result<(), StoreError> {
            Ok(())
        }
    }
}
