//! Checkpoints: the acknowledgement watermark of a shard (pure); the store on the
//! shard's Lease comes with the lease coordinator.

pub mod watermark;
