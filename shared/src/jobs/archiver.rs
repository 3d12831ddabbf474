//! What the archiver function does with one delivered batch: keep it in the
//! S3 archive and, per stream settings, in the DynamoDB archive, then tell
//! the mapping which records to deliver again.
//!
//! A record counts as stored only when every sink configured for its stream
//! stored it. The partial batch response names, per shard, the lowest
//! sequence number not stored; the mapping resumes from there, so a record
//! is never checkpointed before it is kept (at-least-once: records after it
//! that were stored are written again, under the same keys).
//!
//! Beside the records it writes each shard's marker once per function
//! instance ([`markers`]: lineage and the stream's ARN, never at a record's
//! expense), and it measures what it stored for the invocation's metric line
//! ([`metrics`]).
//!
//! Per-stream DynamoDB settings come from the environment and, when enabled,
//! from the stream's tags as the Node.js Kinesis archiver reads them
//! (`StreamArchiveMode` = `all` | `latest`, `ArchiveTTL` =
//! `expireSeconds=<n>`), looked up once per stream per container.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use aws_lambda_events::event::streams::{KinesisBatchItemFailure, KinesisEventResponse};
use tracing::{info, warn};

mod markers;
mod metrics;
#[cfg(test)]
mod text_tests;

pub use markers::{KinesisLineage, Lineage, LineageError, MarkerError, ShardLineage, ShardMarkers};
pub use metrics::{ArchiveMetrics, DIMENSION, NAMESPACE};

use crate::model::archive::ArchiveLayout;
use crate::model::record::{Record, RecordData};
use crate::model::seqno::UserRecordId;
use crate::pipeline::deaggregate::deaggregate_all;
use crate::sinks::dynamodb::{ArchiveMode, DynamoArchive, StreamSettings};
use crate::sinks::s3_archive;
use crate::store::{CreateNew, ObjectStore};

pub const MODE_TAG: &str = "StreamArchiveMode";
pub const TTL_TAG: &str = "ArchiveTTL";

/// Reading a stream's tags failed.
#[derive(Debug, thiserror::Error)]
pub enum TagError {
    #[error("listing the tags of stream {stream} failed")]
    Lookup {
        stream: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("stream {stream}: tag {tag}={value:?} is invalid; accepted values: {accepted}")]
    Invalid {
        stream: String,
        tag: &'static str,
        value: String,
        accepted: &'static str,
    },
}

/// Where a stream's tags come from.
pub trait StreamTags: Send + Sync {
    fn tags(
        &self,
        stream_arn: &str,
    ) -> impl Future<Output = Result<HashMap<String, String>, TagError>> + Send;
}

/// `ListTagsForStream`, all pages.
#[derive(Debug, Clone)]
pub struct KinesisTags {
    client: aws_sdk_kinesis::Client,
}

impl KinesisTags {
    pub fn new(client: aws_sdk_kinesis::Client) -> Self {
        Self { client }
    }
}

impl StreamTags for KinesisTags {
    async fn tags(&self, stream_arn: &str) -> Result<HashMap<String, String>, TagError> {
        let mut tags = HashMap::new();
        let mut start: Option<String> = None;
        loop {
            let page = self
                .client
                .list_tags_for_stream()
                .stream_arn(stream_arn)
                .set_exclusive_start_tag_key(start.take())
                .send()
                .await
                .map_err(|error| TagError::Lookup {
                    stream: stream_arn.to_owned(),
                    source: Box::new(error),
                })?;
            for tag in page.tags() {
                tags.insert(
                    tag.key().to_owned(),
                    tag.value().unwrap_or_default().to_owned(),
                );
            }
            match page.tags().last() {
                Some(last) if page.has_more_tags() => start = Some(last.key().to_owned()),
                _ => return Ok(tags),
            }
        }
    }
}

/// `None`: no tag lookups, the environment's settings apply to every stream.
impl<T: StreamTags> StreamTags for Option<T> {
    async fn tags(&self, stream_arn: &str) -> Result<HashMap<String, String>, TagError> {
        match self {
            Some(tags) => tags.tags(stream_arn).await,
            None => Ok(HashMap::new()),
        }
    }
}

/// Applies a stream's tags over the defaults. A stream without the tags
/// keeps the defaults.
pub fn settings_from_tags(
    stream: &str,
    defaults: &StreamSettings,
    tags: &HashMap<String, String>,
) -> Result<StreamSettings, TagError> {
    let mut settings = defaults.clone();
    if let Some(value) = tags.get(MODE_TAG) {
        let mode: ArchiveMode = value.parse().map_err(|_| TagError::Invalid {
            stream: stream.to_owned(),
            tag: MODE_TAG,
            value: value.clone(),
            accepted: "all, latest",
        })?;
        settings.modes = vec![mode];
    }
    if let Some(value) = tags.get(TTL_TAG) {
        let invalid = || TagError::Invalid {
            stream: stream.to_owned(),
            tag: TTL_TAG,
            value: value.clone(),
            accepted: "expireSeconds=<seconds> (optionally attributeName=<name>:expireSeconds=<seconds>), or <seconds>",
        };
        // The Node archiver's setup writes `expireSeconds=<n>` or
        // `attributeName=<a>:expireSeconds=<n>`; the table's TTL attribute
        // here is always `expireAfter`.
        let seconds = if let Ok(n) = value.trim().parse::<u64>() {
            n
        } else {
            value
                .split(':')
                .filter_map(|part| part.split_once('='))
                .find(|(k, _)| k.trim() == "expireSeconds")
                .and_then(|(_, v)| v.trim().parse::<u64>().ok())
                .ok_or_else(invalid)?
        };
        settings.ttl = (seconds > 0).then(|| Duration::from_secs(seconds));
    }
    Ok(settings)
}

/// The archive's sinks and settings, built once per container.
pub struct Archiver<S, T, L> {
    pub s3: S,
    pub layout: ArchiveLayout,
    /// Store KPL user records one per line in S3 instead of the aggregates.
    pub deaggregate_s3: bool,
    pub dynamo: Option<DynamoArchive<S>>,
    pub defaults: StreamSettings,
    pub tags: T,
    /// `None`: no shard markers (tests of the other sinks).
    markers: Option<ShardMarkers<L>>,
    cache: Mutex<HashMap<String, StreamSettings>>,
}

/// What became of one delivered batch.
#[derive(Debug)]
pub struct Archived {
    /// The partial batch response for the mapping.
    pub response: KinesisEventResponse,
    /// What was stored, for the invocation's metric line.
    pub metrics: ArchiveMetrics,
}

impl<S: ObjectStore + CreateNew, T: StreamTags, L: ShardLineage> Archiver<S, T, L> {
    pub fn new(
        s3: S,
        layout: ArchiveLayout,
        deaggregate_s3: bool,
        dynamo: Option<DynamoArchive<S>>,
        defaults: StreamSettings,
        tags: T,
        lineage: Option<L>,
    ) -> Self {
        Self {
            s3,
            layout,
            deaggregate_s3,
            dynamo,
            defaults,
            tags,
            markers: lineage.map(ShardMarkers::new),
            cache: Mutex::new(HashMap::new()),
        }
    }

    async fn settings(&self, stream_arn: &str, stream: &str) -> Result<StreamSettings, TagError> {
        if let Some(found) = self.cache.lock().expect("cache lock").get(stream_arn) {
            return Ok(found.clone());
        }
        let tags = self.tags.tags(stream_arn).await?;
        let settings = settings_from_tags(stream, &self.defaults, &tags)?;
        info!(stream, modes = ?settings.modes, ttl = ?settings.ttl, "archive settings");
        self.cache
            .lock()
            .expect("cache lock")
            .insert(stream_arn.to_owned(), settings.clone());
        Ok(settings)
    }

    /// Archives one delivered batch (records of one stream, as delivered),
    /// `now_epoch_millis` being the invocation's time. The records' data
    /// is decoded only for what needs the bytes: KPL user records and the
    /// DynamoDB archive; S3 lines take it as delivered.
    pub async fn archive<D: RecordData>(
        &self,
        stream_arn: &str,
        records: Vec<Record<D>>,
        now_epoch_millis: i64,
    ) -> Archived {
        let mut failed: Vec<UserRecordId> = Vec::new();
        let mut metrics = ArchiveMetrics::default();
        // User records are made only when a sink keys or stores them, and
        // then once for both; a batch without aggregates is used as it is.
        let has_aggregates = records.iter().any(Record::is_aggregated);
        let needs_users = (self.deaggregate_s3 || self.dynamo.is_some()) && has_aggregates;
        let users: Option<Vec<Record>> = needs_users.then(|| {
            let kinesis_records: Vec<Record> =
                records.iter().map(|r| r.clone().into_bytes()).collect();
            deaggregate_all(&kinesis_records)
        });

        let s3 = async {
            match (&users, self.deaggregate_s3) {
                (Some(users), true) => {
                    s3_archive::archive_batch(&self.s3, &self.layout, users).await
                }
                _ => s3_archive::archive_batch(&self.s3, &self.layout, &records).await,
            }
        };
        let marks = async {
            if let (Some(markers), Some(first)) = (&self.markers, records.first()) {
                let shards = shards_of(&records);
                markers
                    .mark(&self.s3, &self.layout, stream_arn, &first.stream, &shards)
                    .await;
            }
        };
        let (outcome, ()) = futures_util::future::join(s3, marks).await;
        for object in &outcome.written {
            metrics.records_archived += object.summary.records;
            metrics.bytes_archived += object.compressed_bytes as u64;
            metrics.objects_written += 1;
            metrics.newest_arrival = metrics.newest_arrival.max(object.summary.last_arrival);
        }
        failed.extend(outcome.failed.into_iter().map(|(id, _)| id));

        if let (Some(dynamo), Some(first)) = (&self.dynamo, records.first()) {
            let stream = first.stream.clone();
            match self.settings(stream_arn, &stream).await {
                Ok(settings) if settings.modes.is_empty() => {}
                Ok(settings) => {
                    // Items hold the bytes: decoded now, record by record,
                    // S3 being done with the delivered text.
                    let users = match users {
                        Some(users) => users,
                        None => records.into_iter().map(Record::into_bytes).collect(),
                    };
                    let written = dynamo
                        .store(&users, &settings, now_epoch_millis.div_euclid(1000))
                        .await;
                    metrics.items_written = written.items;
                    for (id, error) in written.failed {
                        let error = &error as &(dyn std::error::Error + 'static);
                        warn!(record = %id, error, "DynamoDB archive write failed");
                        failed.push(id);
                    }
                }
                Err(error) => {
                    // Without the stream's settings nothing can be stored
                    // correctly: have the whole batch delivered again.
                    let error = &error as &(dyn std::error::Error + 'static);
                    warn!(error, "stream settings unavailable");
                    failed.extend(records.iter().map(Record::id));
                }
            }
        }
        Archived {
            response: batch_response(&failed),
            metrics,
        }
    }
}

/// The batch's shards, each once, in order of first appearance (a batch is
/// one shard's as the mapping delivers it).
fn shards_of<D>(records: &[Record<D>]) -> Vec<&str> {
    let mut shards: Vec<&str> = Vec::new();
    for record in records {
        if !shards.contains(&record.shard_id.as_str()) {
            shards.push(&record.shard_id);
        }
    }
    shards
}

/// The mapping's partial batch response: per shard, the lowest Kinesis
/// sequence number not stored. With `ReportBatchItemFailures` the mapping
/// re-delivers from the lowest one, so nothing unstored is ever
/// checkpointed past.
pub fn batch_response(failed: &[UserRecordId]) -> KinesisEventResponse {
    let mut lowest: BTreeMap<&str, &UserRecordId> = BTreeMap::new();
    for id in failed {
        let entry = lowest.entry(id.shard_id.as_str()).or_insert(id);
        if id.sequence_number < entry.sequence_number {
            *entry = id;
        }
    }
    let mut response = KinesisEventResponse::default();
    response.batch_item_failures = lowest
        .into_values()
        .map(|id| {
            let mut failure = KinesisBatchItemFailure::default();
            failure.item_identifier = Some(id.sequence_number.to_string());
            failure
        })
        .collect();
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::archive::tests::{BEFORE_HOUR, record};
    use crate::model::seqno::SequenceNumber;
    use crate::store::MemoryStore;

    fn defaults() -> StreamSettings {
        StreamSettings {
            modes: vec![ArchiveMode::All],
            ttl: None,
        }
    }

    fn tags(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn tags_as_the_node_archiver_writes_them() {
        let s = settings_from_tags(
            "s",
            &defaults(),
            &tags(&[(MODE_TAG, "latest"), (TTL_TAG, "expireSeconds=3600")]),
        )
        .unwrap();
        assert_eq!(s.modes, vec![ArchiveMode::Latest]);
        assert_eq!(s.ttl, Some(Duration::from_secs(3600)));
        let s = settings_from_tags(
            "s",
            &defaults(),
            &tags(&[(TTL_TAG, "attributeName=expireAfter:expireSeconds=60")]),
        )
        .unwrap();
        assert_eq!(s.modes, vec![ArchiveMode::All]);
        assert_eq!(s.ttl, Some(Duration::from_secs(60)));
        assert_eq!(
            settings_from_tags("s", &defaults(), &tags(&[])).unwrap(),
            defaults()
        );
    }

    #[test]
    fn bad_tags_name_the_tag_and_accepted_values() {
        let err =
            settings_from_tags("orders", &defaults(), &tags(&[(MODE_TAG, "some")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "stream orders: tag StreamArchiveMode=\"some\" is invalid; accepted values: all, latest"
        );
        let err =
            settings_from_tags("orders", &defaults(), &tags(&[(TTL_TAG, "forever")])).unwrap_err();
        assert!(
            err.to_string()
                .contains("tag ArchiveTTL=\"forever\" is invalid"),
            "{err}"
        );
    }

    #[test]
    fn response_names_the_lowest_failure_per_shard_numerically() {
        let id = |shard: &str, seq: &str, sub| UserRecordId {
            shard_id: shard.into(),
            sequence_number: SequenceNumber::parse(seq).unwrap(),
            sub_sequence_number: sub,
        };
        let failed = vec![
            id(
                "shardId-000000000001",
                "100000000000000000000000000000000000000000000000000000000",
                Some(2),
            ),
            id(
                "shardId-000000000001",
                "99999999999999999999999999999999999999999999999999999999",
                Some(5),
            ),
            id("shardId-000000000002", "7", None),
        ];
        let json = serde_json::to_value(batch_response(&failed)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"batchItemFailures": [
                {"itemIdentifier": "99999999999999999999999999999999999999999999999999999999"},
                {"itemIdentifier": "7"},
            ]})
        );
        assert_eq!(
            serde_json::to_value(batch_response(&[])).unwrap(),
            serde_json::json!({"batchItemFailures": []})
        );
    }

    fn sample() -> Vec<Record> {
        let text = include_str!("../../../events/kinesis-batch.json");
        crate::model::event::DeliveredEvent::from_slice(text.as_bytes())
            .unwrap()
            .records
    }

    /// Every sink must store a record before it counts: here S3 takes the
    /// whole batch and DynamoDB refuses one user record of the aggregate, so
    /// the mapping is told to re-deliver from that aggregate.
    #[tokio::test]
    async fn a_record_counts_only_when_every_sink_stored_it() {
        use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput;
        use aws_sdk_dynamodb::types::AttributeValue;
        use aws_smithy_mocks::{RuleMode, mock, mock_client};

        let rule = mock!(aws_sdk_dynamodb::Client::batch_write_item).then_compute_output(|input| {
            let requests = input.request_items().unwrap()["archive"].clone();
            let refused: Vec<_> = requests
                .into_iter()
                .filter(|r| {
                    r.put_request().unwrap().item()["pk"]
                        == AttributeValue::S("orders#sensor-9".into())
                })
                .collect();
            BatchWriteItemOutput::builder()
                .unprocessed_items("archive", refused)
                .build()
        });
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&rule]);
        let dynamo = DynamoArchive::new(
            client,
            "archive",
            crate::store::MemoryStore::default(),
            "archive",
        )
        .with_unprocessed_retry(2, Duration::ZERO);
        let archiver = Archiver::new(
            crate::store::MemoryStore::default(),
            ArchiveLayout::default(),
            false,
            Some(dynamo),
            defaults(),
            None::<KinesisTags>,
            None::<KinesisLineage>,
        );
        let records = sample();
        let aggregate = records
            .iter()
            .find(|r| r.is_aggregated())
            .unwrap()
            .sequence_number
            .to_string();
        // 1.5 s after the newest record of the sample arrived.
        let now = 1_732_233_602_000 + 1_500;
        let archived = archiver
            .archive(
                "arn:aws:kinesis:us-east-1:123456789012:stream/orders",
                records.clone(),
                now,
            )
            .await;
        assert_eq!(
            serde_json::to_value(archived.response).unwrap(),
            serde_json::json!({"batchItemFailures": [{"itemIdentifier": aggregate}]})
        );
        // The invocation's metric line, read as CloudWatch reads EMF: the
        // 4 records as delivered in 1 object; 5 of the 6 user records'
        // items (sensor-9's was refused).
        let bytes: usize = archiver.s3.objects().values().map(|o| o.body.len()).sum();
        let values = metrics::tests::parse_emf(&archived.metrics.emf_line("orders", now));
        assert_eq!(
            values,
            [
                ("BytesArchived", bytes as f64),
                ("ItemsWritten", 5.0),
                ("NewestRecordAgeMs", 1500.0),
                ("ObjectsWritten", 1.0),
                ("RecordsArchived", 4.0),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
        );
        let objects = archiver.s3.objects();
        assert_eq!(objects.len(), 1);
        let stored: Vec<Record> = objects
            .iter()
            .flat_map(|(k, o)| crate::model::chunk::decode(k, &o.body).unwrap())
            .collect();
        assert_eq!(
            stored, records,
            "S3 keeps the batch as received, aggregate whole"
        );
    }

    #[tokio::test]
    async fn a_failed_object_fails_the_rest_of_its_shard_only() {
        let records = vec![
            record(0, 1, BEFORE_HOUR),
            record(0, 2, BEFORE_HOUR + 1000),
            record(0, 3, BEFORE_HOUR + 1001),
            record(1, 4, BEFORE_HOUR),
        ];
        let layout = ArchiveLayout::default();
        let failing_key = layout.object_key(
            "orders",
            crate::model::archive::hour_of(&records[1]),
            &records[1].id(),
            &records[2].id(),
        );
        let store = MemoryStore::default().failing_on(&failing_key);
        let outcome = s3_archive::archive_batch(&store, &layout, &records).await;
        let failed: Vec<_> = outcome.failed.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(failed, vec![records[1].id()]);
        let written: Vec<_> = outcome
            .written
            .iter()
            .map(|w| w.summary.first.clone().unwrap())
            .collect();
        assert_eq!(written, vec![records[0].id(), records[3].id()]);
        let failed: Vec<UserRecordId> = outcome.failed.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(
            serde_json::to_value(batch_response(&failed)).unwrap(),
            serde_json::json!({"batchItemFailures": [{"itemIdentifier": records[1].sequence_number.to_string()}]})
        );
    }
}
