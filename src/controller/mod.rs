//! The controller: makes AWS and the cluster match each LogSubscription.
//!
//! A reconcile validates the spec, authorizes it against the
//! LogSubscriptionPolicies, observes the stream, the log groups and the
//! workers, plans the writes (pure), applies them and writes the status
//! (server-side apply). AWS is observed at most once per resync period for an
//! unchanged LogSubscription; the reconciles between only refresh the workers'
//! state and the delivery health they publish.
//!
//! One module per stage: `validate` (the spec and its region, `validate::Invalid`),
//! `authorize` with `tenancy` (the policies, `tenancy::AuthorizeError`),
//! `observe` (reads only), `plan` (pure: the stream's step, the filters'
//! actions, whether the workers' objects are applied), `apply` (the writes,
//! `apply::ApplyError`) and `status` (pure: the checks, rows and Events from
//! what happened). `sync` runs observe → plan → apply for AWS, `reconcile`
//! runs the stages in order; `scenarios` tests the whole of it against a
//! mocked API server and an in-memory AWS account (`fixtures`).

pub(crate) mod apply;
#[cfg(test)]
mod attack_regions;
#[cfg(test)]
mod attack_scenarios;
pub mod authorize;
pub(crate) mod cleanup;
pub mod error;
#[cfg(test)]
mod fixtures;
pub(crate) mod leader;
pub(crate) mod observe;
pub mod plan;
pub(crate) mod reconcile;
pub mod resources;
pub mod run;
#[cfg(test)]
mod scenarios;
pub(crate) mod status;
pub(crate) mod sync;
pub(crate) mod tenancy;
pub(crate) mod validate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_smithy_runtime_api::client::interceptors::SharedInterceptor;
use k8s_openapi::api::core::v1::EnvVar;
use kube::runtime::events::Recorder;

use crate::api::LogGroupStatus;
use crate::aws::CallCounter;
use crate::aws::kinesis::{StreamInfo, Streams};
use crate::aws::logs::Logs;
use crate::retry::Backoff;
use crate::telemetry::ControllerMetrics;
use resources::workload::Runtime;
use status::{Check, ShardState};

/// No per-service settings from the environment.
#[derive(Debug)]
struct NoServiceConfig;

impl aws_types::service_config::LoadServiceConfig for NoServiceConfig {
    fn load_config(&self, _: aws_types::service_config::ServiceConfigKey<'_>) -> Option<String> {
        None
    }
}

/// The controller's settings, from its command line.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The image the worker pods run (the controller's own).
    pub image: String,
    /// Where the workers serve their admin endpoints.
    pub worker_admin_addr: std::net::SocketAddr,
    /// The region of LogSubscriptions that name none; the default chain's when absent.
    pub region: Option<String>,
    /// An endpoint for Kinesis and CloudWatch Logs (compatible APIs); also given
    /// to the workers.
    pub aws_endpoint: Option<String>,
    /// How often an unchanged LogSubscription's AWS resources are checked again.
    pub resync: Duration,
    /// How often the status is refreshed from the workers' leases.
    pub status_interval: Duration,
    /// The one namespace watched, or all.
    pub namespace: Option<String>,
    /// The label selector of the LogSubscriptions reconciled, or all.
    pub selector: Option<String>,
    /// The ClusterRole bound to the workers (the controller may bind no other).
    pub worker_role: String,
    /// How long a LogSubscription that no policy selects any more keeps
    /// running before its filters come off.
    pub withdraw_grace: Duration,
    /// How many LogSubscriptions are reconciled at once.
    pub concurrency: u16,
    /// The controller's own identity, learnt from the API server at start.
    pub identity: Option<k8s_openapi::api::rbac::v1::Subject>,
}

impl Settings {
    /// How every worker runs: the controller's image, its AWS endpoint (before
    /// the spec's own environment), its admin address.
    pub fn worker_runtime(&self) -> Runtime {
        // STS too: the workers assume a LogSubscription's role there.
        let env = self
            .aws_endpoint
            .iter()
            .flat_map(|e| {
                ["AWS_ENDPOINT_URL_KINESIS", "AWS_ENDPOINT_URL_STS"].map(|name| (name, e))
            })
            .map(|(name, e)| EnvVar {
                name: name.to_owned(),
                value: Some(e.clone()),
                ..EnvVar::default()
            })
            .collect();
        Runtime {
            image: self.image.clone(),
            env,
            admin_addr: self.worker_admin_addr,
            worker_role: self.worker_role.clone(),
            controller: self.identity.clone(),
        }
    }
}

/// Everything a reconcile needs.
pub struct Context {
    /// The Kubernetes client, with the controller's identity.
    pub client: kube::Client,
    /// The command line's settings.
    pub settings: Settings,
    /// AWS clients per region.
    pub aws: Aws,
    /// Metrics.
    pub metrics: Arc<ControllerMetrics>,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// What the controller remembers of each LogSubscription between reconciles.
    pub memory: Memory,
    /// The LogSubscriptionPolicies and namespace labels.
    pub tenancy: tenancy::Tenancy,
    /// The workers' objects, from the controller's watches of them.
    pub owned: observe::Owned,
    /// At most `settings.concurrency` reconciles work at once; the others
    /// wait their turn in the order they came (see [`Context::slots`]).
    pub slots: tokio::sync::Semaphore,
}

impl Context {
    /// A semaphore of `concurrency` permits, handed out first come, first
    /// served. kube-runtime's own limit keeps the reconciles it cannot start
    /// yet in a set and starts any of them when a slot frees: under a load
    /// the controller cannot keep up with (thousands of LogSubscriptions
    /// refreshed and resynced), some new ones were never started at all.
    pub fn slots(concurrency: u16) -> tokio::sync::Semaphore {
        tokio::sync::Semaphore::new(usize::from(concurrency.max(1)))
    }
}

/// CloudWatch Logs and Kinesis clients per region, sharing one configuration,
/// one call counter and a short-lived cache of existing streams' descriptions
/// (many LogSubscriptions may share one stream).
pub struct Aws {
    base: SdkConfig,
    endpoint: Option<String>,
    counter: CallCounter,
    interceptors: Vec<SharedInterceptor>,
    clients: Mutex<HashMap<Scope, (Logs, Streams)>>,
    described: Mutex<HashMap<(Scope, String), (Instant, StreamInfo)>>,
}

impl Aws {
    /// Clients from `base`, with `endpoint` when set, counting calls with `counter`.
    pub fn new(base: SdkConfig, endpoint: Option<String>, counter: CallCounter) -> Aws {
        Aws {
            base,
            endpoint,
            counter,
            interceptors: Vec::new(),
            clients: Mutex::new(HashMap::new()),
            described: Mutex::new(HashMap::new()),
        }
    }

    /// Also runs `interceptor` on every CloudWatch Logs and Kinesis call (the
    /// unit tests answer calls so).
    pub fn intercepted_by(mut self, interceptor: SharedInterceptor) -> Aws {
        self.interceptors.push(interceptor);
        self
    }

    /// The region of a LogSubscription that names `region` (or none): its
    /// own, else the controller's default; never a guess.
    pub fn region(&self, region: Option<&str>) -> Option<String> {
        region
            .map(str::to_owned)
            .or_else(|| self.base.region().map(ToString::to_string))
    }

    /// The clients of `scope`: its region, as the role it names (assumed
    /// from the controller's own identity, its credentials cached by the
    /// clients and refreshed before they expire) or as the controller.
    pub async fn clients(&self, scope: &Scope) -> (Logs, Streams) {
        if let Some(found) = self.lock_clients().get(scope) {
            return found.clone();
        }
        let region = aws_config::Region::new(scope.region.clone());
        let config = match &scope.role {
            None => self.base.clone(),
            Some(role) => {
                let mut sts = self.base.to_builder().region(region.clone());
                if let Some(endpoint) = &self.endpoint {
                    // Without the environment's per-service settings, which
                    // would outrank it (AWS_ENDPOINT_URL_STS): the endpoint
                    // given goes for STS as for CloudWatch Logs and Kinesis.
                    sts = sts.endpoint_url(endpoint).service_config(NoServiceConfig);
                }
                let identity = &role.identity;
                crate::aws::assuming(
                    &self.base,
                    &sts.build(),
                    &identity.role_arn,
                    identity.external_id.as_deref(),
                    &role.session,
                )
                .await
            }
        };
        let mut logs = aws_sdk_cloudwatchlogs::config::Builder::from(&config)
            .region(region.clone())
            .interceptor(self.counter.clone());
        let mut kinesis = aws_sdk_kinesis::config::Builder::from(&config)
            .region(region)
            .interceptor(self.counter.clone());
        for interceptor in &self.interceptors {
            logs.push_interceptor(interceptor.clone());
            kinesis.push_interceptor(interceptor.clone());
        }
        if let Some(endpoint) = &self.endpoint {
            logs = logs.endpoint_url(endpoint);
            kinesis = kinesis.endpoint_url(endpoint);
        }
        let built = (
            Logs::new(aws_sdk_cloudwatchlogs::Client::from_conf(logs.build())),
            Streams::new(aws_sdk_kinesis::Client::from_conf(kinesis.build())),
        );
        self.lock_clients()
            .entry(scope.clone())
            .or_insert(built)
            .clone()
    }

    /// Drops the clients of a scope of its own (a role's session), once
    /// its LogSubscription is gone.
    pub fn forget(&self, scope: &Scope) {
        if scope.role.is_some() {
            self.lock_clients().remove(scope);
            let mut described = self.described.lock().unwrap_or_else(|e| e.into_inner());
            described.retain(|(s, _), _| s != scope);
        }
    }

    fn lock_clients(&self) -> std::sync::MutexGuard<'_, HashMap<Scope, (Logs, Streams)>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A cached description of the existing stream `key` in `scope`, younger than `ttl`.
    pub fn cached_stream(&self, scope: &Scope, key: &str, ttl: Duration) -> Option<StreamInfo> {
        let described = self.described.lock().unwrap_or_else(|e| e.into_inner());
        described
            .get(&(scope.clone(), key.to_owned()))
            .filter(|(at, _)| at.elapsed() < ttl)
            .map(|(_, info)| info.clone())
    }

    /// Remembers the description of the existing stream `key` in `scope`.
    pub fn cache_stream(&self, scope: &Scope, key: &str, info: &StreamInfo) {
        let mut described = self.described.lock().unwrap_or_else(|e| e.into_inner());
        described.retain(|_, (at, _)| at.elapsed() < Duration::from_secs(3600));
        described.insert(
            (scope.clone(), key.to_owned()),
            (Instant::now(), info.clone()),
        );
    }
}

/// Where a LogSubscription's AWS calls go, and as whom: its region, and the
/// role it names (`spec.aws`), else the controller's own identity. Streams
/// and log groups of one name in two scopes are two different things.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scope {
    /// The region.
    pub region: String,
    /// The role assumed for the calls.
    pub role: Option<AssumedRole>,
}

impl Scope {
    /// `lsub`'s calls in `region`.
    pub fn of(lsub: &crate::api::LogSubscription, region: String) -> Scope {
        let role = lsub.spec.aws.as_ref().map(|identity| AssumedRole {
            identity: identity.clone(),
            session: session_name(lsub, ""),
        });
        Scope { region, role }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.role {
            Some(role) => write!(f, "{} as {}", self.region, role.identity.role_arn),
            None => f.write_str(&self.region),
        }
    }
}

/// A role to assume, and the session name its calls carry (what CloudTrail
/// shows beside each of them).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AssumedRole {
    /// The role and its external ID.
    pub identity: crate::api::AwsIdentity,
    /// The session name.
    pub session: String,
}

/// The region an ARN names (`arn:aws:kinesis:<region>:…`).
pub fn arn_region(arn: &str) -> Option<&str> {
    arn.split(':').nth(3).filter(|r| !r.is_empty())
}

/// The session name of `lsub`'s assumed role: `<namespace>.<name>` (no
/// namespace holds a dot) and `suffix`, within STS's 64 characters.
pub fn session_name(lsub: &crate::api::LogSubscription, suffix: &str) -> String {
    use kube::ResourceExt;
    let mut name = format!(
        "{}.{}",
        lsub.namespace().unwrap_or_default(),
        lsub.name_any()
    );
    name.truncate(64 - suffix.len());
    name + suffix
}

/// What was last seen of a LogSubscription's AWS resources.
#[derive(Clone, Debug)]
pub struct AwsView {
    /// `StreamReady`.
    pub stream: Check,
    /// The stream's ARN once known.
    pub stream_arn: Option<String>,
    /// When the stream was created, once known.
    pub stream_created: Option<i64>,
    /// Whether records can be put and read.
    pub stream_usable: bool,
    /// `SubscriptionFilterReady`.
    pub filters: Check,
    /// The filter state of each selected log group.
    pub groups: Vec<LogGroupStatus>,
    /// How many log groups are selected.
    pub selected: usize,
}

/// What the controller remembers of one LogSubscription.
#[derive(Clone, Debug)]
pub struct Memo {
    /// The generation AWS was last synced for.
    pub generation: Option<i64>,
    /// The policies (name, version) that permitted it when AWS was last synced.
    pub permitted: Option<Vec<(String, String)>>,
    /// When AWS was last synced.
    pub synced: Option<Instant>,
    /// When the log group selection was last resolved, and what it selected.
    pub scanned: Option<(Instant, Vec<String>)>,
    /// The last AWS view.
    pub aws: Option<AwsView>,
    /// Backoff of transient failures, reset on success.
    pub backoff: Backoff,
    /// When to look at AWS again early (a transient failure, a stream in transition).
    pub retry_at: Option<Instant>,
    /// Each shard lease's resourceVersion, and since when it has been seen.
    pub leases: HashMap<String, (String, Instant)>,
    /// The managed stream (ARN) found tagged with this LogSubscription's UID.
    pub owned_stream: Option<String>,
    /// Where (region, role) AWS was last synced: its filters are there.
    pub scope: Option<Scope>,
    /// Since when no policy has selected it (while it still runs).
    pub unselected_since: Option<Instant>,
    /// Filters left where it was before it moved to another region or role.
    pub left_behind: Vec<LeftBehind>,
    /// When its workers' objects were last all applied.
    pub workers_asserted: Option<Instant>,
}

/// Filters that could not yet be taken off where a LogSubscription was
/// before it moved (another region or role): tried again at each sync, the
/// first one due at `retry_at`.
#[derive(Clone, Debug)]
pub struct LeftBehind {
    /// Where they are.
    pub scope: Scope,
    /// The stream they send to.
    pub stream_arn: String,
    /// The log groups that carry them.
    pub groups: Vec<String>,
    /// When to try again at the latest.
    pub retry_at: Instant,
    /// Backoff between tries.
    pub backoff: Backoff,
}

impl Default for Memo {
    fn default() -> Self {
        Memo {
            generation: None,
            permitted: None,
            synced: None,
            scanned: None,
            aws: None,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
            retry_at: None,
            leases: HashMap::new(),
            owned_stream: None,
            scope: None,
            unselected_since: None,
            left_behind: Vec::new(),
            workers_asserted: None,
        }
    }
}

/// Per-LogSubscription memory, by UID. Lost on restart, which costs one full
/// sync of each LogSubscription.
#[derive(Default)]
pub struct Memory(Mutex<HashMap<String, Memo>>);

impl Memory {
    /// The memo of `uid` (a fresh one when unknown).
    pub fn get(&self, uid: &str) -> Memo {
        let memory = self.0.lock().unwrap_or_else(|e| e.into_inner());
        memory.get(uid).cloned().unwrap_or_default()
    }

    /// Stores the memo of `uid`.
    pub fn put(&self, uid: &str, memo: Memo) {
        let mut memory = self.0.lock().unwrap_or_else(|e| e.into_inner());
        memory.insert(uid.to_owned(), memo);
    }

    /// Forgets `uid` (deleted).
    pub fn forget(&self, uid: &str) {
        let mut memory = self.0.lock().unwrap_or_else(|e| e.into_inner());
        memory.remove(uid);
    }

    /// The shards of `uid`'s leases, each with how long this controller has
    /// seen its lease unchanged. That is remembered between reconciles; a
    /// lease first seen (after a restart of the controller, or a new leader)
    /// counts from its holder's last renewal, less a lease duration for the
    /// clocks' difference, so a worker that hung before is not taken for live.
    pub fn shard_states(&self, uid: &str, leases: Vec<observe::LeaseSeen>) -> Vec<ShardState> {
        let now = Instant::now();
        let wall = k8s_openapi::jiff::Timestamp::now();
        let unfinished: std::collections::HashSet<String> = leases
            .iter()
            .filter(|l| !l.finished)
            .map(|l| l.shard.clone())
            .collect();
        let mut memory = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let memo = memory.entry(uid.to_owned()).or_default();
        let mut seen = HashMap::with_capacity(leases.len());
        let states = leases
            .into_iter()
            .map(|lease| {
                let since = match memo.leases.get(&lease.name) {
                    Some((version, since)) if *version == lease.resource_version => *since,
                    Some(_) => now,
                    None => {
                        let silent = lease
                            .renewed
                            .and_then(|at| wall.duration_since(at).try_into().ok())
                            .map_or(Duration::ZERO, |d: Duration| {
                                d.saturating_sub(lease.duration)
                            });
                        now.checked_sub(silent).unwrap_or(now)
                    }
                };
                // A child shard nobody holds while a parent is still read waits
                // its turn: it is not unread.
                let waiting =
                    lease.holder.is_none() && lease.parents.iter().any(|p| unfinished.contains(p));
                seen.insert(lease.name, (lease.resource_version, since));
                ShardState {
                    shard: lease.shard,
                    holder: lease.holder,
                    unchanged: now.saturating_duration_since(since),
                    duration: lease.duration,
                    finished: lease.finished,
                    waiting,
                    health: lease.health,
                }
            })
            .collect();
        memo.leases = seen;
        states
    }

    /// The next wait of `uid`'s backoff.
    pub fn backoff(&self, uid: &str) -> Duration {
        let mut memory = self.0.lock().unwrap_or_else(|e| e.into_inner());
        memory
            .entry(uid.to_owned())
            .or_default()
            .backoff
            .next_wait()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(
        name: &str,
        renewed_ago: u64,
        holder: Option<&str>,
        parents: &[&str],
    ) -> observe::LeaseSeen {
        observe::LeaseSeen {
            name: name.into(),
            resource_version: "1".into(),
            shard: name.into(),
            holder: holder.map(str::to_owned),
            duration: Duration::from_secs(15),
            finished: false,
            parents: parents.iter().map(|p| (*p).to_owned()).collect(),
            renewed: Some(
                k8s_openapi::jiff::Timestamp::now()
                    - k8s_openapi::jiff::SignedDuration::from_secs(renewed_ago as i64),
            ),
            health: None,
        }
    }

    /// A controller that has just started (or just become leader) does not
    /// take a lease its holder stopped renewing long ago for live; nor a
    /// child waiting for its parent for an unread shard.
    #[test]
    fn leases_first_seen_count_from_their_last_renewal() {
        let memory = Memory::default();
        let states = memory.shard_states(
            "uid",
            vec![
                lease("hung", 45, Some("pod-a"), &[]),
                lease("live", 3, Some("pod-a"), &[]),
                lease("child", 45, None, &["live"]),
            ],
        );
        assert!(
            states[0].unchanged >= Duration::from_secs(29),
            "{:?}",
            states[0].unchanged
        );
        assert!(states[1].unchanged < Duration::from_secs(1));
        assert!(states[2].waiting && !states[0].waiting);
        assert_eq!(status::delivering(&states, 1).reason(), "LeasesExpired");
        // Seen again unchanged: the time goes on from there.
        let again = memory.shard_states("uid", vec![lease("hung", 45, Some("pod-a"), &[])]);
        assert!(again[0].unchanged >= states[0].unchanged);
    }
}
