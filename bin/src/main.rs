//! `rewind`: the Kinesis Rewind engine on the command line.
//!
//! Subcommands parse arguments and call into `rewind-engine`; nothing about
//! Kinesis is decided here.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use rewind_engine::Record;
use rewind_engine::model::chunk::{ChunkReader, ChunkWriter, Compression};

mod archive;
mod aws;
mod concurrency;
mod demo;
mod local;
mod replay;
mod run;
mod scrape;

#[derive(Parser)]
#[command(
    name = "rewind",
    version,
    about = "Archive, scrape and replay Amazon Kinesis Data Streams"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the records of record-line chunks (gzip, zstd or plain JSON
    /// Lines, recognised by content), in order.
    Cat {
        /// Chunk files to read; `-` reads standard input.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// What to print for each record.
        #[arg(long, value_enum, default_value_t = Output::Lines)]
        output: Output,
        /// Split KPL aggregates into their user records (sub-sequence
        /// numbers set, partition keys their own).
        #[arg(long)]
        deaggregate: bool,
    },
    /// Rewrite record-line chunks into one chunk with another compression,
    /// checking every line on the way.
    Convert {
        /// Chunk files to read, concatenated in the order given.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Where to write the chunk.
        #[arg(long, short)]
        output: PathBuf,
        /// Compression of the output.
        #[arg(long, default_value_t = Compression::Gzip)]
        compression: Compression,
        /// Split KPL aggregates into their user records.
        #[arg(long)]
        deaggregate: bool,
    },
    /// Scrape a window of a stream into chunks and a manifest, locally:
    /// the scraper function's engine, with no deployment.
    Scrape(scrape::ScrapeArgs),
    /// Read the archive back: a time window from S3, or a partition key
    /// from DynamoDB.
    Archive {
        #[command(subcommand)]
        command: archive::ArchiveCommand,
    },
    /// Replay a window to a function exactly as the event source mapping
    /// would (or onto a stream), locally: the replay function's engine, with
    /// no deployment. Sources: a scrape manifest, the archive, or files.
    #[command(after_help = replay::EXIT_CODES)]
    Replay(replay::ReplayArgs),
    /// Put records back onto a stream: from files, a scrape or the archive,
    /// in order per partition key, optionally in the metadata envelope.
    #[command(after_help = replay::EXIT_CODES)]
    Reinject(replay::ReinjectArgs),
    /// Start, describe and follow executions of the deployed scrape and
    /// replay state machines.
    #[command(after_help = run::EXIT_CODES)]
    Run {
        #[command(subcommand)]
        command: run::RunCommand,
    },
    /// The whole story on the local stack, then stopped: a stream archived
    /// behind the event source mapping, an outage with a reshard and poison
    /// records, its window replayed from the archive into a consumer by the
    /// replay state machine; prints what each step counted.
    Demo(demo::DemoArgs),
    /// The local stack: emulators behind one loopback endpoint.
    Local {
        #[command(subcommand)]
        command: local::LocalCommand,
    },
    /// Print a completion script for a shell, to source or to install where
    /// the shell looks for completions (`rewind completions bash >
    /// ~/.local/share/bash-completion/completions/rewind`).
    Completions { shell: clap_complete::Shell },
}

/// Input a command refused before doing anything (a request file, flag
/// values clap can't check): exit code 2, as clap's own usage errors, so
/// scripts tell it from a failure on the way.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct BadInput(pub anyhow::Error);

/// Marks an error as bad input.
pub fn bad_input(error: impl Into<anyhow::Error>) -> anyhow::Error {
    BadInput(error.into()).into()
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Output {
    /// Record lines: JSON with all metadata and base64 data.
    Lines,
    /// Only the payloads, one per line, as UTF-8 text (invalid bytes replaced).
    Data,
}

impl Output {
    /// Writes `record` to `out` as one line, through `line` (a buffer the
    /// caller keeps between records).
    fn print(
        self,
        out: &mut impl Write,
        line: &mut Vec<u8>,
        record: &Record,
    ) -> anyhow::Result<()> {
        line.clear();
        match self {
            Output::Lines => record.write_line(line),
            Output::Data => {
                line.extend_from_slice(String::from_utf8_lossy(&record.data).as_bytes());
                line.push(b'\n');
            }
        }
        out.write_all(line).context("writing to standard output")
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rewind: {error:#}");
            // `rewind run` tells a failed execution from bad input and from
            // an unknown outcome (`rewind run --help`); `rewind replay` bad
            // input from records sent to the DLQ.
            if let Some(error) = error.downcast_ref::<run::RunError>() {
                return error.exit_code();
            }
            if error.downcast_ref::<BadInput>().is_some() {
                return ExitCode::from(2);
            }
            error
                .downcast_ref::<replay::ReplayCliError>()
                .map_or(ExitCode::FAILURE, replay::ReplayCliError::exit_code)
        }
    }
}

/// The engine's structured logs on stderr, one JSON object a line, when
/// `RUST_LOG` asks for them (`RUST_LOG=rewind_engine=info`). Off otherwise,
/// so the CLI's own output is all a user sees; `bin/bench` reads a replay
/// step's `engine time between invokes` from them.
fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        // `local serve` sets its own when this did not.
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(io::stderr)
            .try_init();
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Cat {
            files,
            output,
            deaggregate,
        } => {
            let stdout = io::stdout().lock();
            let mut out = BufWriter::new(stdout);
            let mut line = Vec::new();
            for_each_record(&files, deaggregate, |record| {
                output.print(&mut out, &mut line, &record)
            })?;
            out.flush().context("writing to standard output")
        }
        Command::Convert {
            files,
            output,
            compression,
            deaggregate,
        } => {
            let name = output.display().to_string();
            let file = File::create(&output).with_context(|| format!("creating {name}"))?;
            let mut writer = ChunkWriter::new(name.clone(), BufWriter::new(file), compression)?;
            for_each_record(&files, deaggregate, |record| Ok(writer.write(&record)?))?;
            let (sink, summary) = writer.finish()?;
            sink.into_inner()
                .map_err(io::IntoInnerError::into_error)
                .and_then(|file| file.sync_all())
                .with_context(|| format!("writing {name}"))?;
            eprintln!("{name}: {} records", summary.records);
            Ok(())
        }
        Command::Scrape(args) => scrape::run(args),
        Command::Replay(args) => replay::run_replay(args),
        Command::Reinject(args) => replay::run_reinject(args),
        Command::Archive { command } => archive::run(command),
        Command::Run { command } => run::run(command),
        Command::Local { command } => local::run(command),
        Command::Demo(args) => demo::run(args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "rewind", &mut io::stdout());
            Ok(())
        }
    }
}

/// Streams every record of `files` in order, one at a time.
fn for_each_record(
    files: &[PathBuf],
    deaggregate: bool,
    mut f: impl FnMut(Record) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    for path in files {
        let name = path.display().to_string();
        let reader = if name == "-" {
            ChunkReader::new("<stdin>", io::stdin())?
        } else {
            let file = File::open(path).with_context(|| format!("opening {name}"))?;
            ChunkReader::new(name, file)?
        };
        for record in reader {
            let record = record?;
            if deaggregate {
                for user in record.deaggregate()? {
                    f(user)?;
                }
            } else {
                f(record)?;
            }
        }
    }
    Ok(())
}
