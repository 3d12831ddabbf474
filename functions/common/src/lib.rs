//! What the Kinesis Rewind functions share beside the engine: settings read
//! from the environment ([`settings`]), the SDK configuration
//! ([`sdk_config`]) and the step handler's deadline and error diagnostic
//! ([`step`]).
//!
//! A crate of its own rather than a feature of the engine: the engine stays
//! free of `lambda_runtime`, which the CLI and the tests never need, and a
//! feature would be switched on for every crate of a workspace build anyway.

pub mod settings;
pub mod step;

/// The functions' SDK configuration: region and credentials from the
/// environment, and each call tried at most `max_attempts` times (the
/// function's setting, so that retries fit in a step).
pub async fn sdk_config(max_attempts: u32) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(max_attempts))
        .load()
        .await
}
