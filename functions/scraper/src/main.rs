//! The scraper Lambda: reads any window of any shards of a stream into S3,
//! one bounded step per invocation (see `rewind_engine::jobs::scrape`). Driven by
//! the scrape state machine, or invoked directly with a scrape request.
//!
//! Settings (read once per container):
//! - `SCRAPER_MAX_RECORDS_PER_CHUNK` (default 100000): records per chunk, and
//!   so per step, at most.
//! - `SCRAPER_MAX_ATTEMPTS` (default 5): attempts per AWS request.
//! - `SCRAPER_MAX_STEP_SECONDS` (default 0: the function's timeout): an
//!   invocation returns within this many seconds, as if the function's
//!   timeout were this short (it stops reading a third of it, at most 20 s,
//!   before). Shorter steps show progress sooner and re-read less when a
//!   step fails.

use std::time::SystemTime;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use lambda_runtime::{Diagnostic, Error, LambdaEvent, service_fn};
use rewind_engine::jobs::scrape::{Scraper, ScraperError, ScraperEvent, ScraperOutput};
use rewind_engine::jobs::step::ErrorType;
use serde_json::Value;
use tokio::time::Instant;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let max_records_per_chunk = setting("SCRAPER_MAX_RECORDS_PER_CHUNK", 100_000, 1..=10_000_000)?;
    let max_attempts = setting("SCRAPER_MAX_ATTEMPTS", 5, 1..=20)? as u32;
    let max_step = match setting("SCRAPER_MAX_STEP_SECONDS", 0, 0..=900)? {
        0 => None,
        seconds => Some(std::time::Duration::from_secs(seconds)),
    };
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(max_attempts))
        .load()
        .await;
    let scraper = Scraper::new(
        aws_sdk_kinesis::Client::new(&sdk),
        aws_sdk_s3::Client::new(&sdk),
        max_records_per_chunk,
    );
    let scraper = &scraper;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle(scraper, max_step, event).await
    }))
    .await
}

/// The time a step assumes when the invocation carries no usable deadline.
const NO_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

async fn handle(
    scraper: &Scraper,
    max_step: Option<std::time::Duration>,
    event: LambdaEvent<Value>,
) -> Result<ScraperOutput, Failure> {
    let payload = serde_json::to_vec(&event.payload).expect("a JSON value always serialises");
    let parsed = ScraperEvent::parse(&payload).map_err(ScraperError::from)?;
    let remaining = event
        .context
        .deadline()
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    // Lambda always sets a deadline ahead; an emulator may not (cargo lambda
    // watch hands out one already passed). A step with no time left would
    // read nothing, and the state machine would loop on it.
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
    Ok(scraper
        .handle(
            parsed,
            Instant::now() + remaining,
            &event.context.request_id,
        )
        .await?)
}

/// An invocation error with a stable `errorType` the state machine matches
/// (`InvalidRequest` is not retried; the others are).
#[derive(Debug)]
struct Failure(ScraperError);

impl From<ScraperError> for Failure {
    fn from(error: ScraperError) -> Self {
        Self(error)
    }
}

impl From<Failure> for Diagnostic {
    fn from(Failure(error): Failure) -> Self {
        Diagnostic {
            error_type: error.error_type().to_owned(),
            error_message: error.to_string(),
        }
    }
}

fn setting(name: &str, default: u64, range: std::ops::RangeInclusive<u64>) -> Result<u64, Error> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(value) => match value.parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(format!(
                "environment variable {name} is {value:?}; accepted values: a whole number from {} to {}",
                range.start(),
                range.end()
            )
            .into()),
        },
    }
}
