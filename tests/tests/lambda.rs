//! Lambda invokes through the endpoint answer as AWS Lambda does.

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use rewind_tests::scratch_file;

use crate::stack;

#[tokio::test]
async fn failing_function_is_unhandled_and_runs_once() -> anyhow::Result<()> {
    let stack = stack();
    let lambda = aws_sdk_lambda::Client::new(&stack.sdk_config().await);
    let runs = scratch_file(&stack.layout, "runs");
    let payload = serde_json::json!({ "fail": true, "runs_file": runs });
    let output = lambda
        .invoke()
        .function_name("arn:aws:lambda:us-east-1:123456789012:function:echo")
        .payload(Blob::new(payload.to_string()))
        .send()
        .await?;
    assert_eq!(output.status_code(), 200);
    assert_eq!(output.function_error(), Some("Unhandled"));
    assert_eq!(output.executed_version(), Some("$LATEST"));
    let error: serde_json::Value = serde_json::from_slice(output.payload().unwrap().as_ref())?;
    assert_eq!(error["errorType"], "EchoFailure");
    // The SDK must not have retried: one invoke, one run.
    assert_eq!(std::fs::read_to_string(&runs)?.lines().count(), 1);
    Ok(())
}

#[tokio::test]
async fn invocation_types_qualifiers_and_unknown_functions() -> anyhow::Result<()> {
    let stack = stack();
    let lambda = aws_sdk_lambda::Client::new(&stack.sdk_config().await);

    let ok = lambda
        .invoke()
        .function_name("echo")
        .qualifier("7")
        .payload(Blob::new(r#"{"n": 1}"#))
        .send()
        .await?;
    assert_eq!(ok.function_error(), None);
    assert_eq!(ok.executed_version(), Some("7"));
    assert_eq!(ok.payload().unwrap().as_ref(), br#"{"n":2}"#);

    let dry = lambda
        .invoke()
        .function_name("echo")
        .invocation_type(InvocationType::DryRun)
        .send()
        .await?;
    assert_eq!(dry.status_code(), 204);

    let runs = scratch_file(&stack.layout, "event-runs");
    let event = lambda
        .invoke()
        .function_name("echo")
        .invocation_type(InvocationType::Event)
        .payload(Blob::new(
            serde_json::json!({ "runs_file": runs }).to_string(),
        ))
        .send()
        .await?;
    assert_eq!(event.status_code(), 202);
    assert!(event.payload().is_none_or(|p| p.as_ref().is_empty()));
    // The queued run happens after the answer.
    let mut waited = 0;
    while !runs.exists() && waited < 100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        waited += 1;
    }
    assert!(runs.exists(), "the Event invoke ran");

    let missing = lambda
        .invoke()
        .function_name("no-such-function")
        .send()
        .await;
    let error = missing.unwrap_err().into_service_error();
    assert!(error.is_resource_not_found_exception(), "{error:?}");
    Ok(())
}

/// Lambda runs concurrent invocations of one function side by side, each in
/// an execution environment of its own; the stack must too, or neither a
/// mapping's `ParallelizationFactor` nor shards replayed in parallel can
/// show their effect locally. Asserts that the runs overlapped, never how
/// long they took, so a slow machine can't fail it.
#[tokio::test]
async fn concurrent_invokes_of_one_function_overlap() -> anyhow::Result<()> {
    let stack = stack();
    let lambda = aws_sdk_lambda::Client::new(&stack.sdk_config().await);
    let slow = |round: u32, tag: &'static str| {
        let lambda = lambda.clone();
        let payload = serde_json::json!({ "sleep_ms": 1500, "round": round, "tag": tag });
        async move {
            let output = lambda
                .invoke()
                .function_name("echo")
                .payload(Blob::new(payload.to_string()))
                .send()
                .await?;
            anyhow::ensure!(output.function_error().is_none(), "{output:?}");
            let run: serde_json::Value =
                serde_json::from_slice(output.payload().map_or(&[][..], |p| p.as_ref()))?;
            let field = |name: &str| {
                run[name]
                    .as_u64()
                    .ok_or_else(|| anyhow::anyhow!("no {name} in {run}"))
            };
            anyhow::Ok((field("started_ms")?, field("ended_ms")?, field("pid")?))
        }
    };
    // The first round may meet cold starts (a second instance is started
    // only once the first is busy), as on Lambda; the second finds both warm.
    for round in 1..=2 {
        let started = std::time::Instant::now();
        let (a, b) = tokio::try_join!(slow(round, "a"), slow(round, "b"))?;
        eprintln!(
            "round {round}: two 1.5 s invokes took {:.2} s together (a {a:?}, b {b:?})",
            started.elapsed().as_secs_f64()
        );
        if round == 2 {
            let ((a_start, a_end, a_pid), (b_start, b_end, b_pid)) = (a, b);
            assert!(
                a_start < b_end && b_start < a_end,
                "the runs did not overlap: a {a_start}..{a_end}, b {b_start}..{b_end}"
            );
            assert_ne!(a_pid, b_pid, "each ran in an instance of its own");
        }
    }
    Ok(())
}
