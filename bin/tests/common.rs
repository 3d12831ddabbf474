//! What the CLI tests share: running `rewind` against an endpoint, the test
//! run's shared local stack, and scratch folders.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The test run's shared local stack; this binary serves it with `rewind
/// local serve`, or joins the one the integration tests started.
pub fn stack() -> &'static rewind_tests::Stack {
    rewind_tests::stack(rewind_tests::Daemon {
        program: env!("CARGO_BIN_EXE_rewind"),
        args: &["local", "serve"],
    })
}

/// Runs `rewind ARGS` with the environment as it is.
pub fn bare(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args(args)
        .output()
        .expect("running rewind")
}

/// Runs `rewind ARGS` against `endpoint` with the local stack's dummy
/// credentials (and none of the caller's profile).
pub fn rewind(endpoint: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args(args)
        .args(["--endpoint-url", endpoint, "--region", "us-east-1"])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("running rewind")
}

/// The batches the `target` fixture function accepted from `stream`, each
/// as the records it kept (one line of its file a batch).
pub fn accepted_batches(stack: &rewind_tests::Stack, stream: &str) -> Vec<Vec<serde_json::Value>> {
    rewind_tests::target_batches(&stack.layout, stream)
        .unwrap()
        .into_iter()
        .map(|batch| {
            batch
                .records
                .into_iter()
                .map(|(_, _, record)| record)
                .collect()
        })
        .collect()
}

/// A folder of its own per test, removed when the test ends.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// `name` is the test's own: tests of one process (`cargo test`) run
    /// side by side.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("rewind-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self, file: &str) -> String {
        self.0.join(file).display().to_string()
    }

    /// Writes `value` as JSON into `file`; returns its path.
    pub fn write(&self, file: &str, value: &serde_json::Value) -> String {
        let path = self.0.join(file);
        std::fs::write(&path, value.to_string()).unwrap();
        path.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
