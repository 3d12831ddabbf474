//! What happens to records between a source and a sink.

pub mod batch;
pub mod deaggregate;
pub mod dedupe;
pub mod filter;
pub mod lineage;
pub mod pace;
