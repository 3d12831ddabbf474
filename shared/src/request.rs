//! What every request has in common: errors that name the field and what it
//! accepts, JSON parsing that names the field of the first error, and the
//! name checks AWS applies to stream, shard and execution names.

use serde::Deserialize;

/// A request that can't be run: names the field and what it accepts. Each
/// kind of request names itself when it wraps one (`invalid scrape
/// request: …`, `invalid replay request: …`, `invalid mapping setting …`);
/// on its own it is only "a request".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid request: {field}: {message}")]
pub struct RequestError {
    pub field: String,
    pub message: String,
}

impl RequestError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// Parses any JSON document as `T`, naming the field of the first error.
pub fn parse_json<'de, T: Deserialize<'de>>(json: &'de [u8]) -> Result<T, RequestError> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let field = if path == "." {
            "(request)".to_owned()
        } else {
            path
        };
        RequestError::new(&field, error.into_inner().to_string())
    })
}

/// A name of ASCII letters, digits, `_`, `.` and `-`, at most `max` long (the
/// rule for stream names and Step Functions execution names).
pub fn valid_name(value: &str, max: usize) -> bool {
    !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}
