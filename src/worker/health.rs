//! Delivery health. Each worker publishes, on every shard lease it holds, how
//! that shard's delivery is going; the controller folds these into the
//! LogSubscription's status (one writer per object: workers write leases).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::sink::SinkError;
use super::sink::batch::Stored;
use crate::contract::{SequenceNumber, ShardHealth};
use crate::time::rfc3339_millis;

/// How the sink is doing, shared by the driver's deliveries (writers) and the
/// shard tasks (readers, when they publish). Each delivery that is failing
/// says why until it is stored, so one that is stuck (an index that takes
/// nothing) stays on the status while others succeed beside it.
#[derive(Debug, Default)]
pub struct SinkHealth {
    troubles: Mutex<BTreeMap<u64, String>>,
    next: AtomicU64,
}

impl SinkHealth {
    /// A delivery's own entry, withdrawn when it is dropped.
    pub fn watch(self: &Arc<Self>) -> Trouble {
        Trouble {
            health: self.clone(),
            id: self.next.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The longest-standing failure, if any delivery is failing.
    pub fn error(&self) -> Option<String> {
        self.lock().values().next().cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, String>> {
        self.troubles.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What one delivery says about the sink while it lasts.
#[derive(Debug)]
pub struct Trouble {
    health: Arc<SinkHealth>,
    id: u64,
}

impl Trouble {
    /// The delivery is failing, for this reason.
    pub fn failed(&self, e: &SinkError) {
        self.health
            .lock()
            .insert(self.id, format!("{}: {}", e.category, e.message));
    }

    /// The delivery no longer fails.
    pub fn ok(&self) {
        let mut troubles = self.health.lock();
        if troubles.remove(&self.id).is_some() && troubles.is_empty() {
            tracing::info!("sink delivering again");
        }
    }
}

impl Drop for Trouble {
    fn drop(&mut self) {
        self.ok();
    }
}

/// The delivery counters of a shard this worker holds.
#[derive(Debug, Default)]
pub struct ShardCounters {
    /// As published when the lease was taken, plus what this worker did.
    pub health: ShardHealth,
}

impl ShardCounters {
    /// Continues from what the previous holder published. A shard it
    /// stopped at a record stays stopped there until the checkpoint passes it.
    pub fn resume(worker: &str, previous: Option<ShardHealth>) -> ShardCounters {
        let previous = previous.unwrap_or_default();
        let (blocked, blocked_at) = match previous.blocked_at {
            Some(at) => (previous.blocked, Some(at)),
            None => (None, None),
        };
        ShardCounters {
            health: ShardHealth {
                worker: worker.to_owned(),
                delivered: previous.delivered,
                dead_lettered: previous.dead_lettered,
                last_delivery: previous.last_delivery,
                blocked,
                blocked_at,
                ..ShardHealth::default()
            },
        }
    }

    /// The shard stops at the record at `sequence`, for `reason`.
    pub fn blocked(&mut self, sequence: &SequenceNumber, reason: &str) {
        self.health.blocked = Some(format!("record {sequence}: {reason}"));
        self.health.blocked_at = Some(sequence.clone());
    }

    /// Every record up to `checkpoint` is delivered: a record the shard
    /// stopped at no longer holds it once passed.
    pub fn passed(&mut self, checkpoint: Option<&SequenceNumber>) {
        if let (Some(at), Some(checkpoint)) = (&self.health.blocked_at, checkpoint)
            && checkpoint >= at
        {
            self.health.blocked = None;
            self.health.blocked_at = None;
        }
    }

    /// A part was stored at `now_millis`: its documents where they belong,
    /// its dead letters in the dead letter.
    pub fn delivered(&mut self, stored: &Stored, now_millis: i64) {
        self.health.delivered += stored.documents as u64;
        self.health.dead_lettered += stored.dead_lettered as u64;
        self.health.last_delivery = Some(rfc3339_millis(now_millis));
    }

    /// The health to publish now.
    pub fn snapshot(&self, sink: &SinkHealth) -> ShardHealth {
        ShardHealth {
            sink_error: sink.error(),
            ..self.health.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_continue_from_the_previous_holder_and_show_sink_errors() {
        let previous = ShardHealth {
            worker: "a".into(),
            delivered: 10,
            dead_lettered: 1,
            millis_behind_latest: Some(5),
            last_delivery: None,
            sink_error: Some("old".into()),
            read_error: Some("old".into()),
            blocked: Some("old".into()),
            blocked_at: None,
        };
        let mut c = ShardCounters::resume("b", Some(previous));
        c.delivered(
            &Stored {
                documents: 5,
                dead_lettered: 2,
            },
            0,
        );
        let sink = Arc::new(SinkHealth::default());
        let stuck = sink.watch();
        let delivery = sink.watch();
        stuck.failed(&SinkError::new("unwritable", "403 cluster_block_exception"));
        delivery.failed(&SinkError::new("unavailable", "connection refused"));
        let h = c.snapshot(&sink);
        assert_eq!(
            (h.worker.as_str(), h.delivered, h.dead_lettered),
            ("b", 15, 3)
        );
        assert_eq!(
            (h.read_error, h.blocked),
            (None, None),
            "a new holder's own"
        );
        assert_eq!(h.last_delivery.as_deref(), Some("1970-01-01T00:00:00.000Z"));
        assert_eq!(
            h.sink_error.as_deref(),
            Some("unwritable: 403 cluster_block_exception"),
            "the longest-standing"
        );
        assert_eq!(h.millis_behind_latest, None);
        delivery.ok();
        assert_eq!(
            c.snapshot(&sink).sink_error.as_deref(),
            Some("unwritable: 403 cluster_block_exception"),
            "another delivery's success does not clear a stuck one"
        );
        drop(stuck);
        assert_eq!(c.snapshot(&sink).sink_error, None);
        let json = serde_json::to_string(&c.snapshot(&sink)).unwrap();
        assert_eq!(
            json,
            r#"{"worker":"b","delivered":15,"deadLettered":3,"lastDelivery":"1970-01-01T00:00:00.000Z"}"#
        );
    }
}
