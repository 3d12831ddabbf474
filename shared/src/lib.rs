//! The Kinesis Rewind engine: everything the archiver, scraper and replay
//! functions and the `rewind` CLI share. Entry points only parse input, build
//! clients and call in here, so no Kinesis semantic is written twice.
//!
//! A tour of where each concept lives:
//!
//! - [`seqno`]: sequence numbers and sub-sequence numbers. Kinesis sequence
//!   numbers are decimal strings of up to 129 digits; they order
//!   *numerically*, and [`seqno::SequenceNumber::to_padded`] gives the
//!   fixed-width form for stores that compare strings.
//! - [`record`]: the record model ([`record::Record`]: one Kinesis record, or
//!   one user record of a KPL aggregate, with all of its metadata) and the
//!   record-line JSON format used in S3 chunks and local files.
//! - [`chunk`]: streaming writer and reader of compressed record-line chunks
//!   (gzip by default, zstd as an option), with errors that name the object
//!   and line of a corrupt or truncated chunk.
//! - [`kpl`]: the KPL aggregation format: deaggregate what producers
//!   aggregated, aggregate again for re-injection, byte-compatible with the
//!   reference implementation.
//! - [`event`]: the Kinesis event exactly as a Lambda event source mapping
//!   delivers it, built from records, serialised as the mapping serialises it,
//!   and parsed from what a mapping delivered.
//! - [`archive`]: the S3 archive layout (Hive-style stream / day / hour /
//!   shard partitions) and the batch writer behind the archiver function,
//!   with the partial batch response the mapping expects.
//! - [`archiver`]: one delivered batch into every configured archive sink,
//!   per-stream settings (environment, stream tags), and the partial batch
//!   response.
//! - [`delivery`]: a shard's records to a function exactly as the event
//!   source mapping delivers them (batching under 6 MB, retries, bisect,
//!   partial batch responses, record age, parallel lanes per partition key,
//!   the on-failure record).
//! - [`filter`]: the mapping's `FilterCriteria` patterns on Kinesis records.
//! - [`invoke`]: the Lambda invoker and the S3 and SQS on-failure
//!   destinations behind [`delivery`].
//! - [`mapping`]: a local event source mapping: every shard of a stream
//!   polled (children after their parents), records batched by `BatchSize`
//!   and `MaximumBatchingWindowInSeconds` and handed to [`delivery`], an
//!   in-memory checkpoint and counters per shard.
//! - [`dynamo`]: the DynamoDB archive (`ALL` records or the `LATEST` per
//!   partition key, numerically ordered keys, TTL, S3 overflow for items
//!   past 400 KB).
//! - [`reinject`]: records back onto a stream (PutRecords within its limits,
//!   failed entries retried, per-key order kept, the archiver's envelope).
//! - [`replay`]: the replay request (a scrape manifest, the S3 or DynamoDB
//!   archive, or a scrape first; to a function or onto a stream), the plan
//!   (shards in lineage groups), one replay step of one shard, and the
//!   summary.
//! - [`scrape`]: the scrape request (validated, errors naming the field),
//!   the plan (shards and lineage), one scrape step (a chunk per step, in
//!   S3), and the manifest.
//! - [`shard`]: reading a window of one shard (every start position and
//!   stop condition, paced to the shard's limits, through throttling and
//!   expired iterators) one bounded step at a time.
//! - [`store`]: the object-store seam ([`store::ObjectStore`]) and its S3
//!   adapter.
//! - [`backoff`]: the one wait (exponential, full jitter) before every
//!   retry of a throttled or failed call.

pub mod archive;
pub mod archiver;
pub mod backoff;
pub mod chunk;
pub mod delivery;
pub mod dynamo;
pub mod event;
pub mod filter;
pub mod invoke;
pub mod kpl;
pub mod mapping;
pub mod record;
pub mod reinject;
pub mod replay;
pub mod scrape;
pub mod seqno;
pub mod shard;
pub mod store;

pub use record::{ArrivalTime, Record};
pub use seqno::{SequenceNumber, UserRecordId};
