use super::*;

fn all_of(a: &[Record]) -> Vec<(String, String)> {
    a.iter()
        .map(|r| (r.shard_id.clone(), r.sequence_number.to_string()))
        .collect()
}

/// Shard 0's `n` records, written as a scrape in chunks of `per_chunk`.
async fn one_shard(replayer: &TestReplayer, n: usize, per_chunk: usize) -> Vec<Record> {
    let a = records("shardId-000000000000", n, &[]);
    let shard = [("shardId-000000000000", a.clone())];
    write_scrape(&replayer.buckets, &shard, per_chunk).await;
    a
}

/// The key `write_scrape` gave chunk `n` of shard 0, `per_chunk` records
/// a chunk.
fn chunk_key(a: &[Record], n: usize, per_chunk: usize) -> String {
    let piece = &a[n * per_chunk..(n + 1) * per_chunk];
    format!(
        "scrapes/run/shardId-000000000000/{n}-{}-{}.jsonl.gz",
        piece[0].sequence_number,
        piece[per_chunk - 1].sequence_number
    )
}

/// The next page is read while the page's last piece is out. When that
/// read fails, the piece still settles and its checkpoint is written before
/// the step fails: the retried step starts after it, and no record is
/// delivered twice or skipped.
#[tokio::test]
async fn a_failed_read_of_the_next_page_fails_the_step_after_the_pieces_checkpoint() {
    let replayer = replayer();
    // A chunk of 4 is a page of 4 (BatchSize 4): chunk 2 is read while
    // records 4 to 7 are out.
    let a = one_shard(&replayer, 16, 4).await;
    let key = chunk_key(&a, 2, 4);
    let chunk = replayer.buckets.get(&key).await.unwrap();
    let put = |body: Vec<u8>| PutObject {
        key: key.clone(),
        body,
        content_type: "application/x-ndjson",
        content_encoding: None,
    };
    replayer
        .buckets
        .put(put(b"not a gzip chunk".to_vec()))
        .await
        .unwrap();
    let request = manifest_request();
    let start = ShardReplay::new("shardId-000000000000");
    replayer
        .step(&request, "run-1", &start, far())
        .await
        .unwrap_err();
    assert_eq!(*replayer.targets.invokes.lock().unwrap(), 2);
    assert_eq!(accepted(&replayer.targets), all_of(&a[..8]));
    // Mended, the step is retried with the same continuation.
    replayer.buckets.put(put(chunk)).await.unwrap();
    let progress = replayer
        .step(&request, "run-1", &start, far())
        .await
        .unwrap();
    assert!(progress.done);
    assert_eq!(progress.records, 16);
    assert_eq!(accepted(&replayer.targets), all_of(&a), "each record once");
}

/// A step whose stop time comes while a piece is out has already made the
/// next piece ready (and read its page): that piece is not delivered, the
/// step's continuation is its last settled record, and the next step cuts
/// the piece again.
#[tokio::test(start_paused = true)]
async fn a_step_stopped_with_the_next_piece_ready_resumes_after_its_last_settled_piece() {
    let replayer = replayer();
    let a = one_shard(&replayer, 20, 20).await;
    *replayer.targets.takes.lock().unwrap() = Some(std::time::Duration::from_millis(50));
    let request = manifest_request(); // BatchSize 4: five pieces
    // The stop time is a third of the way before the deadline: 200 ms on.
    let deadline = Instant::now() + std::time::Duration::from_millis(300);
    let first = first_step(&replayer, &request, deadline).await;
    assert!(!first.done);
    let settled = first.records as usize;
    assert!(
        (4..20).contains(&settled),
        "stopped inside the shard: {settled}"
    );
    assert_eq!(settled % 4, 0, "whole pieces");
    assert_eq!(first.last, Some(Position::of(&a[settled - 1])));
    assert_eq!(accepted(&replayer.targets), all_of(&a[..settled]));
    assert_eq!(
        *replayer.targets.invokes.lock().unwrap(),
        settled as u64 / 4,
        "the piece made ready was not invoked"
    );
    let mut progress = first;
    while !progress.done {
        progress = replayer
            .step(&request, "run-1", &progress, far())
            .await
            .unwrap();
    }
    assert_eq!(progress.records, 20);
    assert_eq!(progress.counters.delivered, 20);
    assert_eq!(accepted(&replayer.targets), all_of(&a), "each record once");
    assert_eq!(*replayer.targets.invokes.lock().unwrap(), 5);
}

/// Pacing cuts pieces shorter than the piece made ready for them: the
/// guess is not used, and batches are what the pace allows.
#[tokio::test(start_paused = true)]
async fn a_paced_piece_shorter_than_the_one_made_ready_is_cut_again() {
    let replayer = replayer();
    let a = one_shard(&replayer, 12, 4).await;
    let request = ReplayRequest::parse(
        br#"{
            "source": {"type": "MANIFEST", "bucket": "bucket", "key": "scrapes/run/manifest.json"},
            "target": {"type": "FUNCTION", "functionName": "target"},
            "options": {"BatchSize": 4},
            "dlq": {"type": "S3", "bucket": "bucket"},
            "recordsPerSecond": 2
        }"#,
    )
    .unwrap();
    let progress = first_step(&replayer, &request, far()).await;
    assert!(progress.done);
    assert_eq!(progress.counters.delivered, 12);
    assert_eq!(accepted(&replayer.targets), all_of(&a), "each record once");
    let sizes: Vec<usize> = (replayer.targets.accepted.lock().unwrap().iter())
        .map(Vec::len)
        .collect();
    assert_eq!(sizes, [2; 6]);
}
