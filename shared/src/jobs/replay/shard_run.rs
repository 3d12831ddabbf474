//! One shard's step: records after the checkpoint, paced, settled on the
//! target a piece at a time, each settled piece saved as the checkpoint.

use tokio::time::Instant;

use super::{ReplayError, ShardReplay};
use crate::model::record::Record;
use crate::model::seqno::Position;
use crate::pipeline::dedupe;
use crate::pipeline::pace::Pace;
use crate::sinks::Target;
use crate::sources::Pages;
use crate::store::{ObjectStore, PutObject};

/// Where each settled piece's progress is saved.
pub(super) struct Checkpoint<W> {
    pub(super) store: W,
    pub(super) key: String,
}

/// Writes `progress` as it is now (the future holds its bytes, not it).
pub(super) fn save<'s, W: ObjectStore>(
    store: &'s W,
    key: String,
    progress: &ShardReplay,
) -> impl Future<Output = Result<(), ReplayError>> + Send + 's {
    let body = serde_json::to_vec(progress).expect("progress always serialises");
    async move {
        store
            .put(PutObject {
                key,
                body,
                content_type: "application/json",
                content_encoding: None,
            })
            .await
            .map_err(ReplayError::Progress)
    }
}

/// One shard's step: records after the checkpoint, paced, settled on the
/// target one piece at a time until the stop time.
pub(super) struct ShardRun<'a, W> {
    pub(super) target: &'a dyn Target,
    pub(super) pace: Pace,
    pub(super) checkpoint: Checkpoint<W>,
}

impl<W: ObjectStore> ShardRun<'_, W> {
    /// Every page of the shard, then what its end owes the target (a
    /// tumbling window's final invoke); `false` when the step must stop
    /// first.
    pub(super) async fn all(
        &mut self,
        pages: &mut dyn Pages,
        progress: &mut ShardReplay,
    ) -> Result<bool, ReplayError> {
        while let Some(records) = pages.next_page().await? {
            if !self.take(records, pages.cursor(), progress).await? {
                return Ok(false);
            }
        }
        let finished = self.target.finish(self.pace.stop_at).await?;
        progress.counters += finished.report.counters;
        Ok(finished.done)
    }

    /// Takes the records after `progress.last`; `false` when the step must
    /// stop (the records not settled are taken again by the next step).
    async fn take(
        &mut self,
        records: Vec<Record>,
        cursor: Option<String>,
        progress: &mut ShardReplay,
    ) -> Result<bool, ReplayError> {
        let records = dedupe::after(records, progress.last.as_ref());
        let store = &self.checkpoint.store;
        // A piece's checkpoint is written while the next piece is delivered
        // (off the path between invokes), in order, naming settled records
        // only: a killed step resumes from the last one written, no gap,
        // later pieces again (at-least-once). Pieces are borrowed in turn:
        // none is copied, the rest of the page never moves.
        let (mut saving, mut at) = (None, 0);
        let finished = loop {
            if at >= records.len() {
                break true;
            }
            if Instant::now() >= self.pace.stop_at {
                break false;
            }
            let rest = &records[at..];
            let Some(n) = self
                .pace
                .next_piece(rest, self.target.piece_end(rest), &mut progress.pace)
                .await
            else {
                break false;
            };
            let piece = &rest[..n];
            at += n;
            let previous = futures_util::future::OptionFuture::from(saving.take());
            let (settled, saved) =
                futures_util::future::join(self.target.settle(piece, self.pace.stop_at), previous)
                    .await;
            saved.transpose()?;
            let settled = settled?;
            // A delivery stopped at the step's deadline settles the records
            // before the first one it had not settled; the next step starts
            // there.
            let count = match &settled.unsettled {
                Some(first) => piece
                    .iter()
                    .position(|r| Position::of(r) >= *first)
                    .unwrap_or(piece.len()),
                None => piece.len(),
            };
            self.pace.sent(count);
            progress.settle(&piece[..count], &settled.report, cursor.as_deref());
            saving = Some(save(store, self.checkpoint.key.clone(), progress));
            if settled.unsettled.is_some() {
                break false;
            }
        };
        if let Some(write) = saving {
            write.await?; // before the step answers
        }
        Ok(finished)
    }
}
