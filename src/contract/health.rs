//! The delivery health a worker publishes on each shard lease it holds, and
//! the controller folds into the LogSubscription's status (one writer per
//! object: workers write leases, the controller the status).

use serde::{Deserialize, Serialize};

use super::SequenceNumber;

/// The health of one shard, as published on its lease.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ShardHealth {
    /// The worker that holds the shard.
    pub worker: String,
    /// Documents delivered from the shard, over all its holders.
    pub delivered: u64,
    /// Records of the shard that went to the dead letter, over all its holders.
    pub dead_lettered: u64,
    /// How far the reader is behind the shard's tip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub millis_behind_latest: Option<i64>,
    /// When a document of this shard was last delivered (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery: Option<String>,
    /// Why the sink is failing, while it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink_error: Option<String>,
    /// Why reading the shard makes no progress (a GetRecords that keeps
    /// failing or hanging), while it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_error: Option<String>,
    /// The record the shard stopped at, and why: a document of it and its
    /// dead letter were both refused for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
    /// The record `blocked` names. A later holder sends one part at a time
    /// until its checkpoint passes that record, so that nothing after it is
    /// stored while it still fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_at: Option<SequenceNumber>,
}
