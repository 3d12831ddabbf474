//! The workspace's Lambda functions: every binary of a package that depends
//! on `lambda_runtime`, built before `cargo lambda watch` serves them so that
//! a first invoke never waits on a compile.

use std::collections::BTreeSet;
use std::process::Stdio;

use serde::Deserialize;
use tokio::process::Command;
use tracing::info;

use crate::install::run;
use crate::{Error, Layout};

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<Package>,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    dependencies: Vec<Dependency>,
    targets: Vec<Target>,
}

#[derive(Deserialize)]
struct Dependency {
    name: String,
}

#[derive(Deserialize)]
struct Target {
    name: String,
    kind: Vec<String>,
}

/// A function served locally: its name is its binary's name.
#[derive(Clone, Debug)]
pub struct Function {
    pub package: String,
    pub name: String,
}

/// The workspace's functions, from `cargo metadata`.
pub async fn discover(layout: &Layout) -> Result<Vec<Function>, Error> {
    let output = Command::new("cargo")
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(&layout.root)
        .stderr(Stdio::inherit())
        .output()
        .await
        .map_err(|source| Error::Spawn {
            command: "cargo metadata".to_owned(),
            source,
        })?;
    let metadata: Metadata = serde_json::from_slice(&output.stdout).map_err(Error::Metadata)?;
    Ok(functions_of(metadata))
}

fn functions_of(metadata: Metadata) -> Vec<Function> {
    let mut functions = Vec::new();
    for package in metadata.packages {
        if !package
            .dependencies
            .iter()
            .any(|d| d.name == "lambda_runtime")
        {
            continue;
        }
        for target in &package.targets {
            if target.kind.iter().any(|kind| kind == "bin") {
                functions.push(Function {
                    package: package.name.clone(),
                    name: target.name.clone(),
                });
            }
        }
    }
    functions
}

/// Builds the functions exactly as `cargo lambda watch` will run them:
/// `cargo run --bin NAME` at the workspace root, dev profile, no `-p`, so
/// features are unified across the whole workspace. Building per package
/// would resolve features differently and the first invoke would recompile.
pub async fn build(layout: &Layout, functions: &[Function]) -> Result<(), Error> {
    let names: BTreeSet<&str> = functions.iter().map(|f| f.name.as_str()).collect();
    if names.is_empty() {
        return Ok(());
    }
    info!(?names, "building the functions");
    let mut command = Command::new("cargo");
    command.arg("build").current_dir(&layout.root);
    for name in names {
        command.args(["--bin", name]);
    }
    run(&mut command, &layout.logs().join("build-functions.log")).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_are_bins_of_lambda_packages() {
        let metadata: Metadata = serde_json::from_value(serde_json::json!({"packages": [
            {"name": "archiver", "dependencies": [{"name": "lambda_runtime"}],
             "targets": [{"name": "archiver", "kind": ["bin"]}]},
            {"name": "rewind", "dependencies": [{"name": "clap"}],
             "targets": [{"name": "rewind", "kind": ["bin"]}]},
            {"name": "rewind-engine", "dependencies": [{"name": "lambda_runtime"}],
             "targets": [{"name": "rewind_engine", "kind": ["lib"]}]},
        ]}))
        .unwrap();
        let names: Vec<String> = functions_of(metadata).into_iter().map(|f| f.name).collect();
        assert_eq!(names, ["archiver"]);
    }
}
