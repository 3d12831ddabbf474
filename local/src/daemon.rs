//! The stack as a background process: `rewind local up` starts one that
//! serves until `rewind local down` (SIGTERM) or, for test runs, until no
//! process holds its lease any more. A state file says where it is.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rustix::fs::{FlockOperation, flock};
use rustix::process::{Pid, Signal, kill_process, test_kill_process};
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

use crate::{Error, Layout, LocalStack, Options};

/// What a running stack publishes about itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    pub pid: u32,
    pub endpoint: String,
    pub logs: PathBuf,
}

impl State {
    pub fn read(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|_| Error::NotRunning {
            state: path.to_path_buf(),
        })?;
        serde_json::from_str(&text).map_err(|source| Error::State {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Whether the process is alive and its endpoint answers.
    pub async fn healthy(&self) -> bool {
        process_alive(self.pid) && crate::Admin::new(&self.endpoint).health().await.is_ok()
    }

    /// Environment exports for a shell or an SDK.
    pub fn exports(&self) -> String {
        format!(
            "export AWS_ENDPOINT_URL={endpoint}\nexport AWS_REGION=us-east-1\nexport AWS_ACCESS_KEY_ID=test\nexport AWS_SECRET_ACCESS_KEY=test\n",
            endpoint = self.endpoint
        )
    }
}

/// Runs the stack in this process until SIGTERM / SIGINT, or, with a lease
/// file, until no other process has held a shared lock on it for a moment.
pub async fn serve(
    layout: &Layout,
    options: Options,
    state_path: &Path,
    lease: Option<&Path>,
) -> Result<(), Error> {
    let stack = LocalStack::start(layout, options).await?;
    let state = State {
        pid: std::process::id(),
        endpoint: stack.endpoint_url(),
        logs: layout.logs(),
    };
    let text = serde_json::to_string_pretty(&state).map_err(|source| Error::State {
        path: state_path.to_path_buf(),
        source,
    })?;
    let tmp = state_path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(Error::io("writing", &tmp))?;
    std::fs::rename(&tmp, state_path).map_err(Error::io("writing", state_path))?;
    info!(endpoint = %state.endpoint, "serving");

    let mut term =
        signal(SignalKind::terminate()).map_err(Error::io("listening for SIGTERM", "signal"))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(Error::io("listening for SIGINT", "signal"))?;
    // Held (exclusively) from the moment the stack decides to stop until the
    // process exits, so a test arriving meanwhile waits and starts a new one.
    let _held = tokio::select! {
        _ = term.recv() => None,
        _ = interrupt.recv() => None,
        held = idle(lease) => held,
    };
    let _ = std::fs::remove_file(state_path);
    stack.stop().await;
    Ok(())
}

/// Returns (holding the lease exclusively) once nobody has held it shared for
/// two seconds; never returns without a lease.
async fn idle(lease: Option<&Path>) -> Option<std::fs::File> {
    let Some(path) = lease else {
        return std::future::pending().await;
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .ok()?;
    let mut idle_since: Option<Instant> = None;
    loop {
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok() {
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_secs(2) {
                return Some(file);
            }
            let _ = flock(&file, FlockOperation::Unlock);
        } else {
            idle_since = None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts `program args…` as a detached stack process (own process group,
/// output in `log`) and waits for its state file.
pub async fn spawn(
    program: &Path,
    args: &[&str],
    state_path: &Path,
    log: &Path,
) -> Result<State, Error> {
    let _ = std::fs::remove_file(state_path);
    let out = std::fs::File::create(log).map_err(Error::io("creating the log", log))?;
    let err = out
        .try_clone()
        .map_err(Error::io("creating the log", log))?;
    let mut command = std::process::Command::new(program);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|source| Error::Spawn {
            command: program.display().to_string(),
            source,
        })?;
    let started = Instant::now();
    loop {
        if let Ok(state) = State::read(state_path) {
            return Ok(state);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Error::Exited {
                service: "local stack",
                status,
                log: log.to_path_buf(),
            });
        }
        if started.elapsed() > Duration::from_secs(900) {
            return Err(Error::NotReady {
                service: "local stack",
                seconds: 900,
                log: log.to_path_buf(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops the stack the state file names and waits until its process is gone.
pub async fn down(state_path: &Path) -> Result<State, Error> {
    let state = State::read(state_path)?;
    if let Some(pid) = Pid::from_raw(state.pid as i32) {
        let _ = kill_process(pid, Signal::TERM);
        let started = Instant::now();
        while process_alive(state.pid) && started.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if process_alive(state.pid) {
            let _ = kill_process(pid, Signal::KILL);
        }
    }
    let _ = std::fs::remove_file(state_path);
    Ok(state)
}

fn process_alive(pid: u32) -> bool {
    Pid::from_raw(pid as i32).is_some_and(|pid| test_kill_process(pid).is_ok())
}
