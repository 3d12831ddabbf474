//! `rewind run start | status | watch`: the deployed scrape and replay state
//! machines driven from a terminal. `start` checks the request with the
//! engine's own parser before anything connects and starts an execution;
//! `status` describes one; `watch` follows one to its end, counting shards
//! and steps from its history, and prints its output.
//!
//! Exit codes say how the execution ended (see [`EXIT_CODES`]), so scripts
//! can tell a failed execution from a watch that could not ask.
//!
//! [`request`] checks the input before anything connects, [`execution`]
//! makes the Step Functions calls, [`watch`] follows an execution,
//! [`history`] reads its events and [`tally`] counts them, [`view`] prints
//! it, and [`error`] sorts failures into exit codes.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_sfn::Client;
use aws_sdk_sfn::types::ExecutionStatus;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use crate::aws::AwsArgs;
use crate::scrape::read_request;

pub use error::RunError;
use error::bad_input;
use execution::{describe, start};
use request::{arn_region, check_request};
use view::{date, ended, print_json, print_status, view};
use watch::watch;

mod error;
mod execution;
mod history;
mod request;
mod tally;
mod view;
mod watch;

/// The exit codes of every `rewind run` command, for `--help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  succeeded (status: also still running; start without --watch: started)
  1  the execution failed, timed out or was aborted (its error and cause are printed)
  2  bad input: flags, the request file, a name or ARN Step Functions rejects; nothing was started
  3  Step Functions could not be asked (network, credentials, throttling): the outcome is unknown";

#[derive(Subcommand, Debug)]
pub enum RunCommand {
    /// Start an execution of the scrape or replay state machine with a
    /// request file, checked first by the engine's own parser.
    #[command(after_help = EXIT_CODES)]
    Start(StartArgs),
    /// Describe an execution: status, start and stop dates, and its output
    /// or its error and cause.
    #[command(after_help = EXIT_CODES)]
    Status(StatusArgs),
    /// Follow an execution to its end with progress on stderr (shards done,
    /// task steps), then print its output on stdout.
    #[command(after_help = EXIT_CODES)]
    Watch(WatchArgs),
}

/// Which request a file holds, and so which state machine takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// A scrape request (`rewind_engine::jobs::scrape::ScrapeRequest`).
    Scrape,
    /// A replay request (`rewind_engine::jobs::replay::ReplayRequest`).
    Replay,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Scrape => "scrape",
            Kind::Replay => "replay",
        }
    }
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// ARN of the scrape or replay state machine (the stack's
    /// ScrapeStateMachineArn or ReplayStateMachineArn output).
    #[arg(long)]
    pub state_machine: String,
    /// The request: a JSON file as the state machine takes it
    /// (`events/scrape-*.json`, `events/replay-*.json` are examples); `-`
    /// reads standard input.
    #[arg(long)]
    pub request: PathBuf,
    /// Which request the file holds. By default a document with `source`
    /// and `target` is a replay request, any other a scrape request.
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,
    /// Execution name, which the state machines use as the run id (the
    /// output and DLQ folder): 1 to 80 of a-z A-Z 0-9 _ . -. Default: the
    /// request's runId, else rewind-<UTC time>-<random>.
    #[arg(long)]
    pub name: Option<String>,
    /// Follow the execution to its end, as `rewind run watch` does.
    #[arg(long)]
    pub watch: bool,
    /// Seconds between polls with --watch.
    #[arg(long, default_value = "2", value_parser = interval, requires = "watch")]
    pub interval: Duration,
    /// Print JSON only.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub aws: AwsArgs,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The execution's ARN (as `rewind run start` prints it).
    pub execution_arn: String,
    /// Print JSON only.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub aws: AwsArgs,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The execution's ARN (as `rewind run start` prints it).
    pub execution_arn: String,
    /// Seconds between polls.
    #[arg(long, default_value = "2", value_parser = interval)]
    pub interval: Duration,
    /// Print JSON only (progress still goes to stderr).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub aws: AwsArgs,
}

fn interval(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(0.1..=600.0).contains(&seconds) {
        return Err(format!(
            "{seconds} is out of range; accepted values: 0.1 to 600"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

pub fn run(command: RunCommand) -> anyhow::Result<()> {
    // Requests and ARNs are checked before the runtime and the SDK exist:
    // bad input never waits on a network.
    match command {
        RunCommand::Start(args) => {
            let region = arn_region(&args.state_machine, "stateMachine", "--state-machine")?;
            let bytes = read_request(&args.request).map_err(bad_input)?;
            let checked = check_request(&bytes, args.kind, args.name.as_deref())
                .with_context(|| args.request.display().to_string())
                .map_err(bad_input)?;
            block_on(async {
                let client = client(&args.aws, region).await;
                let started = start(&client, &args.state_machine, &checked).await?;
                if args.watch {
                    eprintln!("started {}", started.execution_arn);
                    watch(&client, &started.execution_arn, args.interval, args.json).await
                } else {
                    if args.json {
                        print_json(&json!({
                            "executionArn": started.execution_arn,
                            "name": checked.name,
                            "kind": checked.kind.as_str(),
                            "stateMachineArn": args.state_machine,
                            "startDate": date(Some(&started.start_date)),
                        }))?;
                    } else {
                        println!("{}", started.execution_arn);
                    }
                    Ok(())
                }
            })
        }
        RunCommand::Status(args) => {
            let region = arn_region(&args.execution_arn, "execution", "EXECUTION_ARN")?;
            block_on(async {
                let client = client(&args.aws, region).await;
                let described = describe(&client, &args.execution_arn).await?;
                if args.json {
                    print_json(&view(&described, None))?;
                } else {
                    print_status(&described)?;
                }
                // PENDING_REDRIVE: failed, but a redrive is on its way.
                match described.status() {
                    ExecutionStatus::Running
                    | ExecutionStatus::PendingRedrive
                    | ExecutionStatus::Succeeded => Ok(()),
                    _ => Err(ended(&described).into()),
                }
            })
        }
        RunCommand::Watch(args) => {
            let region = arn_region(&args.execution_arn, "execution", "EXECUTION_ARN")?;
            block_on(async {
                let client = client(&args.aws, region).await;
                watch(&client, &args.execution_arn, args.interval, args.json).await
            })
        }
    }
}

fn block_on(work: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()
        .context("starting the async runtime")?
        .block_on(work)
}

/// The Step Functions client; the region is the ARN's unless one was given,
/// since a state machine or execution only exists in its own region.
async fn client(aws: &AwsArgs, arn_region: String) -> Client {
    let mut aws = aws.clone();
    aws.region.get_or_insert(arn_region);
    Client::new(&aws.config().await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_bounded() {
        assert_eq!(interval("0.5").unwrap(), Duration::from_millis(500));
        assert!(
            interval("0")
                .unwrap_err()
                .contains("accepted values: 0.1 to 600")
        );
        assert!(interval("soon").is_err());
    }
}
