//! The Kinesis API as a shard source, and the calls that find a stream's
//! shards.

use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::operation::get_records::GetRecordsError;
use aws_sdk_kinesis::types::{ShardFilter, ShardFilterType, ShardIteratorType};

use super::arrival::arrival_time;
use super::{RecordsPage, ShardSource, SourceError};
use crate::model::record::{ArrivalTime, EncryptionType, Record};
use crate::model::seqno::SequenceNumber;
use crate::model::window::{ChildShard, StartPosition};
use crate::pipeline::lineage::{PlannedShard, parents_first};

/// The Kinesis API as a [`ShardSource`].
#[derive(Debug, Clone)]
pub struct KinesisSource {
    client: aws_sdk_kinesis::Client,
    stream_arn: String,
    stream: String,
}

impl KinesisSource {
    pub fn new(client: aws_sdk_kinesis::Client, stream_arn: impl Into<String>) -> Self {
        let stream_arn = stream_arn.into();
        let stream = crate::model::record::stream_name_from_arn(&stream_arn)
            .unwrap_or(&stream_arn)
            .to_owned();
        Self {
            client,
            stream_arn,
            stream,
        }
    }
}

/// `operation` names the call in the message: the SDK error, kept as the
/// source, says what went wrong.
fn classify<E>(operation: &str, error: aws_sdk_kinesis::error::SdkError<E>) -> SourceError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match error.code() {
        Some(
            "ProvisionedThroughputExceededException"
            | "LimitExceededException"
            | "KMSThrottlingException",
        ) => SourceError::Throttled {
            source: Box::new(error),
        },
        Some("ExpiredIteratorException") => SourceError::ExpiredIterator,
        _ => SourceError::Other {
            message: format!("{operation} failed"),
            source: Box::new(error),
        },
    }
}

impl ShardSource for KinesisSource {
    async fn shard_iterator(
        &self,
        shard_id: &str,
        start: &StartPosition,
    ) -> Result<String, SourceError> {
        let request = self
            .client
            .get_shard_iterator()
            .stream_arn(&self.stream_arn)
            .shard_id(shard_id);
        let request = match start {
            StartPosition::TrimHorizon => {
                request.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            StartPosition::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
            StartPosition::AtSequenceNumber { sequence_number } => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(sequence_number.as_str()),
            StartPosition::AfterSequenceNumber { sequence_number } => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(sequence_number.as_str()),
            StartPosition::AtTimestamp { timestamp } => request
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(aws_sdk_kinesis::primitives::DateTime::from_millis(
                    timestamp.epoch_millis(),
                )),
        };
        let output = request
            .send()
            .await
            .map_err(|error| classify("GetShardIterator", error))?;
        output
            .shard_iterator()
            .map(str::to_owned)
            .ok_or_else(|| SourceError::NoIterator {
                shard_id: shard_id.to_owned(),
            })
    }

    async fn records(
        &self,
        shard_id: &str,
        iterator: &str,
        limit: i32,
    ) -> Result<RecordsPage, SourceError> {
        let output = self
            .client
            .get_records()
            .stream_arn(&self.stream_arn)
            .shard_iterator(iterator)
            .limit(limit)
            .send()
            .await
            .map_err(|error| {
                if matches!(
                    error.as_service_error(),
                    Some(GetRecordsError::ExpiredIteratorException(_))
                ) {
                    SourceError::ExpiredIterator
                } else {
                    classify("GetRecords", error)
                }
            })?;
        let mut bytes = 0;
        let mut records = Vec::with_capacity(output.records().len());
        for r in output.records() {
            let sequence_number =
                SequenceNumber::parse(r.sequence_number()).map_err(|e| SourceError::Other {
                    message: format!("GetRecords on {shard_id} returned a bad sequence number"),
                    source: Box::new(e),
                })?;
            let data = r.data().as_ref().to_vec();
            bytes += data.len() + r.partition_key().map_or(0, str::len);
            records.push(Record {
                stream: self.stream.clone(),
                shard_id: shard_id.to_owned(),
                sequence_number,
                sub_sequence_number: None,
                partition_key: r.partition_key().unwrap_or_default().to_owned(),
                explicit_hash_key: None,
                encryption_type: match r.encryption_type() {
                    Some(aws_sdk_kinesis::types::EncryptionType::Kms) => Some(EncryptionType::Kms),
                    _ => None,
                },
                approximate_arrival_timestamp: r
                    .approximate_arrival_timestamp()
                    .map_or(ArrivalTime::from_epoch_millis(0), arrival_time),
                data,
                aggregate: None,
            });
        }
        Ok(RecordsPage {
            records,
            next_iterator: output.next_shard_iterator().map(str::to_owned),
            millis_behind_latest: output.millis_behind_latest(),
            child_shards: output
                .child_shards()
                .iter()
                .map(|c| ChildShard {
                    shard_id: c.shard_id().to_owned(),
                    parent_shards: c.parent_shards().to_vec(),
                })
                .collect(),
            bytes,
        })
    }
}

/// Listing a stream's shards failed.
#[derive(Debug, thiserror::Error)]
#[error("listing the shards of {stream} failed")]
pub struct ListShardsError {
    pub stream: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl ListShardsError {
    fn new(stream: &str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            stream: stream.to_owned(),
            source: Box::new(source),
        }
    }
}

/// The stream's ARN (a name is resolved with `DescribeStreamSummary`).
pub async fn resolve_stream_arn(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<String, ListShardsError> {
    if stream.starts_with("arn:") {
        return Ok(stream.to_owned());
    }
    let output = client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .map_err(|error| ListShardsError::new(stream, error))?;
    Ok(output
        .stream_description_summary()
        .map(|d| d.stream_arn().to_owned())
        .unwrap_or_default())
}

/// All shards whose range can hold a window starting at `start`, paged,
/// parents before children. Closed shards are included: a window in the
/// past lives in them.
pub async fn list_shards(
    client: &aws_sdk_kinesis::Client,
    stream_arn: &str,
    start: &StartPosition,
) -> Result<Vec<PlannedShard>, ListShardsError> {
    let filter = match start {
        StartPosition::Latest => ShardFilter::builder()
            .r#type(ShardFilterType::AtLatest)
            .build(),
        StartPosition::AtTimestamp { timestamp } => ShardFilter::builder()
            .r#type(ShardFilterType::FromTimestamp)
            .timestamp(aws_sdk_kinesis::primitives::DateTime::from_millis(
                timestamp.epoch_millis(),
            ))
            .build(),
        _ => ShardFilter::builder()
            .r#type(ShardFilterType::FromTrimHorizon)
            .build(),
    }
    .map_err(|error| ListShardsError::new(stream_arn, error))?;
    let mut shards = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        // ListShards takes either the stream or a NextToken, never both.
        let request = match next_token.take() {
            Some(token) => client.list_shards().next_token(token),
            None => client
                .list_shards()
                .stream_arn(stream_arn)
                .shard_filter(filter.clone()),
        };
        let page = request
            .send()
            .await
            .map_err(|error| ListShardsError::new(stream_arn, error))?;
        shards.extend(page.shards().iter().map(|s| {
            PlannedShard {
                shard_id: s.shard_id().to_owned(),
                parent_shard_ids: s
                    .parent_shard_id()
                    .into_iter()
                    .chain(s.adjacent_parent_shard_id())
                    .map(str::to_owned)
                    .collect(),
            }
        }));
        match page.next_token() {
            Some(token) => next_token = Some(token.to_owned()),
            None => return Ok(parents_first(shards)),
        }
    }
}
