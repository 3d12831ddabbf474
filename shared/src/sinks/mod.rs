//! Where records go. A replay settles its records through one seam,
//! [`Target`]: a piece of one shard's records, settled up to a stop time,
//! with its counters and the first record it left unsettled. A new target
//! is one file here and one variant of the replay request's target.

pub mod dlq;
pub mod dry_run;
pub mod dynamodb;
pub mod function_target;
pub mod kinesis;
pub mod lambda;
pub mod s3_archive;
pub mod s3_chunks;
pub mod stream_target;
pub mod window_target;

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use crate::model::record::Record;
pub use lambda::LaneStops;

/// What became of a piece.
#[derive(Debug, Default)]
pub struct Settled {
    pub report: lambda::DeliveryReport,
    /// Where each of the target's lanes ([`Target::lane`]) stopped when the
    /// stop time came in the middle of the piece: its first unsettled
    /// record and every later one of the lane are taken again.
    pub stops: LaneStops,
    /// Why the piece stopped early, when it failed part way: what it
    /// settled first is in the rest, so a retried step doesn't deliver
    /// that again.
    pub failed: Option<TargetError>,
}

/// What became of a shard's end (a tumbling window's final invoke).
#[derive(Debug, Default)]
pub struct Finished {
    pub report: lambda::DeliveryReport,
    /// `false` when the stop time came first: the next step finishes it.
    pub done: bool,
}

/// Why a piece could not be settled.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Delivery(#[from] lambda::DeliveryError),
    #[error(transparent)]
    Reinject(#[from] kinesis::ReinjectError),
    #[error(transparent)]
    Window(#[from] window_target::WindowStateError),
}

/// Where a replay's records go.
pub trait Target: Send + Sync {
    /// Records per piece: what one call of [`Target::settle`] sends at most.
    fn piece(&self) -> usize;

    /// Where the next piece of `records` ends: [`Target::piece`] records,
    /// unless the target drops some (filters) and fills its pieces past
    /// them.
    fn piece_end(&self, records: &[Record]) -> usize {
        self.piece().min(records.len())
    }

    /// Which of the target's lanes `record` goes through; see
    /// [`Settled::lanes`].
    fn lane(&self, _record: &Record) -> usize {
        0
    }

    /// Settles `piece` (one shard's records, in order, borrowed from the
    /// page: nothing is copied per piece), starting nothing after
    /// `stop_at`.
    fn settle<'a>(
        &'a self,
        piece: &'a [Record],
        stop_at: Instant,
    ) -> BoxFuture<'a, Result<Settled, TargetError>>;

    /// Gets ready for `next`, the piece expected after the one being
    /// settled, while that one's calls are out: CPU work taken off the
    /// path between invokes. Only a guess: [`Target::settle`] checks the
    /// piece it is then given against it, and a wrong guess costs only the
    /// work. Settles nothing.
    fn prepare(&self, _next: &[Record]) {}

    /// Settles what the shard's end owes once its records are all settled
    /// (nothing, but for a tumbling window's final invoke), starting
    /// nothing after `stop_at`.
    fn finish(&self, _stop_at: Instant) -> BoxFuture<'_, Result<Finished, TargetError>> {
        Box::pin(async {
            Ok(Finished {
                report: lambda::DeliveryReport::default(),
                done: true,
            })
        })
    }
}
