//! `manifest.json`: what a scrape wrote (its shards, parents before children,
//! and each shard's totals), for people and for replay; and each shard's own
//! `<shardId>/manifest.json`, written by the shard's last step, listing its
//! chunks. A replay step reads only its shard's.

use serde::{Deserialize, Serialize};

use crate::model::chunk::Compression;
use crate::model::record::ArrivalTime;
use crate::model::seqno::SequenceNumber;
use crate::model::window::{StartPosition, StopCondition, StopReason};

/// One chunk in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestChunk {
    pub key: String,
    pub first_sequence_number: SequenceNumber,
    pub last_sequence_number: SequenceNumber,
}

/// One shard in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestShard {
    pub shard_id: String,
    #[serde(default)]
    pub parent_shard_ids: Vec<String>,
    pub records: u64,
    /// The shard's chunks in its own manifest; empty in the top-level
    /// manifest, which names that one (`manifest`). A manifest written before
    /// per-shard manifests lists them here, and is still read so.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<ManifestChunk>,
    /// The key of the shard's own manifest (a [`ShardManifest`]), in the
    /// top-level manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    pub first_sequence_number: Option<SequenceNumber>,
    pub last_sequence_number: Option<SequenceNumber>,
    pub first_arrival: Option<ArrivalTime>,
    pub last_arrival: Option<ArrivalTime>,
    pub stop_reason: Option<StopReason>,
    #[serde(default)]
    pub child_shard_ids: Vec<String>,
}

/// `manifest.json`: what a scrape wrote, for people and for replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub stream: String,
    pub stream_arn: String,
    pub run_id: String,
    pub bucket: String,
    pub prefix: String,
    pub compression: Compression,
    pub start: StartPosition,
    pub stop: StopCondition,
    /// Parents before children.
    pub shards: Vec<ManifestShard>,
    pub records: u64,
}

/// `<run>/<shardId>/manifest.json`: one shard of a scrape, with its chunks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardManifest {
    pub stream_arn: String,
    pub compression: Compression,
    #[serde(flatten)]
    pub shard: ManifestShard,
}

/// Where the scraper writes a shard's own manifest: in the shard's folder
/// beside the top-level `manifest` (`<run>/manifest.json`).
pub fn shard_manifest_key(manifest: &str, shard_id: &str) -> String {
    match manifest.rsplit_once('/') {
        Some((folder, _)) => format!("{folder}/{shard_id}/manifest.json"),
        None => format!("{shard_id}/manifest.json"),
    }
}
