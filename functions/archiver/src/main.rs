//! The archiver Lambda: attached to a stream by an event source mapping, it
//! keeps every delivered record, with all its metadata, in the S3 archive.
//!
//! Configuration (read once per container, failing fast with the variable's
//! name):
//! - `ARCHIVE_BUCKET` (required): the archive bucket.
//! - `ARCHIVE_PREFIX` (default `archive`): key prefix.
//! - `ARCHIVE_COMPRESSION` (`gzip` default, `zstd`).
//! - `ARCHIVE_DEAGGREGATE` (`false` default): store KPL user records one per
//!   line instead of the aggregates as received.
//! - `ARCHIVE_S3_MAX_ATTEMPTS` (default 5): attempts per S3 put, with the
//!   SDK's jittered backoff, before the records are reported as failed.

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_lambda_events::event::streams::KinesisEventResponse;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use rewind_engine::Record;
use rewind_engine::archive;
use rewind_engine::event::DeliveredEvent;
use rewind_engine::store::S3Store;
use tracing::warn;

mod config;

use config::Config;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = Config::from_env(|name| std::env::var(name).ok())?;
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(config.s3_max_attempts))
        .load()
        .await;
    let store = S3Store::new(aws_sdk_s3::Client::new(&sdk), config.bucket.clone());
    let config = &config;
    let store = &store;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<DeliveredEvent>| async move {
            Ok::<_, Error>(handle(store, config, event.payload).await)
        },
    ))
    .await
}

async fn handle(store: &S3Store, config: &Config, event: DeliveredEvent) -> KinesisEventResponse {
    let records = if config.deaggregate {
        deaggregate(event.records)
    } else {
        event.records
    };
    let outcome = archive::archive_batch(store, &config.layout, &records).await;
    archive::batch_response(&outcome)
}

/// A record whose aggregate is corrupt is kept as received rather than
/// dropped: the archive never loses what the stream held.
fn deaggregate(records: Vec<Record>) -> Vec<Record> {
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        let kept = record.clone();
        match record.deaggregate() {
            Ok(users) => out.extend(users),
            Err(error) => {
                warn!(%error, "keeping a corrupt KPL aggregate as received");
                out.push(kept);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_aggregates_are_kept_whole() {
        let sample = include_str!("../../../events/kinesis-batch.json");
        let event = DeliveredEvent::from_slice(sample.as_bytes()).unwrap();
        let mut records = event.records;
        let total = records.len();
        // Flip a byte inside the aggregate's protobuf: its MD5 no longer matches.
        let aggregate = records.iter_mut().find(|r| r.is_aggregated()).unwrap();
        aggregate.data[10] ^= 1;
        let out = deaggregate(records.clone());
        assert_eq!(out, records, "nothing split, nothing dropped");
        assert_eq!(out.len(), total);

        let good = DeliveredEvent::from_slice(sample.as_bytes())
            .unwrap()
            .records;
        let out = deaggregate(good);
        assert_eq!(
            out.len(),
            total - 1 + 3,
            "the aggregate holds three user records"
        );
    }
}
