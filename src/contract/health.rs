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
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "sequence_or_none"
    )]
    pub blocked_at: Option<SequenceNumber>,
}

/// A record named by something other than a sequence number (an edit by
/// hand) names none, rather than making the whole health unreadable.
fn sequence_or_none<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SequenceNumber>, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(value.as_str().and_then(|s| SequenceNumber::parse(s).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record a blocked shard names comes back as it was written, and a
    /// name that is no sequence number loses only itself, not the counters.
    #[test]
    fn the_blocked_record_reads_back_and_a_bad_one_names_none() {
        let health = ShardHealth {
            worker: "w".into(),
            delivered: 7,
            blocked: Some("record 41: refused".into()),
            blocked_at: Some(SequenceNumber::parse("41").unwrap()),
            ..ShardHealth::default()
        };
        let json = serde_json::to_string(&health).unwrap();
        assert!(json.contains(r#""blockedAt":"41""#), "{json}");
        assert_eq!(serde_json::from_str::<ShardHealth>(&json).unwrap(), health);
        for bad in [r#""0012""#, r#""""#, "12", "null", "[]"] {
            let json =
                format!(r#"{{"worker":"w","delivered":7,"deadLettered":0,"blockedAt":{bad}}}"#);
            let read: ShardHealth = serde_json::from_str(&json).unwrap();
            assert_eq!((read.delivered, read.blocked_at), (7, None), "{bad}");
        }
    }
}
