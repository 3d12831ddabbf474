//! Where records go.

pub mod dynamodb;
pub mod invoke;
pub mod kinesis;
pub mod lambda;
pub mod s3_archive;
pub mod s3_chunks;
