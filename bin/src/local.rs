//! `rewind local …`: the local stack on the command line. `up` starts it in
//! the background (this same binary, `local serve`), `down` stops it, and
//! `status` says where it is. `mapping` runs an event source mapping, which
//! no emulator has.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use rewind_local::daemon::{self, State};
use rewind_local::stack::LOCAL_FUNCTION_CONCURRENCY;
use rewind_local::{KinesisBackend, Layout, Options};

mod mapping;

#[derive(Subcommand)]
pub enum LocalCommand {
    /// Start the stack in the background (installing and building what is
    /// missing) and print its endpoint and environment exports.
    Up(UpArgs),
    /// Stop the stack and every process it started.
    Down,
    /// Print the running stack's endpoint, or fail if none runs.
    Status,
    /// Install the pinned emulators into .tools/local without starting them.
    Install,
    /// Run a Kinesis event source mapping: poll every shard of a stream and
    /// invoke a function with the mapping's batches, retries and
    /// checkpoints, until Ctrl-C (or --idle-exit); then print each shard's
    /// counters.
    Mapping(Box<mapping::MappingArgs>),
    /// Run the stack in the foreground until SIGTERM or Ctrl-C.
    #[command(hide = true)]
    Serve(ServeArgs),
}

#[derive(clap::Args, Clone)]
pub struct UpArgs {
    /// Which emulator serves Kinesis: kinesis-mock (faithful) or moto (fast,
    /// for volume).
    #[arg(long, value_enum, default_value_t = Kinesis::KinesisMock)]
    kinesis: Kinesis,
    /// Don't enforce Kinesis per-shard limits at the endpoint.
    #[arg(long)]
    no_shard_limits: bool,
    /// How many invocations of one function run at once, each in an
    /// instance of its own (1 to 100; more wait for a free one). A replay of
    /// 4 shards at ParallelizationFactor 10 needs 40.
    #[arg(long, value_name = "N", default_value_t = LOCAL_FUNCTION_CONCURRENCY.get() as u16,
          value_parser = clap::value_parser!(u16).range(1..=MAX_FUNCTION_CONCURRENCY))]
    function_concurrency: u16,
}

/// The largest `--function-concurrency`: each instance is a process of its
/// own (about 10 MB), so this keeps a laptop's process table and memory in
/// bounds while covering 10 shards at ParallelizationFactor 10.
const MAX_FUNCTION_CONCURRENCY: i64 = 100;

/// `local serve`: what `up` starts, and the shared stack of a test run
/// (`rewind_tests::stack`), which publishes itself elsewhere and serves only
/// while test processes hold its lease.
#[derive(clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    up: UpArgs,
    /// Publish the stack's state here instead of `.local/stack.json`, so a
    /// test run's stack and `local up`'s never meet.
    #[arg(long, hide = true, requires = "lease")]
    state_file: Option<PathBuf>,
    /// Serve until no process has held a shared lock on this file for a
    /// moment (instead of until SIGTERM only).
    #[arg(long, hide = true, requires = "state_file")]
    lease: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Kinesis {
    KinesisMock,
    Moto,
}

impl UpArgs {
    fn options(&self) -> Options {
        Options {
            kinesis: match self.kinesis {
                Kinesis::KinesisMock => KinesisBackend::KinesisMock,
                Kinesis::Moto => KinesisBackend::Moto,
            },
            shard_limits: !self.no_shard_limits,
            function_concurrency: NonZeroUsize::new(self.function_concurrency.into())
                .expect("clap keeps --function-concurrency at 1 or more"),
        }
    }

    fn to_args(&self) -> Vec<String> {
        let kinesis = match self.kinesis {
            Kinesis::KinesisMock => "kinesis-mock",
            Kinesis::Moto => "moto",
        };
        let mut args: Vec<String> = vec!["local".into(), "serve".into()];
        args.extend(["--kinesis".into(), kinesis.into()]);
        if self.no_shard_limits {
            args.push("--no-shard-limits".into());
        }
        let concurrency = self.function_concurrency.to_string();
        args.extend(["--function-concurrency".into(), concurrency]);
        args
    }
}

pub fn run(command: LocalCommand) -> anyhow::Result<()> {
    // A mapping needs only an endpoint, not this checkout's stack layout.
    if let LocalCommand::Mapping(args) = command {
        return mapping::run(*args);
    }
    let layout = Layout::current()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let state_path = layout.state_file();
        match command {
            LocalCommand::Up(args) => {
                if let Ok(state) = State::read(&state_path)
                    && state.healthy().await
                {
                    eprintln!("already running (pid {})", state.pid);
                    print_state(&state);
                    return Ok(());
                }
                std::fs::create_dir_all(layout.logs())?;
                let exe = std::env::current_exe()?;
                let log = layout.logs().join("stack.log");
                eprintln!(
                    "starting (first run installs tools and builds the functions; log: {})",
                    log.display()
                );
                let serve = args.to_args();
                let serve: Vec<&str> = serve.iter().map(String::as_str).collect();
                let state = daemon::spawn(&exe, &serve, &state_path, &log).await?;
                print_state(&state);
                Ok(())
            }
            LocalCommand::Serve(args) => {
                std::fs::create_dir_all(layout.run_dir())?;
                if args.lease.is_some() {
                    // A test run's stack is debugged from its log alone:
                    // unreachable backends and failed event invokes go there.
                    // Unless RUST_LOG chose the CLI's (`init_logs`).
                    let _ = tracing_subscriber::fmt().with_env_filter("info").try_init();
                }
                let state_path = args.state_file.unwrap_or(state_path);
                let lease = args.lease.as_deref();
                daemon::serve(&layout, args.up.options(), &state_path, lease).await?;
                Ok(())
            }
            LocalCommand::Down => {
                let state = daemon::down(&state_path).await?;
                eprintln!("stopped (pid {}, {})", state.pid, state.endpoint);
                Ok(())
            }
            LocalCommand::Status => {
                let state = State::read(&state_path)?;
                anyhow::ensure!(
                    state.healthy().await,
                    "the stack of pid {} does not answer at {}",
                    state.pid,
                    state.endpoint
                );
                print_state(&state);
                Ok(())
            }
            LocalCommand::Mapping(_) => unreachable!("handled before the stack's layout"),
            LocalCommand::Install => {
                let tools = rewind_local::install::ensure(&layout).await?;
                eprintln!(
                    "installed: {}, {}, {}",
                    tools.moto_server.display(),
                    tools.cargo_lambda.display(),
                    tools.kinesis_main.display()
                );
                Ok(())
            }
        }
    })
}

fn print_state(state: &State) {
    eprintln!(
        "endpoint {} (pid {}, logs in {})",
        state.endpoint,
        state.pid,
        state.logs.display()
    );
    print!("{}", state.exports());
}
