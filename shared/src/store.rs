//! Object storage as the engine needs it: put a finished object under a key.
//!
//! [`ObjectStore`] is the seam; [`S3Store`] is the adapter over the official
//! SDK client. Retrying throttled or failed requests (`SlowDown`, 5xx) is the
//! SDK's job: its standard retry strategy backs off with jitter, and the
//! caller sets how many attempts fit its time budget on the client config.

use std::future::Future;

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;

/// One object to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutObject {
    pub key: String,
    pub body: Vec<u8>,
    pub content_type: &'static str,
    pub content_encoding: Option<&'static str>,
}

/// A put that did not succeed, after the client's own retries.
#[derive(Debug, thiserror::Error)]
#[error("putting s3://{bucket}/{key} failed: {message}")]
pub struct StoreError {
    pub bucket: String,
    pub key: String,
    /// The SDK's error with all its context (code, request id, cause).
    pub message: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Where finished objects go.
pub trait ObjectStore: Send + Sync {
    fn put(&self, object: PutObject) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// An S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Store {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

impl ObjectStore for S3Store {
    async fn put(&self, object: PutObject) -> Result<(), StoreError> {
        let PutObject {
            key,
            body,
            content_type,
            content_encoding,
        } = object;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type(content_type)
            .set_content_encoding(content_encoding.map(str::to_owned))
            .body(ByteStream::from(body))
            .send()
            .await
            .map(|_| ())
            .map_err(|error| StoreError {
                bucket: self.bucket.clone(),
                key,
                message: DisplayErrorContext(&error).to_string(),
                source: Box::new(error),
            })
    }
}

/// An in-memory store for the engine's own tests.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct MemoryStore {
    objects: std::sync::Mutex<std::collections::BTreeMap<String, StoredObject>>,
    failing_key: Option<String>,
}

#[cfg(test)]
#[derive(Debug, Clone)]
pub(crate) struct StoredObject {
    pub body: Vec<u8>,
    pub content_encoding: Option<String>,
}

#[cfg(test)]
impl MemoryStore {
    /// Every put of `key` fails, as a bucket that keeps answering 503 would.
    pub(crate) fn failing_on(mut self, key: &str) -> Self {
        self.failing_key = Some(key.to_owned());
        self
    }

    pub(crate) fn objects(&self) -> std::collections::BTreeMap<String, StoredObject> {
        self.objects.lock().unwrap().clone()
    }
}

#[cfg(test)]
impl ObjectStore for MemoryStore {
    async fn put(&self, object: PutObject) -> Result<(), StoreError> {
        if self.failing_key.as_deref() == Some(object.key.as_str()) {
            return Err(StoreError {
                bucket: "memory".into(),
                key: object.key,
                message: "SlowDown".into(),
                source: "SlowDown".into(),
            });
        }
        self.objects.lock().unwrap().insert(
            object.key,
            StoredObject {
                body: object.body,
                content_encoding: object.content_encoding.map(str::to_owned),
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::operation::put_object::PutObjectOutput;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    fn object() -> PutObject {
        PutObject {
            key: "archive/k.jsonl.gz".into(),
            body: b"body".to_vec(),
            content_type: "application/x-ndjson",
            content_encoding: Some("gzip"),
        }
    }

    #[tokio::test]
    async fn throttled_puts_are_retried_by_the_client() {
        let rule = mock!(aws_sdk_s3::Client::put_object)
            .match_requests(|req| {
                req.bucket() == Some("b")
                    && req.key() == Some("archive/k.jsonl.gz")
                    && req.content_encoding() == Some("gzip")
                    && req.content_type() == Some("application/x-ndjson")
            })
            .sequence()
            .http_status(503, Some("<Error><Code>SlowDown</Code></Error>".into()))
            .times(2)
            .output(|| PutObjectOutput::builder().build())
            .build();
        let client = mock_client!(aws_sdk_s3, RuleMode::Sequential, [&rule], |c| c
            .retry_config(
                aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(3)
            ));
        S3Store::new(client, "b").put(object()).await.unwrap();
        assert_eq!(rule.num_calls(), 3);
    }

    #[tokio::test]
    async fn exhausted_retries_are_an_error_naming_the_object() {
        let rule = mock!(aws_sdk_s3::Client::put_object)
            .sequence()
            .http_status(503, Some("<Error><Code>SlowDown</Code></Error>".into()))
            .times(3)
            .build();
        let client = mock_client!(aws_sdk_s3, RuleMode::Sequential, [&rule], |c| c
            .retry_config(
                aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(3)
            ));
        let err = S3Store::new(client, "b").put(object()).await.unwrap_err();
        assert_eq!(rule.num_calls(), 3);
        assert!(
            err.to_string()
                .starts_with("putting s3://b/archive/k.jsonl.gz failed: "),
            "{err}"
        );
    }
}
