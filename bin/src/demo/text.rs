//! The report as text, for a person at a terminal.

use super::report::{PhaseReport, Report};

impl Report {
    pub(super) fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let p = &self.produced;
        let _ = writeln!(
            out,
            "\nKinesis Rewind demo: stream {} ({} shards, resharded to {} during the outage)\n",
            self.stream, self.shards.before, self.shards.after_reshard
        );
        let _ = writeln!(
            out,
            "produced       {} user records as {} Kinesis records ({} KPL aggregates holding {} user records)",
            p.user_records, p.kinesis_records, p.kpl_aggregates, p.user_records_in_aggregates
        );
        for phase in &p.phases {
            let _ = writeln!(
                out,
                "  {:<12} {} user / {} Kinesis records, {} aggregates{}",
                phase.phase_label(),
                phase.user_records,
                phase.kinesis_records,
                phase.kpl_aggregates,
                if phase.poison > 0 {
                    format!(", {} poison planted", phase.poison)
                } else {
                    String::new()
                }
            );
        }
        let _ = writeln!(
            out,
            "archived       {} Kinesis records by the archiver behind the event source mapping ({} invocations, {} shards polled)",
            self.archived.kinesis_records, self.mapping.invocations, self.mapping.shards
        );
        let _ = writeln!(
            out,
            "outage window  [{}, {}): {} Kinesis records in the archive ({} of them put during the outage)",
            self.window.from,
            self.window.to,
            self.window.kinesis_records,
            self.window.from_outage_phase
        );
        let _ = writeln!(
            out,
            "replayed       {} delivered to `target` over {} shards ({} invocations, {} function errors bisected)",
            self.replay.delivered,
            self.replay.shards,
            self.replay.invocations,
            self.replay.function_errors
        );
        let _ = writeln!(
            out,
            "DLQ            {} records in {} objects: {} of the {} poison records planted",
            self.dlq.records, self.dlq.objects, self.dlq.poison_found, self.dlq.poison_planted
        );
        let _ = writeln!(
            out,
            "consumer       {} records accepted ({} distinct), by its own count",
            self.consumer.records, self.consumer.distinct
        );
        let _ = writeln!(out, "\nchecks");
        for check in &self.checks {
            let _ = writeln!(
                out,
                "  {} {}",
                if check.ok { "ok      " } else { "MISMATCH" },
                check.name
            );
        }
        let _ = writeln!(out, "\n{}", textwrap(self.note));
        let _ = writeln!(out, "\nwhere to look");
        let _ = writeln!(
            out,
            "  archive      {} (in the stack's S3, gone with it)",
            self.archived.location
        );
        let _ = writeln!(
            out,
            "  DLQ          {}/ (saved to {})",
            self.dlq.location,
            self.dlq.saved_to.display()
        );
        let _ = writeln!(out, "  execution    {}", self.replay.execution_arn);
        let _ = writeln!(out, "  consumer     {}", self.consumer.file.display());
        let _ = writeln!(
            out,
            "  logs         {} (demo.log: the mapping, the archiver's invocations, throttles)",
            self.stack.logs.display()
        );
        let _ = writeln!(
            out,
            "\nthe local stack is stopped; took {:.0} s",
            self.elapsed_seconds
        );
        out
    }
}

impl PhaseReport {
    fn phase_label(&self) -> &'static str {
        self.phase.label()
    }
}

/// Wraps a paragraph at 78 columns.
fn textwrap(text: &str) -> String {
    let mut out = String::new();
    let mut line = 0;
    for word in text.split_whitespace() {
        if line > 0 && line + 1 + word.len() > 78 {
            out.push('\n');
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += word.len();
    }
    out
}
