//! The replay request: where the records come from, where they go, where
//! failures and progress go, and every check the types can't make.

use serde::{Deserialize, Serialize};

use crate::jobs::step::check_run_id;
use crate::pipeline::deaggregate::Deliver;
use crate::request::{RequestError, parse_json};
use crate::sinks::lambda::options::MappingOptions;

use super::locations::{DlqLocation, ReplaySource, ReplayTarget, RunOutput};

/// A replay request: the replay state machine's input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplayRequest {
    pub source: ReplaySource,
    pub target: ReplayTarget,
    /// Named as the event source mapping names them; `FilterCriteria`
    /// applies to both targets, the others to `FUNCTION` targets only.
    #[serde(default)]
    pub options: MappingOptions,
    /// Required for a `FUNCTION` target; not for a `STREAM` target, which
    /// retries failed entries until they are stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlq: Option<DlqLocation>,
    /// Where the run's progress goes; by default the S3 DLQ's bucket, under
    /// `<dlq prefix>/replays`. Required without an S3 DLQ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<RunOutput>,
    /// At most this many records per second per shard (replay's own pace
    /// limit, so a replay leaves room for live traffic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_per_second: Option<f64>,
    /// Read and validate every record, invoke nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Names the run (DLQ folder and progress); the state machine passes its
    /// execution name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Lineage groups replayed at the same time by the replay state machine
    /// (its Map's `MaxConcurrency`, 1 when absent); the shards of a group
    /// go one after another, parents first. The function ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// What a `FUNCTION` target is handed of a KPL aggregate: the Kinesis
    /// record whole (the default, as the mapping does) or, from sources that
    /// keep user records only, each user record. A `STREAM` target always
    /// puts user records.
    #[serde(default)]
    pub deliver: Deliver,
    /// Each step returns within this many seconds (1 to 900), as if the
    /// function's timeout were this short: more, shorter steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_step_seconds: Option<u32>,
}

pub(super) fn invalid(field: &str, message: impl Into<String>) -> RequestError {
    RequestError {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn check_prefix(field: &str, prefix: &str) -> Result<(), RequestError> {
    if prefix.starts_with('/') || prefix.contains("//") {
        return Err(invalid(
            field,
            format!("{prefix:?} must not start with / or contain //"),
        ));
    }
    Ok(())
}

impl ReplayRequest {
    /// Parses and validates a request, before any work.
    pub fn parse(json: &[u8]) -> Result<Self, RequestError> {
        let request: Self = parse_json(json)?;
        request.validate()?;
        Ok(request)
    }

    /// As [`ReplayRequest::parse`], for a run on this machine: without an
    /// `output` or an S3 DLQ, the run keeps its progress in the bucket named
    /// `""`, which the CLI's buckets make a local folder.
    pub fn parse_local(json: &[u8]) -> Result<Self, RequestError> {
        let request: Self = parse_json(json)?;
        request.check(true)?;
        Ok(request)
    }

    /// Checks what the types can't.
    pub fn validate(&self) -> Result<(), RequestError> {
        self.check(false)
    }

    fn check(&self, local: bool) -> Result<(), RequestError> {
        self.validate_source()?;
        self.validate_target()?;
        if let (
            ReplaySource::Dynamodb { .. },
            ReplayTarget::Function { .. },
            Deliver::KinesisRecords,
        ) = (&self.source, &self.target, self.deliver)
        {
            return Err(invalid(
                "deliver",
                format!(
                    "is KINESIS_RECORDS (the default), but the DynamoDB archive keeps user records only: a query of one partition key can't rebuild a KPL aggregate whole as the mapping delivers it; set deliver to USER_RECORDS to have each user record delivered as its own event record (eventID <shardId>:<sequenceNumber>:<subSequenceNumber>); accepted values: {}",
                    Deliver::ACCEPTED
                ),
            ));
        }
        self.options.validate().map_err(|error| RequestError {
            field: format!("options.{}", error.field),
            message: error.message,
        })?;
        match &self.dlq {
            Some(DlqLocation::S3 { bucket, prefix }) => {
                if bucket.is_empty() {
                    return Err(invalid(
                        "dlq.bucket",
                        "is empty; accepted values: the name of the DLQ bucket",
                    ));
                }
                check_prefix("dlq.prefix", prefix)?;
            }
            Some(DlqLocation::Sqs { queue_url })
                if !(queue_url.starts_with("https://") || queue_url.starts_with("http://")) =>
            {
                return Err(invalid(
                    "dlq.queueUrl",
                    format!(
                        "{queue_url:?}; accepted values: an SQS queue URL (https://sqs.<region>.amazonaws.com/<account>/<queue>)"
                    ),
                ));
            }
            Some(DlqLocation::Sns { topic_arn }) if !is_topic_arn(topic_arn) => {
                return Err(invalid(
                    "dlq.topicArn",
                    format!(
                        "{topic_arn:?}; accepted values: an SNS topic ARN (arn:aws:sns:<region>:<account>:<topic>)"
                    ),
                ));
            }
            Some(DlqLocation::Sqs { .. } | DlqLocation::Sns { .. }) | None => {}
        }
        match &self.output {
            Some(RunOutput { bucket, prefix }) => {
                if bucket.is_empty() {
                    return Err(invalid("output.bucket", "is empty; name the bucket"));
                }
                check_prefix("output.prefix", prefix)?;
            }
            None if !local && !matches!(self.dlq, Some(DlqLocation::S3 { .. })) => {
                return Err(invalid(
                    "output",
                    "is missing; without an S3 DLQ name where the run keeps its progress: {\"bucket\": \"...\", \"prefix\": \"replays\"}",
                ));
            }
            None => {}
        }
        if let Some(rate) = self.records_per_second
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(invalid(
                "recordsPerSecond",
                format!("{rate}; accepted values: a number greater than 0"),
            ));
        }
        if let Some(n) = self.max_concurrency
            && !(1..=crate::jobs::scrape::MAX_CONCURRENCY).contains(&n)
        {
            return Err(invalid(
                "maxConcurrency",
                format!(
                    "{n} is out of range; accepted values: 1 to {}",
                    crate::jobs::scrape::MAX_CONCURRENCY
                ),
            ));
        }
        if let Some(n) = self.max_step_seconds
            && !(1..=900).contains(&n)
        {
            return Err(invalid(
                "maxStepSeconds",
                format!("{n} is out of range; accepted values: 1 to 900"),
            ));
        }
        check_run_id(self.run_id.as_deref())
    }

    fn validate_source(&self) -> Result<(), RequestError> {
        let stream_name = |field: &str, stream: &str| {
            if crate::request::valid_name(stream, 128) {
                Ok(())
            } else {
                Err(invalid(
                    field,
                    format!("{stream:?} is not a stream name ([a-zA-Z0-9_.-]{{1,128}})"),
                ))
            }
        };
        match &self.source {
            ReplaySource::Manifest { bucket, key } => {
                if bucket.is_empty() {
                    return Err(invalid("source.bucket", "is empty; name the bucket"));
                }
                if key.is_empty() {
                    return Err(invalid(
                        "source.key",
                        "is empty; name the manifest (<prefix>/<runId>/manifest.json)",
                    ));
                }
            }
            ReplaySource::Archive {
                bucket,
                prefix,
                stream,
                from,
                to,
            } => {
                if bucket.is_empty() {
                    return Err(invalid("source.bucket", "is empty; name the bucket"));
                }
                check_prefix("source.prefix", prefix)?;
                stream_name("source.stream", stream)?;
                if from >= to {
                    return Err(invalid(
                        "source.to",
                        format!("{to} is not after source.from ({from})"),
                    ));
                }
            }
            ReplaySource::Dynamodb {
                table,
                stream,
                partition_key,
                from_sequence_number,
                to_sequence_number,
                overflow_bucket,
            } => {
                if !(3..=255).contains(&table.len()) {
                    return Err(invalid(
                        "source.table",
                        format!(
                            "{table:?}; accepted values: a DynamoDB table name (3 to 255 characters)"
                        ),
                    ));
                }
                stream_name("source.stream", stream)?;
                if !(1..=256).contains(&partition_key.len()) {
                    return Err(invalid(
                        "source.partitionKey",
                        "accepted values: 1 to 256 characters",
                    ));
                }
                if let (Some(from), Some(to)) = (from_sequence_number, to_sequence_number)
                    && from > to
                {
                    return Err(invalid(
                        "source.toSequenceNumber",
                        format!("{to} is before source.fromSequenceNumber ({from})"),
                    ));
                }
                if overflow_bucket.as_ref().is_some_and(String::is_empty) {
                    return Err(invalid(
                        "source.overflowBucket",
                        "is empty; name the archive bucket or leave it out",
                    ));
                }
            }
            ReplaySource::Files { paths, stream_arn } => {
                if paths.is_empty() {
                    return Err(invalid("source.paths", "is empty; name the record files"));
                }
                if let Some(arn) = stream_arn
                    && crate::model::event::EventSource::new(arn.clone(), "").is_err()
                {
                    return Err(invalid(
                        "source.streamArn",
                        format!(
                            "{arn:?} is not a stream ARN (arn:aws:kinesis:<region>:<account>:stream/<name>)"
                        ),
                    ));
                }
            }
            ReplaySource::Scrape { request } => {
                request.validate().map_err(|error| RequestError {
                    field: format!("source.request.{}", error.field),
                    message: error.message,
                })?;
            }
        }
        Ok(())
    }

    fn validate_target(&self) -> Result<(), RequestError> {
        match &self.target {
            ReplayTarget::Function {
                function_name,
                qualifier,
                invoke_identity_arn,
            } => {
                if function_name.is_empty() || function_name.len() > 170 {
                    return Err(invalid(
                        "target.functionName",
                        format!(
                            "{function_name:?}; accepted values: a function name or ARN (1 to 170 characters)"
                        ),
                    ));
                }
                if qualifier.as_ref().is_some_and(|q| !valid_qualifier(q)) {
                    return Err(invalid(
                        "target.qualifier",
                        format!(
                            "{:?}; accepted values: $LATEST, a version number or an alias",
                            qualifier.as_deref().unwrap_or_default()
                        ),
                    ));
                }
                if invoke_identity_arn
                    .as_ref()
                    .is_some_and(|arn| !arn.starts_with("arn:"))
                {
                    return Err(invalid(
                        "target.invokeIdentityArn",
                        "is not an ARN (arn:aws:iam::<account>:role/<name>)",
                    ));
                }
                if self.dlq.is_none() {
                    return Err(invalid(
                        "dlq",
                        "is missing; a FUNCTION target needs an on-failure destination: {\"type\": \"S3\", \"bucket\": \"...\"}, {\"type\": \"SQS\", \"queueUrl\": \"...\"} or {\"type\": \"SNS\", \"topicArn\": \"...\"}",
                    ));
                }
            }
            ReplayTarget::Stream {
                stream,
                separator,
                speedup,
                ..
            } => {
                let name = crate::model::record::stream_name_from_arn(stream).unwrap_or(stream);
                if !crate::request::valid_name(name, 128) {
                    return Err(invalid(
                        "target.stream",
                        format!(
                            "{stream:?}; accepted values: a stream name ([a-zA-Z0-9_.-]{{1,128}}) or ARN"
                        ),
                    ));
                }
                if !(1..=16).contains(&separator.len()) {
                    return Err(invalid(
                        "target.separator",
                        format!(
                            "{separator:?}; accepted values: 1 to 16 bytes (a single byte, such as \"|\", lets consumers test the first byte)"
                        ),
                    ));
                }
                if let Some(speedup) = speedup
                    && !(speedup.is_finite() && *speedup > 0.0)
                {
                    return Err(invalid(
                        "target.speedup",
                        format!(
                            "{speedup}; accepted values: a number greater than 0 (1: the original pace, 2: twice as fast)"
                        ),
                    ));
                }
                if self.dlq.is_some() {
                    return Err(invalid(
                        "dlq",
                        "applies to FUNCTION targets only; a STREAM target retries failed entries until they are stored (leave dlq out)",
                    ));
                }
                let defaults = MappingOptions {
                    filter_criteria: self.options.filter_criteria.clone(),
                    ..MappingOptions::default()
                };
                if self.options != defaults {
                    return Err(invalid(
                        "options",
                        "only FilterCriteria applies to a STREAM target (the others are the event source mapping's, for FUNCTION targets)",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The run's progress location: (bucket, prefix).
    pub(super) fn output(&self) -> (String, String) {
        match (&self.output, &self.dlq) {
            (Some(RunOutput { bucket, prefix }), _) => {
                (bucket.clone(), prefix.trim_end_matches('/').to_owned())
            }
            (None, Some(DlqLocation::S3 { bucket, prefix })) => (
                bucket.clone(),
                join(prefix.trim_end_matches('/'), "replays"),
            ),
            // validate() requires one of the two; a local run keeps its
            // progress in its own folder, the bucket named "".
            (None, _) => (String::new(), "replays".to_owned()),
        }
    }

    /// The folder of the run's per-shard progress, in the output bucket.
    pub fn progress_folder(&self, run_id: &str) -> String {
        join(&self.output().1, run_id)
    }

    /// The folder of a shard's failed batches, in the S3 DLQ's bucket.
    pub fn dlq_folder(&self, run_id: &str, shard_id: &str) -> Option<String> {
        match &self.dlq {
            Some(DlqLocation::S3 { prefix, .. }) => Some(join(
                prefix.trim_end_matches('/'),
                &format!("aws/lambda/{run_id}/{shard_id}/"),
            )),
            _ => None,
        }
    }

    /// Where failures go, as a summary names it.
    pub(super) fn dlq_location(&self, run_id: &str) -> Option<String> {
        match &self.dlq {
            Some(DlqLocation::S3 { bucket, .. }) => Some(format!(
                "s3://{bucket}/{}",
                self.dlq_folder(run_id, "")
                    .unwrap_or_default()
                    .trim_end_matches('/')
            )),
            Some(DlqLocation::Sqs { queue_url }) => Some(queue_url.clone()),
            Some(DlqLocation::Sns { topic_arn }) => Some(topic_arn.clone()),
            None => None,
        }
    }
}

fn join(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() {
        rest.to_owned()
    } else {
        format!("{prefix}/{rest}")
    }
}

fn valid_qualifier(q: &str) -> bool {
    q == "$LATEST"
        || (!q.is_empty()
            && q.len() <= 128
            && q.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')))
}

/// `arn:<partition>:sns:<region>:<12-digit account>:<topic>` (a standard
/// topic: the mapping can't send to a FIFO topic).
fn is_topic_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.split(':').collect();
    matches!(
        parts.as_slice(),
        ["arn", partition, "sns", region, account, topic]
            if partition.starts_with("aws")
                && !region.is_empty()
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && (1..=256).contains(&topic.len())
                && !topic.ends_with(".fifo")
                && topic.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
    )
}
