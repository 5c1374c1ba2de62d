//! Reads, never writes: the stream, the selected log groups with their
//! filters, the workers' Deployment and the health they publish on their leases.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};

use super::{Aws, Scope};
use crate::api::{LogGroupSelector, StreamRef};
use crate::aws::kinesis::StreamInfo;
use crate::aws::logs::{Group, Logs};
use crate::aws::{AwsError, ErrorClass};
use crate::contract::ShardHealth;
use crate::contract::lease::{
    Checkpoint, STREAM_ARN_ANNOTATION, STREAM_LABEL, SUBSCRIPTION_LABEL, ShardLease, stream_key,
};

/// How many log groups are described at once.
const DESCRIBE_CONCURRENCY: usize = 8;

/// The stream `reference` names (`managed` is the managed stream's name). An
/// existing stream's description is shared between LogSubscriptions for `ttl`.
pub async fn stream(
    aws: &Aws,
    scope: &Scope,
    reference: StreamRef<'_>,
    managed: &str,
    ttl: Duration,
) -> Result<Option<StreamInfo>, AwsError> {
    let (_, streams) = aws.clients(scope).await;
    let (name, arn, cacheable) = match reference {
        StreamRef::Name(name) => (Some(name), None, true),
        StreamRef::Arn(arn) => (None, Some(arn), true),
        StreamRef::Managed(_) => (Some(managed), None, false),
    };
    let key = name.or(arn).unwrap_or_default();
    if cacheable && let Some(info) = aws.cached_stream(scope, key, ttl) {
        return Ok(Some(info));
    }
    let info = streams.describe(name, arn).await?;
    if cacheable && let Some(info) = info.as_ref().filter(|i| i.status.usable()) {
        aws.cache_stream(scope, key, info);
    }
    Ok(info)
}

/// The names of the log groups `selector` selects, sorted. Named groups are
/// included whether or not they exist (describing them tells); a prefix lists
/// only its groups; a pattern lists them all.
pub async fn selection(logs: &Logs, selector: &LogGroupSelector) -> Result<Vec<String>, AwsError> {
    let pattern = selector
        .pattern
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .map_err(|e| AwsError::permanent(format!("invalid log group pattern: {e}")))?;
    let listed = match (&pattern, &selector.prefix) {
        (Some(_), _) => logs.log_groups(None).await?,
        (None, Some(prefix)) => logs.log_groups(Some(prefix)).await?,
        (None, None) => Vec::new(),
    };
    let mut names: Vec<String> = selector
        .names
        .iter()
        .cloned()
        .chain(listed)
        .filter(|name| selector.selects(name, pattern.as_ref()))
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// Each named log group with its filters: `None` when it does not exist.
pub async fn groups(
    logs: &Logs,
    names: &[String],
) -> Vec<(String, Result<Option<Group>, AwsError>)> {
    let mut described: Vec<_> = futures::stream::iter(names.iter().cloned())
        .map(|name| async move {
            let group = match logs.group(&name).await {
                Ok(group) => Ok(Some(group)),
                Err(e) if e.class == ErrorClass::NotFound => Ok(None),
                Err(e) => Err(e),
            };
            (name, group)
        })
        .buffer_unordered(DESCRIBE_CONCURRENCY)
        .collect()
        .await;
    described.sort_by(|a, b| a.0.cmp(&b.0));
    described
}

/// The workers' objects as the controller's watches of them (logsub's label
/// on them, managed fields dropped) last saw them. Absent from a cache proves
/// nothing: an object of that name someone else made is not in it.
#[derive(Clone)]
pub struct Owned {
    /// The workers' Deployments.
    pub deployments: Store<Deployment>,
    /// Their RoleBindings.
    pub bindings: Store<RoleBinding>,
    /// Their ServiceAccounts.
    pub accounts: Store<ServiceAccount>,
    /// Their ConfigMaps.
    pub configs: Store<ConfigMap>,
}

/// What fills [`Owned`]: see [`OwnedWriters::watch`].
pub struct OwnedWriters {
    pub(super) deployments: Writer<Deployment>,
    pub(super) bindings: Writer<RoleBinding>,
    pub(super) accounts: Writer<ServiceAccount>,
    pub(super) configs: Writer<ConfigMap>,
}

/// Empty caches of the workers' objects, and what fills them.
pub fn owned() -> (Owned, OwnedWriters) {
    let (deployments, deployment_writer) = reflector::store();
    let (bindings, binding_writer) = reflector::store();
    let (accounts, account_writer) = reflector::store();
    let (configs, config_writer) = reflector::store();
    (
        Owned {
            deployments,
            bindings,
            accounts,
            configs,
        },
        OwnedWriters {
            deployments: deployment_writer,
            bindings: binding_writer,
            accounts: account_writer,
            configs: config_writer,
        },
    )
}

/// A cache-filling watch of logsub's objects of kind `K` (all namespaces,
/// or `namespace`), yielding what it touched.
fn watch_owned<K>(
    client: &kube::Client,
    namespace: Option<&str>,
    writer: Writer<K>,
    slim: fn(&mut K),
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + use<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api = match namespace {
        Some(ns) => Api::<K>::namespaced(client.clone(), ns),
        None => Api::<K>::all(client.clone()),
    };
    watcher(
        api,
        watcher::Config::default()
            .labels(MANAGED_SELECTOR)
            .any_semantic(),
    )
    .default_backoff()
    // Without their managed fields, which would double what the caches hold.
    .modify(move |o: &mut K| {
        o.meta_mut().managed_fields = None;
        slim(o);
    })
    .reflect(writer)
    .touched_objects()
}

/// Keeps of a Deployment what the controller reads (its metadata, replicas,
/// the pod template's annotations and images, its status): a cache of
/// thousands holds little else.
fn slim_deployment(d: &mut Deployment) {
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    if let Some(pod) = d.spec.template.spec.as_mut() {
        let containers = pod
            .containers
            .iter()
            .map(|c| Container {
                name: c.name.clone(),
                image: c.image.clone(),
                ..Container::default()
            })
            .collect();
        *pod = PodSpec {
            containers,
            ..PodSpec::default()
        };
    }
}

/// The label selector of every workers' object.
const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=logsub";

impl OwnedWriters {
    /// Watches the workers' objects into the caches: returns what the
    /// Deployments' watch touched (their owners are reconciled on it) and a
    /// future that keeps the other caches filled, and never ends.
    pub fn watch(
        self,
        client: &kube::Client,
        namespace: Option<&str>,
    ) -> (
        impl futures::Stream<Item = Result<Deployment, watcher::Error>> + Send + use<>,
        impl std::future::Future<Output = ()> + Send + use<>,
    ) {
        let others = futures::stream::select_all([
            watch_owned(client, namespace, self.bindings, |_| ())
                .map(said::<RoleBinding>)
                .boxed(),
            watch_owned(client, namespace, self.accounts, |_| ())
                .map(said::<ServiceAccount>)
                .boxed(),
            watch_owned(client, namespace, self.configs, |_| ())
                .map(said::<ConfigMap>)
                .boxed(),
        ])
        .for_each(|()| async {});
        let deployments = watch_owned(client, namespace, self.deployments, slim_deployment);
        (deployments, others)
    }
}

/// Says a watch's failure (retried with backoff): until it heals, each such
/// object is read before it is applied, at every reconcile.
fn said<K: kube::Resource<DynamicType = ()>>(touched: Result<K, watcher::Error>) {
    if let Err(e) = touched {
        tracing::warn!(kind = %K::kind(&()), error = %e, "cannot watch the workers' objects");
    }
}

/// How a workers' object stands in its cache against the one built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cached {
    /// Ours (of this uid), as built: nothing to apply.
    AsBuilt(String),
    /// Ours (of this uid), but not as built: applied without reading it
    /// first, on the condition that it is still that object.
    Ours(String),
    /// Not in the cache (or not ours): read before anything is applied.
    Unknown,
    /// Not watched (yet, or the watch is refused): read before anything is
    /// applied, and applied only when the caller would have without caches.
    Unwatched,
}

impl Cached {
    /// Whether the object is not watched.
    pub fn unwatched(&self) -> bool {
        matches!(self, Cached::Unwatched)
    }
}

impl Owned {
    /// How the workers' RoleBinding `built` stands: its subjects and role.
    pub fn binding(&self, built: &RoleBinding, owner: &str) -> Cached {
        cached(&self.bindings, built, owner, |seen, built| {
            seen.role_ref == built.role_ref && seen.subjects == built.subjects
        })
    }

    /// How the workers' ServiceAccount `built` stands: the annotations the
    /// spec gives it (IRSA's role) and its token mount.
    pub fn account(&self, built: &ServiceAccount, owner: &str) -> Cached {
        cached(&self.accounts, built, owner, |seen, built| {
            seen.automount_service_account_token == built.automount_service_account_token
                && contains(&seen.metadata.annotations, &built.metadata.annotations)
        })
    }

    /// How the workers' ConfigMap `built` stands: its data. A key someone
    /// else added stays (an apply cannot remove a field it does not own), so
    /// it does not count as a difference.
    pub fn config(&self, built: &ConfigMap, owner: &str) -> Cached {
        cached(&self.configs, built, owner, |seen, built| {
            contains(&seen.data, &built.data)
        })
    }
}

/// Whether `seen` holds every entry of `built`.
fn contains(
    seen: &Option<std::collections::BTreeMap<String, String>>,
    built: &Option<std::collections::BTreeMap<String, String>>,
) -> bool {
    built
        .iter()
        .flatten()
        .all(|(k, v)| seen.as_ref().and_then(|s| s.get(k)) == Some(v))
}

fn cached<K>(store: &Store<K>, built: &K, owner: &str, same: impl Fn(&K, &K) -> bool) -> Cached
where
    K: kube::Resource<DynamicType = ()> + Clone,
{
    // A store whose watch has not listed yet (or is refused) knows nothing.
    if futures::FutureExt::now_or_never(store.wait_until_ready()).is_none() {
        return Cached::Unwatched;
    }
    let key = ObjectRef::new(&built.name_any()).within(&built.namespace().unwrap_or_default());
    match store.get(&key) {
        Some(seen) if super::apply::controlled_by(seen.meta(), owner) => {
            let uid = seen.uid().unwrap_or_default();
            if same(&seen, built) {
                Cached::AsBuilt(uid)
            } else {
                Cached::Ours(uid)
            }
        }
        _ => Cached::Unknown,
    }
}

/// The workers' Deployment, if it exists: from the watch cache when it holds
/// one of that name (logsub's label on it), else read. Absent from the cache
/// proves nothing: a Deployment of that name someone else made is not in it.
pub async fn deployment(
    client: &kube::Client,
    cache: &Store<Deployment>,
    namespace: &str,
    name: &str,
) -> Result<Option<Deployment>, kube::Error> {
    if let Some(cached) = cache.get(&ObjectRef::new(name).within(namespace)) {
        return Ok(Some((*cached).clone()));
    }
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
}

/// One shard lease as the controller reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseSeen {
    /// The Lease's name.
    pub name: String,
    /// Its resourceVersion: it changes with every renewal.
    pub resource_version: String,
    /// The shard.
    pub shard: String,
    /// Who holds it.
    pub holder: Option<String>,
    /// How long it lasts unrenewed.
    pub duration: Duration,
    /// Whether its shard was read to its end.
    pub finished: bool,
    /// The shard's parents, read before it.
    pub parents: Vec<String>,
    /// When its holder last renewed it, by the holder's clock.
    pub renewed: Option<k8s_openapi::jiff::Timestamp>,
    /// The health its holder last published.
    pub health: Option<ShardHealth>,
}

/// Every shard lease of the subscription, whatever stream it is of (one
/// list serves both the adoption of earlier leases and the status).
pub async fn subscription_leases(
    client: &kube::Client,
    namespace: &str,
    subscription: &str,
) -> Result<Vec<Lease>, kube::Error> {
    let selector = format!("{SUBSCRIPTION_LABEL}={subscription}");
    Ok(Api::<Lease>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&selector))
        .await?
        .items)
}

/// Those of `leases` of the stream `stream` (its [`stream_key`]), as the
/// controller reads them.
///
/// [`stream_key`]: crate::contract::lease::stream_key
pub fn leases_of(leases: Vec<Lease>, stream: &str) -> Vec<LeaseSeen> {
    leases
        .into_iter()
        .filter(|lease| {
            lease
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(STREAM_LABEL))
                == Some(&stream.to_owned())
        })
        .map(|lease| {
            let spec = lease.spec.clone().unwrap_or_default();
            let name = lease.metadata.name.clone().unwrap_or_default();
            let resource_version = lease.metadata.resource_version.clone().unwrap_or_default();
            let lease = ShardLease::from(lease);
            LeaseSeen {
                name,
                resource_version,
                shard: lease.shard_id().to_owned(),
                holder: lease.holder().map(str::to_owned),
                duration: Duration::from_secs(
                    u64::try_from(spec.lease_duration_seconds.unwrap_or(15)).unwrap_or(15),
                ),
                finished: lease.checkpoint() == Checkpoint::ShardEnd,
                parents: lease.parents(),
                renewed: spec.renew_time.map(|t| t.0),
                health: lease.health(),
            }
        })
        .collect()
}

/// Whether a lease written before leases named their stream holds a
/// checkpoint of the stream in use: the workers that wrote it had one stream,
/// the one the status recorded (`previous`); it is this one if that is the
/// stream in use now and the lease was made after the stream was created (a
/// stream of the same name made again is another).
pub fn earlier_lease_is_of(
    previous: Option<&str>,
    arn: &str,
    stream_created_millis: Option<i64>,
    lease_created: Option<k8s_openapi::jiff::Timestamp>,
) -> bool {
    let after_creation = match (stream_created_millis, lease_created) {
        (Some(stream), Some(lease)) => lease.as_millisecond() >= stream,
        (None, _) => true,
        (Some(_), None) => false,
    };
    previous == Some(arn) && after_creation
}

/// Leases that earlier workers wrote without naming their stream (among
/// `leases`, all of the subscription's): those of the stream in use are
/// labelled as its own, so that its workers resume from them; the others
/// (another stream's checkpoints) are deleted. Returns `leases` as they are
/// now.
pub async fn adopt_earlier_leases(
    client: &kube::Client,
    namespace: &str,
    leases: Vec<Lease>,
    previous: Option<&str>,
    (arn, created): (&str, Option<i64>),
) -> Result<Vec<Lease>, kube::Error> {
    let api = Api::<Lease>::namespaced(client.clone(), namespace);
    let mut now = Vec::with_capacity(leases.len());
    for mut lease in leases {
        let labelled = lease
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(STREAM_LABEL));
        if labelled {
            now.push(lease);
            continue;
        }
        let name = lease.metadata.name.clone().unwrap_or_default();
        let made = lease.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let result = if earlier_lease_is_of(previous, arn, created, made) {
            tracing::info!(lease = %name, %arn, "a lease from before leases named their stream: resumed from");
            lease
                .metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(STREAM_LABEL.to_owned(), stream_key(arn, created));
            lease
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(STREAM_ARN_ANNOTATION.to_owned(), arn.to_owned());
            api.replace(&name, &PostParams::default(), &lease)
                .await
                .map(|replaced| now.push(replaced))
        } else {
            tracing::info!(lease = %name, "a lease from before leases named their stream, of another stream: deleted");
            api.delete(&name, &DeleteParams::default()).await.map(drop)
        };
        match result {
            Ok(()) => {}
            // Gone or changed meanwhile: looked at again next time.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(now)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    /// A cached Deployment keeps all the plan compares: slimmed, it still
    /// plans nothing against the one it was applied as, and a new image or
    /// config still plans an apply.
    #[test]
    fn a_slimmed_deployment_plans_as_the_full_one() {
        use super::super::plan::{WorkloadStep, workload};
        use super::super::resources::workload::CONFIG_HASH;
        let full: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "app-worker", "namespace": "team-a"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "x"}},
                "template": {
                    "metadata": {"annotations": {CONFIG_HASH: "abc"}},
                    "spec": {
                        "containers": [{
                            "name": "worker", "image": "logsub:1",
                            "env": [{"name": "A", "value": "b"}],
                            "args": ["worker"],
                        }],
                        "volumes": [{"name": "config", "configMap": {"name": "app-worker"}}],
                    },
                },
            },
            "status": {"replicas": 2, "availableReplicas": 2},
        }))
        .expect("a Deployment");
        let mut slim = full.clone();
        slim_deployment(&mut slim);
        let pod = slim.spec.template.spec.as_ref().expect("a pod spec");
        assert!(pod.volumes.is_none() && pod.containers[0].env.is_none());
        assert_eq!(slim.status, full.status);
        assert_eq!(workload(Some(&slim), &full, false), WorkloadStep::Keep);
        let mut newer = full.clone();
        if let Some(pod) = newer.spec.template.spec.as_mut() {
            pod.containers[0].image = Some("logsub:2".into());
        }
        assert_eq!(workload(Some(&slim), &newer, false), WorkloadStep::Apply);
        let mut reconfigured = full;
        reconfigured.spec.template.metadata = Some(ObjectMeta {
            annotations: Some([(CONFIG_HASH.to_owned(), "def".to_owned())].into()),
            ..ObjectMeta::default()
        });
        assert_eq!(
            workload(Some(&slim), &reconfigured, false),
            WorkloadStep::Apply
        );
    }

    #[test]
    fn earlier_leases_are_of_the_stream_the_status_recorded() {
        let arn = "arn:aws:kinesis:us-east-1:1:stream/a";
        let at = |ms: i64| Timestamp::from_millisecond(ms).ok();
        assert!(earlier_lease_is_of(Some(arn), arn, Some(1_000), at(2_000)));
        assert!(
            !earlier_lease_is_of(
                Some("arn:aws:kinesis:us-east-1:1:stream/b"),
                arn,
                Some(1_000),
                at(2_000)
            ),
            "the stream changed: another stream's checkpoints"
        );
        assert!(!earlier_lease_is_of(None, arn, Some(1_000), at(2_000)));
        assert!(
            !earlier_lease_is_of(Some(arn), arn, Some(3_000), at(2_000)),
            "made before the stream: of one deleted and made again"
        );
    }
}
