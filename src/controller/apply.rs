//! The writes of a reconcile, returning what happened: the subscription
//! filters a plan names, the workers' objects (server-side apply, never over
//! an object of their name that is not ours) and the status.

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::ObjectMeta;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::observe::Cached;
use super::plan::{Action, StreamAction};
use super::resources::workload::BuildError;
use crate::api::{LogSubscription, LogSubscriptionStatus};
use crate::aws::AwsError;
use crate::aws::kinesis::{StreamInfo, Streams};
use crate::aws::logs::Filter;
use crate::aws::logs::Logs;

/// How many subscription filters are written at once for one LogSubscription.
const FILTER_CONCURRENCY: usize = 4;

/// Why the workers' objects could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The API server refused or failed a call.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The objects could not be built from the spec.
    #[error("{0}")]
    Build(#[from] BuildError),
    /// An object the workers need exists under their name, and this
    /// LogSubscription does not control it: it is left alone.
    #[error(
        "a {kind} {name} exists that this LogSubscription does not control; it is left as it is (rename or remove it)"
    )]
    NameTaken {
        /// The object's kind.
        kind: String,
        /// Its name.
        name: String,
    },
}

/// Carries out a managed stream's step: creates it `name`d and tagged
/// with `tags`, changes its capacity or retention (`info`: as observed), or
/// does nothing.
pub async fn stream(
    streams: &Streams,
    name: &str,
    action: &StreamAction,
    info: Option<&StreamInfo>,
    tags: &[(&str, &str)],
) -> Result<(), AwsError> {
    match (action, info) {
        (StreamAction::Create(capacity), _) => streams.create(name, *capacity, tags).await,
        (StreamAction::Resize(capacity), Some(i)) => streams.resize(i, *capacity).await,
        (StreamAction::Retain(hours), Some(i)) => streams.set_retention(i, *hours).await,
        _ => Ok(()),
    }
}

/// Carries out the filter `actions` (`want` is the filter wanted, under
/// today's name); returns each action with its outcome.
pub async fn filters(
    logs: &Logs,
    want: &Filter,
    actions: Vec<Action>,
) -> Vec<(Action, Result<(), AwsError>)> {
    use futures::StreamExt;
    futures::stream::iter(actions)
        .map(|action| {
            async move {
                let named = |name: &str| Filter {
                    name: name.to_owned(),
                    ..want.clone()
                };
                let result = match &action {
                    Action::Put { group, name } => logs.put_filter(group, &named(name)).await,
                    Action::Delete { group, name } => logs.delete_filter(group, name).await,
                    // The new one delivers before the old one stops.
                    Action::Rename { group, from } => {
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
                    Action::Keep { .. }
                    | Action::Blocked(_)
                    | Action::Foreign(..) => Ok(()),
                };
                (action, result)
            }
        })
        .buffer_unordered(FILTER_CONCURRENCY)
        .collect()
        .await
}

/// The field manager of everything the controller writes.
pub const MANAGER: &str = "logsub-controller";

fn params() -> PatchParams {
    // The controller owns these fields; taking them back from a hand edit is the point.
    PatchParams::apply(MANAGER).force()
}

/// Whether `meta` is controlled by the object with `uid`.
pub fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    !uid.is_empty()
        && meta
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && o.uid == uid)
}

/// A namespaced object the controller applies.
pub trait Applied:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + Serialize
    + DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> Applied for K where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug
{
}

/// Applies `object`, which is controlled by its owner, unless an object of
/// its name exists that the owner does not control: taking over what someone
/// else made (by force, as applies here do) is never the point.
async fn apply_one<K: Applied>(client: &kube::Client, object: &K) -> Result<K, ApplyError> {
    let api: Api<K> = Api::namespaced(client.clone(), &object.namespace().unwrap_or_default());
    let name = object.name_any();
    let owner = object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone())
        .unwrap_or_default();
    if let Some(existing) = api.get_opt(&name).await?
        && !controlled_by(existing.meta(), &owner)
    {
        return Err(ApplyError::NameTaken {
            kind: K::kind(&()).into_owned(),
            name,
        });
    }
    apply_ours(client, object).await
}

/// Applies `object`, whose name is known to be free or ours.
async fn apply_ours<K: Applied>(client: &kube::Client, object: &K) -> Result<K, ApplyError> {
    let api: Api<K> = Api::namespaced(client.clone(), &object.namespace().unwrap_or_default());
    // k8s-openapi serializes apiVersion and kind, as server-side apply needs.
    Ok(api
        .patch(&object.name_any(), &params(), &Patch::Apply(object))
        .await?)
}

/// Applies one of the workers' objects (their Deployment excepted: see
/// [`deployment`]) as its cache says it stands, or whatever it stands when
/// `force`d: one not known to be ours is read first.
pub async fn owned<K: Applied>(
    client: &kube::Client,
    object: &K,
    cached: Cached,
    force: bool,
) -> Result<(), ApplyError> {
    match cached {
        Cached::AsBuilt(_) | Cached::Unwatched if !force => Ok(()),
        Cached::AsBuilt(uid) | Cached::Ours(uid) => {
            // The cache may be behind: applied only to the object it saw.
            // The API server refuses another object of that name (422: the
            // uid is immutable) and none (409), and the name is read first.
            let mut guarded = object.clone();
            guarded.meta_mut().uid = Some(uid);
            match apply_ours(client, &guarded).await {
                Err(ApplyError::Kube(kube::Error::Api(s))) if matches!(s.code, 409 | 422) => {
                    apply_one(client, object).await.map(drop)
                }
                applied => applied.map(drop),
            }
        }
        Cached::Unknown | Cached::Unwatched => apply_one(client, object).await.map(drop),
    }
}

/// Applies the workers' Deployment, whose name the caller has seen to be
/// free or ours. Returns it as applied.
pub async fn deployment(client: &kube::Client, d: &Deployment) -> Result<Deployment, ApplyError> {
    apply_ours(client, d).await
}

/// Writes `status` with server-side apply of the status subresource only.
pub async fn status(
    client: &kube::Client,
    lsub: &LogSubscription,
    status: &LogSubscriptionStatus,
) -> Result<(), kube::Error> {
    let api: Api<LogSubscription> =
        Api::namespaced(client.clone(), &lsub.namespace().unwrap_or_default());
    let body = serde_json::json!({
        "apiVersion": LogSubscription::api_version(&()),
        "kind": LogSubscription::kind(&()),
        "status": status,
    });
    api.patch_status(&lsub.name_any(), &params(), &Patch::Apply(body))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;

    #[test]
    fn only_a_controller_reference_with_the_uid_makes_it_ours() {
        let owner = |uid: &str, controller: Option<bool>| OwnerReference {
            uid: uid.into(),
            controller,
            ..OwnerReference::default()
        };
        let meta = |refs: Vec<OwnerReference>| ObjectMeta {
            owner_references: Some(refs),
            ..ObjectMeta::default()
        };
        assert!(controlled_by(&meta(vec![owner("u", Some(true))]), "u"));
        assert!(
            !controlled_by(&meta(vec![owner("u", None)]), "u"),
            "owned, not controlled"
        );
        assert!(!controlled_by(&meta(vec![owner("v", Some(true))]), "u"));
        assert!(!controlled_by(&ObjectMeta::default(), "u"));
        assert!(
            !controlled_by(&meta(vec![owner("", Some(true))]), ""),
            "no uid is no owner"
        );
    }
}
