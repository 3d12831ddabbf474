//! Waiting before a retry, shared by every retry loop of the engine
//! (throttled reads, unprocessed DynamoDB items, throttled invokes).

use std::time::Duration;

/// Full jitter over an exponential ceiling (AWS architecture blog's
/// recommendation): spreads retries of many containers apart.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let ceiling = base
        .saturating_mul(1 << attempt.min(10))
        .min(Duration::from_secs(5));
    ceiling.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_under_a_cap_with_jitter() {
        let base = Duration::from_millis(100);
        for attempt in 0..20 {
            let d = backoff(base, attempt);
            let ceiling = (base * (1 << attempt.min(10))).min(Duration::from_secs(5));
            assert!(d <= ceiling, "{attempt}: {d:?} > {ceiling:?}");
        }
        assert_eq!(backoff(Duration::ZERO, 5), Duration::ZERO);
    }
}
