//! What delivery did, counted the same way everywhere: per batch, per step,
//! per shard and per run (the mapping's report, a replay's progress and its
//! totals all add these up).

use std::ops::AddAssign;

use serde::{Deserialize, Serialize};

/// Delivery counters. Serialised flat (`#[serde(flatten)]` in the reports
/// that hold them), so the JSON of every report keeps its field names.
/// Every field defaults: a replay's progress from an older step may lack
/// one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Records acknowledged by a successful invocation (or put on a
    /// target stream).
    #[serde(default)]
    pub delivered: u64,
    /// Records no filter matched: not sent, and processed as the mapping
    /// counts them.
    #[serde(default)]
    pub filtered: u64,
    /// Records (and their batches) sent to the on-failure destination.
    #[serde(default)]
    pub failed_records: u64,
    #[serde(default)]
    pub failed_batches: u64,
    /// Invokes of the function (or `PutRecords` calls).
    #[serde(default)]
    pub invocations: u64,
    #[serde(default)]
    pub function_errors: u64,
}

impl AddAssign for Counters {
    fn add_assign(&mut self, other: Self) {
        self.delivered += other.delivered;
        self.filtered += other.filtered;
        self.failed_records += other.failed_records;
        self.failed_batches += other.failed_batches;
        self.invocations += other.invocations;
        self.function_errors += other.function_errors;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_field_by_field_and_serialises_flat_in_camel_case() {
        let a = Counters {
            delivered: 5,
            filtered: 1,
            failed_records: 2,
            failed_batches: 1,
            invocations: 3,
            function_errors: 1,
        };
        let mut total = a;
        total += a;
        assert_eq!(
            total,
            Counters {
                delivered: 10,
                filtered: 2,
                failed_records: 4,
                failed_batches: 2,
                invocations: 6,
                function_errors: 2,
            }
        );
        let json = serde_json::to_value(total).unwrap();
        assert_eq!(json["functionErrors"], 2);
        assert_eq!(json["failedBatches"], 2);
        let back: Counters = serde_json::from_str(r#"{"delivered": 1}"#).unwrap();
        assert_eq!(back.delivered, 1);
        assert_eq!(back.invocations, 0);
    }
}
