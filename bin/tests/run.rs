//! `rewind run start | status | watch` as a user runs it: against the scrape
//! and replay state machines created from template.yaml's own definitions on
//! the local stack (the real functions, kinesis-mock), and with bad flags
//! and bad requests that must fail before anything connects.

use std::process::Output;
use std::time::Duration;

use assert_cmd::cargo::cargo_bin_cmd;
use aws_sdk_kinesis::primitives::Blob;
use rewind_engine::model::manifest::Manifest;
use rewind_local::sdk::s3_client;
use rewind_local::statemachine::{self, Context};
use rewind_tests::{create_stream, unique};
use serde_json::{Value, json};

use crate::common::{Scratch, stack};

/// Runs `rewind` with `args`; a run that outlives `limit` fails the test
/// instead of hanging it.
fn rewind(args: &[&str], limit: Duration) -> Output {
    cargo_bin_cmd!("rewind")
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .timeout(limit)
        .output()
        .expect("run rewind")
}

/// `rewind run start --state-machine MACHINE --request REQUEST`.
fn start_args<'a>(machine: &'a str, request: &'a str) -> [&'a str; 6] {
    [
        "run",
        "start",
        "--state-machine",
        machine,
        "--request",
        request,
    ]
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A scrape request that is valid except where `change` says.
fn scrape_request(stream: &str, bucket: &str, change: Value) -> Value {
    let mut request = json!({
        "stream": stream,
        "start": {"type": "TRIM_HORIZON"},
        "stop": {"type": "LATEST"},
        "pollBatchSize": 10,
        "maxEmptyPolls": 2,
        "output": {"bucket": bucket, "prefix": "scrapes"},
    });
    for (key, value) in change.as_object().unwrap() {
        request[key] = value.clone();
    }
    request
}

#[test]
fn bad_flags_and_bad_requests_fail_before_connecting() {
    let scratch = Scratch::new("run-bad");
    // Nothing listens on the discard port: a command that tried to call
    // Step Functions would fail with exit code 3, not 2.
    let nowhere = [
        "--endpoint-url",
        "http://127.0.0.1:9",
        "--region",
        "us-east-1",
    ];
    let machine = "arn:aws:states:us-east-1:123456789012:stateMachine:scrape";
    let quick = |args: &[&str]| rewind(args, Duration::from_secs(30));
    let to_nowhere = |args: &[&str]| quick(&[args, &nowhere].concat());
    let start = |request: &str, extra: &[&str]| {
        to_nowhere(&[&start_args(machine, request), extra].concat())
    };

    let bad = scratch.write(
        "scrape.json",
        &scrape_request("orders", "b", json!({"pollBatchSize": 20000})),
    );
    let out = start(&bad, &["--watch"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!(
            "{bad}: invalid scrape request: pollBatchSize: 20000 is out of range; accepted values: 1 to 10000"
        )),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());

    // Detected as a replay request (source and target), checked as one.
    let replay: Value =
        serde_json::from_str(include_str!("../../events/replay-from-manifest.json")).unwrap();
    let mut broken = replay.clone();
    broken["dlq"]["type"] = json!("EMAIL");
    let file = scratch.write("replay.json", &broken);
    let out = start(&file, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("invalid replay request: dlq") && stderr.contains("EMAIL"),
        "{stderr}"
    );
    // The same document read as a scrape request fails on its first field.
    let file = scratch.0.join("replay-ok.json");
    std::fs::write(
        &file,
        include_str!("../../events/replay-from-manifest.json"),
    )
    .unwrap();
    let file = file.display().to_string();
    let out = start(&file, &["--kind", "scrape"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("invalid scrape request: source: unknown field `source`"),
        "{}",
        text(&out.stderr)
    );

    let good = scratch.write("good.json", &scrape_request("orders", "b", json!({})));
    let out = start(&good, &["--name", "not/a/run id"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--name \"not/a/run id\" is not a valid run id"),
        "{}",
        text(&out.stderr)
    );

    let out = start("/nonexistent/request.json", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("reading /nonexistent/request.json"));

    let out = to_nowhere(&start_args("scrape", &good));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr)
            .contains("--state-machine: \"scrape\" is not a Step Functions stateMachine ARN"),
        "{}",
        text(&out.stderr)
    );

    let out = to_nowhere(&["run", "status", machine]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("is not a Step Functions execution ARN"));

    // Usage errors are clap's, with the same code.
    let out = quick(&["run", "start", "--request", &good]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--state-machine <STATE_MACHINE>"));
    let out = quick(&[
        "run",
        "watch",
        "arn:aws:states:us-east-1:1:execution:m:e",
        "--interval",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("accepted values: 0.1 to 600"));
    let out = quick(&[&start_args(machine, &good)[..], &["--kind", "archive"]].concat());
    assert_eq!(out.status.code(), Some(2));

    // The exit codes are documented where users look.
    let out = quick(&["run", "watch", "--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for line in [
        "0  succeeded",
        "1  the execution failed, timed out or was aborted",
        "2  bad input",
        "3  Step Functions could not be asked",
    ] {
        assert!(help.contains(line), "{help}");
    }
}

/// The execution ARN from `start --watch`'s stderr (`started <arn>`).
fn started_arn(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|line| line.strip_prefix("started "))
        .unwrap_or_else(|| panic!("no `started` line in {stderr}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_watch_and_status_of_the_state_machines() -> anyhow::Result<()> {
    let stack = stack();
    let root = &stack.layout.root;
    let endpoint = stack.endpoint.as_str();
    let config = stack.sdk_config().await;
    let kinesis = aws_sdk_kinesis::Client::new(&config);
    let s3 = s3_client(&config);
    let sfn = aws_sdk_sfn::Client::new(&config);
    let id = unique("run-cli");
    let (stream, bucket) = (id.clone(), id.clone());
    s3.create_bucket().bucket(&bucket).send().await?;
    create_stream(&kinesis, &stream, 1).await?;
    for i in 0..5u8 {
        kinesis
            .put_record()
            .stream_name(&stream)
            .partition_key(format!("k{i}"))
            .data(Blob::new(vec![i, b'r']))
            .send()
            .await?;
    }
    let definition = statemachine::load(
        &root.join("template.yaml"),
        "ScrapeStateMachine",
        &Context::default(),
    )?;
    let machine = statemachine::create(&sfn, &id, &definition).await?;

    let scratch = Scratch::new("run-local");
    let aws = ["--endpoint-url", endpoint, "--region", "us-east-1"];
    let limit = Duration::from_secs(240);
    let run = |args: &[&str]| rewind(&[args, &aws].concat(), limit);
    let start = |machine: &str, request: &str, extra: &[&str]| {
        run(&[&start_args(machine, request)[..], extra].concat())
    };

    // A bad request against the real machine starts nothing.
    let bad = scratch.write(
        "bad.json",
        &scrape_request(&stream, &bucket, json!({"start": {"type": "SOMETIME"}})),
    );
    let out = start(&machine, &bad, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("invalid scrape request: start"));

    // start --watch: progress on stderr, the output (naming the manifest)
    // on stdout, exit code 0.
    let good = scratch.write("good.json", &scrape_request(&stream, &bucket, json!({})));
    let out = start(&machine, &good, &["--watch", "--interval", "0.2"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let arn = started_arn(&stderr);
    let name = arn.rsplit(':').next().unwrap().to_owned();
    assert!(name.starts_with("rewind-"), "{arn}");
    assert!(
        stderr.contains(&format!("execution {name} SUCCEEDED after"))
            && stderr.contains("shards 1/1 done"),
        "{stderr}"
    );
    let output: Value = serde_json::from_slice(&out.stdout)?;
    let key = format!("scrapes/{name}/manifest.json");
    assert_eq!(output["manifest"]["key"], json!(key), "{output}");
    assert_eq!(output["manifest"]["records"], json!(5), "{output}");
    let manifest = s3.get_object().bucket(&bucket).key(&key).send().await?;
    let manifest: Manifest = serde_json::from_slice(&manifest.body.collect().await?.into_bytes())?;
    assert_eq!(manifest.records, 5);

    // status of the finished execution: the same output, its dates.
    let out = run(&["run", "status", &arn, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(status["status"], "SUCCEEDED");
    assert_eq!(status["name"], json!(name));
    assert_eq!(status["output"], output);
    assert!(
        status["startDate"]
            .as_str()
            .is_some_and(|d| d.ends_with('Z')),
        "{status}"
    );
    assert!(status["stopDate"].is_string(), "{status}");
    let out = run(&["run", "status", &arn]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("status     SUCCEEDED"),
        "{}",
        text(&out.stdout)
    );

    // watch of a finished execution: one look, the same output, and with
    // --json the progress counted from the whole history.
    let out = run(&["run", "watch", &arn, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let watched: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(watched["output"], output);
    let shards = &watched["progress"]["maps"]["ScrapeShards"];
    assert_eq!(
        (&shards["shards"], &shards["shardsDone"]),
        (&json!(1), &json!(1)),
        "{watched}"
    );
    // The execution's own steps: plan and manifest (the shard's one step,
    // 5 records in one chunk, runs in the Distributed Map's child
    // execution, counted by the Map Run as the shard done).
    assert_eq!(watched["progress"]["steps"], json!(2), "{watched}");

    // A request the engine only rejects once it sees the stream (a shard it
    // does not have): started, then failed; watch says why, exit code 1.
    let missing = scratch.write(
        "missing.json",
        &scrape_request(
            &stream,
            &bucket,
            json!({"shards": ["shardId-000000000009"]}),
        ),
    );
    let out = start(
        &machine,
        &missing,
        &["--name", &format!("missing-shard-{id}"), "--json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let started: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(started["name"], json!(format!("missing-shard-{id}")));
    assert_eq!(started["kind"], "scrape");
    let failed = started["executionArn"].as_str().unwrap().to_owned();
    let out = run(&["run", "watch", &failed, "--interval", "0.2"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "execution missing-shard-{id} FAILED: InvalidRequest: invalid scrape request: shards: \"shardId-000000000009\" is not a shard of"
        )),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "no output for a failed execution");
    let out = run(&["run", "status", &failed, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let status: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(status["status"], "FAILED");
    assert_eq!(status["error"], "InvalidRequest");

    // An execution that does not exist is bad input, not an unknown outcome.
    let out = run(&["run", "status", &format!("{failed}-nope")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    // The replay machine (scrape first, then a Distributed Map over lineage
    // groups, each child holding a Map over shards) into a second stream:
    // the request detected as a replay request, and progress counted per
    // Distributed Map (its Map Run's items: shards, then groups).
    let copy = format!("{stream}-copy");
    create_stream(&kinesis, &copy, 1).await?;
    let definition = statemachine::load(
        &root.join("template.yaml"),
        "ReplayStateMachine",
        &Context::default(),
    )?;
    let replay_machine = statemachine::create(&sfn, &format!("{id}-replay"), &definition).await?;
    let replay = scratch.write(
        "replay.json",
        &json!({
            "source": {"type": "SCRAPE", "request": scrape_request(&stream, &bucket, json!({}))},
            "target": {"type": "STREAM", "stream": copy},
            "output": {"bucket": bucket, "prefix": "replays"},
        }),
    );
    let out = start(
        &replay_machine,
        &replay,
        &["--watch", "--interval", "0.2", "--json"],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("ScrapeShards 1/1, ReplayGroups 1/1 shards done"),
        "{stderr}"
    );
    let watched: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(watched["status"], "SUCCEEDED");
    assert_eq!(
        watched["output"]["summary"]["totals"]["records"],
        json!(5),
        "{watched}"
    );
    // Key order depends on serde_json's preserve_order, which feature
    // unification may turn on: compare the set.
    let maps = watched["progress"]["maps"].as_object().unwrap();
    let mut names: Vec<&String> = maps.keys().collect();
    names.sort();
    assert_eq!(names, ["ReplayGroups", "ScrapeShards"], "{watched}");
    kinesis.delete_stream().stream_name(&copy).send().await?;

    // Nothing but the two scrape executions above was started on the scrape
    // machine (the bad request never reached it).
    let listed = sfn
        .list_executions()
        .state_machine_arn(&machine)
        .send()
        .await?;
    let mut names: Vec<&str> = listed.executions().iter().map(|e| e.name()).collect();
    names.sort();
    assert_eq!(
        names,
        [format!("missing-shard-{id}").as_str(), name.as_str()]
    );
    kinesis.delete_stream().stream_name(&stream).send().await?;
    Ok(())
}
