//! Create-only writes: an object is stored only when nothing is stored
//! under its key yet, atomically, so that two writers racing for one key
//! can't both believe they won. A run's folder is claimed this way
//! ([`crate::jobs::claim`]).
//!
//! S3 does it with a conditional `PutObject` (`If-None-Match: *`): 412
//! `PreconditionFailed` when the key exists, 409
//! `ConditionalRequestConflict` while another conditional write of the key
//! is in flight (retry it; the retry then sees the winner's object).
//! <https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html>

use std::future::Future;
use std::io::Write as _;

use aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder;
use aws_sdk_s3::primitives::ByteStream;

use super::{DirStore, Operation, PutObject, S3Store, StoreError, StoreErrorKind, s3_kind};

/// What a create-only write found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The object is ours.
    New,
    /// Something was stored under the key already; it is left as it was.
    Exists,
}

/// A store that can write an object only where none is.
pub trait CreateNew: Send + Sync {
    fn create_new(
        &self,
        object: PutObject,
    ) -> impl Future<Output = Result<Created, StoreError>> + Send;
}

/// How often a write that met another conditional write in flight (409) is
/// tried again before the conflict is reported.
const CONFLICT_ATTEMPTS: u32 = 4;

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

impl CreateNew for S3Store {
    async fn create_new(&self, object: PutObject) -> Result<Created, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (_, request) = self.put_request(object.clone());
            let sent = request.if_none_match("*").send().await;
            let error = match sent {
                Ok(_) => return Ok(Created::New),
                Err(error) => error,
            };
            let status = error.raw_response().map(|raw| raw.status().as_u16());
            match status {
                Some(412) => return Ok(Created::Exists),
                Some(409) if attempt < CONFLICT_ATTEMPTS => {
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                }
                _ => {
                    return Err(self.failed(
                        Operation::Put,
                        &object.key,
                        match status {
                            // Still racing after every attempt: a later try
                            // finds the winner's object.
                            Some(409) => StoreErrorKind::Retryable,
                            _ => s3_kind(&error),
                        },
                        Box::new(error),
                    ));
                }
            }
        }
    }
}

impl CreateNew for DirStore {
    async fn create_new(&self, object: PutObject) -> Result<Created, StoreError> {
        let path = self.path(&object.key);
        let write = || -> std::io::Result<Created> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            // `create_new` is O_CREAT | O_EXCL: the file system decides who
            // was first. The body is small (a run record), written at once.
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    file.write_all(&object.body)?;
                    file.sync_all()?;
                    Ok(Created::New)
                }
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                    Ok(Created::Exists)
                }
                Err(error) => Err(error),
            }
        };
        write().map_err(|e| self.error(Operation::Put, &object.key, e))
    }
}

#[cfg(test)]
impl CreateNew for super::MemoryStore {
    async fn create_new(&self, object: PutObject) -> Result<Created, StoreError> {
        let mut objects = self.objects.lock().unwrap();
        if objects.contains_key(&object.key) {
            return Ok(Created::Exists);
        }
        objects.insert(
            object.key,
            super::StoredObject {
                body: object.body,
                content_encoding: object.content_encoding.map(str::to_owned),
            },
        );
        Ok(Created::New)
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_s3::operation::put_object::PutObjectOutput;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    use super::*;

    fn object(body: &str) -> PutObject {
        PutObject {
            key: "scrapes/run-1/_run.json".into(),
            body: body.as_bytes().to_vec(),
            content_type: "application/json",
            content_encoding: None,
        }
    }

    #[tokio::test]
    async fn s3_sends_if_none_match_and_reads_412_as_taken() {
        let rule = mock!(aws_sdk_s3::Client::put_object)
            .match_requests(|req| req.if_none_match() == Some("*"))
            .sequence()
            .output(|| PutObjectOutput::builder().build())
            .http_status(
                412,
                Some("<Error><Code>PreconditionFailed</Code></Error>".into()),
            )
            .build();
        let client = mock_client!(aws_sdk_s3, RuleMode::Sequential, [&rule]);
        let store = S3Store::new(client, "b");
        assert_eq!(store.create_new(object("a")).await.unwrap(), Created::New);
        assert_eq!(
            store.create_new(object("b")).await.unwrap(),
            Created::Exists
        );
        assert_eq!(rule.num_calls(), 2);
    }

    #[tokio::test]
    async fn s3_tries_a_conflict_again_then_reports_it_retryable() {
        let conflict = || {
            mock!(aws_sdk_s3::Client::put_object)
                .sequence()
                .http_status(
                    409,
                    Some("<Error><Code>ConditionalRequestConflict</Code></Error>".into()),
                )
                .times(CONFLICT_ATTEMPTS as usize)
                .build()
        };
        let rule = conflict();
        let client = mock_client!(aws_sdk_s3, RuleMode::Sequential, [&rule]);
        let error = S3Store::new(client, "b")
            .create_new(object("a"))
            .await
            .unwrap_err();
        assert_eq!(error.kind, StoreErrorKind::Retryable);
        assert_eq!(error.location, "s3://b/scrapes/run-1/_run.json");
        assert_eq!(rule.num_calls(), CONFLICT_ATTEMPTS as usize);
    }

    #[tokio::test]
    async fn a_folder_keeps_the_first_writer_s_object() {
        let dir = std::env::temp_dir().join(format!("rewind-create-new-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = DirStore::new(&dir);
        assert_eq!(store.create_new(object("a")).await.unwrap(), Created::New);
        assert_eq!(
            store.create_new(object("b")).await.unwrap(),
            Created::Exists
        );
        let kept = std::fs::read(dir.join("scrapes/run-1/_run.json")).unwrap();
        assert_eq!(kept, b"a");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
