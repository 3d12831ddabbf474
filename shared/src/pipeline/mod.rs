//! What happens to records between a source and a sink.

pub mod batch;
pub mod deaggregate;
pub mod filter;
pub mod lineage;
