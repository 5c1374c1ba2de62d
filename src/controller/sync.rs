//! The AWS side of a reconcile, one stage after another for the stream and
//! then the filters: observe (reads only), plan (pure, `plan`), apply (the
//! writes, `apply`), and the checks and rows the status shows (pure,
//! `status`). Also the taking down of a LogSubscription that may not run.

use std::time::{Duration, Instant};

use kube::ResourceExt;

use super::authorize::Grant;
use super::error::filter_failure;
use super::plan;
use super::status::{self as conditions, Check, Events};
use super::{AwsView, Context, Memo, Scope, apply, observe};
use crate::api::{FilterState, LogGroupStatus, LogSubscription, LogSubscriptionStatus, StreamRef};
use crate::aws::AwsError;
use crate::aws::kinesis::Streams;
use crate::aws::logs::{Filter, Group};

/// The tag on a managed stream naming the LogSubscription's UID.
pub const UID_TAG: &str = "logsub.io/uid";
/// The tag on a managed stream naming the LogSubscription.
pub const OWNER_TAG: &str = "logsub.io/owner";

/// The groups the status lists that may carry our filter (one NotPermitted never did).
fn listed_groups(previous: &LogSubscriptionStatus) -> impl Iterator<Item = String> + '_ {
    previous
        .log_groups
        .iter()
        .filter(|g| g.filter != FilterState::NotPermitted)
        .map(|g| g.name.clone())
}

/// The groups our filter may be on: those last selected and those the status lists.
pub(super) fn listed_or_scanned(memo: &Memo, previous: &LogSubscriptionStatus) -> Vec<String> {
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
pub(super) async fn take_down(
    lsub: &LogSubscription,
    ctx: &Context,
    scope: &Scope,
    previous: &LogSubscriptionStatus,
    events: &mut Events,
) -> TakenDown {
    let uid = lsub.uid().unwrap_or_default();
    let mut memo = ctx.memory.get(&uid);
    let groups = listed_or_scanned(&memo, previous);
    memo.scanned = None;
    // Where its filters were put, which may not be where the spec now points
    // (a role the policy refuses is never assumed when that is known).
    let scope = memo.scope.clone().unwrap_or_else(|| scope.clone());
    // After a restart and a move meanwhile, the status tells where they are.
    note_move(&mut memo, previous, &scope);
    // First where it was before it moved; said in the rows below when some remain.
    let _ = remove_left_behind(lsub, ctx, &mut memo, events).await;
    let why = "it may not run";
    let mut failed = Vec::new();
    for arn in destinations(&memo, previous) {
        failed.extend(remove_filters(ctx, &scope, lsub, (&arn, why), &groups, events).await);
    }
    let mut left: Vec<LogGroupStatus> = failed
        .into_iter()
        .map(|(group, e)| group_failed(group, &e))
        .collect();
    for behind in &memo.left_behind {
        for group in &behind.groups {
            if !left.iter().any(|g| &g.name == group) {
                left.push(LogGroupStatus {
                    name: group.clone(),
                    filter: FilterState::Failed,
                    message: Some(format!(
                        "its filter in {} could not be removed yet",
                        behind.scope
                    )),
                });
            }
        }
    }
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
    // After the memory: a failure here must not make the filters' removal forgotten.
    let workers = super::cleanup::stop_workers(lsub, ctx).await;
    TakenDown {
        left,
        wait,
        workers,
    }
}

/// What taking a LogSubscription down left.
pub(super) struct TakenDown {
    /// The groups whose filter could not be removed yet.
    pub left: Vec<LogGroupStatus>,
    /// When to look again.
    pub wait: Duration,
    /// Whether its workers' Deployment was deleted (or was not there).
    pub workers: Result<(), kube::Error>,
}

/// The streams our filters may send to: the one the status names, and the one
/// this controller last synced toward (its status write may have failed).
pub(super) fn destinations(memo: &Memo, previous: &LogSubscriptionStatus) -> Vec<String> {
    let mut arns: Vec<String> = previous
        .stream_arn
        .iter()
        .chain(memo.aws.as_ref().and_then(|v| v.stream_arn.as_ref()))
        .cloned()
        .collect();
    arns.dedup();
    arns
}

/// Notes, among those to take off, `lsub`'s filters where it was before it
/// moved (another region or role) when that is not `scope`: where this
/// controller last synced it, or, not remembered (a restart), the region of
/// the stream they send to (CloudWatch Logs sends only to a stream of its own
/// region), as today's role.
pub(super) fn note_move(memo: &mut Memo, previous: &LogSubscriptionStatus, scope: &Scope) {
    let arns = destinations(memo, previous);
    let before = memo.scope.clone().or_else(|| {
        let region = arns.first().and_then(|arn| super::arn_region(arn))?;
        Some(Scope {
            region: region.to_owned(),
            role: scope.role.clone(),
        })
    });
    let Some(before) = before.filter(|b| b != scope) else {
        return;
    };
    let groups = listed_or_scanned(memo, previous);
    for arn in arns {
        match memo
            .left_behind
            .iter_mut()
            .find(|l| l.scope == before && l.stream_arn == arn)
        {
            Some(known) => {
                known.groups.extend(groups.iter().cloned());
                known.groups.sort();
                known.groups.dedup();
                known.retry_at = Instant::now();
            }
            None => memo.left_behind.push(super::LeftBehind {
                scope: before.clone(),
                stream_arn: arn,
                groups: groups.clone(),
                retry_at: Instant::now(),
                backoff: Memo::default().backoff,
            }),
        }
    }
    memo.owned_stream = None;
}

/// Takes off the filters left where `lsub` was before it moved (another
/// region or role, each move noted apart); those that cannot come off yet
/// are tried again at the next sync, due after a backoff, and said in an
/// Event. Returns the first failure, if any.
pub(super) async fn remove_left_behind(
    lsub: &LogSubscription,
    ctx: &Context,
    memo: &mut Memo,
    events: &mut Events,
) -> Option<AwsError> {
    let why = "the LogSubscription moved to another region or role";
    let mut first_failure = None;
    for mut behind in std::mem::take(&mut memo.left_behind) {
        let destination = (behind.stream_arn.as_str(), why);
        let failed = remove_filters(
            ctx,
            &behind.scope,
            lsub,
            destination,
            &behind.groups,
            events,
        )
        .await;
        if failed.is_empty() {
            continue;
        }
        let (groups, mut errors): (Vec<String>, Vec<AwsError>) = failed.into_iter().unzip();
        let first = errors.swap_remove(0);
        events.warning(
            "FiltersLeftBehind",
            "DeleteSubscriptionFilter",
            format!(
                "the filters on {} log group(s) in {} cannot be removed yet ({}: {}); tried again",
                groups.len(),
                behind.scope,
                first.code,
                first.message
            ),
        );
        behind.groups = groups;
        behind.retry_at = Instant::now() + behind.backoff.next_wait();
        memo.left_behind.push(behind);
        first_failure.get_or_insert(first);
    }
    first_failure
}

/// Removes our filters (of `lsub`'s name or its earlier one, sending to
/// `destination`: of those names sending elsewhere are not ours) from each of
/// `groups` that has them; returns the groups they could not be removed
/// from, with why.
pub(super) async fn remove_filters(
    ctx: &Context,
    scope: &Scope,
    lsub: &LogSubscription,
    (destination, why): (&str, &str),
    groups: &[String],
    events: &mut Events,
) -> Vec<(String, AwsError)> {
    if groups.is_empty() {
        return Vec::new();
    }
    let (name, legacy) = (lsub.filter_name(), lsub.legacy_name());
    let (logs, streams) = ctx.aws.clients(scope).await;
    // Asked once, and only when a filter of the earlier name is found.
    let mut earlier_ours: Option<bool> = None;
    let mut left = Vec::new();
    for (group, described) in observe::groups(&logs, groups).await {
        let ours: Vec<String> = match described {
            Ok(Some(g)) => {
                let mut ours = Vec::new();
                for f in g.filters {
                    if f.destination_arn != destination {
                        continue;
                    }
                    if f.name == legacy && earlier_ours.is_none() {
                        earlier_ours =
                            Some(earlier_is_ours(ctx, &streams, lsub, destination).await);
                    }
                    if f.name == name || (f.name == legacy && earlier_ours == Some(true)) {
                        ours.push(f.name);
                    }
                }
                ours
            }
            Ok(None) => Vec::new(),
            Err(e) => {
                left.push((group, e));
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
                // Already gone.
                Err(e) if e.class == crate::aws::ErrorClass::NotFound => {}
                Err(e) => {
                    left.push((group, e));
                    break;
                }
            }
        }
    }
    left
}

/// Whether another LogSubscription may have `lsub`'s earlier filter name: it
/// could, and one is seen or, a controller of one namespace or of a label
/// selector (which sees only some of them), could not be.
fn legacy_name_shared(ctx: &Context, lsub: &LogSubscription) -> bool {
    if ctx.settings.namespace.is_some() || ctx.settings.selector.is_some() {
        return super::tenancy::legacy_name_can_collide(lsub);
    }
    ctx.tenancy.shares_legacy_name(lsub)
}

/// Whether a filter of `lsub`'s earlier name sending to `destination` is
/// ours: yes when no other LogSubscription shares that name, else only when
/// `destination` is a stream created for `lsub` (tagged with its UID).
async fn earlier_is_ours(
    ctx: &Context,
    streams: &Streams,
    lsub: &LogSubscription,
    destination: &str,
) -> bool {
    if !legacy_name_shared(ctx, lsub) {
        return true;
    }
    let uid = lsub.uid().unwrap_or_default();
    created_for(streams, destination, &uid)
        .await
        .unwrap_or(false)
}

/// A group whose filter could not be written, and why.
fn group_failed(group: String, e: &AwsError) -> LogGroupStatus {
    LogGroupStatus {
        name: group,
        filter: filter_failure(e).state,
        message: Some(format!("{}: {}", e.code, e.message)),
    }
}

pub(super) async fn sync_aws(
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

/// Where a filter of the earlier name `legacy` found on `groups` is ours:
/// toward `arn` or `recorded` when no other LogSubscription shares that name;
/// when one does, only toward the managed stream tagged with our UID (a shared
/// existing stream, or one a status names, proves nothing). Says so in an
/// Event when such a filter is left alone.
#[allow(clippy::too_many_arguments)]
fn earlier_toward<'a>(
    lsub: &LogSubscription,
    ctx: &Context,
    memo: &'a Memo,
    groups: &[Group],
    legacy: &str,
    arn: &'a str,
    recorded: &[&'a str],
    events: &mut Events,
) -> Vec<&'a str> {
    let found: Vec<&Group> = groups
        .iter()
        .filter(|g| g.filters.iter().any(|f| f.name == legacy))
        .collect();
    if found.is_empty() {
        return Vec::new();
    }
    if !legacy_name_shared(ctx, lsub) {
        return std::iter::once(arn)
            .chain(recorded.iter().copied())
            .collect();
    }
    let proven: Vec<&str> = memo.owned_stream.as_deref().into_iter().collect();
    let unproven = found
        .iter()
        .filter(|g| {
            g.filters
                .iter()
                .any(|f| f.name == legacy && !proven.contains(&f.destination_arn.as_str()))
        })
        .count();
    if unproven > 0 {
        events.warning(
            "AmbiguousFilter",
            "PutSubscriptionFilter",
            format!(
                "{unproven} log group(s) carry a filter {legacy}, the name earlier versions gave both this and another LogSubscription; it is left as it is (remove it by hand once its owner is known)"
            ),
        );
    }
    proven
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
                        conditions::aws_check(&e, "describing the stream"),
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
            Err(e) => return failed(conditions::aws_check(&e, "reading the stream's tags"), None),
        }
    }
    let arn = info.as_ref().map(|i| i.arn.clone());
    let created = info.as_ref().and_then(|i| i.created_millis);
    let usable = info.as_ref().is_some_and(|i| i.status.usable());
    // Plan (pure), apply, then the check (pure).
    let action = plan::stream(spec, info.as_ref());
    let owner = format!(
        "{}/{}",
        lsub.namespace().unwrap_or_default(),
        lsub.name_any()
    );
    let tags = [(UID_TAG, uid.as_str()), (OWNER_TAG, owner.as_str())];
    let written = apply::stream(&streams, &name, &action, info.as_ref(), &tags).await;
    let (check, retry) = conditions::stream_step(&name, &action, info.as_ref(), written, events);
    StreamSync {
        check,
        arn,
        created,
        usable,
        retry,
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
                let (check, retry) = conditions::aws_check(&e, "listing the log groups");
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
    let toward = earlier_toward(lsub, ctx, memo, &found, &legacy, arn, &recorded, events);
    let earlier = plan::Earlier {
        name: &legacy,
        toward: &toward,
    };
    let actions = plan::filters(&found, is_selected, &want, earlier, &recorded);
    // Apply: the writes, at most a few at once.
    let written = apply::filters(&logs, &want, actions).await;
    // Status (pure): each group's row, the Events, whether to retry soon.
    let (rows, rows_retry) =
        conditions::filter_rows(written, &found, &want.name, is_selected, was, events);
    states.extend(rows);
    retry |= rows_retry;
    states.sort_by(|a, b| a.name.cmp(&b.name));
    let check = conditions::filters(&states, selected.len());
    (check, states, selected.len(), retry)
}
