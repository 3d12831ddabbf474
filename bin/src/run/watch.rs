//! Following an execution to its end: describe, read the new history, show
//! the progress, until it is no longer running.

use std::time::Duration;

use aws_sdk_sfn::Client;
use aws_sdk_sfn::types::ExecutionStatus;
use indicatif::{ProgressBar, ProgressStyle};

use super::execution::describe;
use super::tally::Tally;
use super::view::{elapsed, ended, output, print_json, view};

/// Follows the execution until it ends, then prints its output (or, with
/// `json`, its description and progress).
pub(super) async fn watch(
    client: &Client,
    arn: &str,
    every: Duration,
    json: bool,
) -> anyhow::Result<()> {
    let progress = ProgressView::new();
    let mut tally = Tally::default();
    tally.learn_maps(client, arn).await;
    loop {
        // Described first, history second: once the description says the
        // execution ended, the history read after it is complete.
        let described = describe(client, arn).await?;
        tally.read_new(client, arn).await?;
        tally.read_map_runs(client).await;
        let running = matches!(
            described.status(),
            ExecutionStatus::Running | ExecutionStatus::PendingRedrive
        );
        progress.show(described.status(), &tally, running);
        if !running {
            eprintln!(
                "execution {} {} after {}: {}",
                described.name().unwrap_or(arn),
                described.status(),
                elapsed(&described),
                tally.line()
            );
            if json {
                print_json(&view(&described, Some(&tally)))?;
            }
            if *described.status() != ExecutionStatus::Succeeded {
                return Err(ended(&described).into());
            }
            if !json {
                print_json(&output(&described))?;
            }
            return Ok(());
        }
        tokio::time::sleep(every).await;
    }
}

/// The progress view on stderr: a live line on a terminal, otherwise a
/// plain line whenever the progress changes (logs, CI, pipes).
struct ProgressView {
    bar: ProgressBar,
    last: std::cell::RefCell<String>,
}

impl ProgressView {
    fn new() -> Self {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed:>4} {wide_msg}")
                .expect("a valid template"),
        );
        if !bar.is_hidden() {
            bar.enable_steady_tick(Duration::from_millis(120));
        }
        ProgressView {
            bar,
            last: Default::default(),
        }
    }

    fn show(&self, status: &ExecutionStatus, tally: &Tally, running: bool) {
        let mut line = format!("{status}: {}", tally.line());
        if let (true, Some((_, state))) = (running, &tally.state) {
            line.push_str(&format!(", in {state}"));
        }
        if !running {
            self.bar.finish_and_clear();
        } else if self.bar.is_hidden() {
            let mut last = self.last.borrow_mut();
            if *last != line {
                eprintln!("{line}");
                *last = line;
            }
        } else {
            self.bar.set_message(line);
        }
    }
}
