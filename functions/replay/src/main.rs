//! The replay Lambda: delivers a scrape manifest's or an archive's records
//! to a function exactly as the event source mapping would, or puts them
//! back onto a stream, one bounded step per invocation (see
//! `rewind_engine::jobs::replay`). Driven by the replay state machine (`plan`,
//! `step` per shard until done, `summary`). See [`settings`] for its
//! settings.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use rewind_engine::jobs::replay::{
    ReplayError, ReplayEvent, ReplayOutput, ReplaySettings, Replayer,
};
use rewind_function::step::Failure;
use serde_json::Value;

mod settings;

use settings::Settings;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let settings = Settings::from_env(|name| std::env::var(name).ok())?;
    let sdk = rewind_function::sdk_config(settings.max_attempts).await;
    let replayer = Replayer::new(
        aws_sdk_s3::Client::new(&sdk),
        &sdk,
        ReplaySettings {
            partition: settings.partition,
            region: Some(
                sdk.region()
                    .map(ToString::to_string)
                    .unwrap_or(settings.region),
            ),
            account_id: settings.account_id,
            invoke_identity_arn: settings.invoke_identity_arn,
            dynamodb: settings.dynamodb,
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

async fn handle(
    replayer: &Replayer,
    event: LambdaEvent<Value>,
) -> Result<ReplayOutput, Failure<ReplayError>> {
    // The replay's step future is deep: boxed, so the runtime's future
    // around it stays within the compiler's layout depth.
    rewind_function::step::run(
        event,
        None,
        ReplayEvent::parse,
        |event, deadline, invocation_id| async move {
            Box::pin(replayer.handle(event, deadline, &invocation_id)).await
        },
    )
    .await
}
