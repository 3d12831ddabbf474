//! `rewind demo` end to end, smaller: it starts its own local stack, tells
//! the story with 60 user records and stops everything. Its JSON report must
//! add up, checked here against each other and against what it left on disk
//! (the consumer's own file, the saved DLQ objects): every Kinesis record put
//! is archived; the outage window holds exactly the outage's records; each of
//! them is either delivered to the consumer or in the DLQ; the DLQ holds
//! exactly the poison planted; and no server of the stack is left running.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use assert_cmd::Command;
use serde_json::Value;

fn count(value: &Value, what: &str) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("{what} is not a count: {value}"))
}

/// Files under `dir`, at any depth.
fn files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            if path.is_dir() { files(&path) } else { 1 }
        })
        .sum()
}

#[test]
fn the_demo_adds_up_and_leaves_nothing_running() {
    let output = Command::cargo_bin("rewind")
        .unwrap()
        .args(["demo", "--records", "60", "--json"])
        // The stack's clients get their endpoint and credentials from the
        // demo, never from the environment.
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_PROFILE")
        .timeout(Duration::from_secs(900))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}\n{stderr}", output.status);
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    let n = |pointer: &str| count(report.pointer(pointer).unwrap_or(&Value::Null), pointer);

    // Produced: 60 user records, some in KPL aggregates, so fewer Kinesis
    // records; the three phases add up.
    assert_eq!(n("/produced/userRecords"), 60, "{report:#}");
    let kinesis = n("/produced/kinesisRecords");
    assert!(n("/produced/kplAggregates") > 0, "{report:#}");
    assert_eq!(
        kinesis + n("/produced/userRecordsInAggregates"),
        60 + n("/produced/kplAggregates"),
        "{report:#}"
    );
    let phases = report["produced"]["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 3);
    let phase_sum: u64 = phases
        .iter()
        .map(|p| count(&p["kinesisRecords"], "kinesisRecords"))
        .sum();
    assert_eq!(phase_sum, kinesis);
    let outage = &phases[1];
    assert_eq!(outage["phase"], "outage");
    assert_eq!(report["shards"]["listedAtEnd"], 6, "2 parents, 4 children");

    // Archived: every Kinesis record, once.
    assert_eq!(n("/archived/kinesisRecords"), kinesis, "{report:#}");

    // The window: exactly the outage's records.
    let window = n("/window/kinesisRecords");
    assert_eq!(
        window,
        count(&outage["kinesisRecords"], "outage"),
        "{report:#}"
    );
    assert_eq!(n("/window/fromOutagePhase"), window, "{report:#}");
    assert!(n("/window/to") > n("/window/from"));

    // Replayed + DLQ = the window; the DLQ is the poison planted.
    let delivered = n("/replay/delivered");
    let dlq = n("/dlq/records");
    let poison = n("/dlq/poisonPlanted");
    assert!(poison > 0 && delivered > 0, "{report:#}");
    assert_eq!(n("/replay/records"), window, "{report:#}");
    assert_eq!(delivered + dlq, window, "{report:#}");
    assert_eq!(dlq, poison, "{report:#}");
    assert_eq!(n("/dlq/poisonFound"), poison, "{report:#}");
    assert_eq!(poison, count(&outage["poison"], "poison"));
    assert_eq!(n("/produced/poison"), poison);
    let saved = Path::new(report["dlq"]["savedTo"].as_str().unwrap());
    assert_eq!(
        files(saved) as u64,
        n("/dlq/objects"),
        "{}",
        saved.display()
    );
    assert!(
        report["dlq"]["location"]
            .as_str()
            .unwrap()
            .starts_with("s3://"),
        "{report:#}"
    );

    // The consumer's own file: one line per accepted batch.
    assert_eq!(n("/consumer/records"), delivered, "{report:#}");
    let file = report["consumer"]["file"].as_str().unwrap();
    let accepted: u64 = std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .lines()
        .map(|line| {
            let batch: Value = serde_json::from_str(line).unwrap();
            batch["records"].as_array().unwrap().len() as u64
        })
        .sum();
    assert_eq!(accepted, delivered, "{file}");

    for check in report["checks"].as_array().unwrap() {
        assert_eq!(check["ok"], true, "{check}");
    }

    // Nothing left running: no server answers on the stack's ports, and its
    // processes are gone.
    let ports = report["stack"]["ports"].as_array().unwrap();
    assert!(ports.len() >= 3, "{report:#}");
    for port in ports {
        let port = u16::try_from(count(port, "port")).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(
            TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
            "something still listens on {addr}"
        );
    }
    let pids = report["stack"]["pids"].as_array().unwrap();
    assert!(!pids.is_empty(), "{report:#}");
    for pid in pids {
        let proc = format!("/proc/{}", count(pid, "pid"));
        assert!(!Path::new(&proc).exists(), "{proc} still exists");
    }
}
