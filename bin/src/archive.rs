//! `rewind archive scan | query`: the archive read back, as record lines or
//! payloads, in sequence order per shard (scan) or per key (query).

use std::io::{BufWriter, Write as _};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use rewind_engine::Record;
use rewind_engine::model::archive::ArchiveLayout;
use rewind_engine::model::record::ArrivalTime;
use rewind_engine::model::seqno::SequenceNumber;
use rewind_engine::sources::dynamodb::DynamoReader;
use rewind_engine::sources::s3_archive::{self, ShardScan};
use rewind_engine::store::{ObjectReader, S3Store};

use crate::Output;
use crate::aws::AwsArgs;

#[derive(Subcommand, Debug)]
pub enum ArchiveCommand {
    /// Records of a stream that arrived in a time window, from the S3
    /// archive: each once, in sequence order per shard.
    Scan(ScanArgs),
    /// Records of one partition key from the DynamoDB archive, in sequence
    /// order, optionally within a sequence range; or its LATEST record.
    Query(QueryArgs),
}

#[derive(Args, Debug)]
pub struct ScanArgs {
    /// The archive bucket.
    #[arg(long)]
    pub bucket: String,
    /// The archive prefix (the archiver's ARCHIVE_PREFIX).
    #[arg(long, default_value = "archive")]
    pub prefix: String,
    /// Stream name.
    #[arg(long)]
    pub stream: String,
    /// Window start, inclusive: epoch seconds (milliseconds allowed).
    #[arg(long)]
    pub from: f64,
    /// Window end, exclusive: epoch seconds (milliseconds allowed).
    #[arg(long)]
    pub to: f64,
    /// Only these shards (repeatable).
    #[arg(long = "shard")]
    pub shards: Vec<String>,
    #[arg(long, value_enum, default_value_t = Output::Lines)]
    pub output: Output,
    #[command(flatten)]
    pub aws: AwsArgs,
}

#[derive(Args, Debug)]
pub struct QueryArgs {
    /// The DynamoDB archive table (the archiver's ARCHIVE_TABLE).
    #[arg(long)]
    pub table: String,
    #[arg(long)]
    pub stream: String,
    #[arg(long)]
    pub partition_key: String,
    /// Lowest sequence number, inclusive.
    #[arg(long)]
    pub from_sequence: Option<SequenceNumber>,
    /// Highest sequence number, inclusive.
    #[arg(long)]
    pub to_sequence: Option<SequenceNumber>,
    /// The LATEST item instead of the ALL items.
    #[arg(long, conflicts_with_all = ["from_sequence", "to_sequence"])]
    pub latest: bool,
    /// Stop after this many records.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Bucket holding the data of records too large for an item (the
    /// archive bucket); without it such records print with empty data.
    #[arg(long)]
    pub overflow_bucket: Option<String>,
    #[arg(long, value_enum, default_value_t = Output::Lines)]
    pub output: Output,
    #[command(flatten)]
    pub aws: AwsArgs,
}

fn time(flag: &str, seconds: f64) -> anyhow::Result<ArrivalTime> {
    ArrivalTime::from_epoch_seconds(seconds)
        .with_context(|| format!("--{flag} {seconds} is not epoch seconds"))
}

pub fn run(command: ArchiveCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let mut out = BufWriter::new(std::io::stdout().lock());
        match command {
            ArchiveCommand::Scan(args) => scan(args, &mut out).await?,
            ArchiveCommand::Query(args) => query(args, &mut out).await?,
        }
        out.flush().context("writing to standard output")
    })
}

async fn scan(args: ScanArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let (from, to) = (time("from", args.from)?, time("to", args.to)?);
    if from >= to {
        return Err(crate::bad_input(anyhow::anyhow!(
            "--from must be before --to"
        )));
    }
    let config = args.aws.config().await;
    let store = S3Store::new(aws_sdk_s3::Client::new(&config), args.bucket.clone());
    let layout = ArchiveLayout {
        prefix: args.prefix.trim_matches('/').to_owned(),
        ..ArchiveLayout::default()
    };
    let plan = s3_archive::plan_scan(&store, &layout, &args.stream, from, to).await?;
    let mut count = 0u64;
    let mut line = Vec::new();
    for (shard, objects) in plan {
        if !args.shards.is_empty() && !args.shards.contains(&shard) {
            continue;
        }
        let mut scan = ShardScan::new(objects, from, to);
        while let Some(batch) = scan.next_batch(&store).await? {
            for record in batch {
                args.output.print(out, &mut line, &record)?;
                count += 1;
            }
        }
    }
    eprintln!("{count} records");
    Ok(())
}

async fn query(args: QueryArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let config = args.aws.config().await;
    let reader = DynamoReader::new(aws_sdk_dynamodb::Client::new(&config), args.table.clone());
    let overflow = args
        .overflow_bucket
        .as_ref()
        .map(|bucket| S3Store::new(aws_sdk_s3::Client::new(&config), bucket.clone()));
    let limit = args.limit.unwrap_or(u64::MAX);
    let mut count = 0u64;
    let mut line = Vec::new();
    if args.latest {
        if let Some((record, key)) = reader.latest(&args.stream, &args.partition_key).await? {
            let record = with_data(record, key, overflow.as_ref()).await?;
            args.output.print(out, &mut line, &record)?;
            count += 1;
        }
    } else {
        let mut start = None;
        loop {
            let page_size = (limit - count).min(1000) as i32;
            let page = reader
                .query(
                    &args.stream,
                    &args.partition_key,
                    args.from_sequence.as_ref(),
                    args.to_sequence.as_ref(),
                    page_size,
                    start,
                )
                .await?;
            for (record, key) in page.records {
                let record = with_data(record, key, overflow.as_ref()).await?;
                args.output.print(out, &mut line, &record)?;
                count += 1;
            }
            match page.next {
                Some(next) if count < limit => start = Some(next),
                _ => break,
            }
        }
    }
    eprintln!("{count} records");
    Ok(())
}

/// Fills in the data of a record whose item points at S3.
async fn with_data(
    mut record: Record,
    key: Option<String>,
    overflow: Option<&S3Store>,
) -> anyhow::Result<Record> {
    if let (Some(key), Some(store)) = (key, overflow) {
        record.data = store.get(&key).await?;
    }
    Ok(record)
}
