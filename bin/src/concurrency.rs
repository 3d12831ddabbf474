//! Shards in parallel for `rewind scrape` and `rewind replay`: every lineage
//! group at once (its shards one after another, parents first), up to
//! `--max-concurrency`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;
use futures_util::StreamExt as _;

/// The most groups run at once: what the state machines' Maps allow, so a
/// local run never pulls harder on a stream or a function than a deployed
/// one may.
pub const MAX_CONCURRENCY: u32 = rewind_engine::jobs::scrape::MAX_CONCURRENCY;

/// Groups run at once when neither the flag nor the request says.
pub const DEFAULT_CONCURRENCY: u32 = 10;

#[derive(Args, Debug, Clone, Copy)]
pub struct ConcurrencyArgs {
    /// Lineage groups of shards run at once (each group's shards one after
    /// another, parents first), 1 to 1000; by default the request's
    /// `maxConcurrency`, or 10.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CONCURRENCY)))]
    pub max_concurrency: Option<u32>,
}

impl ConcurrencyArgs {
    /// The flag, else the request's `maxConcurrency` (already validated
    /// with the request), else the default.
    pub fn resolve(self, request: Option<u32>) -> usize {
        self.max_concurrency
            .or(request)
            .unwrap_or(DEFAULT_CONCURRENCY) as usize
    }
}

/// Set once a group has failed: no group starts after it and the running
/// ones stop between steps, so each ends on a settled step (nothing is
/// abandoned half-way through a step) and the first error is reported.
#[derive(Debug, Default)]
pub struct Stop(AtomicBool);

impl Stop {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `run` on every group, at most `max` at once, on this task (bounded
/// by `buffer_unordered`: the groups borrow the caller's clients). Returns
/// the first error once every started group has stopped.
pub async fn for_each_group<G, F, Fut>(
    groups: Vec<G>,
    max: usize,
    stop: &Stop,
    run: F,
) -> anyhow::Result<()>
where
    F: Fn(G) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    futures_util::stream::iter(groups)
        .map(|group| {
            let run = &run;
            async move {
                if stop.is_set() {
                    return Ok(());
                }
                let result = run(group).await;
                if result.is_err() {
                    stop.set();
                }
                result
            }
        })
        .buffer_unordered(max.max(1))
        .fold(Ok(()), |first, result| async move { first.and(result) })
        .await
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::time::Duration;

    use super::*;

    /// Groups overlap up to the bound and never beyond it; after a failure
    /// no group starts, the running ones finish, and the error is the one
    /// reported.
    #[tokio::test(start_paused = true)]
    async fn groups_run_at_once_up_to_the_bound_and_stop_after_a_failure() {
        let running = Cell::new(0);
        let most = Cell::new(0);
        let started = RefCell::new(Vec::new());
        let stop = Stop::default();
        let result = for_each_group((0..6).collect(), 2, &stop, |group: u32| {
            let (running, most, started) = (&running, &most, &started);
            async move {
                started.borrow_mut().push(group);
                running.set(running.get() + 1);
                most.set(most.get().max(running.get()));
                tokio::time::sleep(Duration::from_millis(100 * u64::from(group + 1))).await;
                running.set(running.get() - 1);
                if group == 2 {
                    anyhow::bail!("group {group} failed");
                }
                Ok(())
            }
        })
        .await;
        assert_eq!(result.unwrap_err().to_string(), "group 2 failed");
        assert_eq!(most.get(), 2, "two groups at once");
        assert_eq!(running.get(), 0, "every started group ran to its end");
        // 0 and 1 start; 0 ends at 100 ms, 2 starts; 1 ends at 200 ms, 3
        // starts; 2 fails at 400 ms: 4 and 5 never start.
        assert_eq!(*started.borrow(), [0, 1, 2, 3]);
        assert!(stop.is_set());
    }
}
