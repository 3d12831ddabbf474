use super::*;
use proptest::prelude::*;

fn user(pk: &str, ehk: Option<&str>, data: &[u8]) -> UserRecord {
    UserRecord {
        partition_key: pk.to_owned(),
        explicit_hash_key: ehk.map(str::to_owned),
        data: data.to_vec(),
    }
}

fn with_digest(body: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(body);
    out.extend_from_slice(&Md5::digest(body));
    out
}

fn user_records() -> impl Strategy<Value = Vec<UserRecord>> {
    let record = (
        prop::sample::select(vec!["a", "b", "ключ", "🔑", "pk-0", ""]),
        prop::option::of(prop::sample::select(vec![
            "0",
            "17",
            "340282366920938463463374607431768211455",
        ])),
        prop::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(pk, ehk, data)| user(pk, ehk, &data));
    prop::collection::vec(record, 0..40)
}

#[test]
fn varint_len_matches_protobuf() {
    for (value, len) in [
        (0, 1),
        (1, 1),
        (127, 1),
        (128, 2),
        (16_383, 2),
        (16_384, 3),
        (u64::MAX, 10),
    ] {
        assert_eq!(varint_len(value), len, "{value}");
        assert_eq!(prost::encoding::encoded_len_varint(value), len, "{value}");
    }
}

#[test]
fn estimate_is_exact_without_repeated_keys() {
    let records = [
        user("a", None, b"x"),
        user("b", Some("1"), &[7; 300]),
        user("c", Some("2"), b""),
    ];
    let mut aggregator = Aggregator::new();
    for r in records {
        assert!(aggregator.add(r).unwrap().is_none());
    }
    let estimate = OVERHEAD + aggregator.estimated_body_len;
    assert_eq!(aggregator.flush().unwrap().data.len(), estimate);
}

#[test]
fn zero_index_and_empty_data_are_encoded() {
    let agg = aggregate([user("k", None, b"")]).unwrap();
    assert_eq!(agg.len(), 1);
    // Table entry "k", then a record holding index 0 and empty data.
    assert_eq!(
        &agg[0].data[MAGIC.len()..agg[0].data.len() - DIGEST_LEN],
        &[0x0a, 0x01, b'k', 0x1a, 0x04, 0x08, 0x00, 0x1a, 0x00]
    );
}

#[test]
fn partition_key_index_out_of_range() {
    let body = proto::AggregatedRecord {
        partition_key_table: vec!["only".into()],
        explicit_hash_key_table: vec![],
        records: vec![
            proto::Record {
                partition_key_index: 0,
                explicit_hash_key_index: None,
                data: b"ok".to_vec(),
                tags: vec![],
            },
            proto::Record {
                partition_key_index: u64::MAX,
                explicit_hash_key_index: None,
                data: b"bad".to_vec(),
                tags: vec![],
            },
        ],
    };
    let err = deaggregate(&with_digest(&body.encode_to_vec())).unwrap_err();
    assert!(
        matches!(
            err,
            KplError::PartitionKeyIndexOutOfRange {
                record: 1,
                index: u64::MAX,
                table_len: 1
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "corrupt KPL aggregate: user record 1 refers to partition key #18446744073709551615, \
         but the partition key table has only 1 entries"
    );
}

#[test]
fn explicit_hash_key_index_out_of_range() {
    let body = proto::AggregatedRecord {
        partition_key_table: vec!["pk".into()],
        explicit_hash_key_table: vec![],
        records: vec![proto::Record {
            partition_key_index: 0,
            explicit_hash_key_index: Some(0),
            data: vec![],
            tags: vec![],
        }],
    };
    let err = deaggregate(&with_digest(&body.encode_to_vec())).unwrap_err();
    assert!(
        matches!(
            err,
            KplError::ExplicitHashKeyIndexOutOfRange {
                record: 0,
                index: 0,
                table_len: 0
            }
        ),
        "{err:?}"
    );
}

#[test]
fn digest_mismatch_names_both_digests() {
    let mut data = aggregate([user("k", None, b"v")]).unwrap().remove(0).data;
    let last = data.len() - 1;
    data[last] ^= 0xff;
    let err = deaggregate(&data).unwrap_err();
    let KplError::DigestMismatch { stored, computed } = &err else {
        panic!("{err:?}");
    };
    assert_ne!(stored, computed);
    let message = err.to_string();
    assert!(message.contains(&Hex(computed).to_string()), "{message}");
    assert!(message.contains(&Hex(stored).to_string()), "{message}");
}

#[test]
fn short_or_unmarked_data_is_not_aggregated() {
    for data in [
        &b""[..],
        &MAGIC[..3],
        &MAGIC,
        &[MAGIC.as_slice(), &[0; DIGEST_LEN]].concat(),
        b"plain text payload, long enough to hold magic and digest",
    ] {
        assert!(!is_aggregated(data));
        assert_eq!(deaggregate(data).unwrap(), None);
    }
    assert!(is_aggregated(
        &[MAGIC.as_slice(), &[0; DIGEST_LEN + 1]].concat()
    ));
}

#[test]
fn tags_are_accepted_and_dropped() {
    let body = proto::AggregatedRecord {
        partition_key_table: vec!["pk".into()],
        explicit_hash_key_table: vec![],
        records: vec![proto::Record {
            partition_key_index: 0,
            explicit_hash_key_index: None,
            data: b"v".to_vec(),
            tags: vec![proto::Tag {
                key: "k".into(),
                value: Some("v".into()),
            }],
        }],
    };
    assert_eq!(
        deaggregate(&with_digest(&body.encode_to_vec())).unwrap(),
        Some(vec![user("pk", None, b"v")])
    );
}

#[test]
fn record_too_large_leaves_pending_aggregate_alone() {
    let mut aggregator = Aggregator::with_max_bytes(100).unwrap();
    assert!(aggregator.add(user("a", None, b"small")).unwrap().is_none());
    let err = aggregator.add(user("b", None, &[0; 80])).unwrap_err();
    assert!(
        matches!(
            err,
            KplError::RecordTooLarge {
                size: 109,
                max_bytes: 100,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(aggregator.len(), 1);
    let agg = aggregator.flush().unwrap();
    assert_eq!(
        deaggregate(&agg.data).unwrap().unwrap(),
        [user("a", None, b"small")]
    );
    assert!(aggregator.is_empty() && aggregator.flush().is_none());
}

#[test]
fn max_bytes_is_capped() {
    assert!(Aggregator::with_max_bytes(MAX_AGGREGATED_BYTES).is_ok());
    assert!(matches!(
        Aggregator::with_max_bytes(MAX_AGGREGATED_BYTES + 1),
        Err(KplError::MaxBytesTooLarge { .. })
    ));
}

#[test]
fn empty_explicit_hash_key_is_no_key() {
    let agg = aggregate([user("a", Some(""), b"1"), user("b", Some("5"), b"2")]).unwrap();
    assert_eq!(agg.len(), 1);
    assert_eq!(agg[0].explicit_hash_key, None);
    assert_eq!(
        deaggregate(&agg[0].data).unwrap().unwrap(),
        [user("a", None, b"1"), user("b", Some("5"), b"2")]
    );
}

proptest! {
    #[test]
    fn aggregate_then_deaggregate_round_trips(
        records in user_records(),
        max_bytes in 300usize..2000,
    ) {
        let mut aggregator = Aggregator::with_max_bytes(max_bytes).unwrap();
        let mut aggregates = Vec::new();
        for r in records.clone() {
            aggregates.extend(aggregator.add(r).unwrap());
        }
        aggregates.extend(aggregator.flush());

        let mut back = Vec::new();
        for (i, agg) in aggregates.iter().enumerate() {
            prop_assert!(agg.data.len() <= max_bytes);
            let users = deaggregate(&agg.data).unwrap().unwrap();
            prop_assert_eq!(users.len(), agg.user_records);
            prop_assert_eq!(&agg.partition_key, &users[0].partition_key);
            prop_assert_eq!(&agg.explicit_hash_key, &users[0].explicit_hash_key);
            // Within the limit by the estimate, which bounds the real size;
            // and full: the next aggregate's first record did not fit.
            let mut probe = Aggregator::new();
            for u in &users {
                prop_assert!(probe.add(u.clone()).unwrap().is_none());
            }
            let estimate = OVERHEAD + probe.estimated_body_len;
            prop_assert!(agg.data.len() <= estimate && estimate <= max_bytes);
            if let Some(next) = aggregates.get(i + 1) {
                let first = deaggregate(&next.data).unwrap().unwrap().remove(0);
                let more = estimated_record_len(
                    &first,
                    probe.pending.partition_key_table.len(),
                    probe.pending.explicit_hash_key_table.len(),
                );
                prop_assert!(estimate + more > max_bytes);
            }
            back.extend(users);
        }
        prop_assert_eq!(back, records);
    }

    #[test]
    fn arbitrary_bytes_after_magic_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..300),
        fix_digest in any::<bool>(),
    ) {
        let data = if fix_digest {
            with_digest(&body)
        } else {
            [MAGIC.as_slice(), &body].concat()
        };
        let _ = deaggregate(&data);
    }

    #[test]
    fn mutated_aggregates_never_panic(
        records in user_records(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let Some(agg) = aggregate(records).unwrap().into_iter().next() else {
            return Ok(());
        };
        let mut body = agg.data[MAGIC.len()..agg.data.len() - DIGEST_LEN].to_vec();
        for (at, mask) in flips {
            let i = at.index(body.len());
            body[i] ^= mask;
        }
        if truncate {
            body.truncate(cut.index(body.len()));
        }
        // With and without a matching digest, to reach the decoder too.
        let _ = deaggregate(&with_digest(&body));
        let mut unfixed = agg.data.clone();
        let i = cut.index(unfixed.len());
        unfixed[i] ^= 0x5a;
        let _ = deaggregate(&unfixed);
    }
}
