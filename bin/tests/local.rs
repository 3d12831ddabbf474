//! `rewind local up | status | down`: the stack runs in the background
//! after `up` returns (every emulator behind one loopback endpoint), and
//! after `down` none of its processes and no port of it is left. It starts
//! the stack it tests (`.local/stack.json`), not the test run's shared one.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::bare as rewind;

/// The parent pid of `pid`, from /proc (field 4 of `stat`, after the
/// parenthesised command name, which may hold spaces).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

/// `root` and every process descended from it.
fn family(root: u32) -> BTreeSet<u32> {
    let mut family = BTreeSet::from([root]);
    loop {
        let before = family.len();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if parent_of(pid).is_some_and(|parent| family.contains(&parent)) {
                family.insert(pid);
            }
        }
        if family.len() == before {
            return family;
        }
    }
}

/// Running, not a zombie waiting for its parent.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 2..];
            rest.chars().next()
        })
        .is_some_and(|state| state != 'Z')
}

#[test]
fn up_runs_the_stack_in_the_background_and_down_leaves_nothing() {
    // A limit other than the default, to see it reach `cargo lambda watch`.
    let up = rewind(&["local", "up", "--function-concurrency", "13"]);
    let stderr = String::from_utf8_lossy(&up.stderr).into_owned();
    assert!(up.status.success(), "{stderr}");
    // "endpoint http://127.0.0.1:PORT (pid N, logs in ...)"
    let line = stderr
        .lines()
        .find(|line| line.starts_with("endpoint "))
        .unwrap_or_else(|| panic!("no endpoint line: {stderr}"));
    let endpoint = line.split(' ').nth(1).unwrap().to_owned();
    let pid: u32 = line
        .split("(pid ")
        .nth(1)
        .and_then(|rest| rest.split([',', ')']).next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid: {line}"));
    let address: SocketAddr = endpoint.strip_prefix("http://").unwrap().parse().unwrap();
    assert!(address.ip().is_loopback(), "{endpoint}");
    assert!(
        String::from_utf8_lossy(&up.stdout).contains(&format!("AWS_ENDPOINT_URL={endpoint}")),
        "the exports name the endpoint"
    );
    let processes = family(pid);
    // The daemon, moto, kinesis-mock and cargo lambda (with its children).
    assert!(processes.len() >= 4, "{processes:?}");
    let watch: Vec<Vec<String>> = processes
        .iter()
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .map(|line| {
            line.split(|&b| b == 0)
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect()
        })
        .filter(|args: &Vec<String>| args.iter().any(|arg| arg == "watch"))
        .collect();
    assert!(
        watch
            .iter()
            .any(|args| args.windows(2).any(|w| w == ["--concurrency", "13"])),
        "cargo lambda watch runs without the flag's limit: {watch:?}"
    );

    let status = rewind(&["local", "status"]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );

    let down = rewind(&["local", "down"]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    let started = Instant::now();
    let mut left: Vec<u32> = processes.iter().copied().filter(|&p| alive(p)).collect();
    while !left.is_empty() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        left.retain(|&p| alive(p));
    }
    assert!(left.is_empty(), "still running after down: {left:?}");
    assert!(
        TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_err(),
        "{endpoint} still answers"
    );
    let status = rewind(&["local", "status"]);
    assert!(!status.status.success(), "status after down");
}

#[test]
fn bad_flags_of_local_and_demo_are_usage_errors() {
    for args in [
        &["local", "up", "--no-such-flag"][..],
        &["local", "up", "--function-concurrency", "0"],
        &["local", "up", "--function-concurrency", "101"],
        &["local", "up", "--function-concurrency", "many"],
        &["local", "sideways"],
        &["demo", "--records", "many"],
    ] {
        let out = rewind(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        if args.contains(&"--function-concurrency") {
            // The flag and what it accepts, before anything starts.
            assert!(
                stderr.contains("--function-concurrency <N>"),
                "{args:?}: {stderr}"
            );
        }
    }
    let out = rewind(&["local", "up", "--function-concurrency", "0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1..=100"), "{stderr}");
}
