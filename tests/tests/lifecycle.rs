//! A stack of its own, started and stopped: nothing may outlive `stop`.

use std::net::TcpStream;
use std::time::Duration;

use rewind_local::{Layout, LocalStack, Options};

#[tokio::test]
async fn after_down_no_process_or_port_is_left() -> anyhow::Result<()> {
    let layout = Layout::find(std::path::Path::new(env!("CARGO_MANIFEST_DIR")))?;
    let stack = LocalStack::start(&layout, Options::default()).await?;
    let pids = stack.pids();
    let ports = stack.ports();
    assert_eq!(pids.len(), 3, "moto, kinesis-mock and cargo lambda");
    // Make cargo lambda start a function process too: it must go as well.
    let lambda =
        aws_sdk_lambda::Client::new(&rewind_local::sdk::config(&stack.endpoint_url()).await);
    lambda.invoke().function_name("echo").send().await?;
    for port in &ports {
        assert!(listening(*port), "port {port} listens while up");
    }
    stack.stop().await;
    for pid in pids {
        let group = rustix::process::Pid::from_raw(pid as i32).unwrap();
        assert!(
            rustix::process::test_kill_process_group(group).is_err(),
            "process group {pid} still has processes"
        );
    }
    for port in ports {
        assert!(!listening(port), "port {port} still listens");
    }
    Ok(())
}

fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).is_ok()
}
