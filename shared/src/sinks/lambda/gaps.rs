//! Engine time between invokes: on each lane, from the moment a batch's
//! answer arrives to the moment the next invoke is sent. That is what the
//! step itself costs the function's throughput (judging the answer,
//! cutting and writing the next batch, and at a piece's end the
//! checkpoint, pacing and the next page), measured on the real path and
//! summarised without keeping a list: a fixed histogram, as bounded as a
//! step must be.

use std::time::Duration;

use tokio::time::Instant;

/// Gaps up to this many microseconds are counted to the bucket's width.
const FINE_LIMIT_US: u64 = 20_000;
const FINE_WIDTH_US: u64 = 10;
const FINE_BUCKETS: usize = (FINE_LIMIT_US / FINE_WIDTH_US) as usize;
/// Longer gaps by powers of two: 20 ms to about 12 days.
const COARSE_BUCKETS: usize = 36;

/// The gaps of one step (or one delivery), per lane.
#[derive(Debug, Clone)]
pub struct EngineGaps {
    /// When each lane's last answer came (none before its first invoke,
    /// or after a failed call).
    answered: Vec<Option<Instant>>,
    fine: Box<[u32; FINE_BUCKETS]>,
    coarse: [u32; COARSE_BUCKETS],
    count: u64,
    total: Duration,
    max: Duration,
}

impl Default for EngineGaps {
    fn default() -> Self {
        Self {
            answered: Vec::new(),
            fine: Box::new([0; FINE_BUCKETS]),
            coarse: [0; COARSE_BUCKETS],
            count: 0,
            total: Duration::ZERO,
            max: Duration::ZERO,
        }
    }
}

/// What a step's gaps came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GapSummary {
    /// Gaps measured (invokes that followed an answer on their lane).
    pub count: u64,
    /// Upper bound of the bucket holding the median (10 µs wide below
    /// 20 ms).
    pub median: Duration,
    pub p90: Duration,
    pub mean: Duration,
    pub max: Duration,
}

impl EngineGaps {
    /// An invoke is about to be sent on `lane`.
    pub fn request(&mut self, lane: usize) {
        if let Some(Some(answered)) = self.answered.get(lane) {
            self.record(answered.elapsed());
        }
    }

    /// An answer arrived on `lane`.
    pub fn answer(&mut self, lane: usize) {
        if self.answered.len() <= lane {
            self.answered.resize(lane + 1, None);
        }
        self.answered[lane] = Some(Instant::now());
    }

    /// The call on `lane` failed: the wait before the next one is not the
    /// engine's.
    pub fn forget(&mut self, lane: usize) {
        if let Some(answered) = self.answered.get_mut(lane) {
            *answered = None;
        }
    }

    /// Counts one gap.
    pub fn record(&mut self, gap: Duration) {
        let us = u64::try_from(gap.as_micros()).unwrap_or(u64::MAX);
        if us < FINE_LIMIT_US {
            self.fine[(us / FINE_WIDTH_US) as usize] += 1;
        } else {
            let doublings = (us / FINE_LIMIT_US).ilog2() as usize;
            self.coarse[doublings.min(COARSE_BUCKETS - 1)] += 1;
        }
        self.count += 1;
        self.total += gap;
        self.max = self.max.max(gap);
    }

    /// The summary, or none when no gap was measured.
    pub fn summary(&self) -> Option<GapSummary> {
        if self.count == 0 {
            return None;
        }
        Some(GapSummary {
            count: self.count,
            median: self.quantile(0.5),
            p90: self.quantile(0.9),
            mean: self.total / u32::try_from(self.count).unwrap_or(u32::MAX),
            max: self.max,
        })
    }

    /// The upper bound of the bucket that holds the `q` quantile (never
    /// above the largest gap seen).
    fn quantile(&self, q: f64) -> Duration {
        let rank = ((self.count as f64 * q).ceil() as u64).max(1);
        let mut seen = 0u64;
        let fine = self
            .fine
            .iter()
            .enumerate()
            .map(|(i, &n)| (n, Duration::from_micros((i as u64 + 1) * FINE_WIDTH_US)));
        let coarse = self.coarse.iter().enumerate().map(|(i, &n)| {
            (
                n,
                Duration::from_micros(FINE_LIMIT_US.saturating_mul(2u64 << i)),
            )
        });
        for (n, upper) in fine.chain(coarse) {
            seen += u64::from(n);
            if seen >= rank {
                return upper.min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_buckets_and_never_pass_the_largest_gap() {
        let mut gaps = EngineGaps::default();
        assert_eq!(gaps.summary(), None);
        for us in [
            100, 200, 300, 400, 1_000, 1_005, 1_500, 2_000, 3_000, 50_000,
        ] {
            gaps.record(Duration::from_micros(us));
        }
        let summary = gaps.summary().unwrap();
        assert_eq!(summary.count, 10);
        // The 5th of 10 gaps is 1,000 µs: its bucket is [1,000, 1,010).
        assert_eq!(summary.median, Duration::from_micros(1_010));
        // The 9th is 3,000 µs.
        assert_eq!(summary.p90, Duration::from_micros(3_010));
        assert_eq!(summary.max, Duration::from_micros(50_000));
        assert_eq!(summary.mean, Duration::from_nanos(5_950_500));
        let mut one = EngineGaps::default();
        one.record(Duration::from_micros(25_000));
        // Its bucket reaches 40 ms; the largest gap caps it.
        assert_eq!(one.summary().unwrap().median, Duration::from_micros(25_000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_gap_runs_from_a_lanes_answer_to_its_next_request() {
        let mut gaps = EngineGaps::default();
        gaps.request(0); // the first invoke follows no answer
        gaps.answer(0);
        tokio::time::advance(Duration::from_micros(700)).await;
        gaps.request(1); // another lane: no answer of its own yet
        gaps.request(0);
        gaps.answer(0);
        gaps.forget(0); // a throttled call: its backoff is not counted
        tokio::time::advance(Duration::from_secs(1)).await;
        gaps.request(0);
        let summary = gaps.summary().unwrap();
        assert_eq!(summary.count, 1);
        assert_eq!(summary.max, Duration::from_micros(700));
    }
}
