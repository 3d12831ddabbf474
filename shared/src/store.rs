//! Object storage as the engine needs it: put a finished object under a
//! key, list the keys under a prefix, get an object back.
//!
//! [`ObjectStore`] and [`ObjectReader`] are the seams; [`S3Store`] is the adapter over the official
//! SDK client. Retrying throttled or failed requests (`SlowDown`, 5xx) is the
//! SDK's job: its standard retry strategy backs off with jitter, and the
//! caller sets how many attempts fit its time budget on the client config.

use std::future::Future;

use std::fmt;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectError;

mod body;
pub use body::{BODY_RESUMES, FILE_PIECE_BYTES, ObjectBody};
mod create;
pub use create::{CreateNew, Created};
mod listing;
pub use listing::{ListPage, ListQuery, MAX_PAGE, page_of};

/// One object to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutObject {
    pub key: String,
    pub body: Vec<u8>,
    pub content_type: &'static str,
    pub content_encoding: Option<&'static str>,
}

/// The store call that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Put,
    Get,
    List,
    Delete,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Put => "putting",
            Self::Get => "getting",
            Self::List => "listing",
            Self::Delete => "deleting",
        })
    }
}

/// What went wrong, as far as a caller can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreErrorKind {
    /// No object under the key (S3 `NoSuchKey`, a missing file).
    #[error("no such object")]
    NotFound,
    /// The store asked to slow down (`SlowDown`, 503) through all of the
    /// client's attempts.
    #[error(
        "throttled through all of the client's attempts; retry later, lower the request rate or give the client more attempts"
    )]
    Throttled,
    /// A server error, a timeout or a dropped connection through all of the
    /// client's attempts: a later attempt may pass.
    #[error("a server or network error through all of the client's attempts; retry later")]
    Retryable,
    /// Refused (access denied, no such bucket, an invalid request):
    /// retrying can't help; the cause says what to fix.
    #[error("the request was refused")]
    Refused,
}

/// A store call that did not succeed, after the client's own retries.
#[derive(Debug, thiserror::Error)]
#[error("{operation} {location} failed: {kind}")]
pub struct StoreError {
    pub operation: Operation,
    /// `s3://<bucket>/<key>` (`<prefix>*` for a list), or a file's path.
    pub location: String,
    pub kind: StoreErrorKind,
    /// The SDK's or the file system's error.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    /// Whether the object isn't there (S3 `NoSuchKey`, a missing file), as
    /// opposed to a read that failed.
    pub fn is_not_found(&self) -> bool {
        self.kind == StoreErrorKind::NotFound
    }

    fn io(operation: Operation, path: &std::path::Path, error: std::io::Error) -> Self {
        Self {
            operation,
            location: path.display().to_string(),
            kind: if error.kind() == std::io::ErrorKind::NotFound {
                StoreErrorKind::NotFound
            } else {
                StoreErrorKind::Refused
            },
            source: Some(Box::new(error)),
        }
    }
}

/// How an S3 call failed after the SDK's retries: throttled, worth a later
/// attempt, or refused.
fn s3_kind<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> StoreErrorKind {
    match error {
        SdkError::ServiceError(service) => {
            let code = service.err().code();
            if matches!(
                code,
                Some("SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded")
            ) {
                StoreErrorKind::Throttled
            } else if code.is_some_and(|c| c.starts_with("Internal") || c == "ServiceUnavailable")
                || service.raw().status().is_server_error()
            {
                StoreErrorKind::Retryable
            } else {
                StoreErrorKind::Refused
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            StoreErrorKind::Retryable
        }
        _ => StoreErrorKind::Refused,
    }
}

/// Where finished objects go.
pub trait ObjectStore: Send + Sync {
    fn put(&self, object: PutObject) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes an object; removing one that isn't there succeeds.
    fn delete(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Where archived objects are read back from.
pub trait ObjectReader: Send + Sync {
    /// Every key under `prefix`, in key order (all pages).
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// One page of keys (see [`ListQuery`]). A local store cuts it from its
    /// whole listing; S3 answers it with one request.
    fn list_page(
        &self,
        query: ListQuery<'_>,
    ) -> impl Future<Output = Result<ListPage, StoreError>> + Send {
        async move { Ok(page_of(self.list(query.prefix).await?, &query)) }
    }

    /// One object's bytes.
    fn get(&self, key: &str) -> impl Future<Output = Result<Vec<u8>, StoreError>> + Send;

    /// One object's bytes as they arrive, a piece at a time, for a reader
    /// that must not hold the whole object (a chunk of 100,000 records). A
    /// store that can't stream gives the object whole, as one piece.
    fn get_body(&self, key: &str) -> impl Future<Output = Result<ObjectBody, StoreError>> + Send {
        async move { Ok(ObjectBody::memory(self.get(key).await?, usize::MAX)) }
    }
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

    fn error<E>(
        &self,
        operation: Operation,
        key: &str,
        error: SdkError<E, HttpResponse>,
    ) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.failed(operation, key, s3_kind(&error), Box::new(error))
    }

    /// A failed GET: `NoSuchKey` is [`StoreErrorKind::NotFound`].
    fn get_error(&self, key: &str, error: SdkError<GetObjectError, HttpResponse>) -> StoreError {
        if error
            .as_service_error()
            .is_some_and(GetObjectError::is_no_such_key)
        {
            self.failed(
                Operation::Get,
                key,
                StoreErrorKind::NotFound,
                Box::new(error),
            )
        } else {
            self.error(Operation::Get, key, error)
        }
    }

    fn failed(
        &self,
        operation: Operation,
        key: &str,
        kind: StoreErrorKind,
        source: Box<dyn std::error::Error + Send + Sync>,
    ) -> StoreError {
        StoreError {
            operation,
            location: format!("s3://{}/{key}", self.bucket),
            kind,
            source: Some(source),
        }
    }
}

impl ObjectStore for S3Store {
    async fn put(&self, object: PutObject) -> Result<(), StoreError> {
        let (key, request) = self.put_request(object);
        request
            .send()
            .await
            .map(|_| ())
            .map_err(|error| self.error(Operation::Put, &key, error))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.delete_object(key).await
    }
}

impl S3Store {
    async fn delete_object(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(|error| self.error(Operation::Delete, key, error))
    }
}

impl ObjectReader for S3Store {
    async fn list_page(&self, query: ListQuery<'_>) -> Result<ListPage, StoreError> {
        self.list_one_page(query).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|error| self.error(Operation::List, &format!("{prefix}*"), error))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        Ok(keys)
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|error| self.get_error(key, error))?;
        // The body streams after the answer: a connection dropped mid-way.
        let body = object.body.collect().await.map_err(|error| {
            self.failed(
                Operation::Get,
                key,
                StoreErrorKind::Retryable,
                Box::new(error),
            )
        })?;
        Ok(body.into_bytes().to_vec())
    }

    async fn get_body(&self, key: &str) -> Result<ObjectBody, StoreError> {
        self.open_body(key).await
    }
}

/// A local folder as an object store, for the CLI: a key is a path under
/// the root (`/` separated). Writes go to a temporary file first and are
/// renamed into place, so a reader never sees half an object.
#[derive(Debug, Clone)]
pub struct DirStore {
    root: std::path::PathBuf,
}

impl DirStore {
    pub fn new(root: impl Into<std::path::PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    fn path(&self, key: &str) -> std::path::PathBuf {
        self.root.join(key)
    }

    fn error(&self, operation: Operation, key: &str, error: std::io::Error) -> StoreError {
        StoreError::io(operation, &self.path(key), error)
    }
}

fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

impl ObjectStore for DirStore {
    async fn put(&self, object: PutObject) -> Result<(), StoreError> {
        let path = self.path(&object.key);
        let write = || -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let partial = path.with_extension("partial");
            std::fs::write(&partial, &object.body)?;
            std::fs::rename(&partial, &path)
        };
        write().map_err(|e| self.error(Operation::Put, &object.key, e))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match std::fs::remove_file(self.path(key)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(self.error(Operation::Delete, key, e))
            }
            _ => Ok(()),
        }
    }
}

impl ObjectReader for DirStore {
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        // Walk only the deepest folder the prefix names.
        let folder = prefix.rsplit_once('/').map_or("", |(folder, _)| folder);
        let mut files = Vec::new();
        walk(&self.path(folder), &mut files).map_err(|e| self.error(Operation::List, prefix, e))?;
        let mut keys: Vec<String> = files
            .iter()
            .filter_map(|p| p.strip_prefix(&self.root).ok())
            .map(|p| p.to_string_lossy().replace(std::path::MAIN_SEPARATOR, "/"))
            .filter(|k| k.starts_with(prefix) && !k.ends_with(".partial"))
            .collect();
        keys.sort();
        Ok(keys)
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        std::fs::read(self.path(key)).map_err(|e| self.error(Operation::Get, key, e))
    }

    async fn get_body(&self, key: &str) -> Result<ObjectBody, StoreError> {
        let path = self.path(key);
        let file = std::fs::File::open(&path).map_err(|e| self.error(Operation::Get, key, e))?;
        Ok(ObjectBody::file(file, path))
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
impl ObjectReader for MemoryStore {
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .objects
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.objects
            .lock()
            .unwrap()
            .get(key)
            .map(|o| o.body.clone())
            .ok_or_else(|| StoreError {
                operation: Operation::Get,
                location: format!("memory:{key}"),
                kind: StoreErrorKind::NotFound,
                source: None,
            })
    }

    async fn get_body(&self, key: &str) -> Result<ObjectBody, StoreError> {
        // Small pieces, so the engine's tests feed decoders as a network
        // body does, never an object at once.
        Ok(ObjectBody::memory(self.get(key).await?, MEMORY_PIECE_BYTES))
    }
}

/// The pieces [`MemoryStore`] hands a body out in.
#[cfg(test)]
pub(crate) const MEMORY_PIECE_BYTES: usize = 1000;

#[cfg(test)]
impl ObjectStore for MemoryStore {
    async fn put(&self, object: PutObject) -> Result<(), StoreError> {
        if self.failing_key.as_deref() == Some(object.key.as_str()) {
            return Err(StoreError {
                operation: Operation::Put,
                location: format!("memory:{}", object.key),
                kind: StoreErrorKind::Throttled,
                source: Some("SlowDown".into()),
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

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.objects.lock().unwrap().remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
