//! The worker: reads a LogSubscription's Kinesis stream and delivers each log
//! event as a document. The stages here are pure; I/O lives at the edges.

pub mod checkpoint;
pub mod dead_letter;
pub mod decode;
pub mod document;
pub mod health;
pub mod pipeline;
pub mod prepare_pool;
pub mod process;
pub mod run;
pub mod shard;
pub mod sink;
pub mod source;
pub mod transform;
