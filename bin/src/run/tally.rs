//! Counting an execution's progress from its history events: iterations
//! of the Maps over shards (only the innermost Maps: a Map over lineage
//! groups holds its Map over shards) and task steps, in whatever order the
//! events are read. A Distributed Map's items run as child executions with
//! histories of their own: its counts are its Map Run's item counts
//! (`DescribeMapRun`), and the steps counted are this execution's own.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_sfn::types::{HistoryEvent, HistoryEventType};
use serde_json::{Value, json};

/// What the history says so far: iterations of the Maps over shards, and
/// task steps (Lambda invocations).
#[derive(Debug, Default)]
pub(super) struct Tally {
    /// Highest event id counted: later reads count only newer events.
    pub(super) last_event: i64,
    /// The Map states that iterate over shards: those with no Map inside
    /// (the replay machine's Map over lineage groups holds its Map over
    /// shards). `None` counts every Map (the definition was not readable).
    pub(super) shard_maps: Option<BTreeSet<String>>,
    /// Names of entered Map states by event id: a `MapStateStarted` event
    /// (which carries the item count) follows its `MapStateEntered`.
    map_entered: BTreeMap<i64, String>,
    /// `MapStateStarted`: the entered event it follows, and the item count.
    map_started: Vec<(i64, u64)>,
    /// Per Map state: iterations started, succeeded, failed or aborted.
    iterations: BTreeMap<String, Iterations>,
    /// Task invocations that returned.
    steps: u64,
    /// Task invocations that failed (then retried or caught).
    steps_failed: u64,
    /// The state entered last, by event id.
    pub(super) state: Option<(i64, String)>,
    /// Map Runs started (Distributed Maps): event id and Map Run ARN.
    pub(super) map_runs: Vec<(i64, String)>,
    /// A Map Run's item counts, by its ARN, as last described.
    pub(super) map_run_items: BTreeMap<String, MapRunItems>,
}

/// A Map Run's items, as `DescribeMapRun` counts them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct MapRunItems {
    pub(super) total: u64,
    pub(super) succeeded: u64,
    pub(super) failed: u64,
    /// The Map Run ended: its counts are final.
    pub(super) ended: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct Iterations {
    started: u64,
    done: u64,
    failed: u64,
}

/// Shards of one Map state (summed over its runs).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Shards {
    total: u64,
    done: u64,
    failed: u64,
}

/// The Map states of an ASL definition that contain no Map, at any depth.
pub(super) fn innermost_maps(definition: &Value) -> BTreeSet<String> {
    /// Adds the innermost Maps under `states`; true if `states` holds a Map.
    fn walk(states: &Value, found: &mut BTreeSet<String>) -> bool {
        let mut any = false;
        for (name, state) in states.as_object().into_iter().flatten() {
            let nested = |key: &str| state.get(key).and_then(|p| p.get("States"));
            let distributed = state
                .pointer("/ItemProcessor/ProcessorConfig/Mode")
                .and_then(Value::as_str)
                == Some("DISTRIBUTED");
            match state["Type"].as_str() {
                // Its items' Maps run in child executions, not in this
                // history.
                Some("Map") if distributed => {
                    any = true;
                    found.insert(name.clone());
                }
                Some("Map") => {
                    any = true;
                    let inner = nested("ItemProcessor").or_else(|| nested("Iterator"));
                    if !inner.is_some_and(|states| walk(states, found)) {
                        found.insert(name.clone());
                    }
                }
                Some("Parallel") => {
                    for branch in state["Branches"].as_array().into_iter().flatten() {
                        any |= walk(&branch["States"], found);
                    }
                }
                _ => {}
            }
        }
        any
    }
    let mut found = BTreeSet::new();
    walk(&definition["States"], &mut found);
    found
}

impl Tally {
    pub(super) fn count(&mut self, event: &HistoryEvent) {
        use HistoryEventType as T;
        let iteration = |e: &HistoryEvent| {
            e.map_iteration_started_event_details()
                .or(e.map_iteration_succeeded_event_details())
                .or(e.map_iteration_failed_event_details())
                .or(e.map_iteration_aborted_event_details())
                .and_then(|d| d.name())
                .unwrap_or_default()
                .to_owned()
        };
        match event.r#type() {
            T::MapStateEntered => {
                if let Some(entered) = event.state_entered_event_details() {
                    self.map_entered
                        .insert(event.id(), entered.name().to_owned());
                }
            }
            T::MapStateStarted => {
                let length = event
                    .map_state_started_event_details()
                    .map_or(0, |d| d.length());
                self.map_started.push((
                    event.previous_event_id(),
                    u64::try_from(length).unwrap_or(0),
                ));
            }
            T::MapIterationStarted => {
                self.iterations.entry(iteration(event)).or_default().started += 1
            }
            T::MapIterationSucceeded => {
                self.iterations.entry(iteration(event)).or_default().done += 1
            }
            T::MapIterationFailed | T::MapIterationAborted => {
                self.iterations.entry(iteration(event)).or_default().failed += 1
            }
            T::MapRunStarted => {
                if let Some(run) = event.map_run_started_event_details()
                    && let Some(arn) = run.map_run_arn()
                {
                    self.map_runs.push((event.id(), arn.to_owned()));
                }
            }
            T::LambdaFunctionSucceeded | T::TaskSucceeded => self.steps += 1,
            T::LambdaFunctionFailed
            | T::LambdaFunctionTimedOut
            | T::LambdaFunctionStartFailed
            | T::LambdaFunctionScheduleFailed
            | T::TaskFailed
            | T::TaskTimedOut
            | T::TaskStartFailed
            | T::TaskSubmitFailed => self.steps_failed += 1,
            _ => {}
        }
        if let Some(entered) = event.state_entered_event_details()
            && self.state.as_ref().is_none_or(|(id, _)| *id < event.id())
        {
            self.state = Some((event.id(), entered.name().to_owned()));
        }
    }

    /// Shards per Map over shards, in the order the Maps started.
    fn shards(&self) -> Vec<(String, Shards)> {
        let counted = |name: &str| self.shard_maps.as_ref().is_none_or(|m| m.contains(name));
        let mut maps: Vec<(String, Shards)> = Vec::new();
        fn entry<'a>(maps: &'a mut Vec<(String, Shards)>, name: &str) -> &'a mut Shards {
            let at = match maps.iter().position(|(n, _)| n == name) {
                Some(at) => at,
                None => {
                    maps.push((name.to_owned(), Shards::default()));
                    maps.len() - 1
                }
            };
            &mut maps[at].1
        }
        let mut started = self.map_started.clone();
        started.sort_unstable();
        for (entered, length) in started {
            let name = self.map_entered.get(&entered).map_or("", String::as_str);
            if counted(name) {
                entry(&mut maps, name).total += length;
            }
        }
        // A Map Run belongs to the Map state entered last before it.
        for (id, arn) in &self.map_runs {
            let name = self
                .map_entered
                .range(..*id)
                .next_back()
                .map_or("", |(_, name)| name.as_str());
            if let (true, Some(items)) = (counted(name), self.map_run_items.get(arn)) {
                let shards = entry(&mut maps, name);
                shards.total = shards.total.max(items.total);
                shards.done += items.succeeded;
                shards.failed += items.failed;
            }
        }
        for (name, iterations) in &self.iterations {
            if counted(name) {
                let shards = entry(&mut maps, name);
                // Iterations can be seen before the item count is.
                shards.total = shards.total.max(iterations.started);
                shards.done = iterations.done;
                shards.failed = iterations.failed;
            }
        }
        maps
    }

    pub(super) fn line(&self) -> String {
        let maps = self.shards();
        let mut line = match &maps[..] {
            [] => "no shards planned".to_owned(),
            [(_, shards)] => format!("shards {}/{} done", shards.done, shards.total),
            _ => {
                maps.iter()
                    .map(|(name, shards)| format!("{name} {}/{}", shards.done, shards.total))
                    .collect::<Vec<_>>()
                    .join(", ")
                    + " shards done"
            }
        };
        let failed: u64 = maps.iter().map(|(_, s)| s.failed).sum();
        if failed > 0 {
            line.push_str(&format!(" ({failed} failed)"));
        }
        line.push_str(&format!(", {} steps", self.steps));
        if self.steps_failed > 0 {
            line.push_str(&format!(" ({} failed attempts)", self.steps_failed));
        }
        line
    }

    pub(super) fn json(&self) -> Value {
        let maps: serde_json::Map<String, Value> = self
            .shards()
            .into_iter()
            .map(|(name, s)| {
                let counts =
                    json!({"shards": s.total, "shardsDone": s.done, "shardsFailed": s.failed});
                (name, counts)
            })
            .collect();
        json!({
            "maps": maps,
            "steps": self.steps,
            "stepsFailed": self.steps_failed,
        })
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_sfn::primitives::DateTime;

    use super::*;

    fn event(id: i64, kind: HistoryEventType) -> HistoryEvent {
        HistoryEvent::builder()
            .id(id)
            .r#type(kind)
            .timestamp(DateTime::from_secs(0))
            .build()
            .unwrap()
    }

    /// A history of the replay machine's shape: a Map over shards (scrape
    /// first), then a Map over lineage groups holding a Map over shards.
    fn nested_history() -> Vec<HistoryEvent> {
        use HistoryEventType as T;
        use aws_sdk_sfn::types::{
            MapIterationEventDetails, MapStateStartedEventDetails, StateEnteredEventDetails,
        };
        let entered = |id, name: &str| {
            HistoryEvent::builder()
                .id(id)
                .r#type(T::MapStateEntered)
                .timestamp(DateTime::from_secs(0))
                .state_entered_event_details(
                    StateEnteredEventDetails::builder()
                        .name(name)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap()
        };
        let started = |id, previous, length| {
            HistoryEvent::builder()
                .id(id)
                .previous_event_id(previous)
                .r#type(T::MapStateStarted)
                .timestamp(DateTime::from_secs(0))
                .map_state_started_event_details(
                    MapStateStartedEventDetails::builder()
                        .length(length)
                        .build(),
                )
                .build()
                .unwrap()
        };
        let iteration = |id, kind: T, map: &str| {
            let details = MapIterationEventDetails::builder().name(map).build();
            let builder = HistoryEvent::builder()
                .id(id)
                .r#type(kind.clone())
                .timestamp(DateTime::from_secs(0));
            match kind {
                T::MapIterationStarted => builder.map_iteration_started_event_details(details),
                T::MapIterationSucceeded => builder.map_iteration_succeeded_event_details(details),
                _ => builder.map_iteration_failed_event_details(details),
            }
            .build()
            .unwrap()
        };
        vec![
            event(1, T::LambdaFunctionSucceeded),
            entered(2, "ScrapeShards"),
            started(3, 2, 2),
            iteration(4, T::MapIterationStarted, "ScrapeShards"),
            iteration(5, T::MapIterationStarted, "ScrapeShards"),
            event(6, T::LambdaFunctionFailed),
            iteration(7, T::MapIterationSucceeded, "ScrapeShards"),
            iteration(8, T::MapIterationSucceeded, "ScrapeShards"),
            entered(9, "ReplayGroups"),
            started(10, 9, 1),
            iteration(11, T::MapIterationStarted, "ReplayGroups"),
            entered(12, "ReplayShards"),
            started(13, 12, 3),
            iteration(14, T::MapIterationStarted, "ReplayShards"),
            event(15, T::LambdaFunctionSucceeded),
            iteration(16, T::MapIterationSucceeded, "ReplayShards"),
            iteration(17, T::MapIterationStarted, "ReplayShards"),
            iteration(18, T::MapIterationFailed, "ReplayShards"),
        ]
    }

    #[test]
    fn tally_counts_shards_of_the_innermost_maps_whatever_the_order() {
        let definition = json!({"States": {
            "ScrapeShards": {"Type": "Map", "ItemProcessor": {"States": {"Step": {"Type": "Task"}}}},
            "ReplayGroups": {"Type": "Map", "ItemProcessor": {"States": {
                "ReplayShards": {"Type": "Map", "Iterator": {"States": {"Step": {"Type": "Task"}}}}
            }}},
            "Summary": {"Type": "Task"},
        }});
        let maps = innermost_maps(&definition);
        assert_eq!(
            maps,
            BTreeSet::from(["ReplayShards".into(), "ScrapeShards".into()])
        );

        // Newest first, as asked, and in two reads.
        let mut history = nested_history();
        history.reverse();
        let mut tally = Tally {
            shard_maps: Some(maps),
            ..Tally::default()
        };
        for event in history.iter().skip(5).chain(&history[..5]) {
            tally.count(event);
        }
        assert_eq!(
            tally.line(),
            "ScrapeShards 2/2, ReplayShards 1/3 shards done (1 failed), 2 steps (1 failed attempts)"
        );
        assert_eq!(tally.json()["maps"]["ReplayShards"]["shardsFailed"], 1);
        assert_eq!(tally.json()["maps"]["ScrapeShards"]["shardsDone"], 2);

        // Without the definition every Map counts.
        let mut tally = Tally::default();
        for event in &nested_history()[..8] {
            tally.count(event);
        }
        assert_eq!(tally.line(), "shards 2/2 done, 1 steps (1 failed attempts)");
    }

    #[test]
    fn a_distributed_map_counts_its_map_runs_items() {
        use aws_sdk_sfn::types::{MapRunStartedEventDetails, StateEnteredEventDetails};
        let definition = json!({"States": {
            "ReplayGroups": {"Type": "Map", "ItemProcessor": {
                "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                "States": {"ReplayShards": {"Type": "Map", "ItemProcessor": {"States": {}}}}
            }},
        }});
        let maps = innermost_maps(&definition);
        assert_eq!(maps, BTreeSet::from(["ReplayGroups".into()]));
        let mut tally = Tally {
            shard_maps: Some(maps),
            ..Tally::default()
        };
        tally.count(
            &HistoryEvent::builder()
                .id(4)
                .r#type(HistoryEventType::MapStateEntered)
                .timestamp(DateTime::from_secs(0))
                .state_entered_event_details(
                    StateEnteredEventDetails::builder()
                        .name("ReplayGroups")
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        );
        tally.count(
            &HistoryEvent::builder()
                .id(6)
                .r#type(HistoryEventType::MapRunStarted)
                .timestamp(DateTime::from_secs(0))
                .map_run_started_event_details(
                    MapRunStartedEventDetails::builder()
                        .map_run_arn("arn:run")
                        .build(),
                )
                .build()
                .unwrap(),
        );
        assert_eq!(tally.line(), "no shards planned, 0 steps");
        tally.map_run_items.insert(
            "arn:run".into(),
            MapRunItems {
                total: 5,
                succeeded: 3,
                failed: 1,
                ended: false,
            },
        );
        assert_eq!(tally.line(), "shards 3/5 done (1 failed), 0 steps");
    }
}
