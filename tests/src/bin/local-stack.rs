//! The test run's shared local stack: serves until no test process holds the
//! lease file (see `rewind_tests::stack`). Takes the arguments the CLI's
//! `rewind local serve` takes for the same job, so either can serve it.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [flag_state, state, flag_lease, lease] = &args[..] else {
        anyhow::bail!("usage: local-stack --state-file STATE_FILE --lease LEASE_FILE");
    };
    anyhow::ensure!(
        flag_state.as_os_str() == "--state-file" && flag_lease.as_os_str() == "--lease",
        "usage: local-stack --state-file STATE_FILE --lease LEASE_FILE"
    );
    let layout = rewind_local::Layout::current()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(rewind_local::daemon::serve(
        &layout,
        rewind_local::Options::default(),
        state,
        Some(lease),
    ))?;
    Ok(())
}
