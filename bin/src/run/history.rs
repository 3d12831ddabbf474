//! Reading an execution for its progress: the state machine's definition
//! once, then only the history events not counted yet.

use aws_sdk_sfn::Client;
use aws_sdk_sfn::operation::get_execution_history::GetExecutionHistoryError;
use serde_json::Value;

use super::error::{RunError, service_error};
use super::tally::{MapRunItems, Tally, innermost_maps};

impl Tally {
    /// Reads the execution's state machine definition to tell Maps over
    /// shards from Maps over groups of them. Without it (no permission for
    /// DescribeStateMachineForExecution, say) every Map counts.
    pub(super) async fn learn_maps(&mut self, client: &Client, arn: &str) {
        let described = client
            .describe_state_machine_for_execution()
            .execution_arn(arn)
            .send()
            .await;
        self.shard_maps = described
            .ok()
            .and_then(|d| serde_json::from_str::<Value>(d.definition()).ok())
            .map(|definition| innermost_maps(&definition));
    }

    /// Describes the Map Runs (Distributed Maps) not known to have ended:
    /// their items run in child executions, whose events this execution's
    /// history does not hold. A Map Run that can't be described (no
    /// permission for DescribeMapRun, say) keeps its last counts.
    pub(super) async fn read_map_runs(&mut self, client: &Client) {
        for (_, arn) in &self.map_runs {
            if self.map_run_items.get(arn).is_some_and(|items| items.ended) {
                continue;
            }
            let Ok(run) = client.describe_map_run().map_run_arn(arn).send().await else {
                continue;
            };
            let counts = run.item_counts();
            let count = |n: i64| u64::try_from(n).unwrap_or(0);
            let items = MapRunItems {
                total: counts.map_or(0, |c| count(c.total())),
                succeeded: counts.map_or(0, |c| count(c.succeeded())),
                failed: counts.map_or(0, |c| {
                    count(c.failed()) + count(c.aborted()) + count(c.timed_out())
                }),
                ended: !matches!(run.status(), aws_sdk_sfn::types::MapRunStatus::Running),
            };
            self.map_run_items.insert(arn.clone(), items);
        }
    }

    /// Counts the events after `last_event`. History is asked newest first,
    /// so a long execution's poll reads one page, not all of its (up to
    /// 25,000) events again.
    pub(super) async fn read_new(&mut self, client: &Client, arn: &str) -> Result<(), RunError> {
        let mut newest = self.last_event;
        let mut pages = client
            .get_execution_history()
            .execution_arn(arn)
            .reverse_order(true)
            .max_results(1000)
            .include_execution_data(false)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|error| {
                service_error(
                    error,
                    |e| {
                        matches!(
                            e,
                            GetExecutionHistoryError::ExecutionDoesNotExist(_)
                                | GetExecutionHistoryError::InvalidArn(_)
                        )
                    },
                    format!("reading the history of {arn}"),
                )
            })?;
            let events = page.events();
            let mut reached_counted = false;
            for event in events {
                if event.id() > self.last_event {
                    self.count(event);
                    newest = newest.max(event.id());
                } else {
                    reached_counted = true;
                }
            }
            // Older pages hold only counted events, unless the service
            // ignored the order asked for (then every page is read).
            let ascending = matches!(events, [first, .., last] if first.id() < last.id());
            if reached_counted && !ascending {
                break;
            }
        }
        self.last_event = newest;
        Ok(())
    }
}
