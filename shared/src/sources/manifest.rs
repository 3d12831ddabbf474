//! A scrape's manifest as a source: its shards in the manifest's order
//! (parents before children), each shard's records chunk by chunk, a page
//! of records at a time.
//!
//! The plan opens the top-level `manifest.json` (shards and totals); a
//! step opens only its shard's own `<shardId>/manifest.json` (its chunks),
//! whatever the shard count. A manifest written before per-shard manifests
//! (each shard's chunks inline) is read whole instead, as it always was.

use std::io::Cursor;

use serde::de::DeserializeOwned;

use crate::model::chunk::ChunkReader;
pub use crate::model::manifest::shard_manifest_key;
use crate::model::manifest::{Manifest, ManifestShard, ShardManifest};
use crate::model::record::Record;
use crate::model::seqno::Position;
use crate::pipeline::lineage::lineage_groups;
use crate::request::RequestError;
use crate::sources::{BoxFuture, Pages, RecordSource, SourceError, SourceStream};
use crate::store::ObjectReader;

/// Reads a manifest's records of one shard back, chunk by chunk.
pub async fn read_shard_chunks<R: ObjectReader>(
    reader: &R,
    shard: &ManifestShard,
    mut sink: impl FnMut(Record),
) -> Result<(), SourceError> {
    for chunk in &shard.chunks {
        let bytes = reader.get(&chunk.key).await?;
        for record in ChunkReader::new(&chunk.key, bytes.as_slice())? {
            sink(record?);
        }
    }
    Ok(())
}

async fn read_json<R: ObjectReader, T: DeserializeOwned>(
    store: &R,
    bucket: &str,
    key: &str,
) -> Result<T, SourceError> {
    let bytes = store.get(key).await?;
    serde_json::from_slice(&bytes).map_err(|source| SourceError::Manifest {
        key: format!("s3://{bucket}/{key}"),
        source,
    })
}

/// A scrape's manifest, or one shard of it, read once when opened.
#[derive(Debug)]
pub struct ManifestSource<R> {
    store: R,
    bucket: String,
    stream_arn: String,
    /// Every shard (the top-level manifest), or the one opened.
    shards: Vec<ManifestShard>,
    /// Records a page holds at most.
    page: usize,
}

impl<R: ObjectReader> ManifestSource<R> {
    /// Reads the manifest at `key` of `store` (named `s3://<bucket>/<key>`
    /// in errors).
    pub async fn open(store: R, bucket: &str, key: &str) -> Result<Self, SourceError> {
        let manifest: Manifest = read_json(&store, bucket, key).await?;
        Ok(Self {
            store,
            bucket: bucket.to_owned(),
            stream_arn: manifest.stream_arn,
            shards: manifest.shards,
            page: usize::MAX,
        })
    }

    /// Reads only shard `shard_id` of the manifest at `key`: its own
    /// manifest, or, for a manifest written before per-shard manifests
    /// (none beside it), the whole manifest.
    pub async fn open_shard(
        store: R,
        bucket: &str,
        key: &str,
        shard_id: &str,
    ) -> Result<Self, SourceError> {
        let shard_key = shard_manifest_key(key, shard_id);
        match store.get(&shard_key).await {
            Ok(bytes) => {
                let manifest: ShardManifest =
                    serde_json::from_slice(&bytes).map_err(|source| SourceError::Manifest {
                        key: format!("s3://{bucket}/{shard_key}"),
                        source,
                    })?;
                Ok(Self {
                    store,
                    bucket: bucket.to_owned(),
                    stream_arn: manifest.stream_arn,
                    shards: vec![manifest.shard],
                    page: usize::MAX,
                })
            }
            Err(error) if error.is_not_found() => Self::open(store, bucket, key).await,
            Err(error) => Err(error.into()),
        }
    }

    /// Pages of at most `records` records (a chunk holds up to the
    /// scraper's chunk size): a step then holds no more than one piece.
    pub fn with_page(mut self, records: usize) -> Self {
        self.page = records.max(1);
        self
    }
}

impl<R: ObjectReader> RecordSource for ManifestSource<R> {
    fn stream(&self) -> SourceStream {
        SourceStream::Arn(self.stream_arn.clone())
    }

    fn shards(&self) -> BoxFuture<'_, Result<Vec<Vec<String>>, SourceError>> {
        let shards: Vec<(String, Vec<String>)> = self
            .shards
            .iter()
            .map(|s| (s.shard_id.clone(), s.parent_shard_ids.clone()))
            .collect();
        Box::pin(async move { Ok(lineage_groups(&shards)) })
    }

    fn pages<'a>(
        &'a self,
        shard_id: &'a str,
        after: Option<&'a Position>,
    ) -> BoxFuture<'a, Result<Box<dyn Pages + 'a>, SourceError>> {
        Box::pin(async move {
            let shard = self
                .shards
                .iter()
                .find(|s| s.shard_id == shard_id)
                .ok_or_else(|| {
                    SourceError::Request(RequestError {
                        field: "progress.shardId".to_owned(),
                        message: format!("{shard_id:?} is not a shard of the manifest"),
                    })
                })?;
            // A top-level entry names the shard's own manifest.
            let loaded;
            let chunks = match &shard.manifest {
                Some(key) if shard.chunks.is_empty() => {
                    loaded = read_json::<_, ShardManifest>(&self.store, &self.bucket, key).await?;
                    &loaded.shard.chunks
                }
                _ => &shard.chunks,
            };
            // A chunk that ends before the resume point holds nothing new.
            let keys: Vec<String> = chunks
                .iter()
                .filter(|chunk| {
                    after.is_none_or(|last| chunk.last_sequence_number >= last.sequence_number)
                })
                .map(|chunk| chunk.key.clone())
                .collect();
            let pages: Box<dyn Pages + 'a> = Box::new(Chunks {
                store: &self.store,
                keys: keys.into_iter(),
                page: self.page,
                reading: None,
            });
            Ok(pages)
        })
    }
}

/// A shard's chunks, each read a page at a time: a page never spans two
/// chunks (as a whole chunk was one page before pages were bounded).
struct Chunks<'a, R> {
    store: &'a R,
    keys: std::vec::IntoIter<String>,
    page: usize,
    /// The chunk being read: its records are parsed as pages are taken.
    reading: Option<ChunkReader<'static>>,
}

impl<R: ObjectReader> Pages for Chunks<'_, R> {
    fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Vec<Record>>, SourceError>> {
        Box::pin(async move {
            loop {
                if let Some(reader) = self.reading.as_mut() {
                    let mut records = Vec::new();
                    while records.len() < self.page {
                        match reader.next() {
                            Some(record) => records.push(record?),
                            None => break,
                        }
                    }
                    if records.len() < self.page {
                        self.reading = None;
                    }
                    if !records.is_empty() {
                        return Ok(Some(records));
                    }
                    continue;
                }
                let Some(key) = self.keys.next() else {
                    return Ok(None);
                };
                let bytes = self.store.get(&key).await?;
                self.reading = Some(ChunkReader::new(key, Cursor::new(bytes))?);
            }
        })
    }
}
