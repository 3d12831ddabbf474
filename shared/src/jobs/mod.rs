//! The jobs the functions and the CLI run: each a source, a pipeline and a
//! sink, in bounded steps.

pub mod action;
pub mod archiver;
pub mod claim;
pub mod items;
pub mod mapping;
pub mod replay;
pub mod scrape;
pub mod step;
