//! State machines created from the template's own definitions run the real
//! functions.

use std::time::Duration;

use aws_sdk_sfn::types::ExecutionStatus;
use rewind_local::statemachine::{self, Context};
use rewind_tests::unique;

use crate::stack;

#[tokio::test]
async fn map_with_a_choice_loop_over_a_function_succeeds() -> anyhow::Result<()> {
    let stack = stack();
    let sfn = aws_sdk_sfn::Client::new(&stack.sdk_config().await);
    let template = stack
        .layout
        .root
        .join("tests/fixtures/statemachines/template.yaml");
    let machine = statemachine::load(&template, "CountLoop", &Context::default())?;
    assert!(
        machine
            .definition
            .contains("arn:aws:lambda:us-east-1:123456789012:function:echo")
    );
    let arn = statemachine::create(&sfn, &unique("count-loop"), &machine).await?;

    let input = serde_json::json!({ "items": [{ "n": 0 }, { "n": 1 }, { "n": 5 }] });
    let (name, input) = (unique("run"), input.to_string());
    let limit = Duration::from_secs(60);
    let described = statemachine::execute(&sfn, &arn, &name, &input, limit).await?;
    assert_eq!(
        *described.status(),
        ExecutionStatus::Succeeded,
        "{described:?}"
    );
    let output: serde_json::Value = serde_json::from_str(described.output().unwrap_or("null"))?;
    // Each item counted up to 3, except the one already past it (one call).
    assert_eq!(
        output,
        serde_json::json!([{ "n": 3 }, { "n": 3 }, { "n": 6 }])
    );
    Ok(())
}
