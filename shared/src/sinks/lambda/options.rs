//! The mapping's options (`BatchSize`, `MaximumRetryAttempts`,
//! `BisectBatchOnFunctionError`, `FunctionResponseTypes`,
//! `MaximumRecordAgeInSeconds`, `ParallelizationFactor`, `FilterCriteria`,
//! `TumblingWindowInSeconds`), their accepted ranges and the compiled
//! filters.

use serde::{Deserialize, Serialize};

use crate::model::record::Record;
use crate::pipeline::batch::lane_of;
use crate::pipeline::filter::{FilterCriteria, Filters};
use crate::request::RequestError;

/// The mapping's error-handling options, named and defaulted as the mapping
/// names and defaults them (see the README for replay's own defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct MappingOptions {
    /// 1 to 10,000; default 100.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// -1 (until the record expires) or 0 to 10,000; default -1.
    #[serde(default = "minus_one")]
    pub maximum_retry_attempts: i64,
    #[serde(default)]
    pub bisect_batch_on_function_error: bool,
    /// `["ReportBatchItemFailures"]` or empty.
    #[serde(default)]
    pub function_response_types: Vec<FunctionResponseType>,
    /// -1 (never) or 60 to 604,800; default -1.
    #[serde(default = "minus_one")]
    pub maximum_record_age_in_seconds: i64,
    /// 1 to 10; default 1.
    #[serde(default = "one")]
    pub parallelization_factor: usize,
    /// Records no filter matches are dropped (and count as processed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_criteria: Option<FilterCriteria>,
    /// 0 (no window) to 900; default 0. See [`crate::model::tumbling`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tumbling_window_in_seconds: u32,
}

/// Batches a lane may take in series within one piece ([`MappingOptions::piece`]).
const PIECE_BATCHES_PER_LANE: usize = 4;

/// The most records one GetRecords call answers (and so the mapping reads at
/// once): <https://docs.aws.amazon.com/kinesis/latest/APIReference/API_GetRecords.html>.
const GET_RECORDS_PAGE: usize = 10_000;

fn is_zero(value: &u32) -> bool {
    *value == 0
}

fn default_batch_size() -> usize {
    100
}

fn minus_one() -> i64 {
    -1
}

fn one() -> usize {
    1
}

impl Default for MappingOptions {
    fn default() -> Self {
        Self {
            batch_size: default_batch_size(),
            maximum_retry_attempts: -1,
            bisect_batch_on_function_error: false,
            function_response_types: Vec::new(),
            maximum_record_age_in_seconds: -1,
            parallelization_factor: 1,
            filter_criteria: None,
            tumbling_window_in_seconds: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FunctionResponseType {
    ReportBatchItemFailures,
}

impl MappingOptions {
    /// The ranges the mapping accepts, checked before any work.
    pub fn validate(&self) -> Result<(), RequestError> {
        let bad = |field: &str, message: String| RequestError {
            field: field.to_owned(),
            message,
        };
        if !(1..=10_000).contains(&self.batch_size) {
            return Err(bad(
                "BatchSize",
                format!("{}; accepted values: 1 to 10000", self.batch_size),
            ));
        }
        if !(self.maximum_retry_attempts == -1
            || (0..=10_000).contains(&self.maximum_retry_attempts))
        {
            return Err(bad(
                "MaximumRetryAttempts",
                format!(
                    "{}; accepted values: -1 (retry until the record expires) or 0 to 10000",
                    self.maximum_retry_attempts
                ),
            ));
        }
        if !(self.maximum_record_age_in_seconds == -1
            || (60..=604_800).contains(&self.maximum_record_age_in_seconds))
        {
            return Err(bad(
                "MaximumRecordAgeInSeconds",
                format!(
                    "{}; accepted values: -1 (never) or 60 to 604800",
                    self.maximum_record_age_in_seconds
                ),
            ));
        }
        if !(1..=10).contains(&self.parallelization_factor) {
            return Err(bad(
                "ParallelizationFactor",
                format!("{}; accepted values: 1 to 10", self.parallelization_factor),
            ));
        }
        self.check_tumbling_window()?;
        self.filters()?;
        Ok(())
    }

    /// The compiled `FilterCriteria` (none: every record passes).
    pub fn filters(&self) -> Result<Filters, RequestError> {
        Filters::compile(&self.filter_criteria.clone().unwrap_or_default())
    }

    /// Records a replay settles at a time, and reads as a page: a batch per
    /// lane, and with several lanes up to four batches per lane, within the
    /// 10,000 records of a GetRecords page. Lanes don't wait for each other
    /// inside a piece, only at its end, and partition keys never split a
    /// piece evenly: with 1,000 keys a 1,000-record piece splits into
    /// lanes of 92 to 107, so at one batch per lane every piece took two
    /// invokes in series where most lanes needed one. Four batches a lane
    /// make that extra invoke one in five, and leave fewer short batches.
    pub fn piece(&self) -> usize {
        let lanes = self.parallelization_factor.max(1);
        let one = (self.batch_size * lanes).max(1);
        if lanes == 1 {
            return one;
        }
        one.max((one * PIECE_BATCHES_PER_LANE).min(GET_RECORDS_PAGE))
    }

    /// The lane of `record` among `ParallelizationFactor` lanes: by its
    /// partition key, so that each key's records stay in order.
    pub fn lane(&self, record: &Record) -> usize {
        lane_of(&record.partition_key, self.parallelization_factor)
    }

    /// `TumblingWindowInSeconds`, when set (1 to 900).
    pub fn tumbling_window(&self) -> Option<u32> {
        (self.tumbling_window_in_seconds > 0).then_some(self.tumbling_window_in_seconds)
    }

    pub(super) fn reports_item_failures(&self) -> bool {
        self.function_response_types
            .contains(&FunctionResponseType::ReportBatchItemFailures)
    }

    pub(super) fn retries_exhausted(&self, retries: i64) -> bool {
        self.maximum_retry_attempts >= 0 && retries > self.maximum_retry_attempts
    }
}

impl MappingOptions {
    /// A window's state is kept per shard (the guide's "1 MB per shard"), so
    /// batches of one shard must reach the function one after another:
    /// concurrent lanes of a shard would each start from the same state and
    /// one would overwrite the other's. The guide does not say how the two
    /// settings combine; replay refuses what it can't do faithfully.
    fn check_tumbling_window(&self) -> Result<(), RequestError> {
        let seconds = self.tumbling_window_in_seconds;
        let bad = |message: String| RequestError {
            field: "TumblingWindowInSeconds".to_owned(),
            message,
        };
        if seconds > crate::model::tumbling::MAX_WINDOW_SECONDS {
            return Err(bad(format!(
                "{seconds}; accepted values: 0 (no window) or 1 to 900"
            )));
        }
        if seconds > 0 && self.parallelization_factor > 1 {
            return Err(bad(format!(
                "{seconds} with ParallelizationFactor {}: a window's state is kept per shard, so it applies with ParallelizationFactor 1 only",
                self.parallelization_factor
            )));
        }
        Ok(())
    }
}
