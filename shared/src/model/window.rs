//! What a read of a shard is asked for: where it starts, where it stops
//! (and why it stopped), judged record by record. The scrape request, the
//! manifest and the shard reader all speak these types.
//!
//! Stop semantics (the bound is numeric for sequence numbers):
//!
//! | stop | records kept |
//! |---|---|
//! | `TOTAL_RECORDS_PER_SHARD n` | the first `n` |
//! | `AT_SEQUENCE_NUMBER x` | sequence `<= x` (inclusive) |
//! | `BEFORE_SEQUENCE_NUMBER x` | sequence `< x` (exclusive) |
//! | `AFTER_SEQUENCE_NUMBER x` | sequence `<= x`, and the first record past `x` |
//! | `AT_TIMESTAMP t` | arrival `<= t` |
//! | `BEFORE_TIMESTAMP t` | arrival `< t` |
//! | `AFTER_TIMESTAMP t` | arrival `<= t`, and the first record past `t` |
//! | `LATEST` | up to the shard's tip when the read started |

use serde::{Deserialize, Serialize};

use crate::model::record::{ArrivalTime, Record};
use crate::model::seqno::SequenceNumber;

/// Where a read starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "SCREAMING_SNAKE_CASE",
    try_from = "RawBound<StartType>"
)]
pub enum StartPosition {
    TrimHorizon,
    Latest,
    AtSequenceNumber {
        #[serde(rename = "sequenceNumber")]
        sequence_number: SequenceNumber,
    },
    AfterSequenceNumber {
        #[serde(rename = "sequenceNumber")]
        sequence_number: SequenceNumber,
    },
    AtTimestamp {
        #[serde(rename = "timestamp")]
        timestamp: ArrivalTime,
    },
}

/// Where a read stops. See the module docs for the exact bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "SCREAMING_SNAKE_CASE",
    try_from = "RawBound<StopType>"
)]
pub enum StopCondition {
    TotalRecordsPerShard {
        #[serde(rename = "count")]
        count: u64,
    },
    AtSequenceNumber {
        #[serde(rename = "sequenceNumber")]
        sequence_number: SequenceNumber,
    },
    AfterSequenceNumber {
        #[serde(rename = "sequenceNumber")]
        sequence_number: SequenceNumber,
    },
    BeforeSequenceNumber {
        #[serde(rename = "sequenceNumber")]
        sequence_number: SequenceNumber,
    },
    AtTimestamp {
        #[serde(rename = "timestamp")]
        timestamp: ArrivalTime,
    },
    BeforeTimestamp {
        #[serde(rename = "timestamp")]
        timestamp: ArrivalTime,
    },
    AfterTimestamp {
        #[serde(rename = "timestamp")]
        timestamp: ArrivalTime,
    },
    /// Up to the tip as of `asOf` (set when the read starts).
    Latest {
        #[serde(rename = "asOf", default, skip_serializing_if = "Option::is_none")]
        as_of: Option<ArrivalTime>,
    },
}

/// The JSON form of a start or stop, read as a plain struct so that a bad
/// value is reported at its own field (`stop.timestamp`), then checked for
/// the fields its type needs.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawBound<T> {
    r#type: T,
    sequence_number: Option<SequenceNumber>,
    timestamp: Option<ArrivalTime>,
    count: Option<u64>,
    as_of: Option<ArrivalTime>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum StartType {
    TrimHorizon,
    Latest,
    AtSequenceNumber,
    AfterSequenceNumber,
    AtTimestamp,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum StopType {
    TotalRecordsPerShard,
    AtSequenceNumber,
    AfterSequenceNumber,
    BeforeSequenceNumber,
    AtTimestamp,
    BeforeTimestamp,
    AfterTimestamp,
    Latest,
}

/// `AtTimestamp` → `AT_TIMESTAMP`, the name the request uses.
fn type_name(kind: impl std::fmt::Debug) -> String {
    let mut name = String::new();
    for (i, c) in format!("{kind:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

fn required<T>(value: Option<T>, field: &str, kind: impl std::fmt::Debug) -> Result<T, String> {
    value.ok_or_else(|| format!("{field} is required with type {}", type_name(kind)))
}

fn unused<T>(value: &Option<T>, field: &str, kind: impl std::fmt::Debug) -> Result<(), String> {
    match value {
        Some(_) => Err(format!("{field} does not go with type {}", type_name(kind))),
        None => Ok(()),
    }
}

impl TryFrom<RawBound<StartType>> for StartPosition {
    type Error = String;

    fn try_from(raw: RawBound<StartType>) -> Result<Self, String> {
        let kind = raw.r#type;
        unused(&raw.count, "count", kind)?;
        unused(&raw.as_of, "asOf", kind)?;
        let (seq, ts) = (raw.sequence_number, raw.timestamp);
        let no_seq = |s: &Option<SequenceNumber>| unused(s, "sequenceNumber", kind);
        let no_ts = |t: &Option<ArrivalTime>| unused(t, "timestamp", kind);
        Ok(match kind {
            StartType::TrimHorizon => {
                no_seq(&seq)?;
                no_ts(&ts)?;
                Self::TrimHorizon
            }
            StartType::Latest => {
                no_seq(&seq)?;
                no_ts(&ts)?;
                Self::Latest
            }
            StartType::AtSequenceNumber => {
                no_ts(&ts)?;
                Self::AtSequenceNumber {
                    sequence_number: required(seq, "sequenceNumber", kind)?,
                }
            }
            StartType::AfterSequenceNumber => {
                no_ts(&ts)?;
                Self::AfterSequenceNumber {
                    sequence_number: required(seq, "sequenceNumber", kind)?,
                }
            }
            StartType::AtTimestamp => {
                no_seq(&seq)?;
                Self::AtTimestamp {
                    timestamp: required(ts, "timestamp", kind)?,
                }
            }
        })
    }
}

impl TryFrom<RawBound<StopType>> for StopCondition {
    type Error = String;

    fn try_from(raw: RawBound<StopType>) -> Result<Self, String> {
        use StopType as T;
        let kind = raw.r#type;
        let RawBound {
            sequence_number: seq,
            timestamp: ts,
            count,
            as_of,
            ..
        } = raw;
        let wants_seq = matches!(
            kind,
            T::AtSequenceNumber | T::AfterSequenceNumber | T::BeforeSequenceNumber
        );
        let wants_ts = matches!(
            kind,
            T::AtTimestamp | T::BeforeTimestamp | T::AfterTimestamp
        );
        if !wants_seq {
            unused(&seq, "sequenceNumber", kind)?;
        }
        if !wants_ts {
            unused(&ts, "timestamp", kind)?;
        }
        if !matches!(kind, T::TotalRecordsPerShard) {
            unused(&count, "count", kind)?;
        }
        if !matches!(kind, T::Latest) {
            unused(&as_of, "asOf", kind)?;
        }
        Ok(match kind {
            T::TotalRecordsPerShard => Self::TotalRecordsPerShard {
                count: required(count, "count", kind)?,
            },
            T::AtSequenceNumber => Self::AtSequenceNumber {
                sequence_number: required(seq, "sequenceNumber", kind)?,
            },
            T::AfterSequenceNumber => Self::AfterSequenceNumber {
                sequence_number: required(seq, "sequenceNumber", kind)?,
            },
            T::BeforeSequenceNumber => Self::BeforeSequenceNumber {
                sequence_number: required(seq, "sequenceNumber", kind)?,
            },
            T::AtTimestamp => Self::AtTimestamp {
                timestamp: required(ts, "timestamp", kind)?,
            },
            T::BeforeTimestamp => Self::BeforeTimestamp {
                timestamp: required(ts, "timestamp", kind)?,
            },
            T::AfterTimestamp => Self::AfterTimestamp {
                timestamp: required(ts, "timestamp", kind)?,
            },
            T::Latest => Self::Latest { as_of },
        })
    }
}

/// What the stop condition says of the next record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Take,
    /// Take it, and it is the last.
    TakeAndStop,
    /// Leave it: the window ended before it.
    Stop,
}

/// `Take` a record inside the bound, else `past` (what the first record
/// past the bound gets).
fn inside_or(inside: bool, past: Verdict) -> Verdict {
    if inside { Verdict::Take } else { past }
}

/// Judges one record; `taken` is how many the read kept before it.
pub fn judge(stop: &StopCondition, record: &Record, taken: u64) -> Verdict {
    use Verdict::*;
    let seq = &record.sequence_number;
    let at = record.approximate_arrival_timestamp;
    match stop {
        StopCondition::TotalRecordsPerShard { count } => {
            if taken >= *count {
                Stop
            } else if taken + 1 == *count {
                TakeAndStop
            } else {
                Take
            }
        }
        StopCondition::AtSequenceNumber { sequence_number: x } => match seq.cmp(x) {
            std::cmp::Ordering::Less => Take,
            std::cmp::Ordering::Equal => TakeAndStop,
            std::cmp::Ordering::Greater => Stop,
        },
        StopCondition::AfterSequenceNumber { sequence_number: x } => {
            inside_or(seq <= x, TakeAndStop)
        }
        StopCondition::BeforeSequenceNumber { sequence_number: x } => inside_or(seq < x, Stop),
        // Several records can share a millisecond: an inclusive time bound
        // only stops at the first record past it.
        StopCondition::AtTimestamp { timestamp: t } => inside_or(at <= *t, Stop),
        StopCondition::BeforeTimestamp { timestamp: t } => inside_or(at < *t, Stop),
        StopCondition::AfterTimestamp { timestamp: t } => inside_or(at <= *t, TakeAndStop),
        StopCondition::Latest { as_of } => match as_of {
            Some(t) if at > *t => Stop,
            _ => Take,
        },
    }
}

/// Why a shard's read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StopReason {
    /// The stop condition was met.
    StopCondition,
    /// The shard is closed and every record was read.
    ShardEnd,
    /// Caught up with the tip (`LATEST`), or `maxEmptyPolls` empty responses
    /// at the tip.
    ReachedTip,
}

/// A child shard reported at a closed shard's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChildShard {
    pub shard_id: String,
    pub parent_shards: Vec<String>,
}
