//! A scrape's manifest as a source: its shards in the manifest's order
//! (parents before children), each shard's records chunk by chunk.

use crate::model::chunk::ChunkReader;
use crate::model::manifest::{Manifest, ManifestShard};
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
        for record in read_chunk(reader, &chunk.key).await? {
            sink(record);
        }
    }
    Ok(())
}

async fn read_chunk<R: ObjectReader>(reader: &R, key: &str) -> Result<Vec<Record>, SourceError> {
    let bytes = reader.get(key).await?;
    Ok(ChunkReader::new(key, bytes.as_slice())?.collect::<Result<_, _>>()?)
}

/// A scrape's manifest, read once when opened.
#[derive(Debug)]
pub struct ManifestSource<R> {
    store: R,
    manifest: Manifest,
}

impl<R: ObjectReader> ManifestSource<R> {
    /// Reads the manifest at `key` of `store` (named `s3://<bucket>/<key>`
    /// in errors).
    pub async fn open(store: R, bucket: &str, key: &str) -> Result<Self, SourceError> {
        let bytes = store.get(key).await?;
        let manifest = serde_json::from_slice(&bytes).map_err(|source| SourceError::Manifest {
            key: format!("s3://{bucket}/{key}"),
            source,
        })?;
        Ok(Self { store, manifest })
    }
}

impl<R: ObjectReader> RecordSource for ManifestSource<R> {
    fn stream(&self) -> SourceStream {
        SourceStream::Arn(self.manifest.stream_arn.clone())
    }

    fn shards(&self) -> BoxFuture<'_, Result<Vec<Vec<String>>, SourceError>> {
        let shards: Vec<(String, Vec<String>)> = self
            .manifest
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
                .manifest
                .shards
                .iter()
                .find(|s| s.shard_id == shard_id)
                .ok_or_else(|| {
                    SourceError::Request(RequestError {
                        field: "progress.shardId".to_owned(),
                        message: format!("{shard_id:?} is not a shard of the manifest"),
                    })
                })?;
            // A chunk that ends before the resume point holds nothing new.
            let keys: Vec<&'a str> = shard
                .chunks
                .iter()
                .filter(|chunk| {
                    after.is_none_or(|last| chunk.last_sequence_number >= last.sequence_number)
                })
                .map(|chunk| chunk.key.as_str())
                .collect();
            let pages: Box<dyn Pages + 'a> = Box::new(Chunks {
                store: &self.store,
                keys: keys.into_iter(),
            });
            Ok(pages)
        })
    }
}

/// A shard's chunks, one page each.
struct Chunks<'a, R> {
    store: &'a R,
    keys: std::vec::IntoIter<&'a str>,
}

impl<R: ObjectReader> Pages for Chunks<'_, R> {
    fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Vec<Record>>, SourceError>> {
        Box::pin(async move {
            match self.keys.next() {
                Some(key) => Ok(Some(read_chunk(self.store, key).await?)),
                None => Ok(None),
            }
        })
    }
}
