//! Scraping a window of a stream into S3, one bounded step at a time: the
//! plan (which shards, parents before children), the step (read a shard
//! until the step's time or chunk budget, write one chunk), and the
//! manifest. The request is in [`request`], what the function and the state
//! machine exchange in [`protocol`], the output's layout in
//! [`crate::sinks::s3_chunks`].
//!
//! No record is lost (the cursor only moves once the step's chunk is
//! stored) and none is duplicated (a retried step replaces its chunk).

use std::collections::BTreeSet;

use tokio::time::Instant;

use crate::jobs::items::{Items, ItemsLocation, plan_key, write_items};
use crate::jobs::step::{self, stop_time};
use crate::model::chunk::Compression;
use crate::model::manifest::{Manifest, ShardManifest};
use crate::model::record::stream_name_from_arn;
use crate::pipeline::lineage::PlannedShard;
use crate::request::RequestError;
use crate::sinks::s3_chunks::{self, FinalProgress, ManifestError, StepChunk, shard_folder};
use crate::sources::kinesis::{
    ShardSource, ShardWindow, StepBudget, list_shards, read_step, resolve_stream_arn,
};
use crate::store::{ObjectReader, ObjectStore};

pub mod protocol;
pub mod request;

pub use protocol::{
    ManifestLocation, Plan, PlanOutput, RunOutcome, ScrapeError, ScraperError, ScraperEvent,
    ScraperOutput, ShardProgress, StepOutcome,
};
pub use request::{
    MAX_CONCURRENCY, MAX_POLL_DELAY_MS, OutputLocation, ScrapeRequest, ShardSelection,
};

/// Records per chunk (and so per step) at most, unless configured.
pub const DEFAULT_MAX_RECORDS_PER_CHUNK: u64 = 100_000;

/// Runs one step of one shard: reads until the shard's window is done, the
/// deadline, or `max_records`, and stores what it read as chunk `n`; the
/// shard's last step also stores its own manifest (its chunks) and final
/// progress.
#[allow(clippy::too_many_arguments)]
pub async fn scrape_step<S: ShardSource, O: ObjectStore + ObjectReader>(
    source: &S,
    store: &O,
    window: &ShardWindow,
    stream_arn: &str,
    run_folder: &str,
    compression: Compression,
    progress: &ShardProgress,
    budget: StepBudget,
) -> Result<ShardProgress, ScrapeError> {
    let mut progress = progress.clone();
    if progress.is_done() {
        return Ok(progress);
    }
    let folder = shard_folder(run_folder, &progress.cursor.shard_id);
    let mut chunk = StepChunk::open(store, &folder, progress.chunks, compression).await?;
    let cursor = read_step(source, window, &progress.cursor, budget, |record| {
        chunk.write(&record);
    })
    .await?;
    if let Some(summary) = chunk.store(store).await?
        && let (Some(first), Some(last)) = (summary.first, summary.last)
    {
        progress.chunks += 1;
        if progress.first_sequence_number.is_none() {
            progress.first_sequence_number = Some(first.sequence_number);
            progress.first_arrival = summary.first_arrival;
        }
        progress.last_sequence_number = Some(last.sequence_number);
        progress.last_arrival = summary.last_arrival;
    }
    progress.cursor = cursor;
    if progress.is_done() {
        // The shard's manifest first: its final progress says it is done.
        let planned = PlannedShard {
            shard_id: progress.cursor.shard_id.clone(),
            parent_shard_ids: progress.parent_shard_ids.clone(),
        };
        let chunks = s3_chunks::shard_chunks(store, &folder).await?;
        let manifest = ShardManifest {
            stream_arn: stream_arn.to_owned(),
            compression,
            shard: progress.clone().manifest_shard(&planned, chunks),
        };
        s3_chunks::write_shard_manifest(store, &folder, &manifest).await?;
        s3_chunks::write_final_progress(store, &folder, &progress).await?;
    }
    Ok(progress)
}

/// Builds and stores `manifest.json` from the shards' chunks and final
/// progress; returns it and its key.
pub async fn write_manifest<O: ObjectStore + ObjectReader>(
    store: &O,
    request: &ScrapeRequest,
    stream_arn: &str,
    run_id: &str,
    shards: &[PlannedShard],
) -> Result<(Manifest, String), ManifestError> {
    let run_folder = request.run_folder(run_id);
    s3_chunks::write_manifest::<_, ShardProgress>(store, &run_folder, shards, |shards| Manifest {
        stream: stream_name_from_arn(stream_arn)
            .unwrap_or(&request.stream)
            .to_owned(),
        stream_arn: stream_arn.to_owned(),
        run_id: run_id.to_owned(),
        bucket: request.output.bucket.clone(),
        prefix: request.output.prefix.clone(),
        compression: request.compression,
        start: request.start.clone(),
        stop: request.stop.clone(),
        records: shards.iter().map(|s| s.records).sum(),
        shards,
    })
    .await
}

/// How much time a step leaves unused before its Lambda deadline: enough to
/// finish the chunk upload and return.
pub const STEP_MARGIN: std::time::Duration = std::time::Duration::from_secs(20);

/// The budget of a step that must be done by `deadline`.
pub fn step_budget(deadline: Instant, max_records: u64) -> StepBudget {
    StepBudget {
        deadline: stop_time(deadline, STEP_MARGIN),
        max_records,
    }
}

/// Where a scrape's output goes: S3 (the bucket the request names) for the
/// function, or a local folder for the CLI.
pub trait Outputs: Send + Sync {
    type Store: ObjectStore + ObjectReader + crate::store::CreateNew;
    fn for_request(&self, request: &ScrapeRequest) -> Self::Store;
}

impl Outputs for aws_sdk_s3::Client {
    type Store = crate::store::S3Store;

    fn for_request(&self, request: &ScrapeRequest) -> Self::Store {
        crate::store::S3Store::new(self.clone(), request.output.bucket.clone())
    }
}

impl Outputs for crate::store::DirStore {
    type Store = crate::store::DirStore;

    fn for_request(&self, _request: &ScrapeRequest) -> Self::Store {
        self.clone()
    }
}

/// The scraper's clients and budget, built once per container (or once
/// per CLI run).
#[derive(Debug, Clone)]
pub struct Scraper<O = aws_sdk_s3::Client> {
    kinesis: aws_sdk_kinesis::Client,
    outputs: O,
    /// Records per chunk (and so per step) at most.
    max_records_per_chunk: u64,
}

impl<O> Scraper<O> {
    /// The one way to build a scraper, for the function and the CLI alike.
    pub fn new(kinesis: aws_sdk_kinesis::Client, outputs: O, max_records_per_chunk: u64) -> Self {
        Self {
            kinesis,
            outputs,
            max_records_per_chunk,
        }
    }
}

impl<O: Outputs> Scraper<O> {
    fn store(&self, request: &ScrapeRequest) -> O::Store {
        self.outputs.for_request(request)
    }

    /// The shards to read, parents first, with where each starts.
    pub async fn plan(&self, request: &ScrapeRequest, run_id: &str) -> Result<Plan, ScraperError> {
        // Boxed: one more nested future here overflows rustc's layout
        // query depth for the scraper's main.
        Box::pin(crate::jobs::claim::scrape(
            &self.store(request),
            request,
            run_id,
        ))
        .await?;
        let stream_arn = resolve_stream_arn(&self.kinesis, &request.stream).await?;
        let mut shards = list_shards(&self.kinesis, &stream_arn, &request.start).await?;
        if let ShardSelection::List(wanted) = &request.shards {
            if let Some(missing) = wanted
                .iter()
                .find(|w| !shards.iter().any(|s| &s.shard_id == *w))
            {
                return Err(RequestError::new(
                    "shards",
                    format!("{missing:?} is not a shard of {stream_arn} that can hold the window"),
                )
                .into());
            }
            shards.retain(|s| wanted.contains(&s.shard_id));
        }
        Ok(Plan {
            progress: shards.iter().map(ShardProgress::new).collect(),
            stream_arn,
            run_id: run_id.to_owned(),
            shards,
        })
    }

    /// Stores the plan's shards where the state machine's Distributed Map
    /// reads them, and answers where they are.
    pub async fn store_plan(
        &self,
        request: &ScrapeRequest,
        plan: Plan,
    ) -> Result<PlanOutput, ScraperError> {
        let key = plan_key(&request.run_folder(&plan.run_id));
        write_items(&self.store(request), &key, &plan.progress)
            .await
            .map_err(ScraperError::PlanWrite)?;
        Ok(PlanOutput {
            shards: plan.progress.len(),
            stream_arn: plan.stream_arn,
            run_id: plan.run_id,
            items: ItemsLocation {
                bucket: request.output.bucket.clone(),
                key,
            },
        })
    }

    /// The shards of a stored plan, in its order (parents first).
    async fn planned(
        &self,
        request: &ScrapeRequest,
        plan: &ItemsLocation,
    ) -> Result<Vec<PlannedShard>, ScraperError> {
        Items::<ShardProgress>::read(&self.store(request), &plan.key)
            .await?
            .map(|progress| {
                progress.map(|p| PlannedShard {
                    shard_id: p.cursor.shard_id,
                    parent_shard_ids: p.parent_shard_ids,
                })
            })
            .collect::<Result<_, _>>()
            .map_err(ScraperError::from)
    }

    async fn step(
        &self,
        request: &ScrapeRequest,
        stream_arn: &str,
        run_id: &str,
        progress: &ShardProgress,
        budget: StepBudget,
    ) -> Result<ShardProgress, ScraperError> {
        let source = crate::sources::kinesis::KinesisSource::new(self.kinesis.clone(), stream_arn);
        let stream = stream_name_from_arn(stream_arn).unwrap_or(&request.stream);
        let window = request.window(stream);
        Ok(scrape_step(
            &source,
            &self.store(request),
            &window,
            stream_arn,
            &request.run_folder(run_id),
            request.compression,
            progress,
            budget,
        )
        .await?)
    }

    async fn manifest(
        &self,
        request: &ScrapeRequest,
        stream_arn: &str,
        run_id: &str,
        shards: &[PlannedShard],
    ) -> Result<ManifestLocation, ScraperError> {
        let (manifest, key) =
            write_manifest(&self.store(request), request, stream_arn, run_id, shards).await?;
        let planned: BTreeSet<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
        let unscraped: BTreeSet<String> = manifest
            .shards
            .iter()
            .flat_map(|s| s.child_shard_ids.iter())
            .filter(|id| !planned.contains(id.as_str()))
            .cloned()
            .collect();
        Ok(ManifestLocation {
            bucket: request.output.bucket.clone(),
            key,
            records: manifest.records,
            shards: manifest.shards.len(),
            unscraped_child_shard_ids: unscraped.into_iter().collect(),
        })
    }

    /// Handles one invocation; `deadline` is the Lambda's, `invocation_id`
    /// names a run that the event doesn't name.
    pub async fn handle(
        &self,
        event: ScraperEvent,
        deadline: Instant,
        invocation_id: &str,
    ) -> Result<ScraperOutput, ScraperError> {
        match event {
            ScraperEvent::Plan { request } => {
                let run_id = step::run_id(request.run_id.as_deref(), invocation_id);
                let plan = self.plan(&request, &run_id).await?;
                Ok(ScraperOutput::Plan(self.store_plan(&request, plan).await?))
            }
            ScraperEvent::PlanForReplay { request } => {
                let run_id = step::run_id(request.run_id.as_deref(), invocation_id);
                let run_id = crate::jobs::claim::replay_scrape_run_id(&run_id);
                let plan = self.plan(&request, &run_id).await?;
                Ok(ScraperOutput::Plan(self.store_plan(&request, plan).await?))
            }
            ScraperEvent::Step {
                request,
                stream_arn,
                run_id,
                progress,
            } => {
                let budget = step_budget(deadline, self.max_records_per_chunk);
                let progress = self
                    .step(&request, &stream_arn, &run_id, &progress, budget)
                    .await?;
                Ok(ScraperOutput::Step(StepOutcome {
                    done: progress.is_done(),
                    progress,
                }))
            }
            ScraperEvent::Manifest {
                request,
                stream_arn,
                run_id,
                plan,
            } => {
                let shards = self.planned(&request, &plan).await?;
                Ok(ScraperOutput::Manifest(
                    self.manifest(&request, &stream_arn, &run_id, &shards)
                        .await?,
                ))
            }
            ScraperEvent::Run {
                request,
                stream_arn,
                run_id,
                shards,
            } => {
                let run_id = match run_id {
                    Some(run_id) => run_id,
                    None => step::run_id(request.run_id.as_deref(), invocation_id),
                };
                let (stream_arn, mut progress) = match (stream_arn, shards) {
                    (Some(arn), Some(shards)) => (arn, shards),
                    _ => {
                        let plan = self.plan(&request, &run_id).await?;
                        (plan.stream_arn, plan.progress)
                    }
                };
                // Shards one after the other, parents first, each to its end
                // or the deadline. The margin is the invocation's, taken
                // once: a deadline under STEP_MARGIN away (a short timeout,
                // SCRAPER_MAX_STEP_SECONDS) still leaves time to read.
                let budget = step_budget(deadline, self.max_records_per_chunk);
                for shard in progress.iter_mut() {
                    while !shard.is_done() && Instant::now() < budget.deadline {
                        *shard = self
                            .step(&request, &stream_arn, &run_id, shard, budget)
                            .await?;
                    }
                }
                if progress.iter().all(ShardProgress::is_done) {
                    let planned: Vec<PlannedShard> = progress
                        .iter()
                        .map(|p| PlannedShard {
                            shard_id: p.cursor.shard_id.clone(),
                            parent_shard_ids: p.parent_shard_ids.clone(),
                        })
                        .collect();
                    let manifest = self
                        .manifest(&request, &stream_arn, &run_id, &planned)
                        .await?;
                    Ok(ScraperOutput::Run(RunOutcome::Succeeded { manifest }))
                } else {
                    let records = progress.iter().map(|p| p.cursor.records).sum();
                    let next = ScraperEvent::Run {
                        request,
                        stream_arn: Some(stream_arn),
                        run_id: Some(run_id),
                        shards: Some(progress),
                    };
                    Ok(ScraperOutput::Run(RunOutcome::InProgress {
                        next: Box::new(next),
                        records,
                    }))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
