//! Where records go.

pub mod dlq;
pub mod dynamodb;
pub mod kinesis;
pub mod lambda;
pub mod s3_archive;
pub mod s3_chunks;
