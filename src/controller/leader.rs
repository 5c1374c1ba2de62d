//! Leader election on a `coordination.k8s.io` Lease, as client-go does it: a
//! lease is expired when its resourceVersion has not changed for a lease
//! duration as this replica observes it (no trust in other clocks), and every
//! write carries the resourceVersion read, so two replicas never both lead.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::time::Instant;

/// One replica's part in the election.
pub struct Election {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// The resourceVersion last seen, and since when.
    observed: Option<(String, Instant)>,
}

/// Why leadership ended.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    /// The lease could not be renewed within its duration.
    #[error("lost the leader lease {0}: not renewed within its duration")]
    Lost(String),
}

impl Election {
    /// Competes for the Lease `namespace/name` as `identity`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Election {
        Election {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
            observed: None,
        }
    }

    fn seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX)
    }

    /// Waits until this replica leads; returns the lease it holds.
    pub async fn acquire(&mut self) -> Lease {
        loop {
            match self.try_acquire().await {
                Ok(Some(lease)) => {
                    tracing::info!(lease = self.name, identity = self.identity, "leading");
                    return lease;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: cannot read or write the lease")
                }
            }
            tokio::time::sleep(self.duration / 4).await;
        }
    }

    async fn try_acquire(&mut self) -> Result<Option<Lease>, kube::Error> {
        // A read or write that hangs gives up in time to try again.
        let limit = self.duration / 4;
        match tokio::time::timeout(limit, self.attempt()).await {
            Ok(result) => result,
            Err(_) => Ok(None),
        }
    }

    async fn attempt(&mut self) -> Result<Option<Lease>, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return conflict_is_none(self.api.create(&PostParams::default(), &lease).await);
        };
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let since = match &self.observed {
            Some((seen, since)) if *seen == version => *since,
            _ => Instant::now(),
        };
        self.observed = Some((version, since));
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.as_deref().unwrap_or_default();
        let ours = holder == self.identity;
        let free = holder.is_empty() || since.elapsed() >= self.duration;
        if !ours && !free {
            return Ok(None);
        }
        if !ours {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.acquire_time = Some(now.clone());
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(self.seconds());
        spec.renew_time = Some(now);
        conflict_is_none(
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await,
        )
    }

    /// The renew deadline: a leader that has not renewed for this long stops
    /// leading, well before the lease (a third longer) can be taken over.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    /// Renews the lease every third of its duration until a renewal fails to
    /// come back before the renew deadline; then leadership is lost. A call
    /// that hangs (an API server that accepts and never answers) counts as
    /// failed at the deadline, not when it returns.
    pub async fn hold(&self, mut lease: Lease) -> ElectionError {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.duration / 3).await;
            if let Some(spec) = lease.spec.as_mut() {
                spec.renew_time = Some(MicroTime(Timestamp::now()));
            }
            let deadline = renewed + self.renew_deadline();
            let params = PostParams::default();
            let renewal = self.api.replace(&self.name, &params, &lease);
            match tokio::time::timeout_at(deadline, renewal).await {
                Ok(Ok(updated)) => {
                    lease = updated;
                    renewed = Instant::now();
                }
                // Someone else wrote it: it is theirs now.
                Ok(Err(kube::Error::Api(s))) if s.code == 409 => {
                    return ElectionError::Lost(self.name.clone());
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "leader election: cannot renew the lease")
                }
                Err(_) => tracing::warn!("leader election: the renewal did not come back"),
            }
            // Stop well before another replica may take it over.
            if renewed.elapsed() >= self.renew_deadline() {
                return ElectionError::Lost(self.name.clone());
            }
        }
    }

    /// Gives the lease up, so a standby takes over without waiting for it to expire.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        if let Err(e) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(error = %e, "leader election: cannot release the lease");
        }
    }
}

fn conflict_is_none(result: Result<Lease, kube::Error>) -> Result<Option<Lease>, kube::Error> {
    match result {
        Ok(lease) => Ok(Some(lease)),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
        Err(e) => Err(e),
    }
}
