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

pub(super) async fn save<W: ObjectStore>(
    store: &W,
    key: String,
    progress: &ShardReplay,
) -> Result<(), ReplayError> {
    store
        .put(PutObject {
            key,
            body: serde_json::to_vec(progress).expect("progress always serialises"),
            content_type: "application/json",
            content_encoding: None,
        })
        .await
        .map_err(ReplayError::Progress)
}

/// One shard's step: records after the checkpoint, paced, settled on the
/// target one piece at a time until the stop time.
pub(super) struct ShardRun<'a, W> {
    pub(super) target: &'a dyn Target,
    pub(super) pace: Pace,
    pub(super) checkpoint: Checkpoint<W>,
}

impl<W: ObjectStore> ShardRun<'_, W> {
    /// Every page of the shard; `false` when the step must stop first.
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
        Ok(true)
    }

    /// Takes the records after `progress.last`; `false` when the step must
    /// stop (the records not settled are taken again by the next step).
    async fn take(
        &mut self,
        records: Vec<Record>,
        cursor: Option<String>,
        progress: &mut ShardReplay,
    ) -> Result<bool, ReplayError> {
        let mut records = dedupe::after(records, progress.last.as_ref());
        while !records.is_empty() {
            if Instant::now() >= self.pace.stop_at {
                return Ok(false);
            }
            let Some(n) = self
                .pace
                .next_piece(&records, self.target.piece(), &mut progress.pace)
                .await
            else {
                return Ok(false);
            };
            let rest = records.split_off(n);
            let piece = std::mem::replace(&mut records, rest);
            let settled = self.target.settle(piece.clone(), self.pace.stop_at).await?;
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
            save(
                &self.checkpoint.store,
                self.checkpoint.key.clone(),
                progress,
            )
            .await?;
            if settled.unsettled.is_some() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
