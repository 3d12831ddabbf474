//! The replay Lambda: delivers a scrape manifest's or an archive's records
//! to a function exactly as the event source mapping would, or puts them
//! back onto a stream, one bounded step per invocation (see
//! `rewind_engine::jobs::replay`). Driven by the replay state machine (`plan`,
//! `step` per shard until done, `summary`).
//!
//! Settings (read once per container):
//! - `AWS_REGION` (set by Lambda) and `REPLAY_ACCOUNT_ID`,
//!   `REPLAY_PARTITION` (default `aws`): the `eventSourceARN` of records
//!   replayed from the archive is
//!   `arn:<partition>:kinesis:<region>:<account>:stream/<stream>`.
//! - `REPLAY_INVOKE_IDENTITY_ARN`: the events' `invokeIdentityArn` when the
//!   request's target names none (default: empty).
//! - `REPLAY_MAX_ATTEMPTS` (default 5): attempts per AWS request.
//! - `REPLAY_DYNAMODB` (`true`/`false`, default `false`): whether requests
//!   may read the DynamoDB archive (the stack sets it when it has a table).

use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use lambda_runtime::{Diagnostic, Error, LambdaEvent, service_fn};
use rewind_engine::jobs::replay::{
    ReplayError, ReplayEvent, ReplayOutput, ReplaySettings, Replayer,
};
use serde_json::Value;
use tokio::time::Instant;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let max_attempts = match std::env::var("REPLAY_MAX_ATTEMPTS") {
        Err(_) => 5,
        Ok(value) => match value.parse::<u32>() {
            Ok(n) if (1..=20).contains(&n) => n,
            _ => {
                return Err(format!(
                    "environment variable REPLAY_MAX_ATTEMPTS is {value:?}; accepted values: a whole number from 1 to 20"
                )
                .into());
            }
        },
    };
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(max_attempts))
        .load()
        .await;
    let env =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let replayer = Replayer::new(
        aws_sdk_s3::Client::new(&sdk),
        &sdk,
        ReplaySettings {
            partition: env("REPLAY_PARTITION", "aws"),
            region: None,
            account_id: env("REPLAY_ACCOUNT_ID", "000000000000"),
            invoke_identity_arn: env("REPLAY_INVOKE_IDENTITY_ARN", ""),
            dynamodb: env("REPLAY_DYNAMODB", "false") == "true",
        },
    );
    let replayer = &replayer;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        // Boxed: the runtime's future around a whole replay step would pass
        // the compiler's layout depth.
        Box::pin(handle(replayer, event)).await
    }))
    .await
}

/// The time a step assumes when the invocation carries no usable deadline.
const NO_DEADLINE: Duration = Duration::from_secs(60);

async fn handle(replayer: &Replayer, event: LambdaEvent<Value>) -> Result<ReplayOutput, Failure> {
    let payload = serde_json::to_vec(&event.payload).expect("a JSON value always serialises");
    let parsed = ReplayEvent::parse(&payload).map_err(ReplayError::from)?;
    let remaining = event
        .context
        .deadline()
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    // Lambda always sets a deadline ahead; an emulator may not. A step with
    // no time left would deliver nothing, and the state machine would loop.
    let remaining = if remaining.is_zero() {
        lambda_runtime::tracing::warn!(
            "the invocation's deadline has already passed; assuming {} s",
            NO_DEADLINE.as_secs()
        );
        NO_DEADLINE
    } else {
        remaining
    };
    Ok(replayer
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
struct Failure(ReplayError);

impl From<ReplayError> for Failure {
    fn from(error: ReplayError) -> Self {
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
