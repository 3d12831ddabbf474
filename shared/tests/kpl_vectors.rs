//! The KPL aggregation format against vectors from the reference
//! implementation, aws-kinesis-agg 1.2.3 (Python): see
//! `tests/fixtures/kpl/make_vectors.py` for how they were made and what
//! each part of `vectors.json` means.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use md5::{Digest as _, Md5};
use rewind_engine::model::kpl::{self, Aggregator, KplError, UserRecord};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    cases: Vec<Case>,
    rejected: Vec<Rejected>,
    bad_aggregates: Vec<BadAggregate>,
    not_aggregated: Vec<NotAggregated>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    max_size: usize,
    inputs: Vec<Input>,
    aggregated: Vec<Output>,
    deaggregated: Vec<Vec<Output>>,
}

#[derive(Deserialize)]
struct Input {
    pk: String,
    ehk: Option<String>,
    data: Option<String>,
    fill: Option<Fill>,
}

#[derive(Deserialize)]
struct Fill {
    byte: u8,
    len: usize,
}

/// An aggregate or a deaggregated user record: data either in full or, when
/// large, as length and MD5.
#[derive(Deserialize)]
struct Output {
    pk: String,
    ehk: Option<String>,
    user_records: Option<usize>,
    sub_sequence_number: Option<usize>,
    data: Option<String>,
    data_len: Option<usize>,
    data_md5: Option<String>,
}

#[derive(Deserialize)]
struct Rejected {
    name: String,
    max_size: usize,
    input: Input,
    python: String,
}

#[derive(Deserialize)]
struct BadAggregate {
    name: String,
    data: String,
    error: String,
}

#[derive(Deserialize)]
struct NotAggregated {
    name: String,
    data: String,
}

fn vectors() -> Vectors {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/kpl/vectors.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn b64(text: &str) -> Vec<u8> {
    BASE64.decode(text).unwrap()
}

impl Input {
    fn user_record(&self) -> UserRecord {
        let data = match (&self.data, &self.fill) {
            (Some(data), None) => b64(data),
            (None, Some(fill)) => vec![fill.byte; fill.len],
            _ => panic!("input for {:?} needs data or fill", self.pk),
        };
        UserRecord {
            partition_key: self.pk.clone(),
            explicit_hash_key: self.ehk.clone(),
            data,
        }
    }
}

impl Output {
    fn assert_data(&self, actual: &[u8], what: &str) {
        match (&self.data, self.data_len, &self.data_md5) {
            (Some(data), None, None) => assert_eq!(actual, b64(data), "{what}: data"),
            (None, Some(len), Some(md5)) => {
                assert_eq!(actual.len(), len, "{what}: data length");
                assert_eq!(&hex::encode(Md5::digest(actual)), md5, "{what}: data MD5");
            }
            _ => panic!("{what}: vector needs data or data_len + data_md5"),
        }
    }
}

/// An input's explicit hash key as it comes back out of an aggregate: an
/// empty one is never stored (by the reference either).
fn stored_ehk(input: &UserRecord) -> Option<&str> {
    input.explicit_hash_key.as_deref().filter(|k| !k.is_empty())
}

#[test]
fn aggregates_are_byte_identical_to_the_reference() {
    for case in vectors().cases {
        let name = &case.name;
        let inputs: Vec<_> = case.inputs.iter().map(Input::user_record).collect();
        let mut aggregator = Aggregator::with_max_bytes(case.max_size).unwrap();
        let mut ours = Vec::new();
        for input in inputs.iter().cloned() {
            ours.extend(aggregator.add(input).unwrap());
        }
        ours.extend(aggregator.flush());

        assert_eq!(ours.len(), case.aggregated.len(), "{name}: aggregate count");
        for (i, (ours, theirs)) in ours.iter().zip(&case.aggregated).enumerate() {
            let what = format!("{name}: aggregate {i}");
            theirs.assert_data(&ours.data, &what);
            assert_eq!(ours.partition_key, theirs.pk, "{what}: partition key");
            // The reference puts an aggregate whose first user record has an
            // empty EHK with that empty EHK, which Kinesis refuses; we put it
            // without one.
            assert_eq!(
                ours.explicit_hash_key.as_deref(),
                theirs.ehk.as_deref().filter(|k| !k.is_empty()),
                "{what}: explicit hash key"
            );
            assert_eq!(Some(ours.user_records), theirs.user_records, "{what}");
        }
    }
}

#[test]
fn deaggregation_matches_the_reference_and_the_inputs() {
    for case in vectors().cases {
        let name = &case.name;
        let inputs: Vec<_> = case.inputs.iter().map(Input::user_record).collect();
        // The previous test shows our aggregates are the reference's bytes,
        // so deaggregating ours deaggregates theirs (including those the
        // vectors hold only as length + MD5).
        let aggregates = {
            let mut aggregator = Aggregator::with_max_bytes(case.max_size).unwrap();
            let mut out = Vec::new();
            for input in inputs.iter().cloned() {
                out.extend(aggregator.add(input).unwrap());
            }
            out.extend(aggregator.flush());
            out
        };
        assert_eq!(aggregates.len(), case.deaggregated.len(), "{name}");

        let mut inputs = inputs.iter();
        for (i, (aggregate, theirs)) in aggregates.iter().zip(&case.deaggregated).enumerate() {
            if let Some(data) = &case.aggregated[i].data {
                assert_eq!(aggregate.data, b64(data), "{name}: aggregate {i}");
            }
            assert!(kpl::is_aggregated(&aggregate.data), "{name}: aggregate {i}");
            let ours = kpl::deaggregate(&aggregate.data)
                .unwrap_or_else(|e| panic!("{name}: aggregate {i}: {e}"))
                .unwrap_or_else(|| panic!("{name}: aggregate {i} not recognised"));
            assert_eq!(
                ours.len(),
                theirs.len(),
                "{name}: aggregate {i}: user records"
            );
            // The reference reads an unset EHK index as 0, so it gives user
            // records without an EHK the table's first EHK, if any.
            let first_ehk = ours.iter().find_map(|u| u.explicit_hash_key.clone());

            for (n, (user, theirs)) in ours.iter().zip(theirs).enumerate() {
                let what = format!("{name}: aggregate {i}, user record {n}");
                let input = inputs.next().unwrap();
                assert_eq!(user.partition_key, input.partition_key, "{what}");
                assert_eq!(
                    user.explicit_hash_key.as_deref(),
                    stored_ehk(input),
                    "{what}"
                );
                assert_eq!(user.data, input.data, "{what}");

                assert_eq!(user.partition_key, theirs.pk, "{what}: partition key");
                assert_eq!(theirs.sub_sequence_number, Some(n), "{what}");
                theirs.assert_data(&user.data, &what);
                let expected_by_reference = match &user.explicit_hash_key {
                    Some(ehk) => Some(ehk.clone()),
                    None => first_ehk.clone(),
                };
                assert_eq!(
                    theirs.ehk, expected_by_reference,
                    "{what}: explicit hash key"
                );
            }
        }
        assert!(inputs.next().is_none(), "{name}: inputs left over");
    }
}

#[test]
fn records_the_reference_cannot_aggregate_are_refused() {
    for case in vectors().rejected {
        let name = &case.name;
        // The reference either raised or silently dropped the record.
        assert!(
            ["ValueError", "dropped"].contains(&case.python.as_str()),
            "{name}"
        );
        let mut aggregator = Aggregator::with_max_bytes(case.max_size).unwrap();
        let err = aggregator.add(case.input.user_record()).unwrap_err();
        assert!(
            matches!(err, KplError::RecordTooLarge { size, max_bytes, .. }
                if size > max_bytes && max_bytes == case.max_size),
            "{name}: {err:?}"
        );
        assert!(
            aggregator.is_empty() && aggregator.flush().is_none(),
            "{name}"
        );
    }
}

#[test]
fn bad_aggregates_are_errors() {
    let cases = vectors().bad_aggregates;
    assert!(cases.iter().any(|c| c.error == "DigestMismatch"));
    for case in cases {
        let name = &case.name;
        let data = b64(&case.data);
        assert!(kpl::is_aggregated(&data), "{name}");
        let err = kpl::deaggregate(&data).expect_err(name);
        let matched = match case.error.as_str() {
            "DigestMismatch" => matches!(err, KplError::DigestMismatch { .. }),
            "Decode" => matches!(err, KplError::Decode { .. }),
            "PartitionKeyIndexOutOfRange" => {
                matches!(err, KplError::PartitionKeyIndexOutOfRange { .. })
            }
            "ExplicitHashKeyIndexOutOfRange" => {
                matches!(err, KplError::ExplicitHashKeyIndexOutOfRange { .. })
            }
            other => panic!("{name}: unknown error kind {other}"),
        };
        assert!(matched, "{name}: expected {}, got {err:?}", case.error);
    }
}

#[test]
fn plain_records_pass_through() {
    for case in vectors().not_aggregated {
        let data = b64(&case.data);
        assert!(!kpl::is_aggregated(&data), "{}", case.name);
        assert_eq!(kpl::deaggregate(&data).unwrap(), None, "{}", case.name);
    }
}

#[test]
fn aggregate_uses_the_default_limit() {
    let case = vectors()
        .cases
        .into_iter()
        .find(|c| c.name == "default_max_size")
        .unwrap();
    assert_eq!(case.max_size, kpl::MAX_AGGREGATED_BYTES);
    let ours = kpl::aggregate(case.inputs.iter().map(Input::user_record)).unwrap();
    assert_eq!(ours.len(), case.aggregated.len());
    for (ours, theirs) in ours.iter().zip(&case.aggregated) {
        theirs.assert_data(&ours.data, "default_max_size");
    }
}
