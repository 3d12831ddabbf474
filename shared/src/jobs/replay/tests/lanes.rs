use super::*;

/// A key of each of two lanes.
fn lane_keys() -> [String; 2] {
    [0, 1].map(|lane| {
        (0..)
            .map(|k| format!("key-{k}"))
            .find(|k| crate::pipeline::batch::lane_of(k, 2) == lane)
            .unwrap()
    })
}

/// Shard 0 of a scrape of `stored`, in one chunk, replayed into a `target`
/// whose invokes take 100 ms, with BatchSize 2 and ParallelizationFactor 2
/// (pages and pieces of 16 records) and `more` options.
async fn two_lanes(stored: &[Record], more: &str) -> (TestReplayer, ReplayRequest) {
    let replayer = replayer();
    write_scrape(
        &replayer.buckets,
        &[("shardId-000000000000", stored.to_vec())],
        stored.len(),
    )
    .await;
    *replayer.targets.takes.lock().unwrap() = Some(std::time::Duration::from_millis(100));
    let request = ReplayRequest::parse(
        format!(
            r#"{{
                "source": {{"type": "MANIFEST", "bucket": "bucket", "key": "scrapes/run/manifest.json"}},
                "target": {{"type": "FUNCTION", "functionName": "target"}},
                "options": {{"BatchSize": 2, "ParallelizationFactor": 2{more}}},
                "dlq": {{"type": "S3", "bucket": "bucket"}}
            }}"#
        )
        .as_bytes(),
    )
    .unwrap();
    (replayer, request)
}

/// What `target` accepted, once each, against `want`: lanes interleave, so
/// both sorted (sequence numbers here are all of one length).
fn accepted_once(target: &Target, want: impl Iterator<Item = Record>) {
    let mut got = accepted(target);
    got.sort();
    let want: Vec<_> = want
        .map(|r| (r.shard_id.clone(), r.sequence_number.to_string()))
        .collect();
    assert_eq!(got, want, "each record accepted once");
}

/// Lanes don't wait for each other (API_CreateEventSourceMapping.html,
/// `ParallelizationFactor`: "The number of batches to process concurrently
/// from each shard"; each key's records in order), so a step whose time runs out while
/// one lane still has batches has settled other lanes' records past that
/// lane's first unsettled one. The next step delivers neither those again
/// nor any record twice, and counts each filtered record once.
#[tokio::test(start_paused = true)]
async fn a_step_stopped_with_lanes_ahead_resumes_without_delivering_them_again() {
    let [a, b] = lane_keys();
    // Upper case is kept, lower case filtered. Lane 0 has 9 kept records
    // of the first page (5 batches), lane 1 has 3 (2 batches).
    let shape = "AAABbAAABbAaAABbAAAB";
    let stored: Vec<Record> = shape
        .chars()
        .enumerate()
        .map(|(i, c)| Record {
            partition_key: if c.eq_ignore_ascii_case(&'a') { &a } else { &b }.clone(),
            data: format!(r#"{{"n": {i}, "keep": {}}}"#, c.is_uppercase()).into_bytes(),
            ..crate::model::record::tests::record(0, i)
        })
        .collect();
    let filters =
        r#", "FilterCriteria": {"Filters": [{"Pattern": "{\"data\": {\"keep\": [true]}}"}]}"#;
    let (replayer, request) = two_lanes(&stored, filters).await;
    // The step stops starting invokes a third of the way before its
    // deadline, at 250 ms: lane 0 starts batches at 0, 100 and 200 ms, lane
    // 1 is done at 200.
    let deadline = Instant::now() + std::time::Duration::from_millis(375);
    let first = first_step(&replayer, &request, deadline).await;
    assert!(!first.done);
    // Settled: records 0-9, then lane 1's 14 and 15 (filtered).
    assert_eq!(first.last, Some(Position::of(&stored[9])));
    assert_eq!(
        first.settled_ahead,
        vec![LaneMark {
            lane: 1,
            through: Position::of(&stored[15]),
        }]
    );
    assert_eq!(first.records, 12);
    assert_eq!(first.counters.delivered, 9);
    assert_eq!(
        first.counters.filtered, 3,
        "4, 9 and 15; 11's lane stopped before it"
    );
    // The state machine carries the continuation as JSON.
    let carried: ShardReplay =
        serde_json::from_slice(&serde_json::to_vec(&first).unwrap()).unwrap();
    let done = replayer
        .step(&request, "run-1", &carried, far())
        .await
        .unwrap();
    assert!(done.done);
    assert!(done.settled_ahead.is_empty());
    assert_eq!(done.records, 20);
    assert_eq!(done.counters.delivered, 16);
    assert_eq!(done.counters.filtered, 4);
    let kept = stored.into_iter().filter(|r| !r.data.ends_with(b"false}"));
    accepted_once(&replayer.targets, kept);
}

/// A lane whose invoke fails stops the other lanes at their next batch, and
/// the step's checkpoint keeps what every lane settled before it fails: the
/// retried step delivers each record once, though lanes had gone on past
/// the failed batch.
#[tokio::test(start_paused = true)]
async fn a_failed_step_with_lanes_ahead_is_retried_without_delivering_them_again() {
    let keys = lane_keys();
    // Lanes take turns: 8 records (4 batches of 2) each, one piece.
    let stored: Vec<Record> = (0..16)
        .map(|i| Record {
            partition_key: keys[i % 2].clone(),
            ..crate::model::record::tests::record(0, i)
        })
        .collect();
    let (replayer, request) = two_lanes(&stored, "").await;
    // Calls 1 and 2 are each lane's first batch; call 4 is a lane's second.
    let start = first_step_broken_at(&replayer, &request, 4).await;
    let calls = *replayer.targets.invokes.lock().unwrap();
    assert!(calls < 8, "the lanes stopped: {calls} calls");
    // The state machine retries the step with the same continuation.
    let done = replayer
        .step(&request, "run-1", &start, far())
        .await
        .unwrap();
    assert!(done.done);
    assert_eq!((done.records, done.counters.delivered), (16, 16));
    accepted_once(&replayer.targets, stored.into_iter());
}
