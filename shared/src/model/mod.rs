//! The record model and its formats: what every other layer speaks.

pub mod archive;
pub mod chunk;
pub mod counters;
pub mod dynamodb_item;
pub mod event;
pub mod kpl;
pub mod manifest;
pub mod record;
pub mod seqno;
pub mod tumbling;
pub mod window;
