//! Sequence numbers, compared as the numbers they are.
//!
//! Kinesis sequence numbers are decimal strings of variable length (real ones
//! have 56 digits, more than a `u128` holds; the API allows up to 129). A
//! string comparison gets them wrong as soon as two lengths differ, which is
//! the bug that makes other archivers keep an older record as the "latest".
//! [`SequenceNumber`] keeps the canonical digits and orders by length first,
//! then digit by digit: the numeric order, with no big-integer arithmetic.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The most digits a sequence number can have: the Kinesis API documents the
/// pattern `0|([1-9]\d{0,128})`.
pub const MAX_DIGITS: usize = 129;

/// Why a string is not a sequence number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceNumberError {
    #[error("sequence number is empty; expected decimal digits matching 0|[1-9][0-9]{{0,128}}")]
    Empty,
    #[error(
        "sequence number {value:?} has a non-digit at byte {position}; expected decimal digits matching 0|[1-9][0-9]{{0,128}}"
    )]
    NotDecimal { value: String, position: usize },
    #[error(
        "sequence number {value:?} has a leading zero; expected 0|[1-9][0-9]{{0,128}} (use SequenceNumber::from_padded for zero-padded keys)"
    )]
    LeadingZero { value: String },
    #[error("sequence number has {digits} digits; Kinesis allows at most {MAX_DIGITS}")]
    TooLong { digits: usize },
}

/// A Kinesis sequence number.
///
/// Holds the canonical decimal digits; [`Ord`] is numeric.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SequenceNumber(Box<str>);

impl SequenceNumber {
    /// Parses the canonical form `0|[1-9][0-9]{0,128}`, as the Kinesis API
    /// writes it. Anything else is rejected rather than normalised, so a
    /// typo in a request can't silently point at another record.
    pub fn parse(value: &str) -> Result<Self, SequenceNumberError> {
        check_digits(value)?;
        if value.len() > 1 && value.starts_with('0') {
            return Err(SequenceNumberError::LeadingZero {
                value: value.to_owned(),
            });
        }
        if value.len() > MAX_DIGITS {
            return Err(SequenceNumberError::TooLong {
                digits: value.len(),
            });
        }
        Ok(Self(value.into()))
    }

    /// Parses the fixed-width form written by [`Self::to_padded`] (or any
    /// zero-padded decimal no wider than it).
    pub fn from_padded(value: &str) -> Result<Self, SequenceNumberError> {
        check_digits(value)?;
        let trimmed = value.trim_start_matches('0');
        let canonical = if trimmed.is_empty() { "0" } else { trimmed };
        Self::parse(canonical)
    }

    /// The canonical decimal digits, as Kinesis writes them.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Number of decimal digits.
    pub fn digits(&self) -> usize {
        self.0.len()
    }

    /// The number zero-padded to [`MAX_DIGITS`] digits, so that stores that
    /// compare strings (DynamoDB sort keys and conditions, S3 key order)
    /// order it numerically.
    pub fn to_padded(&self) -> String {
        format!("{:0>width$}", self.0, width = MAX_DIGITS)
    }
}

fn check_digits(value: &str) -> Result<(), SequenceNumberError> {
    if value.is_empty() {
        return Err(SequenceNumberError::Empty);
    }
    if let Some(position) = value.bytes().position(|b| !b.is_ascii_digit()) {
        return Err(SequenceNumberError::NotDecimal {
            value: truncate_for_error(value),
            position,
        });
    }
    Ok(())
}

/// Keeps error messages readable when someone passes a whole payload.
fn truncate_for_error(value: &str) -> String {
    const LIMIT: usize = 160;
    if value.len() <= LIMIT {
        return value.to_owned();
    }
    let mut end = LIMIT;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        // Canonical forms have no leading zeros, so more digits means a
        // larger number; equal lengths compare digit by digit.
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.as_bytes().cmp(other.0.as_bytes()))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl FromStr for SequenceNumber {
    type Err = SequenceNumberError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for SequenceNumber {
    type Error = SequenceNumberError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SequenceNumber({})", self.0)
    }
}

impl AsRef<str> for SequenceNumber {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for SequenceNumber {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SequenceNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&value).map_err(serde::de::Error::custom)
    }
}

/// Identifies one user record: a Kinesis record is `(shard, sequence)`; the
/// user records that KPL packed into it add their index as the sub-sequence
/// number. Orders as the records were written within a shard.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRecordId {
    pub shard_id: String,
    pub sequence_number: SequenceNumber,
    /// `None` for a record that was not aggregated; it sorts before the
    /// user records of an aggregate with the same sequence number, which
    /// cannot both exist in one shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_sequence_number: Option<u64>,
}

impl UserRecordId {
    /// Position within the shard: `(sequence, sub-sequence)`.
    pub fn position(&self) -> (&SequenceNumber, Option<u64>) {
        (&self.sequence_number, self.sub_sequence_number)
    }
}

impl fmt::Display for UserRecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.shard_id, self.sequence_number)?;
        if let Some(sub) = self.sub_sequence_number {
            write!(f, ":{sub}")?;
        }
        Ok(())
    }
}

/// A record's place in its shard: (sequence, sub-sequence). Orders
/// numerically, and a plain record before the user records of an aggregate
/// with the same sequence number (which cannot both exist in one shard).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Position {
    pub sequence_number: SequenceNumber,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_sequence_number: Option<u64>,
}

impl Position {
    pub fn new(sequence_number: SequenceNumber, sub_sequence_number: Option<u64>) -> Self {
        Self {
            sequence_number,
            sub_sequence_number,
        }
    }

    /// The record's position.
    pub fn of(record: &crate::model::record::Record) -> Self {
        Self {
            sequence_number: record.sequence_number.clone(),
            sub_sequence_number: record.sub_sequence_number,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seq(s: &str) -> SequenceNumber {
        SequenceNumber::parse(s).unwrap()
    }

    /// Canonical decimal strings of 1..=129 digits.
    fn canonical() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("0".to_owned()),
            "[1-9][0-9]{0,128}",
            // Real sequence numbers: 56 digits, sharing long prefixes.
            "4956[0-9]{52}",
        ]
    }

    fn to_u128(s: &str) -> Option<u128> {
        s.parse().ok()
    }

    #[test]
    fn shorter_number_is_smaller_whatever_its_digits() {
        let a = seq(&"9".repeat(55));
        let b = seq(&format!("1{}", "0".repeat(55)));
        assert_eq!(a.digits(), 55);
        assert_eq!(b.digits(), 56);
        assert!(a < b);
        // The string order is the wrong one, which is the point.
        assert!(a.as_str() > b.as_str());
    }

    #[test]
    fn parse_rejects_with_a_message_naming_the_pattern() {
        for bad in ["", "-1", "12a", " 1", "1.0", "01", "00"] {
            let err = SequenceNumber::parse(bad).unwrap_err();
            assert!(
                err.to_string().contains("sequence number"),
                "{bad:?}: {err}"
            );
        }
        assert!(matches!(
            SequenceNumber::parse("01"),
            Err(SequenceNumberError::LeadingZero { .. })
        ));
        assert!(matches!(
            SequenceNumber::parse(&"1".repeat(130)),
            Err(SequenceNumberError::TooLong { digits: 130 })
        ));
        assert!(matches!(
            SequenceNumber::parse("4x"),
            Err(SequenceNumberError::NotDecimal { position: 1, .. })
        ));
        assert!(SequenceNumber::parse(&"9".repeat(129)).is_ok());
        assert!(SequenceNumber::parse("٣").is_err(), "non-ASCII digits");
    }

    #[test]
    fn serde_round_trip_and_rejection() {
        let s: SequenceNumber =
            serde_json::from_str("\"49568167373333333333333333333333333333333333333333333333\"")
                .unwrap();
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            "\"49568167373333333333333333333333333333333333333333333333\""
        );
        let err = serde_json::from_str::<SequenceNumber>("\"12 3\"").unwrap_err();
        assert!(err.to_string().contains("non-digit"), "{err}");
    }

    #[test]
    fn padded_form_has_fixed_width() {
        assert_eq!(seq("0").to_padded().len(), MAX_DIGITS);
        assert_eq!(seq("42").to_padded(), format!("{}42", "0".repeat(127)));
        assert_eq!(SequenceNumber::from_padded("000").unwrap(), seq("0"));
        assert_eq!(
            SequenceNumber::from_padded(&"0".repeat(130)).unwrap(),
            seq("0")
        );
    }

    proptest! {
        #[test]
        fn numeric_order_across_lengths(a in canonical(), b in canonical()) {
            let (x, y) = (seq(&a), seq(&b));
            // Oracle 1: for numbers that fit, u128 order.
            if let (Some(p), Some(q)) = (to_u128(&a), to_u128(&b)) {
                prop_assert_eq!(x.cmp(&y), p.cmp(&q));
            }
            // Oracle 2: for any length, a zero-padded string compare.
            let width = a.len().max(b.len());
            let pa = format!("{a:0>width$}");
            let pb = format!("{b:0>width$}");
            prop_assert_eq!(x.cmp(&y), pa.cmp(&pb));
            // The store form keeps the same order.
            prop_assert_eq!(x.cmp(&y), x.to_padded().cmp(&y.to_padded()));
            prop_assert_eq!(SequenceNumber::from_padded(&x.to_padded()).unwrap(), x.clone());
            prop_assert_eq!(seq(x.as_str()), x);
        }

        #[test]
        fn order_is_total_and_consistent(mut v in proptest::collection::vec(canonical(), 1..40)) {
            let mut parsed: Vec<SequenceNumber> = v.iter().map(|s| seq(s)).collect();
            parsed.sort();
            v.sort_by(|a, b| a.len().cmp(&b.len()).then(a.cmp(b)));
            let back: Vec<String> = parsed.iter().map(|s| s.to_string()).collect();
            prop_assert_eq!(back, v);
        }

        #[test]
        fn sub_sequence_orders_after_sequence(a in canonical(), b in canonical(), i in 0u64..10, j in 0u64..10) {
            let id = |s: &str, sub| UserRecordId {
                shard_id: "shardId-000000000000".into(),
                sequence_number: seq(s),
                sub_sequence_number: Some(sub),
            };
            let (x, y) = (id(&a, i), id(&b, j));
            let expected = seq(&a).cmp(&seq(&b)).then(i.cmp(&j));
            prop_assert_eq!(x.position().cmp(&y.position()), expected);
        }
    }
}
