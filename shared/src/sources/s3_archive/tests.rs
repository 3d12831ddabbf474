//! The archive source: lineage from markers (or `ListShards`, or one
//! group), the marker's ARN, and a step's listing bounded to its shard's
//! folders from its cursor on, a page of keys at a time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::*;
use crate::model::archive::tests::{BEFORE_HOUR, record};
use crate::model::archive::{HashKeyRange, ShardMarker};
use crate::pipeline::lineage::PlannedShard;
use crate::sinks::s3_archive::archive_batch;
use crate::sources::{
    BoxFuture, Lineage, Pages, RecordSource, SourceError, SourceStream, StreamShards,
};
use crate::store::{ListPage, ListQuery, MAX_PAGE, MemoryStore, ObjectStore, PutObject};

const ARN: &str = "arn:aws:kinesis:eu-west-1:111122223333:stream/orders";
const HOUR: i64 = 3_600_000;

/// A memory store that counts what a reader asks of it.
/// A listing: its prefix, its `StartAfter` and how many entries it gave.
type Listing = (String, Option<String>, usize);

#[derive(Clone, Default)]
struct Counted {
    store: Arc<MemoryStore>,
    lists: Arc<Mutex<Vec<Listing>>>,
    gets: Arc<AtomicUsize>,
}

impl ObjectReader for Counted {
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.store.list(prefix).await
    }

    async fn list_page(&self, query: ListQuery<'_>) -> Result<ListPage, StoreError> {
        let page = self.store.list_page(query).await?;
        self.lists.lock().unwrap().push((
            query.prefix.to_owned(),
            query.start_after.map(str::to_owned),
            page.keys.len() + page.folders.len(),
        ));
        Ok(page)
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.store.get(key).await
    }
}

impl Counted {
    fn reset(&self) -> Vec<Listing> {
        self.gets.store(0, Ordering::Relaxed);
        std::mem::take(&mut *self.lists.lock().unwrap())
    }
}

fn shard(n: u32) -> String {
    format!("shardId-{n:012}")
}

async fn mark(store: &impl ObjectStore, n: u32, parents: &[u32]) {
    let layout = ArchiveLayout::default();
    let marker = ShardMarker {
        shard_id: shard(n),
        stream_arn: ARN.to_owned(),
        parent_shard_id: parents.first().map(|p| shard(*p)),
        adjacent_parent_shard_id: parents.get(1).map(|p| shard(*p)),
        hash_key_range: HashKeyRange {
            starting_hash_key: "0".to_owned(),
            ending_hash_key: "1".to_owned(),
        },
    };
    store
        .put(PutObject {
            key: layout.shard_marker_key("orders", &shard(n)),
            body: serde_json::to_vec(&marker).unwrap(),
            content_type: "application/json",
            content_encoding: None,
        })
        .await
        .unwrap();
}

/// Parents 0 and 1, each split in two: 0 → 2, 3 and 1 → 4, 5.
const RESHARD: [(u32, &[u32]); 6] = [
    (0, &[]),
    (1, &[]),
    (2, &[0]),
    (3, &[0]),
    (4, &[1]),
    (5, &[1]),
];

async fn resharded_archive() -> Counted {
    let store = Counted::default();
    for (n, _) in RESHARD {
        let records: Vec<Record> = (0..3)
            .map(|i| record(n, n * 10 + i, BEFORE_HOUR + 1000 * i as i64))
            .collect();
        let outcome = archive_batch(&*store.store, &ArchiveLayout::default(), &records).await;
        assert!(outcome.failed.is_empty());
    }
    store
}

fn window() -> (ArrivalTime, ArrivalTime) {
    (
        ArrivalTime::from_epoch_millis(BEFORE_HOUR - 10_000),
        ArrivalTime::from_epoch_millis(BEFORE_HOUR + HOUR),
    )
}

/// `ListShards` as a stream that still exists (or not) answers it.
struct Listed(Option<Vec<PlannedShard>>);

impl StreamShards for Listed {
    fn list_shards<'a>(
        &'a self,
        stream_arn: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<PlannedShard>>, SourceError>> {
        assert_eq!(stream_arn, "arn:aws:kinesis:us-east-1:1:stream/orders");
        Box::pin(async move { Ok(self.0.clone()) })
    }
}

fn listed() -> Listed {
    Listed(Some(
        RESHARD
            .iter()
            .map(|(n, parents)| PlannedShard {
                shard_id: shard(*n),
                parent_shard_ids: parents.iter().map(|p| shard(*p)).collect(),
            })
            .collect(),
    ))
}

async fn plan(
    store: &Counted,
    lister: Option<&dyn StreamShards>,
) -> (SourceStream, Vec<Vec<String>>, Option<Lineage>) {
    plan_until(store, lister, None).await
}

/// [`plan`], `ListShards` waited for until `until`.
async fn plan_until(
    store: &Counted,
    lister: Option<&dyn StreamShards>,
    until: Option<tokio::time::Instant>,
) -> (SourceStream, Vec<Vec<String>>, Option<Lineage>) {
    let arn = "arn:aws:kinesis:us-east-1:1:stream/orders";
    let lister = lister.map(|shards| ShardLister::new(shards, arn.to_owned(), until));
    let source = ArchiveSource::open(
        store.clone(),
        &ArchiveLayout::default(),
        "orders",
        window(),
        lister,
    )
    .await
    .unwrap();
    let planned = source.plan_shards().await.unwrap();
    (source.stream(), planned.groups, planned.lineage)
}

fn ids(groups: &[&[u32]]) -> Vec<Vec<String>> {
    groups
        .iter()
        .map(|g| g.iter().map(|n| shard(*n)).collect())
        .collect()
}

/// Issue 14 item 2: the markers' lineage runs unrelated shards apart and a
/// split's children after their parent; the events carry the marker's ARN.
#[tokio::test]
async fn markers_give_lineage_groups_and_the_archived_streams_arn() {
    let store = resharded_archive().await;
    for (n, parents) in RESHARD {
        mark(&*store.store, n, parents).await;
    }
    let (stream, groups, lineage) = plan(&store, None).await;
    assert_eq!(stream, SourceStream::Arn(ARN.to_owned()));
    assert_eq!(lineage, Some(Lineage::Markers));
    assert_eq!(groups, ids(&[&[0, 2, 3], &[1, 4, 5]]));
}

/// An archive written before markers (here: one shard without its marker)
/// asks `ListShards`, and is one group when the stream is gone or nothing
/// can be asked.
#[tokio::test]
async fn without_markers_for_every_shard_the_plan_falls_back_and_says_so() {
    let store = resharded_archive().await;
    for (n, parents) in &RESHARD[..5] {
        mark(&*store.store, *n, parents).await;
    }
    let (stream, groups, lineage) = plan(&store, Some(&listed())).await;
    assert_eq!(stream, SourceStream::Arn(ARN.to_owned()));
    assert_eq!(lineage, Some(Lineage::ListShards));
    assert_eq!(groups, ids(&[&[0, 2, 3], &[1, 4, 5]]));

    let one = ids(&[&[0, 1, 2, 3, 4, 5]]);
    let (_, groups, lineage) = plan(&store, Some(&Listed(None))).await;
    assert_eq!((groups, lineage), (one.clone(), Some(Lineage::OneGroup)));
    let (_, groups, lineage) = plan(&store, None).await;
    assert_eq!((groups, lineage), (one.clone(), Some(Lineage::OneGroup)));
    // A stream that lists only some of the archive's shards (the others
    // are past its retention) can't order them either.
    let partial = Listed(listed().0.map(|mut shards| {
        shards.truncate(4);
        shards
    }));
    let (_, groups, lineage) = plan(&resharded_archive().await, Some(&partial)).await;
    assert_eq!((groups, lineage), (one, Some(Lineage::OneGroup)));

    let (stream, _, _) = plan(&resharded_archive().await, None).await;
    assert_eq!(stream, SourceStream::Name("orders".to_owned()));
}

/// `ListShards` that never answers: an endpoint that takes the request and
/// says nothing (the SDK puts no timeout on the call).
struct Silent;

impl StreamShards for Silent {
    fn list_shards<'a>(
        &'a self,
        _stream_arn: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<PlannedShard>>, SourceError>> {
        Box::pin(std::future::pending())
    }
}

/// The fallback's `ListShards` waits no later than the step's stop time,
/// then the plan goes on as for a stream it can't list (one group, and
/// says so); a listing that answers in time is used.
#[tokio::test(start_paused = true)]
async fn a_listing_that_outlasts_the_steps_stop_time_leaves_one_group() {
    let store = resharded_archive().await;
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let (_, groups, lineage) = plan_until(&store, Some(&Silent), Some(until)).await;
    assert_eq!(
        (groups, lineage),
        (ids(&[&[0, 1, 2, 3, 4, 5]]), Some(Lineage::OneGroup))
    );
    assert_eq!(tokio::time::Instant::now(), until, "waited until then only");
    let (_, groups, lineage) = plan_until(&store, Some(&listed()), Some(until)).await;
    assert_eq!(lineage, Some(Lineage::ListShards));
    assert_eq!(groups, ids(&[&[0, 2, 3], &[1, 4, 5]]));
}

/// Shard 0's objects, two records each: `per_hour[h]` objects in hour `h`
/// of the window; shard 1 has as many, which shard 0's steps never list.
async fn busy_archive(per_hour: &[u32]) -> (Counted, Vec<Record>) {
    let store = Counted::default();
    let layout = ArchiveLayout::default();
    let start = BEFORE_HOUR + 1000; // 01:00:00
    let mut all = Vec::new();
    let mut seq = 0;
    for (hour, objects) in per_hour.iter().enumerate() {
        for i in 0..*objects {
            for n in [0, 1] {
                let at = start + hour as i64 * HOUR + i as i64;
                let records = [record(n, seq, at), record(n, seq + 1, at)];
                let outcome = archive_batch(&*store.store, &layout, &records).await;
                assert!(outcome.failed.is_empty());
                if n == 0 {
                    all.extend(records);
                }
            }
            seq += 2;
        }
    }
    (store, all)
}

async fn read_all(pages: &mut dyn Pages) -> Vec<Record> {
    let mut read = Vec::new();
    while let Some(page) = pages.next_page().await.unwrap() {
        read.extend(page);
    }
    read
}

/// Issue 14 item 3: a step lists only its shard's folder of each hour, a
/// page at a time, and a resumed one from its cursor's object on; what it
/// reads is what the whole-window scan reads.
#[tokio::test]
async fn a_step_lists_only_its_shards_keys_from_its_cursor_on() {
    let (store, records) = busy_archive(&[1_200, 300, 10]).await;
    let (from, to) = (
        ArrivalTime::from_epoch_millis(BEFORE_HOUR),
        ArrivalTime::from_epoch_millis(BEFORE_HOUR + 1000 + 3 * HOUR),
    );
    let layout = ArchiveLayout::default();
    let source = ArchiveSource::open(store.clone(), &layout, "orders", (from, to), None)
        .await
        .unwrap();
    let first = ArrivalTime::from_epoch_millis(BEFORE_HOUR).to_datetime();
    let folder = |h: i64| {
        let hour = ArrivalTime::from_epoch_millis(BEFORE_HOUR + 1000 + h * HOUR).to_datetime();
        format!("{}/{}/", layout.partition("orders", hour), shard(0))
    };
    store.reset();

    let shard0 = shard(0);
    let mut pages = source.pages(&shard0, None).await.unwrap();
    let read = read_all(pages.as_mut()).await;
    assert_eq!(read, records, "every record once, in order");
    let lists = store.reset();
    let first_folder = format!("{}/{}/", layout.partition("orders", first), shard(0));
    assert_eq!(
        lists,
        [
            (first_folder, None, 0),
            (folder(0), None, MAX_PAGE),
            (folder(0), None, 200),
            (folder(1), None, 300),
            (folder(2), None, 10),
        ],
        "one request a page, shard 0's folders only"
    );

    // The whole-window scan (every shard's keys at once) reads the same.
    let plan = plan_scan(&*store.store, &layout, "orders", from, to)
        .await
        .unwrap();
    let mut scan = ShardScan::new(plan[&shard0].clone(), from, to);
    let mut scanned = Vec::new();
    while let Some(batch) = scan.next_batch(&*store.store).await.unwrap() {
        scanned.extend(batch);
    }
    assert_eq!(scanned, read);

    // A step that stopped after the first record of hour 1's 100th object
    // resumes inside that object, listing from it on.
    let object = 1_200 + 99;
    let after = Position::of(&records[object * 2]);
    let cursor = store
        .store
        .objects()
        .into_keys()
        .find(|k| k.starts_with(&folder(1)) && k.contains(&after.sequence_number.to_string()))
        .unwrap();
    let mut pages = source
        .pages_from(&shard0, Some(&after), Some(&cursor))
        .await
        .unwrap();
    let read = read_all(pages.as_mut()).await;
    assert_eq!(read, records[object * 2 + 1..]);
    let last = store
        .store
        .objects()
        .into_keys()
        .rfind(|k| k.starts_with(&folder(2)));
    assert_eq!(pages.cursor(), last, "the last object read");
    let lists = store.reset();
    assert_eq!(lists.len(), 2, "{lists:?}");
    assert_eq!(lists[0].0, folder(1));
    assert_eq!(lists[0].2, 300 - 99, "from the cursor's object on");
    assert_eq!(lists[1], (folder(2), None, 10));

    // Without a cursor a resumed step lists its shard from the window's
    // start, still a page at a time, and skips what it settled unread.
    let mut pages = source.pages(&shard0, Some(&after)).await.unwrap();
    assert_eq!(read_all(pages.as_mut()).await, records[object * 2 + 1..]);
    assert_eq!(store.gets.load(Ordering::Relaxed), 300 - 99 + 10);
    assert!(
        store
            .reset()
            .iter()
            .all(|(prefix, _, n)| prefix.contains(&shard0) && *n <= MAX_PAGE)
    );
}

/// Records that arrived before the window's start in its first hour are
/// left out, and a cursor from another shard is ignored, not trusted.
#[tokio::test]
async fn a_foreign_cursor_is_ignored() {
    let (store, records) = busy_archive(&[3]).await;
    let (from, to) = (
        ArrivalTime::from_epoch_millis(BEFORE_HOUR + 1001),
        ArrivalTime::from_epoch_millis(BEFORE_HOUR + 1000 + HOUR),
    );
    let source = ArchiveSource::open(
        store.clone(),
        &ArchiveLayout::default(),
        "orders",
        (from, to),
        None,
    )
    .await
    .unwrap();
    let other = store
        .store
        .objects()
        .into_keys()
        .find(|k| k.contains(&shard(1)))
        .unwrap();
    let after = Position::of(&records[0]);
    let shard0 = shard(0);
    let mut pages = source
        .pages_from(&shard0, Some(&after), Some(&other))
        .await
        .unwrap();
    // Records 2 and 3 arrived at 01:00:00.001, 4 and 5 a millisecond later.
    assert_eq!(read_all(pages.as_mut()).await, records[2..]);
}

/// Keys that sort against their positions (sequence numbers of two
/// lengths) stop the read naming both objects: nothing is skipped as seen.
#[tokio::test]
async fn objects_out_of_position_order_stop_the_read() {
    let store = Counted::default();
    let layout = ArchiveLayout::default();
    let long = record(0, 5, BEFORE_HOUR + 2000);
    let short = Record {
        sequence_number: crate::model::seqno::SequenceNumber::parse(&"9".repeat(55)).unwrap(),
        ..record(0, 1, BEFORE_HOUR + 1000)
    };
    for batch in [[short.clone()], [long.clone()]] {
        assert!(
            archive_batch(&*store.store, &layout, &batch)
                .await
                .failed
                .is_empty()
        );
    }
    let source = ArchiveSource::open(store.clone(), &layout, "orders", window(), None)
        .await
        .unwrap();
    let shard0 = shard(0);
    let mut pages = source.pages(&shard0, None).await.unwrap();
    assert_eq!(pages.next_page().await.unwrap(), Some(vec![long]));
    let err = pages.next_page().await.unwrap_err();
    assert!(matches!(err, SourceError::OutOfOrder { .. }), "{err}");
    assert!(err.to_string().contains(&"9".repeat(55)), "{err}");
}
