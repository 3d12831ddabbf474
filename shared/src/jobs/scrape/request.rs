//! The scrape request: what the scraper function and the scrape state
//! machine take, validated before any work.

use serde::{Deserialize, Serialize};

use crate::jobs::step::check_run_id;
use crate::model::chunk::Compression;
use crate::model::record::stream_name_from_arn;
use crate::model::window::{StartPosition, StopCondition};
use crate::request::{RequestError, parse_json, valid_name};
use crate::sources::kinesis::{ReadOptions, ShardWindow};

/// Which shards a request reads: `"ALL"` (every shard whose range can hold
/// the window) or a list of shard ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ShardSelection {
    #[default]
    All,
    List(Vec<String>),
}

impl Serialize for ShardSelection {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::All => serializer.serialize_str("ALL"),
            Self::List(list) => list.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for ShardSelection {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        const EXPECTED: &str = "accepted values: \"ALL\" or a list of shard ids";
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ShardSelection;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(EXPECTED)
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
                if value == "ALL" {
                    Ok(ShardSelection::All)
                } else {
                    Err(E::custom(format!(
                        "{value:?} is not a shard selection; {EXPECTED}"
                    )))
                }
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut list = Vec::new();
                while let Some(id) = seq.next_element::<String>()? {
                    list.push(id);
                }
                Ok(ShardSelection::List(list))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Where the output goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutputLocation {
    pub bucket: String,
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

fn default_prefix() -> String {
    "scrapes".to_owned()
}

/// The longest poll delay a request may ask for. A step's first call waits
/// it whatever the step's time (so every step progresses): it must fit well
/// inside the margin a step keeps before its Lambda deadline.
pub const MAX_POLL_DELAY_MS: u64 = 10_000;

/// A scrape request: the scraper function's event and the scrape state
/// machine's input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScrapeRequest {
    /// Stream name or ARN.
    pub stream: String,
    #[serde(default)]
    pub shards: ShardSelection,
    pub start: StartPosition,
    pub stop: StopCondition,
    /// GetRecords `Limit`, 1 to 10,000.
    #[serde(default = "default_poll_batch_size")]
    pub poll_batch_size: i32,
    /// Extra wait between GetRecords calls, in milliseconds, 0 to
    /// [`MAX_POLL_DELAY_MS`].
    #[serde(default)]
    pub poll_delay_ms: u64,
    /// Consecutive empty responses at the tip before a shard's read ends.
    #[serde(default = "default_max_empty_polls")]
    pub max_empty_polls: u32,
    /// Share of each shard's read limits (0 < share <= 1).
    #[serde(default = "default_read_share")]
    pub read_share: f64,
    pub output: OutputLocation,
    #[serde(default)]
    pub compression: Compression,
    /// Names the run's folder; the state machine passes its execution name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Shards scraped at the same time by the scrape state machine (its Map's
    /// `MaxConcurrency`, 10 when absent); the scraper itself ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
}

/// The most child executions a state machine's Distributed Map runs at once
/// when the request says (shards of a scrape, lineage groups of a replay):
/// Step Functions allows 10,000, the scraper's and replay function's
/// concurrency is what bounds it.
pub const MAX_CONCURRENCY: u32 = 1_000;

fn default_poll_batch_size() -> i32 {
    crate::sources::kinesis::MAX_LIMIT
}

fn default_max_empty_polls() -> u32 {
    3
}

fn default_read_share() -> f64 {
    1.0
}

impl ScrapeRequest {
    /// Parses and validates a request, before any work.
    pub fn parse(json: &[u8]) -> Result<Self, RequestError> {
        let request: Self = parse_json(json)?;
        request.validate()?;
        Ok(request)
    }

    /// Checks what the types can't.
    pub fn validate(&self) -> Result<(), RequestError> {
        let stream_ok = if self.stream.starts_with("arn:") {
            stream_name_from_arn(&self.stream).is_some()
        } else {
            valid_name(&self.stream, 128)
        };
        if !stream_ok {
            return Err(RequestError::new(
                "stream",
                format!(
                    "{:?} is neither a stream name ([a-zA-Z0-9_.-]{{1,128}}) nor a stream ARN (arn:aws:kinesis:<region>:<account>:stream/<name>)",
                    self.stream
                ),
            ));
        }
        if let ShardSelection::List(shards) = &self.shards {
            if shards.is_empty() {
                return Err(RequestError::new(
                    "shards",
                    "an empty list; accepted values: \"ALL\" or a list of shard ids",
                ));
            }
            if let Some(bad) = shards.iter().find(|s| !valid_name(s, 128)) {
                return Err(RequestError::new(
                    "shards",
                    format!("{bad:?} is not a shard id (for example shardId-000000000000)"),
                ));
            }
        }
        if matches!(
            self.start,
            StartPosition::AtSequenceNumber { .. } | StartPosition::AfterSequenceNumber { .. }
        ) && !matches!(&self.shards, ShardSelection::List(list) if list.len() == 1)
        {
            return Err(RequestError::new(
                "shards",
                "a sequence number belongs to one shard: with start AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER, name exactly one shard",
            ));
        }
        if !(1..=crate::sources::kinesis::MAX_LIMIT).contains(&self.poll_batch_size) {
            return Err(RequestError::new(
                "pollBatchSize",
                format!(
                    "{} is out of range; accepted values: 1 to 10000",
                    self.poll_batch_size
                ),
            ));
        }
        if self.poll_delay_ms > MAX_POLL_DELAY_MS {
            return Err(RequestError::new(
                "pollDelayMs",
                format!(
                    "{} is out of range; accepted values: 0 to {MAX_POLL_DELAY_MS}",
                    self.poll_delay_ms
                ),
            ));
        }
        if self.max_empty_polls == 0 {
            return Err(RequestError::new(
                "maxEmptyPolls",
                "0 is out of range; accepted values: 1 or more",
            ));
        }
        if !(self.read_share > 0.0 && self.read_share <= 1.0) {
            return Err(RequestError::new(
                "readShare",
                format!(
                    "{} is out of range; accepted values: more than 0, at most 1",
                    self.read_share
                ),
            ));
        }
        if self.output.bucket.is_empty() {
            return Err(RequestError::new(
                "output.bucket",
                "is empty; accepted values: the name of the output bucket",
            ));
        }
        if self.output.prefix.starts_with('/') || self.output.prefix.contains("//") {
            return Err(RequestError::new(
                "output.prefix",
                format!(
                    "{:?} must not start with / or contain //",
                    self.output.prefix
                ),
            ));
        }
        if let Some(n) = self.max_concurrency
            && !(1..=MAX_CONCURRENCY).contains(&n)
        {
            return Err(RequestError::new(
                "maxConcurrency",
                format!("{n} is out of range; accepted values: 1 to {MAX_CONCURRENCY}"),
            ));
        }
        check_run_id(self.run_id.as_deref())
    }

    /// The read settings for every shard of the request.
    pub fn window(&self, stream: &str) -> ShardWindow {
        ShardWindow {
            stream: stream.to_owned(),
            start: self.start.clone(),
            stop: self.stop.clone(),
            options: ReadOptions {
                limit: self.poll_batch_size,
                poll_delay: std::time::Duration::from_millis(self.poll_delay_ms),
                max_empty_polls: self.max_empty_polls,
                share: self.read_share,
                ..ReadOptions::default()
            },
        }
    }

    /// `<prefix>/<runId>` (no trailing slash).
    pub fn run_folder(&self, run_id: &str) -> String {
        let prefix = self.output.prefix.trim_end_matches('/');
        if prefix.is_empty() {
            run_id.to_owned()
        } else {
            format!("{prefix}/{run_id}")
        }
    }
}
