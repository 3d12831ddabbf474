//! What an installed `rewind` offers before any command: its version and
//! shell completions generated from the same command definitions.

use crate::common::bare as rewind;

#[test]
fn version_names_the_crate_version() {
    let out = rewind(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("rewind {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn completions_cover_every_subcommand_and_refuse_an_unknown_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = rewind(&["completions", shell]);
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let script = String::from_utf8(out.stdout).unwrap();
        for command in [
            "scrape", "replay", "reinject", "archive", "run", "local", "demo",
        ] {
            assert!(
                script.contains(command),
                "{shell}: no {command} in the script"
            );
        }
    }
    let out = rewind(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bash") && stderr.contains("zsh"),
        "{stderr}"
    );
}
