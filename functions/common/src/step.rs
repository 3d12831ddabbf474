//! One invocation of a step function (the scraper, the replay): its
//! payload parsed with errors naming the field, the instant the step must be
//! done by, and its error as a diagnostic with the stable type name the
//! state machine matches.

use std::future::Future;
use std::time::{Duration, SystemTime};

use lambda_runtime::{Diagnostic, LambdaEvent};
use rewind_engine::jobs::step::ErrorType;
use rewind_engine::request::RequestError;
use serde_json::Value;
use tokio::time::Instant;

/// The time a step assumes when the invocation carries no usable deadline.
pub const NO_DEADLINE: Duration = Duration::from_secs(60);

/// Runs one step invocation: parses the payload, then hands the event, the
/// step's deadline and the invocation's id (which names a run the event
/// doesn't) to `handle`.
pub async fn run<E, Out, Error, Fut>(
    event: LambdaEvent<Value>,
    max_step: Option<Duration>,
    parse: impl FnOnce(&[u8]) -> Result<E, RequestError>,
    handle: impl FnOnce(E, Instant, String) -> Fut,
) -> Result<Out, Failure<Error>>
where
    Error: From<RequestError>,
    Fut: Future<Output = Result<Out, Error>>,
{
    let payload = serde_json::to_vec(&event.payload).expect("a JSON value always serialises");
    let parsed = parse(&payload).map_err(Error::from)?;
    let deadline = deadline(event.context.deadline(), max_step);
    Ok(handle(parsed, deadline, event.context.request_id).await?)
}

/// The instant a step must be done by: the invocation's deadline, or
/// `max_step` from now if that is sooner.
pub fn deadline(invocation_deadline: SystemTime, max_step: Option<Duration>) -> Instant {
    let remaining = invocation_deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    // Lambda always sets a deadline ahead; an emulator may not (cargo lambda
    // watch hands out one already passed). A step with no time left would do
    // nothing, and the state machine would loop on it.
    let remaining = if remaining.is_zero() {
        lambda_runtime::tracing::warn!(
            "the invocation's deadline has already passed; assuming {} s",
            NO_DEADLINE.as_secs()
        );
        NO_DEADLINE
    } else {
        remaining
    };
    let remaining = max_step.map_or(remaining, |max| remaining.min(max));
    Instant::now() + remaining
}

/// An invocation error with a stable `errorType` the state machine matches
/// (`InvalidRequest` is not retried; the others are).
#[derive(Debug)]
pub struct Failure<E>(pub E);

impl<E> From<E> for Failure<E> {
    fn from(error: E) -> Self {
        Self(error)
    }
}

impl<E: ErrorType + std::error::Error + 'static> From<Failure<E>> for Diagnostic {
    fn from(Failure(error): Failure<E>) -> Self {
        Diagnostic {
            error_type: error.error_type().to_owned(),
            error_message: message(&error),
        }
    }
}

/// The error and its sources, as the CLI prints them (`a: b: c`): the
/// errors keep the SDK's error as their source rather than its text.
pub fn message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(error) = source {
        message.push_str(": ");
        message.push_str(&error.to_string());
        source = error.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("listing the shards of orders failed")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("service error")]
    struct Inner(#[source] std::io::Error);

    impl ErrorType for Outer {
        fn error_type(&self) -> &'static str {
            "ListShardsFailed"
        }
    }

    #[test]
    fn a_diagnostic_has_the_type_name_and_every_source() {
        let error = Outer(Inner(std::io::Error::other("connection reset")));
        let diagnostic = Diagnostic::from(Failure(error));
        assert_eq!(diagnostic.error_type, "ListShardsFailed");
        assert_eq!(
            diagnostic.error_message,
            "listing the shards of orders failed: service error: connection reset"
        );
    }

    #[test]
    fn each_error_of_the_chain_is_printed_once() {
        use rewind_engine::sources::kinesis::{ReadError, SourceError};
        let error = ReadError {
            stream: "orders".into(),
            shard_id: "shardId-000000000000".into(),
            source: SourceError::Throttled {
                source: "Rate exceeded for shard".into(),
            },
        };
        let message = message(&error);
        assert_eq!(
            message,
            "reading orders/shardId-000000000000: throttled: Rate exceeded for shard"
        );
        for text in ["reading orders", "throttled", "Rate exceeded for shard"] {
            assert_eq!(message.matches(text).count(), 1, "{message}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_passed_deadline_gets_the_default_and_max_step_caps_it() {
        let now = Instant::now();
        let passed = SystemTime::now() - Duration::from_secs(1);
        assert_eq!(deadline(passed, None), now + NO_DEADLINE);
        let later = SystemTime::now() + Duration::from_secs(900);
        assert_eq!(
            deadline(later, Some(Duration::from_secs(6))),
            now + Duration::from_secs(6)
        );
        let far = deadline(later, None);
        assert!(far > now + Duration::from_secs(890), "{:?}", far - now);
    }
}
