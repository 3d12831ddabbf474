//! A scrape's manifest as a source: its shards in the manifest's order
//! (parents before children), each shard's records chunk by chunk, a page
//! of records at a time.
//!
//! The plan opens the top-level `manifest.json` (shards and totals); a
//! step opens only its shard's own `<shardId>/manifest.json` (its chunks),
//! whatever the shard count. A manifest written before per-shard manifests
//! (each shard's chunks inline) is read whole instead, as it always was.

use serde::de::DeserializeOwned;

pub use crate::model::manifest::shard_manifest_key;
use crate::model::manifest::{Manifest, ManifestShard, ShardManifest};
use crate::model::record::Record;
use crate::model::seqno::Position;
use crate::pipeline::dedupe::is_after;
use crate::pipeline::lineage::lineage_groups;
use crate::request::RequestError;
use crate::sources::object::ObjectRecords;
use crate::sources::{BoxFuture, Pages, RecordSource, SourceError, SourceStream};
use crate::store::ObjectReader;

/// Reads a manifest's records of one shard back, chunk by chunk, each
/// chunk's bytes streamed.
pub async fn read_shard_chunks<R: ObjectReader>(
    reader: &R,
    shard: &ManifestShard,
    mut sink: impl FnMut(Record),
) -> Result<(), SourceError> {
    for chunk in &shard.chunks {
        let mut records = ObjectRecords::open(reader, &chunk.key).await?;
        while let Some(record) = records.next().await? {
            sink(record);
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
                after: after.cloned(),
            });
            Ok(pages)
        })
    }
}

/// A shard's chunks, each read a page at a time as its bytes arrive: a
/// page never spans two chunks (as a whole chunk was one page before pages
/// were bounded), and records at or before the resume position are passed
/// over as they stream by, so a resumed step's pages hold only new ones.
struct Chunks<'a, R> {
    store: &'a R,
    keys: std::vec::IntoIter<String>,
    page: usize,
    /// The chunk being read.
    reading: Option<ObjectRecords>,
    /// The resume position: records at or before it were delivered.
    after: Option<Position>,
}

impl<R: ObjectReader> Pages for Chunks<'_, R> {
    fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Vec<Record>>, SourceError>> {
        Box::pin(async move {
            loop {
                if let Some(reader) = self.reading.as_mut() {
                    let mut records = Vec::new();
                    let mut ended = false;
                    while records.len() < self.page {
                        match reader.next().await? {
                            Some(record) if is_after(&record, self.after.as_ref()) => {
                                records.push(record);
                            }
                            Some(_) => {}
                            None => {
                                ended = true;
                                break;
                            }
                        }
                    }
                    if ended {
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
                self.reading = Some(ObjectRecords::open(self.store, &key).await?);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::chunk::{ChunkWriter, Compression};
    use crate::model::manifest::ManifestChunk;
    use crate::model::record::ArrivalTime;
    use crate::model::seqno::SequenceNumber;
    use crate::model::window::{StartPosition, StopCondition};
    use crate::store::{MemoryStore, ObjectStore, PutObject};

    const ARN: &str = "arn:aws:kinesis:us-east-1:123456789012:stream/orders";

    fn record(n: usize) -> Record {
        Record {
            stream: "orders".into(),
            shard_id: "shardId-000000000000".into(),
            sequence_number: SequenceNumber::parse(&format!("{}", 1000 + n)).unwrap(),
            sub_sequence_number: None,
            partition_key: "k".into(),
            explicit_hash_key: None,
            encryption_type: None,
            approximate_arrival_timestamp: ArrivalTime::from_epoch_millis(n as i64),
            data: format!("record {n}").into_bytes(),
            aggregate: None,
        }
    }

    async fn put(store: &MemoryStore, key: &str, body: Vec<u8>) {
        store
            .put(PutObject {
                key: key.into(),
                body,
                content_type: "application/json",
                content_encoding: None,
            })
            .await
            .unwrap();
    }

    /// A scrape of one shard in chunks of `sizes` records: its own manifest
    /// and the top-level one naming it, or (`inline`) a manifest from before
    /// per-shard manifests.
    async fn scrape(store: &MemoryStore, sizes: &[usize], inline: bool) -> Vec<Record> {
        let mut all = Vec::new();
        let mut chunks = Vec::new();
        for (n, &size) in sizes.iter().enumerate() {
            let records: Vec<Record> = (all.len()..all.len() + size).map(record).collect();
            let key = format!("scrapes/run/shardId-000000000000/{n}.jsonl.gz");
            let mut writer = ChunkWriter::new(&key, Vec::new(), Compression::Gzip).unwrap();
            for r in &records {
                writer.write(r).unwrap();
            }
            put(store, &key, writer.finish().unwrap().0).await;
            chunks.push(ManifestChunk {
                key,
                first_sequence_number: records[0].sequence_number.clone(),
                last_sequence_number: records[size - 1].sequence_number.clone(),
            });
            all.extend(records);
        }
        let shard = ManifestShard {
            shard_id: "shardId-000000000000".into(),
            parent_shard_ids: Vec::new(),
            records: all.len() as u64,
            chunks,
            manifest: None,
            first_sequence_number: None,
            last_sequence_number: None,
            first_arrival: None,
            last_arrival: None,
            stop_reason: None,
            child_shard_ids: Vec::new(),
        };
        let own = shard_manifest_key("scrapes/run/manifest.json", &shard.shard_id);
        let entry = if inline {
            shard.clone()
        } else {
            let manifest = ShardManifest {
                stream_arn: ARN.into(),
                compression: Compression::Gzip,
                shard: shard.clone(),
            };
            put(store, &own, serde_json::to_vec(&manifest).unwrap()).await;
            ManifestShard {
                chunks: Vec::new(),
                manifest: Some(own),
                ..shard
            }
        };
        let top = Manifest {
            stream: "orders".into(),
            stream_arn: ARN.into(),
            run_id: "run".into(),
            bucket: "b".into(),
            prefix: "scrapes".into(),
            compression: Compression::Gzip,
            start: StartPosition::TrimHorizon,
            stop: StopCondition::Latest { as_of: None },
            records: all.len() as u64,
            shards: vec![entry],
        };
        put(
            store,
            "scrapes/run/manifest.json",
            serde_json::to_vec(&top).unwrap(),
        )
        .await;
        all
    }

    /// A store that keeps the keys read from it.
    #[derive(Default)]
    struct Watched {
        store: MemoryStore,
        gets: std::sync::Mutex<Vec<String>>,
    }

    impl ObjectReader for Watched {
        async fn list(&self, prefix: &str) -> Result<Vec<String>, crate::store::StoreError> {
            self.store.list(prefix).await
        }

        async fn get(&self, key: &str) -> Result<Vec<u8>, crate::store::StoreError> {
            self.gets.lock().unwrap().push(key.to_owned());
            self.store.get(key).await
        }
    }

    async fn pages<R: ObjectReader>(
        source: &ManifestSource<R>,
        after: Option<&Position>,
    ) -> Vec<Vec<Record>> {
        let mut pages = source.pages("shardId-000000000000", after).await.unwrap();
        let mut out = Vec::new();
        while let Some(page) = pages.next_page().await.unwrap() {
            out.push(page);
        }
        out
    }

    #[tokio::test]
    async fn a_step_reads_its_shards_own_manifest_a_piece_at_a_time() {
        let watched = Watched::default();
        let all = scrape(&watched.store, &[10, 3], false).await;
        let top = "scrapes/run/manifest.json";
        let source = ManifestSource::open_shard(watched, "b", top, "shardId-000000000000")
            .await
            .unwrap()
            .with_page(4);
        assert!(matches!(source.stream(), SourceStream::Arn(arn) if arn == ARN));
        let read = pages(&source, None).await;
        // Pages of at most 4, none across the two chunks.
        let sizes: Vec<usize> = read.iter().map(Vec::len).collect();
        assert_eq!(sizes, [4, 4, 2, 3]);
        assert_eq!(read.concat(), all);
        // The step read its shard's manifest and chunks, never the top-level
        // manifest.
        let gets = source.store.gets.lock().unwrap().clone();
        assert_eq!(gets[0], "scrapes/run/shardId-000000000000/manifest.json");
        assert!(!gets.iter().any(|k| k == top), "{gets:?}");
        let store = source.store.store;
        // From the top-level manifest (the plan), the entry leads to the
        // shard's own manifest too; a resume skips the chunks before it, and
        // in its chunk the records up to the position as they stream by.
        let source = ManifestSource::open(store, "b", top).await.unwrap();
        assert_eq!(source.shards().await.unwrap(), [["shardId-000000000000"]]);
        let after = Position::of(&all[11]);
        assert_eq!(pages(&source, Some(&after)).await.concat(), all[12..]);
    }

    #[tokio::test]
    async fn a_resume_mid_chunk_goes_on_after_its_position_a_page_at_a_time() {
        let store = MemoryStore::default();
        // One chunk far larger than a page and than the store's pieces.
        let all = scrape(&store, &[5000, 7], false).await;
        let top = "scrapes/run/manifest.json";
        let source = ManifestSource::open_shard(store, "b", top, "shardId-000000000000")
            .await
            .unwrap()
            .with_page(500);
        for resume in [0, 1234, 4998, 4999, 5003] {
            let after = Position::of(&all[resume]);
            let read = pages(&source, Some(&after)).await;
            assert!(read.iter().all(|p| !p.is_empty() && p.len() <= 500));
            // Each record after the position once, in order; none before it.
            assert_eq!(read.concat(), all[resume + 1..], "resume after {resume}");
        }
    }

    #[tokio::test]
    async fn a_manifest_from_before_per_shard_manifests_is_still_read() {
        let store = MemoryStore::default();
        let all = scrape(&store, &[5, 5], true).await;
        let source = ManifestSource::open_shard(
            store,
            "b",
            "scrapes/run/manifest.json",
            "shardId-000000000000",
        )
        .await
        .unwrap();
        let read = pages(&source, None).await;
        assert_eq!(read.iter().map(Vec::len).collect::<Vec<_>>(), [5, 5]);
        assert_eq!(read.concat(), all);
    }
}
