//! The S3 archive as a replay's source, bounded whatever the window or the
//! shard count: the plan finds the window's shards with one delimiter
//! listing per hour partition (folders, not objects) and their lineage in
//! the shard markers; a step lists only its own shard's folder of each hour,
//! from its cursor on, one page of keys and one object of records at a
//! time.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use tokio::time::Instant;
use tracing::{info, warn};

use crate::model::archive::{
    ArchiveLayout, ObjectRef, ShardMarker, hours, parse_object_key, partition_hour,
};
use crate::model::record::{ArrivalTime, Record};
use crate::model::seqno::Position;
use crate::model::window::StartPosition;
use crate::pipeline::dedupe::Dedupe;
use crate::pipeline::lineage::{PlannedShard, groups_of};
use crate::sources::kinesis::{ListShardsError, list_shards};
use crate::sources::s3_archive::read_object;
use crate::sources::{
    BoxFuture, Lineage, Pages, RecordSource, ShardGroups, SourceError, SourceStream, StreamShards,
    one_group,
};
use crate::store::{ListQuery, ObjectReader};

/// Markers read at once while planning: their GETs overlap, so the plan
/// doesn't wait one round trip per shard.
const MARKER_READS: usize = 16;

/// Where a plan asks for the shards of a stream whose archive has no markers
/// for all of them: `ListShards` of that ARN (the replay's own account).
pub struct ShardLister<'a> {
    pub shards: &'a dyn StreamShards,
    pub stream_arn: String,
    /// When the plan stops waiting for `ListShards` (its step's stop time):
    /// the SDK gives the call no timeout of its own, and a plan cut off by
    /// its Lambda's timeout would be lost with all its work. Past it the
    /// plan goes on without the stream's lineage, as for a stream it may
    /// not list.
    pub until: Option<Instant>,
}

impl<'a> ShardLister<'a> {
    pub fn new(shards: &'a dyn StreamShards, stream_arn: String, until: Option<Instant>) -> Self {
        Self {
            shards,
            stream_arn,
            until,
        }
    }

    /// The stream's shards, `None` when they can't be listed (in time).
    async fn list(&self) -> Result<Option<Vec<PlannedShard>>, SourceError> {
        let listing = self.shards.list_shards(&self.stream_arn);
        let Some(until) = self.until else {
            return listing.await;
        };
        let asked = Instant::now();
        match tokio::time::timeout_at(until, listing).await {
            Ok(listed) => listed,
            Err(_) => {
                warn!(
                    stream_arn = %self.stream_arn,
                    waited_ms = asked.elapsed().as_millis() as u64,
                    "ListShards did not answer before the step's stop time"
                );
                Ok(None)
            }
        }
    }
}

/// The S3 archive of one stream, records that arrived in `from..to`.
pub struct ArchiveSource<'a, R> {
    store: R,
    layout: ArchiveLayout,
    stream: String,
    from: ArrivalTime,
    to: ArrivalTime,
    /// The archived stream's ARN, from a shard marker; `None` for an archive
    /// written before markers.
    stream_arn: Option<String>,
    lister: Option<ShardLister<'a>>,
}

impl<'a, R: ObjectReader> ArchiveSource<'a, R> {
    /// Opens the archive: one listing of one key and one read, for the ARN
    /// a marker keeps (every marker of a stream holds the same one).
    pub async fn open(
        store: R,
        layout: &ArchiveLayout,
        stream: &str,
        (from, to): (ArrivalTime, ArrivalTime),
        lister: Option<ShardLister<'a>>,
    ) -> Result<Self, SourceError> {
        let first = store
            .list_page(ListQuery {
                prefix: &layout.shard_markers(stream),
                max_keys: Some(1),
                ..ListQuery::default()
            })
            .await?;
        let stream_arn = match first.keys.first() {
            Some(key) => Some(read_marker(&store, key).await?.stream_arn),
            None => None,
        };
        Ok(Self {
            store,
            layout: layout.clone(),
            stream: stream.to_owned(),
            from,
            to,
            stream_arn,
            lister,
        })
    }

    /// Every key (or with `folders`, every folder) under `prefix`, page by
    /// page: plan-sized lists (a stream's shards), never a window's objects.
    async fn list_all(&self, prefix: &str, folders: bool) -> Result<Vec<String>, SourceError> {
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let query = ListQuery {
                prefix,
                folders,
                continuation: next.as_deref(),
                ..ListQuery::default()
            };
            let page = self.store.list_page(query).await?;
            out.extend(if folders { page.folders } else { page.keys });
            match page.next {
                Some(token) => next = Some(token),
                None => return Ok(out),
            }
        }
    }

    /// The shards with objects in the window's hour partitions: each hour's
    /// folders.
    async fn shards_in_window(&self) -> Result<BTreeSet<String>, SourceError> {
        let mut shards = BTreeSet::new();
        for hour in hours(self.from, self.to) {
            let prefix = format!("{}/", self.layout.partition(&self.stream, hour));
            let folders = self.list_all(&prefix, true).await?;
            shards.extend(folders.iter().filter_map(|folder| {
                let name = folder[prefix.len()..].trim_end_matches('/');
                (!name.is_empty()).then(|| name.to_owned())
            }));
        }
        Ok(shards)
    }

    /// Every shard marker: shard → its parents.
    async fn markers(&self) -> Result<BTreeMap<String, Vec<String>>, SourceError> {
        let keys = self
            .list_all(&self.layout.shard_markers(&self.stream), false)
            .await?;
        let mut markers = BTreeMap::new();
        for keys in keys.chunks(MARKER_READS) {
            let mut reads = Vec::with_capacity(keys.len());
            for key in keys {
                reads.push(read_marker(&self.store, key));
            }
            for marker in futures_util::future::try_join_all(reads).await? {
                let parents = marker
                    .parent_shard_id
                    .into_iter()
                    .chain(marker.adjacent_parent_shard_id)
                    .collect();
                markers.insert(marker.shard_id, parents);
            }
        }
        Ok(markers)
    }

    /// Where the lineage of `present` comes from, and every shard's parents
    /// as far as it knows them.
    async fn lineage(
        &self,
        present: &BTreeSet<String>,
    ) -> Result<Option<(Lineage, BTreeMap<String, Vec<String>>)>, SourceError> {
        let markers = self.markers().await?;
        if !markers.is_empty() && present.iter().all(|s| markers.contains_key(s)) {
            return Ok(Some((Lineage::Markers, markers)));
        }
        let Some(lister) = &self.lister else {
            return Ok(None);
        };
        let Some(listed) = lister.list().await? else {
            return Ok(None);
        };
        let mut known = markers;
        known.extend(
            listed
                .into_iter()
                .map(|shard| (shard.shard_id, shard.parent_shard_ids)),
        );
        // A shard past the stream's retention is no longer listed: its
        // parents are unknown, so nothing can be run beside it.
        Ok(present
            .iter()
            .all(|s| known.contains_key(s))
            .then_some((Lineage::ListShards, known)))
    }
}

async fn read_marker<R: ObjectReader>(store: &R, key: &str) -> Result<ShardMarker, SourceError> {
    let bytes = store.get(key).await?;
    serde_json::from_slice(&bytes).map_err(|source| SourceError::Marker {
        key: key.to_owned(),
        source,
    })
}

impl<R: ObjectReader> RecordSource for ArchiveSource<'_, R> {
    fn stream(&self) -> SourceStream {
        match &self.stream_arn {
            Some(arn) => SourceStream::Arn(arn.clone()),
            None => SourceStream::Name(self.stream.clone()),
        }
    }

    fn shards(&self) -> BoxFuture<'_, Result<Vec<Vec<String>>, SourceError>> {
        Box::pin(async move { Ok(self.plan_shards().await?.groups) })
    }

    fn plan_shards(&self) -> BoxFuture<'_, Result<ShardGroups, SourceError>> {
        Box::pin(async move {
            let present = self.shards_in_window().await?;
            let (lineage, groups) = match self.lineage(&present).await? {
                Some((lineage, known)) => (lineage, groups_of(&present, &known)),
                None => (Lineage::OneGroup, one_group(present.into_iter().collect())),
            };
            info!(
                stream = %self.stream,
                lineage = ?lineage,
                groups = groups.len(),
                "planned the archive's shards"
            );
            Ok(ShardGroups {
                groups,
                lineage: Some(lineage),
            })
        })
    }

    fn pages<'a>(
        &'a self,
        shard_id: &'a str,
        after: Option<&'a Position>,
    ) -> BoxFuture<'a, Result<Box<dyn Pages + 'a>, SourceError>> {
        self.pages_from(shard_id, after, None)
    }

    fn pages_from<'a>(
        &'a self,
        shard_id: &'a str,
        after: Option<&'a Position>,
        cursor: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Box<dyn Pages + 'a>, SourceError>> {
        let window_start = self.from.epoch_millis() - self.from.epoch_millis().rem_euclid(HOUR);
        // The cursor's object again (its rest was not settled), then on: a
        // `StartAfter` of the key's `<folder>/<first>` sorts just before it.
        let resume = cursor
            .filter(|_| after.is_some())
            .and_then(|key| {
                let hour = partition_hour(key)?.timestamp_millis();
                let folder = self.folder(hour, shard_id);
                let file = key.strip_prefix(folder.as_str())?;
                let first = &file[..file.find('-')?];
                Some((hour, format!("{folder}{first}")))
            })
            .filter(|(hour, _)| *hour >= window_start);
        if cursor.is_some() && resume.is_none() {
            warn!(
                shard_id,
                "ignoring a cursor outside this archive's window and shard"
            );
        }
        let (hour, start_after) = match resume {
            Some((hour, start_after)) => (hour, Some(start_after)),
            None => (window_start, None),
        };
        let pages: Box<dyn Pages + 'a> = Box::new(ShardPages {
            source: self,
            shard_id,
            hour,
            start_after,
            continuation: None,
            listed: false,
            objects: VecDeque::new(),
            seen: Dedupe::after(after.cloned()),
            cursor: None,
            first: None,
        });
        Box::pin(async move { Ok(pages) })
    }
}

const HOUR: i64 = 3_600_000;

impl<R> ArchiveSource<'_, R> {
    /// `<partition>/<shardId>/`: one shard's objects of one hour.
    fn folder(&self, hour_millis: i64, shard_id: &str) -> String {
        let hour = ArrivalTime::from_epoch_millis(hour_millis).to_datetime();
        format!("{}/{shard_id}/", self.layout.partition(&self.stream, hour))
    }
}

/// One shard's objects, hour by hour in key order, one object a page. Key
/// order is position order while a shard's sequence numbers keep one length
/// (Kinesis's have 56 digits); an object whose first position comes before
/// the previous object's stops the read with an error rather than have its
/// records taken for ones already read.
///
/// Objects can overlap (a batch the mapping bisected or resumed is written
/// again from its failed record): a record at or before the last one
/// emitted has been emitted already and is skipped, and an object that
/// holds nothing after it is not read at all.
struct ShardPages<'a, 'b, R> {
    source: &'a ArchiveSource<'b, R>,
    shard_id: &'a str,
    /// The hour partition being listed (epoch milliseconds).
    hour: i64,
    start_after: Option<String>,
    continuation: Option<String>,
    /// Whether the hour's listing has begun.
    listed: bool,
    /// The rest of the current page of keys.
    objects: VecDeque<ObjectRef>,
    seen: Dedupe,
    /// The key of the object the last page came from.
    cursor: Option<String>,
    /// The first position of that object.
    first: Option<Position>,
}

impl<R: ObjectReader> ShardPages<'_, '_, R> {
    /// The next page of the current hour's keys, or the next hour's.
    async fn list(&mut self) -> Result<bool, SourceError> {
        let source = self.source;
        if self.listed && self.continuation.is_none() {
            self.hour += HOUR;
            self.listed = false;
            self.start_after = None;
        }
        if self.hour >= source.to.epoch_millis() {
            return Ok(false);
        }
        let folder = source.folder(self.hour, self.shard_id);
        let page = source
            .store
            .list_page(ListQuery {
                prefix: &folder,
                start_after: self.start_after.as_deref(),
                continuation: self.continuation.as_deref(),
                ..ListQuery::default()
            })
            .await?;
        self.listed = true;
        self.continuation = page.next;
        self.objects = page
            .keys
            .into_iter()
            .filter_map(|key| {
                let object = parse_object_key(&key);
                if object.is_none() {
                    warn!(%key, "skipping an object the archiver did not write");
                }
                object
            })
            .collect();
        Ok(true)
    }

    async fn read(&mut self, object: ObjectRef) -> Result<Vec<Record>, SourceError> {
        let source = self.source;
        if let Some(previous) = self.first.replace(object.first.clone())
            && object.first < previous
        {
            return Err(SourceError::OutOfOrder {
                key: object.key,
                previous: self.cursor.take().unwrap_or_default(),
            });
        }
        self.cursor = Some(object.key.clone());
        let window = (source.from, source.to);
        Ok(read_object(&source.store, &object, &mut self.seen, window).await?)
    }
}

impl<R: ObjectReader> Pages for ShardPages<'_, '_, R> {
    fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Vec<Record>>, SourceError>> {
        Box::pin(async move {
            loop {
                if let Some(object) = self.objects.pop_front() {
                    return self.read(object).await.map(Some);
                }
                if !self.list().await? {
                    return Ok(None);
                }
            }
        })
    }

    fn cursor(&self) -> Option<String> {
        self.cursor.clone()
    }
}

impl StreamShards for aws_sdk_kinesis::Client {
    fn list_shards<'a>(
        &'a self,
        stream_arn: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<PlannedShard>>, SourceError>> {
        Box::pin(async move {
            // From the trim horizon: every shard that still holds records.
            match list_shards(self, stream_arn, &StartPosition::TrimHorizon).await {
                Ok(shards) => Ok(Some(shards)),
                Err(error) => match unlisted(&error) {
                    Some(Unlisted::Gone) => {
                        info!(stream_arn, "the archived stream no longer exists");
                        Ok(None)
                    }
                    // A stream the role may not list (the stack grants the
                    // archived stream only): its shards go one after another.
                    Some(Unlisted::Denied) => {
                        warn!(
                            stream_arn,
                            error = &error as &(dyn std::error::Error + 'static),
                            "can't list the archived stream's shards"
                        );
                        Ok(None)
                    }
                    None => Err(error.into()),
                },
            }
        })
    }
}

/// Why `ListShards` can't answer, where the plan carries on without it.
enum Unlisted {
    Gone,
    Denied,
}

fn unlisted(error: &ListShardsError) -> Option<Unlisted> {
    use aws_sdk_kinesis::error::ProvideErrorMetadata as _;
    type Failed = aws_sdk_kinesis::error::SdkError<
        aws_sdk_kinesis::operation::list_shards::ListShardsError,
        aws_sdk_kinesis::config::http::HttpResponse,
    >;
    let service = error.source.downcast_ref::<Failed>()?.as_service_error()?;
    if service.is_resource_not_found_exception() {
        Some(Unlisted::Gone)
    } else if service.code() == Some("AccessDeniedException") {
        Some(Unlisted::Denied)
    } else {
        None
    }
}
