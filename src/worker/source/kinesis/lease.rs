//! Shard leases stored as `coordination.k8s.io/v1` Leases in the subscription's
//! namespace, one per shard of one stream, labelled with the subscription and
//! the stream: checkpoints belong to the stream they were read from, so a
//! subscription switched to another stream, or reading a stream deleted and
//! created again under the same name, starts leases of its own.
//!
//! Every write replaces the Lease with the `resourceVersion` this worker last saw,
//! so a write after someone else took the lease fails with a conflict: a worker
//! that lost a lease cannot checkpoint it (fencing). Expiry is judged by how long
//! this worker has seen a lease unchanged, not by the holder's clock.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use super::balance::LeaseView;
use crate::contract::lease::{
    CHECKPOINT_ANNOTATION, PARENTS_ANNOTATION, SHARD_ANNOTATION, SHARD_END, STREAM_ARN_ANNOTATION,
    STREAM_LABEL, SUBSCRIPTION_LABEL, stream_key,
};
use crate::contract::{Checkpoint, ShardLease};

/// Lease store errors.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Someone else wrote the lease since this worker read it: it is not ours.
    #[error("lease {0} was taken by another worker")]
    Lost(String),
    /// The API server refused or failed the call.
    #[error("lease API call failed: {0}")]
    Api(#[from] kube::Error),
}

/// The leases of one subscription's stream, seen by one worker.
pub struct LeaseStore {
    api: Api<Lease>,
    subscription: String,
    /// The stream's [`stream_key`], and its ARN and creation time.
    stream: String,
    stream_arn: String,
    worker: String,
    duration: Duration,
    /// When this worker first saw each lease at its current resourceVersion.
    observed: HashMap<String, (String, Instant)>,
}

impl LeaseStore {
    /// A store for `subscription`'s leases of the stream `stream_arn` (created
    /// at `stream_created`) in `namespace`, acting as `worker`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        subscription: &str,
        (stream_arn, stream_created): (&str, Option<i64>),
        worker: &str,
        duration: Duration,
    ) -> LeaseStore {
        LeaseStore {
            api: Api::namespaced(client, namespace),
            subscription: subscription.to_owned(),
            stream: stream_key(stream_arn, stream_created),
            stream_arn: stream_arn.to_owned(),
            worker: worker.to_owned(),
            duration,
            observed: HashMap::new(),
        }
    }

    /// The Lease name of a shard: `<subscription>-<stream key>-<shard id>`,
    /// lowercased.
    pub fn lease_name(&self, shard_id: &str) -> String {
        format!("{}-{}-{}", self.subscription, self.stream, shard_id).to_lowercase()
    }

    /// Every lease of the subscription's stream, noting when each last changed.
    pub async fn list(&mut self) -> Result<Vec<ShardLease>, LeaseError> {
        let selector = format!(
            "{SUBSCRIPTION_LABEL}={},{STREAM_LABEL}={}",
            self.subscription, self.stream
        );
        let leases = self
            .api
            .list(&ListParams::default().labels(&selector))
            .await?;
        let now = Instant::now();
        let mut seen = HashMap::new();
        for lease in &leases.items {
            let name = lease.metadata.name.clone().unwrap_or_default();
            let rv = lease.metadata.resource_version.clone().unwrap_or_default();
            let since = match self.observed.get(&name) {
                Some((old, since)) if *old == rv => *since,
                _ => now,
            };
            seen.insert(name, (rv, since));
        }
        self.observed = seen;
        Ok(leases
            .items
            .into_iter()
            .map(|lease| ShardLease { lease })
            .collect())
    }

    /// Whether a lease's holder has not renewed it for a lease duration, as this
    /// worker observed it (a lease without holder is free, not expired).
    pub fn expired(&self, lease: &ShardLease) -> bool {
        lease.holder().is_some_and(|holder| {
            holder != self.worker
                && self
                    .observed
                    .get(lease.name())
                    .is_some_and(|(_, since)| since.elapsed() > self.duration)
        })
    }

    /// The leases as the balancer sees them.
    pub fn views(&self, leases: &[ShardLease]) -> Vec<LeaseView> {
        leases
            .iter()
            .map(|l| LeaseView {
                shard_id: l.shard_id().to_owned(),
                parents: l.parents(),
                owner: l.holder().map(str::to_owned),
                expired: self.expired(l),
                finished: l.checkpoint() == Checkpoint::ShardEnd,
            })
            .collect()
    }

    /// The labels every lease of this store carries.
    fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (SUBSCRIPTION_LABEL.to_owned(), self.subscription.clone()),
            (STREAM_LABEL.to_owned(), self.stream.clone()),
            (
                "app.kubernetes.io/managed-by".to_owned(),
                "logsub".to_owned(),
            ),
        ])
    }

    /// Creates the lease of a newly discovered shard; an existing one is
    /// kept. One that exists under its name without the labels this store
    /// lists by (edited by hand) gets them back: else it would be neither
    /// listed nor made again, and its shard never read.
    pub async fn ensure(&self, shard_id: &str, parents: &[String]) -> Result<(), LeaseError> {
        let annotations = BTreeMap::from([
            (SHARD_ANNOTATION.to_owned(), shard_id.to_owned()),
            (PARENTS_ANNOTATION.to_owned(), parents.join(",")),
            (STREAM_ARN_ANNOTATION.to_owned(), self.stream_arn.clone()),
        ]);
        let name = self.lease_name(shard_id);
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(self.labels()),
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                lease_duration_seconds: Some(self.duration_seconds()),
                ..LeaseSpec::default()
            }),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let Some(mut existing) = self.api.get_opt(&name).await? else {
                    return Ok(());
                };
                let labels = existing.metadata.labels.get_or_insert_with(BTreeMap::new);
                let missing = self
                    .labels()
                    .into_iter()
                    .any(|(k, v)| labels.get(&k) != Some(&v));
                if missing {
                    tracing::warn!(lease = %name, "a lease lost its labels; putting them back");
                    labels.extend(self.labels());
                    match self
                        .api
                        .replace(&name, &PostParams::default(), &existing)
                        .await
                    {
                        Ok(_) => {}
                        // Someone wrote it meanwhile: looked at again next round.
                        Err(kube::Error::Api(status)) if status.code == 409 => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Takes a lease (free, expired, or stolen), as read at `lease`'s version.
    pub async fn take(&self, lease: &ShardLease) -> Result<ShardLease, LeaseError> {
        self.write(
            lease,
            |spec| {
                let now = MicroTime(Timestamp::now());
                spec.holder_identity = Some(self.worker.clone());
                spec.acquire_time = Some(now.clone());
                spec.renew_time = Some(now);
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                spec.lease_duration_seconds = Some(self.duration_seconds());
            },
            None,
        )
        .await
    }

    /// Renews a lease this worker holds.
    pub async fn renew(&self, lease: &ShardLease) -> Result<ShardLease, LeaseError> {
        self.held(lease)?;
        self.write(
            lease,
            |spec| spec.renew_time = Some(MicroTime(Timestamp::now())),
            None,
        )
        .await
    }

    /// Stores a checkpoint, renewing the lease with it. Fails with [`LeaseError::Lost`]
    /// when the lease changed hands since this worker last wrote it.
    pub async fn checkpoint(
        &self,
        lease: &ShardLease,
        checkpoint: &Checkpoint,
    ) -> Result<ShardLease, LeaseError> {
        self.held(lease)?;
        let value = match checkpoint {
            Checkpoint::None => None,
            Checkpoint::At(seq) => Some(seq.as_str().to_owned()),
            Checkpoint::ShardEnd => Some(SHARD_END.to_owned()),
        };
        self.write(
            lease,
            |spec| spec.renew_time = Some(MicroTime(Timestamp::now())),
            value,
        )
        .await
    }

    /// Gives a lease up (on shutdown, after the last checkpoint).
    pub async fn release(&self, lease: &ShardLease) -> Result<ShardLease, LeaseError> {
        self.held(lease)?;
        self.write(
            lease,
            |spec| {
                spec.holder_identity = None;
                spec.renew_time = None;
            },
            None,
        )
        .await
    }

    /// Deletes the lease of a shard that no longer exists.
    pub async fn delete(&self, lease: &ShardLease) -> Result<(), LeaseError> {
        let params = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                resource_version: Some(lease.resource_version().to_owned()),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(lease.name(), &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                Err(LeaseError::Lost(lease.name().to_owned()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The duration as the Lease records it: whole seconds, at least one (the
    /// API server rejects 0); expiry itself is judged at full precision.
    fn duration_seconds(&self) -> i32 {
        self.duration
            .as_secs_f64()
            .ceil()
            .clamp(1.0, f64::from(i32::MAX)) as i32
    }

    fn held(&self, lease: &ShardLease) -> Result<(), LeaseError> {
        if lease.holder() == Some(self.worker.as_str()) {
            Ok(())
        } else {
            Err(LeaseError::Lost(lease.name().to_owned()))
        }
    }

    /// Replaces the lease at the version read; a conflict means it is lost.
    async fn write(
        &self,
        lease: &ShardLease,
        change: impl FnOnce(&mut LeaseSpec),
        checkpoint: Option<String>,
    ) -> Result<ShardLease, LeaseError> {
        let mut next = lease.lease.clone();
        change(next.spec.get_or_insert_with(LeaseSpec::default));
        if let Some(checkpoint) = checkpoint {
            next.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(CHECKPOINT_ANNOTATION.to_owned(), checkpoint);
        }
        match self
            .api
            .replace(lease.name(), &PostParams::default(), &next)
            .await
        {
            Ok(lease) => Ok(ShardLease { lease }),
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {
                Err(LeaseError::Lost(lease.name().to_owned()))
            }
            Err(e) => Err(e.into()),
        }
    }
}
