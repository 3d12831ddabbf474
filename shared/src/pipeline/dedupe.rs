//! Skipping what was seen already: a record at or before a position (the
//! last one emitted, or the last one settled) comes again when sources
//! overlap (archive objects of a re-delivered batch, local files) or a step
//! resumes mid-shard.

use crate::model::record::Record;
use crate::model::seqno::Position;

/// Whether `record` comes after `position` in its shard (every record comes
/// after no position).
pub fn is_after(record: &Record, position: Option<&Position>) -> bool {
    position.is_none_or(|position| Position::of(record) > *position)
}

/// The records after `position`, in their order.
pub fn after(records: Vec<Record>, position: Option<&Position>) -> Vec<Record> {
    match position {
        Some(_) => records
            .into_iter()
            .filter(|r| is_after(r, position))
            .collect(),
        None => records,
    }
}

/// One shard's records read in sequence order from pieces that can
/// overlap: each record passes once, the first time it is seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dedupe {
    last: Option<Position>,
}

impl Dedupe {
    /// Passes only records after `position` (the last one already emitted).
    pub fn after(position: Option<Position>) -> Self {
        Self { last: position }
    }

    /// The last record passed (or the starting position).
    pub fn last(&self) -> Option<&Position> {
        self.last.as_ref()
    }

    /// Whether `record` is new; if so it is now the last one seen.
    pub fn first_time(&mut self, record: &Record) -> bool {
        if !is_after(record, self.last.as_ref()) {
            return false;
        }
        self.last = Some(Position::of(record));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::archive::tests::record;

    #[test]
    fn a_record_passes_once_and_only_after_the_start() {
        let records: Vec<Record> = (0..6).map(|i| record(0, i, 0)).collect();
        let mut dedupe = Dedupe::after(Some(Position::of(&records[1])));
        let passed: Vec<u32> = [0, 1, 2, 3, 2, 3, 4, 5, 5]
            .iter()
            .filter(|&&i| dedupe.first_time(&records[i as usize]))
            .copied()
            .collect();
        assert_eq!(passed, [2, 3, 4, 5]);
        assert_eq!(dedupe.last(), Some(&Position::of(&records[5])));
        assert_eq!(
            after(records.clone(), Some(&Position::of(&records[3]))),
            records[4..].to_vec()
        );
        assert_eq!(after(records.clone(), None), records);
    }
}
