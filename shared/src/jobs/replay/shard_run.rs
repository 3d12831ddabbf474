//! One shard's step: records after the checkpoint, paced, settled on the
//! target a piece at a time, each settled piece saved as the checkpoint.

use futures_util::future::BoxFuture;
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

/// A page and where it came from (the source's cursor as it was read).
type Page = (Vec<Record>, Option<String>);

/// How a page's records went.
enum Taken {
    /// The step must stop; the records not settled are taken again by the
    /// next step.
    Stop,
    /// All settled; the next page (`None`: the shard has no more).
    Next(Option<Page>),
}

async fn read(pages: &mut dyn Pages) -> Result<Option<Page>, ReplayError> {
    let records = pages.next_page().await?;
    Ok(records.map(|records| (records, pages.cursor())))
}

/// A settled piece's checkpoint, being written.
type Saving<'s> = BoxFuture<'s, Result<(), ReplayError>>;

impl<W: ObjectStore> ShardRun<'_, W> {
    /// Every page of the shard, then what its end owes the target (a
    /// tumbling window's final invoke); `false` when the step must stop
    /// first.
    pub(super) async fn all(
        &mut self,
        pages: &mut dyn Pages,
        progress: &mut ShardReplay,
    ) -> Result<bool, ReplayError> {
        let mut run = Pieces {
            target: self.target,
            pace: &mut self.pace,
            store: &self.checkpoint.store,
            key: &self.checkpoint.key,
            saving: None,
        };
        let taken = run.pages(pages, progress).await;
        // The last settled piece's checkpoint is written before the shard's
        // end and before the step answers, even when it fails (a failed read
        // of the next page): the retried step starts after that piece.
        if let Some(saving) = run.saving.take() {
            saving.await?;
        }
        if !taken? {
            return Ok(false);
        }
        let finished = self.target.finish(self.pace.stop_at).await?;
        progress.counters += finished.report.counters;
        Ok(finished.done)
    }
}

/// The pieces of a step's pages, and the checkpoint of the last settled one
/// while it is written.
struct Pieces<'r, 's, W> {
    target: &'r dyn Target,
    pace: &'r mut Pace,
    store: &'s W,
    key: &'r str,
    saving: Option<Saving<'s>>,
}

impl<'s, W: ObjectStore> Pieces<'_, 's, W> {
    /// Every page; `false` when the step must stop first.
    async fn pages(
        &mut self,
        pages: &mut dyn Pages,
        progress: &mut ShardReplay,
    ) -> Result<bool, ReplayError> {
        let mut page = read(pages).await?;
        while let Some((records, cursor)) = page.take() {
            match self.take(records, cursor, pages, progress).await? {
                Taken::Stop => return Ok(false),
                Taken::Next(next) => page = next,
            }
        }
        Ok(true)
    }

    /// Takes the records after `progress.last`, and reads the next page
    /// while the last piece is out.
    async fn take(
        &mut self,
        records: Vec<Record>,
        cursor: Option<String>,
        pages: &mut dyn Pages,
        progress: &mut ShardReplay,
    ) -> Result<Taken, ReplayError> {
        let (store, target, stop_at) = (self.store, self.target, self.pace.stop_at);
        let mut records = dedupe::after(records, progress.last.as_ref());
        if !progress.settled_ahead.is_empty() {
            records.retain(|r| !progress.settled_already(target.lane(r), r));
        }
        // While a piece is out, three things go on beside it, none of them
        // between an answer and the next invoke:
        // - the previous piece's checkpoint is written (the page's last
        //   piece's while the next page's first is out), in order, naming
        //   settled records only: a killed step resumes from the last one
        //   written, no gap, later pieces again (at-least-once);
        // - the next piece is made ready (`Target::prepare`), a guess that
        //   settles nothing;
        // - at the page's last piece, the next page is read.
        // Pieces are borrowed in turn: none is copied, the rest of the page
        // never moves.
        let mut at = 0;
        let mut next_page = None;
        let finished = loop {
            if at >= records.len() {
                break true;
            }
            if Instant::now() >= stop_at {
                break false;
            }
            let rest = &records[at..];
            let Some(n) = self
                .pace
                .next_piece(rest, target.piece_end(rest), &mut progress.pace)
                .await
            else {
                break false;
            };
            let mut settled_before = Vec::new();
            if at > 0 && at + n == records.len() {
                // The page's last piece: the records settled before it make
                // room for the next page, so a step holds a page and a
                // piece, not two pages. Once a page, at most a piece moves.
                let last = records.split_off(at);
                settled_before = std::mem::replace(&mut records, last);
                at = 0;
            }
            let (piece, after) = records[at..].split_at(n);
            at += n;
            let previous = futures_util::future::OptionFuture::from(self.saving.take());
            let pages = &mut *pages;
            let ahead = async move {
                // The piece's invokes are sent on the first poll of its
                // settle; this work waits for that.
                tokio::task::yield_now().await;
                drop(settled_before);
                if !after.is_empty() {
                    target.prepare(&after[..target.piece_end(after)]);
                    return None;
                }
                let page = read(pages).await;
                if let Ok(Some((next, _))) = &page {
                    // A guess: the next page's dedupe may drop its front.
                    target.prepare(&next[..target.piece_end(next)]);
                }
                Some(page)
            };
            let (settled, saved, prefetched) =
                futures_util::future::join3(target.settle(piece, stop_at), previous, ahead).await;
            saved.transpose()?;
            let settled = settled?;
            // A delivery stopped at the step's deadline settles the records
            // before the first one it had not settled; the next step starts
            // there, and skips what lanes ahead of that one settled.
            let first = settled.stops.first_unsettled();
            let count = match first {
                Some(first) => piece
                    .iter()
                    .position(|r| Position::of(r) >= *first)
                    .unwrap_or(piece.len()),
                None => piece.len(),
            };
            progress.settle(&piece[..count], &settled.report, cursor.as_deref());
            let ahead = (piece[count..].iter())
                .map(|r| (target.lane(r), r))
                .filter(|(lane, r)| settled.stops.settled(*lane, r));
            let ahead = progress.settle_ahead(ahead);
            self.pace.sent(count + ahead);
            self.saving = Some(Box::pin(save(store, self.key.to_owned(), progress)));
            if let Some(error) = settled.failed {
                // The step fails, after that checkpoint is written.
                return Err(error.into());
            }
            if first.is_some() {
                break false;
            }
            next_page = prefetched;
        };
        if !finished {
            return Ok(Taken::Stop);
        }
        Ok(Taken::Next(match next_page {
            Some(page) => page?,
            None => read(pages).await?,
        }))
    }
}
