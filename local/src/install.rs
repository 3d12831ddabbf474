//! Installs the emulators on first use, pinned, into `.tools/local/`:
//! moto server and cargo-lambda into a Python venv (pins in
//! `local/requirements.txt`), kinesis-mock from npm `kinesis-local`, and a
//! copy of its `main.js` that listens on loopback only.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;
use tracing::info;

use crate::{Error, Layout};

/// The Python pins, embedded so the binary installs exactly what it was built
/// with.
const REQUIREMENTS: &str = include_str!("../requirements.txt");
/// npm's `kinesis-local` (kinesis-mock compiled for Node).
pub const KINESIS_LOCAL_VERSION: &str = "0.6.2";
/// kinesis-mock hard-codes this listen host; every server here binds loopback.
const ANY_HOST: &str = "\"0.0.0.0\"";
const LOOPBACK_HOST: &str = "\"127.0.0.1\"";

/// Paths of the installed tools.
#[derive(Clone, Debug)]
pub struct Tools {
    pub moto_server: PathBuf,
    pub cargo_lambda: PathBuf,
    /// kinesis-local's package folder (holds `server.json`, the TLS cert).
    pub kinesis_package: PathBuf,
    /// The loopback copy of kinesis-local's `main.js`.
    pub kinesis_main: PathBuf,
}

/// Installs what is missing or out of date and returns where the tools are.
/// Quick when everything is in place (two stamp comparisons).
pub async fn ensure(layout: &Layout) -> Result<Tools, Error> {
    std::fs::create_dir_all(layout.logs()).map_err(Error::io("creating", layout.logs()))?;
    ensure_venv(layout).await?;
    let (kinesis_package, kinesis_main) = ensure_kinesis_local(layout).await?;
    let bin = layout.venv().join("bin");
    Ok(Tools {
        moto_server: bin.join("moto_server"),
        cargo_lambda: bin.join("cargo-lambda"),
        kinesis_package,
        kinesis_main,
    })
}

async fn ensure_venv(layout: &Layout) -> Result<(), Error> {
    let venv = layout.venv();
    let stamp = venv.join(".requirements");
    let python = python311().await?;
    let want = format!("{python}\n{REQUIREMENTS}");
    if std::fs::read_to_string(&stamp).is_ok_and(|have| have == want) {
        return Ok(());
    }
    info!(venv = %venv.display(), "installing moto server and cargo-lambda (pinned)");
    let log = layout.logs().join("install-python.log");
    if venv.exists() {
        // No partial upgrades: a venv built from other pins is rebuilt whole.
        std::fs::remove_dir_all(&venv).map_err(Error::io("removing the old venv", &venv))?;
    }
    run(Command::new(&python).arg("-m").arg("venv").arg(&venv), &log).await?;
    let requirements = layout.tools().join("requirements.txt");
    std::fs::write(&requirements, REQUIREMENTS).map_err(Error::io("writing", &requirements))?;
    // Wheels are shared with bin/test's cache outside the clone, so a fresh
    // clone on the same machine installs without the network.
    let wheels = wheel_cache();
    std::fs::create_dir_all(&wheels).map_err(Error::io("creating", &wheels))?;
    let pip = || {
        let mut command = Command::new(venv.join("bin").join("python"));
        command.args(["-m", "pip", "--no-input", "--disable-pip-version-check"]);
        command
    };
    // `pip ARGS WHEELS -r REQUIREMENTS`: ARGS ends with the wheel folder's
    // flag.
    let with_wheels = |args: [&str; 4]| {
        let mut command = pip();
        command.args(args).arg(&wheels).arg("-r").arg(&requirements);
        command
    };
    let install = ["install", "--quiet", "--no-index", "--find-links"];
    let offline = run(&mut with_wheels(install), &log).await;
    if offline.is_err() {
        let download = ["download", "--quiet", "--only-binary=:all:", "--dest"];
        run(&mut with_wheels(download), &log).await?;
        run(&mut with_wheels(install), &log).await?;
    }
    // Written last: an interrupted install leaves no stamp and is redone.
    std::fs::write(&stamp, want).map_err(Error::io("writing", &stamp))?;
    Ok(())
}

async fn ensure_kinesis_local(layout: &Layout) -> Result<(PathBuf, PathBuf), Error> {
    let node = layout.node();
    let package = node.join("node_modules").join("kinesis-local");
    let patched = package.join("main-loopback.js");
    let manifest = package.join("package.json");
    let installed = std::fs::read_to_string(&manifest)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|json| json["version"].as_str().map(str::to_owned));
    if installed.as_deref() != Some(KINESIS_LOCAL_VERSION) {
        info!(folder = %node.display(), version = KINESIS_LOCAL_VERSION, "installing kinesis-local");
        which(
            "npm",
            "install Node.js and npm (apt-get install nodejs npm)",
        )
        .await?;
        std::fs::create_dir_all(&node).map_err(Error::io("creating", &node))?;
        let log = layout.logs().join("install-node.log");
        run(
            Command::new("npm")
                .args([
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--no-save",
                    "--prefix",
                ])
                .arg(&node)
                .arg(format!("kinesis-local@{KINESIS_LOCAL_VERSION}")),
            &log,
        )
        .await?;
        let _ = std::fs::remove_file(&patched);
    }
    if !patched.exists() {
        patch_main(&package.join("main.js"), &patched)?;
    }
    Ok((package, patched))
}

/// Writes a copy of `main.js` whose one listen-host literal is loopback.
fn patch_main(main: &Path, patched: &Path) -> Result<(), Error> {
    let text = std::fs::read_to_string(main).map_err(Error::io("reading", main))?;
    let found = text.matches(ANY_HOST).count();
    if found != 1 {
        return Err(Error::PatchKinesisMock { found });
    }
    let tmp = patched.with_extension("tmp");
    std::fs::write(&tmp, text.replace(ANY_HOST, LOOPBACK_HOST))
        .map_err(Error::io("writing", &tmp))?;
    std::fs::rename(&tmp, patched).map_err(Error::io("writing", patched))
}

fn wheel_cache() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("kinesis-rewind").join("wheels")
}

/// The pins were checked with CPython 3.11, as bin/test's tools are.
async fn python311() -> Result<String, Error> {
    for candidate in ["python3.11", "python3"] {
        let output = Command::new(candidate)
            .args(["-c", "import sys; print(sys.version_info[:2] == (3, 11))"])
            .stderr(Stdio::null())
            .output()
            .await;
        if let Ok(output) = output
            && String::from_utf8_lossy(&output.stdout).trim() == "True"
        {
            return Ok(candidate.to_owned());
        }
    }
    Err(Error::MissingTool {
        tool: "Python 3.11",
        hint: "install python3.11 (with its venv module)",
    })
}

async fn which(tool: &'static str, hint: &'static str) -> Result<(), Error> {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|status| status.success());
    if found {
        Ok(())
    } else {
        Err(Error::MissingTool { tool, hint })
    }
}

/// Runs a set-up command with its output appended to `log`.
pub(crate) async fn run(command: &mut Command, log: &Path) -> Result<(), Error> {
    let rendered = format!("{:?}", command.as_std());
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(Error::io("opening the log", log))?;
    let err = out.try_clone().map_err(Error::io("opening the log", log))?;
    let status = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .await
        .map_err(|source| Error::Spawn {
            command: rendered.clone(),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::CommandFailed {
            command: rendered,
            status,
            log: log.to_path_buf(),
        })
    }
}
