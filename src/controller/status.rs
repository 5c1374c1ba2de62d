//! The status the controller writes (pure): conditions from what it observed,
//! and delivery health folded from what the workers publish on their leases.
//!
//! Conditions follow the conventions Argo CD and Flux read: `Ready` summarises,
//! carrying the reason of the first check that is false, else of the first
//! that is unknown; `Reconciling` is present (True) while something is still
//! on its way; `Stalled` is present (True) while something needs a change to
//! go on. `lastTransitionTime` moves
//! only when a condition's status does.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::api::{DeliveryStatus, FilterState, LogGroupStatus, Sink, WorkersStatus};
use crate::worker::health::ShardHealth;

/// How one part of a subscription stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// As wanted.
    Ready {
        /// A CamelCase reason.
        reason: String,
        /// For people.
        message: String,
    },
    /// On its way (being created, retried after a transient error).
    Pending {
        /// A CamelCase reason.
        reason: String,
        /// For people.
        message: String,
    },
    /// Stuck until something changes (a missing stream, denied permissions).
    Failed {
        /// A CamelCase reason.
        reason: String,
        /// For people.
        message: String,
    },
}

impl Check {
    /// The check a condition written before stands for.
    pub fn of(condition: &Condition) -> Check {
        let (reason, message) = (condition.reason.clone(), condition.message.clone());
        match condition.status.as_str() {
            "True" => Check::Ready { reason, message },
            "False" => Check::Failed { reason, message },
            _ => Check::Pending { reason, message },
        }
    }

    /// A check that is true.
    pub fn ready(reason: &str, message: impl Into<String>) -> Check {
        Check::Ready {
            reason: reason.to_owned(),
            message: message.into(),
        }
    }

    /// A check on its way.
    pub fn pending(reason: &str, message: impl Into<String>) -> Check {
        Check::Pending {
            reason: reason.to_owned(),
            message: message.into(),
        }
    }

    /// A check stuck until something changes.
    pub fn failed(reason: &str, message: impl Into<String>) -> Check {
        Check::Failed {
            reason: reason.to_owned(),
            message: message.into(),
        }
    }

    /// Whether the check is true.
    pub fn is_ready(&self) -> bool {
        matches!(self, Check::Ready { .. })
    }

    /// Its reason.
    pub fn reason(&self) -> &str {
        self.parts().1
    }

    fn parts(&self) -> (&'static str, &str, &str) {
        match self {
            Check::Ready { reason, message } => ("True", reason, message),
            Check::Pending { reason, message } => ("Unknown", reason, message),
            Check::Failed { reason, message } => ("False", reason, message),
        }
    }
}

/// What was observed of a subscription, one check per condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// `Permitted`: whether a LogSubscriptionPolicy allows the spec.
    pub permitted: Check,
    /// `StreamReady`.
    pub stream: Check,
    /// `SubscriptionFilterReady`.
    pub filters: Check,
    /// `WorkersAvailable`.
    pub workers: Check,
    /// `Delivering`.
    pub delivering: Check,
}

/// The conditions for `observed` at `generation`, keeping each condition's
/// `lastTransitionTime` from `previous` while its status is unchanged.
pub fn conditions(
    observed: &Observed,
    previous: &[Condition],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let checks = [
        ("Permitted", &observed.permitted),
        ("StreamReady", &observed.stream),
        ("SubscriptionFilterReady", &observed.filters),
        ("WorkersAvailable", &observed.workers),
        ("Delivering", &observed.delivering),
    ];
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        let since = previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| Time(now), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            observed_generation: generation,
            last_transition_time: since,
        }
    };
    // A stuck check says more than one on its way (an invalid spec leaves
    // the policy check waiting, for instance): it is the one Ready names.
    let first_not_ready = checks
        .iter()
        .find(|(_, check)| matches!(check, Check::Failed { .. }))
        .or_else(|| {
            checks
                .iter()
                .find(|(_, check)| matches!(check, Check::Pending { .. }))
        });
    let mut out = vec![match first_not_ready {
        None => condition("Ready", "True", "Ready", "delivering to the sink"),
        Some((type_, check)) => {
            let (_, reason, message) = check.parts();
            condition("Ready", "False", reason, &format!("{type_}: {message}"))
        }
    }];
    out.extend(checks.iter().map(|(type_, check)| {
        let (status, reason, message) = check.parts();
        condition(type_, status, reason, message)
    }));
    // Stalled names the first stuck check; else Reconciling the first on its
    // way. Never both: kstatus (Flux) reads Reconciling first, and a stuck
    // subscription must not look as if it only needed time.
    let first = |status: &str| checks.iter().find(|(_, c)| c.parts().0 == status);
    let summary = first("False")
        .map(|found| ("Stalled", found))
        .or_else(|| first("Unknown").map(|found| ("Reconciling", found)));
    if let Some((summary, (type_, check))) = summary {
        let (_, reason, message) = check.parts();
        out.push(condition(
            summary,
            "True",
            reason,
            &format!("{type_}: {message}"),
        ));
    }
    out
}

/// The reason a log group's filter state is shown with.
pub fn filter_reason(state: FilterState) -> &'static str {
    match state {
        FilterState::Active => "FiltersActive",
        FilterState::Pending => "FiltersPending",
        FilterState::LimitExceeded => "TooManyFilters",
        FilterState::AccessDenied => "AccessDenied",
        FilterState::InvalidFilterPattern => "InvalidFilterPattern",
        FilterState::DestinationUnreachable => "DestinationUnreachable",
        FilterState::Failed => "FilterFailed",
        FilterState::NotPermitted => "NotPermitted",
    }
}

/// `SubscriptionFilterReady` from the state of each group (`selected` of them
/// are selected): the first group stuck, else the first on its way, else ready.
pub fn filters(groups: &[LogGroupStatus], selected: usize) -> Check {
    let describe = |g: &LogGroupStatus, of: usize| {
        let message = g.message.as_deref().unwrap_or("");
        match of {
            1 => format!("{}: {message}", g.name),
            n => format!("{}: {message} (and {} more)", g.name, n - 1),
        }
    };
    let stuck: Vec<_> = groups
        .iter()
        .filter(|g| !matches!(g.filter, FilterState::Active | FilterState::Pending))
        .collect();
    if let Some(first) = stuck.first() {
        return Check::failed(filter_reason(first.filter), describe(first, stuck.len()));
    }
    let pending: Vec<_> = groups
        .iter()
        .filter(|g| g.filter == FilterState::Pending)
        .collect();
    if let Some(first) = pending.first() {
        return Check::pending("FiltersPending", describe(first, pending.len()));
    }
    if selected == 0 {
        return Check::pending(
            "NoLogGroups",
            "no log group matches the selection yet; it is resolved again every rescanInterval",
        );
    }
    Check::ready(
        "FiltersActive",
        format!("{selected} log group(s) subscribed"),
    )
}

/// The most log groups the status lists: 50,000 selected groups would make an
/// object past etcd's 1.5 MB. `logGroupCount` counts them all.
pub const MAX_LISTED_GROUPS: usize = 1000;

/// The groups the status lists: those whose filter is not Active first (they
/// are what someone needs to read), then Active ones, at most
/// [`MAX_LISTED_GROUPS`], by name.
pub fn listed_groups(groups: &[LogGroupStatus]) -> Vec<LogGroupStatus> {
    if groups.len() <= MAX_LISTED_GROUPS {
        return groups.to_vec();
    }
    let (mut listed, active): (Vec<_>, Vec<_>) = groups
        .iter()
        .cloned()
        .partition(|g| g.filter != FilterState::Active);
    listed.truncate(MAX_LISTED_GROUPS);
    let room = MAX_LISTED_GROUPS - listed.len();
    listed.extend(active.into_iter().take(room));
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    listed
}

/// `WorkersAvailable` and the counts, from the workers' Deployment.
pub fn workers(deployment: &Deployment, desired: i32) -> (Check, WorkersStatus) {
    let status = deployment.status.clone().unwrap_or_default();
    let available = status.available_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let current = status.observed_generation >= deployment.metadata.generation;
    let counts = WorkersStatus { desired, available };
    let stuck = status.conditions.iter().flatten().find(|c| {
        c.type_.as_deref() == Some("Progressing")
            && c.status.as_deref() == Some("False")
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    let check = if let Some(c) = stuck {
        Check::failed(
            "ProgressDeadlineExceeded",
            c.message.clone().unwrap_or_default(),
        )
    } else if desired == 0 {
        Check::ready("ScaledToZero", "no workers asked for")
    } else if current && available >= desired && updated >= desired {
        Check::ready(
            "MinimumReplicasAvailable",
            format!("{available} of {desired} workers available"),
        )
    } else {
        Check::pending(
            "WorkersStarting",
            format!("{available} of {desired} workers available, {updated} up to date"),
        )
    };
    (check, counts)
}

/// One shard as the controller sees it: what its lease says, and for how
/// long the controller has seen that lease unchanged (every renewal changes
/// it; the time is the controller's own, so no clock is compared with another).
#[derive(Clone, Debug, PartialEq)]
pub struct ShardState {
    /// The shard.
    pub shard: String,
    /// Who holds its lease.
    pub holder: Option<String>,
    /// How long the lease has been seen unchanged.
    pub unchanged: std::time::Duration,
    /// How long the lease lasts unrenewed.
    pub duration: std::time::Duration,
    /// Whether the shard was read to its end.
    pub finished: bool,
    /// Whether the shard waits for its parents to be read (unheld, as it must).
    pub waiting: bool,
    /// The health its holder last published.
    pub health: Option<ShardHealth>,
}

/// At most this many shards are named in a message.
const NAMED_SHARDS: usize = 3;

fn name_some(items: &[String]) -> String {
    let mut out = items
        .iter()
        .take(NAMED_SHARDS)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if items.len() > NAMED_SHARDS {
        out.push_str(&format!(" (and {} more)", items.len() - NAMED_SHARDS));
    }
    out
}

/// `Delivering`, from the shard leases (`desired` workers asked for). It is
/// True only while every shard is read: a shard stopped at a record nothing
/// stores, a lease nobody renews, or a reader that makes no progress makes it
/// False, naming the shards.
pub fn delivering(shards: &[ShardState], desired: i32) -> Check {
    if desired == 0 {
        return Check::pending("ScaledToZero", "no workers read the stream");
    }
    let active: Vec<&ShardState> = shards
        .iter()
        .filter(|s| !s.finished && !s.waiting)
        .collect();
    if active.is_empty() {
        return Check::pending("WaitingForShards", "no worker holds a shard yet");
    }
    // The shards whose holder says `what` of them, each with what it says.
    let saying = |what: fn(&ShardHealth) -> Option<&str>| -> Vec<String> {
        active
            .iter()
            .filter_map(|s| Some(format!("{}: {}", s.shard, what(s.health.as_ref()?)?)))
            .collect()
    };
    let blocked = saying(|h| h.blocked.as_deref());
    if !blocked.is_empty() {
        return Check::failed(
            "ShardBlocked",
            format!(
                "stopped at a record nothing would store, and retried with backoff: {}",
                name_some(&blocked)
            ),
        );
    }
    let unread: Vec<String> = active
        .iter()
        .filter(|s| s.unchanged > s.duration)
        .map(|s| {
            let holder = s
                .holder
                .as_deref()
                .map_or_else(|| "no worker".to_owned(), str::to_owned);
            format!(
                "{} (held by {holder}, not renewed for {}s)",
                s.shard,
                s.unchanged.as_secs()
            )
        })
        .collect();
    if !unread.is_empty() {
        return Check::failed(
            "LeasesExpired",
            format!("no worker is reading {}", name_some(&unread)),
        );
    }
    let stalled = saying(|h| h.read_error.as_deref());
    if !stalled.is_empty() {
        return Check::failed(
            "ReaderStalled",
            format!("reading makes no progress: {}", name_some(&stalled)),
        );
    }
    let health: Vec<ShardHealth> = shards.iter().filter_map(|s| s.health.clone()).collect();
    if let Some(error) = health.iter().find_map(|s| s.sink_error.as_deref()) {
        return Check::pending("SinkFailing", format!("retrying: {error}"));
    }
    let folded = delivery(&health);
    Check::ready(
        "Delivering",
        format!(
            "{} events delivered, {} dead-lettered, from {} shard(s)",
            folded.events_delivered,
            folded.dead_lettered,
            active.len()
        ),
    )
}

/// The sink in short, for `kubectl get`.
pub fn sink_summary(sink: &Sink) -> String {
    match sink {
        Sink::Elasticsearch(es) => format!(
            "elasticsearch:{}",
            es.index
                .as_deref()
                .or(es.data_stream.as_deref())
                .unwrap_or_default()
        ),
        Sink::S3(s3) => format!("s3://{}/{}", s3.bucket, s3.prefix),
    }
}

/// The delivery health of all shards: counts summed, the latest delivery, the
/// slowest reader.
pub fn delivery(shards: &[ShardHealth]) -> DeliveryStatus {
    DeliveryStatus {
        events_delivered: shards
            .iter()
            .map(|s| i64::try_from(s.delivered).unwrap_or(i64::MAX))
            .sum(),
        dead_lettered: shards
            .iter()
            .map(|s| i64::try_from(s.dead_lettered).unwrap_or(i64::MAX))
            .sum(),
        last_delivered_time: shards
            .iter()
            .filter_map(|s| s.last_delivery.as_deref()?.parse::<Timestamp>().ok())
            .max()
            .map(Time),
        millis_behind_latest: shards.iter().filter_map(|s| s.millis_behind_latest).max(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(reason: &str) -> Check {
        Check::Ready {
            reason: reason.into(),
            message: "ok".into(),
        }
    }

    fn all_ready() -> Observed {
        Observed {
            permitted: ready("PolicyAllows"),
            stream: ready("StreamActive"),
            filters: ready("FiltersActive"),
            workers: ready("MinimumReplicasAvailable"),
            delivering: ready("Delivering"),
        }
    }

    fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
        conditions.iter().find(|c| c.type_ == type_)
    }

    /// 50,000 selected groups: the status stays small, and lists every group
    /// that needs attention before the Active ones.
    #[test]
    fn the_listed_groups_are_bounded_with_failures_first() {
        let groups: Vec<LogGroupStatus> = (0..50_000)
            .map(|i| LogGroupStatus {
                name: format!("/aws/lambda/a-rather-long-function-name-{i:06}"),
                filter: if i % 10_000 == 7 {
                    FilterState::LimitExceeded
                } else {
                    FilterState::Active
                },
                message: (i % 10_000 == 7).then(|| "the log group already holds 2 subscription filters of other names (a, b); CloudWatch Logs allows 2".to_owned()),
            })
            .collect();
        let listed = listed_groups(&groups);
        assert_eq!(listed.len(), MAX_LISTED_GROUPS);
        assert_eq!(
            listed
                .iter()
                .filter(|g| g.filter == FilterState::LimitExceeded)
                .count(),
            5
        );
        assert!(listed.windows(2).all(|w| w[0].name < w[1].name));
        let bytes = serde_json::to_vec(&listed).unwrap().len();
        assert!(bytes < 200_000, "{bytes} bytes");
        assert_eq!(listed_groups(&groups[..10]), groups[..10]);
    }

    #[test]
    fn ready_when_every_check_is() {
        let now: Timestamp = "2026-11-25T20:00:00Z".parse().unwrap();
        let c = conditions(&all_ready(), &[], Some(3), now);
        let ready = find(&c, "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.observed_generation),
            ("True", Some(3))
        );
        assert!(find(&c, "Reconciling").is_none() && find(&c, "Stalled").is_none());
        assert_eq!(c.len(), 6);
    }

    #[test]
    fn ready_carries_the_first_failing_reason_and_stalled_or_reconciling_say_which_kind() {
        let now: Timestamp = "2026-11-25T20:00:00Z".parse().unwrap();
        let mut observed = all_ready();
        observed.filters = Check::Failed {
            reason: "TooManyFilters".into(),
            message: "/app/full holds two filters of other names".into(),
        };
        observed.workers = Check::Pending {
            reason: "ReplicasStarting".into(),
            message: "0 of 2 available".into(),
        };
        let c = conditions(&observed, &[], Some(1), now);
        let ready = find(&c, "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "TooManyFilters")
        );
        assert!(ready.message.starts_with("SubscriptionFilterReady: "));
        assert_eq!(find(&c, "WorkersAvailable").unwrap().status, "Unknown");
        assert_eq!(find(&c, "Stalled").unwrap().reason, "TooManyFilters");
        assert!(
            find(&c, "Reconciling").is_none(),
            "stuck wins over on its way"
        );
        observed.filters = Check::ready("FiltersActive", "ok");
        let c = conditions(&observed, &c, Some(1), now);
        assert_eq!(find(&c, "Reconciling").unwrap().reason, "ReplicasStarting");
        assert!(find(&c, "Stalled").is_none());
    }

    #[test]
    fn transition_times_move_only_with_the_status() {
        let then: Timestamp = "2026-11-25T20:00:00Z".parse().unwrap();
        let later: Timestamp = "2026-11-25T21:00:00Z".parse().unwrap();
        let first = conditions(&all_ready(), &[], Some(1), then);
        let same = conditions(&all_ready(), &first, Some(2), later);
        assert_eq!(
            find(&same, "Ready").unwrap().last_transition_time,
            Time(then)
        );
        assert_eq!(find(&same, "Ready").unwrap().observed_generation, Some(2));
        let mut observed = all_ready();
        observed.stream = Check::Failed {
            reason: "StreamNotFound".into(),
            message: "no stream flow".into(),
        };
        let changed = conditions(&observed, &same, Some(2), later);
        assert_eq!(
            find(&changed, "Ready").unwrap().last_transition_time,
            Time(later)
        );
        assert_eq!(
            find(&changed, "SubscriptionFilterReady")
                .unwrap()
                .last_transition_time,
            Time(then)
        );
    }

    fn group(name: &str, filter: FilterState, message: Option<&str>) -> LogGroupStatus {
        LogGroupStatus {
            name: name.into(),
            filter,
            message: message.map(str::to_owned),
        }
    }

    #[test]
    fn filters_are_stuck_before_they_are_pending_before_they_are_ready() {
        let active = group("/a", FilterState::Active, None);
        let pending = group(
            "/b",
            FilterState::Pending,
            Some("the log group does not exist"),
        );
        let full = group("/c", FilterState::LimitExceeded, Some("two filters"));
        let denied = group("/d", FilterState::AccessDenied, Some("denied"));
        assert_eq!(
            filters(std::slice::from_ref(&active), 1),
            Check::ready("FiltersActive", "1 log group(s) subscribed")
        );
        assert_eq!(filters(&[], 0).reason(), "NoLogGroups");
        assert_eq!(
            filters(&[active.clone(), pending.clone()], 2),
            Check::pending("FiltersPending", "/b: the log group does not exist")
        );
        assert_eq!(
            filters(&[active, pending, full, denied], 4),
            Check::failed("TooManyFilters", "/c: two filters (and 1 more)")
        );
    }

    #[test]
    fn workers_from_the_deployment() {
        let deployment = |generation: i64, observed: i64, available: i32, updated: i32| {
            serde_json::from_value::<Deployment>(serde_json::json!({
                "metadata": {"name": "w", "generation": generation},
                "spec": {"selector": {}, "template": {}},
                "status": {"observedGeneration": observed, "availableReplicas": available, "updatedReplicas": updated},
            }))
            .unwrap()
        };
        let (check, counts) = workers(&deployment(2, 2, 2, 2), 2);
        assert_eq!(check.reason(), "MinimumReplicasAvailable");
        assert_eq!(
            counts,
            WorkersStatus {
                desired: 2,
                available: 2
            }
        );
        // A rollout in progress: the controller has not seen the new generation.
        assert_eq!(
            workers(&deployment(3, 2, 2, 2), 2).0.reason(),
            "WorkersStarting"
        );
        assert_eq!(
            workers(&deployment(2, 2, 1, 2), 2).0.reason(),
            "WorkersStarting"
        );
        assert_eq!(
            workers(&deployment(1, 1, 0, 0), 0).0.reason(),
            "ScaledToZero"
        );
        let mut stuck = deployment(2, 2, 0, 1);
        stuck.status.as_mut().unwrap().conditions = Some(vec![
            serde_json::from_value(serde_json::json!({
                "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                "message": "ReplicaSet has timed out progressing",
            }))
            .unwrap(),
        ]);
        assert_eq!(
            workers(&stuck, 2).0,
            Check::failed(
                "ProgressDeadlineExceeded",
                "ReplicaSet has timed out progressing"
            )
        );
    }

    fn shard_state(shard: &str, health: ShardHealth) -> ShardState {
        ShardState {
            shard: shard.into(),
            holder: Some(health.worker.clone()),
            unchanged: std::time::Duration::from_secs(2),
            duration: std::time::Duration::from_secs(15),
            finished: false,
            waiting: false,
            health: Some(health),
        }
    }

    #[test]
    fn delivering_from_the_published_health() {
        let shard = |delivered, error: Option<&str>| ShardHealth {
            worker: "w".into(),
            delivered,
            sink_error: error.map(str::to_owned),
            ..ShardHealth::default()
        };
        let states = |h: Vec<ShardHealth>| -> Vec<ShardState> {
            h.into_iter()
                .enumerate()
                .map(|(i, h)| shard_state(&format!("s{i}"), h))
                .collect()
        };
        assert_eq!(delivering(&[], 1).reason(), "WaitingForShards");
        assert_eq!(
            delivering(&states(vec![shard(3, None)]), 0).reason(),
            "ScaledToZero"
        );
        assert_eq!(
            delivering(
                &states(vec![shard(3, None), shard(4, Some("unavailable: 503"))]),
                1
            ),
            Check::pending("SinkFailing", "retrying: unavailable: 503")
        );
        assert_eq!(
            delivering(&states(vec![shard(3, None), shard(4, None)]), 1),
            Check::ready(
                "Delivering",
                "7 events delivered, 0 dead-lettered, from 2 shard(s)"
            )
        );
    }

    /// A worker killed while it held shards publishes nothing more: its
    /// leases stop changing, and after a lease duration Delivering (and so
    /// Ready) is False, naming them, however good their last health was.
    #[test]
    fn leases_nobody_renews_or_shards_that_cannot_go_on_are_not_delivering() {
        let healthy = ShardHealth {
            worker: "pod-a".into(),
            delivered: 10_000,
            ..ShardHealth::default()
        };
        let mut shards = vec![
            shard_state("shardId-0", healthy.clone()),
            shard_state("shardId-1", healthy.clone()),
        ];
        assert!(delivering(&shards, 1).is_ready());
        shards[1].unchanged = std::time::Duration::from_secs(47);
        let check = delivering(&shards, 1);
        assert_eq!(
            check,
            Check::failed(
                "LeasesExpired",
                "no worker is reading shardId-1 (held by pod-a, not renewed for 47s)"
            )
        );
        shards[1].holder = None;
        assert!(
            delivering(&shards, 1)
                .parts()
                .2
                .contains("held by no worker")
        );
        // A child waiting for its parent is not held, and need not be.
        shards[1].waiting = true;
        assert!(delivering(&shards, 1).is_ready());
        // A finished shard's lease is not renewed, and need not be.
        shards[1].waiting = false;
        shards[1].finished = true;
        assert!(delivering(&shards, 1).is_ready());

        let mut stalled = healthy.clone();
        stalled.read_error = Some("no read has succeeded for 31s: timeout".into());
        shards[0] = shard_state("shardId-0", stalled);
        assert_eq!(delivering(&shards, 1).reason(), "ReaderStalled");

        let mut blocked = healthy;
        blocked.blocked = Some("record 49590: the dead-letter index refused it".into());
        shards[0] = shard_state("shardId-0", blocked);
        let check = delivering(&shards, 1);
        assert_eq!(check.reason(), "ShardBlocked");
        assert!(
            check.parts().2.contains("shardId-0: record 49590"),
            "{check:?}"
        );
        assert_eq!(check.parts().0, "False");
    }

    #[test]
    fn delivery_health_folds_over_the_shards() {
        let shard = |delivered, dead, last: Option<&str>, behind| ShardHealth {
            worker: "w".into(),
            delivered,
            dead_lettered: dead,
            millis_behind_latest: behind,
            last_delivery: last.map(str::to_owned),
            ..ShardHealth::default()
        };
        let folded = delivery(&[
            shard(10, 1, Some("2026-11-25T19:44:28.711Z"), Some(200)),
            shard(5, 0, Some("2026-11-25T19:45:00.000Z"), None),
            shard(0, 2, None, Some(9000)),
        ]);
        assert_eq!((folded.events_delivered, folded.dead_lettered), (15, 3));
        assert_eq!(folded.millis_behind_latest, Some(9000));
        assert_eq!(
            folded.last_delivered_time,
            Some(Time("2026-11-25T19:45:00Z".parse().unwrap()))
        );
        assert_eq!(delivery(&[]).last_delivered_time, None);
    }
}
