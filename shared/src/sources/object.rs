//! One stored chunk's records as its bytes arrive: the store's body pieces
//! pushed into a [`ChunkDecoder`] only while a record is wanted, so a
//! reader holds one body piece, one feed slice decoded and the records it
//! has taken, never the whole object (a scrape chunk holds up to 100,000
//! records, tens of MiB compressed).

use bytes::Bytes;

use crate::model::chunk::{ChunkDecoder, ChunkError, FEED_BYTES};
use crate::model::record::Record;
use crate::store::{ObjectBody, ObjectReader, StoreError};

/// Why an object's records could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Chunk(#[from] ChunkError),
}

impl From<ScanError> for crate::sources::SourceError {
    fn from(error: ScanError) -> Self {
        match error {
            ScanError::Store(error) => Self::Store(error),
            ScanError::Chunk(error) => Self::Chunk(error),
        }
    }
}

/// One object's records, in order, as they are decoded.
pub struct ObjectRecords {
    key: String,
    body: ObjectBody,
    decoder: ChunkDecoder,
    /// What is left of the body piece being fed.
    piece: Bytes,
    /// The body ended (or broke): what the decoder holds is the rest.
    ended: bool,
}

impl ObjectRecords {
    /// Starts reading `key` (the GET is sent; its body comes as records are
    /// taken).
    pub async fn open<R: ObjectReader>(reader: &R, key: &str) -> Result<Self, ScanError> {
        Ok(Self {
            key: key.to_owned(),
            body: reader.get_body(key).await?,
            decoder: ChunkDecoder::new(key),
            piece: Bytes::new(),
            ended: false,
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// The object's bytes fed to the decoder so far.
    pub fn bytes_read(&self) -> u64 {
        self.body.bytes_given() - self.piece.len() as u64
    }

    /// The next record; `None` at the object's end. After an error, `None`:
    /// nothing past a gap is read.
    pub async fn next(&mut self) -> Result<Option<Record>, ScanError> {
        loop {
            if let Some(record) = self.decoder.next_record() {
                if record.is_err() {
                    self.ended = true;
                }
                return Ok(Some(record?));
            }
            if self.ended {
                return Ok(None);
            }
            if !self.piece.is_empty() {
                let slice = self.piece.split_to(self.piece.len().min(FEED_BYTES));
                self.decoder.feed(&slice);
                continue;
            }
            match self.body.next().await {
                Ok(Some(piece)) => self.piece = piece,
                Ok(None) => {
                    // What is left decoded comes out before the end.
                    self.decoder.finish();
                    self.ended = true;
                }
                Err(error) => {
                    self.ended = true;
                    return Err(error.into());
                }
            }
        }
    }

    /// Up to `max` records (fewer only at the object's end).
    pub async fn take(&mut self, max: usize) -> Result<Vec<Record>, ScanError> {
        let mut records = Vec::new();
        while records.len() < max {
            match self.next().await? {
                Some(record) => records.push(record),
                None => break,
            }
        }
        Ok(records)
    }
}
