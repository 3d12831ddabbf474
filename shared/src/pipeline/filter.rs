//! `FilterCriteria` as the event source mapping applies them to Kinesis
//! records: a record is delivered when any filter's pattern matches it, and
//! otherwise dropped (and counted as filtered, which the mapping treats as
//! processed).
//!
//! A pattern is matched against the record's metadata (`partitionKey`,
//! `sequenceNumber`, `approximateArrivalTimestamp`, `kinesisSchemaVersion`)
//! and `data`, decoded as JSON. A pattern that names `data` never matches a
//! record whose data is not a JSON object. Values are lists of matchers, any
//! of which may match: literals (strings, numbers, booleans, `null`), and
//! `prefix`, `suffix`, `equals-ignore-case`, `anything-but` (a value, a
//! list, or `{"prefix": …}`), `numeric` (`=`, `<`, `<=`, `>`, `>=`, pairs
//! for ranges) and `exists`. An array in the record matches when any of its
//! elements does.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::record::Record;
use crate::request::RequestError;

/// The mapping's `FilterCriteria`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct FilterCriteria {
    pub filters: Vec<FilterEntry>,
}

/// One filter: the pattern as a JSON string, as the mapping takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct FilterEntry {
    pub pattern: String,
}

/// Compiled filters.
#[derive(Debug, Clone, PartialEq)]
pub struct Filters {
    patterns: Vec<Map<String, Value>>,
}

const KEYS: &str =
    "data, partitionKey, sequenceNumber, approximateArrivalTimestamp, kinesisSchemaVersion";

impl Filters {
    /// Parses and checks every pattern before any record is read.
    pub fn compile(criteria: &FilterCriteria) -> Result<Self, RequestError> {
        let mut patterns = Vec::new();
        for (i, entry) in criteria.filters.iter().enumerate() {
            let field = format!("FilterCriteria.Filters[{i}].Pattern");
            let value: Value = serde_json::from_str(&entry.pattern).map_err(|e| RequestError {
                field: field.clone(),
                message: format!(
                    "not JSON ({e}); accepted values: a JSON object of record properties ({KEYS}) and their rules"
                ),
            })?;
            let Value::Object(pattern) = value else {
                return Err(RequestError {
                    field,
                    message: format!(
                        "must be a JSON object; accepted values: a JSON object of record properties ({KEYS}) and their rules"
                    ),
                });
            };
            for key in pattern.keys() {
                if !KEYS.split(", ").any(|k| k == key) {
                    return Err(RequestError {
                        field,
                        message: format!(
                            "{key:?} is not a Kinesis record property; accepted: {KEYS}"
                        ),
                    });
                }
            }
            check(&Value::Object(pattern.clone()))
                .map_err(|message| RequestError { field, message })?;
            patterns.push(pattern);
        }
        Ok(Self { patterns })
    }

    /// No filters: every record passes.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether the mapping would deliver `record`.
    pub fn matches(&self, record: &Record) -> bool {
        if self.patterns.is_empty() {
            return true;
        }
        let data: Option<Value> = serde_json::from_slice::<Value>(&record.data)
            .ok()
            .filter(Value::is_object);
        let mut view = Map::new();
        view.insert(
            "partitionKey".into(),
            Value::String(record.partition_key.clone()),
        );
        view.insert(
            "sequenceNumber".into(),
            Value::String(record.sequence_number.to_string()),
        );
        view.insert(
            "approximateArrivalTimestamp".into(),
            serde_json::to_value(record.approximate_arrival_timestamp).unwrap_or(Value::Null),
        );
        view.insert("kinesisSchemaVersion".into(), Value::String("1.0".into()));
        if let Some(data) = data {
            view.insert("data".into(), data);
        }
        self.patterns.iter().any(|p| object_matches(p, &view))
    }
}

/// Validates a pattern's shape: objects of objects, leaves are arrays.
fn check(pattern: &Value) -> Result<(), String> {
    match pattern {
        Value::Object(map) => map.iter().try_for_each(|(key, value)| match value {
            Value::Object(_) => check(value),
            Value::Array(matchers) => matchers.iter().try_for_each(check_matcher),
            _ => Err(format!(
                "{key:?}: a pattern's values are objects or arrays of matchers"
            )),
        }),
        _ => Err("a pattern is a JSON object".into()),
    }
}

fn check_matcher(matcher: &Value) -> Result<(), String> {
    let Value::Object(map) = matcher else {
        return Ok(()); // a literal
    };
    let (name, arg) = map.iter().next().ok_or("an empty matcher {}")?;
    let ok = match name.as_str() {
        "prefix" | "suffix" | "equals-ignore-case" => arg.is_string(),
        "exists" => arg.is_boolean(),
        "anything-but" => true,
        "numeric" => numeric_ops(arg).is_some(),
        _ => false,
    };
    if map.len() == 1 && ok {
        Ok(())
    } else {
        Err(format!(
            "matcher {matcher} is not supported; accepted: literals, prefix, suffix, equals-ignore-case, anything-but, numeric, exists"
        ))
    }
}

fn object_matches(pattern: &Map<String, Value>, value: &Map<String, Value>) -> bool {
    pattern.iter().all(|(key, sub)| match sub {
        Value::Object(inner) => match value.get(key) {
            Some(Value::Object(v)) => object_matches(inner, v),
            _ => false,
        },
        Value::Array(matchers) => field_matches(matchers, value.get(key)),
        _ => false,
    })
}

fn field_matches(matchers: &[Value], value: Option<&Value>) -> bool {
    matchers.iter().any(|m| match value {
        Some(Value::Array(items)) => match m {
            Value::Object(o) if o.contains_key("exists") => matcher_matches(m, value),
            _ => items.iter().any(|item| matcher_matches(m, Some(item))),
        },
        _ => matcher_matches(m, value),
    })
}

fn matcher_matches(matcher: &Value, value: Option<&Value>) -> bool {
    let Value::Object(map) = matcher else {
        return value.is_some_and(|v| literal_eq(matcher, v));
    };
    let Some((name, arg)) = map.iter().next() else {
        return false;
    };
    match name.as_str() {
        "exists" => arg.as_bool() == Some(value.is_some()),
        "prefix" => {
            matches!((value, arg), (Some(Value::String(v)), Value::String(p)) if v.starts_with(p.as_str()))
        }
        "suffix" => {
            matches!((value, arg), (Some(Value::String(v)), Value::String(p)) if v.ends_with(p.as_str()))
        }
        "equals-ignore-case" => {
            matches!((value, arg), (Some(Value::String(v)), Value::String(p)) if v.eq_ignore_ascii_case(p))
        }
        "anything-but" => match value {
            None => false,
            Some(v) => match arg {
                Value::Array(excluded) => !excluded.iter().any(|e| literal_eq(e, v)),
                Value::Object(o) => match (o.get("prefix"), v) {
                    (Some(Value::String(p)), Value::String(s)) => !s.starts_with(p.as_str()),
                    _ => true,
                },
                single => !literal_eq(single, v),
            },
        },
        "numeric" => match (value.and_then(Value::as_f64), numeric_ops(arg)) {
            (Some(v), Some(ops)) => ops.iter().all(|(op, bound)| match op.as_str() {
                "=" => v == *bound,
                "<" => v < *bound,
                "<=" => v <= *bound,
                ">" => v > *bound,
                ">=" => v >= *bound,
                _ => false,
            }),
            _ => false,
        },
        _ => false,
    }
}

/// `["<", 5, ">=", 1]` → `[("<", 5.0), (">=", 1.0)]`.
fn numeric_ops(arg: &Value) -> Option<Vec<(String, f64)>> {
    let items = arg.as_array()?;
    if items.is_empty() || items.len() % 2 != 0 {
        return None;
    }
    items
        .chunks(2)
        .map(|pair| {
            let op = pair[0]
                .as_str()
                .filter(|op| ["=", "<", "<=", ">", ">="].contains(op))?;
            Some((op.to_owned(), pair[1].as_f64()?))
        })
        .collect()
}

fn literal_eq(pattern: &Value, value: &Value) -> bool {
    match (pattern, value) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => pattern == value,
    }
}

#[cfg(test)]
mod tests {
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

    fn filters(patterns: &[&str]) -> Filters {
        Filters::compile(&FilterCriteria {
            filters: patterns
                .iter()
                .map(|p| FilterEntry {
                    pattern: (*p).to_owned(),
                })
                .collect(),
        })
        .unwrap()
    }

    #[test]
    fn patterns_match_as_the_mapping_documents() {
        let reading = record(
            "sensor-1",
            r#"{"tire_pressure": 28, "status": "ALERT", "tags": ["a", "rear"], "meta": {"v": 2, "note": null}}"#,
        );
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
            (r#"{"partitionKey": [{"prefix": "sensor-"}]}"#, true),
            (r#"{"partitionKey": ["sensor-2"]}"#, false),
            (
                r#"{"partitionKey": ["sensor-1"], "data": {"status": ["OK"]}}"#,
                false,
            ),
        ];
        for (pattern, expected) in cases {
            assert_eq!(
                filters(&[pattern]).matches(&reading),
                *expected,
                "{pattern}"
            );
        }
    }

    #[test]
    fn any_filter_may_match_and_no_filters_pass_everything() {
        let r = record("k", r#"{"a": 1}"#);
        assert!(filters(&[r#"{"data": {"a": [2]}}"#, r#"{"data": {"a": [1]}}"#]).matches(&r));
        assert!(filters(&[]).matches(&r));
        assert!(filters(&[]).is_empty());
    }

    #[test]
    fn data_patterns_never_match_non_json_data() {
        let binary = record("k", "\u{0}not json");
        assert!(!filters(&[r#"{"data": {"a": [{"exists": false}]}}"#]).matches(&binary));
        assert!(filters(&[r#"{"partitionKey": ["k"]}"#]).matches(&binary));
    }

    #[test]
    fn bad_patterns_name_the_filter_and_what_is_accepted() {
        let bad = |p: &str| {
            Filters::compile(&FilterCriteria {
                filters: vec![FilterEntry {
                    pattern: p.to_owned(),
                }],
            })
            .unwrap_err()
        };
        assert!(
            bad("{")
                .to_string()
                .contains("FilterCriteria.Filters[0].Pattern: not JSON")
        );
        assert!(
            bad(r#"{"body": {"a": [1]}}"#)
                .message
                .contains("\"body\" is not a Kinesis record property")
        );
        assert!(
            bad(r#"{"data": {"a": 1}}"#)
                .message
                .contains("arrays of matchers")
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
    }
}
