//! The archiver Lambda: attached to a stream by an event source mapping, it
//! keeps every delivered record, with all its metadata, in the S3 archive
//! and, when configured, the DynamoDB archive. See [`settings`] for its
//! settings.

// The handler's future nests the archiver's (S3 sinks generic over how the
// records hold their data) deeper than rustc's default layout query depth.
#![recursion_limit = "256"]

use aws_lambda_events::event::streams::KinesisEventResponse;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use rewind_engine::jobs::archiver::{Archiver, KinesisLineage, KinesisTags};
use rewind_engine::model::event::DeliveredEvent;
use rewind_engine::model::record::Base64;
use rewind_engine::model::record::stream_name_from_arn;
use rewind_engine::sinks::dynamodb::DynamoArchive;
use rewind_engine::store::S3Store;

mod settings;

use settings::Settings;

type Sinks = Archiver<S3Store, Option<KinesisTags>, KinesisLineage>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let settings = Settings::from_env(|name| std::env::var(name).ok())?;
    let sdk = rewind_function::sdk_config(settings.max_attempts).await;
    let s3 = S3Store::new(aws_sdk_s3::Client::new(&sdk), settings.bucket.clone());
    let dynamo = settings.table.as_ref().map(|table| {
        DynamoArchive::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            table.clone(),
            s3.clone(),
            settings.layout.prefix.clone(),
        )
        .with_concurrency(settings.table_concurrency)
    });
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    let tags = settings
        .use_stream_tags
        .then(|| KinesisTags::new(kinesis.clone()));
    let sinks: Sinks = Archiver::new(
        s3,
        settings.layout,
        settings.deaggregate,
        dynamo,
        settings.dynamo_defaults,
        tags,
        Some(KinesisLineage::new(kinesis)),
    );
    let sinks = &sinks;
    // The records keep their data as the base64 the event carried: the
    // archive's lines take it as it is, and only DynamoDB items and KPL
    // user records decode it.
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<DeliveredEvent<Base64>>| async move {
            Ok::<_, Error>(handle(sinks, event.payload).await)
        },
    ))
    .await
}

async fn handle(sinks: &Sinks, event: DeliveredEvent<Base64>) -> KinesisEventResponse {
    let Some(stream_arn) = event.stream_arn else {
        return KinesisEventResponse::default();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let archived = sinks.archive(&stream_arn, event.records, now).await;
    // The invocation's metrics as one EMF line on stdout, where Lambda's
    // log capture hands it to CloudWatch Logs as it is (not through the
    // tracing subscriber, whose JSON envelope would hide it).
    let stream = stream_name_from_arn(&stream_arn).unwrap_or(&stream_arn);
    println!("{}", archived.metrics.emf_line(stream, now));
    archived.response
}
