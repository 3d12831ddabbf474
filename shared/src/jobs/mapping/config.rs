//! The mapping's settings (`StartingPosition`, the delivery options,
//! `MaximumBatchingWindowInSeconds`, polling and exit), checked before
//! anything is polled.

use std::time::Duration;

use crate::model::window::StartPosition;
use crate::request::RequestError;
use crate::sinks::lambda::options::MappingOptions;
use crate::sources::kinesis::ReadOptions;

/// `MaximumBatchingWindowInSeconds` accepts 0 to 300.
pub const MAX_BATCHING_WINDOW: Duration = Duration::from_secs(300);

/// How the mapping polls and batches, named after the mapping's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MappingConfig {
    /// `StartingPosition`: `TRIM_HORIZON`, `LATEST` or `AT_TIMESTAMP`. It
    /// applies to the shards listed when the mapping starts; shards created
    /// while it runs are read from their start, as Lambda reads them.
    pub starting_position: StartPosition,
    /// `BatchSize`, `MaximumRetryAttempts`, `BisectBatchOnFunctionError`,
    /// `FunctionResponseTypes`, `MaximumRecordAgeInSeconds`,
    /// `ParallelizationFactor`, `FilterCriteria`.
    pub options: MappingOptions,
    /// `MaximumBatchingWindowInSeconds`: how long records may wait for a
    /// batch to fill; zero invokes with whatever one poll read.
    pub batching_window: Duration,
    /// Stop once every polled shard has read nothing for this long and no
    /// batch is in flight; `None` runs until shutdown.
    pub idle_exit: Option<Duration>,
    /// Pacing and fault handling of the reads (`limit` is set per poll from
    /// the room left in the batch).
    pub read: ReadOptions,
    /// Wait after an empty poll at the tip of a shard: Lambda polls an idle
    /// shard about once a second.
    pub idle_poll: Duration,
    /// First backoff after a throttled or failed invoke call.
    pub invoke_backoff: Duration,
}

impl Default for MappingConfig {
    fn default() -> Self {
        Self {
            starting_position: StartPosition::TrimHorizon,
            options: MappingOptions::default(),
            batching_window: Duration::ZERO,
            idle_exit: None,
            read: ReadOptions {
                // A mapping never stops polling a shard because it is busy:
                // every throttle is logged, backed off and retried.
                max_retries: u32::MAX,
                ..ReadOptions::default()
            },
            idle_poll: Duration::from_secs(1),
            invoke_backoff: Duration::from_millis(100),
        }
    }
}

impl MappingConfig {
    /// The values the mapping accepts, checked before anything is polled.
    pub fn validate(&self) -> Result<(), RequestError> {
        let bad = |field: &str, message: String| RequestError {
            field: field.to_owned(),
            message,
        };
        if !matches!(
            self.starting_position,
            StartPosition::TrimHorizon | StartPosition::Latest | StartPosition::AtTimestamp { .. }
        ) {
            return Err(bad(
                "StartingPosition",
                format!(
                    "{:?}; accepted values: TRIM_HORIZON, LATEST, AT_TIMESTAMP",
                    self.starting_position
                ),
            ));
        }
        if self.batching_window > MAX_BATCHING_WINDOW {
            return Err(bad(
                "MaximumBatchingWindowInSeconds",
                format!(
                    "{}; accepted values: 0 to 300",
                    self.batching_window.as_secs_f64()
                ),
            ));
        }
        self.options.validate()
    }

    /// Records gathered per shard before delivery: one batch per lane.
    pub(super) fn capacity(&self) -> usize {
        self.options.batch_size.max(1) * self.options.parallelization_factor.max(1)
    }
}
