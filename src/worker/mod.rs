//! The worker: reads a LogSubscription's Kinesis stream and delivers each log
//! event as a document. The stages here are pure; I/O lives at the edges.

pub mod checkpoint;
pub mod config;
pub mod decode;
pub mod document;
pub mod process;
pub mod run;
pub mod source;
pub mod transform;
