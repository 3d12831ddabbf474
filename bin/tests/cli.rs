//! The `rewind` binary, run as a user runs it (one test binary; each module
//! a command). Tests that need a stack use the test run's shared one
//! (`common::stack`); `local up | down` and the demo start the stack they
//! test.

mod archive;
mod chunks;
mod common;
mod demo;
mod install;
mod local;
mod logs;
mod mapping;
mod replay;
mod run;
mod scrape;
