//! Idempotent writes: the workers' objects by server-side apply, and the status.

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::resources::workload::Workload;
use crate::api::{LogSubscription, LogSubscriptionStatus};

/// The field manager of everything the controller writes.
pub const MANAGER: &str = "logsub-controller";

fn params() -> PatchParams {
    // The controller owns these fields; taking them back from a hand edit is the point.
    PatchParams::apply(MANAGER).force()
}

async fn apply_one<K>(client: &kube::Client, object: &K) -> Result<K, kube::Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    // k8s-openapi serializes apiVersion and kind, as server-side apply needs.
    let api: Api<K> = Api::namespaced(client.clone(), &object.namespace().unwrap_or_default());
    api.patch(&object.name_any(), &params(), &Patch::Apply(object))
        .await
}

/// Applies the workers' objects, the Deployment last so that what it mounts
/// and runs as exists when its pods start. Returns the applied Deployment.
pub async fn workload(client: &kube::Client, w: &Workload) -> Result<Deployment, kube::Error> {
    apply_one(client, &w.service_account).await?;
    apply_one(client, &w.role).await?;
    apply_one(client, &w.role_binding).await?;
    apply_one(client, &w.config_map).await?;
    apply_one(client, &w.deployment).await
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
