//! What every bounded step needs: when to stop before the invocation's
//! deadline, which run it belongs to, and the stable error type name its
//! state machine matches.

use std::time::Duration;

use tokio::time::Instant;

use crate::request::{RequestError, valid_name};

/// When a step that must be done by `deadline` stops starting work: `margin`
/// before it, so that what is under way (a chunk upload, a piece's
/// invocations) finishes and the step returns in time.
pub fn stop_time(deadline: Instant, margin: Duration) -> Instant {
    // A short deadline (a function configured with a timeout under a minute,
    // or a local emulator's) keeps a third of what is left as margin rather
    // than none, so every step still does some work.
    let remaining = deadline.saturating_duration_since(Instant::now());
    deadline
        .checked_sub(margin.min(remaining / 3))
        .unwrap_or(deadline)
}

/// The run's id: the one the request names, or else the invocation's (the
/// state machine passes its execution name; a direct invocation has none).
pub fn run_id(named: Option<&str>, invocation_id: &str) -> String {
    named.unwrap_or(invocation_id).to_owned()
}

/// A run id names the run's folder and a Step Functions execution: the
/// execution name rule.
pub fn check_run_id(run_id: Option<&str>) -> Result<(), RequestError> {
    match run_id {
        Some(run_id) if !valid_name(run_id, 80) => Err(RequestError::new(
            "runId",
            format!("{run_id:?}; accepted values: 1 to 80 of a-z A-Z 0-9 _ . -"),
        )),
        _ => Ok(()),
    }
}

/// A job's error as its state machine sees it: a stable name that the
/// machine's `Retry` and `Catch` match (`InvalidRequest` fails at once; the
/// others are retried).
pub trait ErrorType {
    fn error_type(&self) -> &'static str;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_step_keeps_its_margin_or_a_third_of_a_short_deadline() {
        let now = Instant::now();
        let margin = Duration::from_secs(20);
        let long = now + Duration::from_secs(900);
        assert_eq!(stop_time(long, margin), long - margin);
        let short = now + Duration::from_secs(6);
        assert_eq!(stop_time(short, margin), now + Duration::from_secs(4));
        assert_eq!(stop_time(now, margin), now, "a passed deadline is kept");
    }

    #[test]
    fn the_request_names_the_run_or_the_invocation_does() {
        assert_eq!(run_id(Some("nightly"), "req-1"), "nightly");
        assert_eq!(run_id(None, "req-1"), "req-1");
    }

    #[test]
    fn a_run_id_follows_the_execution_name_rule() {
        assert!(check_run_id(None).is_ok());
        assert!(check_run_id(Some("run-1.a_b")).is_ok());
        let err = check_run_id(Some("a/b")).unwrap_err();
        assert_eq!(err.field, "runId");
        assert!(err.message.contains("1 to 80 of a-z"), "{err}");
        assert!(check_run_id(Some(&"x".repeat(81))).is_err());
    }
}
