//! The test run's shared local stack: serves until no test process holds the
//! lease file given as its argument (see `rewind_tests::stack`).

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(state), Some(lease)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: local-stack STATE_FILE LEASE_FILE");
    };
    let layout = rewind_local::Layout::current()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(rewind_local::daemon::serve(
        &layout,
        rewind_local::Options::default(),
        &state,
        Some(&lease),
    ))?;
    Ok(())
}
