//! The scenario around the story: the stream and the DLQ bucket, the
//! archiver attached behind the local event source mapping from the start,
//! then traffic, archive, window and replay while the mapping runs; the
//! mapping must outlive the story, or the archive is incomplete.

use std::collections::BTreeSet;

use anyhow::Context as _;
use rewind_engine::ArrivalTime;
use rewind_engine::jobs::mapping::ShardError;
use rewind_engine::jobs::mapping::config::MappingConfig;
use rewind_engine::jobs::mapping::stream::StreamMapping;
use rewind_engine::model::window::StartPosition;
use rewind_engine::sinks::dlq::LogOnlyDestination;
use rewind_engine::sinks::lambda::invoker::LambdaInvoker;
use rewind_engine::sinks::lambda::options::{FunctionResponseType, MappingOptions};
use rewind_engine::sources::kinesis::resolve_stream_arn;
use rewind_engine::store::S3Store;
use rewind_local::proxy::ACCOUNT;
use rewind_local::stack::LOCAL_ARCHIVE_BUCKET;
use rewind_local::{Layout, LocalStack, sdk};

use super::archive::{read_archive, wait_archived};
use super::plan::{plan, poison_count};
use super::replay::{consumer_count, replay};
use super::report::{Report, ReportParts};
use super::traffic::{RecordId, produce};
use super::{DemoArgs, SHARDS, progress};

/// The clients of the stack the story uses.
pub(super) struct Clients {
    pub(super) kinesis: aws_sdk_kinesis::Client,
    pub(super) s3: aws_sdk_s3::Client,
    pub(super) sfn: aws_sdk_sfn::Client,
    pub(super) lambda: aws_sdk_lambda::Client,
}

pub(super) async fn run(
    stack: &LocalStack,
    layout: &Layout,
    args: &DemoArgs,
) -> anyhow::Result<Report> {
    let sdk = sdk::config(&stack.endpoint_url()).await;
    let clients = Clients {
        kinesis: aws_sdk_kinesis::Client::new(&sdk),
        s3: sdk::s3_client(&sdk),
        sfn: aws_sdk_sfn::Client::new(&sdk),
        lambda: aws_sdk_lambda::Client::new(&sdk),
    };
    let pid = std::process::id();
    let stream = format!("demo-orders-{pid}");
    let bucket = format!("rewind-demo-{pid}");
    let records = args.records as usize;
    let poison = poison_count(records);
    let phases = plan(records, poison)?;

    // The consumer appends to this file; an earlier run of the same pid
    // must not count.
    let consumer_file = layout
        .run_dir()
        .join("fixtures/target")
        .join(format!("{stream}.jsonl"));
    match std::fs::remove_file(&consumer_file) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error).with_context(|| format!("removing {}", consumer_file.display()));
        }
    }

    progress(format_args!(
        "creating stream {stream} ({SHARDS} shards) and bucket {bucket}"
    ));
    clients
        .kinesis
        .create_stream()
        .stream_name(&stream)
        .shard_count(SHARDS)
        .send()
        .await
        .with_context(|| format!("creating stream {stream}"))?;
    sdk::wait_active(&clients.kinesis, &stream).await?;
    clients
        .s3
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .with_context(|| format!("creating bucket {bucket}"))?;
    let stream_arn = resolve_stream_arn(&clients.kinesis, &stream).await?;

    // The archiver behind the event source mapping, with template.yaml's
    // mapping settings (bisect on function error, batch item failures,
    // retries until stored), from the start of the stream, batches of 100.
    let config = MappingConfig {
        starting_position: StartPosition::TrimHorizon,
        options: MappingOptions {
            batch_size: 100,
            bisect_batch_on_function_error: true,
            function_response_types: vec![FunctionResponseType::ReportBatchItemFailures],
            ..MappingOptions::default()
        },
        ..MappingConfig::default()
    };
    config.validate().map_err(ShardError::Invalid)?;
    let (mapping, shards) = StreamMapping::open(
        &clients.kinesis,
        &stream_arn,
        format!("arn:aws:iam::{ACCOUNT}:role/rewind-demo-archiver-mapping"),
        config,
    )
    .await?;
    let invoker = LambdaInvoker::new(clients.lambda.clone(), "archiver", None);
    let (stop_mapping, stopped) = tokio::sync::oneshot::channel::<()>();
    progress(format_args!(
        "archiver attached: the local event source mapping polls {} shard(s) from TRIM_HORIZON",
        shards.len()
    ));
    let mapping_run = mapping.run(&invoker, &LogOnlyDestination, shards, async {
        // A dropped sender stops the mapping too.
        let _ = stopped.await;
    });
    tokio::pin!(mapping_run);

    let story = async {
        let traffic = produce(&clients.kinesis, &stream, &phases).await?;
        let put: BTreeSet<RecordId> = traffic
            .placed
            .iter()
            .flat_map(|(_, p)| p.records.iter().cloned())
            .collect();
        let store = S3Store::new(clients.s3.clone(), LOCAL_ARCHIVE_BUCKET);
        let archived = wait_archived(&store, &stream, &put, traffic.started).await?;
        // The window as the replay will read it, from the archive.
        let in_window = read_archive(
            &store,
            &stream,
            ArrivalTime::from_epoch_millis(traffic.window.0 * 1000),
            ArrivalTime::from_epoch_millis(traffic.window.1 * 1000),
        )
        .await?;
        let replay = replay(&clients, layout, &stream, &bucket, traffic.window).await?;
        anyhow::Ok((traffic, archived, in_window, replay))
    };
    // The mapping runs until told to stop: ending before that is a failure
    // of the archiving, and the story can't go on.
    let (traffic, archived, in_window, replay) = tokio::select! {
        story = story => story?,
        outcome = &mut mapping_run => {
            let detail = match outcome {
                Ok(report) => format!("it stopped by itself ({:?})", report.stopped),
                Err(error) => format!("{error:#}: {:?}", error.report),
            };
            anyhow::bail!("the event source mapping stopped before the demo was done: {detail}");
        }
    };
    let _ = stop_mapping.send(());
    let mapping_report = mapping_run
        .await
        .map_err(|error| anyhow::Error::new(error.source).context("the archiver's mapping"))?;

    let consumer = consumer_count(&consumer_file)?;
    Ok(Report::new(ReportParts {
        stream,
        stream_arn,
        bucket,
        phases: &phases,
        traffic,
        archived,
        in_window,
        replay,
        consumer,
        consumer_file,
        mapping: mapping_report,
    }))
}
