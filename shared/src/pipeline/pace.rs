//! Pacing a shard's records: at most a rate per second, and optionally at
//! the original inter-arrival timing sped up; never waiting past the step's
//! stop time.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::model::record::{ArrivalTime, Record};

/// Where a sped-up replay of a shard started: its first record (arrival)
/// was put at `wall`; every later record is put at
/// `wall + (arrival - first arrival) / speedup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaceOrigin {
    pub wall: ArrivalTime,
    pub arrival: ArrivalTime,
}

/// One step's pace.
#[derive(Debug)]
pub struct Pace {
    /// At most this many records per second.
    pub records_per_second: Option<f64>,
    /// The original timing, this many times faster.
    pub speedup: Option<f64>,
    pub stop_at: Instant,
    /// When this step started, and the records it handed on since.
    started: Instant,
    sent: u64,
}

impl Pace {
    /// A step that `started` and stops handing records on at `stop_at`.
    pub fn new(
        records_per_second: Option<f64>,
        speedup: Option<f64>,
        started: Instant,
        stop_at: Instant,
    ) -> Self {
        Self {
            records_per_second,
            speedup,
            stop_at,
            started,
            sent: 0,
        }
    }

    /// Waits until the next piece may go and says how many of `records`
    /// (at most `max`) it holds; `None` when the wait would pass the stop
    /// time (the step ends, the next one waits). `origin` is the shard's,
    /// set on its first record.
    pub async fn next_piece(
        &self,
        records: &[Record],
        max: usize,
        origin: &mut Option<PaceOrigin>,
    ) -> Option<usize> {
        let mut n = max.min(records.len());
        if let Some(speedup) = self.speedup {
            let origin = *origin.get_or_insert(PaceOrigin {
                wall: now(),
                arrival: records[0].approximate_arrival_timestamp,
            });
            let due = |r: &Record| {
                let offset = (r.approximate_arrival_timestamp.epoch_millis()
                    - origin.arrival.epoch_millis()) as f64
                    / speedup;
                origin.wall.epoch_millis() + offset.max(0.0) as i64
            };
            let wait = due(&records[0]) - now().epoch_millis();
            if wait > 0 && !self.wait(Duration::from_millis(wait as u64)).await {
                return None;
            }
            let at = now().epoch_millis();
            n = records[..n]
                .iter()
                .take_while(|r| due(r) <= at)
                .count()
                .max(1);
        }
        if let Some(rate) = self.records_per_second {
            n = n.min(rate.ceil() as usize).max(1);
            let earliest = self.started + Duration::from_secs_f64(self.sent as f64 / rate);
            let wait = earliest.saturating_duration_since(Instant::now());
            if !wait.is_zero() && !self.wait(wait).await {
                return None;
            }
        }
        Some(n)
    }

    /// Counts records handed on and settled.
    pub fn sent(&mut self, records: usize) {
        self.sent += records as u64;
    }

    /// Sleeps `wait`, unless that would pass the stop time: then `false`.
    async fn wait(&self, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        // Waiting out the step's time either way: a step that returned at
        // once would have the state machine invoke the next one at once,
        // in a loop, through a long gap in the original traffic.
        tokio::time::sleep_until(until.min(self.stop_at)).await;
        until < self.stop_at
    }
}

fn now() -> ArrivalTime {
    ArrivalTime::from_datetime(chrono::Utc::now())
}
