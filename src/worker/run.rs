//! The worker process: a coordinator that keeps this worker's fair share of shard
//! leases on Kubernetes, one [`shard`] task per held shard, and the sink driver
//! they all deliver through.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::decode::cloudwatch::Limits;
use super::health::{ShardCounters, SinkHealth};
use super::shard::{self, HeldLease, Resume, ShardContext, ShardExit};
use super::sink::Sink;
use super::sink::batch::BatchLimits;
use super::sink::driver::{self, DriverLimits};
use super::sink::elasticsearch::sigv4::Signer;
use super::sink::elasticsearch::{Elasticsearch, SetupError};
use super::sink::s3::S3;
use super::sink::stdout::Stdout;
use super::source::kinesis::balance::{free_own_orphans, plan};
use super::source::kinesis::lease::{LeaseError, LeaseStore};
use super::source::kinesis::reader::{
    Read, ReadSender, ReaderLimits, ShardReader, reads_on_demand,
};
use super::transform::Compiled;
use crate::api::SigV4Service;
use crate::aws::AwsError;
use crate::aws::kinesis::{StartPosition, Stream};
use crate::contract::config::{ElasticsearchCredentials, OutputSink, StartAt, WorkerConfig};
use crate::contract::{Checkpoint, ShardHealth, ShardLease};
use crate::retry::Backoff;
use crate::telemetry::{BlockedLabels, Readiness, WorkerMetrics};

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Kubernetes could not be reached or refused the lease calls.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// Kinesis failed in a way retries do not fix.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// No Kubernetes client could be configured.
    #[error("no Kubernetes configuration: {0}")]
    Kube(#[from] kube::Error),
    /// The sink cannot be set up.
    #[error("sink: {0}")]
    Sink(#[from] SetupError),
    /// The admin endpoints cannot listen.
    #[error("admin endpoints: {0}")]
    Admin(std::io::Error),
}

struct Shared<S> {
    shard: Arc<ShardContext<S>>,
    config: WorkerConfig,
    stream: Stream,
    client: kube::Client,
    identity: String,
}

impl<S> Shared<S> {
    /// A lease store of its own for each task: each keeps its own observations.
    fn store(&self) -> LeaseStore {
        let subscription = &self.config.subscription;
        let duration = std::time::Duration::from(self.config.leases.duration);
        LeaseStore::new(
            self.client.clone(),
            &subscription.namespace,
            &subscription.name,
            (&self.config.stream_arn, self.config.stream_created),
            &self.identity,
            duration,
        )
    }
}

/// Runs the worker until `shutdown` resolves, then hands every lease back. The
/// admin endpoints (`/metrics`, `/healthz`, `/readyz`) listen on `admin`.
pub async fn run(
    config: WorkerConfig,
    identity: String,
    admin: std::net::SocketAddr,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    let metrics = Arc::new(WorkerMetrics::default());
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let ready = Readiness::default();
    let bound = crate::telemetry::serve(admin, registry, ready.clone())
        .await
        .map_err(WorkerError::Admin)?;
    tracing::info!(address = %bound, "admin endpoints listening");
    // The worker only reads and writes its Leases: no call of it may take
    // longer than a renewal interval's worth, or a stalled API server would
    // hold a shard past its lease (see `ShardTask::maintain` too). The
    // deadline is per call: the connector's read and write timeouts would
    // also end connections idle in the pool, and a renewal sent on one just
    // as it ends fails (kube-rs #1798).
    let mut kube_config = kube::Config::infer()
        .await
        .map_err(|e| WorkerError::Kube(kube::Error::InferConfig(e)))?;
    let call_timeout = Duration::from(config.leases.renew_interval).max(Duration::from_secs(2));
    kube_config.connect_timeout = Some(call_timeout);
    kube_config.read_timeout = None;
    kube_config.write_timeout = None;
    let client = kube::client::ClientBuilder::try_from(kube_config)?
        .with_layer(&tower::timeout::TimeoutLayer::new(call_timeout))
        .build();
    // A GetRecords answer is at most 10 MiB: 20 s is ample, and one that
    // hangs is abandoned and sent again rather than holding the shard.
    let mut aws = aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(
        crate::aws::timeouts(
            std::time::Duration::from_secs(20),
            std::time::Duration::from_secs(60),
        ),
    );
    if let Some(region) = &config.region {
        aws = aws.region(aws_config::Region::new(region.clone()));
    }
    let aws = aws.load().await;
    // The stream is read as the LogSubscription's role, when it names one;
    // the sink is written with the worker's own identity.
    let reader = match &config.assume_role {
        Some(role) => {
            crate::aws::assuming(
                &aws,
                &aws,
                &role.role_arn,
                role.external_id.as_deref(),
                &role.session_name,
            )
            .await
        }
        None => aws.clone(),
    };
    // The reader retries with its own backoff and says when reads stall;
    // retries inside the SDK would only hide a hanging endpoint longer.
    let kinesis = aws_sdk_kinesis::config::Builder::from(&reader)
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
        .build();
    let stream = Stream::new(
        aws_sdk_kinesis::Client::from_conf(kinesis),
        &config.stream_arn,
    );
    let parts = Parts {
        metrics,
        config,
        stream,
        client,
        identity,
        ready,
    };
    match &parts.config.sink {
        OutputSink::Stdout {} => work(parts, Arc::new(Stdout::new()), shutdown).await,
        OutputSink::Elasticsearch(config) => {
            let mut sink = Elasticsearch::new(config)?;
            if let Some(ElasticsearchCredentials::AwsSigV4 { region, service }) = &config.auth {
                let region = region
                    .clone()
                    .or_else(|| aws.region().map(ToString::to_string))
                    .unwrap_or_default();
                let credentials = aws.credentials_provider().ok_or_else(|| {
                    SetupError::Invalid("SigV4 needs AWS credentials and none were found".into())
                })?;
                let service = match service {
                    SigV4Service::Es => "es",
                    SigV4Service::Aoss => "aoss",
                };
                sink = sink.signed(Signer::new(credentials, &region, service));
            }
            match sink.bootstrap().await {
                Ok(Some(done)) => tracing::info!("{done}"),
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "cannot install the index template"),
            }
            work(parts, Arc::new(sink), shutdown).await
        }
        OutputSink::S3(config) => {
            // Objects go up in parts of 8 MiB: an attempt of two minutes
            // covers a slow link; one that hangs is abandoned and sent again.
            let mut s3 = aws_sdk_s3::config::Builder::from(&aws)
                .force_path_style(config.force_path_style)
                .timeout_config(crate::aws::timeouts(
                    std::time::Duration::from_secs(120),
                    std::time::Duration::from_secs(600),
                ));
            if let Some(region) = &config.region {
                s3 = s3.region(aws_config::Region::new(region.clone()));
            }
            if let Some(endpoint) = &config.endpoint {
                s3 = s3.endpoint_url(endpoint);
            }
            let region = config
                .region
                .clone()
                .or_else(|| aws.region().map(ToString::to_string))
                .unwrap_or_default();
            let subscription = &parts.config.subscription;
            let sink = S3::new(
                aws_sdk_s3::Client::from_conf(s3.build()),
                config,
                &region,
                &subscription.namespace,
                &subscription.name,
            );
            work(parts, Arc::new(sink), shutdown).await
        }
    }
}

/// What the worker is made of before its sink is chosen.
struct Parts {
    metrics: Arc<WorkerMetrics>,
    config: WorkerConfig,
    stream: Stream,
    client: kube::Client,
    identity: String,
    ready: Readiness,
}

async fn work<S: Sink>(
    parts: Parts,
    sink: Arc<S>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    let Parts {
        metrics,
        config,
        stream,
        client,
        identity,
        ready,
    } = parts;
    let batch = BatchLimits::from(&config.batch);
    let limits = DriverLimits::new(batch, sink.concurrency());
    let sink_health = Arc::new(SinkHealth::default());
    let (driver, delivering) =
        driver::spawn(sink.clone(), limits, metrics.clone(), sink_health.clone());
    let _checking = AbortOnDrop(tokio::spawn(check_sink(sink.clone(), sink_health.clone())));
    let leases = &config.leases;
    let shard = Arc::new(ShardContext {
        sink,
        sink_health,
        driver,
        batch,
        transforms: config.transforms.iter().map(Compiled::new).collect(),
        metrics,
        decode: Limits {
            max_inflated_bytes: usize::try_from(config.max_inflated_bytes.0).unwrap_or(usize::MAX),
        },
        budget: config.processing_budget.into(),
        max_output: usize::try_from(config.max_inflated_bytes.0)
            .unwrap_or(usize::MAX)
            .saturating_mul(4),
        prepares: crate::worker::prepare_pool::PreparePool::per_core(),
        renew_interval: leases.renew_interval.into(),
        lease_duration: leases.duration.into(),
        checkpoint_interval: leases.checkpoint_interval.into(),
    });
    let shared = Arc::new(Shared {
        shard,
        stream,
        client,
        identity: identity.clone(),
        config,
    });
    let mut store = shared.store();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut held = Held::default();
    let renew = std::time::Duration::from(shared.config.leases.renew_interval);
    let lease_duration = std::time::Duration::from(shared.config.leases.duration);
    tracing::info!(worker = %identity, stream = %shared.config.stream_arn, "worker started");

    tokio::pin!(shutdown);
    loop {
        match coordinate(&shared, &mut store, &mut held, &stop_rx).await {
            Ok(()) => ready.set(true),
            Err(e) => tracing::warn!(error = %e, "coordination round failed; retrying next round"),
        }
        shared
            .shard
            .metrics
            .leases_held
            .set(held.tasks.len() as i64);
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(renew) => {}
        }
    }
    tracing::info!(
        shards = held.tasks.len(),
        "stopping: delivering, checkpointing and releasing leases"
    );
    let _ = stop_tx.send(true);
    for (shard, task) in held.tasks {
        report(&shard, task.await);
    }
    // The driver ends once its last handle is gone and what it holds is out; a
    // sink that is down gets no longer than a lease (nothing undelivered was
    // checkpointed, so nothing is lost by giving up).
    drop(shared);
    if tokio::time::timeout(lease_duration, delivering)
        .await
        .is_err()
    {
        tracing::warn!("sink still failing at shutdown; undelivered records will be read again");
    }
    Ok(())
}

/// How often a sink that cannot be used is asked again.
const CHECK_AGAIN: Duration = Duration::from_secs(10);

/// Asks the sink at start whether it can be used and, while it cannot, again
/// every [`CHECK_AGAIN`]: a sink that cannot work (a certificate refused,
/// credentials denied) is on the status before any record needs it, even on
/// a quiet stream, and comes off once fixed. Deliveries retry meanwhile.
async fn check_sink<S: Sink>(sink: Arc<S>, health: Arc<SinkHealth>) {
    let trouble = health.watch();
    let mut said: Option<String> = None;
    loop {
        match sink.check().await {
            Ok(state) => {
                if said.is_some() {
                    tracing::info!(%state, "sink usable again");
                } else if !state.is_empty() {
                    tracing::info!(%state, "sink usable");
                }
                return;
            }
            Err(e) => {
                let now = e.to_string();
                if said.as_ref() != Some(&now) {
                    tracing::error!(error = %e, category = e.category, "sink not usable; deliveries will retry");
                }
                trouble.failed(&e);
                said = Some(now);
            }
        }
        tokio::time::sleep(CHECK_AGAIN).await;
    }
}

/// Logs how a shard task ended; whether it failed (and should back off).
fn report(shard: &str, exit: Result<ShardExit, tokio::task::JoinError>) -> bool {
    match exit {
        Ok(ShardExit::Failed(reason)) => {
            tracing::warn!(%shard, %reason, "shard failed; its lease will be taken again");
            true
        }
        Ok(ShardExit::Blocked { sequence, reason }) => {
            tracing::error!(%shard, %sequence, %reason, "shard stopped at a record nothing would store; it is tried again later");
            true
        }
        Ok(exit) => {
            tracing::info!(%shard, ?exit, "shard task ended");
            false
        }
        Err(e) => {
            tracing::error!(%shard, error = %e, "shard task panicked");
            true
        }
    }
}

/// The shards this process runs, and those it waits to run again.
#[derive(Default)]
struct Held {
    tasks: HashMap<String, JoinHandle<ShardExit>>,
    /// Shards whose task failed: when to try again, and the backoff that
    /// grows while they keep failing.
    retry: HashMap<String, (tokio::time::Instant, Backoff)>,
    /// Shards stopped at a record nothing would store, as their metric names them.
    blocked: HashMap<String, BlockedLabels>,
}

impl Held {
    /// Reaps finished tasks; a failed one's shard backs off before it is
    /// taken again, by this worker or (once the lease expires) another.
    fn reap(&mut self) -> Vec<(String, JoinHandle<ShardExit>)> {
        let ended: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.is_finished())
            .map(|(s, _)| s.clone())
            .collect();
        ended
            .into_iter()
            .filter_map(|shard| self.tasks.remove_entry(&shard))
            .collect()
    }

    fn ended(&mut self, shard: &str, failed: bool) {
        if !failed {
            self.retry.remove(shard);
            return;
        }
        let now = tokio::time::Instant::now();
        let (at, backoff) = self.retry.entry(shard.to_owned()).or_insert_with(|| {
            (
                now,
                Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
            )
        });
        *at = now + backoff.next_wait();
    }

    /// Forgets the blocked shards whose lease another worker holds now, or
    /// that has gone, and returns their metric series: that worker reports
    /// the shard from here on, and this one must not go on saying it holds it.
    fn blocked_elsewhere<'l>(
        &mut self,
        me: &str,
        mut holder: impl FnMut(&str) -> Option<Option<&'l str>>,
    ) -> Vec<BlockedLabels> {
        let gone: Vec<String> = self
            .blocked
            .keys()
            .filter(|shard| match holder(shard) {
                Some(Some(other)) => other != me,
                Some(None) => false,
                None => true,
            })
            .cloned()
            .collect();
        gone.iter()
            .filter_map(|shard| self.blocked.remove(shard))
            .collect()
    }

    fn waiting(&self, shard: &str) -> bool {
        self.retry
            .get(shard)
            .is_some_and(|(at, _)| tokio::time::Instant::now() < *at)
    }
}

/// One round: discover shards, make sure each has a lease, drop leases of gone
/// shards, reap finished tasks, and take what the balance says.
async fn coordinate<S: Sink>(
    shared: &Arc<Shared<S>>,
    store: &mut LeaseStore,
    held: &mut Held,
    stop: &watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    let metrics = &shared.shard.metrics;
    for (shard, task) in held.reap() {
        let exit = task.await;
        // The shard task set its series; it goes when the shard is taken again.
        if let Ok(ShardExit::Blocked { sequence, .. }) = &exit {
            let labels = BlockedLabels {
                shard: shard.clone(),
                sequence: sequence.to_string(),
            };
            held.blocked.insert(shard.clone(), labels);
        }
        let failed = report(&shard, exit);
        held.ended(&shard, failed);
    }
    let shards = shared.stream.shards(1000).await?;
    let mut leases = store.list().await?;
    // Only new shards need a lease created; list again when any was.
    let mut created = false;
    for shard in &shards {
        if !leases.iter().any(|l| l.shard_id() == shard.id) {
            store.ensure(&shard.id, &shard.parents).await?;
            created = true;
        }
    }
    if created {
        leases = store.list().await?;
    }
    let mut kept = Vec::with_capacity(leases.len());
    for lease in leases {
        let gone = !shards.iter().any(|s| s.id == lease.shard_id());
        // The lease of a shard the stream no longer has goes once nobody
        // reads it: unheld, expired, or ours without a task.
        let unread = lease.holder().is_none()
            || store.expired(&lease)
            || (lease.holder() == Some(shared.identity.as_str())
                && !held.tasks.contains_key(lease.shard_id()));
        if gone && unread {
            tracing::info!(
                shard = lease.shard_id(),
                "deleting the lease of a shard the stream no longer has"
            );
            store.delete(&lease).await?;
        } else {
            kept.push(lease);
        }
    }
    let leases = kept;
    let holder = |shard: &str| {
        let lease = leases.iter().find(|l| l.shard_id() == shard)?;
        Some(lease.holder())
    };
    for labels in held.blocked_elsewhere(&shared.identity, holder) {
        metrics.blocked_shards.remove(&labels);
    }
    let mut views = store.views(&leases);
    free_own_orphans(
        &shared.identity,
        &mut views,
        |shard| held.tasks.contains_key(shard),
        |shard| held.waiting(shard),
    );
    let max_steal = usize::try_from(shared.config.leases.max_steal_per_round).unwrap_or(0);
    let decision = plan(&shared.identity, &views, max_steal);
    let wanted = decision
        .take
        .iter()
        .chain(decision.steal.iter().map(|(s, _)| s));
    for shard in wanted {
        if held.tasks.contains_key(shard) {
            continue;
        }
        let Some(lease) = leases.iter().find(|l| l.shard_id() == shard) else {
            continue;
        };
        match store.take(lease).await {
            Ok(taken) => {
                tracing::info!(%shard, from = lease.holder().unwrap_or("nobody"), "took shard lease");
                if let Some(labels) = held.blocked.remove(shard) {
                    metrics.blocked_shards.remove(&labels);
                }
                let task = tokio::spawn(run_shard(shared.clone(), taken, stop.clone()));
                held.tasks.insert(shard.clone(), task);
            }
            Err(LeaseError::Lost(_)) => {
                tracing::debug!(%shard, "another worker took the lease first")
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn run_shard<S: Sink>(
    shared: Arc<Shared<S>>,
    lease: ShardLease,
    stop: watch::Receiver<bool>,
) -> ShardExit {
    let shard = lease.shard_id().to_owned();
    let start = match lease.checkpoint() {
        Checkpoint::ShardEnd => return ShardExit::Finished,
        Checkpoint::At(seq) => StartPosition::After(seq),
        // A child starts at its beginning so nothing between parent and child is lost.
        Checkpoint::None if !lease.parents().is_empty() => StartPosition::TrimHorizon,
        Checkpoint::None => match shared.config.start_position {
            StartAt::TrimHorizon => StartPosition::TrimHorizon,
            StartAt::Latest => StartPosition::Latest,
            StartAt::AtTimestamp(millis) => StartPosition::AtTimestamp(millis),
        },
    };
    let resume = Resume {
        shard: shard.clone(),
        checkpoint: match &start {
            StartPosition::After(seq) => Some(seq.clone()),
            _ => None,
        },
        counters: ShardCounters::resume(&shared.identity, lease.health()),
    };
    // Reads run ahead in a task of their own, as the KCL prefetches: a
    // GetRecords call overlaps the decoding of the previous records and is
    // never cancelled half-way.
    let reader = ShardReader::new(
        shared.stream.clone(),
        shard.clone(),
        start,
        ReaderLimits::default(),
    );
    let (reads_tx, reads) = reads_on_demand();
    let _reader = AbortOnDrop(tokio::spawn(read_ahead(reader, reads_tx)));
    tracing::info!(%shard, "reading shard");
    let lease = KubeLease {
        store: shared.store(),
        lease,
    };
    shard::run(shared.shard.clone(), lease, resume, reads, stop).await
}

/// Feeds reads to the shard task, each once it is asked for, until the shard
/// ends or fails.
async fn read_ahead(mut reader: ShardReader, reads: ReadSender) {
    while reads.wanted().await {
        let read = reader.next().await;
        let last = matches!(read, Ok(Read::End { .. }) | Err(_));
        if !reads.send(read).await || last {
            return;
        }
    }
}

/// Aborts a task when dropped, so a shard task never leaves its reader behind.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A shard's Lease object held by this worker.
struct KubeLease {
    store: LeaseStore,
    lease: ShardLease,
}

impl HeldLease for KubeLease {
    async fn renew(&mut self, health: &ShardHealth) -> Result<(), LeaseError> {
        self.lease.publish(health);
        self.lease = self.store.renew(&self.lease).await?;
        Ok(())
    }

    async fn checkpoint(
        &mut self,
        checkpoint: &Checkpoint,
        health: &ShardHealth,
    ) -> Result<(), LeaseError> {
        self.lease.publish(health);
        self.lease = self.store.checkpoint(&self.lease, checkpoint).await?;
        Ok(())
    }

    async fn release(&mut self) -> Result<(), LeaseError> {
        self.lease = self.store.release(&self.lease).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that cannot be used until its third check.
    struct Unusable {
        checks: std::sync::atomic::AtomicUsize,
    }

    impl Sink for Unusable {
        type Encoder = crate::worker::sink::NdJson;

        fn encoder(&self) -> &Self::Encoder {
            &crate::worker::sink::NdJson
        }

        async fn deliver(
            &self,
            _: &crate::worker::sink::Batch,
        ) -> Result<crate::worker::sink::Delivered, crate::worker::sink::SinkError> {
            unreachable!("only checked")
        }

        async fn check(&self) -> Result<String, crate::worker::sink::SinkError> {
            let n = self
                .checks
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n < 2 {
                return Err(crate::worker::sink::SinkError::new(
                    "unavailable",
                    "invalid peer certificate: UnknownIssuer",
                ));
            }
            Ok("cluster c is green".into())
        }
    }

    /// A sink that cannot be used is on the health at once, stays there
    /// while it is asked again, and comes off when it answers.
    #[tokio::test(start_paused = true)]
    async fn an_unusable_sink_is_reported_until_it_answers() {
        let sink = Arc::new(Unusable {
            checks: Default::default(),
        });
        let health = Arc::new(SinkHealth::default());
        let checking = tokio::spawn(check_sink(sink.clone(), health.clone()));
        tokio::task::yield_now().await;
        let said = health.error().expect("reported at once");
        assert!(said.contains("UnknownIssuer"), "{said}");
        tokio::time::sleep(CHECK_AGAIN + Duration::from_millis(1)).await;
        assert!(
            health.error().is_some(),
            "still unusable at the second check"
        );
        checking.await.unwrap();
        assert_eq!(health.error(), None, "usable at the third");
        assert_eq!(sink.checks.load(std::sync::atomic::Ordering::Relaxed), 3);
    }

    #[test]
    fn a_blocked_shard_another_worker_took_is_no_longer_reported_here() {
        let mut held = Held::default();
        for shard in ["ours", "taken", "released", "deleted"] {
            let labels = BlockedLabels {
                shard: shard.to_owned(),
                sequence: "7".to_owned(),
            };
            held.blocked.insert(shard.to_owned(), labels);
        }
        let holders = [
            ("ours", Some("worker-a")),
            ("taken", Some("worker-b")),
            ("released", None),
        ];
        let holder = |shard: &str| holders.iter().find(|(s, _)| *s == shard).map(|(_, h)| *h);
        let mut gone: Vec<String> = held
            .blocked_elsewhere("worker-a", holder)
            .into_iter()
            .map(|l| l.shard)
            .collect();
        gone.sort();
        assert_eq!(gone, ["deleted", "taken"]);
        let mut left: Vec<&String> = held.blocked.keys().collect();
        left.sort();
        assert_eq!(left, ["ours", "released"]);
    }
}
