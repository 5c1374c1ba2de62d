//! `logsub controller`: the admin server, leader election, then the reconcile
//! loop until SIGTERM or lost leadership.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use kube::api::{Api, ListParams};
use kube::runtime::events::{Recorder, Reporter};
use prometheus_client::registry::Registry;

use super::leader::{Election, ElectionError};
use super::{Aws, Context, Memory, Settings, reconcile};
use crate::api::LogSubscription;
use crate::aws::CallCounter;
use crate::telemetry::{self, ControllerMetrics, Readiness};

/// How the controller process runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// What reconciles need.
    pub settings: Settings,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub admin_addr: SocketAddr,
    /// The leader Lease `namespace/name`, or `None` to run without election
    /// (a single replica).
    pub leader_lease: Option<(String, String)>,
    /// How long the leader Lease lasts unrenewed.
    pub lease_duration: Duration,
    /// This replica's name on the Lease and on Events.
    pub identity: String,
}

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No Kubernetes configuration, or the API server cannot be reached.
    #[error("cannot reach the Kubernetes API server: {0}")]
    Kube(#[from] kube::Error),
    /// The LogSubscription CRD is not installed (or not readable).
    #[error(
        "cannot list LogSubscriptions (is the CRD installed, and may this identity list them?): {0}"
    )]
    Crd(#[source] kube::Error),
    /// `--selector` is no label selector the API server accepts.
    #[error("--selector {0:?}: {1}")]
    Selector(String, #[source] kube::Error),
    /// The API server does not say who the controller is (SelfSubjectReview).
    #[error("cannot learn the controller's own identity (SelfSubjectReview): {0}")]
    Identity(String),
    /// The admin server's address could not be bound.
    #[error("cannot serve the admin endpoints: {0}")]
    Admin(#[from] std::io::Error),
    /// Another replica took over.
    #[error(transparent)]
    Election(#[from] ElectionError),
}

/// The controller's own RBAC subject, which it binds beside its workers
/// (through that binding it deletes their checkpoints). Asked of the API
/// server (SelfSubjectReview, GA since 1.28) until it answers: a binding
/// applied without it would take the controller out.
async fn who_am_i(client: &kube::Client) -> Result<k8s_openapi::api::rbac::v1::Subject, RunError> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let reviews: Api<SelfSubjectReview> = Api::all(client.clone());
    let mut backoff =
        crate::retry::Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
    for attempt in 1.. {
        match reviews
            .create(&Default::default(), &SelfSubjectReview::default())
            .await
        {
            Ok(review) => {
                let name = review
                    .status
                    .and_then(|s| s.user_info)
                    .and_then(|u| u.username)
                    .unwrap_or_default();
                if name.is_empty() {
                    return Err(RunError::Identity("the API server named no user".into()));
                }
                tracing::info!(identity = %name, "the controller's identity");
                return Ok(super::resources::rbac::subject(&name));
            }
            // Refused or not served: waiting will not change that.
            Err(kube::Error::Api(s)) if matches!(s.code, 403 | 404) => {
                return Err(RunError::Identity(s.to_string()));
            }
            Err(e) if attempt < 5 => {
                tracing::warn!(error = %e, "cannot learn the controller's identity yet");
                tokio::time::sleep(backoff.next_wait()).await;
            }
            Err(e) => return Err(RunError::Identity(e.to_string())),
        }
    }
    unreachable!("the loop returns")
}

/// Runs the controller until `shutdown` resolves (or leadership is lost).
pub async fn run(
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let shutdown = shutdown.boxed().shared();
    let client = kube::Client::try_default().await?;
    let metrics = Arc::new(ControllerMetrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let ready = Readiness::default();
    let bound = telemetry::serve(options.admin_addr, registry, ready.clone()).await?;
    tracing::info!(admin = %bound, "admin endpoints up");

    let lsubs: Api<LogSubscription> = match &options.settings.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    // Also refuses a selector that does not parse, before anything runs.
    let mut first = ListParams::default().limit(1);
    if let Some(selector) = &options.settings.selector {
        first = first.labels(selector);
    }
    lsubs
        .list_metadata(&first)
        .await
        .map_err(|e| match (&options.settings.selector, &e) {
            (Some(selector), kube::Error::Api(status)) if status.code == 400 => {
                RunError::Selector(selector.clone(), e)
            }
            _ => RunError::Crd(e),
        })?;
    let mut options = options;
    options.settings.identity = Some(who_am_i(&client).await?);
    // A standby is ready too: it is healthy and takes over when the leader goes.
    ready.set(true);

    // Loaded before leading (it may wait on the instance metadata service):
    // a leader's renewals start the moment it holds the lease.
    // CloudWatch Logs and Kinesis control calls answer in well under a
    // second: a hanging one is abandoned and the reconcile retried.
    let mut sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(
        crate::aws::timeouts(Duration::from_secs(10), Duration::from_secs(30)),
    );
    if let Some(region) = &options.settings.region {
        sdk = sdk.region(aws_config::Region::new(region.clone()));
    }
    let sdk = sdk.load().await;
    if sdk.region().is_none() {
        tracing::warn!(
            "no default AWS region (--region, AWS_REGION or a profile): LogSubscriptions without spec.region are InvalidSpec"
        );
    }
    let mut election = options.leader_lease.as_ref().map(|(namespace, name)| {
        Election::new(
            client.clone(),
            namespace,
            name,
            &options.identity,
            options.lease_duration,
        )
    });
    let lease = match election.as_mut() {
        Some(election) => {
            tokio::select! {
                lease = election.acquire() => Some(lease),
                () = shutdown.clone() => return Ok(()),
            }
        }
        None => None,
    };
    metrics.leader.set(1);
    let leading = metrics.leader.clone();

    let (tenancy, watches) = super::tenancy::tenancy(
        &client,
        options.settings.namespace.as_deref(),
        options.settings.status_interval,
    );
    let (owned, owned_writers) = super::observe::owned();
    let ctx = Arc::new(Context {
        tenancy,
        owned,
        slots: Context::slots(options.settings.concurrency),
        aws: Aws::new(
            sdk,
            options.settings.aws_endpoint.clone(),
            CallCounter(metrics.aws_calls.clone()),
        ),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "logsub-controller".into(),
                instance: Some(options.identity.clone()),
            },
        ),
        client,
        settings: options.settings,
        metrics,
        memory: Memory::default(),
    });
    let outcome = match (&election, lease) {
        (Some(election), Some(lease)) => {
            tokio::select! {
                () = reconcile::control(ctx, watches, owned_writers, shutdown.clone()) => Ok(()),
                lost = election.hold(lease) => Err(RunError::Election(lost)),
            }
        }
        _ => {
            reconcile::control(ctx, watches, owned_writers, shutdown).await;
            Ok(())
        }
    };
    if let (Some(election), Ok(())) = (&election, &outcome) {
        // A stalled API server must not hold the exit: the lease then
        // expires instead.
        if tokio::time::timeout(election.renew_deadline(), election.release())
            .await
            .is_err()
        {
            tracing::warn!("leader election: could not release the lease in time");
        }
    }
    leading.set(0);
    outcome
}
