//! The report: every count from what the services answered or hold, and
//! the checks that they add up.

use std::collections::BTreeSet;
use std::path::PathBuf;

use rewind_engine::jobs::mapping::report::MappingReport;
use rewind_local::stack::LOCAL_ARCHIVE_BUCKET;
use serde::Serialize;

use super::plan::{Phase, PhaseName};
use super::replay::ReplayOutcome;
use super::traffic::{Placed, RecordId, Traffic};
use super::{ARCHIVE_PREFIX, SHARDS, SHARDS_AFTER_RESHARD};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Report {
    pub(super) stream: String,
    pub(super) stream_arn: String,
    pub(super) shards: ShardsReport,
    pub(super) produced: Produced,
    pub(super) archived: Archived,
    pub(super) window: WindowReport,
    pub(super) replay: ReplayReport,
    pub(super) dlq: DlqReport,
    pub(super) consumer: ConsumerReport,
    pub(super) mapping: MappingSummary,
    pub(super) checks: Vec<Check>,
    pub(super) stack: StackReport,
    pub(super) elapsed_seconds: f64,
    pub(super) note: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ShardsReport {
    pub(super) before: i32,
    pub(super) after_reshard: i32,
    /// Open and closed shards at the end (the parents stay, closed).
    pub(super) listed_at_end: usize,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Produced {
    pub(super) user_records: usize,
    pub(super) kinesis_records: usize,
    pub(super) kpl_aggregates: usize,
    pub(super) user_records_in_aggregates: usize,
    pub(super) poison: usize,
    pub(super) phases: Vec<PhaseReport>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PhaseReport {
    pub(super) phase: PhaseName,
    pub(super) user_records: usize,
    pub(super) kinesis_records: usize,
    pub(super) kpl_aggregates: usize,
    pub(super) poison: usize,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Archived {
    pub(super) kinesis_records: usize,
    pub(super) location: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WindowReport {
    pub(super) from: i64,
    pub(super) to: i64,
    /// Kinesis records of the archive in the window.
    pub(super) kinesis_records: usize,
    /// How many of them the outage phase put.
    pub(super) from_outage_phase: usize,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ReplayReport {
    pub(super) execution_arn: String,
    pub(super) run_id: String,
    pub(super) records: u64,
    pub(super) delivered: u64,
    pub(super) failed_records: u64,
    pub(super) invocations: u64,
    pub(super) function_errors: u64,
    pub(super) shards: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DlqReport {
    pub(super) records: u64,
    pub(super) objects: usize,
    pub(super) poison_planted: usize,
    /// DLQ records that are planted poison records.
    pub(super) poison_found: usize,
    pub(super) location: String,
    pub(super) saved_to: PathBuf,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ConsumerReport {
    pub(super) records: usize,
    pub(super) distinct: usize,
    pub(super) file: PathBuf,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct MappingSummary {
    pub(super) records: u64,
    pub(super) invocations: u64,
    pub(super) function_errors: u64,
    pub(super) shards: usize,
}

#[derive(Debug, Serialize)]
pub(super) struct Check {
    pub(super) name: String,
    pub(super) ok: bool,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StackReport {
    pub(super) endpoint: String,
    /// Every port the stack listened on, the endpoint's first: all closed
    /// when the demo ends.
    pub(super) ports: Vec<u16>,
    /// The servers' process ids: all gone when the demo ends.
    pub(super) pids: Vec<u32>,
    pub(super) logs: PathBuf,
    pub(super) stopped: bool,
}

pub(super) struct ReportParts<'a> {
    pub(super) stream: String,
    pub(super) stream_arn: String,
    pub(super) bucket: String,
    pub(super) phases: &'a [Phase],
    pub(super) traffic: Traffic,
    pub(super) archived: BTreeSet<RecordId>,
    pub(super) in_window: BTreeSet<RecordId>,
    pub(super) replay: ReplayOutcome,
    pub(super) consumer: (usize, usize),
    pub(super) consumer_file: PathBuf,
    pub(super) mapping: MappingReport,
}

const NOTE: &str = "KPL aggregates travel as one Kinesis record each: the mapping, the \
archive and the replay deliver them whole (the consumer deaggregates), so every count after \
`produced` is in Kinesis records.";

impl Report {
    pub(super) fn new(parts: ReportParts<'_>) -> Report {
        let ReportParts {
            stream,
            stream_arn,
            bucket,
            phases,
            traffic,
            archived,
            in_window,
            replay,
            consumer,
            consumer_file,
            mapping,
        } = parts;
        let phase_reports: Vec<PhaseReport> = traffic
            .placed
            .iter()
            .map(|(name, placed)| PhaseReport {
                phase: *name,
                user_records: placed.user_records,
                kinesis_records: placed.records.len(),
                kpl_aggregates: placed.aggregates,
                poison: placed.poison.len(),
            })
            .collect();
        let sum =
            |f: fn(&Placed) -> usize| -> usize { traffic.placed.iter().map(|(_, p)| f(p)).sum() };
        let produced = Produced {
            user_records: sum(|p| p.user_records),
            kinesis_records: sum(|p| p.records.len()),
            kpl_aggregates: sum(|p| p.aggregates),
            user_records_in_aggregates: sum(|p| p.users_in_aggregates),
            poison: sum(|p| p.poison.len()),
            phases: phase_reports,
        };
        let outage: BTreeSet<RecordId> = traffic
            .placed
            .iter()
            .filter(|(name, _)| *name == PhaseName::Outage)
            .flat_map(|(_, p)| p.records.iter().cloned())
            .collect();
        let poison: BTreeSet<RecordId> = traffic
            .placed
            .iter()
            .flat_map(|(_, p)| p.poison.iter().cloned())
            .collect();
        let put: BTreeSet<RecordId> = traffic
            .placed
            .iter()
            .flat_map(|(_, p)| p.records.iter().cloned())
            .collect();
        let totals = &replay.summary.totals;
        let dlq_location = replay
            .summary
            .dlq
            .clone()
            .unwrap_or_else(|| format!("s3://{bucket}/dlq/aws/lambda/{}", replay.run_id));
        let planned: usize = phases.iter().map(|p| p.puts.len()).sum();
        let checks = vec![
            Check {
                name: format!("every record planned was put ({planned})"),
                ok: put.len() == planned,
            },
            Check {
                name: "archived = produced (Kinesis records, each once)".to_owned(),
                ok: archived == put,
            },
            Check {
                name: "the window holds exactly the outage's records".to_owned(),
                ok: in_window == outage,
            },
            Check {
                name: "the replay read the window".to_owned(),
                ok: totals.records == in_window.len() as u64,
            },
            Check {
                name: "replayed + DLQ = window".to_owned(),
                ok: totals.counters.delivered + replay.dlq.records == in_window.len() as u64,
            },
            Check {
                name: "DLQ = poison planted (the very records)".to_owned(),
                ok: replay.dlq.records == poison.len() as u64 && replay.dlq.starts == poison,
            },
            Check {
                name: "consumer = replayed, each record once".to_owned(),
                ok: consumer.0 as u64 == totals.counters.delivered && consumer.1 == consumer.0,
            },
        ];
        Report {
            shards: ShardsReport {
                before: SHARDS,
                after_reshard: SHARDS_AFTER_RESHARD,
                listed_at_end: traffic.shards_after,
            },
            produced,
            archived: Archived {
                kinesis_records: archived.len(),
                location: format!("s3://{LOCAL_ARCHIVE_BUCKET}/{ARCHIVE_PREFIX}/stream={stream}/"),
            },
            window: WindowReport {
                from: traffic.window.0,
                to: traffic.window.1,
                kinesis_records: in_window.len(),
                from_outage_phase: in_window.intersection(&outage).count(),
            },
            replay: ReplayReport {
                execution_arn: replay.execution_arn,
                run_id: replay.run_id,
                records: totals.records,
                delivered: totals.counters.delivered,
                failed_records: totals.counters.failed_records,
                invocations: totals.counters.invocations,
                function_errors: totals.counters.function_errors,
                shards: totals.shards,
            },
            dlq: DlqReport {
                records: replay.dlq.records,
                objects: replay.dlq.objects,
                poison_planted: poison.len(),
                poison_found: replay.dlq.starts.intersection(&poison).count(),
                location: dlq_location,
                saved_to: replay.dlq.saved_to,
            },
            consumer: ConsumerReport {
                records: consumer.0,
                distinct: consumer.1,
                file: consumer_file,
            },
            mapping: MappingSummary {
                records: mapping.records(),
                invocations: mapping.shards.iter().map(|s| s.counters.invocations).sum(),
                function_errors: mapping
                    .shards
                    .iter()
                    .map(|s| s.counters.function_errors)
                    .sum(),
                shards: mapping.shards.len(),
            },
            checks,
            stack: StackReport::default(),
            elapsed_seconds: 0.0,
            note: NOTE,
            stream,
            stream_arn,
        }
    }
}
