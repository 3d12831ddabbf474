//! The next piece, got ready while the current piece's invokes are out: its
//! records sorted into lanes (filters and partition keys judged) and each
//! lane's first batch written as event JSON. That work grows with the batch
//! (1,000 records of 1 KiB are about 1.4 MB of JSON) and needs the CPU,
//! while waiting for an answer doesn't; done between a piece's last answer
//! and the next piece's first invoke it was most of the engine's time there
//! at `BatchSize` 1,000.
//!
//! It is a guess at the next piece (pacing, a stop or the next page's
//! dedupe may make the piece another): delivery uses it only for the very
//! records it was made from, in the same order, and cuts afresh otherwise.
//! It keeps bytes and positions, never records, so nothing in it borrows a
//! page or names a record as settled: what is settled is still only what
//! the function answered for. At most one piece is ever ahead.

use std::collections::VecDeque;

use crate::model::record::Record;
use crate::model::seqno::Position;
use crate::pipeline::batch::{CutBatch, next_batch};
use crate::sinks::dlq::FailureDestination;

use super::invoker::Invoker;
use super::{Delivery, DeliveryError};

/// A piece sorted into lanes, as indexes into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Sorted {
    pub(super) lanes: Vec<Vec<u32>>,
    /// Records the filters dropped.
    pub(super) filtered: Vec<u32>,
}

impl Sorted {
    /// Each lane's records, borrowed from `piece` (the piece it sorted).
    pub(super) fn queues<'r>(&self, piece: &'r [Record]) -> Vec<VecDeque<&'r Record>> {
        self.lanes
            .iter()
            .map(|lane| lane.iter().map(|&i| &piece[i as usize]).collect())
            .collect()
    }
}

/// A piece made ready ahead of its delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ahead {
    /// The records it was made from, in order: a record's position names it
    /// in its shard, so the same positions are the same records.
    positions: Vec<Position>,
    sorted: Sorted,
    /// Each lane's first batch (`None` for an empty lane).
    first: Vec<Option<CutBatch>>,
}

impl Ahead {
    /// Whether it was made from exactly `piece`.
    pub fn is_for(&self, piece: &[Record]) -> bool {
        self.positions.len() == piece.len()
            && self.positions.iter().zip(piece).all(|(position, record)| {
                position.sequence_number == record.sequence_number
                    && position.sub_sequence_number == record.sub_sequence_number
            })
    }

    pub(super) fn into_parts(self) -> (Sorted, Vec<Option<CutBatch>>) {
        (self.sorted, self.first)
    }
}

impl<I: Invoker, D: FailureDestination> Delivery<'_, I, D> {
    /// Sorts `piece` into its lanes, dropping what the filters don't keep.
    pub(super) fn sort(&self, piece: &[Record]) -> Result<Sorted, DeliveryError> {
        let filters = self.options.filters().map_err(DeliveryError::Options)?;
        let lanes = self.options.parallelization_factor.max(1);
        let mut sorted = Sorted {
            lanes: vec![Vec::new(); lanes],
            filtered: Vec::new(),
        };
        for (i, record) in piece.iter().enumerate() {
            let index = u32::try_from(i).expect("a piece is at most 10,000 × 10 records");
            if filters.matches(record) {
                sorted.lanes[self.options.lane(record)].push(index);
            } else {
                sorted.filtered.push(index);
            }
        }
        Ok(sorted)
    }

    /// `piece` made ready for [`Delivery::deliver_ahead`]; `None` when its
    /// filters are refused (its delivery says why).
    pub fn cut_ahead(&self, piece: &[Record]) -> Option<Ahead> {
        let sorted = self.sort(piece).ok()?;
        let first = sorted
            .queues(piece)
            .into_iter()
            .map(|mut queue| {
                (!queue.is_empty())
                    .then(|| next_batch(&mut queue, self.options.batch_size, self.source).detach())
            })
            .collect();
        Some(Ahead {
            positions: piece.iter().map(Position::of).collect(),
            sorted,
            first,
        })
    }
}

#[cfg(test)]
mod tests;
