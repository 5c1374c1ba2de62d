//! What the controller and the worker both read: the worker's configuration
//! (the controller writes it, the worker reads it), shard leases with their
//! checkpoints and delivery health (the worker writes them, the controller
//! reads them), sequence numbers and name templates. Nothing here imports the
//! controller or the worker, so either can change without reaching into the
//! other; the configuration is built from the API's types (transforms, batch
//! limits), as the API checks its sinks through the parsers here.

pub mod config;
pub mod health;
pub mod lease;
pub mod sequence;
pub mod template;

pub use health::ShardHealth;
pub use lease::{Checkpoint, ShardLease};
pub use sequence::{BadSequenceNumber, SequenceNumber};
pub use template::{Template, TemplateError, UtcHour};
