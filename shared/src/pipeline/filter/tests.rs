use super::*;
use crate::model::record::ArrivalTime;
use crate::model::seqno::SequenceNumber;

fn record(pk: &str, data: &str) -> Record {
    Record {
        stream: "s".into(),
        sequence_number: SequenceNumber::parse(
            "49590338271490256608559692538361571095921575989136588898",
        )
        .unwrap(),
        partition_key: pk.into(),
        approximate_arrival_timestamp: ArrivalTime::from_epoch_millis(1_545_084_650_987),
        data: data.as_bytes().to_vec(),
        ..crate::model::record::tests::record(0, 0)
    }
}

fn criteria(patterns: &[&str]) -> FilterCriteria {
    FilterCriteria {
        filters: patterns
            .iter()
            .map(|p| FilterEntry {
                pattern: (*p).to_owned(),
            })
            .collect(),
    }
}

fn filters(patterns: &[&str]) -> Filters {
    Filters::compile(&criteria(patterns)).unwrap()
}

fn bad(pattern: &str) -> RequestError {
    Filters::compile(&criteria(&[pattern])).unwrap_err()
}

/// Each case against one record's data; `(pattern, matches)`.
fn assert_cases(data: &str, cases: &[(&str, bool)]) {
    let r = record("sensor-1", data);
    for (pattern, expected) in cases {
        assert_eq!(
            filters(&[pattern]).matches(&r),
            *expected,
            "{pattern} on {data}"
        );
    }
}

#[test]
fn patterns_match_as_the_mapping_documents() {
    let reading = r#"{"tire_pressure": 28, "status": "ALERT", "tags": ["a", "rear"], "meta": {"v": 2, "note": null}}"#;
    let cases: &[(&str, bool)] = &[
        (
            r#"{"data": {"tire_pressure": [{"numeric": ["<", 32]}]}}"#,
            true,
        ),
        (
            r#"{"data": {"tire_pressure": [{"numeric": [">=", 28, "<", 30]}]}}"#,
            true,
        ),
        (
            r#"{"data": {"tire_pressure": [{"numeric": [">", 28]}]}}"#,
            false,
        ),
        (r#"{"data": {"status": ["ALERT", "WARN"]}}"#, true),
        (r#"{"data": {"status": [{"prefix": "AL"}]}}"#, true),
        (r#"{"data": {"status": [{"suffix": "RT"}]}}"#, true),
        (
            r#"{"data": {"status": [{"equals-ignore-case": "alert"}]}}"#,
            true,
        ),
        (
            r#"{"data": {"status": [{"anything-but": ["ALERT"]}]}}"#,
            false,
        ),
        (
            r#"{"data": {"status": [{"anything-but": {"prefix": "OK"}}]}}"#,
            true,
        ),
        (r#"{"data": {"tags": ["rear"]}}"#, true),
        (r#"{"data": {"meta": {"v": [2]}}}"#, true),
        (r#"{"data": {"meta": {"note": [null]}}}"#, true),
        (r#"{"data": {"missing": [{"exists": false}]}}"#, true),
        (r#"{"data": {"status": [{"exists": false}]}}"#, false),
    ];
    assert_cases(reading, cases);
}

/// invocation-eventfiltering.html, "Filter rule syntax": the page's
/// table of comparison operators, each row's example as a pattern on
/// `data`, against a record it describes and one it doesn't.
#[test]
fn every_operator_of_the_pages_table() {
    // "Null | UserID is null | "UserID": [ null ]"
    let null = r#"{"data": {"UserID": [null]}}"#;
    assert_cases(r#"{"UserID": null}"#, &[(null, true)]);
    assert_cases(r#"{"UserID": "u1"}"#, &[(null, false)]);
    assert_cases(r#"{}"#, &[(null, false)]);
    // "Empty | LastName is empty | "LastName": [""]"
    let empty = r#"{"data": {"LastName": [""]}}"#;
    assert_cases(r#"{"LastName": ""}"#, &[(empty, true)]);
    assert_cases(r#"{"LastName": "Doe"}"#, &[(empty, false)]);
    // "Equals | Name is "Alice" | "Name": [ "Alice" ]"
    let equals = r#"{"data": {"Name": ["Alice"]}}"#;
    assert_cases(r#"{"Name": "Alice"}"#, &[(equals, true)]);
    // "Lambda uses exact character-by-character matching without
    // case-folding or any other string normalization."
    assert_cases(r#"{"Name": "alice"}"#, &[(equals, false)]);
    // "Equals (ignore case) | Name is "Alice" | "Name": [ { "equals-ignore-case": "alice" } ]"
    let ignore_case = r#"{"data": {"Name": [{"equals-ignore-case": "alice"}]}}"#;
    assert_cases(r#"{"Name": "ALICE"}"#, &[(ignore_case, true)]);
    assert_cases(r#"{"Name": "Alicia"}"#, &[(ignore_case, false)]);
    // "And | Location is "New York" and Day is "Monday" |
    // "Location": [ "New York" ], "Day": ["Monday"]"
    let and = r#"{"data": {"Location": ["New York"], "Day": ["Monday"]}}"#;
    assert_cases(
        r#"{"Location": "New York", "Day": "Monday"}"#,
        &[(and, true)],
    );
    assert_cases(
        r#"{"Location": "New York", "Day": "Sunday"}"#,
        &[(and, false)],
    );
    // "Or | PaymentType is "Credit" or "Debit" | "PaymentType": [ "Credit", "Debit"]"
    let or = r#"{"data": {"PaymentType": ["Credit", "Debit"]}}"#;
    assert_cases(r#"{"PaymentType": "Debit"}"#, &[(or, true)]);
    assert_cases(r#"{"PaymentType": "Cash"}"#, &[(or, false)]);
    // "Or (multiple fields) | Location is "New York", or Day is
    // "Monday". | "$or": [ { "Location": [ "New York" ] }, { "Day": [ "Monday" ] } ]"
    let or_fields = r#"{"data": {"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]}}"#;
    assert_cases(
        r#"{"Location": "Paris", "Day": "Monday"}"#,
        &[(or_fields, true)],
    );
    assert_cases(
        r#"{"Location": "New York", "Day": "Sunday"}"#,
        &[(or_fields, true)],
    );
    assert_cases(
        r#"{"Location": "Paris", "Day": "Sunday"}"#,
        &[(or_fields, false)],
    );
    // "Not | Weather is anything but "Raining" | "Weather": [ { "anything-but": [ "Raining" ] } ]"
    let not = r#"{"data": {"Weather": [{"anything-but": ["Raining"]}]}}"#;
    assert_cases(r#"{"Weather": "Sunny"}"#, &[(not, true)]);
    assert_cases(r#"{"Weather": "Raining"}"#, &[(not, false)]);
    // A field that isn't there is not "anything but" a value: "the
    // event must contain all the field names included in a filter".
    assert_cases(r#"{}"#, &[(not, false)]);
    // "Numeric (equals) | Price is 100 | "Price": [ { "numeric": [ "=", 100 ] } ]"
    let numeric = r#"{"data": {"Price": [{"numeric": ["=", 100]}]}}"#;
    assert_cases(r#"{"Price": 100}"#, &[(numeric, true)]);
    assert_cases(r#"{"Price": 100.0}"#, &[(numeric, true)]);
    // Numeric matching is for numbers; a string holding digits is text.
    assert_cases(r#"{"Price": "100"}"#, &[(numeric, false)]);
    // "Numeric (range) | Price is more than 10, and less than or equal
    // to 20 | "Price": [ { "numeric": [ ">", 10, "<=", 20 ] } ]"
    let range = r#"{"data": {"Price": [{"numeric": [">", 10, "<=", 20]}]}}"#;
    assert_cases(r#"{"Price": 20}"#, &[(range, true)]);
    assert_cases(r#"{"Price": 10.5}"#, &[(range, true)]);
    assert_cases(r#"{"Price": 10}"#, &[(range, false)]);
    assert_cases(r#"{"Price": 20.01}"#, &[(range, false)]);
    // "Exists | ProductName exists | "ProductName": [ { "exists": true } ]"
    let exists = r#"{"data": {"ProductName": [{"exists": true}]}}"#;
    assert_cases(r#"{"ProductName": "x"}"#, &[(exists, true)]);
    assert_cases(r#"{"Other": "x"}"#, &[(exists, false)]);
    // "Does not exist | ProductName does not exist | "ProductName": [ { "exists": false } ]"
    let absent = r#"{"data": {"ProductName": [{"exists": false}]}}"#;
    assert_cases(r#"{"Other": "x"}"#, &[(absent, true)]);
    assert_cases(r#"{"ProductName": "x"}"#, &[(absent, false)]);
    // "Begins with | Region is in the US | "Region": [ {"prefix": "us-" } ]"
    let prefix = r#"{"data": {"Region": [{"prefix": "us-"}]}}"#;
    assert_cases(r#"{"Region": "us-east-1"}"#, &[(prefix, true)]);
    assert_cases(r#"{"Region": "eu-west-1"}"#, &[(prefix, false)]);
    // "Ends with | FileName ends with a .png extension. | "FileName": [ { "suffix": ".png" } ]"
    let suffix = r#"{"data": {"FileName": [{"suffix": ".png"}]}}"#;
    assert_cases(r#"{"FileName": "cat.png"}"#, &[(suffix, true)]);
    assert_cases(r#"{"FileName": "cat.jpg"}"#, &[(suffix, false)]);
}

/// invocation-eventfiltering.html: "For numbers, Lambda also uses
/// string representation. For example, 300, 300.0, and 3.0e2 are not
/// considered equal." A literal number matches its own text; only
/// `numeric` compares values.
#[test]
fn literal_numbers_match_their_text_not_their_value() {
    let literal = r#"{"data": {"n": [300]}}"#;
    assert_cases(r#"{"n": 300}"#, &[(literal, true)]);
    assert_cases(r#"{"n": 300.0}"#, &[(literal, false)]);
    assert_cases(r#"{"n": "300"}"#, &[(literal, false)]);
    let numeric = r#"{"data": {"n": [{"numeric": ["=", 300]}]}}"#;
    assert_cases(r#"{"n": 300.0}"#, &[(numeric, true)]);
}

/// `exists` finds a value at the field's path (EventBridge's "exists
/// matching only works on leaf nodes"; Lambda "supports the same set of
/// syntax and rules as Amazon EventBridge"): `null` is a value, an
/// object is not, an array is when it holds one.
#[test]
fn exists_looks_for_a_value_at_the_path() {
    let exists = r#"{"data": {"f": [{"exists": true}]}}"#;
    let absent = r#"{"data": {"f": [{"exists": false}]}}"#;
    for (data, present) in [
        (r#"{"f": null}"#, true),
        (r#"{"f": 0}"#, true),
        (r#"{"f": ["x"]}"#, true),
        (r#"{"f": []}"#, false),
        (r#"{"f": {"g": 1}}"#, false),
        (r#"{}"#, false),
    ] {
        assert_cases(data, &[(exists, present), (absent, !present)]);
    }
    // Nested: a missing parent has no value at the child's path either.
    let nested_absent = r#"{"data": {"order": {"id": [{"exists": false}]}}}"#;
    assert_cases(r#"{}"#, &[(nested_absent, true)]);
    assert_cases(r#"{"order": {"id": 7}}"#, &[(nested_absent, false)]);
}

/// with-kinesis-filtering.html: a nested pattern (`"order": {"type":
/// ["buy"]}`) applies to an object, and to each object of an array.
#[test]
fn nested_patterns_match_objects_and_arrays_of_objects() {
    let buy = r#"{"data": {"order": {"type": ["buy"]}}}"#;
    assert_cases(
        r#"{"record": 12345, "order": {"type": "buy", "stock": "ANYCO", "quantity": 1000}}"#,
        &[(buy, true)],
    );
    assert_cases(r#"{"order": {"type": "sell"}}"#, &[(buy, false)]);
    assert_cases(
        r#"{"order": [{"type": "sell"}, {"type": "buy"}]}"#,
        &[(buy, true)],
    );
    // Within one element: no mixing fields of two elements.
    let both = r#"{"data": {"order": {"type": ["buy"], "stock": ["ANYCO"]}}}"#;
    assert_cases(
        r#"{"order": [{"type": "buy", "stock": "OTHER"}, {"type": "sell", "stock": "ANYCO"}]}"#,
        &[(both, false)],
    );
}

/// `$or` at the top of a pattern (each alternative a pattern on
/// `data`) and combined with other fields (AND).
#[test]
fn or_at_the_top_and_beside_other_fields() {
    let top = r#"{"$or": [{"data": {"a": [1]}}, {"data": {"b": [2]}}]}"#;
    assert_cases(r#"{"a": 1}"#, &[(top, true)]);
    assert_cases(r#"{"b": 2}"#, &[(top, true)]);
    assert_cases(r#"{"a": 2}"#, &[(top, false)]);
    let with_and = r#"{"data": {"kind": ["order"], "$or": [{"a": [1]}, {"b": [2]}]}}"#;
    assert_cases(r#"{"kind": "order", "b": 2}"#, &[(with_and, true)]);
    assert_cases(r#"{"kind": "refund", "b": 2}"#, &[(with_and, false)]);
}

#[test]
fn any_filter_may_match_and_no_filters_pass_everything() {
    let r = record("k", r#"{"a": 1}"#);
    assert!(filters(&[r#"{"data": {"a": [2]}}"#, r#"{"data": {"a": [1]}}"#]).matches(&r));
    assert!(filters(&[]).matches(&r));
    assert!(filters(&[]).is_empty());
}

/// with-kinesis-filtering.html's table: "Non-JSON | Valid JSON | Lambda
/// drops the record."
#[test]
fn data_patterns_never_match_non_json_data() {
    let binary = record("k", "\u{0}not json");
    assert!(!filters(&[r#"{"data": {"a": [{"exists": false}]}}"#]).matches(&binary));
    assert!(!filters(&[r#"{"$or": [{"data": {"a": [{"exists": false}]}}]}"#]).matches(&binary));
}

/// with-kinesis-filtering.html: "Kinesis event source mappings only
/// support filtering on the data key." Patterns on metadata are
/// refused before any work, naming the one accepted key.
#[test]
fn patterns_on_metadata_keys_are_refused() {
    for pattern in [
        r#"{"partitionKey": [{"prefix": "sensor-"}]}"#,
        r#"{"partitionKey": ["sensor-2"]}"#,
        r#"{"partitionKey": ["sensor-1"], "data": {"status": ["OK"]}}"#,
        r#"{"sequenceNumber": [{"exists": true}]}"#,
        r#"{"approximateArrivalTimestamp": [{"numeric": [">", 0]}]}"#,
        r#"{"kinesisSchemaVersion": ["1.0"]}"#,
        r#"{"$or": [{"data": {"a": [1]}}, {"partitionKey": ["k"]}]}"#,
    ] {
        let error = bad(pattern);
        assert_eq!(
            error.field, "FilterCriteria.Filters[0].Pattern",
            "{pattern}"
        );
        assert!(
            error.message.contains("accepted: data"),
            "{pattern}: {}",
            error.message
        );
    }
}

#[test]
fn bad_patterns_name_the_filter_and_what_is_accepted() {
    assert!(
        bad("{")
            .to_string()
            .contains("FilterCriteria.Filters[0].Pattern: not JSON")
    );
    assert!(
        bad(r#"{"body": {"a": [1]}}"#)
            .message
            .contains("\"body\" is not a field Kinesis filters apply to")
    );
    assert!(
        bad(r#"{"data": {"a": 1}}"#)
            .message
            .contains("arrays of matchers")
    );
    assert!(
        bad(r#"{"data": ["x"]}"#)
            .message
            .contains("an object of fields")
    );
    assert!(
        bad(r#"{"data": {"a": [{"numeric": ["~", 1]}]}}"#)
            .message
            .contains("not supported")
    );
    assert!(
        bad(r#"{"data": {"a": [{"wildcard": "*x"}]}}"#)
            .message
            .contains("accepted: literals")
    );
    assert!(
        bad(r#"{"data": {"$or": []}}"#)
            .message
            .contains("non-empty list")
    );
    assert!(
        bad(r#"{"data": {"$or": [1]}}"#)
            .message
            .contains("pattern object")
    );
    assert!(
        bad(r#"{"data": {"a": [{"anything-but": {"suffix": "x"}}]}}"#)
            .message
            .contains("not supported")
    );
    // "By default, you can define up to five different filters ...
    // you can request a quota increase for up to 10 filters".
    let eleven: Vec<&str> = vec![r#"{"data": {"a": [1]}}"#; MAX_FILTERS + 1];
    let error = Filters::compile(&criteria(&eleven)).unwrap_err();
    assert_eq!(error.field, "FilterCriteria.Filters");
    assert!(error.message.contains("at most 10"), "{}", error.message);
    assert!(Filters::compile(&criteria(&eleven[..MAX_FILTERS])).is_ok());
}
