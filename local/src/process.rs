//! The stack's child processes: each in its own process group, so that
//! stopping it also stops what it started (cargo lambda's function
//! processes, moto's workers), its output in a log file, and killed on drop
//! so that a panicking test leaves no orphan.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group, test_kill_process_group};
use tokio::process::{Child, Command};
use tracing::{debug, warn};

use crate::Error;

/// One running server of the stack.
#[derive(Debug)]
pub struct Service {
    pub name: &'static str,
    pub port: u16,
    pub log: PathBuf,
    child: Child,
    group: Option<Pid>,
}

impl Service {
    /// Starts `command` in a new process group with stdout and stderr in `log`.
    pub fn spawn(
        name: &'static str,
        port: u16,
        mut command: Command,
        log: PathBuf,
    ) -> Result<Self, Error> {
        let out = std::fs::File::create(&log).map_err(Error::io("creating the log", &log))?;
        let err = out
            .try_clone()
            .map_err(Error::io("creating the log", &log))?;
        let rendered = format!("{:?}", command.as_std());
        let child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| Error::Spawn {
                command: rendered,
                source,
            })?;
        let group = child.id().and_then(|id| Pid::from_raw(id as i32));
        debug!(service = name, port, pid = ?child.id(), "started");
        Ok(Service {
            name,
            port,
            log,
            child,
            group,
        })
    }

    /// The process id of the group leader (and so the group id).
    pub fn pid(&self) -> Option<u32> {
        self.group.map(|pid| pid.as_raw_nonzero().get() as u32)
    }

    /// Waits until `addr` accepts connections, failing early if the process
    /// exits first.
    pub async fn wait_listening(&mut self, addr: SocketAddr, limit: Duration) -> Result<(), Error> {
        let started = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                debug!(
                    service = self.name,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "ready"
                );
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::Exited {
                    service: self.name,
                    status,
                    log: self.log.clone(),
                });
            }
            if started.elapsed() > limit {
                return Err(Error::NotReady {
                    service: self.name,
                    seconds: limit.as_secs(),
                    log: self.log.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks the whole group to stop (SIGTERM), then kills what is left after
    /// `grace`, and returns once no process of the group remains.
    pub async fn stop(mut self, grace: Duration) {
        let Some(group) = self.group.take() else {
            return;
        };
        let _ = kill_process_group(group, Signal::TERM);
        let deadline = Instant::now() + grace;
        while group_alive(group) && Instant::now() < deadline {
            let _ = self.child.try_wait();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if group_alive(group) {
            warn!(
                service = self.name,
                "did not stop on SIGTERM; killing its process group"
            );
            let _ = kill_process_group(group, Signal::KILL);
        }
        let _ = self.child.wait().await;
        while group_alive(group) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(group) = self.group.take() {
            let _ = kill_process_group(group, Signal::KILL);
        }
    }
}

/// Whether any process of the group is left (zombies of the leader included
/// until it is reaped, which `stop` does).
fn group_alive(group: Pid) -> bool {
    test_kill_process_group(group).is_ok()
}

/// A port that was free a moment ago on loopback, for a child to bind.
pub fn free_port() -> Result<u16, Error> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(Error::io("finding a free port", "127.0.0.1:0"))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(Error::io("finding a free port", "127.0.0.1:0"))
}
