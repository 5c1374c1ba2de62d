//! One reconcile of a LogSubscription: validate → observe → plan → apply →
//! status, inside a finalizer that exists for the AWS resources only (the
//! workers' objects are owned by the LogSubscription and collected by Kubernetes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as Finalized, finalizer};
use kube::{Resource, ResourceExt};

use super::authorize::{Grant, NotPermitted};
use super::error::{Error, aws_reason, filter_failure};
use super::plan::{self, Filter, StreamAction};
use super::resources::{config::worker_config, workload};
use super::status::{self as conditions, Check, Observed};
use super::tenancy::{AuthorizeError, Watches};
use super::{AwsView, Context, Memo, Scope, apply, cleanup, observe};
use crate::api::{FilterState, LogGroupStatus, LogSubscription, LogSubscriptionStatus, StreamRef};
use crate::aws::kinesis::Streams;
use crate::aws::{AwsError, ErrorClass};
use crate::telemetry::ReconcileLabels;
use crate::worker::source::kinesis::lease::stream_key;

/// The finalizer that guards the AWS resources.
pub const FINALIZER: &str = "logsub.io/aws-cleanup";
/// The tag on a managed stream naming the LogSubscription's UID.
pub const UID_TAG: &str = "logsub.io/uid";
/// The tag on a managed stream naming the LogSubscription.
pub const OWNER_TAG: &str = "logsub.io/owner";

/// How many subscription filters are written at once for one LogSubscription.
const PUT_CONCURRENCY: usize = 4;

/// Reconciles `lsub`: applies it, or cleans up after it once deleted.
pub async fn reconcile(lsub: Arc<LogSubscription>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let phase = if lsub.metadata.deletion_timestamp.is_some() {
        "cleanup"
    } else {
        "apply"
    };
    let api: Api<LogSubscription> =
        Api::namespaced(ctx.client.clone(), &lsub.namespace().unwrap_or_default());
    let result = finalizer(&api, FINALIZER, lsub, |event| async {
        match event {
            Finalized::Apply(lsub) => apply(&lsub, &ctx).await,
            Finalized::Cleanup(lsub) => cleanup::cleanup(&lsub, &ctx).await,
        }
    })
    .await
    .or_else(|e| match e {
        // A reconcile queued before the object went: cleanup already finished.
        kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(s)) if s.code == 404 => {
            Ok(Action::await_change())
        }
        e => Err(Error::Finalizer(Box::new(e))),
    });
    ctx.metrics
        .reconcile_seconds
        .observe(started.elapsed().as_secs_f64());
    ctx.metrics
        .reconciles
        .get_or_create(&ReconcileLabels {
            phase: phase.to_owned(),
            result: if result.is_ok() { "ok" } else { "error" }.to_owned(),
        })
        .inc();
    result
}

/// A failed reconcile is retried with the LogSubscription's own backoff.
pub fn error_policy(lsub: Arc<LogSubscription>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(error.category());
    let wait = ctx.memory.backoff(&lsub.uid().unwrap_or_default());
    tracing::warn!(
        namespace = lsub.namespace().unwrap_or_default(),
        name = lsub.name_any(),
        category = error.category(),
        error = %error,
        retry_in = ?wait,
        "reconcile failed"
    );
    Action::requeue(wait)
}

/// Events of one reconcile, published after its status is written.
#[derive(Default)]
struct Events(Vec<Event>);

impl Events {
    fn normal(&mut self, reason: &str, action: &str, note: String) {
        self.push(EventType::Normal, reason, action, note);
    }

    fn warning(&mut self, reason: &str, action: &str, note: String) {
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

async fn apply(lsub: &LogSubscription, ctx: &Context) -> Result<Action, Error> {
    let uid = lsub.uid().unwrap_or_default();
    let previous = lsub.status.clone().unwrap_or_default();
    let mut events = Events::default();
    // Without a region every AWS call would go to a guessed one: say so instead.
    let region = ctx.aws.region(lsub.spec.region.as_deref());
    let invalid = match (lsub.validate_names().and(lsub.spec.validate()), &region) {
        (Err(errors), _) => Err(errors.to_string()),
        (Ok(()), None) => Err(
            "no AWS region: set spec.region, or the controller's --region (AWS_REGION)".to_owned(),
        ),
        (Ok(()), Some(region)) => Ok(region.clone()),
    };
    let scope = match invalid {
        Ok(region) => Scope::of(lsub, region),
        Err(errors) => {
            let waiting = || Check::pending("InvalidSpec", "waiting for a valid spec");
            let observed = Observed {
                permitted: waiting(),
                stream: Check::failed("InvalidSpec", errors.clone()),
                filters: waiting(),
                workers: waiting(),
                delivering: waiting(),
            };
            let status = LogSubscriptionStatus {
                observed_generation: lsub.metadata.generation,
                conditions: conditions_of(lsub, &observed, &previous),
                ..previous.clone()
            };
            if ready_reason(&previous) != Some("InvalidSpec") {
                events.warning("InvalidSpec", "Validate", errors);
            }
            // A spec that cannot be authorized keeps nothing running: what
            // was permitted before must not outlive a policy change meanwhile.
            let mut status = status;
            let mut next = Action::await_change();
            if let Some(region) = region {
                let scope = Scope::of(lsub, region);
                let (left, wait) = take_down(lsub, ctx, &scope, &previous, &mut events).await?;
                status.log_group_count = Some(0);
                status.log_groups = conditions::listed_groups(&left);
                status.workers = None;
                if !left.is_empty() {
                    next = Action::requeue(wait);
                }
            }
            finish(lsub, ctx, &previous, &status, events).await?;
            return Ok(next);
        }
    };

    let grant = match ctx.tenancy.authorize(lsub).await {
        Ok(grant) => grant,
        Err(AuthorizeError::NotPermitted(refusal)) => {
            if let NotPermitted::NoPolicy(_) = refusal
                && let Some(grace) = grace_left(lsub, ctx)
            {
                return unselected(lsub, ctx, &refusal, grace, &previous, events).await;
            }
            return withdraw(lsub, ctx, &scope, &refusal, &previous, events).await;
        }
        Err(AuthorizeError::Unknown(e)) => return Err(Error::Authorize(e)),
    };
    let permitted = Check::ready(
        "PolicyAllows",
        format!(
            "allowed by LogSubscriptionPolicy {}",
            grant.names().join(", ")
        ),
    );

    let now = Instant::now();
    let resync = ctx.settings.resync;
    let mut memo = ctx.memory.get(&uid);
    memo.unselected_since = None;
    let due = memo.aws.is_none()
        || memo.permitted.as_ref() != Some(&grant.fingerprint())
        || memo.generation != lsub.metadata.generation
        || memo.synced.is_none_or(|at| now >= at + resync)
        || memo.retry_at.is_some_and(|at| now >= at);
    let view = match (&memo.aws, due) {
        (Some(view), false) => view.clone(),
        _ => {
            // Moved to another region or role: its filters there come off
            // first (they send to the stream the status names).
            if let (Some(before), Some(arn)) = (memo.scope.clone(), &previous.stream_arn)
                && before != scope
            {
                let groups = listed_or_scanned(&memo, &previous);
                let why = "the LogSubscription moved to another region or role";
                let left =
                    remove_filters(ctx, &before, lsub, (arn, why), &groups, &mut events).await;
                if !left.is_empty() {
                    tracing::warn!(%before, groups = left.len(), "filters left where the LogSubscription was before");
                }
                memo.owned_stream = None;
            }
            memo.scope = Some(scope.clone());
            let view = sync_aws(lsub, ctx, &scope, &grant, &mut memo, &previous, &mut events).await;
            memo.permitted = Some(grant.fingerprint());
            memo.aws = Some(view.clone());
            memo.synced = Some(now);
            memo.generation = lsub.metadata.generation;
            view
        }
    };
    let retry_at = memo.retry_at;
    let synced = memo.synced.unwrap_or(now);
    ctx.memory.put(&uid, memo);

    let desired = lsub.spec.workers.replicas;
    let (workers_check, workers, delivering, delivery) =
        match (&view.stream_arn, view.stream_usable) {
            (Some(arn), true) => {
                let applied = async {
                    if due {
                        // The binding first: through it the controller may
                        // write the workers' Leases.
                        let runtime = ctx.settings.worker_runtime();
                        let binding = workload::workers_binding(lsub, &runtime)?;
                        apply::binding(&ctx.client, &binding).await?;
                        observe::adopt_earlier_leases(
                            &ctx.client,
                            &lsub.namespace().unwrap_or_default(),
                            &lsub.name_any(),
                            previous.stream_arn.as_deref(),
                            (arn, view.stream_created),
                        )
                        .await?;
                    }
                    sync_workers(lsub, ctx, &scope, &view, due).await
                };
                let (workers, counts) = match applied.await {
                    Ok(synced) => synced,
                    // Said on the status rather than only retried: a refusal
                    // (an invalid object, a missing permission) waits for a change.
                    Err(e) => {
                        let check = workers_failure(&e);
                        if ready_reason(&previous) != Some(check.reason()) {
                            events.warning(check.reason(), "ApplyWorkers", e.to_string());
                        }
                        let waiting = Check::pending(
                            "WaitingForWorkers",
                            "the workers' objects are not applied",
                        );
                        let observed = Observed {
                            permitted: permitted.clone(),
                            stream: view.stream.clone(),
                            filters: view.filters.clone(),
                            workers: check,
                            delivering: waiting,
                        };
                        let status = LogSubscriptionStatus {
                            observed_generation: lsub.metadata.generation,
                            conditions: conditions_of(lsub, &observed, &previous),
                            ..previous.clone()
                        };
                        finish(lsub, ctx, &previous, &status, events).await?;
                        return Err(e);
                    }
                };
                let namespace = lsub.namespace().unwrap_or_default();
                let stream = stream_key(arn, view.stream_created);
                let leases =
                    observe::leases(&ctx.client, &namespace, &lsub.name_any(), &stream).await?;
                let shards = ctx.memory.shard_states(&uid, leases);
                let health: Vec<_> = shards.iter().filter_map(|s| s.health.clone()).collect();
                (
                    workers,
                    Some(counts),
                    conditions::delivering(&shards, desired),
                    (!health.is_empty()).then(|| conditions::delivery(&health)),
                )
            }
            _ => {
                let waiting = || Check::pending("WaitingForStream", "the stream is not usable yet");
                (
                    waiting(),
                    previous.workers.clone(),
                    waiting(),
                    previous.delivery.clone(),
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
    let status = LogSubscriptionStatus {
        observed_generation: lsub.metadata.generation,
        conditions: conditions_of(lsub, &observed, &previous),
        stream_arn: view.stream_arn.clone(),
        sink: Some(conditions::sink_summary(&lsub.spec.sink)),
        log_group_count: Some(i32::try_from(view.selected).unwrap_or(i32::MAX)),
        log_groups: conditions::listed_groups(&view.groups),
        workers,
        delivery,
    };
    let became_ready =
        ready_reason(&status) == Some("Ready") && ready_reason(&previous) != Some("Ready");
    if became_ready {
        events.normal("Ready", "Reconcile", "delivering to the sink".to_owned());
    }
    finish(lsub, ctx, &previous, &status, events).await?;

    let mut next = ctx
        .settings
        .status_interval
        .min((synced + resync).saturating_duration_since(now));
    if let Some(at) = retry_at {
        next = next.min(at.saturating_duration_since(now));
    }
    Ok(Action::requeue(next.max(Duration::from_millis(500))))
}

fn conditions_of(
    lsub: &LogSubscription,
    observed: &Observed,
    previous: &LogSubscriptionStatus,
) -> Vec<crate::api::Condition> {
    conditions::conditions(
        observed,
        &previous.conditions,
        lsub.metadata.generation,
        Timestamp::now(),
    )
}

fn ready_reason(status: &LogSubscriptionStatus) -> Option<&str> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.reason.as_str())
}

/// How a failure to apply the workers' objects is shown: a refusal by the API
/// server (an invalid object, a missing permission, a name taken) waits for a
/// change; anything else is on its way again.
fn workers_failure(e: &Error) -> Check {
    let message = format!("applying the workers' objects: {e}");
    match e {
        Error::Kube(kube::Error::Api(s)) if matches!(s.code, 400 | 403 | 404 | 409 | 422) => {
            Check::failed("WorkersRefused", message)
        }
        Error::Build(_) => Check::failed("WorkersRefused", message),
        Error::NameTaken { .. } => Check::failed("NameConflict", message),
        _ => Check::pending("WorkersUnavailable", message),
    }
}

/// A LogSubscription no policy permits any more (or ever): its filters come
/// off and its workers stop, so nothing of it flows. Its stream and its
/// checkpoints stay, so that being permitted again resumes where it stopped.
async fn withdraw(
    lsub: &LogSubscription,
    ctx: &Context,
    scope: &Scope,
    refusal: &NotPermitted,
    previous: &LogSubscriptionStatus,
    mut events: Events,
) -> Result<Action, Error> {
    let (left, wait) = take_down(lsub, ctx, scope, previous, &mut events).await?;
    let message = refusal.to_string();
    if ready_reason(previous) != Some("NotPermitted") {
        events.warning("NotPermitted", "Authorize", message.clone());
    }
    let waiting = || Check::pending("NotPermitted", "waiting for a policy to permit it");
    let observed = Observed {
        permitted: Check::failed("NotPermitted", message),
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
        workers: waiting(),
        delivering: waiting(),
    };
    let status = LogSubscriptionStatus {
        observed_generation: lsub.metadata.generation,
        conditions: conditions_of(lsub, &observed, previous),
        stream_arn: previous.stream_arn.clone(),
        sink: Some(conditions::sink_summary(&lsub.spec.sink)),
        log_group_count: Some(0),
        log_groups: conditions::listed_groups(&left),
        workers: None,
        delivery: previous.delivery.clone(),
    };
    finish(lsub, ctx, previous, &status, events).await?;
    Ok(Action::requeue(wait))
}

/// How much longer a running LogSubscription that no policy selects keeps
/// running, if at all: one that does not run (any more) has nothing to keep.
fn grace_left(lsub: &LogSubscription, ctx: &Context) -> Option<Duration> {
    let uid = lsub.uid().unwrap_or_default();
    let mut memo = ctx.memory.get(&uid);
    memo.permitted.as_ref()?;
    let now = Instant::now();
    let since = *memo.unselected_since.get_or_insert(now);
    ctx.memory.put(&uid, memo);
    (since + ctx.settings.withdraw_grace)
        .checked_duration_since(now)
        .filter(|left| !left.is_zero())
}

/// The status of a LogSubscription no policy selects, still running for
/// `grace`: not permitted, everything else as last seen.
async fn unselected(
    lsub: &LogSubscription,
    ctx: &Context,
    refusal: &NotPermitted,
    grace: Duration,
    previous: &LogSubscriptionStatus,
    mut events: Events,
) -> Result<Action, Error> {
    let message = format!(
        "{refusal}; its filters come off {}s after the last policy selecting it went, unless one selects it again",
        ctx.settings.withdraw_grace.as_secs()
    );
    if ready_reason(previous) != Some("NotPermitted") {
        events.warning("NotPermitted", "Authorize", message.clone());
    }
    let kept = |type_: &str| {
        previous
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map_or_else(|| Check::pending("Unknown", "not observed yet"), Check::of)
    };
    let observed = Observed {
        permitted: Check::failed("NotPermitted", message),
        stream: kept("StreamReady"),
        filters: kept("SubscriptionFilterReady"),
        workers: kept("WorkersAvailable"),
        delivering: kept("Delivering"),
    };
    let status = LogSubscriptionStatus {
        observed_generation: lsub.metadata.generation,
        conditions: conditions_of(lsub, &observed, previous),
        ..previous.clone()
    };
    finish(lsub, ctx, previous, &status, events).await?;
    Ok(Action::requeue(grace))
}

/// The groups the status lists that may carry our filter (one NotPermitted never did).
fn listed_groups(previous: &LogSubscriptionStatus) -> impl Iterator<Item = String> + '_ {
    previous
        .log_groups
        .iter()
        .filter(|g| g.filter != FilterState::NotPermitted)
        .map(|g| g.name.clone())
}

/// The groups our filter may be on: those last selected and those the status lists.
fn listed_or_scanned(memo: &Memo, previous: &LogSubscriptionStatus) -> Vec<String> {
    let mut groups: Vec<String> = memo
        .scanned
        .as_ref()
        .map(|(_, n)| n.clone())
        .unwrap_or_default();
    groups.extend(listed_groups(previous));
    groups.sort();
    groups.dedup();
    groups
}

/// Takes the filters off and stops the workers of a LogSubscription that may
/// not run; returns the groups whose filter could not be removed yet, and
/// when to look again.
async fn take_down(
    lsub: &LogSubscription,
    ctx: &Context,
    scope: &Scope,
    previous: &LogSubscriptionStatus,
    events: &mut Events,
) -> Result<(Vec<LogGroupStatus>, Duration), Error> {
    let uid = lsub.uid().unwrap_or_default();
    let mut memo = ctx.memory.get(&uid);
    let groups = listed_or_scanned(&memo, previous);
    memo.scanned = None;
    // Where its filters were put, which may not be where the spec now points
    // (a role the policy refuses is never assumed when that is known).
    let scope = memo.scope.clone().unwrap_or_else(|| scope.clone());
    let left = match previous.stream_arn.as_deref() {
        Some(arn) => {
            let why = "it may not run";
            remove_filters(ctx, &scope, lsub, (arn, why), &groups, events).await
        }
        // Filters are put only toward a stream the status then names.
        None => Vec::new(),
    };
    super::cleanup::stop_workers(lsub, ctx).await?;
    // Permitted again, everything is synced afresh.
    memo.aws = None;
    memo.permitted = None;
    let retry = !left.is_empty();
    if retry {
        memo.scanned = Some((
            Instant::now(),
            left.iter().map(|g| g.name.clone()).collect(),
        ));
    }
    let wait = if retry {
        memo.backoff.next_wait()
    } else {
        memo.backoff.reset();
        ctx.settings.status_interval
    };
    ctx.memory.put(&uid, memo);

    Ok((left, wait))
}

/// Removes our filters (of `lsub`'s name or its earlier one, sending to
/// `destination`: of those names sending elsewhere are not ours) from each of
/// `groups` that has them; returns the groups they could not be removed
/// from, with why.
async fn remove_filters(
    ctx: &Context,
    scope: &Scope,
    lsub: &LogSubscription,
    (destination, why): (&str, &str),
    groups: &[String],
    events: &mut Events,
) -> Vec<LogGroupStatus> {
    if groups.is_empty() {
        return Vec::new();
    }
    let names = [lsub.filter_name(), lsub.legacy_name()];
    let (logs, _) = ctx.aws.clients(scope).await;
    let mut left = Vec::new();
    for (group, described) in observe::groups(&logs, groups).await {
        let ours: Vec<String> = match described {
            Ok(Some(g)) => g
                .filters
                .into_iter()
                .filter(|f| names.contains(&f.name) && f.destination_arn == destination)
                .map(|f| f.name)
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => {
                left.push(group_failed(group, &e));
                continue;
            }
        };
        for name in ours {
            match logs.delete_filter(&group, &name).await {
                Ok(()) => events.normal(
                    "SubscriptionFilterDeleted",
                    "DeleteSubscriptionFilter",
                    format!("removed filter {name} from {group}: {why}"),
                ),
                Err(e) => {
                    left.push(group_failed(group, &e));
                    break;
                }
            }
        }
    }
    left
}

/// A group whose filter could not be written, and why.
fn group_failed(group: String, e: &AwsError) -> LogGroupStatus {
    LogGroupStatus {
        name: group,
        filter: filter_failure(e).state,
        message: Some(format!("{}: {}", e.code, e.message)),
    }
}

/// Writes the status when it changed, then publishes the events.
async fn finish(
    lsub: &LogSubscription,
    ctx: &Context,
    previous: &LogSubscriptionStatus,
    status: &LogSubscriptionStatus,
    events: Events,
) -> Result<(), Error> {
    if status != previous {
        apply::status(&ctx.client, lsub, status).await?;
    }
    let reference = lsub.object_ref(&());
    for event in events.0 {
        // An Event is informational: failing to publish one fails nothing.
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            ctx.metrics.error("event");
            tracing::debug!(error = %e, reason = event.reason, "cannot publish an Event");
        }
    }
    Ok(())
}

/// The check an AWS failure leaves, and whether retrying soon can help.
fn aws_check(e: &AwsError, doing: &str) -> (Check, bool) {
    let message = format!("{doing}: {}: {}", e.code, e.message);
    match e.class {
        ErrorClass::Permanent => (Check::failed(aws_reason(e), message), false),
        _ => (Check::pending(aws_reason(e), message), true),
    }
}

async fn sync_aws(
    lsub: &LogSubscription,
    ctx: &Context,
    scope: &Scope,
    grant: &Grant,
    memo: &mut Memo,
    previous: &LogSubscriptionStatus,
    events: &mut Events,
) -> AwsView {
    let stream = sync_stream(lsub, ctx, scope, memo, previous, events).await;
    let (filters, groups, selected, filters_retry) = match (&stream.arn, stream.usable) {
        (Some(arn), true) => {
            sync_filters(lsub, ctx, scope, arn, grant, memo, previous, events).await
        }
        _ => (
            Check::pending("WaitingForStream", "the stream is not usable yet"),
            previous.log_groups.clone(),
            usize::try_from(previous.log_group_count.unwrap_or(0)).unwrap_or(0),
            false,
        ),
    };
    if stream.retry || filters_retry {
        memo.retry_at = Some(Instant::now() + memo.backoff.next_wait());
    } else {
        memo.backoff.reset();
        memo.retry_at = None;
    }
    // Until the stream in the spec is usable, the filters are not moved to
    // it: the status goes on naming where they send, so that a withdrawal or
    // a deletion still finds them.
    let stream_arn = match (stream.usable, &previous.stream_arn) {
        (false, Some(recorded)) => Some(recorded.clone()),
        _ => stream.arn,
    };
    AwsView {
        stream: stream.check,
        stream_arn,
        stream_created: stream.created,
        stream_usable: stream.usable,
        filters,
        groups,
        selected,
    }
}

/// Whether the stream `arn` was created for the LogSubscription `uid` (tagged so).
pub(super) async fn created_for(streams: &Streams, arn: &str, uid: &str) -> Result<bool, AwsError> {
    Ok(streams
        .tags(arn)
        .await?
        .iter()
        .any(|(k, v)| k == UID_TAG && v == uid))
}

struct StreamSync {
    check: Check,
    arn: Option<String>,
    created: Option<i64>,
    usable: bool,
    retry: bool,
}

async fn sync_stream(
    lsub: &LogSubscription,
    ctx: &Context,
    scope: &Scope,
    memo: &mut Memo,
    previous: &LogSubscriptionStatus,
    events: &mut Events,
) -> StreamSync {
    let failed = |(check, retry): (Check, bool), arn: Option<String>| StreamSync {
        check,
        arn,
        created: None,
        usable: false,
        retry,
    };
    let Some(reference) = lsub.spec.stream.reference() else {
        // validate() refuses such a spec before this point.
        return failed(
            (
                Check::failed("InvalidSpec", "exactly one stream must be named"),
                false,
            ),
            None,
        );
    };
    let mut name = lsub.stream_name();
    let info = loop {
        let info =
            match observe::stream(&ctx.aws, scope, reference, &name, ctx.settings.resync).await {
                Ok(info) => info,
                Err(e) => {
                    return failed(
                        aws_check(&e, "describing the stream"),
                        previous.stream_arn.clone(),
                    );
                }
            };
        // The earlier name is kept only for a managed stream made under it:
        // the status may record an existing stream of that name read before.
        let today = lsub.resource_name();
        if let (StreamRef::Managed(_), Some(i)) = (reference, &info)
            && name != today
        {
            let (_, streams) = ctx.aws.clients(scope).await;
            let uid = lsub.uid().unwrap_or_default();
            if !created_for(&streams, &i.arn, &uid).await.unwrap_or(true) {
                name = today;
                continue;
            }
        }
        break info;
    };
    let spec = match reference {
        StreamRef::Name(named) | StreamRef::Arn(named) => {
            return match info {
                None => failed(
                    (
                        Check::failed("StreamNotFound", format!("no stream {named} in {scope}")),
                        true,
                    ),
                    None,
                ),
                Some(i) if !i.status.usable() => failed(
                    (
                        Check::failed(
                            "StreamNotActive",
                            format!("stream {} is {:?}", i.name, i.status),
                        ),
                        true,
                    ),
                    Some(i.arn),
                ),
                Some(i) => StreamSync {
                    check: Check::ready("StreamActive", format!("{} open shard(s)", i.open_shards)),
                    arn: Some(i.arn),
                    created: i.created_millis,
                    usable: true,
                    retry: false,
                },
            };
        }
        StreamRef::Managed(spec) => spec,
    };
    let (_, streams) = ctx.aws.clients(scope).await;
    let uid = lsub.uid().unwrap_or_default();
    // A stream of our name is ours only when it carries our UID: the status
    // could be written by others, so naming it there proves nothing. Checked
    // once per stream and remembered.
    if let Some(i) = &info
        && memo.owned_stream.as_deref() != Some(i.arn.as_str())
    {
        match created_for(&streams, &i.arn, &uid).await {
            Ok(true) => memo.owned_stream = Some(i.arn.clone()),
            Ok(false) => {
                return failed(
                    (
                        Check::failed(
                            "StreamNameTaken",
                            format!(
                                "a stream named {name} exists and was not created for this LogSubscription (no {UID_TAG}={uid} tag)"
                            ),
                        ),
                        false,
                    ),
                    None,
                );
            }
            Err(e) => return failed(aws_check(&e, "reading the stream's tags"), None),
        }
    }
    let arn = info.as_ref().map(|i| i.arn.clone());
    let created = info.as_ref().and_then(|i| i.created_millis);
    let usable = info.as_ref().is_some_and(|i| i.status.usable());
    let step = match (plan::stream(spec, info.as_ref()), &info) {
        (StreamAction::Create(capacity), _) => {
            let owner = format!(
                "{}/{}",
                lsub.namespace().unwrap_or_default(),
                lsub.name_any()
            );
            streams
                .create(&name, capacity, &[(UID_TAG, &uid), (OWNER_TAG, &owner)])
                .await
                .map(|()| {
                    events.normal(
                        "StreamCreated",
                        "CreateStream",
                        format!("created stream {name} ({capacity:?})"),
                    );
                    Check::pending("StreamCreating", format!("creating stream {name}"))
                })
        }
        (StreamAction::Wait(status), _) => Ok(Check::pending(
            &format!("Stream{status:?}"),
            format!("stream {name} is {status:?}"),
        )),
        (StreamAction::Resize(capacity), Some(i)) => streams.resize(i, capacity).await.map(|()| {
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
        }),
        (StreamAction::Retain(hours), Some(i)) => streams.set_retention(i, hours).await.map(|()| {
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
        }),
        (StreamAction::Ready, Some(i)) => Ok(Check::ready(
            "StreamActive",
            format!("{} open shard(s)", i.open_shards),
        )),
        (_, None) => Ok(Check::pending(
            "StreamCreating",
            format!("creating stream {name}"),
        )),
    };
    match step {
        Ok(check) => StreamSync {
            retry: !check.is_ready(),
            check,
            arn,
            created,
            usable,
        },
        Err(e) => {
            let (check, retry) = aws_check(&e, "changing the stream");
            if !retry {
                events.warning(
                    check.reason(),
                    "SyncStream",
                    format!("{}: {}", e.code, e.message),
                );
            }
            StreamSync {
                check,
                arn,
                created,
                usable,
                retry,
            }
        }
    }
}

/// Puts the filter on every selected log group and removes it from groups
/// that left the selection. Returns the check, the groups' states, how many
/// are selected, and whether to retry soon.
#[allow(clippy::too_many_arguments)]
async fn sync_filters(
    lsub: &LogSubscription,
    ctx: &Context,
    scope: &Scope,
    arn: &str,
    grant: &Grant,
    memo: &mut Memo,
    previous: &LogSubscriptionStatus,
    events: &mut Events,
) -> (Check, Vec<LogGroupStatus>, usize, bool) {
    let (logs, _) = ctx.aws.clients(scope).await;
    let source = &lsub.spec.source;
    let rescan: Duration = source.rescan_interval.into();
    let now = Instant::now();
    // The groups selected last time, in full: the status lists at most
    // MAX_LISTED_GROUPS, and a group that left the selection must lose our filter.
    let before: Vec<String> = memo
        .scanned
        .as_ref()
        .map(|(_, names)| names.clone())
        .unwrap_or_default();
    let fresh = memo.generation == lsub.metadata.generation
        && memo.permitted.as_ref() == Some(&grant.fingerprint());
    let selected = match &memo.scanned {
        Some((at, names)) if now < *at + rescan && fresh => names.clone(),
        // Only what the policy allows is ever selected.
        _ => match observe::selection(&logs, &source.log_groups).await {
            Ok(mut names) => {
                names.retain(|name| grant.allows_group(name));
                memo.scanned = Some((now, names.clone()));
                names
            }
            Err(e) => {
                let (check, retry) = aws_check(&e, "listing the log groups");
                let count = usize::try_from(previous.log_group_count.unwrap_or(0)).unwrap_or(0);
                return (check, previous.log_groups.clone(), count, retry);
            }
        },
    };
    // Named groups the policy does not allow are shown, never subscribed.
    let refused: Vec<LogGroupStatus> = source
        .log_groups
        .names
        .iter()
        .filter(|name| !grant.allows_group(name) && source.log_groups.selects(name, None))
        .map(|name| LogGroupStatus {
            name: name.clone(),
            filter: FilterState::NotPermitted,
            message: Some(format!(
                "no log group rule of LogSubscriptionPolicy {} allows it",
                grant.names().join(", ")
            )),
        })
        .collect();
    // Our filter may still be on groups the last status listed.
    let mut candidates = selected.clone();
    candidates.extend(listed_groups(previous));
    candidates.extend(before);
    candidates.sort();
    candidates.dedup();
    let is_selected = |name: &str| selected.binary_search_by(|n| n.as_str().cmp(name)).is_ok();
    let want = Filter {
        name: lsub.filter_name(),
        pattern: source.filter_pattern.clone(),
        destination_arn: arn.to_owned(),
        role_arn: Some(source.role_arn.clone()),
        distribution: Some(source.distribution),
    };
    let was = |name: &str| {
        previous
            .log_groups
            .iter()
            .find(|g| g.name == name)
            .map(|g| g.filter)
    };

    let mut states = refused;
    let mut retry = false;
    let mut found = Vec::new();
    for (name, described) in observe::groups(&logs, &candidates).await {
        match described {
            Ok(Some(group)) => found.push(group),
            Ok(None) if is_selected(&name) => states.push(LogGroupStatus {
                name,
                filter: FilterState::Pending,
                message: Some("the log group does not exist".to_owned()),
            }),
            Ok(None) => {}
            Err(e) => {
                retry |= filter_failure(&e).retry;
                states.push(group_failed(name, &e));
            }
        }
    }

    let recorded: Vec<&str> = previous.stream_arn.as_deref().into_iter().collect();
    let legacy = lsub.legacy_name();
    let actions = plan::filters(&found, is_selected, &want, &legacy, &recorded);
    let written: Vec<(plan::Action, Result<(), AwsError>)> = futures::stream::iter(actions)
        .map(|action| {
            let logs = &logs;
            let want = &want;
            async move {
                let named = |name: &str| Filter {
                    name: name.to_owned(),
                    ..want.clone()
                };
                let result = match &action {
                    plan::Action::Put { group, name } => logs.put_filter(group, &named(name)).await,
                    plan::Action::Delete { group, name } => logs.delete_filter(group, name).await,
                    // The new one delivers before the old one stops.
                    plan::Action::Rename { group, from } => {
                        let put = logs.put_filter(group, want).await;
                        // The new one delivers: an old one left behind is
                        // removed at the next sync, as ours under both names.
                        if put.is_ok()
                            && let Err(e) = logs.delete_filter(group, from).await
                        {
                            tracing::warn!(%group, filter = %from, error = %e, "cannot remove the earlier filter yet");
                        }
                        put
                    }
                    plan::Action::Keep { .. }
                    | plan::Action::Blocked(_)
                    | plan::Action::Foreign(..) => Ok(()),
                };
                (action, result)
            }
        })
        .buffer_unordered(PUT_CONCURRENCY)
        .collect()
        .await;
    for (action, result) in written {
        let (group, state, message) = match (action, result) {
            (plan::Action::Keep { group, .. }, _) => (group, FilterState::Active, None),
            (plan::Action::Put { group, name }, Ok(())) => {
                events.normal(
                    "SubscriptionFilterPut",
                    "PutSubscriptionFilter",
                    format!("put filter {name} on {group}"),
                );
                (group, FilterState::Active, None)
            }
            (plan::Action::Rename { group, from }, Ok(())) => {
                events.normal(
                    "SubscriptionFilterRenamed",
                    "PutSubscriptionFilter",
                    format!("put filter {} on {group} in place of {from}", want.name),
                );
                (group, FilterState::Active, None)
            }
            (plan::Action::Delete { group, name }, Ok(())) => {
                let why = if name == want.name {
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
            (plan::Action::Blocked(group), _) => {
                let others: Vec<&str> = found
                    .iter()
                    .find(|g| g.name == group)
                    .map(|g| g.filters.iter().map(|f| f.name.as_str()).collect())
                    .unwrap_or_default();
                let message = format!(
                    "the log group already holds {} subscription filters of other names ({}); CloudWatch Logs allows {}",
                    others.len(),
                    others.join(", "),
                    plan::FILTERS_PER_GROUP
                );
                (group, FilterState::LimitExceeded, Some(message))
            }
            (plan::Action::Foreign(group, destination), _) => {
                let message = format!(
                    "a filter named {} exists that sends to {destination}, where this LogSubscription never sent: it is not ours and is left alone",
                    want.name
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
                if let plan::Action::Delete { group, name } = &action
                    && *name != want.name
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
                conditions::filter_reason(state),
                "PutSubscriptionFilter",
                format!("{group}: {}", message.as_deref().unwrap_or_default()),
            );
        }
        states.push(LogGroupStatus {
            name: group,
            filter: state,
            message,
        });
    }
    states.sort_by(|a, b| a.name.cmp(&b.name));
    let check = conditions::filters(&states, selected.len());
    (check, states, selected.len(), retry)
}

/// Applies the workers' objects when they are missing or differ from the spec
/// (or `force`, once per resync), and reads how they stand.
async fn sync_workers(
    lsub: &LogSubscription,
    ctx: &Context,
    scope: &Scope,
    view: &AwsView,
    force: bool,
) -> Result<(Check, crate::api::WorkersStatus), Error> {
    let mut config = worker_config(lsub, view.stream_arn.as_deref().unwrap_or_default());
    config.region.get_or_insert_with(|| scope.region.clone());
    config.stream_created = view.stream_created;
    let built = workload::workload(lsub, &ctx.settings.worker_runtime(), &config)?;
    let namespace = lsub.namespace().unwrap_or_default();
    let name = workload::workload_name(lsub);
    let current = observe::deployment(&ctx.client, &namespace, &name).await?;
    if let Some(d) = &current
        && !apply::controlled_by(&d.metadata, &lsub.uid().unwrap_or_default())
    {
        return Err(Error::NameTaken {
            kind: "Deployment".into(),
            name,
        });
    }
    let stale = current.as_ref().is_none_or(|d| {
        let template_hash = |d: &k8s_openapi::api::apps::v1::Deployment| {
            d.spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.annotations.as_ref())
                .and_then(|a| a.get(workload::CONFIG_HASH).cloned())
        };
        // The image too: an upgraded controller rolls the workers to its own.
        let images = |d: &k8s_openapi::api::apps::v1::Deployment| {
            d.spec.template.spec.as_ref().map(|p| {
                p.containers
                    .iter()
                    .map(|c| c.image.clone())
                    .collect::<Vec<_>>()
            })
        };
        template_hash(d) != template_hash(&built.deployment)
            || images(d) != images(&built.deployment)
            || d.spec.replicas != built.deployment.spec.replicas
    });
    let deployment = match current {
        Some(current) if !stale && !force => current,
        _ => apply::workload(&ctx.client, &built).await?,
    };
    Ok(conditions::workers(&deployment, lsub.spec.workers.replicas))
}

/// Runs `reconcile` for every LogSubscription until `shutdown` resolves;
/// `watches` fill the context's policy and namespace caches.
pub async fn control(
    ctx: Arc<Context>,
    watches: Watches,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};

    let client = ctx.client.clone();
    let (policy_changes, namespace_changes) = watches.into_streams(&client);
    let (lsubs, deployments): (Api<LogSubscription>, Api<Deployment>) =
        match &ctx.settings.namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client, ns),
            ),
            None => (Api::all(client.clone()), Api::all(client)),
        };
    let (reader, writer) = reflector::store();
    // Status writes (ours) and lease health do not trigger reconciles: a new
    // generation, the finalizer and deletion do; the status is refreshed on a timer.
    let changes = watcher(lsubs, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            |l: &LogSubscription| {
                Some(hash_of(&(
                    l.meta().generation,
                    l.finalizers(),
                    l.meta().deletion_timestamp.is_some(),
                )))
            },
            Default::default(),
        );
    let deployments = watcher(
        deployments,
        watcher::Config::default()
            .labels("app.kubernetes.io/managed-by=logsub")
            .any_semantic(),
    )
    .default_backoff()
    .touched_objects()
    .predicate_filter(
        |d: &Deployment| {
            let s = d.status.as_ref()?;
            Some(hash_of(&(
                s.observed_generation,
                s.replicas,
                s.updated_replicas,
                s.available_replicas,
                s.ready_replicas,
            )))
        },
        Default::default(),
    );
    let in_namespace = {
        let reader = reader.clone();
        move |namespace: String| {
            reader
                .state()
                .into_iter()
                .filter(|l| l.namespace().as_deref() == Some(namespace.as_str()))
                .map(|l| kube::runtime::reflector::ObjectRef::from_obj(&*l))
                .collect::<Vec<_>>()
        }
    };
    let mut controller = Controller::for_stream(changes, reader)
        .owns_stream(deployments)
        .reconcile_all_on(policy_changes);
    if let Some(namespaces) = namespace_changes {
        // A namespace's labels decide which policies select it.
        controller = controller
            .reconcile_on(namespaces.flat_map(move |ns| futures::stream::iter(in_namespace(ns))));
    }
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}

pub(super) fn hash_of<T: std::hash::Hash>(value: &T) -> u64 {
    use std::hash::Hasher;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}
