//! Idempotent writes: the workers' objects by server-side apply, and the status.

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::ObjectMeta;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::Error;
use super::resources::workload::Workload;
use crate::api::{LogSubscription, LogSubscriptionStatus};

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

/// Applies `object`, which is controlled by its owner, unless an object of
/// its name exists that the owner does not control: taking over what someone
/// else made (by force, as applies here do) is never the point.
async fn apply_one<K>(client: &kube::Client, object: &K) -> Result<K, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
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
        return Err(Error::NameTaken {
            kind: K::kind(&()).into_owned(),
            name,
        });
    }
    // k8s-openapi serializes apiVersion and kind, as server-side apply needs.
    Ok(api.patch(&name, &params(), &Patch::Apply(object)).await?)
}

/// Applies the workers' objects but their RoleBinding (see [`binding`]), the Deployment last so that what it mounts
/// and runs as exists when its pods start. Returns the applied Deployment.
pub async fn workload(client: &kube::Client, w: &Workload) -> Result<Deployment, Error> {
    apply_one(client, &w.service_account).await?;
    // The RoleBinding is applied by the reconcile before it touches the
    // workers' Leases, once per resync: not a second time here.
    apply_one(client, &w.config_map).await?;
    apply_one(client, &w.deployment).await
}

/// Applies the workers' RoleBinding.
pub async fn binding(
    client: &kube::Client,
    binding: &k8s_openapi::api::rbac::v1::RoleBinding,
) -> Result<(), Error> {
    apply_one(client, binding).await.map(drop)
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
