//! SDK clients of a local stack, the same for the demo, the CLI tests and the
//! integration tests: one endpoint, one region, the stack's dummy
//! credentials, and the two things a loopback endpoint needs that AWS
//! doesn't (path-style S3, waiting for a stream to be `ACTIVE`).

use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kinesis::config::Credentials;
use aws_sdk_kinesis::types::StreamStatus;

use crate::Error;

/// The stack answers in this region only.
pub const REGION: &str = "us-east-1";

/// How long [`wait_active`] waits: a create or a reshard on the stack takes
/// well under a second, so only a stuck stream takes this long.
pub const ACTIVE_LIMIT: Duration = Duration::from_secs(60);

/// SDK configuration for every client of the stack at `endpoint`; nothing
/// comes from the environment's profile or credentials.
pub async fn config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("test", "test", None, None, "rewind-local"))
        .load()
        .await
}

/// An S3 client addressing buckets by path: bucket names are not host names
/// on a loopback endpoint.
pub fn s3_client(config: &SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(config)
            .force_path_style(true)
            .build(),
    )
}

/// Waits until `stream` is `ACTIVE` (after a create or a reshard), at most
/// [`ACTIVE_LIMIT`].
pub async fn wait_active(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> Result<(), Error> {
    let started = Instant::now();
    loop {
        let summary = kinesis
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .map_err(|source| Error::DescribeStream {
                stream: stream.to_owned(),
                source: Box::new(source),
            })?;
        if summary
            .stream_description_summary()
            .map(|s| s.stream_status())
            == Some(&StreamStatus::Active)
        {
            return Ok(());
        }
        if started.elapsed() >= ACTIVE_LIMIT {
            return Err(Error::NotActive {
                stream: stream.to_owned(),
                seconds: ACTIVE_LIMIT.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
