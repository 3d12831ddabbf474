//! The function target under `TumblingWindowInSeconds`: records delivered
//! as [`crate::sinks::lambda::window`] describes, the shard's open window
//! (its start and the state the function returned) kept in an object beside
//! the replay's checkpoint, so it survives a step boundary and a retried
//! step.
//!
//! Each settled piece saves where the window stands *as of the last record
//! it settled*, before the replay saves its checkpoint there. The replay
//! writes a piece's checkpoint while the next piece is delivered, so the
//! checkpoint may be two pieces behind the window when its write fails:
//! the object keeps the three latest generations, the checkpoint is always
//! one of them, and a step picks the latest generation before its first
//! record. A retried step so re-delivers from its
//! checkpoint with the state as of that checkpoint: no batch is applied to
//! the state twice, none is lost.

use std::sync::Mutex;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::model::record::Record;
use crate::model::seqno::Position;
use crate::model::tumbling::OpenWindow;
use crate::sinks::dlq::FailureDestination;
use crate::sinks::function_target::FunctionTarget;
use crate::sinks::lambda::DeliveryReport;
use crate::sinks::lambda::invoker::Invoker;
use crate::sinks::{Finished, LaneStops, Settled, Target, TargetError};
use crate::store::{ObjectReader, ObjectStore, PutObject, StoreError};

/// The window object could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WindowStateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the tumbling window state at {key} is not what a replay writes")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Where the window stood after the records up to `last` (`None`: before
/// the shard's first record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Generation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last: Option<Position>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    open: Option<OpenWindow>,
}

/// Generations kept: the latest, the one the checkpoint written beside it
/// may still be at, and the one before (when that checkpoint's write fails).
const GENERATIONS: usize = 3;

/// The object's body: the latest generations, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Saved {
    generations: Vec<Generation>,
}

impl Saved {
    /// The window as of the record before `first` (the step's resume
    /// point); the latest generation when the shard has nothing left.
    fn before(&self, first: Option<&Position>) -> Option<OpenWindow> {
        self.generations
            .iter()
            .rev()
            .find(|g| first.is_none_or(|first| g.last.as_ref() < Some(first)))
            .and_then(|g| g.open.clone())
    }

    /// Where the window stands after `last`: anything saved past it was
    /// written by an attempt whose checkpoint never got there.
    fn record(&mut self, last: Option<Position>, open: Option<OpenWindow>) {
        self.generations.retain(|g| g.last < last);
        self.generations.push(Generation { last, open });
        let extra = self.generations.len().saturating_sub(GENERATIONS);
        self.generations.drain(..extra);
    }
}

/// A function target with a tumbling window.
pub struct WindowTarget<I, D, W> {
    pub function: FunctionTarget<I, D>,
    /// The object beside the shard's checkpoint.
    pub store: W,
    pub key: String,
    /// What this step has saved (read at its first piece).
    saved: Mutex<Option<Saved>>,
}

impl<I, D, W> WindowTarget<I, D, W> {
    pub fn new(function: FunctionTarget<I, D>, store: W, key: String) -> Self {
        Self {
            function,
            store,
            key,
            saved: Mutex::new(None),
        }
    }
}

impl<I: Invoker, D: FailureDestination, W: ObjectStore + ObjectReader> WindowTarget<I, D, W> {
    async fn load(&self) -> Result<Saved, WindowStateError> {
        if let Some(saved) = self.saved.lock().expect("not poisoned").take() {
            return Ok(saved);
        }
        match self.store.get(&self.key).await {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| WindowStateError::Corrupt {
                    key: self.key.clone(),
                    source,
                })
            }
            Err(error) if error.is_not_found() => Ok(Saved::default()),
            Err(error) => Err(error.into()),
        }
    }

    async fn save(&self, saved: Saved) -> Result<(), WindowStateError> {
        self.store
            .put(PutObject {
                key: self.key.clone(),
                body: serde_json::to_vec(&saved).expect("window state serialises"),
                content_type: "application/json",
                content_encoding: None,
            })
            .await?;
        *self.saved.lock().expect("not poisoned") = Some(saved);
        Ok(())
    }

    async fn settle_piece(
        &self,
        piece: &[Record],
        stop_at: Instant,
    ) -> Result<Settled, TargetError> {
        let mut saved = self.load().await?;
        let resume = piece.first().map(Position::of);
        let before = saved.before(resume.as_ref());
        let mut open = before.clone();
        let positions: Vec<Position> = piece.iter().map(Position::of).collect();
        let (report, unsettled) = self
            .function
            .delivery()
            .deliver_windowed(piece, &mut open, Some(stop_at), &self.function.gaps)
            .await?;
        // The last record settled, as the replay's checkpoint counts it.
        let settled = match &unsettled {
            Some(first) => positions.iter().take_while(|p| *p < first).last(),
            None => positions.last(),
        };
        match settled {
            Some(last) => saved.record(Some(last.clone()), open),
            // Nothing settled, but a final invoke may have closed the window:
            // that is where the window stands at the same checkpoint.
            None if open != before => {
                let last = saved
                    .generations
                    .iter()
                    .rev()
                    .map(|g| g.last.clone())
                    .find(|last| last.as_ref() < resume.as_ref())
                    .flatten();
                saved.record(last, open);
            }
            None => {
                *self.saved.lock().expect("not poisoned") = Some(saved);
                return Ok(Settled {
                    report,
                    stops: LaneStops::one(unsettled),
                    failed: None,
                });
            }
        }
        self.save(saved).await?;
        Ok(Settled {
            report,
            stops: LaneStops::one(unsettled),
            failed: None,
        })
    }

    async fn finish_shard(&self, stop_at: Instant) -> Result<Finished, TargetError> {
        let mut saved = self.load().await?;
        let mut open = saved.before(None);
        if open.is_none() {
            *self.saved.lock().expect("not poisoned") = Some(saved);
            return Ok(Finished {
                report: DeliveryReport::default(),
                done: true,
            });
        }
        let mut report = DeliveryReport::default();
        let done = self
            .function
            .delivery()
            .close_window(&mut open, Some(stop_at), &self.function.gaps, &mut report)
            .await
            .map_err(TargetError::from)?;
        let last = saved.generations.last().and_then(|g| g.last.clone());
        saved.record(last, open);
        self.save(saved).await?;
        Ok(Finished { report, done })
    }
}

impl<I: Invoker, D: FailureDestination, W: ObjectStore + ObjectReader> Target
    for WindowTarget<I, D, W>
{
    fn piece(&self) -> usize {
        self.function.piece()
    }

    fn piece_end(&self, records: &[Record]) -> usize {
        self.function.piece_end(records)
    }

    fn settle<'a>(
        &'a self,
        piece: &'a [Record],
        stop_at: Instant,
    ) -> BoxFuture<'a, Result<Settled, TargetError>> {
        Box::pin(self.settle_piece(piece, stop_at))
    }

    fn finish(&self, stop_at: Instant) -> BoxFuture<'_, Result<Finished, TargetError>> {
        Box::pin(self.finish_shard(stop_at))
    }
}

#[cfg(test)]
mod tests;
