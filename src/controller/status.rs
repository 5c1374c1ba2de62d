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

use kube::runtime::events::{Event, EventType};

use super::error::{aws_reason, filter_failure};
use super::plan::{Action, FILTERS_PER_GROUP, StreamAction};
use crate::api::{
    DeliveryStatus, FilterState, LogGroupStatus, LogSubscription, LogSubscriptionStatus, Sink,
    WorkersStatus,
};
use crate::aws::kinesis::StreamInfo;
use crate::aws::logs::Group;
use crate::aws::{AwsError, ErrorClass};
use crate::contract::ShardHealth;

/// The Events of one reconcile, published after its status is written.
#[derive(Default)]
pub struct Events(pub Vec<Event>);

impl Events {
    /// A Normal Event.
    pub fn normal(&mut self, reason: &str, action: &str, note: String) {
        self.push(EventType::Normal, reason, action, note);
    }

    /// A Warning Event.
    pub fn warning(&mut self, reason: &str, action: &str, note: String) {
        self.push(EventType::Warning, reason, action, note);
    }

    fn push(&mut self, type_: EventType, reason: &str, action: &str, note: String) {
        self.0.push(Event {
            type_,
            reason: reason.to_owned(),
            // The Events API caps a note at 1 kB.
            note: Some(note.chars().take(1000).collect()),
            action: action.to_owned(),
            secondary: None,
        });
    }
}

/// The reason of the `Ready` condition of `status`.
pub fn ready_reason(status: &LogSubscriptionStatus) -> Option<&str> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.reason.as_str())
}

/// The status of `lsub` for `observed` at `now`, everything else kept from `previous`.
pub fn with_checks(
    lsub: &LogSubscription,
    observed: &Observed,
    previous: &LogSubscriptionStatus,
    now: Timestamp,
) -> LogSubscriptionStatus {
    LogSubscriptionStatus {
        observed_generation: lsub.metadata.generation,
        conditions: conditions(
            observed,
            &previous.conditions,
            lsub.metadata.generation,
            now,
        ),
        ..previous.clone()
    }
}

/// The workers of a LogSubscription that may not run, whose Deployment could
/// not be deleted yet.
fn still_running(e: &kube::Error) -> Check {
    Check::pending("WorkersStopping", format!("stopping the workers: {e}"))
}

/// The status of a spec that cannot be acted on (`why`); `left` holds the
/// groups whose filter could not come off yet, when the region is known.
pub fn invalid(
    lsub: &LogSubscription,
    why: &str,
    left: Option<&[LogGroupStatus]>,
    stopping: Option<&kube::Error>,
    previous: &LogSubscriptionStatus,
    now: Timestamp,
) -> LogSubscriptionStatus {
    let waiting = || Check::pending("InvalidSpec", "waiting for a valid spec");
    let observed = Observed {
        permitted: waiting(),
        stream: Check::failed("InvalidSpec", why),
        filters: waiting(),
        workers: stopping.map_or_else(waiting, still_running),
        delivering: waiting(),
    };
    let mut status = with_checks(lsub, &observed, previous, now);
    if let Some(left) = left {
        status.log_group_count = Some(0);
        status.log_groups = listed_groups(left);
        status.workers = None;
    }
    status
}

/// The status of a LogSubscription no policy permits (`why`): nothing of it
/// runs; `left` holds the groups whose filter could not come off yet.
pub fn withdrawn(
    lsub: &LogSubscription,
    why: &str,
    left: &[LogGroupStatus],
    stopping: Option<&kube::Error>,
    previous: &LogSubscriptionStatus,
    now: Timestamp,
) -> LogSubscriptionStatus {
    let waiting = || Check::pending("NotPermitted", "waiting for a policy to permit it");
    let observed = Observed {
        permitted: Check::failed("NotPermitted", why),
        stream: waiting(),
        filters: match left.first() {
            Some(g) => Check::pending(
                "FiltersRemaining",
                format!(
                    "removing the filter from {} log group(s): {}: {}",
                    left.len(),
                    g.name,
                    g.message.as_deref().unwrap_or_default()
                ),
            ),
            None => waiting(),
        },
        workers: stopping.map_or_else(waiting, still_running),
        delivering: waiting(),
    };
    LogSubscriptionStatus {
        sink: Some(sink_summary(&lsub.spec.sink)),
        log_group_count: Some(0),
        log_groups: listed_groups(left),
        workers: None,
        ..with_checks(lsub, &observed, previous, now)
    }
}

/// The status of a LogSubscription no policy selects that still runs for a
/// grace period (`why`): not permitted, everything else as last seen.
pub fn unselected(
    lsub: &LogSubscription,
    why: &str,
    previous: &LogSubscriptionStatus,
    now: Timestamp,
) -> LogSubscriptionStatus {
    let kept = |type_: &str| {
        previous
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map_or_else(|| Check::pending("Unknown", "not observed yet"), Check::of)
    };
    let observed = Observed {
        permitted: Check::failed("NotPermitted", why),
        stream: kept("StreamReady"),
        filters: kept("SubscriptionFilterReady"),
        workers: kept("WorkersAvailable"),
        delivering: kept("Delivering"),
    };
    with_checks(lsub, &observed, previous, now)
}

/// How the workers stand, as far as they were reached.
pub enum WorkersSeen {
    /// The stream is not usable: no workers are applied.
    NoStream,
    /// Their objects could not be applied (the check says why).
    NotApplied(Check),
    /// Applied: their Deployment's state, and each shard as its lease shows.
    Running {
        /// `WorkersAvailable`, and the counts.
        workers: (Check, WorkersStatus),
        /// The shards.
        shards: Vec<ShardState>,
    },
}

/// The status of a permitted LogSubscription: `permitted` says by which
/// policies, `view` is AWS as last synced, `seen` the workers.
pub fn running(
    lsub: &LogSubscription,
    permitted: Check,
    view: &super::AwsView,
    seen: WorkersSeen,
    previous: &LogSubscriptionStatus,
    now: Timestamp,
) -> LogSubscriptionStatus {
    let desired = lsub.spec.workers.replicas;
    let (workers_check, workers, delivering, delivery) = match seen {
        WorkersSeen::NoStream => {
            let waiting = || Check::pending("WaitingForStream", "the stream is not usable yet");
            (
                waiting(),
                previous.workers.clone(),
                waiting(),
                previous.delivery.clone(),
            )
        }
        WorkersSeen::NotApplied(check) => {
            let observed = Observed {
                permitted,
                stream: view.stream.clone(),
                filters: view.filters.clone(),
                workers: check,
                delivering: Check::pending(
                    "WaitingForWorkers",
                    "the workers' objects are not applied",
                ),
            };
            return with_checks(lsub, &observed, previous, now);
        }
        WorkersSeen::Running {
            workers: (check, counts),
            shards,
        } => {
            let health: Vec<_> = shards.iter().filter_map(|s| s.health.clone()).collect();
            (
                check,
                Some(counts),
                self::delivering(&shards, desired),
                (!health.is_empty()).then(|| self::delivery(&health)),
            )
        }
    };
    let observed = Observed {
        permitted,
        stream: view.stream.clone(),
        filters: view.filters.clone(),
        workers: workers_check,
        delivering,
    };
    LogSubscriptionStatus {
        stream_arn: view.stream_arn.clone(),
        sink: Some(sink_summary(&lsub.spec.sink)),
        log_group_count: Some(i32::try_from(view.selected).unwrap_or(i32::MAX)),
        log_groups: listed_groups(&view.groups),
        workers,
        delivery,
        ..with_checks(lsub, &observed, previous, now)
    }
}

/// The check an AWS failure leaves, and whether retrying soon can help.
pub fn aws_check(e: &AwsError, doing: &str) -> (Check, bool) {
    let message = format!("{doing}: {}: {}", e.code, e.message);
    match e.class {
        ErrorClass::Permanent => (Check::failed(aws_reason(e), message), false),
        _ => (Check::pending(aws_reason(e), message), true),
    }
}

/// The check a managed stream's step leaves (`written`: how its write went;
/// `info`: the stream as observed), with its Event; and whether to look
/// again soon (anything but ready, or a failure retrying can help).
pub fn stream_step(
    name: &str,
    action: &StreamAction,
    info: Option<&StreamInfo>,
    written: Result<(), AwsError>,
    events: &mut Events,
) -> (Check, bool) {
    if let Err(e) = written {
        let (check, retry) = aws_check(&e, "changing the stream");
        if !retry {
            events.warning(
                check.reason(),
                "SyncStream",
                format!("{}: {}", e.code, e.message),
            );
        }
        return (check, retry);
    }
    let check = match (action, info) {
        (StreamAction::Create(capacity), _) => {
            events.normal(
                "StreamCreated",
                "CreateStream",
                format!("created stream {name} ({capacity:?})"),
            );
            Check::pending("StreamCreating", format!("creating stream {name}"))
        }
        (StreamAction::Wait(status), _) => Check::pending(
            &format!("Stream{status:?}"),
            format!("stream {name} is {status:?}"),
        ),
        (StreamAction::Resize(capacity), Some(i)) => {
            events.normal(
                "StreamResized",
                "UpdateShardCount",
                format!(
                    "stream {name}: {} open shard(s) → {capacity:?}",
                    i.open_shards
                ),
            );
            Check::pending(
                "StreamUpdating",
                format!("resizing stream {name} to {capacity:?}"),
            )
        }
        (StreamAction::Retain(hours), Some(i)) => {
            events.normal(
                "StreamRetentionChanged",
                "UpdateRetention",
                format!(
                    "stream {name}: retention {} h → {hours} h",
                    i.retention_hours
                ),
            );
            Check::pending(
                "StreamUpdating",
                format!("changing the retention of stream {name}"),
            )
        }
        (StreamAction::Ready, Some(i)) => {
            Check::ready("StreamActive", format!("{} open shard(s)", i.open_shards))
        }
        (_, None) => Check::pending("StreamCreating", format!("creating stream {name}")),
    };
    let retry = !check.is_ready();
    (check, retry)
}

/// The row of each group a filter action was for, from its outcome
/// (`found`: the groups as observed; `want`: today's filter name; `was`: a
/// group's state in the last status), with the Events to publish; and
/// whether retrying soon can help. A filter removed from a group that left
/// the selection leaves no row.
pub fn filter_rows(
    written: Vec<(Action, Result<(), AwsError>)>,
    found: &[Group],
    want: &str,
    is_selected: impl Fn(&str) -> bool,
    was: impl Fn(&str) -> Option<FilterState>,
    events: &mut Events,
) -> (Vec<LogGroupStatus>, bool) {
    let mut rows = Vec::new();
    let mut retry = false;
    for (action, result) in written {
        let (group, state, message) = match (action, result) {
            (Action::Keep { group, .. }, _) => (group, FilterState::Active, None),
            (Action::Put { group, name }, Ok(())) => {
                events.normal(
                    "SubscriptionFilterPut",
                    "PutSubscriptionFilter",
                    format!("put filter {name} on {group}"),
                );
                (group, FilterState::Active, None)
            }
            (Action::Rename { group, from }, Ok(())) => {
                events.normal(
                    "SubscriptionFilterRenamed",
                    "PutSubscriptionFilter",
                    format!("put filter {} on {group} in place of {from}", want),
                );
                (group, FilterState::Active, None)
            }
            (Action::Delete { group, name }, Ok(())) => {
                let why = if name == want {
                    "which left the selection"
                } else {
                    "renamed"
                };
                events.normal(
                    "SubscriptionFilterDeleted",
                    "DeleteSubscriptionFilter",
                    format!("removed filter {name} from {group}, {why}"),
                );
                continue;
            }
            (Action::Blocked(group), _) => {
                let others: Vec<&str> = found
                    .iter()
                    .find(|g| g.name == group)
                    .map(|g| g.filters.iter().map(|f| f.name.as_str()).collect())
                    .unwrap_or_default();
                let message = format!(
                    "the log group already holds {} subscription filters of other names ({}); CloudWatch Logs allows {}",
                    others.len(),
                    others.join(", "),
                    FILTERS_PER_GROUP
                );
                (group, FilterState::LimitExceeded, Some(message))
            }
            (Action::Foreign(group, destination), _) => {
                let message = format!(
                    "a filter named {} exists that sends to {destination}, where this LogSubscription never sent: it is not ours and is left alone",
                    want
                );
                (group, FilterState::Failed, Some(message))
            }
            // A failed rename either left the old filter delivering or
            // could not remove it: looked at again at the next resync.
            (action, Err(e)) => {
                let failure = filter_failure(&e);
                retry |= failure.retry;
                // A selected group's row is its put's, not the removal of
                // its filter's earlier name (tried again soon).
                if let Action::Delete { group, name } = &action
                    && *name != want
                    && is_selected(group)
                {
                    continue;
                }
                let message = Some(format!("{}: {}", e.code, e.message));
                (action.group().to_owned(), failure.state, message)
            }
        };
        if state != FilterState::Active
            && was(&group) != Some(state)
            && state != FilterState::Pending
        {
            events.warning(
                filter_reason(state),
                "PutSubscriptionFilter",
                format!("{group}: {}", message.as_deref().unwrap_or_default()),
            );
        }
        rows.push(LogGroupStatus {
            name: group,
            filter: state,
            message,
        });
    }
    (rows, retry)
}

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

    fn aws_error(code: &str) -> AwsError {
        AwsError {
            class: crate::aws::class_of_code(code),
            code: code.into(),
            message: "m".into(),
        }
    }

    fn info(shards: i32) -> StreamInfo {
        StreamInfo {
            name: "s".into(),
            arn: "arn:s".into(),
            status: crate::aws::kinesis::StreamStatus::Active,
            open_shards: shards,
            on_demand: false,
            retention_hours: 24,
            created_millis: None,
        }
    }

    #[test]
    fn a_stream_step_leaves_its_check_and_event() {
        use crate::aws::kinesis::Capacity;
        let mut events = Events::default();
        let create = StreamAction::Create(Capacity::Shards(2));
        let (check, retry) = stream_step("s", &create, None, Ok(()), &mut events);
        assert_eq!((check.reason(), retry), ("StreamCreating", true));
        let (check, retry) = stream_step(
            "s",
            &StreamAction::Ready,
            Some(&info(2)),
            Ok(()),
            &mut events,
        );
        assert_eq!((check.reason(), retry), ("StreamActive", false));
        let reasons: Vec<_> = events.0.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(reasons, ["StreamCreated"]);

        // A refusal waits for a change and says so once; throttling retries quietly.
        let mut events = Events::default();
        let resize = StreamAction::Resize(Capacity::Shards(4));
        let denied = Err(aws_error("AccessDeniedException"));
        let (check, retry) = stream_step("s", &resize, Some(&info(2)), denied, &mut events);
        assert!(matches!(check, Check::Failed { .. }) && !retry, "{check:?}");
        assert_eq!(check.reason(), "AccessDenied");
        let throttled = Err(aws_error("LimitExceededException"));
        let (check, retry) = stream_step("s", &resize, Some(&info(2)), throttled, &mut events);
        assert!(matches!(check, Check::Pending { .. }) && retry, "{check:?}");
        assert_eq!(events.0.len(), 1);
    }

    #[test]
    fn each_filter_write_becomes_a_row_and_an_event() {
        let group = |name: &str, filters: &[&str]| Group {
            name: name.into(),
            filters: filters
                .iter()
                .map(|f| crate::aws::logs::Filter {
                    name: (*f).into(),
                    pattern: String::new(),
                    destination_arn: "arn:other".into(),
                    role_arn: None,
                    distribution: None,
                })
                .collect(),
        };
        let found = [group("/full", &["a", "b"])];
        let put = |g: &str, n: &str| Action::Put {
            group: g.into(),
            name: n.into(),
        };
        let delete = |g: &str, n: &str| Action::Delete {
            group: g.into(),
            name: n.into(),
        };
        let written = vec![
            (put("/new", "ours"), Ok(())),
            (delete("/left", "ours"), Ok(())),
            (Action::Blocked("/full".into()), Ok(())),
            (
                put("/denied", "ours"),
                Err(aws_error("AccessDeniedException")),
            ),
            // The earlier name of a selected group that will not go yet:
            // its row is its put's.
            (
                delete("/new", "legacy"),
                Err(aws_error("ThrottlingException")),
            ),
        ];
        let selected = |g: &str| g != "/left";
        let mut events = Events::default();
        let (rows, retry) = filter_rows(written, &found, "ours", selected, |_| None, &mut events);
        let states: Vec<_> = rows.iter().map(|r| (r.name.as_str(), r.filter)).collect();
        assert_eq!(
            states,
            [
                ("/new", FilterState::Active),
                ("/full", FilterState::LimitExceeded),
                ("/denied", FilterState::AccessDenied),
            ]
        );
        assert!(
            rows[1]
                .message
                .as_deref()
                .unwrap_or_default()
                .contains("(a, b)")
        );
        assert!(retry, "a throttled removal is tried again soon");
        let reasons: Vec<_> = events.0.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "SubscriptionFilterPut",
                "SubscriptionFilterDeleted",
                "TooManyFilters",
                "AccessDenied"
            ]
        );
    }
}
