//! `rewind run start | status | watch`: the deployed scrape and replay state
//! machines driven from a terminal. `start` checks the request with the
//! engine's own parser before anything connects and starts an execution;
//! `status` describes one; `watch` follows one to its end, counting shards
//! and steps from its history, and prints its output.
//!
//! Exit codes say how the execution ended (see [`EXIT_CODES`]), so scripts
//! can tell a failed execution from a watch that could not ask.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use aws_sdk_sfn::Client;
use aws_sdk_sfn::error::SdkError;
use aws_sdk_sfn::operation::describe_execution::{DescribeExecutionError, DescribeExecutionOutput};
use aws_sdk_sfn::operation::get_execution_history::GetExecutionHistoryError;
use aws_sdk_sfn::operation::start_execution::StartExecutionError;
use aws_sdk_sfn::primitives::{DateTime, DateTimeFormat};
use aws_sdk_sfn::types::{ExecutionStatus, HistoryEvent, HistoryEventType};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rewind_engine::jobs::replay::ReplayRequest;
use rewind_engine::jobs::scrape::ScrapeRequest;
use rewind_engine::request::RequestError;
use serde_json::{Value, json};

use crate::scrape::{AwsArgs, read_request};

/// The exit codes of every `rewind run` command, for `--help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  succeeded (status: also still running; start without --watch: started)
  1  the execution failed, timed out or was aborted (its error and cause are printed)
  2  bad input: flags, the request file, a name or ARN Step Functions rejects; nothing was started
  3  Step Functions could not be asked (network, credentials, throttling): the outcome is unknown";

/// Step Functions refuses larger execution inputs.
const MAX_INPUT_BYTES: usize = 256 * 1024;

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

/// How a `rewind run` command failed; each kind has its exit code.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Flags, the request, a name or an ARN: nothing was started.
    #[error(transparent)]
    BadInput(anyhow::Error),
    /// The execution ended without succeeding.
    #[error("execution {name} {status}{}", describe_failure(.error, .cause))]
    Ended {
        name: String,
        status: String,
        error: Option<String>,
        cause: Option<String>,
    },
    /// Step Functions could not be asked; the outcome is unknown.
    #[error(transparent)]
    Unknown(anyhow::Error),
}

fn describe_failure(error: &Option<String>, cause: &Option<String>) -> String {
    let mut text = String::new();
    for part in [error, cause].into_iter().flatten() {
        text.push_str(": ");
        text.push_str(part);
    }
    text
}

impl RunError {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            RunError::Ended { .. } => 1,
            RunError::BadInput(_) => 2,
            RunError::Unknown(_) => 3,
        })
    }
}

fn bad_input(error: impl Into<anyhow::Error>) -> RunError {
    RunError::BadInput(error.into())
}

/// An SDK error as bad input when the service says the caller's input is
/// wrong (`input` decides), as an unknown outcome otherwise.
fn service_error<E, R>(
    error: SdkError<E, R>,
    input: impl FnOnce(&E) -> bool,
    doing: String,
) -> RunError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let bad = error.as_service_error().is_some_and(input);
    let error = anyhow::Error::new(error).context(doing);
    if bad {
        RunError::BadInput(error)
    } else {
        RunError::Unknown(error)
    }
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

/// The region of `arn` if it is a Step Functions ARN of `resource`
/// (`stateMachine`, `execution`).
fn arn_region(arn: &str, resource: &str, what: &str) -> Result<String, RunError> {
    // arn:<partition>:states:<region>:<account>:<resource>:<name>[:...]
    let parts: Vec<&str> = arn.splitn(7, ':').collect();
    match parts[..] {
        ["arn", partition, "states", region, account, kind, name]
            if !partition.is_empty()
                && !region.is_empty()
                && !account.is_empty()
                && kind == resource
                && !name.is_empty() =>
        {
            Ok(region.to_owned())
        }
        _ => {
            let shape = match resource {
                "execution" => "execution:<state machine>:<name>",
                _ => "stateMachine:<name>",
            };
            Err(bad_input(anyhow!(
                "{what}: {arn:?} is not a Step Functions {resource} ARN; accepted values: arn:aws:states:<region>:<account>:{shape}"
            )))
        }
    }
}

/// A request the engine accepted, and the execution name that goes with it.
#[derive(Debug)]
struct Checked {
    kind: Kind,
    name: String,
    /// The document as given: the execution's input.
    input: String,
}

/// Parses `bytes` as the request `kind` says (or as its fields suggest)
/// with the engine's own parser, and settles the execution name, which the
/// state machines pass on as the request's runId.
fn check_request(bytes: &[u8], kind: Option<Kind>, name: Option<&str>) -> anyhow::Result<Checked> {
    let kind = kind.unwrap_or_else(|| detect(bytes));
    // The state machine sets runId to the execution name; the engine's own
    // runId rule checks the name.
    let settle = |run_id: &Option<String>| -> String {
        name.map(str::to_owned)
            .or_else(|| run_id.clone())
            .unwrap_or_else(default_name)
    };
    let name = match kind {
        Kind::Scrape => {
            let mut request = ScrapeRequest::parse(bytes)?;
            let name = settle(&request.run_id);
            request.run_id = Some(name.clone());
            request.validate().map_err(|e| name_error(&name, e))?;
            name
        }
        Kind::Replay => {
            // The engine's RequestError names itself a scrape request's.
            let mut request = ReplayRequest::parse(bytes)
                .map_err(|e| anyhow!("invalid replay request: {}: {}", e.field, e.message))?;
            let name = settle(&request.run_id);
            request.run_id = Some(name.clone());
            request.validate().map_err(|e| name_error(&name, e))?;
            name
        }
    };
    anyhow::ensure!(
        bytes.len() <= MAX_INPUT_BYTES,
        "{} bytes; Step Functions takes at most {MAX_INPUT_BYTES} bytes of input",
        bytes.len()
    );
    let input = String::from_utf8(bytes.to_vec()).context("the request is not UTF-8")?;
    Ok(Checked { kind, name, input })
}

fn name_error(name: &str, error: RequestError) -> anyhow::Error {
    // Only runId changed since the request was parsed.
    anyhow!(
        "--name {name:?} is not a valid run id ({}); accepted values: 1 to 80 of a-z A-Z 0-9 _ . -",
        error.message
    )
}

/// A replay request names a source and a target; a scrape request has
/// neither.
fn detect(bytes: &[u8]) -> Kind {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) if map.contains_key("source") && map.contains_key("target") => {
            Kind::Replay
        }
        _ => Kind::Scrape,
    }
}

fn default_name() -> String {
    format!(
        "rewind-{}-{:06x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        fastrand::u32(..1 << 24)
    )
}

struct Started {
    execution_arn: String,
    start_date: DateTime,
}

async fn start(client: &Client, machine: &str, checked: &Checked) -> anyhow::Result<Started> {
    let output = client
        .start_execution()
        .state_machine_arn(machine)
        .name(&checked.name)
        .input(&checked.input)
        .send()
        .await
        .map_err(|error| {
            service_error(
                error,
                |e| {
                    matches!(
                        e,
                        StartExecutionError::ExecutionAlreadyExists(_)
                            | StartExecutionError::InvalidArn(_)
                            | StartExecutionError::InvalidExecutionInput(_)
                            | StartExecutionError::InvalidName(_)
                            | StartExecutionError::StateMachineDeleting(_)
                            | StartExecutionError::StateMachineDoesNotExist(_)
                            | StartExecutionError::ValidationException(_)
                    )
                },
                format!("starting execution {} of {machine}", checked.name),
            )
        })?;
    Ok(Started {
        execution_arn: output.execution_arn().to_owned(),
        start_date: *output.start_date(),
    })
}

async fn describe(client: &Client, arn: &str) -> Result<DescribeExecutionOutput, RunError> {
    client
        .describe_execution()
        .execution_arn(arn)
        .send()
        .await
        .map_err(|error| {
            service_error(
                error,
                |e| {
                    matches!(
                        e,
                        DescribeExecutionError::ExecutionDoesNotExist(_)
                            | DescribeExecutionError::InvalidArn(_)
                    )
                },
                format!("describing execution {arn}"),
            )
        })
}

/// Follows the execution until it ends, then prints its output (or, with
/// `json`, its description and progress).
async fn watch(client: &Client, arn: &str, every: Duration, json: bool) -> anyhow::Result<()> {
    let progress = ProgressView::new();
    let mut tally = Tally::default();
    tally.learn_maps(client, arn).await;
    loop {
        // Described first, history second: once the description says the
        // execution ended, the history read after it is complete.
        let described = describe(client, arn).await?;
        tally.read_new(client, arn).await?;
        let running = matches!(
            described.status(),
            ExecutionStatus::Running | ExecutionStatus::PendingRedrive
        );
        progress.show(described.status(), &tally, running);
        if !running {
            eprintln!(
                "execution {} {} after {}: {}",
                described.name().unwrap_or(arn),
                described.status(),
                elapsed(&described),
                tally.line()
            );
            if json {
                print_json(&view(&described, Some(&tally)))?;
            }
            if *described.status() != ExecutionStatus::Succeeded {
                return Err(ended(&described).into());
            }
            if !json {
                print_json(&output(&described))?;
            }
            return Ok(());
        }
        tokio::time::sleep(every).await;
    }
}

/// What the history says so far: iterations of the Maps over shards, and
/// task steps (Lambda invocations).
#[derive(Debug, Default)]
struct Tally {
    /// Highest event id counted: later reads count only newer events.
    last_event: i64,
    /// The Map states that iterate over shards: those with no Map inside
    /// (the replay machine's Map over lineage groups holds its Map over
    /// shards). `None` counts every Map (the definition was not readable).
    shard_maps: Option<BTreeSet<String>>,
    /// Names of entered Map states by event id: a `MapStateStarted` event
    /// (which carries the item count) follows its `MapStateEntered`.
    map_entered: BTreeMap<i64, String>,
    /// `MapStateStarted`: the entered event it follows, and the item count.
    map_started: Vec<(i64, u64)>,
    /// Per Map state: iterations started, succeeded, failed or aborted.
    iterations: BTreeMap<String, Iterations>,
    /// Task invocations that returned.
    steps: u64,
    /// Task invocations that failed (then retried or caught).
    steps_failed: u64,
    /// The state entered last, by event id.
    state: Option<(i64, String)>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Iterations {
    started: u64,
    done: u64,
    failed: u64,
}

/// Shards of one Map state (summed over its runs).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Shards {
    total: u64,
    done: u64,
    failed: u64,
}

/// The Map states of an ASL definition that contain no Map, at any depth.
fn innermost_maps(definition: &Value) -> BTreeSet<String> {
    /// Adds the innermost Maps under `states`; true if `states` holds a Map.
    fn walk(states: &Value, found: &mut BTreeSet<String>) -> bool {
        let mut any = false;
        for (name, state) in states.as_object().into_iter().flatten() {
            let nested = |key: &str| state.get(key).and_then(|p| p.get("States"));
            match state["Type"].as_str() {
                Some("Map") => {
                    any = true;
                    let inner = nested("ItemProcessor").or_else(|| nested("Iterator"));
                    if !inner.is_some_and(|states| walk(states, found)) {
                        found.insert(name.clone());
                    }
                }
                Some("Parallel") => {
                    for branch in state["Branches"].as_array().into_iter().flatten() {
                        any |= walk(&branch["States"], found);
                    }
                }
                _ => {}
            }
        }
        any
    }
    let mut found = BTreeSet::new();
    walk(&definition["States"], &mut found);
    found
}

impl Tally {
    /// Reads the execution's state machine definition to tell Maps over
    /// shards from Maps over groups of them. Without it (no permission for
    /// DescribeStateMachineForExecution, say) every Map counts.
    async fn learn_maps(&mut self, client: &Client, arn: &str) {
        let described = client
            .describe_state_machine_for_execution()
            .execution_arn(arn)
            .send()
            .await;
        self.shard_maps = described
            .ok()
            .and_then(|d| serde_json::from_str::<Value>(d.definition()).ok())
            .map(|definition| innermost_maps(&definition));
    }

    /// Counts the events after `last_event`. History is asked newest first,
    /// so a long execution's poll reads one page, not all of its (up to
    /// 25,000) events again.
    async fn read_new(&mut self, client: &Client, arn: &str) -> Result<(), RunError> {
        let mut token = None;
        let mut newest = self.last_event;
        loop {
            let page = client
                .get_execution_history()
                .execution_arn(arn)
                .reverse_order(true)
                .max_results(1000)
                .include_execution_data(false)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|error| {
                    service_error(
                        error,
                        |e| {
                            matches!(
                                e,
                                GetExecutionHistoryError::ExecutionDoesNotExist(_)
                                    | GetExecutionHistoryError::InvalidArn(_)
                            )
                        },
                        format!("reading the history of {arn}"),
                    )
                })?;
            let events = page.events();
            let mut reached_counted = false;
            for event in events {
                if event.id() > self.last_event {
                    self.count(event);
                    newest = newest.max(event.id());
                } else {
                    reached_counted = true;
                }
            }
            // Older pages hold only counted events, unless the service
            // ignored the order asked for (then every page is read).
            let ascending = matches!(events, [first, .., last] if first.id() < last.id());
            let more = !reached_counted || ascending;
            match page.next_token() {
                Some(next) if more => token = Some(next.to_owned()),
                _ => break,
            }
        }
        self.last_event = newest;
        Ok(())
    }

    fn count(&mut self, event: &HistoryEvent) {
        use HistoryEventType as T;
        let iteration = |e: &HistoryEvent| {
            e.map_iteration_started_event_details()
                .or(e.map_iteration_succeeded_event_details())
                .or(e.map_iteration_failed_event_details())
                .or(e.map_iteration_aborted_event_details())
                .and_then(|d| d.name())
                .unwrap_or_default()
                .to_owned()
        };
        match event.r#type() {
            T::MapStateEntered => {
                if let Some(entered) = event.state_entered_event_details() {
                    self.map_entered
                        .insert(event.id(), entered.name().to_owned());
                }
            }
            T::MapStateStarted => {
                let length = event
                    .map_state_started_event_details()
                    .map_or(0, |d| d.length());
                self.map_started.push((
                    event.previous_event_id(),
                    u64::try_from(length).unwrap_or(0),
                ));
            }
            T::MapIterationStarted => {
                self.iterations.entry(iteration(event)).or_default().started += 1
            }
            T::MapIterationSucceeded => {
                self.iterations.entry(iteration(event)).or_default().done += 1
            }
            T::MapIterationFailed | T::MapIterationAborted => {
                self.iterations.entry(iteration(event)).or_default().failed += 1
            }
            T::LambdaFunctionSucceeded | T::TaskSucceeded => self.steps += 1,
            T::LambdaFunctionFailed
            | T::LambdaFunctionTimedOut
            | T::LambdaFunctionStartFailed
            | T::LambdaFunctionScheduleFailed
            | T::TaskFailed
            | T::TaskTimedOut
            | T::TaskStartFailed
            | T::TaskSubmitFailed => self.steps_failed += 1,
            _ => {}
        }
        if let Some(entered) = event.state_entered_event_details()
            && self.state.as_ref().is_none_or(|(id, _)| *id < event.id())
        {
            self.state = Some((event.id(), entered.name().to_owned()));
        }
    }

    /// Shards per Map over shards, in the order the Maps started.
    fn shards(&self) -> Vec<(String, Shards)> {
        let counted = |name: &str| self.shard_maps.as_ref().is_none_or(|m| m.contains(name));
        let mut maps: Vec<(String, Shards)> = Vec::new();
        fn entry<'a>(maps: &'a mut Vec<(String, Shards)>, name: &str) -> &'a mut Shards {
            let at = match maps.iter().position(|(n, _)| n == name) {
                Some(at) => at,
                None => {
                    maps.push((name.to_owned(), Shards::default()));
                    maps.len() - 1
                }
            };
            &mut maps[at].1
        }
        let mut started = self.map_started.clone();
        started.sort_unstable();
        for (entered, length) in started {
            let name = self.map_entered.get(&entered).map_or("", String::as_str);
            if counted(name) {
                entry(&mut maps, name).total += length;
            }
        }
        for (name, iterations) in &self.iterations {
            if counted(name) {
                let shards = entry(&mut maps, name);
                // Iterations can be seen before the item count is.
                shards.total = shards.total.max(iterations.started);
                shards.done = iterations.done;
                shards.failed = iterations.failed;
            }
        }
        maps
    }

    fn line(&self) -> String {
        let maps = self.shards();
        let mut line = match &maps[..] {
            [] => "no shards planned".to_owned(),
            [(_, shards)] => format!("shards {}/{} done", shards.done, shards.total),
            _ => {
                maps.iter()
                    .map(|(name, shards)| format!("{name} {}/{}", shards.done, shards.total))
                    .collect::<Vec<_>>()
                    .join(", ")
                    + " shards done"
            }
        };
        let failed: u64 = maps.iter().map(|(_, s)| s.failed).sum();
        if failed > 0 {
            line.push_str(&format!(" ({failed} failed)"));
        }
        line.push_str(&format!(", {} steps", self.steps));
        if self.steps_failed > 0 {
            line.push_str(&format!(" ({} failed attempts)", self.steps_failed));
        }
        line
    }

    fn json(&self) -> Value {
        let maps: serde_json::Map<String, Value> = self
            .shards()
            .into_iter()
            .map(|(name, s)| {
                let counts =
                    json!({"shards": s.total, "shardsDone": s.done, "shardsFailed": s.failed});
                (name, counts)
            })
            .collect();
        json!({
            "maps": maps,
            "steps": self.steps,
            "stepsFailed": self.steps_failed,
        })
    }
}

/// The progress view on stderr: a live line on a terminal, otherwise a
/// plain line whenever the progress changes (logs, CI, pipes).
struct ProgressView {
    bar: ProgressBar,
    last: std::cell::RefCell<String>,
}

impl ProgressView {
    fn new() -> Self {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed:>4} {wide_msg}")
                .expect("a valid template"),
        );
        if !bar.is_hidden() {
            bar.enable_steady_tick(Duration::from_millis(120));
        }
        ProgressView {
            bar,
            last: Default::default(),
        }
    }

    fn show(&self, status: &ExecutionStatus, tally: &Tally, running: bool) {
        let mut line = format!("{status}: {}", tally.line());
        if let (true, Some((_, state))) = (running, &tally.state) {
            line.push_str(&format!(", in {state}"));
        }
        if !running {
            self.bar.finish_and_clear();
        } else if self.bar.is_hidden() {
            let mut last = self.last.borrow_mut();
            if *last != line {
                eprintln!("{line}");
                *last = line;
            }
        } else {
            self.bar.set_message(line);
        }
    }
}

fn ended(described: &DescribeExecutionOutput) -> RunError {
    RunError::Ended {
        name: described
            .name()
            .unwrap_or(described.execution_arn())
            .to_owned(),
        status: described.status().to_string(),
        error: described.error().map(str::to_owned),
        cause: described.cause().map(readable_cause),
    }
}

/// A Lambda error's cause is its JSON error object; its message is what a
/// person needs (the JSON views keep the whole cause).
fn readable_cause(cause: &str) -> String {
    serde_json::from_str::<Value>(cause)
        .ok()
        .and_then(|v| v.get("errorMessage")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| cause.to_owned())
}

/// The execution's output as JSON (as text if it is not JSON).
fn output(described: &DescribeExecutionOutput) -> Value {
    match described.output() {
        Some(text) => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.into())),
        None => Value::Null,
    }
}

fn view(described: &DescribeExecutionOutput, tally: Option<&Tally>) -> Value {
    let mut view = json!({
        "executionArn": described.execution_arn(),
        "stateMachineArn": described.state_machine_arn(),
        "name": described.name(),
        "status": described.status().as_str(),
        "startDate": date(Some(described.start_date())),
        "stopDate": date(described.stop_date()),
        "output": output(described),
        "error": described.error(),
        "cause": described.cause(),
    });
    if let Some(tally) = tally {
        view["progress"] = tally.json();
    }
    view
}

fn print_status(described: &DescribeExecutionOutput) -> anyhow::Result<()> {
    println!("execution  {}", described.execution_arn());
    println!("status     {}", described.status());
    println!(
        "started    {}",
        date(Some(described.start_date())).unwrap_or_default()
    );
    if let Some(stopped) = date(described.stop_date()) {
        println!("stopped    {stopped} (after {})", elapsed(described));
    }
    if let Some(error) = described.error() {
        println!("error      {error}");
    }
    if let Some(cause) = described.cause() {
        println!("cause      {cause}");
    }
    if described.output().is_some() {
        println!("output");
        print_json(&output(described))?;
    }
    Ok(())
}

fn date(date: Option<&DateTime>) -> Option<String> {
    date.and_then(|d| d.fmt(DateTimeFormat::DateTime).ok())
}

/// Run time so far, or until the stop date.
fn elapsed(described: &DescribeExecutionOutput) -> String {
    let millis = |d: &DateTime| d.to_millis().unwrap_or(0);
    let end = described
        .stop_date()
        .map(millis)
        .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
    let seconds = (end - millis(described.start_date())).max(0) as f64 / 1000.0;
    format!("{seconds:.1}s")
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("formatting JSON")?;
    println!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64, kind: HistoryEventType) -> HistoryEvent {
        HistoryEvent::builder()
            .id(id)
            .r#type(kind)
            .timestamp(DateTime::from_secs(0))
            .build()
            .unwrap()
    }

    #[test]
    fn detects_the_request_kind_by_its_fields() {
        assert_eq!(detect(br#"{"source": {}, "target": {}}"#), Kind::Replay);
        assert_eq!(detect(br#"{"stream": "s", "target": {}}"#), Kind::Scrape);
        assert_eq!(detect(b"not json"), Kind::Scrape);
    }

    #[test]
    fn names_default_to_valid_unique_run_ids() {
        let request = br#"{"stream": "s", "start": {"type": "TRIM_HORIZON"},
                           "stop": {"type": "LATEST"}, "output": {"bucket": "b"}}"#;
        let (a, b) = (
            check_request(request, None, None).unwrap(),
            check_request(request, None, None).unwrap(),
        );
        assert!(a.name.starts_with("rewind-"), "{}", a.name);
        assert_ne!(a.name, b.name);
        assert_eq!(a.kind, Kind::Scrape);
        let error = check_request(request, None, Some("no spaces")).unwrap_err();
        assert!(
            format!("{error:#}").contains("--name \"no spaces\" is not a valid run id"),
            "{error:#}"
        );
        let with_run_id = br#"{"stream": "s", "start": {"type": "TRIM_HORIZON"},
              "stop": {"type": "LATEST"}, "output": {"bucket": "b"}, "runId": "incident-7"}"#;
        assert_eq!(
            check_request(with_run_id, None, None).unwrap().name,
            "incident-7"
        );
        assert_eq!(
            check_request(with_run_id, None, Some("other"))
                .unwrap()
                .name,
            "other"
        );
    }

    #[test]
    fn arns_are_checked_for_their_kind() {
        let machine = "arn:aws:states:eu-west-1:123456789012:stateMachine:scrape";
        assert_eq!(
            arn_region(machine, "stateMachine", "--state-machine").unwrap(),
            "eu-west-1"
        );
        let error = arn_region(machine, "execution", "EXECUTION_ARN").unwrap_err();
        assert!(matches!(error, RunError::BadInput(_)));
        assert!(
            error
                .to_string()
                .contains("not a Step Functions execution ARN")
        );
        assert!(arn_region("scrape", "stateMachine", "--state-machine").is_err());
    }

    /// A history of the replay machine's shape: a Map over shards (scrape
    /// first), then a Map over lineage groups holding a Map over shards.
    fn nested_history() -> Vec<HistoryEvent> {
        use HistoryEventType as T;
        use aws_sdk_sfn::types::{
            MapIterationEventDetails, MapStateStartedEventDetails, StateEnteredEventDetails,
        };
        let entered = |id, name: &str| {
            HistoryEvent::builder()
                .id(id)
                .r#type(T::MapStateEntered)
                .timestamp(DateTime::from_secs(0))
                .state_entered_event_details(
                    StateEnteredEventDetails::builder()
                        .name(name)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap()
        };
        let started = |id, previous, length| {
            HistoryEvent::builder()
                .id(id)
                .previous_event_id(previous)
                .r#type(T::MapStateStarted)
                .timestamp(DateTime::from_secs(0))
                .map_state_started_event_details(
                    MapStateStartedEventDetails::builder()
                        .length(length)
                        .build(),
                )
                .build()
                .unwrap()
        };
        let iteration = |id, kind: T, map: &str| {
            let details = MapIterationEventDetails::builder().name(map).build();
            let builder = HistoryEvent::builder()
                .id(id)
                .r#type(kind.clone())
                .timestamp(DateTime::from_secs(0));
            match kind {
                T::MapIterationStarted => builder.map_iteration_started_event_details(details),
                T::MapIterationSucceeded => builder.map_iteration_succeeded_event_details(details),
                _ => builder.map_iteration_failed_event_details(details),
            }
            .build()
            .unwrap()
        };
        vec![
            event(1, T::LambdaFunctionSucceeded),
            entered(2, "ScrapeShards"),
            started(3, 2, 2),
            iteration(4, T::MapIterationStarted, "ScrapeShards"),
            iteration(5, T::MapIterationStarted, "ScrapeShards"),
            event(6, T::LambdaFunctionFailed),
            iteration(7, T::MapIterationSucceeded, "ScrapeShards"),
            iteration(8, T::MapIterationSucceeded, "ScrapeShards"),
            entered(9, "ReplayGroups"),
            started(10, 9, 1),
            iteration(11, T::MapIterationStarted, "ReplayGroups"),
            entered(12, "ReplayShards"),
            started(13, 12, 3),
            iteration(14, T::MapIterationStarted, "ReplayShards"),
            event(15, T::LambdaFunctionSucceeded),
            iteration(16, T::MapIterationSucceeded, "ReplayShards"),
            iteration(17, T::MapIterationStarted, "ReplayShards"),
            iteration(18, T::MapIterationFailed, "ReplayShards"),
        ]
    }

    #[test]
    fn tally_counts_shards_of_the_innermost_maps_whatever_the_order() {
        let definition = json!({"States": {
            "ScrapeShards": {"Type": "Map", "ItemProcessor": {"States": {"Step": {"Type": "Task"}}}},
            "ReplayGroups": {"Type": "Map", "ItemProcessor": {"States": {
                "ReplayShards": {"Type": "Map", "Iterator": {"States": {"Step": {"Type": "Task"}}}}
            }}},
            "Summary": {"Type": "Task"},
        }});
        let maps = innermost_maps(&definition);
        assert_eq!(
            maps,
            BTreeSet::from(["ReplayShards".into(), "ScrapeShards".into()])
        );

        // Newest first, as asked, and in two reads.
        let mut history = nested_history();
        history.reverse();
        let mut tally = Tally {
            shard_maps: Some(maps),
            ..Tally::default()
        };
        for event in history.iter().skip(5).chain(&history[..5]) {
            tally.count(event);
        }
        assert_eq!(
            tally.line(),
            "ScrapeShards 2/2, ReplayShards 1/3 shards done (1 failed), 2 steps (1 failed attempts)"
        );
        assert_eq!(tally.json()["maps"]["ReplayShards"]["shardsFailed"], 1);
        assert_eq!(tally.json()["maps"]["ScrapeShards"]["shardsDone"], 2);

        // Without the definition every Map counts.
        let mut tally = Tally::default();
        for event in &nested_history()[..8] {
            tally.count(event);
        }
        assert_eq!(tally.line(), "shards 2/2 done, 1 steps (1 failed attempts)");
    }

    #[test]
    fn lambda_causes_read_as_their_message() {
        assert_eq!(
            readable_cause(r#"{"errorType":"InvalidRequest","errorMessage":"shards: no"}"#),
            "shards: no"
        );
        assert_eq!(readable_cause("States.Timeout"), "States.Timeout");
    }

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
