//! Kinesis Data Streams, read the way the Kinesis Client Library does: one owner
//! per shard through per-shard leases, parents before children.

pub mod balance;
pub mod lease;
pub mod reader;
