//! One reconcile of a LogSubscription: validate → authorize → observe → plan →
//! apply → status, inside a finalizer that exists for the AWS resources only
//! (the workers' objects are owned by the LogSubscription and collected by
//! Kubernetes). Each stage lives in its own module; this one runs them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalized, finalizer};
use kube::{Resource, ResourceExt};

use super::apply::ApplyError;
use super::authorize::{Grant, NotPermitted};
use super::error::Error;
use super::resources::{config::worker_config, workload};
use super::status::{self, Check, Events, WorkersSeen, ready_reason};
use super::tenancy::{AuthorizeError, Watches};
use super::validate::{Invalid, validate};
use super::{AwsView, Context, Scope, apply, cleanup, observe, plan, sync};
use crate::api::{LogSubscription, LogSubscriptionStatus};
use crate::contract::lease::stream_key;
use crate::telemetry::ReconcileLabels;

/// The finalizer that guards the AWS resources.
pub const FINALIZER: &str = "logsub.io/aws-cleanup";

/// Reconciles `lsub`: applies it, or cleans up after it once deleted.
pub async fn reconcile(lsub: Arc<LogSubscription>, ctx: Arc<Context>) -> Result<Action, Error> {
    // Waits its turn, first come, first served, holding little: the whole
    // reconcile's state is allocated only once it runs (thousands may wait).
    let _slot = ctx.slots.acquire().await;
    Box::pin(run_reconcile(lsub, ctx.clone())).await
}

async fn run_reconcile(lsub: Arc<LogSubscription>, ctx: Arc<Context>) -> Result<Action, Error> {
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
            Finalized::Apply(lsub) => converge(&lsub, &ctx).await,
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

/// A live LogSubscription, stage by stage: validate, authorize, then for AWS
/// (once per resync unless something changed) and for the workers observe,
/// plan, apply; then the status, built from what happened, is written.
async fn converge(lsub: &LogSubscription, ctx: &Context) -> Result<Action, Error> {
    let previous = lsub.status.clone().unwrap_or_default();
    let mut events = Events::default();

    let scope = match validate(lsub, &ctx.aws) {
        Ok(scope) => scope,
        Err(invalid) => return refuse(lsub, ctx, invalid, &previous, events).await,
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

    let Synced {
        view,
        due,
        reassert,
        next,
    } = aws(lsub, ctx, &scope, &grant, &previous, &mut events).await;

    let seen = match (&view.stream_arn, view.stream_usable) {
        (Some(arn), true) => {
            match workers(lsub, ctx, &scope, &view, (arn, due, reassert), &previous).await {
                Ok(seen) => seen,
                // Said on the status rather than only retried: a refusal
                // (an invalid object, a missing permission) waits for a change.
                Err(e) => {
                    let check = workers_failure(&e);
                    if ready_reason(&previous) != Some(check.reason()) {
                        events.warning(check.reason(), "ApplyWorkers", e.to_string());
                    }
                    let seen = WorkersSeen::NotApplied(check);
                    let status =
                        status::running(lsub, permitted, &view, seen, &previous, Timestamp::now());
                    finish(lsub, ctx, &previous, &status, events).await?;
                    return Err(e.into());
                }
            }
        }
        _ => WorkersSeen::NoStream,
    };

    let status = status::running(lsub, permitted, &view, seen, &previous, Timestamp::now());
    if ready_reason(&status) == Some("Ready") && ready_reason(&previous) != Some("Ready") {
        events.normal("Ready", "Reconcile", "delivering to the sink".to_owned());
    }
    finish(lsub, ctx, &previous, &status, events).await?;
    let next = next.min(ctx.settings.status_interval);
    Ok(Action::requeue(next.max(Duration::from_millis(500))))
}

/// AWS as this reconcile sees it, whether it was synced now, whether the
/// workers' objects are applied again whatever they look like, and how long
/// until it is due again.
struct Synced {
    view: AwsView,
    due: bool,
    reassert: bool,
    next: Duration,
}

/// How many resync periods pass between two applies of an unchanged
/// LogSubscription's workers' objects. A change to it, or to its stream,
/// applies them at once, and the Deployment (watched) is applied again
/// whenever it differs from what it should be.
const REASSERT_EVERY: u32 = 6;

/// Syncs `lsub`'s stream and filters when due (first seen, changed, newly
/// permitted, at each resync, or an early retry), else recalls the last view.
async fn aws(
    lsub: &LogSubscription,
    ctx: &Context,
    scope: &Scope,
    grant: &Grant,
    previous: &LogSubscriptionStatus,
    events: &mut Events,
) -> Synced {
    let uid = lsub.uid().unwrap_or_default();
    let now = Instant::now();
    let resync = ctx.settings.resync;
    let mut memo = ctx.memory.get(&uid);
    memo.unselected_since = None;
    let changed = memo.aws.is_none()
        || memo.permitted.as_ref() != Some(&grant.fingerprint())
        || memo.generation != lsub.metadata.generation;
    let due = changed
        || memo.synced.is_none_or(|at| now >= at + resync)
        || memo.retry_at.is_some_and(|at| now >= at)
        || memo.left_behind.iter().any(|l| now >= l.retry_at);
    let view = match (&memo.aws, due) {
        (Some(view), false) => view.clone(),
        _ => {
            // Moved to another region or role: its filters there come off.
            sync::note_move(&mut memo, previous, scope);
            // Failures are said in an Event and tried again.
            let _ = sync::remove_left_behind(lsub, ctx, &mut memo, events).await;
            memo.scope = Some(scope.clone());
            let view = sync::sync_aws(lsub, ctx, scope, grant, &mut memo, previous, events).await;
            memo.permitted = Some(grant.fingerprint());
            memo.aws = Some(view.clone());
            memo.synced = Some(now);
            memo.generation = lsub.metadata.generation;
            view
        }
    };
    let synced = memo.synced.unwrap_or(now);
    let mut next = (synced + resync).saturating_duration_since(now);
    for at in memo
        .retry_at
        .iter()
        .chain(memo.left_behind.iter().map(|l| &l.retry_at))
    {
        next = next.min(at.saturating_duration_since(now));
    }
    let reassert = changed
        || memo
            .workers_asserted
            .is_none_or(|at| due && now >= at + resync * REASSERT_EVERY);
    ctx.memory.put(&uid, memo);
    Synced {
        view,
        due,
        reassert,
        next,
    }
}

/// The workers of a usable stream `arn`: their RoleBinding first (through it
/// they write their Leases, and the controller adopts and deletes them), at
/// each AWS sync (`due`) the adoption of leases written before leases named
/// their stream, then their other objects, and how their shards stand. An
/// object is applied when its cache does not show it as built, and every one
/// when `reassert`ing.
async fn workers(
    lsub: &LogSubscription,
    ctx: &Context,
    scope: &Scope,
    view: &AwsView,
    (arn, due, reassert): (&str, bool, bool),
    previous: &LogSubscriptionStatus,
) -> Result<WorkersSeen, ApplyError> {
    let namespace = lsub.namespace().unwrap_or_default();
    let uid = lsub.uid().unwrap_or_default();
    let binding = workload::workers_binding(lsub, &ctx.settings.worker_runtime())?;
    let cached = ctx.owned.binding(&binding, &uid);
    // Unwatched, it is applied at every resync, as it was before the caches.
    let force = reassert || (due && cached.unwatched());
    apply::owned(&ctx.client, &binding, cached, force).await?;
    let mut leases =
        match observe::subscription_leases(&ctx.client, &namespace, &lsub.name_any()).await {
            Ok(leases) => leases,
            Err(e) => {
                // The binding may be gone: applied again next time.
                if matches!(&e, kube::Error::Api(s) if s.code == 403) {
                    let mut memo = ctx.memory.get(&uid);
                    memo.workers_asserted = None;
                    ctx.memory.put(&uid, memo);
                }
                return Err(e.into());
            }
        };
    if due {
        leases = observe::adopt_earlier_leases(
            &ctx.client,
            &namespace,
            leases,
            previous.stream_arn.as_deref(),
            (arn, view.stream_created),
        )
        .await?;
    }
    let workers = sync_workers(lsub, ctx, scope, view, reassert).await?;
    if reassert {
        let mut memo = ctx.memory.get(&uid);
        memo.workers_asserted = Some(Instant::now());
        ctx.memory.put(&uid, memo);
    }
    let leases = observe::leases_of(leases, &stream_key(arn, view.stream_created));
    let shards = ctx.memory.shard_states(&uid, leases);
    Ok(WorkersSeen::Running { workers, shards })
}

/// A spec that cannot be acted on keeps nothing running (what was permitted
/// before must not outlive a change meanwhile); the status says why.
async fn refuse(
    lsub: &LogSubscription,
    ctx: &Context,
    invalid: Invalid,
    previous: &LogSubscriptionStatus,
    mut events: Events,
) -> Result<Action, Error> {
    if ready_reason(previous) != Some("InvalidSpec") {
        events.warning("InvalidSpec", "Validate", invalid.message.clone());
    }
    let mut next = Action::await_change();
    let mut stopped = Ok(());
    let left = match invalid.region {
        Some(region) => {
            let scope = Scope::of(lsub, region);
            let taken = sync::take_down(lsub, ctx, &scope, previous, &mut events).await;
            if !taken.left.is_empty() {
                next = Action::requeue(taken.wait);
            }
            stopped = taken.workers;
            Some(taken.left)
        }
        None => None,
    };
    let status = status::invalid(
        lsub,
        &invalid.message,
        left.as_deref(),
        stopped.as_ref().err(),
        previous,
        Timestamp::now(),
    );
    finish(lsub, ctx, previous, &status, events).await?;
    // Said on the status first; retried with backoff.
    stopped?;
    Ok(next)
}

/// How a failure to apply the workers' objects is shown: a refusal by the API
/// server (an invalid object, a missing permission, a name taken) waits for a
/// change; anything else is on its way again.
fn workers_failure(e: &ApplyError) -> Check {
    let message = format!("applying the workers' objects: {e}");
    match e {
        ApplyError::Kube(kube::Error::Api(s)) if matches!(s.code, 400 | 403 | 404 | 409 | 422) => {
            Check::failed("WorkersRefused", message)
        }
        ApplyError::Build(_) => Check::failed("WorkersRefused", message),
        ApplyError::NameTaken { .. } => Check::failed("NameConflict", message),
        ApplyError::Kube(_) => Check::pending("WorkersUnavailable", message),
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
    let taken = sync::take_down(lsub, ctx, scope, previous, &mut events).await;
    let message = refusal.to_string();
    if ready_reason(previous) != Some("NotPermitted") {
        events.warning("NotPermitted", "Authorize", message.clone());
    }
    let stopping = taken.workers.as_ref().err();
    let status = status::withdrawn(
        lsub,
        &message,
        &taken.left,
        stopping,
        previous,
        Timestamp::now(),
    );
    finish(lsub, ctx, previous, &status, events).await?;
    // Said on the status first; retried with backoff.
    taken.workers?;
    Ok(Action::requeue(taken.wait))
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
    let status = status::unselected(lsub, &message, previous, Timestamp::now());
    finish(lsub, ctx, previous, &status, events).await?;
    Ok(Action::requeue(grace))
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

/// Applies the workers' objects when they are missing or differ from the spec
/// (or all of them when `force`d: on a change, every few resyncs), and reads
/// how they stand.
async fn sync_workers(
    lsub: &LogSubscription,
    ctx: &Context,
    scope: &Scope,
    view: &AwsView,
    force: bool,
) -> Result<(Check, crate::api::WorkersStatus), ApplyError> {
    let mut config = worker_config(lsub, view.stream_arn.as_deref().unwrap_or_default())?;
    config.region.get_or_insert_with(|| scope.region.clone());
    config.stream_created = view.stream_created;
    let built = workload::workload(lsub, &ctx.settings.worker_runtime(), &config)?;
    let namespace = lsub.namespace().unwrap_or_default();
    let name = workload::workload_name(lsub);
    let uid = lsub.uid().unwrap_or_default();
    let current =
        observe::deployment(&ctx.client, &ctx.owned.deployments, &namespace, &name).await?;
    if let Some(d) = &current
        && !apply::controlled_by(&d.metadata, &uid)
    {
        return Err(ApplyError::NameTaken {
            kind: "Deployment".into(),
            name,
        });
    }
    // What the Deployment mounts and runs as first, so that it exists when its pods start.
    let account = ctx.owned.account(&built.service_account, &uid);
    apply::owned(&ctx.client, &built.service_account, account, force).await?;
    let config = ctx.owned.config(&built.config_map, &uid);
    apply::owned(&ctx.client, &built.config_map, config, force).await?;
    let step = plan::workload(current.as_ref(), &built.deployment, force);
    let deployment = match (current, step) {
        (Some(current), plan::WorkloadStep::Keep) => current,
        // Its Deployment is ours or absent: seen just above.
        _ => apply::deployment(&ctx.client, &built.deployment).await?,
    };
    Ok(status::workers(&deployment, lsub.spec.workers.replicas))
}

/// Runs `reconcile` for every LogSubscription until `shutdown` resolves;
/// `watches` fill the context's policy and namespace caches.
pub async fn control(
    ctx: Arc<Context>,
    watches: Watches,
    owned: observe::OwnedWriters,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::runtime::{Controller, WatchStreamExt, watcher};

    let client = ctx.client.clone();
    let (policy_changes, namespace_changes, writer) = watches.into_streams(&client);
    let lsubs: Api<LogSubscription> = match &ctx.settings.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (deployments, caches) = owned.watch(&client, ctx.settings.namespace.as_deref());
    let reader = ctx.tenancy.subscriptions();
    // Status writes (ours) and lease health do not trigger reconciles: a new
    // generation, the finalizer and deletion do; the status is refreshed on a timer.
    let mut watched = watcher::Config::default().any_semantic();
    if let Some(selector) = &ctx.settings.selector {
        watched = watched.labels(selector);
    }
    let changes = watcher(lsubs, watched)
        .default_backoff()
        // Nothing reads their managed fields, which are most of what the
        // cache would hold of each (its status's, parsed).
        .modify(|l: &mut LogSubscription| l.metadata.managed_fields = None)
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
    let deployments = deployments.predicate_filter(
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
    // No limit here: the reconciles queue for `ctx.slots` instead, in order.
    let mut controller = Controller::for_stream(changes, reader)
        .owns_stream(deployments)
        .reconcile_all_on(policy_changes);
    if let Some(namespaces) = namespace_changes {
        // A namespace's labels decide which policies select it.
        controller = controller
            .reconcile_on(namespaces.flat_map(move |ns| futures::stream::iter(in_namespace(ns))));
    }
    let controlling = controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        });
    tokio::select! {
        () = controlling => {}
        () = caches => {}
    }
}

pub(super) fn hash_of<T: std::hash::Hash>(value: &T) -> u64 {
    use std::hash::Hasher;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}
