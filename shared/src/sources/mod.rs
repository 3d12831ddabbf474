//! Where records come from. A replay reads through one seam,
//! [`RecordSource`]: the shards a source holds, in lineage groups, and one
//! shard's records after a [`Position`], a bounded page at a time. A new
//! source is one file here and one variant of the replay request's source.

pub mod dynamodb;
pub mod files;
pub mod kinesis;
pub mod manifest;
pub mod object;
pub mod s3_archive;

pub use futures_util::future::BoxFuture;

use serde::{Deserialize, Serialize};

use crate::model::chunk::ChunkError;
use crate::model::record::Record;
use crate::model::seqno::Position;
use crate::pipeline::lineage::PlannedShard;
use crate::request::RequestError;
use crate::store::StoreError;

/// The stream a source's records were read from, as far as it knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceStream {
    /// The stream's ARN (a scrape's manifest keeps it).
    Arn(String),
    /// Its name only (the archives, local files): the reader places it in
    /// its own partition, region and account.
    Name(String),
}

/// A source of records, opened for one request.
pub trait RecordSource: Send + Sync {
    /// The stream the records were read from.
    fn stream(&self) -> SourceStream;

    /// The shards it holds in lineage groups: shards related by a split or a
    /// merge in one group, parents first; groups are independent.
    fn shards(&self) -> BoxFuture<'_, Result<Vec<Vec<String>>, SourceError>>;

    /// [`Self::shards`] and where their lineage came from, for a plan to
    /// show; `None` where the source itself holds it (a manifest, files).
    fn plan_shards(&self) -> BoxFuture<'_, Result<ShardGroups, SourceError>> {
        Box::pin(async move {
            Ok(ShardGroups {
                groups: self.shards().await?,
                lineage: None,
            })
        })
    }

    /// One shard's records after `after` (from its start when `None`), a
    /// page at a time. A page can still hold records at or before `after`
    /// (a chunk or a DynamoDB page starts where it starts): the reader skips
    /// them ([`crate::pipeline::dedupe`]).
    fn pages<'a>(
        &'a self,
        shard_id: &'a str,
        after: Option<&'a Position>,
    ) -> BoxFuture<'a, Result<Box<dyn Pages + 'a>, SourceError>>;

    /// [`Self::pages`] from a cursor a previous step's pages gave
    /// ([`Pages::cursor`]) beside `after`: a source that can start reading
    /// there skips what lies before it without reading it. A cursor the
    /// source doesn't know is ignored.
    fn pages_from<'a>(
        &'a self,
        shard_id: &'a str,
        after: Option<&'a Position>,
        cursor: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Box<dyn Pages + 'a>, SourceError>> {
        let _ = cursor;
        self.pages(shard_id, after)
    }
}

/// A plan's shards in lineage groups (see [`RecordSource::shards`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardGroups {
    pub groups: Vec<Vec<String>>,
    pub lineage: Option<Lineage>,
}

/// Where an archive's shard lineage came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Lineage {
    /// The archive's shard markers: real lineage groups.
    Markers,
    /// The archive has no markers for every shard (written before them) but
    /// the stream still exists: `ListShards`' parent links.
    ListShards,
    /// Neither: every shard in one group, in shard-id order (Kinesis
    /// numbers a child after its parents), one after another.
    OneGroup,
}

/// A stream's shards with their parents, as `ListShards` gives them, for
/// archives that keep no lineage of their own.
pub trait StreamShards: Send + Sync {
    /// Every shard of the stream, parents first; `None` when the stream no
    /// longer exists.
    fn list_shards<'a>(
        &'a self,
        stream_arn: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<PlannedShard>>, SourceError>>;
}

/// One shard's records, page by page.
pub trait Pages: Send {
    /// The next page, in sequence order (possibly empty); `None` at the end.
    fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Vec<Record>>, SourceError>>;

    /// Where the last page came from, for [`RecordSource::pages_from`]: a
    /// step that stops inside that page resumes there. `None` where the
    /// source has nothing better than the position.
    fn cursor(&self) -> Option<String> {
        None
    }
}

/// Shards whose lineage the source doesn't keep, in shard-id order (which
/// is lineage order: Kinesis numbers a child after its parents): one group,
/// so that a child never starts before its parents end.
pub fn one_group(shards: Vec<String>) -> Vec<Vec<String>> {
    if shards.is_empty() {
        Vec::new()
    } else {
        vec![shards]
    }
}

/// Why a source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error(transparent)]
    Dynamo(#[from] dynamodb::ReadError),
    #[error("{key}: not a scrape manifest")]
    Manifest {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    /// The request asks for what the source doesn't hold.
    #[error("invalid replay request: {}: {}", .0.field, .0.message)]
    Request(RequestError),
    #[error(transparent)]
    Files(#[from] files::FilesError),
    #[error("{key}: not a shard marker")]
    Marker {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    ListShards(#[from] kinesis::ListShardsError),
    /// S3 lists keys in string order, which is position order only while a
    /// shard's sequence numbers keep one length.
    #[error(
        "archive object {key} sorts after {previous} but starts before it: the shard's sequence numbers changed length, so key order is not sequence order"
    )]
    OutOfOrder { key: String, previous: String },
}
