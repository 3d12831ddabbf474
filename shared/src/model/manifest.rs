//! `manifest.json`: what a scrape wrote (its shards, parents before children,
//! and each shard's chunks), for people and for replay.

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
    pub chunks: Vec<ManifestChunk>,
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
