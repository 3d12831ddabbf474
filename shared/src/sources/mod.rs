//! Where records come from.

pub mod kinesis;
pub mod s3_archive;
