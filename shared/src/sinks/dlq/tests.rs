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
        response_context: Some(ResponseContext {
            status_code: 200,
            executed_version: "$LATEST".into(),
            function_error: Some("Unhandled".into()),
        }),
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
            let body: serde_json::Value = serde_json::from_str(r.message_body().unwrap()).unwrap();
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

/// Issue 12, point 6: the mapping's third destination type. "You can
/// configure any Amazon SNS topic or Amazon SQS queue as a destination"
/// (https://docs.aws.amazon.com/lambda/latest/dg/kinesis-on-failure-destination.html);
/// the topic gets the record the queue would.
#[tokio::test]
async fn sns_destination_publishes_what_the_sqs_destination_sends() {
    use aws_sdk_sns::operation::publish::PublishOutput;
    use aws_sdk_sqs::operation::send_message::SendMessageOutput;
    use std::sync::{Arc, Mutex};
    let published = Arc::new(Mutex::new(Vec::new()));
    let seen = published.clone();
    let publish = mock!(aws_sdk_sns::Client::publish)
        .match_requests(move |r| {
            seen.lock()
                .unwrap()
                .push(r.message().unwrap_or_default().to_owned());
            r.topic_arn() == Some("arn:aws:sns:eu-west-1:111122223333:dlq")
        })
        .then_output(|| PublishOutput::builder().message_id("n-1").build());
    let queued = Arc::new(Mutex::new(Vec::new()));
    let seen = queued.clone();
    let send = mock!(aws_sdk_sqs::Client::send_message)
        .match_requests(move |r| {
            seen.lock()
                .unwrap()
                .push(r.message_body().unwrap_or_default().to_owned());
            true
        })
        .then_output(|| SendMessageOutput::builder().message_id("m-1").build());
    let sns = SnsFailureDestination {
        client: mock_client!(aws_sdk_sns, RuleMode::Sequential, [&publish]),
        topic_arn: "arn:aws:sns:eu-west-1:111122223333:dlq".into(),
    };
    let sqs = SqsFailureDestination {
        client: mock_client!(aws_sdk_sqs, RuleMode::Sequential, [&send]),
        queue_url: "https://sqs.local/q".into(),
    };
    assert!(!sns.wants_payload());
    let record = FailureRecord {
        payload: None,
        ..failure_record()
    };
    assert_eq!(
        sns.send(record.clone()).await.unwrap(),
        "arn:aws:sns:eu-west-1:111122223333:dlq#n-1"
    );
    sqs.send(record.clone()).await.unwrap();
    let published = published.lock().unwrap().clone();
    assert_eq!(published.len(), 1);
    assert_eq!(published, *queued.lock().unwrap());
    let back: FailureRecord = serde_json::from_str(&published[0]).unwrap();
    assert_eq!(back, record);

    // Either way, the destination's own error is kept as the source.
    let refused = mock!(aws_sdk_sns::Client::publish)
        .sequence()
        .http_status(
            404,
            Some(r#"<ErrorResponse><Error><Type>Sender</Type><Code>NotFound</Code><Message>Topic does not exist</Message></Error></ErrorResponse>"#.into()),
        )
        .build();
    let sns = SnsFailureDestination {
        client: mock_client!(aws_sdk_sns, RuleMode::Sequential, [&refused], |c| c
            .retry_config(aws_sdk_sns::config::retry::RetryConfig::disabled())),
        topic_arn: "arn:aws:sns:eu-west-1:111122223333:gone".into(),
    };
    let error = sns.send(record).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "publishing a failed batch to the SNS on-failure destination arn:aws:sns:eu-west-1:111122223333:gone failed"
    );
    assert!(std::error::Error::source(&error).is_some());
}

#[test]
fn request_ids_are_new_version_4_uuids() {
    let ids: std::collections::BTreeSet<String> = (0..1000).map(|_| new_request_id()).collect();
    assert_eq!(ids.len(), 1000);
    for id in ids {
        let groups: Vec<&str> = id.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12],
            "{id}"
        );
        assert!(groups[2].starts_with('4'), "{id}");
        assert!(groups[3].starts_with(['8', '9', 'a', 'b']), "{id}");
        assert!(
            id.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()),
            "{id}"
        );
    }
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
