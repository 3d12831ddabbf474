//! The archive's shard markers, written by the archiver: once per shard it
//! archives, `<prefix>/stream=<name>/_shards/<shardId>.json` records the
//! shard's parents, its hash key range and the stream's ARN
//! ([`ShardMarker`]), which the records don't carry and an archive replay
//! needs to group shards by lineage after the stream is gone.
//!
//! The hot path gains no request per batch: a function instance remembers
//! which shards it has marked and looks each one up (`ListShards`) and
//! writes its marker (a conditional `PutObject`, `If-None-Match: *`) only
//! the first time it sees the shard. Another instance that marked the shard
//! first makes the put answer 412, which counts as done.
//!
//! A marker is never worth a record: when the lookup or the put fails, the
//! batch's records are still reported as stored or not by their own writes
//! alone; the failure is logged and the shard stays unmarked in this
//! instance, so its next batch tries again. A shard that is never marked
//! (the lookup keeps failing) is replayed as an archive without markers is:
//! from `ListShards` while the stream exists, else in one group.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Mutex;

use tracing::{info, warn};

use crate::model::archive::{ArchiveLayout, HashKeyRange, ShardMarker};
use crate::store::{CreateNew, Created, PutObject, StoreError};

/// Looking up a shard's lineage failed.
#[derive(Debug, thiserror::Error)]
pub enum LineageError {
    #[error("listing the shards of {stream_arn} failed")]
    List {
        stream_arn: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Records of a shard that `ListShards` doesn't return: it can only be
    /// past the stream's retention, or the listing is inconsistent.
    #[error("{stream_arn} lists no shard {shard_id}")]
    NoSuchShard {
        stream_arn: String,
        shard_id: String,
    },
}

/// A shard's lineage as the stream describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    pub parent_shard_id: Option<String>,
    pub adjacent_parent_shard_id: Option<String>,
    pub hash_key_range: HashKeyRange,
}

/// Where a shard's lineage comes from.
pub trait ShardLineage: Send + Sync {
    fn lineage(
        &self,
        stream_arn: &str,
        shard_id: &str,
    ) -> impl Future<Output = Result<Lineage, LineageError>> + Send;
}

/// `ListShards` of the stream (open and closed shards within its
/// retention), page by page until the shard is found; no page is kept.
#[derive(Debug, Clone)]
pub struct KinesisLineage {
    client: aws_sdk_kinesis::Client,
}

impl KinesisLineage {
    pub fn new(client: aws_sdk_kinesis::Client) -> Self {
        Self { client }
    }
}

impl ShardLineage for KinesisLineage {
    async fn lineage(&self, stream_arn: &str, shard_id: &str) -> Result<Lineage, LineageError> {
        let mut next_token: Option<String> = None;
        loop {
            // ListShards takes either the stream or a NextToken, never both.
            let request = match next_token.take() {
                Some(token) => self.client.list_shards().next_token(token),
                None => self.client.list_shards().stream_arn(stream_arn),
            };
            let page = request.send().await.map_err(|error| LineageError::List {
                stream_arn: stream_arn.to_owned(),
                source: Box::new(error),
            })?;
            if let Some(shard) = page.shards().iter().find(|s| s.shard_id() == shard_id) {
                let range = shard.hash_key_range();
                return Ok(Lineage {
                    parent_shard_id: shard.parent_shard_id().map(str::to_owned),
                    adjacent_parent_shard_id: shard.adjacent_parent_shard_id().map(str::to_owned),
                    hash_key_range: HashKeyRange {
                        starting_hash_key: range
                            .map(|r| r.starting_hash_key().to_owned())
                            .unwrap_or_default(),
                        ending_hash_key: range
                            .map(|r| r.ending_hash_key().to_owned())
                            .unwrap_or_default(),
                    },
                });
            }
            match page.next_token() {
                Some(token) => next_token = Some(token.to_owned()),
                None => {
                    return Err(LineageError::NoSuchShard {
                        stream_arn: stream_arn.to_owned(),
                        shard_id: shard_id.to_owned(),
                    });
                }
            }
        }
    }
}

/// Why a shard's marker was not written (this time).
#[derive(Debug, thiserror::Error)]
pub enum MarkerError {
    #[error(transparent)]
    Lineage(#[from] LineageError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The stream's own ARN: an enhanced fan-out consumer's ARN
/// (`…:stream/<name>/consumer/<consumer>:<created>`) names its stream first.
pub fn stream_arn_of(event_source_arn: &str) -> &str {
    event_source_arn
        .find("/consumer/")
        .map_or(event_source_arn, |at| &event_source_arn[..at])
}

/// The shards this function instance has marked, and how to mark more.
/// The set holds one entry per shard the instance archives (a mapping's
/// instance serves a few shards), never records.
pub struct ShardMarkers<L> {
    lineage: L,
    marked: Mutex<HashSet<(String, String)>>,
}

impl<L: ShardLineage> ShardMarkers<L> {
    pub fn new(lineage: L) -> Self {
        Self {
            lineage,
            marked: Mutex::new(HashSet::new()),
        }
    }

    fn is_marked(&self, stream_arn: &str, shard_id: &str) -> bool {
        self.marked
            .lock()
            .expect("marker set lock")
            .contains(&(stream_arn.to_owned(), shard_id.to_owned()))
    }

    /// Marks each of `shards` not yet marked by this instance. Failures are
    /// logged and leave the shard to the next batch; they never touch the
    /// batch's outcome (see the module's doc).
    pub async fn mark<S: CreateNew>(
        &self,
        store: &S,
        layout: &ArchiveLayout,
        event_source_arn: &str,
        stream: &str,
        shards: &[&str],
    ) {
        let stream_arn = stream_arn_of(event_source_arn);
        for &shard_id in shards {
            if self.is_marked(stream_arn, shard_id) {
                continue;
            }
            match self
                .write(store, layout, stream_arn, stream, shard_id)
                .await
            {
                Ok(created) => {
                    info!(stream, shard = shard_id, ?created, "shard marker");
                    self.marked
                        .lock()
                        .expect("marker set lock")
                        .insert((stream_arn.to_owned(), shard_id.to_owned()));
                }
                Err(error) => {
                    let error = &error as &(dyn std::error::Error + 'static);
                    warn!(
                        stream,
                        shard = shard_id,
                        error,
                        "shard marker not written; the shard's next batch tries again"
                    );
                }
            }
        }
    }

    async fn write<S: CreateNew>(
        &self,
        store: &S,
        layout: &ArchiveLayout,
        stream_arn: &str,
        stream: &str,
        shard_id: &str,
    ) -> Result<Created, MarkerError> {
        let lineage = self.lineage.lineage(stream_arn, shard_id).await?;
        let marker = ShardMarker {
            shard_id: shard_id.to_owned(),
            stream_arn: stream_arn.to_owned(),
            parent_shard_id: lineage.parent_shard_id,
            adjacent_parent_shard_id: lineage.adjacent_parent_shard_id,
            hash_key_range: lineage.hash_key_range,
        };
        let body = serde_json::to_vec(&marker).expect("a marker always serialises");
        Ok(store
            .create_new(PutObject {
                key: layout.shard_marker_key(stream, shard_id),
                body,
                content_type: "application/json",
                content_encoding: None,
            })
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_kinesis::operation::list_shards::ListShardsOutput;
    use aws_sdk_kinesis::types::{HashKeyRange as Range, SequenceNumberRange, Shard};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    use super::*;
    use crate::store::{MemoryStore, ObjectReader};

    const ARN: &str = "arn:aws:kinesis:eu-west-1:123456789012:stream/orders";

    fn shard(id: &str, parent: Option<&str>, adjacent: Option<&str>, range: (&str, &str)) -> Shard {
        Shard::builder()
            .shard_id(id)
            .set_parent_shard_id(parent.map(str::to_owned))
            .set_adjacent_parent_shard_id(adjacent.map(str::to_owned))
            .hash_key_range(
                Range::builder()
                    .starting_hash_key(range.0)
                    .ending_hash_key(range.1)
                    .build()
                    .unwrap(),
            )
            .sequence_number_range(
                SequenceNumberRange::builder()
                    .starting_sequence_number("1")
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }

    /// Two pages: the merged shard is on the second, found by following
    /// the token (the second request carries the token, not the stream).
    fn listing() -> (aws_smithy_mocks::Rule, aws_smithy_mocks::Rule) {
        let first = mock!(aws_sdk_kinesis::Client::list_shards)
            .match_requests(|r| r.stream_arn() == Some(ARN) && r.next_token().is_none())
            .then_output(|| {
                ListShardsOutput::builder()
                    .shards(shard("shardId-000000000000", None, None, ("0", "99")))
                    .shards(shard("shardId-000000000001", None, None, ("100", "199")))
                    .next_token("page-2")
                    .build()
            });
        let second = mock!(aws_sdk_kinesis::Client::list_shards)
            .match_requests(|r| r.next_token() == Some("page-2") && r.stream_arn().is_none())
            .then_output(|| {
                ListShardsOutput::builder()
                    .shards(shard(
                        "shardId-000000000002",
                        Some("shardId-000000000000"),
                        Some("shardId-000000000001"),
                        ("0", "199"),
                    ))
                    .build()
            });
        (first, second)
    }

    /// Markers looking shards up in `rules`, an empty store, the default
    /// layout.
    fn marking(
        first: &aws_smithy_mocks::Rule,
        second: &aws_smithy_mocks::Rule,
    ) -> (ShardMarkers<KinesisLineage>, MemoryStore, ArchiveLayout) {
        let client = mock_client!(aws_sdk_kinesis, RuleMode::MatchAny, [first, second]);
        (
            ShardMarkers::new(KinesisLineage::new(client)),
            MemoryStore::default(),
            ArchiveLayout::default(),
        )
    }

    #[tokio::test]
    async fn a_shard_is_marked_once_per_instance_with_its_lineage() {
        let (first, second) = listing();
        let (markers, store, layout) = marking(&first, &second);
        // An enhanced fan-out consumer's ARN marks its stream.
        let consumer = format!("{ARN}/consumer/c1:1700000000");
        for _ in 0..3 {
            markers
                .mark(
                    &store,
                    &layout,
                    &consumer,
                    "orders",
                    &["shardId-000000000002"],
                )
                .await;
        }
        assert_eq!(
            (first.num_calls(), second.num_calls()),
            (1, 1),
            "looked up once, not per batch"
        );
        let key = "archive/stream=orders/_shards/shardId-000000000002.json";
        let marker: ShardMarker = serde_json::from_slice(&store.get(key).await.unwrap()).unwrap();
        assert_eq!(
            marker,
            ShardMarker {
                shard_id: "shardId-000000000002".into(),
                stream_arn: ARN.into(),
                parent_shard_id: Some("shardId-000000000000".into()),
                adjacent_parent_shard_id: Some("shardId-000000000001".into()),
                hash_key_range: HashKeyRange {
                    starting_hash_key: "0".into(),
                    ending_hash_key: "199".into(),
                },
            }
        );
    }

    /// A marker another instance wrote is left as it is, and counts.
    #[tokio::test]
    async fn a_marker_already_there_is_kept_and_counts_as_done() {
        let (first, second) = listing();
        let (markers, store, layout) = marking(&first, &second);
        let key = layout.shard_marker_key("orders", "shardId-000000000000");
        crate::store::ObjectStore::put(
            &store,
            PutObject {
                key: key.clone(),
                body: b"{\"written\":\"elsewhere\"}".to_vec(),
                content_type: "application/json",
                content_encoding: None,
            },
        )
        .await
        .unwrap();
        for _ in 0..2 {
            markers
                .mark(&store, &layout, ARN, "orders", &["shardId-000000000000"])
                .await;
        }
        assert_eq!(first.num_calls(), 1);
        assert_eq!(
            store.get(&key).await.unwrap(),
            b"{\"written\":\"elsewhere\"}".to_vec()
        );
    }

    /// A failed lookup leaves the shard unmarked, and the next batch tries
    /// again (and succeeds here).
    #[tokio::test]
    async fn a_failed_lookup_is_tried_again_on_the_next_batch() {
        let rule = mock!(aws_sdk_kinesis::Client::list_shards)
            .sequence()
            .http_status(
                400,
                Some(r#"{"__type":"AccessDeniedException","message":"no"}"#.into()),
            )
            .output(|| {
                ListShardsOutput::builder()
                    .shards(shard("shardId-000000000000", None, None, ("0", "99")))
                    .build()
            })
            .build();
        let client = mock_client!(aws_sdk_kinesis, RuleMode::Sequential, [&rule]);
        let markers = ShardMarkers::new(KinesisLineage::new(client));
        let store = MemoryStore::default();
        let layout = ArchiveLayout::default();
        let key = layout.shard_marker_key("orders", "shardId-000000000000");
        markers
            .mark(&store, &layout, ARN, "orders", &["shardId-000000000000"])
            .await;
        assert!(store.get(&key).await.unwrap_err().is_not_found());
        markers
            .mark(&store, &layout, ARN, "orders", &["shardId-000000000000"])
            .await;
        assert!(store.get(&key).await.is_ok());
        assert_eq!(rule.num_calls(), 2);
    }

    #[tokio::test]
    async fn a_shard_the_stream_does_not_list_is_an_error_naming_it() {
        let (first, second) = listing();
        let client = mock_client!(aws_sdk_kinesis, RuleMode::MatchAny, [&first, &second]);
        let error = KinesisLineage::new(client)
            .lineage(ARN, "shardId-000000000009")
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("{ARN} lists no shard shardId-000000000009")
        );
    }

    #[test]
    fn the_stream_arn_of_a_consumer() {
        assert_eq!(stream_arn_of(ARN), ARN);
        assert_eq!(stream_arn_of(&format!("{ARN}/consumer/c:1")), ARN);
    }
}
