//! Parsing a state machine's action event (`{"action": …, "request": …}`).
//!
//! The events are internally tagged enums: serde reads the whole event into
//! a buffer before it knows the variant, and an error found in that buffer
//! no longer knows where it was, so it would name the whole request
//! (`(request)`) rather than the field. An event that fails is parsed again
//! for its `request` alone, whose error names the field
//! (`request.start`, `request.shards`).

use serde::de::DeserializeOwned;

use crate::request::{RequestError, parse_json};

/// Parses `json` as the event `E`; when that fails on its request, the error
/// is the request's own (`R`), naming the field under `request.`.
pub fn parse_action<E: DeserializeOwned, R: DeserializeOwned>(
    json: &[u8],
) -> Result<E, RequestError> {
    let error = match parse_json::<E>(json) {
        Ok(event) => return Ok(event),
        Err(error) => error,
    };
    let Ok(mut event) = serde_json::from_slice::<serde_json::Value>(json) else {
        return Err(error);
    };
    // An action that isn't one is the event's error, whatever its request.
    // `get_mut`: indexing a JSON value that is not an object panics.
    let action = event.get_mut("action").map(serde_json::Value::take);
    let action = serde_json::json!({ "action": action.unwrap_or_default() });
    if parse_json::<E>(action.to_string().as_bytes())
        .is_err_and(|e| e.message.contains("unknown variant"))
    {
        return Err(error);
    }
    let Some(request) = event.get_mut("request").map(serde_json::Value::take) else {
        return Err(error);
    };
    match parse_json::<R>(request.to_string().as_bytes()) {
        Err(inner) => Err(RequestError::new(
            &match inner.field.as_str() {
                "(request)" => "request".to_owned(),
                field => format!("request.{field}"),
            },
            inner.message,
        )),
        // The request alone is fine: the event's other fields are wrong.
        Ok(_) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::scrape::{ScrapeRequest, ScraperEvent};

    #[test]
    fn an_error_inside_the_request_names_its_field() {
        let event =
            br#"{"action": "plan", "request": {"stream": "s", "start": {"type": "SOMETIME"},
            "stop": {"type": "LATEST"}, "output": {"bucket": "b"}}}"#;
        let error = parse_action::<ScraperEvent, ScrapeRequest>(event).unwrap_err();
        assert_eq!(error.field, "request.start.type");
        assert!(
            error.message.contains("expected one of `TRIM_HORIZON`"),
            "{error}"
        );
    }

    #[test]
    fn an_error_outside_the_request_stays_the_event_s() {
        for request in [
            "{}",
            r#"{"stream": "s", "start": {"type": "LATEST"},
            "stop": {"type": "LATEST"}, "output": {"bucket": "b"}}"#,
        ] {
            let event = format!(r#"{{"action": "launch", "request": {request}}}"#);
            let error = parse_action::<ScraperEvent, ScrapeRequest>(event.as_bytes()).unwrap_err();
            assert!(
                error.message.contains("unknown variant `launch`"),
                "{error}"
            );
        }
        let missing = br#"{"action": "plan", "request": {"start": {"type": "LATEST"}}}"#;
        let error = parse_action::<ScraperEvent, ScrapeRequest>(missing).unwrap_err();
        assert_eq!(error.field, "request");
        assert!(error.message.contains("missing field `stream`"), "{error}");
    }
}
