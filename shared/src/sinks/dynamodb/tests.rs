use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput;
use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
use aws_smithy_mocks::{RuleMode, mock, mock_client};

use super::*;
use crate::model::kpl::{self, UserRecord};
use crate::model::record::ArrivalTime;
use crate::model::seqno::{SequenceNumber, UserRecordId};
use crate::sources::dynamodb::record_from_item;
use crate::store::MemoryStore;

pub(crate) fn seq(s: &str) -> SequenceNumber {
    SequenceNumber::parse(s).unwrap()
}

pub(crate) fn record(pk: &str, sequence: &str, sub: Option<u64>, data: Vec<u8>) -> Record {
    Record {
        stream: "orders".into(),
        shard_id: "shardId-000000000000".into(),
        sequence_number: seq(sequence),
        sub_sequence_number: sub,
        partition_key: pk.into(),
        explicit_hash_key: None,
        encryption_type: None,
        approximate_arrival_timestamp: ArrivalTime::from_epoch_millis(1_732_233_600_500),
        data,
        aggregate: None,
    }
}

fn settings(modes: &[ArchiveMode]) -> StreamSettings {
    StreamSettings {
        modes: modes.to_vec(),
        ttl: Some(Duration::from_secs(86_400)),
    }
}

type Items = Arc<Mutex<Vec<HashMap<String, AttributeValue>>>>;

/// A BatchWriteItem rule that records every item it is sent and leaves
/// unprocessed the items `unprocessed` picks.
fn batch_rule(
    seen: Items,
    unprocessed: impl Fn(&HashMap<String, AttributeValue>) -> bool + Send + Sync + 'static,
) -> aws_smithy_mocks::Rule {
    mock!(aws_sdk_dynamodb::Client::batch_write_item).then_compute_output(move |input| {
        let requests = input.request_items().unwrap()["archive"].clone();
        assert!(
            requests.len() <= 25,
            "BatchWriteItem takes 25 requests at most"
        );
        let mut left = Vec::new();
        for request in requests {
            let item = request.put_request().unwrap().item().clone();
            if unprocessed(&item) {
                left.push(request);
            } else {
                seen.lock().unwrap().push(item);
            }
        }
        let mut out = BatchWriteItemOutput::builder();
        if !left.is_empty() {
            out = out.unprocessed_items("archive", left);
        }
        out.build()
    })
}

#[test]
fn latest_candidate_is_the_numerically_newest_per_key() {
    let records = vec![
        record("a", &format!("1{}", "0".repeat(55)), None, vec![]),
        record("a", &"9".repeat(55), None, vec![]),
        record("b", "5", Some(1), vec![]),
        record("b", "5", Some(3), vec![]),
        record("b", "5", Some(2), vec![]),
    ];
    assert_eq!(latest_candidates(&records, &[0, 1, 2, 3, 4]), vec![0, 3]);
    assert_eq!(latest_candidates(&records, &[1, 2]), vec![1, 2]);
}

#[tokio::test]
async fn all_mode_writes_every_user_record_with_ttl() {
    let seen: Items = Items::default();
    let rule = batch_rule(seen.clone(), |_| false);
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&rule]);
    let archive = DynamoArchive::new(client, "archive", MemoryStore::default(), "archive");
    // 60 records: three BatchWriteItem calls.
    let records: Vec<Record> = (0..60)
        .map(|i| {
            record(
                &format!("k{}", i % 7),
                &format!("{}", 1000 + i),
                None,
                vec![i as u8],
            )
        })
        .collect();
    let written = archive
        .store(&records, &settings(&[ArchiveMode::All]), 1_732_233_700)
        .await;
    let failed = written.failed;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(written.items, 60);
    assert_eq!(rule.num_calls(), 3);
    let items = seen.lock().unwrap();
    assert_eq!(items.len(), 60);
    let back: Vec<Record> = items
        .iter()
        .map(|i| record_from_item(i).unwrap().0)
        .collect();
    for r in &records {
        assert!(back.contains(r), "{r:?}");
    }
    assert_eq!(
        items[0]["expireAfter"],
        AttributeValue::N((1_732_233_700 + 86_400).to_string())
    );
    assert_eq!(
        items[0]["approximateArrivalTimestamp"],
        AttributeValue::N("1732233600.5".into())
    );
}

#[tokio::test]
async fn unprocessed_items_are_retried_then_reported_failed() {
    let seen: Items = Items::default();
    // Key k3 is on a throttled partition for good; k5 is throttled twice.
    let k5_tries = Arc::new(Mutex::new(0));
    let tries = k5_tries.clone();
    let rule = batch_rule(seen.clone(), move |item| match &item["pk"] {
        AttributeValue::S(pk) if pk == "orders#k3" => true,
        AttributeValue::S(pk) if pk == "orders#k5" => {
            let mut n = tries.lock().unwrap();
            *n += 1;
            *n <= 2
        }
        _ => false,
    });
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&rule]);
    let archive = DynamoArchive::new(client, "archive", MemoryStore::default(), "archive")
        .with_unprocessed_retry(4, Duration::ZERO);
    let records: Vec<Record> = (0..8)
        .map(|i| record(&format!("k{i}"), &format!("{}", 100 + i), None, vec![]))
        .collect();
    let failed = archive
        .write(&records, &settings(&[ArchiveMode::All]), 0)
        .await;
    let ids: Vec<UserRecordId> = failed.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids, vec![records[3].id()]);
    assert!(
        failed[0]
            .1
            .to_string()
            .contains("unprocessed after 4 attempts"),
        "{}",
        failed[0].1
    );
    assert_eq!(rule.num_calls(), 4);
    assert_eq!(
        seen.lock().unwrap().len(),
        7,
        "k5 got through on its third try"
    );
}

#[tokio::test]
async fn oversized_records_keep_their_data_in_s3() {
    let seen: Items = Items::default();
    let rule = batch_rule(seen.clone(), |_| false);
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&rule]);
    let store = MemoryStore::default();
    let archive = DynamoArchive::new(client, "archive", store, "archive");
    let big = record("big", "77", Some(4), vec![7; 500 * 1024]);
    let edge = record("edge", "78", None, vec![8; MAX_ITEM_BYTES - 4 * 1024]);
    let small = record("small", "79", None, vec![9; 100]);
    let failed = archive
        .write(
            &[big.clone(), edge.clone(), small.clone()],
            &settings(&[ArchiveMode::All]),
            0,
        )
        .await;
    assert!(failed.is_empty());
    let items = seen.lock().unwrap();
    let by_pk = |pk: &str| {
        items
            .iter()
            .find(|i| i["pk"] == AttributeValue::S(format!("orders#{pk}")))
            .unwrap()
    };
    let (_, key) = record_from_item(by_pk("big")).unwrap();
    assert_eq!(
        key.as_deref(),
        Some("archive/overflow/stream=orders/shardId-000000000000/77.4.bin")
    );
    assert_eq!(
        by_pk("big")["dataBytes"],
        AttributeValue::N((500 * 1024).to_string())
    );
    assert!(!by_pk("big").contains_key("data"));
    for item in items.iter() {
        assert!(item_size(item) <= MAX_ITEM_BYTES, "every item fits");
    }
    assert_eq!(record_from_item(by_pk("edge")).unwrap().0, edge);
    let objects = archive.overflow.objects();
    assert_eq!(objects.len(), 1);
    assert_eq!(
        objects["archive/overflow/stream=orders/shardId-000000000000/77.4.bin"].body,
        big.data
    );
}

#[tokio::test]
async fn failed_overflow_upload_fails_the_record_not_the_batch() {
    let seen: Items = Items::default();
    let rule = batch_rule(seen.clone(), |_| false);
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&rule]);
    let store = MemoryStore::default()
        .failing_on("archive/overflow/stream=orders/shardId-000000000000/77.bin");
    let archive = DynamoArchive::new(client, "archive", store, "archive");
    let big = record("big", "77", None, vec![7; 500 * 1024]);
    let small = record("small", "78", None, vec![1]);
    let failed = archive
        .write(&[big.clone(), small], &settings(&[ArchiveMode::All]), 0)
        .await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, big.id());
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "no item points at a missing object"
    );
}

#[tokio::test]
async fn latest_mode_puts_the_newest_per_key_with_a_numeric_condition() {
    let puts: Items = Items::default();
    let seen = puts.clone();
    let rule = mock!(aws_sdk_dynamodb::Client::put_item).then_compute_response(move |input| {
        assert_eq!(
            input.condition_expression(),
            Some("attribute_not_exists(pk) OR #position < :position")
        );
        let item = input.item().unwrap().clone();
        assert_eq!(
            input.expression_attribute_values().unwrap()[":position"],
            item["position"]
        );
        let pk = item["pk"].clone();
        seen.lock().unwrap().push(item);
        if pk == AttributeValue::S("orders#dup".into()) {
            // The table already holds this record or a newer one.
            aws_smithy_mocks::MockResponse::Error(PutItemError::ConditionalCheckFailedException(
                ConditionalCheckFailedException::builder()
                    .message("newer")
                    .build(),
            ))
        } else {
            aws_smithy_mocks::MockResponse::Output(PutItemOutput::builder().build())
        }
    });
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&rule]);
    let archive = DynamoArchive::new(client, "archive", MemoryStore::default(), "archive");
    let records = vec![
        record("a", &"9".repeat(55), None, b"older".to_vec()),
        record(
            "a",
            &format!("1{}", "0".repeat(55)),
            None,
            b"newer".to_vec(),
        ),
        record("dup", "5", None, b"seen before".to_vec()),
    ];
    let written = archive
        .store(&records, &settings(&[ArchiveMode::Latest]), 0)
        .await;
    let failed = written.failed;
    assert!(
        failed.is_empty(),
        "a lost condition is not a failure: {failed:?}"
    );
    assert_eq!(written.items, 1, "the lost condition wrote nothing");
    let puts = puts.lock().unwrap();
    assert_eq!(puts.len(), 2, "one conditional put per key");
    // The puts go out concurrently: find key a's by its key.
    let a = puts
        .iter()
        .find(|p| p["pk"] == AttributeValue::S("orders#a".into()))
        .expect("key a was put");
    assert_eq!(a["sk"], AttributeValue::S(LATEST_SORT_KEY.into()));
    assert_eq!(a["data"], AttributeValue::B(Blob::new(b"newer".to_vec())));
}

#[tokio::test]
async fn deaggregated_records_are_keyed_by_their_own_partition_keys() {
    let seen: Items = Items::default();
    let rule = batch_rule(seen.clone(), |_| false);
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&rule]);
    let archive = DynamoArchive::new(client, "archive", MemoryStore::default(), "archive");
    let aggregate = kpl::aggregate(["user-1", "user-2", "user-1"].iter().enumerate().map(
        |(i, pk)| UserRecord {
            partition_key: (*pk).into(),
            explicit_hash_key: None,
            data: vec![i as u8],
        },
    ))
    .unwrap()
    .remove(0);
    let outer = record(&aggregate.partition_key, "4242", None, aggregate.data);
    let users = outer.deaggregate().unwrap();
    let failed = archive
        .write(&users, &settings(&[ArchiveMode::All]), 0)
        .await;
    assert!(failed.is_empty());
    let mut keys: Vec<(String, String)> = seen.lock().unwrap().iter().map(item_key).collect();
    keys.sort();
    let s = seq("4242");
    assert_eq!(
        keys,
        vec![
            (
                "orders#user-1".into(),
                position_key(&Position::new(s.clone(), Some(0)))
            ),
            (
                "orders#user-1".into(),
                position_key(&Position::new(s.clone(), Some(2)))
            ),
            (
                "orders#user-2".into(),
                position_key(&Position::new(s.clone(), Some(1)))
            ),
        ]
    );
}

#[test]
fn modes_parse_with_a_clear_error() {
    assert_eq!(
        "latest".parse::<ArchiveMode>().unwrap(),
        ArchiveMode::Latest
    );
    assert_eq!(
        "SOME".parse::<ArchiveMode>().unwrap_err().to_string(),
        "unknown archive mode \"SOME\"; accepted values: ALL, LATEST"
    );
}

#[tokio::test]
async fn a_failed_call_fails_its_records_with_one_shared_sdk_error() {
    use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemError;
    use aws_sdk_dynamodb::types::error::ResourceNotFoundException;
    let missing = || {
        ResourceNotFoundException::builder()
            .message("Requested resource not found")
            .build()
    };
    let batch = mock!(aws_sdk_dynamodb::Client::batch_write_item)
        .then_error(move || BatchWriteItemError::ResourceNotFoundException(missing()));
    let put = mock!(aws_sdk_dynamodb::Client::put_item)
        .then_error(move || PutItemError::ResourceNotFoundException(missing()));
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&batch, &put], |c| c
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled()));
    let archive = DynamoArchive::new(client, "archive", MemoryStore::default(), "archive");
    let records = vec![
        record("a", "1", None, b"one".to_vec()),
        record("a", "2", None, b"two".to_vec()),
        record("b", "3", None, b"three".to_vec()),
    ];
    for (mode, failing_together) in [(ArchiveMode::All, 3), (ArchiveMode::Latest, 2)] {
        let failed = archive.write(&records, &settings(&[mode]), 0).await;
        assert_eq!(failed.len(), 3, "{mode}: nothing was stored");
        let sources: Vec<&Arc<dyn std::error::Error + Send + Sync>> = failed
            .iter()
            .map(|(_, error)| match error {
                DynamoError::Write { table, source } => {
                    assert_eq!(table, "archive");
                    source
                }
                other => panic!("{other:?}"),
            })
            .collect();
        // The records of one call share its error; none copies its text.
        assert!(Arc::ptr_eq(sources[0], sources[failing_together - 1]));
        for (_, error) in &failed {
            assert_eq!(
                error.to_string(),
                "writing to DynamoDB table archive failed"
            );
        }
    }
}
