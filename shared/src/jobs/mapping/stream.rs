//! A mapping on one Kinesis stream, set up as Lambda sets one up: the
//! stream's ARN as its events name it, its shards at the starting position,
//! and the stream read through the Kinesis API. What is left to the caller
//! is the function behind it and where failed batches go.

use std::future::Future;

use crate::model::event::{EventSource, StreamArnError};
use crate::pipeline::lineage::PlannedShard;
use crate::sinks::dlq::FailureDestination;
use crate::sinks::lambda::invoker::Invoker;
use crate::sources::kinesis::{KinesisSource, ListShardsError, list_shards};

use super::config::MappingConfig;
use super::report::MappingReport;
use super::{EventSourceMapping, MappingError, wall_clock};

/// A stream's mapping, opened but not running.
pub struct StreamMapping {
    pub event_source: EventSource,
    pub source: KinesisSource,
    pub config: MappingConfig,
}

/// Why a stream's mapping could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the mapping's event source")]
    EventSource(#[from] StreamArnError),
    #[error("listing the stream's shards")]
    Shards(#[from] ListShardsError),
}

impl StreamMapping {
    /// The mapping of `stream_arn` invoking as `role`; returns it with the
    /// shards it starts from (the stream's shards for the starting
    /// position, as they are now).
    pub async fn open(
        kinesis: &aws_sdk_kinesis::Client,
        stream_arn: &str,
        role: impl Into<String>,
        config: MappingConfig,
    ) -> Result<(Self, Vec<PlannedShard>), OpenError> {
        let event_source = EventSource::new(stream_arn, role)?;
        let shards = list_shards(kinesis, stream_arn, &config.starting_position).await?;
        let mapping = Self {
            event_source,
            source: KinesisSource::new(kinesis.clone(), stream_arn),
            config,
        };
        Ok((mapping, shards))
    }

    /// Runs the mapping from `shards` into `invoker`, failed batches to
    /// `destination`, as [`EventSourceMapping::run`] does, on the wall
    /// clock.
    pub async fn run<I: Invoker, D: FailureDestination>(
        &self,
        invoker: &I,
        destination: &D,
        shards: Vec<PlannedShard>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<MappingReport, MappingError> {
        EventSourceMapping {
            source: &self.source,
            invoker,
            destination,
            event_source: &self.event_source,
            config: &self.config,
            now: wall_clock,
        }
        .run(shards, shutdown)
        .await
    }
}
