//! The Kinesis Rewind engine: everything the archiver, scraper and replay
//! functions and the `rewind` CLI share. Entry points only parse input, build
//! clients and call in here, so no Kinesis semantic is written twice.
//!
//! A job is a source, a few pipeline steps and a sink, run in bounded steps.
//! The layers, in the order records flow through them. [`model`] uses no
//! other layer; sources and sinks use the model and the pipeline's plain
//! functions (a source orders its shards by lineage, a sink cuts batches);
//! only [`jobs`] puts them together, and nothing else uses it:
//!
//! 1. [`model`]: what every layer speaks. [`model::seqno`]: sequence
//!    numbers, ordered *numerically* (decimal strings of up to 129 digits),
//!    and [`model::seqno::Position`], a record's one place in its shard;
//!    [`model::record`]: one Kinesis record or one user record of a KPL
//!    aggregate, with all of its metadata, as a record line;
//!    [`model::chunk`]: compressed record-line chunks (gzip, zstd);
//!    [`model::kpl`]: the KPL aggregation format; [`model::event`]: the
//!    Kinesis event exactly as an event source mapping delivers it;
//!    [`model::window`]: a window of a shard (start position, stop
//!    condition); [`model::manifest`]: what a scrape wrote;
//!    [`model::archive`] and [`model::dynamodb_item`]: the S3 archive's keys
//!    and the DynamoDB archive's items.
//! 2. [`sources`]: where records come from, behind one seam,
//!    [`sources::RecordSource`] (shards in lineage groups; pages of records
//!    after a position): [`sources::kinesis`] (a shard window read within
//!    the shard's limits, through throttling and expired iterators),
//!    [`sources::manifest`] (a scrape), [`sources::s3_archive`],
//!    [`sources::dynamodb`] and [`sources::files`] (local record files).
//! 3. [`pipeline`]: what happens on the way. [`pipeline::lineage`] (parents
//!    before children), [`pipeline::dedupe`] (skip what is at or before a
//!    position), [`pipeline::filter`] (the mapping's `FilterCriteria`),
//!    [`pipeline::deaggregate`] (KPL aggregates into user records),
//!    [`pipeline::batch`] (the 6 MB cut, parallelization lanes) and
//!    [`pipeline::pace`] (a replay's records per second, or the original
//!    pace sped up).
//! 4. [`sinks`]: where records go, a replay's behind one seam,
//!    [`sinks::Target`] (settle a piece up to a stop time):
//!    [`sinks::lambda`] (delivery with the mapping's semantics: batching,
//!    retries, bisect, partial batch responses, record age), [`sinks::dlq`]
//!    (the on-failure record, to S3 or SQS), [`sinks::kinesis`] (records
//!    back onto a stream, per-key order kept), [`sinks::function_target`],
//!    [`sinks::stream_target`] and [`sinks::dry_run`] (the replay's
//!    targets), [`sinks::s3_archive`] and [`sinks::dynamodb`] (the
//!    archives) and [`sinks::s3_chunks`] (a scrape's chunks and manifest).
//! 5. [`jobs`]: what the functions and the CLI run. [`jobs::step`] (what a
//!    bounded step needs: its stop time, the run id, stable error type
//!    names), [`jobs::archiver`] (a delivered batch into every archive),
//!    [`jobs::mapping`] (a local event source mapping), [`jobs::scrape`] (a
//!    window of a stream into S3) and [`jobs::replay`] (a window from a
//!    scrape or an archive to a function or a stream).
//!
//! Beside the layers: [`request`] (request errors naming the field, JSON
//! parsing, name checks), [`store`] (the object-store seam: S3 and a
//! folder) and [`backoff`] (the one wait before every retry).

pub mod backoff;
pub mod jobs;
pub mod model;
pub mod pipeline;
pub mod request;
pub mod sinks;
pub mod sources;
pub mod store;

pub use model::record::{ArrivalTime, Record};
pub use model::seqno::{SequenceNumber, UserRecordId};
