//! Shard leases as both sides read them: the worker holds one
//! `coordination.k8s.io/v1` Lease per shard of one stream, with the shard, its
//! parents, its checkpoint and its delivery health as annotations; the
//! controller lists them to fold delivery health into the status, and to find
//! and delete a subscription's leases. How the worker takes, renews and fences
//! them is the worker's ([`crate::worker::source::kinesis::lease`]).

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;

use super::{SequenceNumber, ShardHealth};

/// Label naming the LogSubscription a lease belongs to.
pub const SUBSCRIPTION_LABEL: &str = "logsub.io/subscription";
/// Label naming the stream a lease's checkpoint belongs to (see [`stream_key`]).
pub const STREAM_LABEL: &str = "logsub.io/stream";
/// Annotation naming the stream of a lease's checkpoint, for people.
pub const STREAM_ARN_ANNOTATION: &str = "logsub.io/stream-arn";
pub(crate) const SHARD_ANNOTATION: &str = "logsub.io/shard-id";
pub(crate) const PARENTS_ANNOTATION: &str = "logsub.io/parent-shards";
pub(crate) const CHECKPOINT_ANNOTATION: &str = "logsub.io/checkpoint";
/// Annotation holding the holder's [`ShardHealth`] as JSON.
const HEALTH_ANNOTATION: &str = "logsub.io/health";
/// The checkpoint of a shard read to its end.
pub const SHARD_END: &str = "SHARD_END";

/// The key of one stream: the ARN and the creation time (when known) hashed
/// to 10 hex digits, short enough for a label value and a Lease name.
pub fn stream_key(arn: &str, created_millis: Option<i64>) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(arn.as_bytes());
    if let Some(created) = created_millis {
        hash.update(format!("@{created}").as_bytes());
    }
    hash.finalize()
        .iter()
        .take(5)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where a shard stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checkpoint {
    /// Nothing acknowledged yet: read from the start position.
    None,
    /// Every record up to this one is delivered.
    At(SequenceNumber),
    /// The shard was read to its end.
    ShardEnd,
}

/// A lease as last read or written by this worker.
#[derive(Clone, Debug)]
pub struct ShardLease {
    pub(crate) lease: Lease,
}

impl From<Lease> for ShardLease {
    fn from(lease: Lease) -> ShardLease {
        ShardLease { lease }
    }
}

impl ShardLease {
    /// The Lease object's name.
    pub fn name(&self) -> &str {
        self.lease.metadata.name.as_deref().unwrap_or_default()
    }

    /// The shard id.
    pub fn shard_id(&self) -> &str {
        self.annotation(SHARD_ANNOTATION).unwrap_or_default()
    }

    /// The holder, if any.
    pub fn holder(&self) -> Option<&str> {
        self.lease
            .spec
            .as_ref()?
            .holder_identity
            .as_deref()
            .filter(|h| !h.is_empty())
    }

    /// The stored checkpoint.
    pub fn checkpoint(&self) -> Checkpoint {
        match self.annotation(CHECKPOINT_ANNOTATION) {
            Some(SHARD_END) => Checkpoint::ShardEnd,
            Some(s) => SequenceNumber::parse(s).map(Checkpoint::At).unwrap_or_else(|_| {
                tracing::warn!(lease = self.name(), checkpoint = s, "a checkpoint that is no sequence number; the shard starts at its start position");
                Checkpoint::None
            }),
            None => Checkpoint::None,
        }
    }

    /// The shard's parents.
    pub fn parents(&self) -> Vec<String> {
        self.annotation(PARENTS_ANNOTATION)
            .map(|p| {
                p.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The health its holder last published; None when absent or unreadable
    /// (health is informational: a bad value never blocks the shard).
    pub fn health(&self) -> Option<ShardHealth> {
        serde_json::from_str(self.annotation(HEALTH_ANNOTATION)?).ok()
    }

    /// Sets the health that the next write of this lease publishes.
    pub fn publish(&mut self, health: &ShardHealth) {
        if let Ok(json) = serde_json::to_string(health) {
            self.lease
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(HEALTH_ANNOTATION.to_owned(), json);
        }
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.lease
            .metadata
            .annotations
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }

    pub(crate) fn resource_version(&self) -> &str {
        self.lease
            .metadata
            .resource_version
            .as_deref()
            .unwrap_or_default()
    }
}
