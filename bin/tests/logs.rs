//! `RUST_LOG` turns on the engine's structured logs on stderr, one JSON
//! object a line: a replay's step reports its engine time between invokes
//! there (what `bin/bench` reads). Without it, stderr has no log lines.

use std::process::Command;

use rewind_tests::unique;
use serde_json::{Value, json};

use crate::common::{Scratch, stack};
use crate::replay::{records, write};

/// `rewind replay` of 6 records of one shard in batches of 2 (3 invokes on
/// one lane: 2 gaps), with `RUST_LOG` as given.
fn replay(scratch: &Scratch, rust_log: Option<&str>) -> std::process::Output {
    let stream = unique("cli-logs");
    let path = scratch.0.join(format!("{stream}.jsonl.gz"));
    write(&path, &records(&stream, "shardId-000000000000", 6, &[]));
    let request = scratch.write(
        &format!("{stream}.json"),
        &json!({"target": {"type": "FUNCTION", "functionName": "target"},
                "options": {"BatchSize": 2},
                "dlq": {"type": "S3", "bucket": "dlq-bucket", "prefix": "dlq"}}),
    );
    let stream_arn = format!("arn:aws:kinesis:us-east-1:123456789012:stream/{stream}");
    let out_dir = scratch.path(&format!("{stream}-out"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_rewind"));
    command
        .args(["replay", "--json", "--request", &request, "--dir", &out_dir])
        .args([
            "--stream-arn",
            &stream_arn,
            "--files",
            path.to_str().unwrap(),
        ])
        .args(["--endpoint-url", &stack().endpoint, "--region", "us-east-1"])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("AWS_PROFILE")
        .env_remove("RUST_LOG");
    if let Some(filter) = rust_log {
        command.env("RUST_LOG", filter);
    }
    command.output().expect("running rewind")
}

#[test]
fn rust_log_turns_on_the_engines_json_logs() {
    let scratch = Scratch::new("logs");
    let out = replay(&scratch, Some("rewind_engine::sinks::function_target=info"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let gaps: Vec<&Value> = lines
        .iter()
        .filter(|line| line["fields"]["message"] == "engine time between invokes")
        .map(|line| &line["fields"])
        .collect();
    assert_eq!(gaps.len(), 1, "one step, one summary: {stderr}");
    assert_eq!(gaps[0]["gaps"], json!(2), "{stderr}");
    let (median, max) = (&gaps[0]["median_us"], &gaps[0]["max_us"]);
    assert!(
        median.as_u64().unwrap() <= max.as_u64().unwrap(),
        "{stderr}"
    );

    let quiet = replay(&scratch, None);
    assert!(quiet.status.success());
    assert!(
        quiet.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
}
