//! What the Kinesis Rewind functions share beside the engine: settings read
//! from the environment ([`settings`]) and the step handler's deadline and
//! error diagnostic ([`step`]).
//!
//! A crate of its own rather than a feature of the engine: the engine stays
//! free of `lambda_runtime`, which the CLI and the tests never need, and a
//! feature would be switched on for every crate of a workspace build anyway.

pub mod settings;
pub mod step;
