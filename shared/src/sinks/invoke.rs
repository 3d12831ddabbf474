//! The adapters behind [`crate::sinks::lambda`]: invoking the target function
//! with the official Lambda client, and storing failed batches as the
//! mapping's S3 and SQS on-failure destinations do.

use aws_sdk_lambda::error::{DisplayErrorContext, SdkError};
use aws_sdk_lambda::operation::invoke::InvokeError as SdkInvokeError;
use aws_sdk_lambda::primitives::Blob;

use crate::sinks::lambda::{
    DeliveryError, FailureDestination, FailureRecord, Invocation, InvokeError, Invoker,
};
use crate::store::{ObjectStore, PutObject};

/// A function, invoked synchronously (`RequestResponse`), as the mapping
/// invokes it.
#[derive(Debug, Clone)]
pub struct LambdaInvoker {
    client: aws_sdk_lambda::Client,
    function: String,
    qualifier: Option<String>,
}

impl LambdaInvoker {
    /// `function` is a name or ARN; `qualifier` a version or alias.
    pub fn new(
        client: aws_sdk_lambda::Client,
        function: impl Into<String>,
        qualifier: Option<String>,
    ) -> Self {
        Self {
            client,
            function: function.into(),
            qualifier,
        }
    }
}

/// Invoke errors that a later attempt can get past: the function was not
/// run, so they are not function errors.
fn is_retryable(error: &SdkError<SdkInvokeError>) -> bool {
    match error {
        SdkError::ServiceError(e) => matches!(
            e.err(),
            SdkInvokeError::TooManyRequestsException(_)
                | SdkInvokeError::ServiceException(_)
                | SdkInvokeError::ResourceNotReadyException(_)
                | SdkInvokeError::ResourceConflictException(_)
                | SdkInvokeError::EniLimitReachedException(_)
                | SdkInvokeError::SubnetIpAddressLimitReachedException(_)
                | SdkInvokeError::SnapStartNotReadyException(_)
                | SdkInvokeError::SnapStartTimeoutException(_)
                | SdkInvokeError::EfsMountTimeoutException(_)
        ),
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        _ => false,
    }
}

impl Invoker for LambdaInvoker {
    async fn invoke(&self, payload: Vec<u8>) -> Result<Invocation, InvokeError> {
        let result = self
            .client
            .invoke()
            .function_name(&self.function)
            .set_qualifier(self.qualifier.clone())
            .payload(Blob::new(payload))
            .send()
            .await;
        match result {
            // A function error is an answer: `function_error` says so.
            Ok(output) => Ok(Invocation {
                request_id: aws_sdk_lambda::operation::RequestId::request_id(&output)
                    .unwrap_or_default()
                    .to_owned(),
                status_code: output.status_code(),
                executed_version: output.executed_version().map(str::to_owned),
                function_error: output.function_error().map(str::to_owned),
                payload: output
                    .payload()
                    .map(|p| p.as_ref().to_vec())
                    .unwrap_or_default(),
            }),
            Err(error) if is_retryable(&error) => Err(InvokeError::Retryable {
                message: DisplayErrorContext(&error).to_string(),
            }),
            Err(error) => Err(InvokeError::Fatal {
                message: format!(
                    "invoking {}: {}",
                    self.function,
                    DisplayErrorContext(&error)
                ),
                source: Box::new(error),
            }),
        }
    }

    fn function_arn(&self) -> &str {
        &self.function
    }
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
    async fn send(&self, record: FailureRecord) -> Result<String, DeliveryError> {
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
            .map_err(|error| DeliveryError::Destination {
                message: error.to_string(),
                source: Box::new(error),
            })?;
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
    async fn send(&self, record: FailureRecord) -> Result<String, DeliveryError> {
        let body = serde_json::to_string(&record).expect("a failure record always serialises");
        let output = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(|error| DeliveryError::Destination {
                message: format!(
                    "{}: {}",
                    self.queue_url,
                    aws_sdk_sqs::error::DisplayErrorContext(&error)
                ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_lambda::operation::invoke::InvokeOutput;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    #[tokio::test]
    async fn function_errors_are_answers_and_throttles_are_retryable() {
        let rule = mock!(aws_sdk_lambda::Client::invoke)
            .match_requests(|r| {
                r.function_name() == Some("consumer") && r.qualifier() == Some("live")
            })
            .sequence()
            .output(|| {
                InvokeOutput::builder()
                    .status_code(200)
                    .function_error("Unhandled")
                    .executed_version("7")
                    .payload(Blob::new(&b"{\"errorType\":\"Poison\"}"[..]))
                    .build()
            })
            .http_status(
                429,
                Some(r#"{"__type":"TooManyRequestsException","message":"Rate exceeded"}"#.into()),
            )
            .times(3)
            .http_status(
                404,
                Some(
                    r#"{"__type":"ResourceNotFoundException","Message":"Function not found"}"#
                        .into(),
                ),
            )
            .build();
        let client = mock_client!(aws_sdk_lambda, RuleMode::Sequential, [&rule], |c| c
            .retry_config(aws_sdk_lambda::config::retry::RetryConfig::disabled()));
        let invoker = LambdaInvoker::new(client, "consumer", Some("live".into()));
        let answer = invoker.invoke(b"{}".to_vec()).await.unwrap();
        assert_eq!(answer.function_error.as_deref(), Some("Unhandled"));
        assert_eq!(answer.executed_version.as_deref(), Some("7"));
        for _ in 0..3 {
            assert!(matches!(
                invoker.invoke(b"{}".to_vec()).await,
                Err(InvokeError::Retryable { .. })
            ));
        }
        let fatal = invoker.invoke(b"{}".to_vec()).await.unwrap_err();
        assert!(matches!(fatal, InvokeError::Fatal { .. }), "{fatal}");
        assert!(fatal.to_string().contains("invoking consumer"), "{fatal}");
    }

    #[tokio::test]
    async fn failed_batches_land_under_the_mappings_key_layout() {
        use crate::sinks::lambda::{
            FailureCondition, KinesisBatchInfo, RequestContext, ResponseContext,
        };
        let destination = S3FailureDestination {
            store: crate::store::MemoryStore::default(),
            mapping_id: "replay-42".into(),
            prefix: "dlq".into(),
        };
        let record = FailureRecord {
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
        };
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
}
