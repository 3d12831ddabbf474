//! The DynamoDB archive's item keys, which its writer and its reader share:
//! `pk` is `<stream>#<partitionKey>`, `sk` a record's `<position>` (or
//! `LATEST`).
//!
//! `<position>` is the sequence number zero-padded to 129 digits, `#`, and
//! the sub-sequence number zero-padded to 20: string order is numeric order,
//! so a `BETWEEN` on `sk` is a sequence range.

use crate::model::seqno::{MAX_DIGITS, Position, SequenceNumber};

/// The range key of a `LATEST` item. Sorts after every `<position>`
/// (letters sort after digits), so range queries never see it.
pub const LATEST_SORT_KEY: &str = "LATEST";
const SUB_SEQUENCE_DIGITS: usize = 20;

/// `<stream>#<partitionKey>`.
pub fn hash_key(stream: &str, partition_key: &str) -> String {
    format!("{stream}#{partition_key}")
}

/// The `sk` of a user record's `ALL` item, and the `position` attribute the
/// `LATEST` condition compares.
pub fn position_key(position: &Position) -> String {
    format!(
        "{}#{:0width$}",
        position.sequence_number.to_padded(),
        position.sub_sequence_number.unwrap_or(0),
        width = SUB_SEQUENCE_DIGITS
    )
}

/// The smallest and largest `sk` of the records with sequence numbers in
/// `from..=to` (any sub-sequence).
pub fn position_range(from: &SequenceNumber, to: &SequenceNumber) -> (String, String) {
    (
        format!("{}#{}", from.to_padded(), "0".repeat(SUB_SEQUENCE_DIGITS)),
        format!("{}#{}", to.to_padded(), "9".repeat(SUB_SEQUENCE_DIGITS)),
    )
}

const _: () = assert!(MAX_DIGITS == 129, "position keys assume 129-digit padding");

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(s: &str) -> SequenceNumber {
        SequenceNumber::parse(s).unwrap()
    }

    fn at(sequence_number: &SequenceNumber, sub_sequence_number: Option<u64>) -> Position {
        Position {
            sequence_number: sequence_number.clone(),
            sub_sequence_number,
        }
    }

    #[test]
    fn positions_order_numerically_across_lengths_and_sub_sequences() {
        let short = seq(&"9".repeat(55));
        let long = seq(&format!("1{}", "0".repeat(55)));
        let key = |s: &SequenceNumber, sub| position_key(&at(s, sub));
        assert!(key(&short, None) < key(&long, None));
        assert!(key(&short, Some(u64::MAX)) < key(&long, Some(0)));
        assert!(key(&long, Some(2)) < key(&long, Some(10)));
        assert_eq!(key(&long, None), key(&long, Some(0)));
        let (low, high) = position_range(&short, &long);
        assert!(low <= key(&short, Some(0)) && key(&long, Some(u64::MAX)) <= high);
        assert!(
            high.as_str() < LATEST_SORT_KEY,
            "range queries never reach the LATEST item"
        );
    }
}
