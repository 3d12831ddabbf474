//! Integration tests against the local stack (one test binary; each module a
//! part of the system).

mod archive_replay;
mod archive_reshard;
mod archiver;
mod bad_input;
mod capacity;
mod fault_storm;
mod lambda;
mod lifecycle;
mod limits;
mod mapping;
mod replay;
mod run_ids;
mod scrape;
mod sql;
mod stepfunctions;
mod tumbling;

/// The run's shared local stack.
fn stack() -> &'static rewind_tests::Stack {
    rewind_tests::stack(rewind_tests::Daemon {
        program: env!("CARGO_BIN_EXE_local-stack"),
        args: &[],
    })
}
