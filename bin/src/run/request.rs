//! A request and the names around it, checked before anything connects: the
//! request with the engine's own parser, the execution name as a run id,
//! and ARNs for their kind and region.

use anyhow::{Context as _, anyhow};
use rewind_engine::jobs::replay::{ReplayError, ReplayRequest};
use rewind_engine::jobs::scrape::{ScrapeRequest, ScraperError};
use rewind_engine::request::RequestError;
use serde_json::Value;

use super::Kind;
use super::error::{RunError, bad_input};

/// Step Functions refuses larger execution inputs.
const MAX_INPUT_BYTES: usize = 256 * 1024;

/// The region of `arn` if it is a Step Functions ARN of `resource`
/// (`stateMachine`, `execution`).
pub(super) fn arn_region(arn: &str, resource: &str, what: &str) -> Result<String, RunError> {
    // arn:<partition>:states:<region>:<account>:<resource>:<name>[:...]
    let parts: Vec<&str> = arn.splitn(7, ':').collect();
    match parts[..] {
        ["arn", partition, "states", region, account, kind, name]
            if !partition.is_empty()
                && !region.is_empty()
                && !account.is_empty()
                && kind == resource
                && !name.is_empty() =>
        {
            Ok(region.to_owned())
        }
        _ => {
            let shape = match resource {
                "execution" => "execution:<state machine>:<name>",
                _ => "stateMachine:<name>",
            };
            Err(bad_input(anyhow!(
                "{what}: {arn:?} is not a Step Functions {resource} ARN; accepted values: arn:aws:states:<region>:<account>:{shape}"
            )))
        }
    }
}

/// A request the engine accepted, and the execution name that goes with it.
#[derive(Debug)]
pub(super) struct Checked {
    pub(super) kind: Kind,
    pub(super) name: String,
    /// The document as given: the execution's input.
    pub(super) input: String,
}

/// Parses `bytes` as the request `kind` says (or as its fields suggest)
/// with the engine's own parser, and settles the execution name, which the
/// state machines pass on as the request's runId.
pub(super) fn check_request(
    bytes: &[u8],
    kind: Option<Kind>,
    name: Option<&str>,
) -> anyhow::Result<Checked> {
    let kind = kind.unwrap_or_else(|| detect(bytes));
    // The state machine sets runId to the execution name; the engine's own
    // runId rule checks the name.
    let settle = |run_id: &Option<String>| -> String {
        name.map(str::to_owned)
            .or_else(|| run_id.clone())
            .unwrap_or_else(default_name)
    };
    let name = match kind {
        Kind::Scrape => {
            let mut request = ScrapeRequest::parse(bytes).map_err(ScraperError::from)?;
            let name = settle(&request.run_id);
            request.run_id = Some(name.clone());
            request.validate().map_err(|e| name_error(&name, e))?;
            name
        }
        Kind::Replay => {
            let mut request = ReplayRequest::parse(bytes).map_err(ReplayError::InvalidRequest)?;
            let name = settle(&request.run_id);
            request.run_id = Some(name.clone());
            request.validate().map_err(|e| name_error(&name, e))?;
            name
        }
    };
    anyhow::ensure!(
        bytes.len() <= MAX_INPUT_BYTES,
        "{} bytes; Step Functions takes at most {MAX_INPUT_BYTES} bytes of input",
        bytes.len()
    );
    let input = String::from_utf8(bytes.to_vec()).context("the request is not UTF-8")?;
    Ok(Checked { kind, name, input })
}

fn name_error(name: &str, error: RequestError) -> anyhow::Error {
    // Only runId changed since the request was parsed.
    anyhow!(
        "--name {name:?} is not a valid run id ({}); accepted values: 1 to 80 of a-z A-Z 0-9 _ . -",
        error.message
    )
}

/// A replay request names a source and a target; a scrape request has
/// neither.
fn detect(bytes: &[u8]) -> Kind {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) if map.contains_key("source") && map.contains_key("target") => {
            Kind::Replay
        }
        _ => Kind::Scrape,
    }
}

fn default_name() -> String {
    format!(
        "rewind-{}-{:06x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        fastrand::u32(..1 << 24)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_the_request_kind_by_its_fields() {
        assert_eq!(detect(br#"{"source": {}, "target": {}}"#), Kind::Replay);
        assert_eq!(detect(br#"{"stream": "s", "target": {}}"#), Kind::Scrape);
        assert_eq!(detect(b"not json"), Kind::Scrape);
    }

    #[test]
    fn names_default_to_valid_unique_run_ids() {
        let request = br#"{"stream": "s", "start": {"type": "TRIM_HORIZON"},
                           "stop": {"type": "LATEST"}, "output": {"bucket": "b"}}"#;
        let (a, b) = (
            check_request(request, None, None).unwrap(),
            check_request(request, None, None).unwrap(),
        );
        assert!(a.name.starts_with("rewind-"), "{}", a.name);
        assert_ne!(a.name, b.name);
        assert_eq!(a.kind, Kind::Scrape);
        let error = check_request(request, None, Some("no spaces")).unwrap_err();
        assert!(
            format!("{error:#}").contains("--name \"no spaces\" is not a valid run id"),
            "{error:#}"
        );
        let with_run_id = br#"{"stream": "s", "start": {"type": "TRIM_HORIZON"},
              "stop": {"type": "LATEST"}, "output": {"bucket": "b"}, "runId": "incident-7"}"#;
        assert_eq!(
            check_request(with_run_id, None, None).unwrap().name,
            "incident-7"
        );
        assert_eq!(
            check_request(with_run_id, None, Some("other"))
                .unwrap()
                .name,
            "other"
        );
    }

    #[test]
    fn arns_are_checked_for_their_kind() {
        let machine = "arn:aws:states:eu-west-1:123456789012:stateMachine:scrape";
        assert_eq!(
            arn_region(machine, "stateMachine", "--state-machine").unwrap(),
            "eu-west-1"
        );
        let error = arn_region(machine, "execution", "EXECUTION_ARN").unwrap_err();
        assert!(matches!(error, RunError::BadInput(_)));
        assert!(
            error
                .to_string()
                .contains("not a Step Functions execution ARN")
        );
        assert!(arn_region("scrape", "stateMachine", "--state-machine").is_err());
    }
}
