//! `rewind local mapping`: a Kinesis event source mapping on the laptop.
//! No emulator runs one, so this polls the stream and invokes the function
//! in mapping-shaped batches with the mapping's settings (the engine's
//! [`rewind_engine::jobs::mapping`]), until Ctrl-C or, with `--idle-exit`, until
//! the stream has been quiet for that long; then it prints what each shard
//! did.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use rewind_engine::ArrivalTime;
use rewind_engine::jobs::mapping::config::MappingConfig;
use rewind_engine::jobs::mapping::report::MappingReport;
use rewind_engine::jobs::mapping::stream::StreamMapping;
use rewind_engine::jobs::mapping::{MappingError, ShardError};
use rewind_engine::model::window::StartPosition;
use rewind_engine::pipeline::filter::FilterCriteria;
use rewind_engine::sinks::dlq::{Dlq, S3FailureDestination, SqsFailureDestination};
use rewind_engine::sinks::lambda::invoker::{Invoker as _, LambdaInvoker};
use rewind_engine::sinks::lambda::options::{FunctionResponseType, MappingOptions};
use rewind_engine::sources::kinesis::resolve_stream_arn;
use rewind_engine::store::S3Store;

use crate::aws::AwsArgs;

#[derive(Args, Debug)]
pub struct MappingArgs {
    /// The stream: name or ARN.
    #[arg(long)]
    stream: String,
    /// The function: name or ARN, as Invoke takes it.
    #[arg(long)]
    function: String,
    /// The function's version or alias.
    #[arg(long)]
    qualifier: Option<String>,
    /// Where the shards listed at the start are read from (shards created
    /// later are read from their start).
    #[arg(long, value_enum, default_value_t = StartingPosition::TrimHorizon)]
    starting_position: StartingPosition,
    /// With AT_TIMESTAMP: Unix epoch seconds (`1732233600`, `1732233600.5`).
    #[arg(long, required_if_eq("starting_position", "AT_TIMESTAMP"))]
    starting_position_timestamp: Option<f64>,
    /// BatchSize: most records per invocation, 1 to 10000.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// MaximumBatchingWindowInSeconds: seconds to gather records before
    /// invoking, 0 to 300.
    #[arg(long, default_value_t = 0)]
    batching_window: u64,
    /// MaximumRetryAttempts: -1 (until the records expire) or 0 to 10000.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    maximum_retry_attempts: i64,
    /// BisectBatchOnFunctionError.
    #[arg(long)]
    bisect_batch_on_function_error: bool,
    /// FunctionResponseTypes.
    #[arg(long, value_enum)]
    function_response_types: Vec<ResponseType>,
    /// MaximumRecordAgeInSeconds: -1 (never) or 60 to 604800.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    maximum_record_age: i64,
    /// ParallelizationFactor: batches at once per shard, 1 to 10.
    #[arg(long, default_value_t = 1)]
    parallelization_factor: usize,
    /// FilterCriteria, as the mapping takes it:
    /// `{"Filters": [{"Pattern": "{\"data\": {\"kind\": [\"order\"]}}"}]}`.
    /// Records no filter matches are read, checkpointed and counted as
    /// filtered, never sent; batches are filled with matching records.
    #[arg(long, value_parser = filter_criteria)]
    filter_criteria: Option<FilterCriteria>,
    /// TumblingWindowInSeconds: 0 (no window) or 1 to 900; each invocation
    /// then carries the window and the state the function last returned.
    #[arg(long, default_value_t = 0)]
    tumbling_window_in_seconds: u32,
    /// On-failure destination for discarded batches: `s3://BUCKET[/PREFIX]`
    /// or an SQS queue URL. Without one, discarded batches are logged and
    /// listed in the report (shard and sequence range).
    #[arg(long)]
    on_failure: Option<String>,
    /// Stop once no shard has read a record for this many seconds (and no
    /// batch is in flight).
    #[arg(long)]
    idle_exit: Option<f64>,
    /// Print the per-shard report as JSON only.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    aws: AwsArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StartingPosition {
    #[value(name = "TRIM_HORIZON")]
    TrimHorizon,
    #[value(name = "LATEST")]
    Latest,
    #[value(name = "AT_TIMESTAMP")]
    AtTimestamp,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ResponseType {
    #[value(name = "ReportBatchItemFailures")]
    ReportBatchItemFailures,
}

impl MappingArgs {
    /// The engine's settings, validated before anything connects.
    fn config(&self) -> anyhow::Result<MappingConfig> {
        let starting_position = match self.starting_position {
            StartingPosition::TrimHorizon => StartPosition::TrimHorizon,
            StartingPosition::Latest => StartPosition::Latest,
            StartingPosition::AtTimestamp => {
                let seconds = self
                    .starting_position_timestamp
                    .context("--starting-position-timestamp is required with AT_TIMESTAMP")?;
                StartPosition::AtTimestamp {
                    timestamp: ArrivalTime::from_epoch_seconds(seconds).with_context(|| {
                        format!("--starting-position-timestamp {seconds} is not a time")
                    })?,
                }
            }
        };
        let idle_exit = self
            .idle_exit
            .map(|secs| {
                Duration::try_from_secs_f64(secs)
                    .with_context(|| format!("--idle-exit {secs}: expected seconds, 0 or more"))
            })
            .transpose()?;
        let config = MappingConfig {
            starting_position,
            options: MappingOptions {
                batch_size: self.batch_size,
                maximum_retry_attempts: self.maximum_retry_attempts,
                bisect_batch_on_function_error: self.bisect_batch_on_function_error,
                function_response_types: self
                    .function_response_types
                    .iter()
                    .map(|ResponseType::ReportBatchItemFailures| {
                        FunctionResponseType::ReportBatchItemFailures
                    })
                    .collect(),
                maximum_record_age_in_seconds: self.maximum_record_age,
                parallelization_factor: self.parallelization_factor,
                filter_criteria: self.filter_criteria.clone(),
                tumbling_window_in_seconds: self.tumbling_window_in_seconds,
            },
            batching_window: Duration::from_secs(self.batching_window),
            idle_exit,
            ..MappingConfig::default()
        };
        config.validate().map_err(ShardError::Invalid)?;
        Ok(config)
    }
}

/// `--filter-criteria`'s JSON, read before anything connects (the patterns
/// themselves are checked with the other settings).
fn filter_criteria(value: &str) -> Result<FilterCriteria, String> {
    serde_json::from_str(value).map_err(|error| {
        format!(r#"expected {{"Filters": [{{"Pattern": "<a JSON pattern>"}}, ...]}} ({error})"#)
    })
}

/// Where `--on-failure` points.
enum OnFailure {
    S3 { bucket: String, prefix: String },
    Sqs { queue_url: String },
}

fn on_failure(value: &str) -> anyhow::Result<OnFailure> {
    if let Some(rest) = value.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        anyhow::ensure!(
            !bucket.is_empty(),
            "--on-failure {value}: expected s3://BUCKET[/PREFIX] or an SQS queue URL"
        );
        return Ok(OnFailure::S3 {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
        });
    }
    anyhow::ensure!(
        value.starts_with("https://") || value.starts_with("http://"),
        "--on-failure {value}: expected s3://BUCKET[/PREFIX] or an SQS queue URL"
    );
    Ok(OnFailure::Sqs {
        queue_url: value.to_owned(),
    })
}

pub fn run(args: MappingArgs) -> anyhow::Result<()> {
    let config = args.config().map_err(crate::bad_input)?;
    let on_failure = args.on_failure.as_deref().map(on_failure).transpose()?;
    // Progress (one line per settled batch, never record payloads) and
    // warnings on standard error; RUST_LOG overrides.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if args.json { "warn" } else { "info" })
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let outcome = runtime.block_on(async {
        let sdk = args.aws.config().await;
        let kinesis = aws_sdk_kinesis::Client::new(&sdk);
        let stream_arn = resolve_stream_arn(&kinesis, &args.stream).await?;
        let invoker = LambdaInvoker::new(
            aws_sdk_lambda::Client::new(&sdk),
            &args.function,
            args.qualifier.clone(),
        );
        // A live mapping reads with the function's execution role, and its
        // events name it (`invokeIdentityArn`); the look-up also gives the
        // on-failure records the full function ARN.
        let identity = invoker
            .identity()
            .await
            .context("looking up the function's role (lambda:GetFunctionConfiguration)")?;
        let (mapping, shards) =
            StreamMapping::open(&kinesis, &stream_arn, identity.role, config).await?;
        if !args.json {
            eprintln!(
                "polling {} shard(s) of {stream_arn} into {} (Ctrl-C stops)",
                shards.len(),
                args.function
            );
        }
        let shutdown = async {
            // If the handler can't be installed, only an idle exit or an
            // error ends the run, as without a terminal.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let destination: Option<Dlq<_, _>> = on_failure.map(|on_failure| match on_failure {
            OnFailure::S3 { bucket, prefix } => {
                let s3 = aws_sdk_s3::Client::from_conf(
                    aws_sdk_s3::config::Builder::from(&sdk)
                        .force_path_style(args.aws.endpoint_url.is_some())
                        .build(),
                );
                Dlq::S3(S3FailureDestination {
                    store: S3Store::new(s3, bucket),
                    mapping_id: format!("rewind-local-{}", std::process::id()),
                    prefix,
                })
            }
            OnFailure::Sqs { queue_url } => Dlq::Sqs(SqsFailureDestination {
                client: aws_sdk_sqs::Client::new(&sdk),
                queue_url,
            }),
        });
        // Without one, a discarded batch is logged (LogOnlyDestination).
        let outcome = mapping.run(&invoker, &destination, shards, shutdown).await;
        anyhow::Ok(outcome)
    })?;
    match outcome {
        Ok(report) => print_report(&report, args.json),
        Err(MappingError { report, source }) => {
            print_report(&report, args.json)?;
            Err(anyhow::Error::new(source).context("the event source mapping stopped"))
        }
    }
}

fn print_report(report: &MappingReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    println!("stopped: {:?}", report.stopped);
    println!(
        "{:<24} {:<20} {:>8} {:>8} {:>11} {:>8} {:>7} {:>9} {:>11} {:>9}  checkpoint",
        "shard",
        "status",
        "records",
        "batches",
        "invocations",
        "fn errs",
        "failed",
        "throttles",
        "read errors",
        "in flight"
    );
    for shard in &report.shards {
        println!(
            "{:<24} {:<20} {:>8} {:>8} {:>11} {:>8} {:>7} {:>9} {:>11} {:>9}  {}",
            shard.shard_id,
            format!("{:?}", shard.status),
            shard.records,
            shard.batches,
            shard.counters.invocations,
            shard.counters.function_errors,
            shard.counters.failed_records,
            shard.throttles,
            shard.read_errors,
            shard.in_flight,
            shard
                .checkpoint
                .as_ref()
                .map_or_else(|| "-".to_owned(), ToString::to_string)
        );
    }
    for shard in &report.shards {
        for location in &shard.failure_locations {
            println!("failed batch of {}: {location}", shard.shard_id);
        }
        if shard.failure_locations_dropped > 0 {
            println!(
                "… and {} more failed batches of {} (the log names each)",
                shard.failure_locations_dropped, shard.shard_id
            );
        }
    }
    Ok(())
}
