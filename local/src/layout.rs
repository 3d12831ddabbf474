//! Where the local stack keeps things, all inside the workspace and all
//! gitignored: pinned tools in `.tools/local/`, logs and state in `.local/`.

use std::path::{Path, PathBuf};

use crate::Error;

/// The folders of one workspace's local stack.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The workspace root (its Cargo.toml has `[workspace]`).
    pub root: PathBuf,
}

impl Layout {
    /// The layout of the workspace that holds `start` (a folder inside it).
    pub fn find(start: &Path) -> Result<Self, Error> {
        for dir in start.ancestors() {
            let manifest = dir.join("Cargo.toml");
            if let Ok(text) = std::fs::read_to_string(&manifest)
                && text.lines().any(|line| line.trim() == "[workspace]")
            {
                return Ok(Layout {
                    root: dir.to_path_buf(),
                });
            }
        }
        Err(Error::NoWorkspace {
            start: start.to_path_buf(),
        })
    }

    /// The layout of the workspace that holds the current directory.
    pub fn current() -> Result<Self, Error> {
        let cwd =
            std::env::current_dir().map_err(Error::io("reading the current directory", "."))?;
        Self::find(&cwd)
    }

    /// Pinned tools: a Python venv and a Node package folder.
    pub fn tools(&self) -> PathBuf {
        self.root.join(".tools").join("local")
    }

    pub fn venv(&self) -> PathBuf {
        self.tools().join("venv")
    }

    pub fn node(&self) -> PathBuf {
        self.tools().join("node")
    }

    /// Run-time state: logs and the state file of a running stack.
    pub fn run_dir(&self) -> PathBuf {
        self.root.join(".local")
    }

    /// Every log of the stack, one file per process.
    pub fn logs(&self) -> PathBuf {
        self.run_dir().join("logs")
    }

    /// The state file `rewind local up` writes and `down` / `status` read.
    pub fn state_file(&self) -> PathBuf {
        self.run_dir().join("stack.json")
    }
}
