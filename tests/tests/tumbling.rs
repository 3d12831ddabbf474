//! Tumbling windows (`TumblingWindowInSeconds`) behind the replay state
//! machine, as the Lambda developer guide's "Time windows" section for
//! Kinesis describes them
//! (<https://docs.aws.amazon.com/lambda/latest/dg/services-kinesis-windows.html>):
//! the `tumbling` fixture sums the values of its records per window in the
//! state the replay carries from invocation to invocation, and keeps each
//! window's final state. The replay crosses step boundaries (the request's
//! `maxStepSeconds` makes its steps 3 s, the fixture takes 400 ms a batch)
//! and one step is retried after a checkpoint could not be written (after
//! the window's state beside it, and the next piece's, were): every
//! window's final total must still be exactly the total of its records,
//! computed here from the records.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_sfn::types::ExecutionStatus;
use rewind_engine::model::record::{ArrivalTime, Record};
use rewind_engine::model::tumbling::TumblingWindow;
use rewind_local::statemachine;
use rewind_local::{Fault, FaultKind};
use rewind_tests::{record, unique};
use serde_json::{Value, json};

use crate::replay::{Replay, archive};
use crate::stack;

const WINDOW_SECONDS: u32 = 2;
/// The request's `maxStepSeconds`: a step hands records on for 2 of them.
const STEP_SECONDS: u32 = 3;

/// `count` records of one shard, one every 250 ms from `t0` (epoch ms):
/// eight to a window.
fn records(stream: &str, t0: i64, count: usize) -> Vec<Record> {
    (0..count)
        .map(|n| {
            record(
                stream,
                "shardId-000000000000",
                &format!(
                    "4965662637242791438523726206339647815341865821830{:06}",
                    n * 3 + 1
                ),
                format!("key-{}", n % 4),
                t0 + n as i64 * 250,
                json!({"value": n % 7 + 1, "workMs": 400})
                    .to_string()
                    .into_bytes(),
            )
        })
        .collect()
}

/// As the event's `window` writes it: whole seconds, `Z`.
fn iso(at: ArrivalTime) -> String {
    at.to_string().replace(".000Z", "Z")
}

/// (sum, records) per window start, from the records themselves.
fn expected(records: &[Record]) -> BTreeMap<String, (i64, i64)> {
    let mut totals = BTreeMap::new();
    for record in records {
        let window = TumblingWindow::of(record.approximate_arrival_timestamp, WINDOW_SECONDS);
        let data: Value = serde_json::from_slice(&record.data).expect("JSON data");
        let total = totals.entry(iso(window.start)).or_insert((0, 0));
        total.0 += data["value"].as_i64().expect("a value");
        total.1 += 1;
    }
    totals
}

/// The final states the fixture kept for `stream`, per window start. A
/// final invoke sent again (at least once) must carry the same state.
fn finals(stream: &str) -> anyhow::Result<BTreeMap<String, (i64, i64)>> {
    let dir = stack()
        .layout
        .run_dir()
        .join("fixtures/tumbling")
        .join(stream);
    let mut finals: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for entry in std::fs::read_dir(&dir)? {
        let line: Value = serde_json::from_slice(&std::fs::read(entry?.path())?)?;
        anyhow::ensure!(line["early"] == json!(false), "{line}");
        anyhow::ensure!(
            line["records"] == json!(0),
            "a final invoke has no records: {line}"
        );
        anyhow::ensure!(line["shardId"] == json!("shardId-000000000000"), "{line}");
        let number = |key: &str| -> anyhow::Result<i64> {
            Ok(line["state"][key].as_str().unwrap_or("0").parse()?)
        };
        let state = (number("sum")?, number("records")?);
        let start = line["window"]["start"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if let Some(before) = finals.insert(start.clone(), state) {
            anyhow::ensure!(before == state, "window {start}: {before:?} then {state:?}");
        }
    }
    Ok(finals)
}

#[tokio::test]
async fn window_totals_survive_step_boundaries_and_a_retried_step() -> anyhow::Result<()> {
    let replay = Replay::new("tumbling").await?;
    let stream = unique("tumbling");
    // Aligned to the windows: nine windows of eight records.
    let t0 = 1_732_300_000_000;
    let records = records(&stream, t0, 72);
    archive(&replay, &records).await?;

    let run = unique("run");
    let admin = stack().admin();
    // The steps run in the Distributed Map's child executions, whose
    // history the local stack keeps nowhere: their invocations are counted
    // on their way to the function instead.
    admin
        .inject(
            &Fault::observe("lambda", "Invoke")
                .matching(&run)
                .and_matching("\"step\""),
        )
        .await?;
    // The checkpoint after the second piece (6 records) fails on every
    // attempt the SDK makes: written while the third piece is delivered, it
    // fails that step after the window's state of both pieces was saved,
    // and the state machine retries it.
    let checkpoint = format!("{run}/shardId-000000000000/_checkpoint.json");
    admin
        .inject(
            &Fault::count("s3", "PutObject", FaultKind::ServerError, 5)
                .matching(&checkpoint)
                .and_matching("\"records\":6,"),
        )
        .await?;
    let input = json!({
        "source": {"type": "ARCHIVE", "bucket": replay.bucket, "stream": stream,
                   "from": t0 / 1000, "to": t0 / 1000 + 3600},
        "target": {"type": "FUNCTION", "functionName": "tumbling"},
        "options": {"BatchSize": 3, "TumblingWindowInSeconds": WINDOW_SECONDS,
                    "MaximumRetryAttempts": 2},
        "dlq": {"type": "S3", "bucket": replay.bucket},
        "maxStepSeconds": STEP_SECONDS
    });
    let described = statemachine::execute(
        &replay.sfn,
        &replay.machine,
        &run,
        &input.to_string(),
        // Local function instances start with a `cargo run`, which takes
        // minutes on a loaded machine.
        Duration::from_secs(600),
    )
    .await?;
    anyhow::ensure!(
        *described.status() == ExecutionStatus::Succeeded,
        "{:?} {:?} {:?}",
        described.status(),
        described.error(),
        described.cause()
    );
    let output: Value = serde_json::from_str(described.output().unwrap_or("null"))?;

    assert_eq!(finals(&stream)?, expected(&records), "{output}");
    let totals = &output["summary"]["totals"];
    assert_eq!(totals["records"], json!(records.len()), "{output}");
    assert_eq!(totals["delivered"], json!(records.len()), "{output}");
    assert_eq!(totals["failedRecords"], json!(0), "{output}");

    // Step invocations: at least three that returned (two boundaries) and
    // the one that failed on its checkpoint (its fault used up: every
    // attempt of that write failed).
    let faults = admin.faults().await?;
    admin.remove_faults(&run).await?;
    admin.remove_faults(&checkpoint).await?;
    let rule = |needle: &str| {
        faults
            .iter()
            .find(|f| f.matching.as_deref() == Some(needle))
    };
    let observed = rule(&run).map_or(0, |f| f.injected);
    assert!(
        rule(&checkpoint).is_none(),
        "the checkpoint's write did not fail 5 times: {faults:?}"
    );
    assert!(observed >= 4, "{observed} step invocations");
    Ok(())
}
