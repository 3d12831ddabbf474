//! `FilterCriteria` as the event source mapping applies them to Kinesis
//! records, following the Lambda developer guide's event-filtering pages
//! (<https://docs.aws.amazon.com/lambda/latest/dg/invocation-eventfiltering.html>
//! and <https://docs.aws.amazon.com/lambda/latest/dg/with-kinesis-filtering.html>):
//! a record is delivered when any filter's pattern matches it, and
//! otherwise dropped (and counted as filtered, which the mapping treats as
//! processed).
//!
//! "Kinesis event source mappings only support filtering on the data key",
//! so a pattern's only field is `data` (or `$or` of such patterns): the
//! metadata fields (`partitionKey`, `sequenceNumber`, …) are refused, as
//! the mapping refuses them, rather than matched as replay once did. A
//! `data` pattern never matches a record whose data is not a JSON object.
//! Values are lists of matchers, any of which may match: literals (strings
//! and numbers match their exact text, `true`, `false`, `null`), `prefix`,
//! `suffix`, `equals-ignore-case`, `anything-but` (a value, a list, or
//! `{"prefix": …}`), `numeric` (`=`, `<`, `<=`, `>`, `>=`, pairs for
//! ranges) and `exists`; `"$or": [pattern, …]` at any level matches when
//! any of its patterns does. An array in the record matches when any of its
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

/// The one field a Kinesis pattern may name.
const DATA: &str = "data";
const OR: &str = "$or";
/// Five filters by default; Lambda's quota can be raised to ten.
pub const MAX_FILTERS: usize = 10;

const MATCHERS: &str =
    "literals, prefix, suffix, equals-ignore-case, anything-but, numeric, exists, $or";

impl Filters {
    /// Parses and checks every pattern before any record is read.
    pub fn compile(criteria: &FilterCriteria) -> Result<Self, RequestError> {
        if criteria.filters.len() > MAX_FILTERS {
            return Err(RequestError {
                field: "FilterCriteria.Filters".into(),
                message: format!(
                    "{} filters; accepted: at most {MAX_FILTERS} (Lambda's quota: 5, raisable to 10)",
                    criteria.filters.len()
                ),
            });
        }
        let mut patterns = Vec::new();
        for (i, entry) in criteria.filters.iter().enumerate() {
            let field = format!("FilterCriteria.Filters[{i}].Pattern");
            let value: Value = serde_json::from_str(&entry.pattern).map_err(|e| RequestError {
                field: field.clone(),
                message: format!(
                    "not JSON ({e}); accepted values: a JSON object of record properties ({DATA}) and their rules"
                ),
            })?;
            let Value::Object(pattern) = value else {
                return Err(RequestError {
                    field,
                    message: format!(
                        "must be a JSON object; accepted values: a JSON object of record properties ({DATA}) and their rules"
                    ),
                });
            };
            check_top(&pattern).map_err(|message| RequestError { field, message })?;
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
        let data = match serde_json::from_slice::<Value>(&record.data) {
            Ok(Value::Object(data)) => Some(data),
            _ => None,
        };
        self.patterns.iter().any(|p| top_matches(p, data.as_ref()))
    }
}

/// A compiled pattern's top level against the record's data: a `data`
/// pattern never matches data that is not a JSON object, even one made of
/// `exists: false` (with-kinesis-filtering.html: "Non-JSON | Valid JSON |
/// Lambda drops the record").
fn top_matches(pattern: &Map<String, Value>, data: Option<&Map<String, Value>>) -> bool {
    pattern.iter().all(|(key, sub)| match (key.as_str(), sub) {
        (DATA, Value::Object(inner)) => data.is_some_and(|d| object_matches(inner, d)),
        (OR, Value::Array(alternatives)) => alternatives
            .iter()
            .filter_map(Value::as_object)
            .any(|p| top_matches(p, data)),
        _ => false,
    })
}

/// A pattern's top level: `data` and `$or` of top-level patterns only.
fn check_top(pattern: &Map<String, Value>) -> Result<(), String> {
    for (key, value) in pattern {
        match (key.as_str(), value) {
            (DATA, Value::Object(data)) => check(data)?,
            (DATA, _) => {
                return Err(
                    "\"data\": a pattern for the record's JSON data is an object of fields".into(),
                );
            }
            (OR, _) => or_patterns(value)?.iter().try_for_each(|p| check_top(p))?,
            _ => {
                return Err(format!(
                    "{key:?} is not a field Kinesis filters apply to; accepted: data \
                     (Kinesis event source mappings only support filtering on the data key)"
                ));
            }
        }
    }
    Ok(())
}

/// `$or`'s value: a list of patterns.
fn or_patterns(value: &Value) -> Result<Vec<&Map<String, Value>>, String> {
    let items = value
        .as_array()
        .filter(|items| !items.is_empty())
        .ok_or("\"$or\" takes a non-empty list of patterns")?;
    items
        .iter()
        .map(|item| {
            item.as_object()
                .ok_or("\"$or\": each of its items is a pattern object".into())
        })
        .collect()
}

/// Validates a pattern's shape: objects of objects, leaves are arrays.
fn check(pattern: &Map<String, Value>) -> Result<(), String> {
    pattern.iter().try_for_each(|(key, value)| match value {
        _ if key == OR => or_patterns(value)?.into_iter().try_for_each(check),
        Value::Object(inner) => check(inner),
        Value::Array(matchers) => matchers.iter().try_for_each(check_matcher),
        _ => Err(format!(
            "{key:?}: a pattern's values are objects or arrays of matchers"
        )),
    })
}

fn check_matcher(matcher: &Value) -> Result<(), String> {
    let Value::Object(map) = matcher else {
        return match matcher {
            Value::Array(_) => Err(format!(
                "matcher {matcher} is not supported; accepted: {MATCHERS}"
            )),
            _ => Ok(()), // a literal
        };
    };
    let (name, arg) = map.iter().next().ok_or("an empty matcher {}")?;
    let ok = match name.as_str() {
        "prefix" | "suffix" | "equals-ignore-case" => arg.is_string(),
        "exists" => arg.is_boolean(),
        "anything-but" => match arg {
            Value::Object(o) => o.len() == 1 && o.get("prefix").is_some_and(Value::is_string),
            Value::Array(items) => items.iter().all(is_literal),
            other => is_literal(other),
        },
        "numeric" => numeric_ops(arg).is_some(),
        _ => false,
    };
    if map.len() == 1 && ok {
        Ok(())
    } else {
        Err(format!(
            "matcher {matcher} is not supported; accepted: {MATCHERS}"
        ))
    }
}

fn is_literal(value: &Value) -> bool {
    !matches!(value, Value::Object(_) | Value::Array(_))
}

fn object_matches(pattern: &Map<String, Value>, value: &Map<String, Value>) -> bool {
    pattern.iter().all(|(key, sub)| match sub {
        _ if key == OR => sub.as_array().is_some_and(|alternatives| {
            alternatives
                .iter()
                .filter_map(Value::as_object)
                .any(|p| object_matches(p, value))
        }),
        Value::Object(inner) => nested_matches(inner, value.get(key)),
        Value::Array(matchers) => field_matches(matchers, value.get(key)),
        _ => false,
    })
}

/// A nested pattern matches an object, or any object of an array (the
/// pattern as a whole, within one element).
fn nested_matches(pattern: &Map<String, Value>, value: Option<&Value>) -> bool {
    match value {
        Some(Value::Object(v)) => object_matches(pattern, v),
        Some(Value::Array(items)) => items.iter().any(|item| nested_matches(pattern, Some(item))),
        // A missing object still satisfies patterns made only of
        // `exists: false`.
        _ => object_matches(pattern, &Map::new()),
    }
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

/// `exists` looks for a value at the field's path: a scalar (`null`
/// included) or an array holding one. An object is not a value there, as
/// EventBridge's "exists matching only works on leaf nodes".
fn has_value(value: &Value) -> bool {
    match value {
        Value::Object(_) => false,
        Value::Array(items) => items.iter().any(has_value),
        _ => true,
    }
}

fn matcher_matches(matcher: &Value, value: Option<&Value>) -> bool {
    let Value::Object(map) = matcher else {
        return value.is_some_and(|v| literal_eq(matcher, v));
    };
    let Some((name, arg)) = map.iter().next() else {
        return false;
    };
    match name.as_str() {
        "exists" => arg.as_bool() == Some(value.is_some_and(has_value)),
        "prefix" => {
            matches!((value, arg), (Some(Value::String(v)), Value::String(p)) if v.starts_with(p.as_str()))
        }
        "suffix" => {
            matches!((value, arg), (Some(Value::String(v)), Value::String(p)) if v.ends_with(p.as_str()))
        }
        "equals-ignore-case" => {
            matches!((value, arg), (Some(Value::String(v)), Value::String(p)) if v.to_lowercase() == p.to_lowercase())
        }
        "anything-but" => match value {
            None | Some(Value::Object(_)) => false,
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

/// Literals match exactly; numbers by their text, as the page says: "For
/// numbers, Lambda also uses string representation. For example, 300,
/// 300.0, and 3.0e2 are not considered equal." (`numeric` compares values.)
fn literal_eq(pattern: &Value, value: &Value) -> bool {
    match (pattern, value) {
        (Value::Number(a), Value::Number(b)) => a.to_string() == b.to_string(),
        _ => pattern == value,
    }
}

#[cfg(test)]
mod tests;
