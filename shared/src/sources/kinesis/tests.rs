//! The shard reader against an in-memory shard that behaves as Kinesis
//! does: pages of at most `page` records, empty pages across gaps, a tip
//! that answers empty pages with `millisBehindLatest: 0`, a closed end with
//! no next iterator and its children, throttling, expiring iterators.

use std::collections::BTreeSet;
use std::sync::Mutex;

use super::*;
use crate::model::record::ArrivalTime;
use crate::model::window::ChildShard;

fn seq(s: &str) -> SequenceNumber {
    SequenceNumber::parse(s).unwrap()
}

/// Sequence numbers grow from 55 to 56 digits in the middle of the shard,
/// and arrival times repeat within a millisecond: both bounds are tested
/// where string order and numeric order disagree.
pub(crate) fn shard_records() -> Vec<Record> {
    (0..40u32)
        .map(|i| {
            let sequence = if i < 20 {
                format!(
                    "99999999999999999999999999999999999999999999999999999{:02}",
                    i * 3
                )
            } else {
                format!(
                    "100000000000000000000000000000000000000000000000000000{:02}",
                    i * 3
                )
            };
            Record {
                sequence_number: seq(&sequence),
                partition_key: format!("k{}", i % 5),
                // Two records per millisecond.
                approximate_arrival_timestamp: ArrivalTime::from_epoch_millis(
                    1_700_000_000_000 + (i / 2) as i64,
                ),
                data: vec![i as u8; 10],
                ..crate::model::record::tests::record(0, i as usize)
            }
        })
        .collect()
}

#[derive(Default)]
struct Faults {
    /// Call numbers (GetRecords, counted from 1) answered with a throttle.
    throttle: BTreeSet<u32>,
    /// Call numbers answered with an expired-iterator error.
    expire: BTreeSet<u32>,
    /// Call numbers answered with an empty page that does not move
    /// (a gap in the shard's data).
    empty: BTreeSet<u32>,
}

pub(crate) struct MemoryShard {
    records: Vec<Record>,
    closed: bool,
    page: usize,
    faults: Faults,
    calls: Mutex<u32>,
    iterators: Mutex<u32>,
}

impl MemoryShard {
    pub(crate) fn new(records: Vec<Record>, closed: bool) -> Self {
        Self {
            records,
            closed,
            page: 3,
            faults: Faults::default(),
            calls: Mutex::new(0),
            iterators: Mutex::new(0),
        }
    }

    fn start_index(&self, start: &StartPosition) -> usize {
        start_index(&self.records, start)
    }
}

impl ShardSource for MemoryShard {
    async fn shard_iterator(
        &self,
        _shard_id: &str,
        start: &StartPosition,
    ) -> Result<String, SourceError> {
        *self.iterators.lock().unwrap() += 1;
        Ok(self.start_index(start).to_string())
    }

    async fn records(
        &self,
        _shard_id: &str,
        iterator: &str,
        limit: i32,
    ) -> Result<RecordsPage, SourceError> {
        let call = {
            let mut calls = self.calls.lock().unwrap();
            *calls += 1;
            *calls
        };
        if self.faults.throttle.contains(&call) {
            return Err(SourceError::Throttled {
                source: "Rate exceeded for shard".into(),
            });
        }
        if self.faults.expire.contains(&call) {
            return Err(SourceError::ExpiredIterator);
        }
        let index: usize = iterator.parse().unwrap();
        let behind = |i: usize| if i >= self.records.len() { 0 } else { 1000 };
        if self.faults.empty.contains(&call) {
            return Ok(RecordsPage {
                next_iterator: Some(index.to_string()),
                millis_behind_latest: Some(behind(index)),
                ..RecordsPage::default()
            });
        }
        let end = (index + self.page.min(limit as usize)).min(self.records.len());
        let records = self.records[index..end].to_vec();
        let closed_end = self.closed && end == self.records.len();
        Ok(RecordsPage {
            bytes: records.iter().map(|r| r.data.len()).sum(),
            records,
            next_iterator: (!closed_end).then(|| end.to_string()),
            millis_behind_latest: Some(behind(end)),
            child_shards: if closed_end {
                vec![ChildShard {
                    shard_id: "shardId-000000000002".into(),
                    parent_shards: vec![
                        "shardId-000000000000".into(),
                        "shardId-000000000001".into(),
                    ],
                }]
            } else {
                Vec::new()
            },
        })
    }
}

fn window(start: &StartPosition, stop: &StopCondition, options: ReadOptions) -> ShardWindow {
    ShardWindow {
        stream: "orders".into(),
        start: start.clone(),
        stop: stop.clone(),
        options,
    }
}

fn fast() -> ReadOptions {
    ReadOptions {
        limit: 10,
        base_backoff: Duration::from_millis(1),
        ..ReadOptions::default()
    }
}

/// Reads the whole window in steps of at most `step_records`.
async fn read_all(
    shard: &MemoryShard,
    start: &StartPosition,
    stop: &StopCondition,
    step_records: u64,
) -> (Vec<Record>, ShardCursor, u32) {
    let mut cursor = ShardCursor::new("shardId-000000000000");
    let mut out = Vec::new();
    let mut steps = 0;
    while !cursor.is_done() {
        steps += 1;
        assert!(steps < 200, "the read makes progress");
        let budget = minute(step_records);
        // The cursor goes through JSON between steps, as it does through a
        // state machine.
        let json = serde_json::to_string(&cursor).unwrap();
        let resumed: ShardCursor = serde_json::from_str(&json).unwrap();
        cursor = read_step(shard, &window(start, stop, fast()), &resumed, budget, |r| {
            out.push(r)
        })
        .await
        .unwrap();
    }
    (out, cursor, steps)
}

/// The window, restated independently of `judge` as take-while rules.
fn oracle(records: &[Record], from: usize, stop: &StopCondition) -> Vec<Record> {
    let rest = &records[from..];
    let take_while = |f: &dyn Fn(&Record) -> bool, plus_one: bool| {
        let n = rest.iter().take_while(|r| f(r)).count();
        let n = if plus_one { (n + 1).min(rest.len()) } else { n };
        rest[..n].to_vec()
    };
    match stop {
        StopCondition::TotalRecordsPerShard { count } => {
            rest.iter().take(*count as usize).cloned().collect()
        }
        StopCondition::AtSequenceNumber { sequence_number: x } => {
            take_while(&|r| r.sequence_number <= *x, false)
        }
        StopCondition::AfterSequenceNumber { sequence_number: x } => {
            take_while(&|r| r.sequence_number <= *x, true)
        }
        StopCondition::BeforeSequenceNumber { sequence_number: x } => {
            take_while(&|r| r.sequence_number < *x, false)
        }
        StopCondition::AtTimestamp { timestamp: t } => {
            take_while(&|r| r.approximate_arrival_timestamp <= *t, false)
        }
        StopCondition::BeforeTimestamp { timestamp: t } => {
            take_while(&|r| r.approximate_arrival_timestamp < *t, false)
        }
        StopCondition::AfterTimestamp { timestamp: t } => {
            take_while(&|r| r.approximate_arrival_timestamp <= *t, true)
        }
        StopCondition::Latest { .. } => rest.to_vec(),
    }
}

fn starts(records: &[Record]) -> Vec<StartPosition> {
    let between = seq(&format!("{}1", &records[25].sequence_number.as_str()[..55])); // 56 digits, not in the shard
    vec![
        StartPosition::TrimHorizon,
        StartPosition::Latest,
        StartPosition::AtSequenceNumber {
            sequence_number: records[7].sequence_number.clone(),
        },
        StartPosition::AfterSequenceNumber {
            sequence_number: records[7].sequence_number.clone(),
        },
        StartPosition::AtSequenceNumber {
            sequence_number: between.clone(),
        },
        StartPosition::AfterSequenceNumber {
            sequence_number: between,
        },
        StartPosition::AtTimestamp {
            timestamp: records[11].approximate_arrival_timestamp,
        },
    ]
}

fn stops(records: &[Record]) -> Vec<StopCondition> {
    let missing = seq(&format!("{}1", &records[30].sequence_number.as_str()[..55]));
    let mut stops = vec![
        StopCondition::TotalRecordsPerShard { count: 0 },
        StopCondition::TotalRecordsPerShard { count: 1 },
        StopCondition::TotalRecordsPerShard { count: 13 },
        StopCondition::TotalRecordsPerShard { count: 1000 },
        StopCondition::Latest { as_of: None },
    ];
    // Bounds inside the 55-digit part, inside the 56-digit part, and a
    // 56-digit bound that no record has.
    for x in [
        records[15].sequence_number.clone(),
        records[33].sequence_number.clone(),
        missing,
    ] {
        stops.push(StopCondition::AtSequenceNumber {
            sequence_number: x.clone(),
        });
        stops.push(StopCondition::AfterSequenceNumber {
            sequence_number: x.clone(),
        });
        stops.push(StopCondition::BeforeSequenceNumber { sequence_number: x });
    }
    // A millisecond two records share, and one past the end of the data.
    for t in [
        records[22].approximate_arrival_timestamp,
        ArrivalTime::from_epoch_millis(1_800_000_000_000),
    ] {
        stops.push(StopCondition::AtTimestamp { timestamp: t });
        stops.push(StopCondition::AfterTimestamp { timestamp: t });
        stops.push(StopCondition::BeforeTimestamp { timestamp: t });
    }
    stops
}

#[tokio::test(start_paused = true)]
async fn every_start_and_stop_reads_exactly_the_window() {
    for closed in [true, false] {
        let records = shard_records();
        let shard = MemoryShard::new(records.clone(), closed);
        for start in starts(&records) {
            for stop in stops(&records) {
                let from = shard.start_index(&start);
                let expected = oracle(&records, from, &stop);
                for step_records in [4, 1000] {
                    let (read, cursor, _) = read_all(&shard, &start, &stop, step_records).await;
                    assert_eq!(
                        read.iter()
                            .map(|r| r.sequence_number.clone())
                            .collect::<Vec<_>>(),
                        expected
                            .iter()
                            .map(|r| r.sequence_number.clone())
                            .collect::<Vec<_>>(),
                        "closed={closed} start={start:?} stop={stop:?} step={step_records}"
                    );
                    assert_eq!(cursor.records as usize, expected.len());
                    // Why it stopped: the condition, else the end or the tip.
                    let condition_met = match &stop {
                        StopCondition::TotalRecordsPerShard { count } => {
                            expected.len() as u64 == *count
                        }
                        StopCondition::Latest { .. } => false,
                        _ => from + expected.len() < records.len(),
                    };
                    let expected_reason = if condition_met {
                        StopReason::StopCondition
                    } else if closed {
                        StopReason::ShardEnd
                    } else {
                        StopReason::ReachedTip
                    };
                    if !matches!(
                        stop,
                        StopCondition::AfterSequenceNumber { .. }
                            | StopCondition::AfterTimestamp { .. }
                    ) {
                        assert_eq!(
                            cursor.stopped,
                            Some(expected_reason),
                            "closed={closed} start={start:?} stop={stop:?}"
                        );
                    }
                    if cursor.stopped == Some(StopReason::ShardEnd) {
                        assert_eq!(cursor.children.len(), 1, "children are reported at the end");
                    }
                }
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn throttling_expired_iterators_and_empty_pages_lose_nothing() {
    let records = shard_records();
    let mut shard = MemoryShard::new(records.clone(), true);
    shard.faults.throttle = [2, 3, 9].into();
    shard.faults.expire = [5, 12].into();
    shard.faults.empty = [1, 6, 7, 8].into();
    let (read, cursor, _) = read_all(
        &shard,
        &StartPosition::TrimHorizon,
        &StopCondition::Latest { as_of: None },
        7,
    )
    .await;
    assert_eq!(read, records, "each record once, in order");
    assert_eq!(
        cursor.stopped,
        Some(StopReason::ShardEnd),
        "empty pages mid-shard are not the end"
    );
    assert!(
        *shard.iterators.lock().unwrap() >= 3,
        "expired iterators were re-acquired"
    );
}

#[tokio::test(start_paused = true)]
async fn persistent_throttling_is_an_error_not_a_silent_end() {
    let records = shard_records();
    let mut shard = MemoryShard::new(records, true);
    shard.faults.throttle = (1..100).collect();
    let cursor = ShardCursor::new("shardId-000000000000");
    let budget = minute(1000);
    let mut options = fast();
    options.max_retries = 4;
    let err = read_step(
        &shard,
        &window(
            &StartPosition::TrimHorizon,
            &StopCondition::Latest { as_of: None },
            options,
        ),
        &cursor,
        budget,
        |_| {},
    )
    .await
    .unwrap_err();
    let chain = crate::model::record::tests::chain(&err);
    assert!(
        chain.starts_with("reading orders/shardId-000000000000: throttled"),
        "{chain}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_open_shard_at_its_tip_ends_after_max_empty_polls() {
    let records = shard_records();
    let shard = MemoryShard::new(records.clone(), false);
    let stop = StopCondition::AtTimestamp {
        timestamp: ArrivalTime::from_epoch_millis(1_800_000_000_000),
    };
    let (read, cursor, _) = read_all(&shard, &StartPosition::TrimHorizon, &stop, 1000).await;
    assert_eq!(read, records);
    assert_eq!(cursor.stopped, Some(StopReason::ReachedTip));
    assert_eq!(cursor.empty_polls, fast().max_empty_polls);
}

/// A minute and at most `max_records`: a step that only the records end.
fn minute(max_records: u64) -> StepBudget {
    StepBudget {
        deadline: Instant::now() + Duration::from_secs(60),
        max_records,
    }
}

/// One step of a whole shard, TRIM_HORIZON to LATEST, into `out`.
async fn whole_shard_step(
    shard: &MemoryShard,
    options: ReadOptions,
    cursor: &ShardCursor,
    budget: StepBudget,
    out: &mut Vec<Record>,
) -> ShardCursor {
    let stop = StopCondition::Latest { as_of: None };
    let window = window(&StartPosition::TrimHorizon, &stop, options);
    read_step(shard, &window, cursor, budget, |r| out.push(r))
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_step_ends_at_its_deadline_and_the_next_resumes_after_it() {
    let records = shard_records();
    let shard = MemoryShard::new(records.clone(), true);
    let mut out = Vec::new();
    // A deadline already passed: the step issues no call and returns the
    // cursor unchanged.
    let cursor = ShardCursor::new("shardId-000000000000");
    let past = StepBudget {
        deadline: Instant::now(),
        max_records: 1000,
    };
    let same = whole_shard_step(&shard, fast(), &cursor, past, &mut out).await;
    assert_eq!(same, cursor);
    assert!(out.is_empty());
    // A step cut after 5 records; the next step starts after the last read.
    let first = whole_shard_step(&shard, fast(), &cursor, minute(5), &mut out).await;
    assert!(!first.is_done());
    assert_eq!(
        first.last_sequence_number.as_ref(),
        Some(&out.last().unwrap().sequence_number)
    );
    let done = whole_shard_step(&shard, fast(), &first, minute(1000), &mut out).await;
    assert!(done.is_done());
    assert_eq!(out, records);
}

/// A poll delay never makes a step wait past its deadline (a Lambda would
/// time out): a call that could only go after it is left to the next step.
/// Yet every step makes its first call, even when the poll delay is longer
/// than the step's whole time, so a read always progresses.
#[tokio::test(start_paused = true)]
async fn a_poll_delay_never_waits_past_the_deadline() {
    let records = shard_records();
    let shard = MemoryShard::new(records.clone(), true);
    let mut cursor = ShardCursor::new("shardId-000000000000");
    let mut out = Vec::new();
    for delay in [3, 30] {
        let options = ReadOptions {
            poll_delay: Duration::from_secs(delay),
            ..fast()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let budget = StepBudget {
            deadline,
            max_records: 1000,
        };
        let before = out.len();
        cursor = whole_shard_step(&shard, options, &cursor, budget, &mut out).await;
        let pages = if delay == 3 { 3 } else { 1 };
        assert_eq!(out.len() - before, 3 * pages, "delay {delay} s");
        if delay == 3 {
            // Calls at 3 s, 6.2 s and 9.4 s; the next would be at 12.6 s.
            assert!(Instant::now() <= deadline);
        }
        assert!(!cursor.is_done());
    }
    let done = whole_shard_step(&shard, fast(), &cursor, minute(1000), &mut out).await;
    assert!(done.is_done());
    assert_eq!(out, records);
}

/// Pacing against virtual time: calls are at least 200 ms apart, and a
/// response of 1 MiB holds the next call for 0.5 s.
#[tokio::test(start_paused = true)]
async fn reads_are_paced_to_the_shard_limits() {
    let mut records = shard_records();
    for r in &mut records[..10] {
        r.data = vec![0; 1024 * 1024];
    }
    let mut shard = MemoryShard::new(records, true);
    shard.page = 1;
    let cursor = ShardCursor::new("shardId-000000000000");
    let budget = StepBudget {
        deadline: Instant::now() + Duration::from_secs(3600),
        max_records: 1000,
    };
    let started = Instant::now();
    let mut times = Vec::new();
    read_step(
        &shard,
        &window(
            &StartPosition::TrimHorizon,
            &StopCondition::Latest { as_of: None },
            ReadOptions::default(),
        ),
        &cursor,
        budget,
        |_| times.push(Instant::now()),
    )
    .await
    .unwrap();
    assert_eq!(times.len(), 40);
    for pair in times[..10].windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(500),
            "2 MiB/s: {:?}",
            pair[1] - pair[0]
        );
    }
    for pair in times[10..].windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(200),
            "5 calls/s: {:?}",
            pair[1] - pair[0]
        );
    }
    // And no slower than the limits: 10 big pages at 0.5 s, 30 small at 0.2 s.
    assert!(Instant::now() - started <= Duration::from_millis(10 * 500 + 30 * 200 + 100));
}

#[test]
fn half_share_halves_the_rate() {
    let mut pacer = Pacer::new(0.5);
    let now = Instant::now();
    pacer.called(now, now, 0);
    assert_eq!(pacer.next_call, Some(now + Duration::from_millis(400)));
    pacer.called(now, now, 1024 * 1024);
    assert_eq!(pacer.next_call, Some(now + Duration::from_secs(1)));
}

/// Kinesis charges a call's bytes when its response is complete: after a
/// slow call the budget is paid back from the answer, not from the start.
#[test]
fn a_slow_calls_bytes_are_paid_back_from_its_answer() {
    let mut pacer = Pacer::new(1.0);
    let t0 = Instant::now();
    let mib = 1024 * 1024;
    pacer.called(t0, t0 + Duration::from_secs(3), 3 * mib);
    assert_eq!(
        pacer.next_call,
        Some(t0 + Duration::from_millis(4500)),
        "3 MiB at 2 MiB/s after the answer at 3 s"
    );
    // Refilled while idle, but to one second's worth at most: after a long
    // pause a 3 MiB page still overdraws by 1 MiB.
    let t1 = t0 + Duration::from_secs(60);
    pacer.called(t1, t1, 3 * mib);
    assert_eq!(pacer.next_call, Some(t1 + Duration::from_millis(500)));
}

#[test]
fn positions_and_stops_parse_from_json() {
    let stop: StopCondition =
        serde_json::from_str(r#"{"type":"BEFORE_TIMESTAMP","timestamp":1700000000.5}"#).unwrap();
    assert_eq!(
        stop,
        StopCondition::BeforeTimestamp {
            timestamp: ArrivalTime::from_epoch_millis(1_700_000_000_500)
        }
    );
    let start: StartPosition =
        serde_json::from_str(r#"{"type":"AFTER_SEQUENCE_NUMBER","sequenceNumber":"42"}"#).unwrap();
    assert_eq!(
        start,
        StartPosition::AfterSequenceNumber {
            sequence_number: seq("42")
        }
    );
    let err = serde_json::from_str::<StopCondition>(r#"{"type":"SOMETIME"}"#).unwrap_err();
    assert!(err.to_string().contains("AT_SEQUENCE_NUMBER"), "{err}");
}

/// Where an iterator for `start` points in a shard holding `records` (in
/// sequence order): the index of the first record it returns. For the
/// in-memory shards of the engine's tests.
pub(crate) fn start_index(records: &[Record], start: &StartPosition) -> usize {
    let position =
        |f: &dyn Fn(&Record) -> bool| records.iter().position(f).unwrap_or(records.len());
    match start {
        StartPosition::TrimHorizon => 0,
        StartPosition::Latest => records.len(),
        StartPosition::AtSequenceNumber { sequence_number } => {
            position(&|r| r.sequence_number >= *sequence_number)
        }
        StartPosition::AfterSequenceNumber { sequence_number } => {
            position(&|r| r.sequence_number > *sequence_number)
        }
        StartPosition::AtTimestamp { timestamp } => {
            position(&|r| r.approximate_arrival_timestamp >= *timestamp)
        }
    }
}
