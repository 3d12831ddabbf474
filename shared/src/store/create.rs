//! Writing an object only if its key is free: S3's conditional
//! `PutObject` with `If-None-Match: *`
//! (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html>).
//! An object that must be written once and never replaced (a shard marker)
//! costs one request, and a second writer learns that the key is taken
//! instead of overwriting it.

use std::future::Future;

use aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder;
use aws_sdk_s3::primitives::ByteStream;

use super::{Operation, PutObject, S3Store, StoreError};

/// What a create-once put found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The object was written.
    New,
    /// An object was already under the key; nothing was written.
    AlreadyThere,
}

/// Stores that can write an object only where none is.
pub trait CreateObject: Send + Sync {
    fn create(&self, object: PutObject)
    -> impl Future<Output = Result<Created, StoreError>> + Send;
}

impl S3Store {
    /// The `PutObject` request of `object`, and its key (for errors).
    pub(super) fn put_request(&self, object: PutObject) -> (String, PutObjectFluentBuilder) {
        let PutObject {
            key,
            body,
            content_type,
            content_encoding,
        } = object;
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type(content_type)
            .set_content_encoding(content_encoding.map(str::to_owned))
            .body(ByteStream::from(body));
        (key, request)
    }
}

impl CreateObject for S3Store {
    async fn create(&self, object: PutObject) -> Result<Created, StoreError> {
        let (key, request) = self.put_request(object);
        let result = request.if_none_match("*").send().await;
        match result {
            Ok(_) => Ok(Created::New),
            // 412 Precondition Failed: the key holds an object. (A 409
            // ConditionalRequestConflict, a concurrent write of the same
            // key, stays an error: the caller tries again later.)
            Err(error) if error.raw_response().map(|r| r.status().as_u16()) == Some(412) => {
                Ok(Created::AlreadyThere)
            }
            Err(error) => Err(self.error(Operation::Put, &key, error)),
        }
    }
}

#[cfg(test)]
impl CreateObject for super::MemoryStore {
    async fn create(&self, object: PutObject) -> Result<Created, StoreError> {
        use super::ObjectStore as _;
        if self.objects.lock().unwrap().contains_key(&object.key) {
            return Ok(Created::AlreadyThere);
        }
        self.put(object).await.map(|()| Created::New)
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_s3::operation::put_object::PutObjectOutput;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    use super::*;

    fn object() -> PutObject {
        PutObject {
            key: "archive/stream=s/_shards/shardId-1.json".into(),
            body: b"{}".to_vec(),
            content_type: "application/json",
            content_encoding: None,
        }
    }

    /// The request carries `If-None-Match: *`; S3's 412 is "already there"
    /// and any other failure an error naming the object.
    #[tokio::test]
    async fn a_taken_key_is_not_an_error() {
        let rule = mock!(aws_sdk_s3::Client::put_object)
            .match_requests(|req| req.if_none_match() == Some("*"))
            .sequence()
            .output(|| PutObjectOutput::builder().build())
            .http_status(
                412,
                Some("<Error><Code>PreconditionFailed</Code></Error>".into()),
            )
            .http_status(403, Some("<Error><Code>AccessDenied</Code></Error>".into()))
            .build();
        let client = mock_client!(aws_sdk_s3, RuleMode::Sequential, [&rule]);
        let store = S3Store::new(client, "b");
        assert_eq!(store.create(object()).await.unwrap(), Created::New);
        assert_eq!(store.create(object()).await.unwrap(), Created::AlreadyThere);
        let error = store.create(object()).await.unwrap_err();
        assert_eq!(
            error.location,
            "s3://b/archive/stream=s/_shards/shardId-1.json"
        );
        assert_eq!(error.kind, super::super::StoreErrorKind::Refused);
    }
}
