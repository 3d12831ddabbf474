//! A scrape's output: one chunk per step of each shard, the shard's final
//! progress, and the manifest that lists them.
//!
//! ```text
//! <run folder>/<shardId>/<n>-<first>-<last>.jsonl.gz   one per step that read records
//! <run folder>/<shardId>/manifest.json                the shard's chunks (its last step)
//! <run folder>/<shardId>/_progress.json               the shard's final state (then)
//! <run folder>/manifest.json                          the shards, each naming its manifest
//! ```
//!
//! A step owns chunk `n` of its shard. Opening it removes whatever an
//! earlier, interrupted attempt of the same step left under `<n>-`, so a
//! retried step never leaves two overlapping chunks.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::chunk::{ChunkError, ChunkSummary, ChunkWriter, Compression};
use crate::model::manifest::{
    Manifest, ManifestChunk, ManifestShard, ShardManifest, shard_manifest_key,
};
use crate::model::record::Record;
use crate::model::seqno::SequenceNumber;
use crate::pipeline::lineage::{PlannedShard, parents_first};
use crate::store::{ObjectReader, ObjectStore, PutObject, StoreError};

/// The folder of one shard's output.
pub fn shard_folder(run_folder: &str, shard_id: &str) -> String {
    format!("{run_folder}/{shard_id}")
}

/// Writing a step's chunk or a shard's final progress failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Chunk(#[from] ChunkError),
}

/// Chunk `n` of a shard, filled record by record during a step and stored
/// when it ends.
pub struct StepChunk {
    folder: String,
    n: u64,
    compression: Compression,
    writer: ChunkWriter<Vec<u8>>,
    /// The first write that failed: the read goes on, and the chunk is not
    /// stored.
    error: Option<ChunkError>,
}

impl StepChunk {
    /// Opens chunk `n` of the shard in `folder`, removing the leftovers of
    /// an interrupted attempt at this very step.
    pub async fn open<O: ObjectStore + ObjectReader>(
        store: &O,
        folder: &str,
        n: u64,
        compression: Compression,
    ) -> Result<Self, WriteError> {
        for key in store.list(&format!("{folder}/{n}-")).await? {
            store.delete(&key).await?;
        }
        Ok(Self {
            writer: ChunkWriter::new(format!("{folder}/{n}"), Vec::new(), compression)?,
            folder: folder.to_owned(),
            n,
            compression,
            error: None,
        })
    }

    pub fn write(&mut self, record: &Record) {
        if self.error.is_none()
            && let Err(error) = self.writer.write(record)
        {
            self.error = Some(error);
        }
    }

    /// Stores the chunk, named by its first and last sequence numbers; a
    /// step that read nothing stores nothing and returns `None`.
    pub async fn store<O: ObjectStore>(
        self,
        store: &O,
    ) -> Result<Option<ChunkSummary>, WriteError> {
        if let Some(error) = self.error {
            return Err(error.into());
        }
        let (body, summary) = self.writer.finish()?;
        let (Some(first), Some(last)) = (&summary.first, &summary.last) else {
            return Ok(None);
        };
        let key = format!(
            "{}/{}-{}-{}.{}",
            self.folder,
            self.n,
            first.sequence_number,
            last.sequence_number,
            self.compression.extension()
        );
        store
            .put(PutObject {
                key,
                body,
                content_type: self.compression.content_type(),
                content_encoding: self.compression.content_encoding(),
            })
            .await?;
        Ok(Some(summary))
    }
}

/// A shard's final state, as its last step stores it in `_progress.json`:
/// what the manifest says of the shard.
pub trait FinalProgress: Serialize + DeserializeOwned {
    fn manifest_shard(self, shard: &PlannedShard, chunks: Vec<ManifestChunk>) -> ManifestShard;
}

fn progress_key(folder: &str) -> String {
    format!("{folder}/_progress.json")
}

/// Stores a finished shard's final progress in its folder.
pub async fn write_final_progress<O: ObjectStore, P: FinalProgress>(
    store: &O,
    folder: &str,
    progress: &P,
) -> Result<(), StoreError> {
    store
        .put(PutObject {
            key: progress_key(folder),
            body: serde_json::to_vec(progress).expect("progress always serialises"),
            content_type: "application/json",
            content_encoding: None,
        })
        .await
}

/// A shard's chunks, in order, from a listing of its folder.
pub async fn shard_chunks<R: ObjectReader>(
    store: &R,
    folder: &str,
) -> Result<Vec<ManifestChunk>, StoreError> {
    let mut chunks: Vec<(u64, ManifestChunk)> = store
        .list(&format!("{folder}/"))
        .await?
        .into_iter()
        .filter_map(|key| {
            let name = key.rsplit('/').next()?;
            let stem = &name[..name.find(".jsonl")?];
            let mut parts = stem.splitn(3, '-');
            let n: u64 = parts.next()?.parse().ok()?;
            let first = SequenceNumber::parse(parts.next()?).ok()?;
            let last = SequenceNumber::parse(parts.next()?).ok()?;
            Some((
                n,
                ManifestChunk {
                    key,
                    first_sequence_number: first,
                    last_sequence_number: last,
                },
            ))
        })
        .collect();
    chunks.sort_by_key(|(n, _)| *n);
    Ok(chunks.into_iter().map(|(_, c)| c).collect())
}

/// Stores a finished shard's own manifest in its folder.
pub async fn write_shard_manifest<O: ObjectStore>(
    store: &O,
    folder: &str,
    manifest: &ShardManifest,
) -> Result<(), StoreError> {
    store
        .put(PutObject {
            key: format!("{folder}/manifest.json"),
            body: serde_json::to_vec(manifest).expect("a manifest always serialises"),
            content_type: "application/json",
            content_encoding: None,
        })
        .await
}

/// Why a manifest could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("shard {shard_id} has no final progress at {key}: its scrape did not finish")]
    Unfinished { shard_id: String, key: String },
    #[error("{key}: not a shard progress document")]
    Progress {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Builds `manifest.json` from the shards' final progress (the shards
/// parents first, each naming its own manifest; `manifest` makes the
/// document of them) and stores it in the run folder; returns it and its
/// key.
pub async fn write_manifest<O: ObjectStore + ObjectReader, P: FinalProgress>(
    store: &O,
    run_folder: &str,
    shards: &[PlannedShard],
    manifest: impl FnOnce(Vec<ManifestShard>) -> Manifest,
) -> Result<(Manifest, String), ManifestError> {
    let mut manifest_shards = Vec::new();
    for shard in parents_first(shards.to_vec()) {
        let folder = shard_folder(run_folder, &shard.shard_id);
        let progress_key = progress_key(&folder);
        let progress: P = match store.get(&progress_key).await {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| ManifestError::Progress {
                    key: progress_key.clone(),
                    source,
                })?
            }
            Err(_) => {
                return Err(ManifestError::Unfinished {
                    shard_id: shard.shard_id.clone(),
                    key: progress_key,
                });
            }
        };
        let mut entry = progress.manifest_shard(&shard, Vec::new());
        entry.manifest = Some(shard_manifest_key(
            &format!("{run_folder}/manifest.json"),
            &shard.shard_id,
        ));
        manifest_shards.push(entry);
    }
    let manifest = manifest(manifest_shards);
    let key = format!("{run_folder}/manifest.json");
    store
        .put(PutObject {
            key: key.clone(),
            body: serde_json::to_vec_pretty(&manifest).expect("a manifest always serialises"),
            content_type: "application/json",
            content_encoding: None,
        })
        .await?;
    Ok((manifest, key))
}
