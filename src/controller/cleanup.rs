//! What a deleted LogSubscription leaves behind in AWS: under `Delete`, none of
//! its filters and not its managed stream; under `Retain`, everything. The
//! workers' objects are Kubernetes' to collect (owner references).

use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};

use super::error::Error;
use super::status::Events;
use super::sync::{created_for, note_move, remove_filters, remove_left_behind};
use super::{Context, observe};
use crate::api::{DeletionPolicy, LogSubscription, StreamRef};

/// Removes what `lsub` owns in AWS, as its deletion policy says. Anything
/// already gone counts as removed.
pub async fn cleanup(lsub: &LogSubscription, ctx: &Context) -> Result<Action, Error> {
    let uid = lsub.uid().unwrap_or_default();
    let note = match lsub.spec.deletion_policy {
        DeletionPolicy::Retain => {
            "deletionPolicy Retain: the subscription filters and the stream are kept".to_owned()
        }
        DeletionPolicy::Delete => delete(lsub, ctx).await?,
    };
    ctx.memory.forget(&uid);
    let event = Event {
        type_: EventType::Normal,
        reason: "CleanedUp".into(),
        note: Some(note),
        action: "Delete".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &lsub.object_ref(&())).await {
        tracing::debug!(error = %e, "cannot publish an Event");
    }
    Ok(Action::await_change())
}

async fn delete(lsub: &LogSubscription, ctx: &Context) -> Result<String, Error> {
    forget_checkpoints(lsub, ctx).await?;
    let Some(region) = region(lsub, ctx) else {
        // Apply refuses a LogSubscription without a region before any AWS
        // call: nothing of it is in AWS, and no region is guessed to look.
        return Ok("no AWS region was ever known for it: nothing to remove in AWS".to_owned());
    };
    let scope = super::Scope::of(lsub, region);
    let note = remove_from_aws(lsub, ctx, &scope).await;
    ctx.aws.forget(&scope);
    note
}

/// Removes `lsub`'s filters and managed stream in `scope`; says what it did.
async fn remove_from_aws(
    lsub: &LogSubscription,
    ctx: &Context,
    scope: &super::Scope,
) -> Result<String, Error> {
    let (logs, streams) = ctx.aws.clients(scope).await;
    let name = lsub.filter_name();
    // The groups the status lists, and what the selection holds now (a spec
    // changed just before deletion may not have reached the status).
    let mut groups: Vec<String> = lsub
        .status
        .iter()
        .flat_map(|s| s.log_groups.iter().map(|g| g.name.clone()))
        .collect();
    if lsub.spec.validate().is_ok() {
        groups.extend(observe::selection(&logs, &lsub.spec.source.log_groups).await?);
    }
    let memo = ctx.memory.get(&lsub.uid().unwrap_or_default());
    groups.extend(
        memo.scanned
            .iter()
            .flat_map(|(_, names)| names.iter().cloned()),
    );
    groups.sort();
    groups.dedup();
    // Only ours: our name, sending to a stream the status recorded or this
    // controller last synced toward (the status write after a put may have
    // failed). A group already gone takes our filter with it.
    // The earlier name counts only where it is provably ours (another
    // LogSubscription may share it).
    let status = lsub.status.clone().unwrap_or_default();
    let why = "the LogSubscription was deleted";
    let mut events = Events::default();
    let mut memo = memo;
    // First those where it was before it moved (another region or role),
    // known or read from the status.
    note_move(&mut memo, &status, scope);
    if let Some(e) = remove_left_behind(lsub, ctx, &mut memo, &mut events).await {
        // Kept for the retry: the memory is forgotten only once cleaned up.
        ctx.memory.put(&lsub.uid().unwrap_or_default(), memo);
        return Err(e.into());
    }
    for arn in super::sync::destinations(&memo, &status) {
        let failed = remove_filters(ctx, scope, lsub, (&arn, why), &groups, &mut events).await;
        if let Some((_, e)) = failed.into_iter().next() {
            return Err(e.into());
        }
    }
    let removed = events.0.len();
    let mut note = format!("removed filter {name} from {removed} log group(s)");
    // Today's name, and the earlier one a stream made before may carry.
    let mut names = vec![lsub.resource_name(), lsub.stream_name()];
    names.dedup();
    // A name Kinesis cannot hold never named a stream.
    names.retain(|n| n.len() <= crate::api::MAX_STREAM_NAME_LEN);
    if let Some(StreamRef::Managed(_)) = lsub.spec.stream.reference() {
        for name in names {
            // Only a stream tagged with our UID is ours: the status naming it
            // is no proof, since others may write the status.
            let Some(info) = streams.describe(Some(&name), None).await? else {
                continue;
            };
            if created_for(&streams, &info.arn, &lsub.uid().unwrap_or_default()).await? {
                streams.delete(&info.arn).await?;
                note.push_str(&format!(" and deleted stream {name}"));
            } else {
                note.push_str(&format!(
                    "; stream {name} was not created for this LogSubscription and is kept"
                ));
            }
        }
    }
    Ok(note)
}

/// Where the LogSubscription's AWS resources are: its region, else the one its
/// stream's ARN names (`arn:aws:kinesis:<region>:…`), else the controller's.
fn region(lsub: &LogSubscription, ctx: &Context) -> Option<String> {
    let from_arn = lsub
        .status
        .as_ref()
        .and_then(|s| s.stream_arn.as_deref())
        .and_then(super::arn_region);
    ctx.aws.region(lsub.spec.region.as_deref().or(from_arn))
}

/// Stops the workers and deletes their shard leases, whose checkpoints belong
/// to a stream that goes too: a LogSubscription created again with this name
/// must not resume from them. (Under `Retain` they stay, so that one reading
/// the kept stream again resumes where this one stopped.)
async fn forget_checkpoints(lsub: &LogSubscription, ctx: &Context) -> Result<(), kube::Error> {
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::api::{Api, DeleteParams, ListParams};

    stop_workers(lsub, ctx).await?;
    let namespace = lsub.namespace().unwrap_or_default();
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), &namespace);
    let selector = format!(
        "{}={}",
        crate::contract::lease::SUBSCRIPTION_LABEL,
        lsub.name_any()
    );
    let listed = match leases
        .list_metadata(&ListParams::default().labels(&selector))
        .await
    {
        Ok(listed) => listed.items,
        // A name no label can hold (admitted before admission checked it)
        // can have no leases: there is nothing to wait for.
        Err(kube::Error::Api(s)) if s.code == 400 => Vec::new(),
        Err(e) => return Err(e),
    };
    for lease in listed {
        match leases
            .delete(&lease.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            // The binding through which the controller deletes them is gone
            // already (a foreground deletion takes it first): the leases
            // name a stream that goes too, so no one resumes from them, and
            // a deletion must not hang on them.
            Err(kube::Error::Api(s)) if s.code == 403 => {
                tracing::warn!(lease = %lease.name_any(), error = %s, "cannot delete a checkpoint lease; left behind");
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Deletes the workers' Deployment, if this LogSubscription controls it (one
/// of that name someone else made stays). Their leases, and so their
/// checkpoints, stay.
pub async fn stop_workers(lsub: &LogSubscription, ctx: &Context) -> Result<(), kube::Error> {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Api, DeleteParams};

    let namespace = lsub.namespace().unwrap_or_default();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let workers = super::resources::workload::workload_name(lsub);
    let uid = lsub.uid().unwrap_or_default();
    let ours = deployments
        .get_opt(&workers)
        .await?
        .filter(|d| super::apply::controlled_by(&d.metadata, &uid));
    let Some(ours) = ours else {
        return Ok(());
    };
    let params = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: ours.metadata.uid,
            resource_version: None,
        }),
        ..DeleteParams::foreground()
    };
    match deployments.delete(&workers, &params).await {
        Ok(_) => Ok(()),
        // Gone, or replaced by another object meanwhile (409): not ours to delete.
        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => Ok(()),
        Err(e) => Err(e),
    }
}
