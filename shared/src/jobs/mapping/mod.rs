//! A local Kinesis event source mapping: what Lambda runs behind a function
//! attached to a stream, for places where no emulator runs one.
//!
//! Every shard of the stream is polled from the mapping's starting position
//! (`TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP`), open and closed shards alike;
//! a child shard is polled only once each of its parents has been read to
//! its end and every record of it settled, as Lambda does, so a partition
//! key's records reach the function in order across a reshard. Reads go
//! through [`crate::sources::kinesis::ShardPoller`] (paced to the shard's limits,
//! throttling backed off, expired iterators re-acquired).
//!
//! Records are gathered per shard until `BatchSize` × `ParallelizationFactor`
//! of them are in hand or `MaximumBatchingWindowInSeconds` has passed since
//! the first; with `FilterCriteria`, only matching records count (those the
//! filters drop are read, counted and checkpointed, never held: see
//! `gather.rs`). The batch is then handed to
//! [`crate::sinks::lambda::Delivery`], which owns every semantic of the
//! invocation (6 MB payloads, lanes per partition key, retries, bisect,
//! partial batch responses, record age, filters, the on-failure
//! destination). The next batch is read only once the previous one is
//! settled: a shard holds at most one batch in memory (with filters, and
//! the rest of the page that filled it), and its checkpoint (the last settled sequence number, kept in memory) never
//! passes a record the function has not acknowledged or the destination
//! has not received.
//!
//! A failed read is retried as Lambda retries it, for as long as it takes:
//! throttles by the poller, other errors (a 500, a dropped connection,
//! after the SDK's own retries) by the mapping, with backoff, logged and
//! counted in the shard's report. Only a read that can't heal (the stream
//! or shard gone, access to it or its key denied) stops the mapping.
//!
//! The mapping runs until `shutdown` resolves or, optionally, until every
//! polled shard has read nothing for a while with nothing in flight.
//! Stopping drops batches in flight without checkpointing them: a restart
//! from the checkpoints would deliver them again (at least once, as Lambda).

pub mod config;
mod gather;
mod heal;
pub mod report;
pub mod stream;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::pin;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::model::event::EventSource;
use crate::model::record::ArrivalTime;
use crate::model::seqno::SequenceNumber;
use crate::model::tumbling::{OpenWindow, TumblingWindow};
use crate::model::window::{ChildShard, StartPosition};
use crate::pipeline::lineage::PlannedShard;
use crate::request::RequestError;
use crate::sinks::dlq::FailureDestination;
use crate::sinks::lambda::invoker::Invoker;
use crate::sinks::lambda::{Delivery, DeliveryError};
use crate::sources::kinesis::{MAX_LIMIT, ReadError, ShardPoller, ShardSource};

use config::MappingConfig;
use gather::{Gathered, Gathering};
use heal::heals;
use report::{MAX_FAILURE_LOCATIONS, MappingReport, ShardReport, ShardStatus, Stopped};

/// Why the mapping could not go on.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// A setting out of the mapping's range (nothing was polled). The
    /// message is the whole story: the field and what it accepts.
    #[error("invalid mapping setting {}: {}", .0.field, .0.message)]
    Invalid(RequestError),
    /// A read that can't heal: the stream or shard is gone, or the mapping
    /// may not read it (or decrypt it); or throttled past `read.max_retries`.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A fatal invoke error (no such function, access denied) or a failed
    /// write to the on-failure destination.
    #[error("delivering the records of {shard_id}")]
    Delivery {
        shard_id: String,
        #[source]
        source: DeliveryError,
    },
}

/// The mapping stopped on an error; `report` is where every shard stood.
#[derive(Debug, thiserror::Error)]
#[error("the event source mapping stopped")]
pub struct MappingError {
    pub report: Box<MappingReport>,
    #[source]
    pub source: ShardError,
}

/// One event source mapping: a stream's shards into a function.
pub struct EventSourceMapping<'a, S, I, D> {
    pub source: &'a S,
    pub invoker: &'a I,
    pub destination: &'a D,
    /// The stream as the events name it (`eventSourceARN`, `awsRegion`).
    pub event_source: &'a EventSource,
    pub config: &'a MappingConfig,
    /// "Now" for record age and the on-failure record's timestamp.
    pub now: fn() -> ArrivalTime,
}

/// Shared between the shard pollers of one run; never held across an await.
struct Shared {
    reports: BTreeMap<String, ShardReport>,
    /// When each polling shard last read a record (or started).
    active_at: BTreeMap<String, Instant>,
}

impl Shared {
    fn report(&mut self, shard_id: &str) -> &mut ShardReport {
        self.reports
            .get_mut(shard_id)
            .expect("a polled shard has a report")
    }
}

impl<S: ShardSource, I: Invoker, D: FailureDestination> EventSourceMapping<'_, S, I, D> {
    /// Polls `shards` (the stream's shards when the mapping starts, as
    /// [`crate::sources::kinesis::list_shards`] lists them for the starting position)
    /// and the children they end with, until `shutdown` resolves, every
    /// shard is idle for `idle_exit`, or every shard has ended.
    pub async fn run(
        &self,
        shards: Vec<PlannedShard>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<MappingReport, MappingError> {
        let shared = Mutex::new(Shared {
            reports: BTreeMap::new(),
            active_at: BTreeMap::new(),
        });
        let report = |stopped: Stopped| {
            let shared = shared.lock().expect("no poller panics holding the lock");
            let mut shards: Vec<PlannedShard> = shared
                .reports
                .values()
                .map(|r| PlannedShard {
                    shard_id: r.shard_id.clone(),
                    parent_shard_ids: r.parent_shard_ids.clone(),
                })
                .collect();
            shards = crate::pipeline::lineage::parents_first(shards);
            MappingReport {
                stopped,
                shards: shards
                    .iter()
                    .map(|s| shared.reports[&s.shard_id].clone())
                    .collect(),
            }
        };
        if let Err(error) = self.config.validate() {
            return Err(MappingError {
                report: Box::new(report(Stopped::Failed)),
                source: ShardError::Invalid(error),
            });
        }
        let initial: BTreeSet<String> = shards.iter().map(|s| s.shard_id.clone()).collect();
        {
            let mut shared = shared.lock().expect("not poisoned");
            for shard in &shards {
                shared
                    .reports
                    .insert(shard.shard_id.clone(), ShardReport::new(shard));
            }
        }
        let mut shutdown = pin!(shutdown);
        let mut running = FuturesUnordered::new();
        let mut started: BTreeSet<String> = BTreeSet::new();
        let idle_check = self
            .config
            .idle_exit
            .map(|idle| (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)));
        loop {
            // Start every shard whose parents have all ended. Parents missing
            // from the shards listed at the start (expired, or closed before
            // a LATEST start) don't hold a listed shard back; a child found
            // at a parent's end waits for every parent it names, unless
            // nothing else is left to poll.
            let ready_shards = |force: bool| -> Vec<(String, StartPosition)> {
                let shared = shared.lock().expect("not poisoned");
                shared
                    .reports
                    .values()
                    .filter(|r| !started.contains(&r.shard_id))
                    .filter(|r| {
                        r.parent_shard_ids
                            .iter()
                            .all(|p| match shared.reports.get(p) {
                                Some(parent) => parent.status == ShardStatus::Ended,
                                None => force || initial.contains(&r.shard_id),
                            })
                    })
                    .map(|r| {
                        let start = if initial.contains(&r.shard_id) {
                            self.config.starting_position.clone()
                        } else {
                            StartPosition::TrimHorizon
                        };
                        (r.shard_id.clone(), start)
                    })
                    .collect()
            };
            let mut ready = ready_shards(false);
            if ready.is_empty() && running.is_empty() {
                ready = ready_shards(true);
                if !ready.is_empty() {
                    warn!(shards = ?ready, "parents never seen: polling their children anyway");
                }
            }
            for (shard_id, start) in ready {
                started.insert(shard_id.clone());
                {
                    let mut shared = shared.lock().expect("not poisoned");
                    if let Some(r) = shared.reports.get_mut(&shard_id) {
                        r.status = ShardStatus::Polling;
                    }
                    shared.active_at.insert(shard_id.clone(), Instant::now());
                }
                info!(shard = %shard_id, ?start, "polling shard");
                running.push(self.poll_shard(shard_id, start, &shared));
            }
            if running.is_empty() {
                return Ok(report(Stopped::AllShardsEnded));
            }
            let idle_tick = async {
                match idle_check {
                    Some(every) => tokio::time::sleep(every).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut shutdown => {
                    info!("shutdown: stopping the mapping");
                    drop(running);
                    return Ok(report(Stopped::Shutdown));
                }
                Some(ended) = running.next() => match ended {
                    Ok((shard_id, children)) => {
                        let mut shared = shared.lock().expect("not poisoned");
                        shared.active_at.remove(&shard_id);
                        for child in &children {
                            shared
                                .reports
                                .entry(child.shard_id.clone())
                                .or_insert_with(|| {
                                    ShardReport::new(&PlannedShard {
                                        shard_id: child.shard_id.clone(),
                                        parent_shard_ids: child.parent_shards.clone(),
                                    })
                                });
                        }
                        if let Some(r) = shared.reports.get_mut(&shard_id) {
                            r.status = ShardStatus::Ended;
                            r.child_shard_ids = children.into_iter().map(|c| c.shard_id).collect();
                            info!(shard = %shard_id, children = ?r.child_shard_ids, records = r.records, "shard ended");
                        }
                    }
                    Err(source) => {
                        drop(running);
                        return Err(MappingError {
                            report: Box::new(report(Stopped::Failed)),
                            source,
                        });
                    }
                },
                () = idle_tick => {
                    let idle = self.config.idle_exit.unwrap_or(Duration::MAX);
                    let now = Instant::now();
                    let all_idle = {
                        let shared = shared.lock().expect("not poisoned");
                        shared.reports.values().all(|r| r.in_flight == 0)
                            && shared
                                .active_at
                                .values()
                                .all(|at| now.duration_since(*at) >= idle)
                    };
                    if all_idle {
                        info!(idle_secs = idle.as_secs_f64(), "every shard idle: stopping the mapping");
                        drop(running);
                        return Ok(report(Stopped::Idle));
                    }
                }
            }
        }
    }

    /// Polls one shard to its end (or forever, while it is open); returns
    /// its children.
    async fn poll_shard(
        &self,
        shard_id: String,
        start: StartPosition,
        shared: &Mutex<Shared>,
    ) -> Result<(String, Vec<ChildShard>), ShardError> {
        let capacity = self.config.capacity();
        let filters = self.config.options.filters().map_err(ShardError::Invalid)?;
        let mut poller = ShardPoller::new(
            self.source,
            shard_id.clone(),
            start,
            self.config.read.clone(),
        );
        let mut gathering = Gathering::default();
        // The children the shard ended with, once its last page is read.
        let mut ended: Option<Vec<ChildShard>> = None;
        // The shard's tumbling window (`TumblingWindowInSeconds`), in memory
        // as its checkpoint is.
        let mut tumbling: Option<OpenWindow> = None;
        // Reads failed in a row, for the backoff.
        let mut read_failures = 0u32;
        loop {
            gathering.examine(&filters, capacity, self.config.batching_window);
            if let Some((passed, last)) = gathering.take_passed() {
                pass(shared, &shard_id, passed, last);
            }
            let window_over = gathering
                .window_ends
                .is_some_and(|end| Instant::now() >= end);
            let drained = ended.is_some() && gathering.examined();
            if gathering.matching() > 0
                && (gathering.matching() >= capacity || window_over || drained)
            {
                if let Some(gathered) = gathering.take() {
                    self.settle(&shard_id, gathered, &mut tumbling, shared)
                        .await?;
                }
                continue;
            }
            if drained && let Some(children) = ended.take() {
                // "When the shard ends, Lambda considers the window closed,
                // and the child shards start their own window in a fresh
                // state."
                self.close_window(&shard_id, &mut tumbling, shared).await?;
                return Ok((shard_id, children));
            }
            // Without filters a poll reads no more than fits in the batch.
            // With them, the records they drop take no room, so a poll
            // reads what one GetRecords call may give (the rest of the page
            // waits, unexamined, for the next batch), as the live mapping
            // reads a page and then filters it.
            let limit = if filters.is_empty() {
                (capacity - gathering.matching()).min(MAX_LIMIT as usize) as i32
            } else {
                MAX_LIMIT
            };
            let page = poller.next_page(limit).await;
            let transient = page.as_ref().is_err_and(heals);
            {
                let mut shared = shared.lock().expect("not poisoned");
                if let Some(r) = shared.reports.get_mut(&shard_id) {
                    r.throttles = poller.throttles();
                    r.read_errors += u64::from(transient);
                }
            }
            let page = match page {
                Ok(page) => page,
                Err(error) if transient => {
                    // The poller keeps its position on a failed call: the
                    // retry reads the same records, none twice, none
                    // skipped (an iterator that expires meanwhile is
                    // re-acquired after the last record read).
                    read_failures += 1;
                    let mut wait =
                        crate::backoff::backoff(self.config.read.base_backoff, read_failures);
                    // Records already gathered are delivered when their
                    // window ends, however long the reads keep failing.
                    if let Some(end) = gathering.window_ends {
                        wait = wait.min(end.saturating_duration_since(Instant::now()));
                    }
                    warn!(
                        shard = %shard_id,
                        error = &error as &(dyn std::error::Error + 'static),
                        failures = read_failures,
                        retry_in_ms = wait.as_millis() as u64,
                        "reading the shard failed; retrying"
                    );
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Err(source) => {
                    return Err(ReadError {
                        stream: self.event_source.stream_arn.clone(),
                        shard_id: shard_id.clone(),
                        source,
                    }
                    .into());
                }
            };
            if read_failures > 0 {
                info!(shard = %shard_id, failures = read_failures, "reading the shard again");
                read_failures = 0;
            }
            let page = {
                let mut shared = shared.lock().expect("not poisoned");
                if !page.records.is_empty() {
                    shared.active_at.insert(shard_id.clone(), Instant::now());
                    if let Some(r) = shared.reports.get_mut(&shard_id) {
                        r.in_flight += page.records.len() as u64;
                    }
                }
                page
            };
            let empty = page.records.is_empty();
            gathering.read(page.records);
            if page.next_iterator.is_none() {
                ended = Some(page.child_shards);
                continue;
            }
            // A window whose end has passed closes with its final invoke,
            // even if no later record comes to close it.
            if gathering.is_empty()
                && let Some(seconds) = self.config.options.tumbling_window()
                && tumbling
                    .as_ref()
                    .is_some_and(|w| TumblingWindow::of(w.start, seconds).end <= (self.now)())
            {
                self.close_window(&shard_id, &mut tumbling, shared).await?;
            }
            // Behind the tip, an empty page is a gap in the shard's data:
            // poll again at once (paced). At the tip, wait as Lambda does,
            // but not past the window of records already gathered.
            if empty && page.millis_behind_latest.unwrap_or(0) == 0 {
                let wait = match gathering.window_ends {
                    Some(end) => self
                        .config
                        .idle_poll
                        .min(end.saturating_duration_since(Instant::now())),
                    None => self.config.idle_poll,
                };
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// Hands one gathered batch to delivery; checkpoints after it (and the
    /// dropped records read with it) once every record is settled.
    async fn settle(
        &self,
        shard_id: &str,
        gathered: Gathered,
        tumbling: &mut Option<OpenWindow>,
        shared: &Mutex<Shared>,
    ) -> Result<(), ShardError> {
        let Gathered {
            batch,
            passed,
            last,
        } = gathered;
        let (Some(first), Some(last)) = (batch.first(), last) else {
            return Ok(());
        };
        let first = first.sequence_number.clone();
        let matching = batch.len() as u64;
        let records = matching + passed;
        debug!(shard = %shard_id, records = matching, filtered = passed, %first, %last, "delivering batch");
        let delivery = self.delivery();
        let delivered = match self.config.options.tumbling_window() {
            Some(_) => delivery
                .deliver_windowed(&batch, tumbling, None, &Mutex::default())
                .await
                .map(|(report, _)| report),
            None => delivery.deliver(batch).await,
        }
        .map_err(|source| ShardError::Delivery {
            shard_id: shard_id.to_owned(),
            source,
        })?;
        let mut shared = shared.lock().expect("not poisoned");
        let r = shared.report(shard_id);
        // Records come from one shard in order: the checkpoint only moves
        // forward (numerically).
        debug_assert!(r.checkpoint.as_ref().is_none_or(|c| *c < first));
        r.records += records;
        r.batches += 1;
        r.in_flight -= records;
        r.counters += delivered.counters;
        r.counters.filtered += passed;
        let room = MAX_FAILURE_LOCATIONS.saturating_sub(r.failure_locations.len());
        let (kept, dropped) = delivered
            .failure_locations
            .split_at(room.min(delivered.failure_locations.len()));
        r.failure_locations.extend(kept.iter().cloned());
        r.failure_locations_dropped += dropped.len() as u64;
        for location in dropped {
            info!(shard = %shard_id, %location, "batch sent to the on-failure destination");
        }
        r.checkpoint = Some(last.clone());
        // Settling is activity too: the idle clock starts when the batch is
        // done, not when it was read, or a delivery longer than the idle
        // time would end the mapping before the shard's next poll.
        shared.active_at.insert(shard_id.to_owned(), Instant::now());
        info!(
            shard = %shard_id,
            records,
            filtered = passed,
            invocations = delivered.counters.invocations,
            function_errors = delivered.counters.function_errors,
            failed_records = delivered.counters.failed_records,
            checkpoint = %last,
            "batch settled"
        );
        Ok(())
    }
}

impl<S, I: Invoker, D: FailureDestination> EventSourceMapping<'_, S, I, D> {
    fn delivery(&self) -> Delivery<'_, I, D> {
        Delivery {
            invoker: self.invoker,
            destination: self.destination,
            source: self.event_source,
            options: &self.config.options,
            now: self.now,
            base_backoff: self.config.invoke_backoff,
        }
    }

    /// The shard's tumbling window, ended with its final invoke (retried
    /// until the function takes it, as Lambda holds the shard until then).
    async fn close_window(
        &self,
        shard_id: &str,
        tumbling: &mut Option<OpenWindow>,
        shared: &Mutex<Shared>,
    ) -> Result<(), ShardError> {
        if tumbling.is_none() {
            return Ok(());
        }
        let mut report = crate::sinks::lambda::DeliveryReport::default();
        self.delivery()
            .close_window(tumbling, None, &Mutex::default(), &mut report)
            .await
            .map_err(|source| ShardError::Delivery {
                shard_id: shard_id.to_owned(),
                source,
            })?;
        let mut shared = shared.lock().expect("not poisoned");
        if let Some(r) = shared.reports.get_mut(shard_id) {
            r.counters += report.counters;
        }
        Ok(())
    }
}

/// Checkpoints past records the filters dropped with no matching record
/// ahead of them: they are settled (counted as filtered, as the mapping
/// counts them processed) without an invoke.
fn pass(shared: &Mutex<Shared>, shard_id: &str, passed: u64, last: SequenceNumber) {
    let mut shared = shared.lock().expect("not poisoned");
    let r = shared.report(shard_id);
    debug_assert!(r.checkpoint.as_ref().is_none_or(|c| *c < last));
    r.records += passed;
    r.in_flight -= passed;
    r.counters.filtered += passed;
    debug!(shard = %shard_id, filtered = passed, checkpoint = %last, "filtered records passed");
    r.checkpoint = Some(last);
}

/// The system clock, as the mapping's "now" (record age, failure records).
pub fn wall_clock() -> ArrivalTime {
    ArrivalTime::from_datetime(chrono::Utc::now())
}

#[cfg(test)]
mod tests;
