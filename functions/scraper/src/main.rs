//! The scraper Lambda: reads any window of any shards of a stream into S3,
//! one bounded step per invocation (see `rewind_engine::jobs::scrape`). Driven by
//! the scrape state machine, or invoked directly with a scrape request. See
//! [`settings`] for its settings.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use rewind_engine::jobs::scrape::{Scraper, ScraperEvent};
use serde_json::Value;

mod settings;

use settings::Settings;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let settings = Settings::from_env(|name| std::env::var(name).ok())?;
    let sdk = rewind_function::sdk_config(settings.max_attempts).await;
    let scraper = Scraper::new(
        aws_sdk_kinesis::Client::new(&sdk),
        aws_sdk_s3::Client::new(&sdk),
        settings.max_records_per_chunk,
    );
    let scraper = &scraper;
    let max_step = settings.max_step;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        rewind_function::step::run(
            event,
            max_step,
            ScraperEvent::parse,
            |event, deadline, invocation_id| async move {
                scraper.handle(event, deadline, &invocation_id).await
            },
        )
        .await
    }))
    .await
}
