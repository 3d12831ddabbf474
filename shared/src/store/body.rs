//! An object's bytes as they arrive, a piece at a time, so a reader holds
//! one piece and never the whole object. An S3 body whose connection drops
//! part way is asked for again from the first byte not yet given (a `Range`
//! GET held to the same object by `If-Match`), so the caller sees one
//! unbroken stream: no byte lost, none twice.

use std::io::Read;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use tracing::warn;

use super::{Operation, S3Store, StoreError, StoreErrorKind};
use crate::backoff::backoff;

/// Bytes a local file is read in: one piece of a body.
pub const FILE_PIECE_BYTES: usize = 64 * 1024;

/// How many times in a row a dropped S3 body is asked for again without a
/// byte coming in between. Each resume that brings bytes starts the count
/// again, so a long object on a flaky network still completes.
pub const BODY_RESUMES: u32 = 4;

/// The first wait before asking again for a dropped body.
const RESUME_BACKOFF: Duration = Duration::from_millis(100);

/// One object's bytes, a piece at a time ([`super::ObjectReader::get_body`]).
pub struct ObjectBody {
    pieces: Pieces,
    /// Bytes handed out so far.
    given: u64,
}

enum Pieces {
    /// Already in memory: handed out in pieces as a network body would be.
    Memory {
        bytes: Bytes,
        piece: usize,
    },
    File {
        file: std::fs::File,
        path: std::path::PathBuf,
    },
    S3(S3Body),
}

struct S3Body {
    store: S3Store,
    key: String,
    stream: ByteStream,
    /// Bytes given to the caller so far.
    offset: u64,
    /// The object's length and entity tag, from the first answer.
    length: Option<u64>,
    etag: Option<String>,
    /// Resumes in a row without a byte in between.
    resumes: u32,
}

impl ObjectBody {
    /// Bytes already in memory, handed out `piece` bytes at a time.
    pub fn memory(bytes: impl Into<Bytes>, piece: usize) -> Self {
        Self {
            pieces: Pieces::Memory {
                bytes: bytes.into(),
                piece: piece.max(1),
            },
            given: 0,
        }
    }

    pub(super) fn file(file: std::fs::File, path: std::path::PathBuf) -> Self {
        Self {
            pieces: Pieces::File { file, path },
            given: 0,
        }
    }

    /// Bytes handed out so far.
    pub fn bytes_given(&self) -> u64 {
        self.given
    }

    /// The next piece; `None` at the object's end.
    pub async fn next(&mut self) -> Result<Option<Bytes>, StoreError> {
        let piece = self.next_piece().await?;
        if let Some(piece) = &piece {
            self.given += piece.len() as u64;
        }
        Ok(piece)
    }

    async fn next_piece(&mut self) -> Result<Option<Bytes>, StoreError> {
        match &mut self.pieces {
            Pieces::Memory { bytes, piece } => {
                if bytes.is_empty() {
                    return Ok(None);
                }
                let take = (*piece).min(bytes.len());
                Ok(Some(bytes.split_to(take)))
            }
            Pieces::File { file, path } => {
                let mut buf = vec![0; FILE_PIECE_BYTES];
                let read = loop {
                    match file.read(&mut buf) {
                        Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                        other => {
                            break other.map_err(|e| StoreError::io(Operation::Get, path, e))?;
                        }
                    }
                };
                buf.truncate(read);
                Ok((read > 0).then(|| buf.into()))
            }
            Pieces::S3(body) => body.next().await,
        }
    }
}

impl S3Store {
    /// GETs `key` from byte `offset` on (the whole object at 0), held to
    /// the entity tag `etag` when one is known.
    async fn get_from(
        &self,
        key: &str,
        offset: u64,
        etag: Option<&str>,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, StoreError> {
        let mut request = self.client.get_object().bucket(&self.bucket).key(key);
        if offset > 0 {
            // https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html
            // (Range: one byte range, `bytes=<first>-` to the end; If-Match:
            // 412 PreconditionFailed if the object is no longer that one).
            request = request
                .range(format!("bytes={offset}-"))
                .set_if_match(etag.map(str::to_owned));
        }
        request
            .send()
            .await
            .map_err(|error| self.get_error(key, error))
    }

    pub(super) async fn open_body(&self, key: &str) -> Result<ObjectBody, StoreError> {
        let object = self.get_from(key, 0, None).await?;
        Ok(ObjectBody {
            pieces: Pieces::S3(S3Body {
                store: self.clone(),
                key: key.to_owned(),
                length: object.content_length().and_then(|l| u64::try_from(l).ok()),
                etag: object.e_tag().map(str::to_owned),
                stream: object.body,
                offset: 0,
                resumes: 0,
            }),
            given: 0,
        })
    }
}

impl S3Body {
    async fn next(&mut self) -> Result<Option<Bytes>, StoreError> {
        loop {
            match self.stream.next().await {
                Some(Ok(bytes)) => {
                    if !bytes.is_empty() {
                        self.offset += bytes.len() as u64;
                        self.resumes = 0;
                    }
                    return Ok(Some(bytes));
                }
                None => return Ok(None),
                Some(Err(error)) => {
                    // The answer came, its body broke off (a dropped
                    // connection, a reset): the SDK's retries are over by
                    // then, so the rest is asked for here.
                    if self.resumes >= BODY_RESUMES {
                        return Err(self.store.failed(
                            Operation::Get,
                            &self.key,
                            StoreErrorKind::Retryable,
                            Box::new(error),
                        ));
                    }
                    warn!(
                        key = %self.key,
                        offset = self.offset,
                        error = &error as &(dyn std::error::Error + 'static),
                        "an object's body broke off; asking for the rest"
                    );
                    tokio::time::sleep(backoff(RESUME_BACKOFF, self.resumes)).await;
                    self.resumes += 1;
                    if self.length.is_some_and(|length| self.offset >= length) {
                        // Every byte came; only the end of the body was lost.
                        return Ok(None);
                    }
                    let rest = self
                        .store
                        .get_from(&self.key, self.offset, self.etag.as_deref())
                        .await?;
                    // A store that ignored the range would send the object
                    // again from its start: its bytes would come twice.
                    let from = format!("bytes {}-", self.offset);
                    if !rest.content_range().is_some_and(|r| r.starts_with(&from)) {
                        let answer = rest.content_range().unwrap_or("the whole object");
                        return Err(self.store.failed(
                            Operation::Get,
                            &self.key,
                            StoreErrorKind::Refused,
                            format!("asked for the rest from byte {}, got {answer}", self.offset)
                                .into(),
                        ));
                    }
                    self.stream = rest.body;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
