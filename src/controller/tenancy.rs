//! The policies and namespace labels a reconcile authorizes against, read
//! from watch caches (or, for the one namespace of a namespaced controller,
//! read now and then: a namespaced controller may not list namespaces), and
//! the LogSubscriptions the controller watches, which tell whether a name
//! earlier versions gave is one another LogSubscription shares.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};

use super::authorize::{self, Grant, NotPermitted, Policy};
use crate::api::{LogSubscription, LogSubscriptionPolicy};

/// How long a reconcile waits for the first list of policies or namespaces.
const FIRST_LIST: Duration = Duration::from_secs(30);

/// Why a LogSubscription could not be authorized.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    /// No policy permits it.
    #[error(transparent)]
    NotPermitted(#[from] NotPermitted),
    /// The policies or the namespace could not be read: nothing is decided.
    #[error("cannot read the policies or the namespace: {0}")]
    Unknown(String),
}

/// Where a namespace's labels come from.
pub enum Namespaces {
    /// Every namespace, from a watch cache.
    Watched(Store<PartialObjectMeta<Namespace>>),
    /// The one namespace watched, read with `get` at most every `ttl`.
    One {
        /// The client.
        client: kube::Client,
        /// How long labels read are trusted.
        ttl: Duration,
        /// The labels last read, and when.
        read: tokio::sync::Mutex<Option<(Instant, BTreeMap<String, String>)>>,
    },
}

/// The cluster's policies, each parsed once per version, and its LogSubscriptions.
pub struct Tenancy {
    policies: Store<LogSubscriptionPolicy>,
    parsed: Mutex<HashMap<String, Arc<Policy>>>,
    namespaces: Namespaces,
    subscriptions: Store<LogSubscription>,
}

impl Tenancy {
    /// Policies from `policies`, namespace labels from `namespaces`, the
    /// LogSubscriptions from `subscriptions`.
    pub fn new(
        policies: Store<LogSubscriptionPolicy>,
        namespaces: Namespaces,
        subscriptions: Store<LogSubscription>,
    ) -> Tenancy {
        Tenancy {
            policies,
            parsed: Mutex::new(HashMap::new()),
            namespaces,
            subscriptions,
        }
    }

    /// The LogSubscriptions watched (the controller reconciles from it).
    pub fn subscriptions(&self) -> Store<LogSubscription> {
        self.subscriptions.clone()
    }

    /// Whether another LogSubscription has `lsub`'s earlier filter name
    /// (`logsub-<namespace>-<name>`: `a/b-c` and `a-b/c` share one), so that
    /// a filter of that name may be either's. Unknown (not listed yet) counts
    /// as shared: such a filter is then taken only on proof.
    pub fn shares_legacy_name(&self, lsub: &LogSubscription) -> bool {
        use futures::FutureExt;
        if !legacy_name_can_collide(lsub) {
            return false;
        }
        let listed = self.subscriptions.wait_until_ready().now_or_never();
        if !matches!(listed, Some(Ok(()))) {
            return true;
        }
        let legacy = lsub.legacy_name();
        let uid = lsub.uid();
        // Asked only where a filter of that name was found: rare, so a scan.
        self.subscriptions
            .state()
            .iter()
            .any(|other| other.uid() != uid && other.legacy_name() == legacy)
    }

    /// Whether `lsub` is permitted, and what it may do. Waits for the first
    /// list of policies: a controller that has just started must not take
    /// "no policy seen yet" for "no policy".
    pub async fn authorize(&self, lsub: &LogSubscription) -> Result<Grant, AuthorizeError> {
        let namespace = lsub.namespace().unwrap_or_default();
        let labels = self.labels(&namespace).await?;
        ready(&self.policies).await?;
        let policies = self.parsed();
        Ok(authorize::authorize(lsub, &labels, &policies)?)
    }

    /// Every policy, parsed; a policy is parsed again only when it changed.
    fn parsed(&self) -> Vec<Arc<Policy>> {
        let current = self.policies.state();
        let mut parsed = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
        parsed.retain(|name, _| current.iter().any(|p| p.name_any() == *name));
        current
            .iter()
            .map(|policy| {
                let version = policy.resource_version().unwrap_or_default();
                let entry = parsed
                    .entry(policy.name_any())
                    .or_insert_with(|| Arc::new(Policy::new(policy)));
                if entry.version() != version {
                    *entry = Arc::new(Policy::new(policy));
                }
                entry.clone()
            })
            .collect()
    }

    async fn labels(&self, namespace: &str) -> Result<BTreeMap<String, String>, AuthorizeError> {
        match &self.namespaces {
            Namespaces::Watched(store) => {
                ready(store).await?;
                // Not seen yet (just created): no labels would be a guess,
                // which a selector like `DoesNotExist` would read as a match.
                store
                    .get(&ObjectRef::new(namespace))
                    .map(|ns| ns.labels().clone())
                    .ok_or_else(|| {
                        AuthorizeError::Unknown(format!("namespace {namespace} not seen yet"))
                    })
            }
            Namespaces::One { client, ttl, read } => {
                let mut read = read.lock().await;
                if let Some((at, labels)) = read.as_ref()
                    && at.elapsed() < *ttl
                {
                    return Ok(labels.clone());
                }
                let labels = Api::<Namespace>::all(client.clone())
                    .get_metadata(namespace)
                    .await
                    .map_err(|e| AuthorizeError::Unknown(format!("namespace {namespace}: {e}")))?
                    .labels()
                    .clone();
                *read = Some((Instant::now(), labels.clone()));
                Ok(labels)
            }
        }
    }
}

/// Whether another namespace and name could give `lsub`'s earlier filter
/// name (`logsub-<namespace>-<name>`): cut at another `-`, both parts must
/// still be a possible namespace and name.
pub fn legacy_name_can_collide(lsub: &LogSubscription) -> bool {
    let namespace = lsub.namespace().unwrap_or_default();
    let joined = format!("{namespace}-{}", lsub.name_any());
    let part = |p: &str| !p.is_empty() && p.len() <= 63 && !p.starts_with('-') && !p.ends_with('-');
    joined
        .match_indices('-')
        .any(|(at, _)| at != namespace.len() && part(&joined[..at]) && part(&joined[at + 1..]))
}

async fn ready<K>(store: &Store<K>) -> Result<(), AuthorizeError>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    tokio::time::timeout(FIRST_LIST, store.wait_until_ready())
        .await
        .map_err(|_| AuthorizeError::Unknown("not listed yet".to_owned()))?
        .map_err(|e| AuthorizeError::Unknown(e.to_string()))
}

/// The watches that fill a [`Tenancy`]'s caches (the LogSubscriptions' is
/// the controller's own watch).
pub struct Watches {
    policies: Writer<LogSubscriptionPolicy>,
    namespaces: Option<Writer<PartialObjectMeta<Namespace>>>,
    /// Filled by the controller's watch of LogSubscriptions.
    pub subscriptions: Writer<LogSubscription>,
}

/// A [`Tenancy`] and the watches that fill it. A controller of one namespace
/// reads that namespace's labels every `ttl`; one of all namespaces watches them.
pub fn tenancy(client: &kube::Client, one: Option<&str>, ttl: Duration) -> (Tenancy, Watches) {
    let (policies, policy_writer) = reflector::store();
    let (subscriptions, subscription_writer) = reflector::store();
    let (namespaces, namespace_writer) = match one {
        Some(_) => (
            Namespaces::One {
                client: client.clone(),
                ttl,
                read: tokio::sync::Mutex::new(None),
            },
            None,
        ),
        None => {
            let (reader, writer) = reflector::store();
            (Namespaces::Watched(reader), Some(writer))
        }
    };
    (
        Tenancy::new(policies, namespaces, subscriptions),
        Watches {
            policies: policy_writer,
            namespaces: namespace_writer,
            subscriptions: subscription_writer,
        },
    )
}

impl Watches {
    /// The watches as streams: the first yields whenever a policy is created,
    /// changed or deleted (and after each full list), when every
    /// LogSubscription is authorized again; the second, when namespaces are
    /// watched, yields each namespace whose labels changed (each once when
    /// first listed).
    pub fn into_streams(
        self,
        client: &kube::Client,
    ) -> (
        BoxStream<'static, ()>,
        Option<BoxStream<'static, String>>,
        Writer<LogSubscription>,
    ) {
        let policies = watcher(
            Api::<LogSubscriptionPolicy>::all(client.clone()),
            watcher::Config::default().any_semantic(),
        )
        .default_backoff()
        .reflect(self.policies)
        .filter_map(|event| {
            futures::future::ready(match event {
                Ok(
                    watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone,
                ) => Some(()),
                _ => None,
            })
        })
        .boxed();
        let namespaces = self.namespaces.map(|writer| {
            watcher(
                Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
                watcher::Config::default().any_semantic(),
            )
            .default_backoff()
            .reflect(writer)
            .applied_objects()
            .predicate_filter(
                |ns: &PartialObjectMeta<Namespace>| Some(super::reconcile::hash_of(ns.labels())),
                Default::default(),
            )
            .filter_map(|ns| futures::future::ready(ns.ok().map(|ns| ns.name_any())))
            .boxed()
        });
        (policies, namespaces, self.subscriptions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(namespace: &str, name: &str) -> LogSubscription {
        use crate::controller::fixtures::{into_shared, subscription_in};
        subscription_in(namespace, name, into_shared("logs"))
    }

    #[test]
    fn an_earlier_name_can_collide_only_where_another_cut_is_possible() {
        assert!(legacy_name_can_collide(&named("a", "b-c")), "a-b/c");
        assert!(legacy_name_can_collide(&named("a-b", "c")), "a/b-c");
        assert!(!legacy_name_can_collide(&named("team", "app")));
        assert!(
            !legacy_name_can_collide(&named("a", "-c")),
            "no namespace ends with -"
        );
    }
}
