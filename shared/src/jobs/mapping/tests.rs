//! The mapping against an in-memory stream that behaves as Kinesis does
//! (pages of a few records, an empty page with `millisBehindLatest: 0` at
//! the tip, a closed shard's end with no next iterator and its children,
//! throttling, expiring iterators and failing calls on request, records
//! arriving while it runs) and a fake function that records every
//! invocation it gets.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use aws_sdk_kinesis::error::ErrorMetadata;
use aws_sdk_kinesis::operation::get_records::GetRecordsError;
use aws_sdk_kinesis::types::error::{InternalFailureException, ResourceNotFoundException};

use crate::model::event::DeliveredEvent;
use crate::model::record::Record;
use crate::model::seqno::SequenceNumber;
use crate::pipeline::filter::{FilterCriteria, FilterEntry};
use crate::sinks::dlq::{FailureRecord, MemoryDlq as Dlq};
use crate::sinks::lambda::invoker::{Invocation, InvokeError};
use crate::sinks::lambda::options::{FunctionResponseType, MappingOptions};
use crate::sources::kinesis::{ReadOptions, RecordsPage, SourceError};

const STREAM_ARN: &str = "arn:aws:kinesis:us-east-1:123456789012:stream/orders";

fn shard_name(n: u32) -> String {
    format!("shardId-{n:012}")
}

/// Sequence numbers cross from 55 to 56 digits inside each shard, so
/// string order and numeric order disagree.
fn sequence(shard: u32, i: u32) -> SequenceNumber {
    let text = if i < 5 {
        format!("9999999999999999999999999999999999999999999999999{shard:02}{i:04}")
    } else {
        format!("10000000000000000000000000000000000000000000000000{shard:02}{i:04}")
    };
    SequenceNumber::parse(&text).unwrap()
}

fn record(shard: u32, i: u32, arrival_ms: i64) -> Record {
    Record {
        sequence_number: sequence(shard, i),
        partition_key: format!("key-{}", (shard * 7 + i) % 5),
        approximate_arrival_timestamp: ArrivalTime::from_epoch_millis(arrival_ms),
        data: format!("shard {shard} record {i}").into_bytes(),
        ..crate::model::record::tests::record(shard, i as usize)
    }
}

struct MemoryShard {
    records: Vec<Record>,
    closed: bool,
    children: Vec<ChildShard>,
}

/// A stream of several shards. Iterators are `<shard>:<index>`.
#[derive(Default)]
struct MemoryStream {
    shards: Mutex<BTreeMap<String, MemoryShard>>,
    page: usize,
    /// GetRecords call numbers (all shards, from 1) answered with a throttle
    /// or an expired-iterator error.
    throttle: BTreeSet<u32>,
    expire: BTreeSet<u32>,
    /// GetRecords call numbers answered with another error, as the SDK
    /// gives it after its own retries.
    fail: BTreeMap<u32, fn() -> SourceError>,
    calls: Mutex<u32>,
    iterators: Mutex<Vec<(String, StartPosition)>>,
}

impl MemoryStream {
    fn new(page: usize) -> Self {
        Self {
            page,
            ..Self::default()
        }
    }

    fn shard(self, n: u32, records: u32, children: &[(u32, &[u32])]) -> Self {
        let closed = !children.is_empty();
        self.shards.lock().unwrap().insert(
            shard_name(n),
            MemoryShard {
                records: (0..records)
                    .map(|i| record(n, i, 1_700_000_000_000 + i64::from(n) * 1000 + i64::from(i)))
                    .collect(),
                closed,
                children: children
                    .iter()
                    .map(|(child, parents)| ChildShard {
                        shard_id: shard_name(*child),
                        parent_shards: parents.iter().map(|p| shard_name(*p)).collect(),
                    })
                    .collect(),
            },
        );
        self
    }

    fn close(self, n: u32) -> Self {
        self.shards
            .lock()
            .unwrap()
            .get_mut(&shard_name(n))
            .unwrap()
            .closed = true;
        self
    }

    /// Shard `n`'s records as JSON, `{"i": <index>, "keep": <keep(index)>}`,
    /// for [`keeping`]'s filter.
    fn keeping(self, n: u32, keep: fn(u32) -> bool) -> Self {
        for (i, r) in self
            .shards
            .lock()
            .unwrap()
            .get_mut(&shard_name(n))
            .unwrap()
            .records
            .iter_mut()
            .enumerate()
        {
            r.data = format!(r#"{{"i": {i}, "keep": {}}}"#, keep(i as u32)).into_bytes();
        }
        self
    }

    fn append(&self, n: u32, count: u32, arrival_ms: i64) {
        let mut shards = self.shards.lock().unwrap();
        let shard = shards.get_mut(&shard_name(n)).unwrap();
        let start = shard.records.len() as u32;
        for i in start..start + count {
            shard.records.push(record(n, i, arrival_ms));
        }
    }

    fn all_records(&self) -> BTreeMap<String, Vec<SequenceNumber>> {
        self.shards
            .lock()
            .unwrap()
            .iter()
            .map(|(id, s)| {
                (
                    id.clone(),
                    s.records
                        .iter()
                        .map(|r| r.sequence_number.clone())
                        .collect(),
                )
            })
            .collect()
    }
}

impl ShardSource for MemoryStream {
    async fn shard_iterator(
        &self,
        shard_id: &str,
        start: &StartPosition,
    ) -> Result<String, SourceError> {
        self.iterators
            .lock()
            .unwrap()
            .push((shard_id.to_owned(), start.clone()));
        let shards = self.shards.lock().unwrap();
        let index = crate::sources::kinesis::tests::start_index(&shards[shard_id].records, start);
        Ok(format!("{shard_id}:{index}"))
    }

    async fn records(
        &self,
        shard_id: &str,
        iterator: &str,
        limit: i32,
    ) -> Result<RecordsPage, SourceError> {
        let call = {
            let mut calls = self.calls.lock().unwrap();
            *calls += 1;
            *calls
        };
        if self.throttle.contains(&call) {
            return Err(SourceError::Throttled {
                source: "Rate exceeded for shard".into(),
            });
        }
        if self.expire.contains(&call) {
            return Err(SourceError::ExpiredIterator);
        }
        if let Some(error) = self.fail.get(&call) {
            return Err(error());
        }
        let (id, index) = iterator.rsplit_once(':').unwrap();
        assert_eq!(id, shard_id, "an iterator of another shard");
        let index: usize = index.parse().unwrap();
        let shards = self.shards.lock().unwrap();
        let shard = &shards[shard_id];
        let end = (index + self.page.min(limit as usize)).min(shard.records.len());
        let records = shard.records[index..end].to_vec();
        let closed_end = shard.closed && end == shard.records.len();
        Ok(RecordsPage {
            bytes: records.iter().map(|r| r.data.len()).sum(),
            records,
            next_iterator: (!closed_end).then(|| format!("{shard_id}:{end}")),
            millis_behind_latest: Some(if end < shard.records.len() { 1000 } else { 0 }),
            child_shards: if closed_end {
                shard.children.clone()
            } else {
                Vec::new()
            },
        })
    }
}

/// An SDK error around the operation's error, as `SdkError` holds it.
#[derive(Debug, thiserror::Error)]
#[error("service error")]
struct Sdk(#[source] GetRecordsError);

fn sdk_error(message: &str, error: GetRecordsError) -> SourceError {
    SourceError::Other {
        message: message.into(),
        source: Box::new(Sdk(error)),
    }
}

/// A 500 the SDK's retries did not get past.
fn internal_failure() -> SourceError {
    sdk_error(
        "InternalFailureException: Internal service failure",
        GetRecordsError::InternalFailureException(InternalFailureException::builder().build()),
    )
}

/// A connection dropped mid-answer.
fn connection_reset() -> SourceError {
    SourceError::Other {
        message: "dispatch failure: connection reset".into(),
        source: Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
    }
}

fn stream_gone() -> SourceError {
    sdk_error(
        "ResourceNotFoundException: Stream orders not found",
        GetRecordsError::ResourceNotFoundException(ResourceNotFoundException::builder().build()),
    )
}

/// Access denied, as an error code the SDK does not model for the call.
fn access_denied() -> SourceError {
    sdk_error(
        "AccessDeniedException: not authorized to perform kinesis:GetRecords",
        GetRecordsError::generic(
            ErrorMetadata::builder()
                .code("AccessDeniedException")
                .build(),
        ),
    )
}

/// The function: fails (`Unhandled`) any batch holding a poison record,
/// or reports it as a batch item failure; keeps every invocation's records.
#[derive(Default)]
struct Function {
    /// How long an invocation takes (10 ms when unset).
    duration: Option<Duration>,
    poison: BTreeSet<SequenceNumber>,
    partial: bool,
    invocations: Mutex<Vec<Vec<Record>>>,
    /// The records of invocations that succeeded (or the part before a
    /// reported failure).
    acknowledged: Mutex<Vec<Record>>,
}

impl Invoker for Function {
    async fn invoke(&self, payload: Vec<u8>) -> Result<Invocation, InvokeError> {
        // A function takes time: lets the clock (paused in these tests) and
        // the mapping's other futures move while a shard retries.
        tokio::time::sleep(self.duration.unwrap_or(Duration::from_millis(10))).await;
        let records = DeliveredEvent::from_slice(&payload).unwrap().records;
        self.invocations.lock().unwrap().push(records.clone());
        let poisoned = records
            .iter()
            .position(|r| self.poison.contains(&r.sequence_number));
        let answer = |function_error: Option<&str>, body: String| Invocation {
            request_id: "req".into(),
            status_code: 200,
            executed_version: Some("$LATEST".into()),
            function_error: function_error.map(str::to_owned),
            payload: body.into_bytes(),
        };
        match poisoned {
            None => {
                self.acknowledged.lock().unwrap().extend(records);
                Ok(answer(None, "{}".into()))
            }
            Some(index) if self.partial => {
                self.acknowledged
                    .lock()
                    .unwrap()
                    .extend(records[..index].iter().cloned());
                Ok(answer(
                    None,
                    format!(
                        r#"{{"batchItemFailures":[{{"itemIdentifier":"{}"}}]}}"#,
                        records[index].sequence_number
                    ),
                ))
            }
            Some(_) => Ok(answer(
                Some("Unhandled"),
                r#"{"errorType":"Poison"}"#.into(),
            )),
        }
    }

    fn function_arn(&self) -> &str {
        "arn:aws:lambda:us-east-1:123456789012:function:consumer"
    }
}

fn now() -> ArrivalTime {
    ArrivalTime::from_epoch_millis(1_700_000_100_000)
}

fn config(batch_size: usize, window_ms: u64) -> MappingConfig {
    MappingConfig {
        options: MappingOptions {
            batch_size,
            ..MappingOptions::default()
        },
        batching_window: Duration::from_millis(window_ms),
        idle_exit: Some(Duration::from_secs(5)),
        read: ReadOptions {
            base_backoff: Duration::from_millis(1),
            ..MappingConfig::default().read
        },
        invoke_backoff: Duration::from_millis(1),
        ..MappingConfig::default()
    }
}

/// [`config`] with a filter that keeps the records [`MemoryStream::keeping`]
/// marks `"keep": true`.
fn keeping(batch_size: usize, window_ms: u64) -> MappingConfig {
    let mut config = config(batch_size, window_ms);
    config.options.filter_criteria = Some(FilterCriteria {
        filters: vec![FilterEntry {
            pattern: r#"{"data": {"keep": [true]}}"#.into(),
        }],
    });
    config
}

fn planned(shards: &[(u32, &[u32])]) -> Vec<PlannedShard> {
    shards
        .iter()
        .map(|(n, parents)| PlannedShard {
            shard_id: shard_name(*n),
            parent_shard_ids: parents.iter().map(|p| shard_name(*p)).collect(),
        })
        .collect()
}

/// The one shard most tests poll.
fn shard_0() -> Vec<PlannedShard> {
    planned(&[(0, &[])])
}

async fn run_mapping<I: Invoker>(
    stream: &MemoryStream,
    invoker: &I,
    dlq: &Dlq,
    config: &MappingConfig,
    shards: Vec<PlannedShard>,
    shutdown: impl Future<Output = ()>,
) -> Result<MappingReport, MappingError> {
    let source = EventSource::new(STREAM_ARN, "arn:aws:iam::123456789012:role/consumer").unwrap();
    EventSourceMapping {
        source: stream,
        invoker,
        destination: dlq,
        event_source: &source,
        config,
        now,
    }
    .run(shards, shutdown)
    .await
}

/// A stream, the function it feeds and the on-failure destination: what
/// every test sets up, so that each states only its own stream, function
/// and settings.
struct Rig {
    stream: MemoryStream,
    function: Function,
    dlq: Dlq,
}

impl Rig {
    fn new(stream: MemoryStream) -> Self {
        Self::with(stream, Function::default())
    }

    fn with(stream: MemoryStream, function: Function) -> Self {
        Self {
            stream,
            function,
            dlq: Dlq::default(),
        }
    }

    async fn run(
        &self,
        config: &MappingConfig,
        shards: Vec<PlannedShard>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<MappingReport, MappingError> {
        run_mapping(
            &self.stream,
            &self.function,
            &self.dlq,
            config,
            shards,
            shutdown,
        )
        .await
    }

    /// Shard 0 until the mapping is shut down `after` (it must not stop
    /// before by itself).
    async fn run_shard_0_for(&self, config: &MappingConfig, after: Duration) -> MappingReport {
        let report = self
            .run(config, shard_0(), tokio::time::sleep(after))
            .await
            .unwrap();
        assert_eq!(report.stopped, Stopped::Shutdown);
        report
    }

    /// Shard 0 until the mapping stops by itself, which it must do cleanly.
    async fn run_shard_0(&self, config: &MappingConfig) -> MappingReport {
        self.run(config, shard_0(), std::future::pending())
            .await
            .unwrap()
    }

    fn invocations(&self) -> Vec<Vec<Record>> {
        self.function.invocations.lock().unwrap().clone()
    }

    fn invocation_sizes(&self) -> Vec<usize> {
        self.invocations().iter().map(Vec::len).collect()
    }

    fn acknowledged(&self) -> Vec<Record> {
        self.function.acknowledged.lock().unwrap().clone()
    }

    fn acknowledged_sequences(&self) -> Vec<SequenceNumber> {
        self.acknowledged()
            .into_iter()
            .map(|r| r.sequence_number)
            .collect()
    }

    /// Every record of the stream acknowledged once, in order per shard.
    fn assert_every_record_once(&self) {
        assert_eq!(by_shard(&self.acknowledged()), self.stream.all_records());
    }

    fn failed(&self) -> Vec<FailureRecord> {
        self.dlq.records.lock().unwrap().clone()
    }

    fn iterators(&self) -> Vec<(String, StartPosition)> {
        self.stream.iterators.lock().unwrap().clone()
    }
}

fn by_shard(records: &[Record]) -> BTreeMap<String, Vec<SequenceNumber>> {
    let mut out: BTreeMap<String, Vec<SequenceNumber>> = BTreeMap::new();
    for r in records {
        out.entry(r.shard_id.clone())
            .or_default()
            .push(r.sequence_number.clone());
    }
    out
}

/// The first and last of `batches` holding a record of shard `n`.
fn span<B: AsRef<[Record]>>(batches: &[B], n: u32) -> (usize, usize) {
    let holds = |b: &B| b.as_ref().iter().any(|r| r.shard_id == shard_name(n));
    (
        batches.iter().position(holds).unwrap(),
        batches.iter().rposition(holds).unwrap(),
    )
}

fn shard_report(report: &MappingReport, n: u32) -> &ShardReport {
    report
        .shards
        .iter()
        .find(|s| s.shard_id == shard_name(n))
        .unwrap_or_else(|| panic!("no report for shard {n}: {report:?}"))
}

/// Shard 0 splits into 2 and 3, then 2 and 1 merge into 4. Only 0 and 1
/// are listed at the start: the children are found at their parents' ends.
fn resharded() -> MemoryStream {
    MemoryStream::new(3)
        .shard(0, 11, &[(2, &[0]), (3, &[0])])
        .shard(1, 7, &[(4, &[1, 2])])
        .shard(2, 5, &[(4, &[1, 2])])
        .shard(3, 9, &[])
        .shard(4, 6, &[])
}

#[tokio::test(start_paused = true)]
async fn every_record_once_in_order_children_after_their_parents() {
    let rig = Rig::new(resharded());
    let report = rig
        .run(
            &config(4, 0),
            planned(&[(0, &[]), (1, &[])]),
            std::future::pending(),
        )
        .await
        .unwrap();
    assert_eq!(report.stopped, Stopped::Idle);

    rig.assert_every_record_once();
    assert_eq!(report.records(), 38);

    // A child's first invocation comes after its parents' last.
    let invocations = rig.invocations();
    let first = |n: u32| span(&invocations, n).0;
    let last = |n: u32| span(&invocations, n).1;
    assert!(first(2) > last(0) && first(3) > last(0));
    assert!(first(4) > last(1) && first(4) > last(2));
    // One shard per invocation, at most BatchSize records; with no batching
    // window, each invocation holds what one poll read (pages of 3).
    for batch in &invocations {
        assert!(batch.iter().all(|r| r.shard_id == batch[0].shard_id));
        assert!(!batch.is_empty() && batch.len() <= 3, "{}", batch.len());
    }

    // Lineage, counters and checkpoints.
    let order: Vec<&str> = report.shards.iter().map(|s| s.shard_id.as_str()).collect();
    let position = |n: u32| order.iter().position(|s| *s == shard_name(n)).unwrap();
    assert!(position(0) < position(2) && position(2) < position(4) && position(1) < position(4));
    assert_eq!(
        shard_report(&report, 0).child_shard_ids,
        [shard_name(2), shard_name(3)]
    );
    assert_eq!(
        shard_report(&report, 4).parent_shard_ids,
        [shard_name(1), shard_name(2)]
    );
    for (n, count) in [(0, 11), (1, 7), (2, 5), (3, 9), (4, 6)] {
        let shard = shard_report(&report, n);
        assert_eq!(shard.records, count, "{shard:?}");
        assert_eq!(shard.counters.delivered, count, "{shard:?}");
        assert_eq!(shard.counters.invocations, shard.batches, "{shard:?}");
        assert_eq!(shard.in_flight, 0);
        assert_eq!(shard.checkpoint, Some(sequence(n, count as u32 - 1)));
        let closed = n < 3;
        assert_eq!(
            shard.status,
            if closed {
                ShardStatus::Ended
            } else {
                ShardStatus::Polling
            },
            "{shard:?}"
        );
    }
    assert!(rig.failed().is_empty());
    // Children discovered at their parents' end are read from their start.
    assert!(
        rig.iterators()
            .contains(&(shard_name(4), StartPosition::TrimHorizon))
    );
}

#[tokio::test(start_paused = true)]
async fn listed_children_wait_for_their_parents_and_all_closed_ends_the_run() {
    // Every shard closed: the mapping ends by itself once all are read.
    let rig = Rig::new(
        MemoryStream::new(4)
            .shard(0, 6, &[(2, &[0, 1])])
            .shard(1, 5, &[(2, &[0, 1])])
            .shard(2, 8, &[(3, &[2])])
            .shard(3, 3, &[])
            .close(3),
    );
    let mut config = config(100, 0);
    config.idle_exit = None;
    let report = rig
        .run(
            &config,
            // Listed children first: the lineage, not the list, sets the order.
            planned(&[(3, &[2]), (2, &[0, 1]), (1, &[]), (0, &[])]),
            std::future::pending(),
        )
        .await
        .unwrap();
    assert_eq!(report.stopped, Stopped::AllShardsEnded);
    rig.assert_every_record_once();
    // In the order acknowledged, record by record.
    let acknowledged: Vec<[Record; 1]> = rig.acknowledged().into_iter().map(|r| [r]).collect();
    let first_of = |n: u32| span(&acknowledged, n).0;
    let last_of = |n: u32| span(&acknowledged, n).1;
    assert!(first_of(2) > last_of(0) && first_of(2) > last_of(1));
    assert!(first_of(3) > last_of(2));
    assert!(report.shards.iter().all(|s| s.status == ShardStatus::Ended));
}

#[tokio::test(start_paused = true)]
async fn the_batching_window_fills_batches_up_to_batch_size() {
    // 10 records behind the tip, then 2 more later: with a window, pages of
    // 3 are gathered into batches of 4; the 2 late ones wait out the window.
    let rig = Rig::new(MemoryStream::new(3).shard(0, 10, &[]));
    let mut config = config(4, 2_000);
    config.idle_exit = Some(Duration::from_secs(60));
    let late = async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        rig.stream.append(0, 2, 1_700_000_050_000);
    };
    let (report, ()) = tokio::join!(rig.run_shard_0(&config), late);
    // 4 + 4 full; 2 left at the tip wait the window; the late 2 likewise.
    assert_eq!(rig.invocation_sizes(), [4, 4, 2, 2]);
    let shard = shard_report(&report, 0);
    assert_eq!(
        (shard.records, shard.batches, shard.counters.invocations),
        (12, 4, 4)
    );
    assert_eq!(shard.checkpoint, Some(sequence(0, 11)));
}

#[tokio::test(start_paused = true)]
async fn parallelization_factor_gathers_one_batch_per_lane() {
    let rig = Rig::new(MemoryStream::new(100).shard(0, 40, &[]));
    let mut config = config(5, 0);
    config.options.parallelization_factor = 3;
    let report = rig.run_shard_0(&config).await;
    let invocations = rig.invocations();
    assert!(invocations.iter().all(|b| b.len() <= 5));
    // Gathered 15 at a time (one poll each, limited to the room left).
    assert_eq!(shard_report(&report, 0).batches, 3);
    // Per partition key, the order of the shard.
    let mut per_key: BTreeMap<String, Vec<SequenceNumber>> = BTreeMap::new();
    for r in invocations.iter().flatten() {
        per_key
            .entry(r.partition_key.clone())
            .or_default()
            .push(r.sequence_number.clone());
    }
    for sequences in per_key.values() {
        assert!(sequences.windows(2).all(|w| w[0] < w[1]));
    }
    assert_eq!(
        by_shard(&rig.acknowledged())
            .values()
            .map(Vec::len)
            .sum::<usize>(),
        40
    );
}

#[tokio::test(start_paused = true)]
async fn failing_batches_are_retried_bisected_and_sent_to_the_destination() {
    let poison = sequence(0, 7);
    let rig = Rig::with(
        MemoryStream::new(10).shard(0, 20, &[]),
        Function {
            poison: [poison.clone()].into(),
            ..Function::default()
        },
    );
    let mut config = config(10, 0);
    config.options.maximum_retry_attempts = 1;
    config.options.bisect_batch_on_function_error = true;
    let report = rig.run_shard_0(&config).await;
    let failed = rig.failed();
    assert_eq!(failed.len(), 1);
    let info = &failed[0].kinesis_batch_info;
    assert_eq!(
        (info.batch_size, info.start_sequence_number.as_str()),
        (1, poison.as_str())
    );
    let shard = shard_report(&report, 0);
    assert_eq!(
        (
            shard.records,
            shard.counters.delivered,
            shard.counters.failed_records
        ),
        (20, 19, 1)
    );
    assert_eq!(shard.counters.failed_batches, 1);
    assert_eq!(shard.failure_locations, ["dlq-1"]);
    assert!(shard.counters.function_errors >= 4, "{shard:?}");
    assert_eq!(shard.counters.invocations, rig.invocations().len() as u64);
    // The checkpoint passes the failed record only once it is in the
    // destination.
    assert_eq!(shard.checkpoint, Some(sequence(0, 19)));
    let acknowledged = rig.acknowledged_sequences();
    assert!(!acknowledged.contains(&poison));
    assert_eq!(acknowledged.len(), 19);
}

#[tokio::test(start_paused = true)]
async fn partial_batch_responses_resume_from_the_reported_record() {
    let rig = Rig::with(
        MemoryStream::new(10).shard(0, 10, &[]),
        Function {
            poison: [sequence(0, 6)].into(),
            partial: true,
            ..Function::default()
        },
    );
    let mut config = config(10, 0);
    config.options.maximum_retry_attempts = 2;
    config.options.function_response_types = vec![FunctionResponseType::ReportBatchItemFailures];
    let report = rig.run_shard_0(&config).await;
    // 10, then from the reported record: 4, 4 (retries), then to the DLQ.
    assert_eq!(rig.invocation_sizes(), [10, 4, 4]);
    let shard = shard_report(&report, 0);
    assert_eq!(
        (shard.counters.delivered, shard.counters.failed_records),
        (6, 4)
    );
}

#[tokio::test(start_paused = true)]
async fn throttles_and_expired_iterators_lose_nothing() {
    let rig = Rig::new(
        MemoryStream {
            throttle: [2, 3, 7].into(),
            expire: [5, 9].into(),
            ..MemoryStream::new(2)
        }
        .shard(0, 9, &[(1, &[0])])
        .shard(1, 6, &[]),
    );
    let report = rig.run_shard_0(&config(3, 0)).await;
    rig.assert_every_record_once();
    let throttles: u64 = report.shards.iter().map(|s| s.throttles).sum();
    assert_eq!(throttles, 3);
    // Re-acquired after the last record read, never from the start again.
    let iterators = rig.iterators();
    assert!(iterators.len() >= 4, "{iterators:?}");
    assert!(
        iterators[1..]
            .iter()
            .filter(|(shard, _)| *shard == shard_name(0))
            .all(|(_, start)| matches!(start, StartPosition::AfterSequenceNumber { .. })),
        "{iterators:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_a_blocked_shard_without_checkpointing_its_batch() {
    // Retries forever (-1): the batch holding the poison record blocks the
    // shard until shutdown; the earlier batch stays checkpointed.
    let rig = Rig::with(
        MemoryStream::new(5).shard(0, 10, &[]),
        Function {
            poison: [sequence(0, 7)].into(),
            ..Function::default()
        },
    );
    let report = rig
        .run_shard_0_for(&config(5, 0), Duration::from_secs(2))
        .await;
    let shard = shard_report(&report, 0);
    assert_eq!(shard.checkpoint, Some(sequence(0, 4)));
    assert_eq!((shard.records, shard.in_flight), (5, 5));
    assert!(rig.invocations().len() > 3);
    assert!(rig.failed().is_empty());
}

#[tokio::test(start_paused = true)]
async fn latest_and_at_timestamp_start_where_asked() {
    // LATEST: only what arrives after the mapping started.
    let rig = Rig::new(MemoryStream::new(10).shard(0, 6, &[]));
    let mut config = config(10, 0);
    config.starting_position = StartPosition::Latest;
    let later = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        rig.stream.append(0, 3, 1_700_000_060_000);
    };
    let (report, ()) = tokio::join!(rig.run_shard_0(&config), later);
    assert_eq!(
        rig.acknowledged_sequences(),
        [sequence(0, 6), sequence(0, 7), sequence(0, 8)]
    );
    assert_eq!(shard_report(&report, 0).records, 3);

    // AT_TIMESTAMP: from the first record that arrived at or after it.
    let rig = Rig::new(MemoryStream::new(10).shard(0, 8, &[]));
    config.starting_position = StartPosition::AtTimestamp {
        timestamp: ArrivalTime::from_epoch_millis(1_700_000_000_005),
    };
    rig.run_shard_0(&config).await;
    assert_eq!(
        rig.acknowledged_sequences(),
        [sequence(0, 5), sequence(0, 6), sequence(0, 7)]
    );
}

#[tokio::test]
async fn settings_out_of_range_are_refused_before_any_poll() {
    let rig = Rig::new(MemoryStream::new(3).shard(0, 3, &[]));
    let mut bad = config(10, 0);
    bad.starting_position = StartPosition::AtSequenceNumber {
        sequence_number: sequence(0, 1),
    };
    let mut window = config(10, 0);
    window.batching_window = Duration::from_secs(301);
    let mut size = config(10, 0);
    size.options.batch_size = 10_001;
    for (config, field) in [
        (bad, "StartingPosition"),
        (window, "MaximumBatchingWindowInSeconds"),
        (size, "BatchSize"),
    ] {
        let error = rig
            .run(&config, shard_0(), std::future::pending())
            .await
            .unwrap_err();
        assert!(error.source.to_string().contains(field), "{}", error.source);
        assert!(matches!(error.source, ShardError::Invalid(_)));
    }
    assert!(rig.iterators().is_empty());
    assert!(rig.invocations().is_empty());
}

/// An invoke that can never succeed (no such function).
struct Missing;

impl Invoker for Missing {
    async fn invoke(&self, _payload: Vec<u8>) -> Result<Invocation, InvokeError> {
        Err(InvokeError::Fatal {
            function: "consumer".into(),
            source: "ResourceNotFoundException: Function not found".into(),
        })
    }

    fn function_arn(&self) -> &str {
        "arn:aws:lambda:us-east-1:123456789012:function:missing"
    }
}

#[tokio::test(start_paused = true)]
async fn a_fatal_invoke_error_stops_the_mapping_with_the_report() {
    let stream = MemoryStream::new(10).shard(0, 4, &[]).shard(1, 0, &[]);
    let dlq = Dlq::default();
    let error = run_mapping(
        &stream,
        &Missing,
        &dlq,
        &config(10, 0),
        planned(&[(0, &[]), (1, &[])]),
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&error.source, ShardError::Delivery { shard_id, .. } if *shard_id == shard_name(0)),
        "{error:?}"
    );
    assert_eq!(error.report.stopped, Stopped::Failed);
    let shard = shard_report(&error.report, 0);
    assert_eq!(
        (shard.records, shard.in_flight, shard.checkpoint.as_ref()),
        (0, 4, None)
    );
    assert!(dlq.records.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn transient_read_errors_are_retried_and_lose_nothing() {
    // Failures in a row (from the first call), alone, and on the child.
    let rig = Rig::new(
        MemoryStream {
            fail: BTreeMap::from([
                (1, internal_failure as fn() -> SourceError),
                (2, connection_reset),
                (3, internal_failure),
                (6, connection_reset),
                (11, internal_failure),
            ]),
            throttle: [8].into(),
            ..MemoryStream::new(2)
        }
        .shard(0, 9, &[(1, &[0])])
        .shard(1, 6, &[]),
    );
    let report = rig.run_shard_0(&config(3, 0)).await;
    assert_eq!(report.stopped, Stopped::Idle);
    // Every record once, in order: none skipped, none delivered twice.
    rig.assert_every_record_once();
    assert_eq!(rig.invocations().iter().map(Vec::len).sum::<usize>(), 15);
    let read_errors: u64 = report.shards.iter().map(|s| s.read_errors).sum();
    let throttles: u64 = report.shards.iter().map(|s| s.throttles).sum();
    assert_eq!((read_errors, throttles), (5, 1), "{report:?}");
    for (n, count) in [(0, 9), (1, 6)] {
        let shard = shard_report(&report, n);
        assert_eq!((shard.records, shard.in_flight), (count, 0), "{shard:?}");
        assert_eq!(shard.checkpoint, Some(sequence(n, count as u32 - 1)));
    }
    // Retried from the same iterator: one per shard, from its start.
    assert_eq!(
        rig.iterators(),
        [
            (shard_name(0), StartPosition::TrimHorizon),
            (shard_name(1), StartPosition::TrimHorizon)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_read_that_cannot_heal_stops_the_mapping_with_the_report() {
    for error in [stream_gone as fn() -> SourceError, access_denied] {
        // The first page is settled; the second read is refused.
        let rig = Rig::new(
            MemoryStream {
                fail: BTreeMap::from([(2, error)]),
                ..MemoryStream::new(5)
            }
            .shard(0, 10, &[]),
        );
        let failed = rig
            .run(&config(5, 0), shard_0(), std::future::pending())
            .await
            .unwrap_err();
        let ShardError::Read(read) = &failed.source else {
            panic!("{failed:?}");
        };
        assert_eq!(read.shard_id, shard_name(0));
        assert_eq!(read.source.to_string(), error().to_string());
        assert!(
            std::error::Error::source(&read.source).is_some(),
            "{read:?}"
        );
        assert_eq!(failed.report.stopped, Stopped::Failed);
        let shard = shard_report(&failed.report, 0);
        assert_eq!(
            (shard.records, shard.read_errors, shard.checkpoint.clone()),
            (5, 0, Some(sequence(0, 4)))
        );
        assert_eq!(rig.acknowledged_sequences().len(), 5);
    }
}

#[tokio::test(start_paused = true)]
async fn failure_locations_keep_the_first_hundred_and_count_the_rest() {
    let stream = MemoryStream::new(10).shard(0, 105, &[]);
    let poison = stream.all_records()[&shard_name(0)]
        .iter()
        .cloned()
        .collect();
    let rig = Rig::with(
        stream,
        Function {
            poison,
            ..Function::default()
        },
    );
    let mut config = config(1, 0);
    config.options.maximum_retry_attempts = 0;
    let report = rig.run_shard_0(&config).await;
    let shard = shard_report(&report, 0);
    assert_eq!(
        (shard.counters.failed_batches, shard.counters.failed_records),
        (105, 105)
    );
    let first_hundred: Vec<String> = (1..=100).map(|i| format!("dlq-{i}")).collect();
    assert_eq!(shard.failure_locations, first_hundred);
    assert_eq!(shard.failure_locations_dropped, 5);
    // The destination got every batch: only the report is capped.
    assert_eq!(rig.failed().len(), 105);
    assert_eq!(shard.checkpoint, Some(sequence(0, 104)));
}

#[tokio::test(start_paused = true)]
async fn the_idle_time_counts_from_the_last_settled_batch() {
    // One batch whose invocation takes 8 s, then 2 records 2 s after it was
    // settled: the idle exit (5 s) counts from the settling, not from the
    // read 8 s earlier, so the late records are still delivered.
    let function = Function {
        duration: Some(Duration::from_secs(8)),
        ..Function::default()
    };
    let rig = Rig::with(MemoryStream::new(4).shard(0, 4, &[]), function);
    let late = async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        rig.stream.append(0, 2, 1_700_000_050_000);
    };
    let config = config(4, 0);
    let (report, ()) = tokio::join!(rig.run_shard_0(&config), late);
    assert_eq!(report.stopped, Stopped::Idle);
    assert_eq!(rig.invocation_sizes(), [4, 2]);
    rig.assert_every_record_once();
}

/// `TumblingWindowInSeconds` behind the local mapping, as the guide's "Time
/// windows" section describes it
/// (https://docs.aws.amazon.com/lambda/latest/dg/services-kinesis-windows.html):
/// the state carried from batch to batch of a window, each window's final
/// invoke, and the last one when the shard ends ("When the shard ends,
/// Lambda considers the window closed").
#[tokio::test]
async fn tumbling_windows_carry_state_and_close_when_the_shard_ends() {
    use crate::sinks::lambda::window::tests::{Summer, T0, totals};
    let stream = MemoryStream::new(3).shard(1, 10, &[]).close(1);
    for (i, r) in stream
        .shards
        .lock()
        .unwrap()
        .get_mut(&shard_name(1))
        .unwrap()
        .records
        .iter_mut()
        .enumerate()
    {
        // Windows of 60 s: records 0-2, 3-5, 6-8 and 9.
        r.approximate_arrival_timestamp = ArrivalTime::from_epoch_millis(T0 + i as i64 * 20_000);
        r.data = (i + 1).to_string().into_bytes();
    }
    let records = stream.shards.lock().unwrap()[&shard_name(1)]
        .records
        .clone();
    let summer = Summer::default();
    let dlq = Dlq::default();
    let config = MappingConfig {
        options: MappingOptions {
            batch_size: 2,
            tumbling_window_in_seconds: 60,
            ..MappingOptions::default()
        },
        ..config(2, 0)
    };
    let shards = planned(&[(1, &[])]);
    let report = run_mapping(
        &stream,
        &summer,
        &dlq,
        &config,
        shards,
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(report.stopped, Stopped::AllShardsEnded);
    let finals: BTreeMap<String, i64> = summer
        .finals()
        .into_iter()
        .map(|(w, s, _)| (w, s))
        .collect();
    assert_eq!(finals, totals(&records));
    assert_eq!(finals.len(), 4);
    // The gathered batches of 2 are cut again where a window ends (a
    // window's records never share an invocation with another's): [0, 1],
    // [2], [3], [4, 5], [6, 7], [8], [9], and 4 final invokes.
    assert_eq!(report.shards[0].counters.invocations, 11);
    assert_eq!(report.shards[0].counters.delivered, 10);
}

fn even(i: u32) -> bool {
    i.is_multiple_of(2)
}

/// invocation-eventfiltering.html
/// (https://docs.aws.amazon.com/lambda/latest/dg/invocation-eventfiltering.html):
/// "If a record from your event source satisfies one or more of your
/// filters, Lambda includes the record in the next event it sends to your
/// function. If none of your filters are satisfied, Lambda discards the
/// record." (an earlier revision of the page: "If you're using batching
/// windows, Lambda applies your filter criteria to each new event to
/// determine whether to add it to the current batch"). So a dropped record
/// takes no room in a batch: with every other record matching, batches of
/// `BatchSize` matching records, not of `BatchSize` records read. Failed
/// and throttled reads and an expired iterator among them lose nothing and
/// deliver nothing twice.
#[tokio::test(start_paused = true)]
async fn filtered_batches_are_filled_with_matching_records() {
    let rig = Rig::new(
        MemoryStream {
            fail: BTreeMap::from([(4, internal_failure as fn() -> SourceError)]),
            throttle: [9].into(),
            expire: [13].into(),
            ..MemoryStream::new(3)
        }
        .shard(0, 60, &[])
        .keeping(0, even),
    );
    let report = rig.run_shard_0(&keeping(10, 2_000)).await;
    assert_eq!(rig.invocation_sizes(), [10, 10, 10]);
    let matching: Vec<SequenceNumber> = (0..60)
        .filter(|i| even(*i))
        .map(|i| sequence(0, i))
        .collect();
    assert_eq!(rig.acknowledged_sequences(), matching);
    let shard = shard_report(&report, 0);
    assert_eq!(
        (
            shard.records,
            shard.counters.delivered,
            shard.counters.filtered,
            shard.in_flight
        ),
        (60, 30, 30, 0),
        "{shard:?}"
    );
    assert_eq!((shard.read_errors, shard.throttles), (1, 1), "{shard:?}");
    // Past the last record, which the filter dropped: it is not read again.
    assert_eq!(shard.checkpoint, Some(sequence(0, 59)));
}

/// Without a batching window the mapping invokes with what one poll read,
/// and the records the filters drop take no room in that poll either: one
/// page of 50 holds 25 matching records, delivered as 10, 10 and 5 (a poll
/// limited to the 10 records of room would have sent 5 at a time).
#[tokio::test(start_paused = true)]
async fn a_filtered_poll_reads_past_the_records_its_filters_drop() {
    let rig = Rig::new(MemoryStream::new(100).shard(0, 50, &[]).keeping(0, even));
    let report = rig.run_shard_0(&keeping(10, 0)).await;
    assert_eq!(rig.invocation_sizes(), [10, 10, 5]);
    let shard = shard_report(&report, 0);
    assert_eq!(
        (shard.records, shard.counters.filtered, shard.batches),
        (50, 25, 3)
    );
    assert_eq!(shard.checkpoint, Some(sequence(0, 49)));
}

/// A stream where nothing matches: every record read is settled (counted
/// as filtered, checkpointed) as soon as it is read, with no invoke, so the
/// shard holds no record however long the batching window is.
#[tokio::test(start_paused = true)]
async fn records_no_filter_matches_are_checkpointed_as_they_are_read() {
    let rig = Rig::new(
        MemoryStream::new(7)
            .shard(0, 400, &[])
            .keeping(0, |_| false),
    );
    let config = keeping(100, 30_000);
    let stopped = rig.run_shard_0_for(&config, Duration::from_secs(2)).await;
    let shard = shard_report(&stopped, 0);
    assert!(shard.records > 0 && shard.records < 400, "{shard:?}");
    assert_eq!(shard.in_flight, 0, "{shard:?}");
    assert_eq!(shard.counters.filtered, shard.records);
    assert_eq!(
        shard.checkpoint,
        Some(sequence(0, shard.records as u32 - 1))
    );

    let report = rig.run_shard_0(&config).await;
    let shard = shard_report(&report, 0);
    assert_eq!(
        (shard.records, shard.counters.filtered, shard.batches),
        (400, 400, 0)
    );
    assert_eq!(shard.checkpoint, Some(sequence(0, 399)));
    assert!(rig.invocations().is_empty());
}

/// Dropped records behind a batch that has not settled wait for it: the
/// checkpoint never passes a matching record the function has not
/// acknowledged, whatever the filters dropped after it.
#[tokio::test(start_paused = true)]
async fn the_checkpoint_passes_dropped_records_only_with_the_batch_ahead_of_them() {
    // Batches [0, 2] and [4, 6]; 4 fails for ever (retries -1).
    let rig = Rig::with(
        MemoryStream::new(10).shard(0, 10, &[]).keeping(0, even),
        Function {
            poison: [sequence(0, 4)].into(),
            ..Function::default()
        },
    );
    let report = rig
        .run_shard_0_for(&keeping(2, 0), Duration::from_secs(2))
        .await;
    let shard = shard_report(&report, 0);
    // Settled: 0, 1 (dropped) and 2; not 3 and 5, dropped but behind 4.
    assert_eq!(shard.checkpoint, Some(sequence(0, 2)));
    assert_eq!(
        (shard.records, shard.counters.filtered, shard.in_flight),
        (3, 1, 7)
    );
    assert!(
        rig.invocations()[1..]
            .iter()
            .all(|b| b.len() == 2 && b[0].sequence_number == sequence(0, 4))
    );
}
