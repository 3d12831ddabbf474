//! `rewind-local`: AWS on one machine, for the CLI, the demo and the
//! integration tests. Real emulators behind one loopback endpoint:
//!
//! - [`install`]: moto server, cargo-lambda and kinesis-mock, pinned, into
//!   `.tools/local/` on first use;
//! - [`functions`]: the workspace's Lambda functions, built before served;
//! - [`process`]: child processes in their own process groups, logs in
//!   `.local/logs/`, nothing left behind;
//! - [`proxy`]: the endpoint — routing, Lambda's invoke semantics, Kinesis
//!   shard limits, fault injection;
//! - [`stack`]: [`LocalStack`] starts and stops all of it (functions serve
//!   concurrent invocations concurrently, up to a limit); [`Admin`] drives
//!   the endpoint's faults and limits;
//! - [`daemon`]: the stack as a background process (`rewind local up`);
//! - [`sdk`]: SDK clients of a stack's endpoint;
//! - [`statemachine`]: state machine definitions from `template.yaml`.

pub mod daemon;
mod error;
pub mod functions;
pub mod install;
mod layout;
pub mod process;
pub mod proxy;
pub mod sdk;
pub mod stack;
pub mod statemachine;

pub use error::Error;
pub use layout::Layout;
pub use proxy::faults::{Fault, FaultKind, Frequency};
pub use stack::{Admin, KinesisBackend, LocalStack, Options};
