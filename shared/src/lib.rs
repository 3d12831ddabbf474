//! The Kinesis Rewind engine: everything the archiver, scraper and replay
//! functions and the `rewind` CLI share. Entry points only parse input, build
//! clients and call in here, so no Kinesis semantic is written twice.
//!
//! A job is a source, a few pipeline functions and a sink, run in bounded
//! steps. The layers, in the order records flow through them (a layer only
//! uses the ones above it):
//!
//! - [`model`]: what every layer speaks. [`model::seqno`]: sequence numbers,
//!   ordered *numerically* (decimal strings of up to 129 digits), and a
//!   record's [`model::seqno::Position`] in its shard; [`model::record`]:
//!   one Kinesis record or one user record of a KPL aggregate, with all of
//!   its metadata, and the record-line JSON format; [`model::chunk`]:
//!   compressed record-line chunks (gzip, zstd) with errors naming the
//!   object and line; [`model::kpl`]: the KPL aggregation format,
//!   byte-compatible with the reference implementation; [`model::event`]:
//!   the Kinesis event exactly as a Lambda event source mapping delivers it.
//! - [`sources`]: where records come from. [`sources::kinesis`]: a window
//!   of one shard (every start position and stop condition, paced to the
//!   shard's limits, through throttling and expired iterators), one bounded
//!   step at a time.
//! - [`pipeline`]: what happens on the way. [`pipeline::lineage`]: parents
//!   before children, shards grouped by lineage; [`pipeline::filter`]: the
//!   mapping's `FilterCriteria`.
//! - [`sinks`]: where records go. [`sinks::lambda`]: a shard's records to a
//!   function exactly as the mapping delivers them (batching under 6 MB,
//!   retries, bisect, partial batch responses, record age, parallel lanes,
//!   the on-failure record); [`sinks::dlq`]: the S3, SQS and log-only
//!   on-failure destinations; [`sinks::kinesis`]: records back
//!   onto a stream (PutRecords within its limits, per-key order kept);
//!   [`sinks::s3_archive`]: the S3 archive's Hive-style layout, its batch
//!   writer and its scan; [`sinks::dynamodb`]: the DynamoDB archive (`ALL` or
//!   `LATEST` per partition key, TTL, S3 overflow past 400 KB) and its reader.
//! - [`jobs`]: [`jobs::archiver`] (a delivered batch into every archive
//!   sink), [`jobs::mapping`] (a local event source mapping),
//!   [`jobs::scrape`] (a window of a stream into S3 chunks and a manifest)
//!   and [`jobs::replay`] (a window from a scrape or the archive to a
//!   function or a stream).
//!
//! Beside the layers: [`request`] (request errors naming the field, JSON
//! parsing, name checks), [`store`] (the object-store seam, S3 and a folder)
//! and [`backoff`] (the one wait before every retry).

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
