//! The worker process: a coordinator that keeps this worker's fair share of shard
//! leases, and one task per held shard that reads, decodes, transforms, delivers
//! and checkpoints. A shard task owns its lease: it renews it and writes its
//! checkpoints, so a lease taken by another worker fails its next write and the
//! task stops at once (fencing).

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::checkpoint::watermark::{SequenceNumber, Watermark};
use super::config::{OutputSink, StartAt, WorkerConfig};
use super::decode::cloudwatch::Limits;
use super::document::Document;
use super::process::{Outcome, process};
use super::source::kinesis::balance::plan;
use super::source::kinesis::lease::{Checkpoint, LeaseError, LeaseStore, ShardLease};
use super::source::kinesis::reader::{Read, ReaderLimits, ShardReader};
use super::transform::Compiled;
use crate::aws::AwsError;
use crate::aws::kinesis::{StartPosition, Stream};
use crate::telemetry::{ErrorLabels, Readiness, WorkerMetrics};

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
    /// The admin endpoints cannot listen.
    #[error("admin endpoints: {0}")]
    Admin(std::io::Error),
}

/// Writes documents as NDJSON, one line each; a write that returns has been
/// delivered (flushed).
#[derive(Clone)]
struct Output {
    out: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl Output {
    fn new(sink: &OutputSink) -> Output {
        match sink {
            OutputSink::Stdout {} => Output {
                out: Arc::new(Mutex::new(Box::new(std::io::stdout()))),
            },
        }
    }

    fn deliver(&self, docs: &[Document]) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(docs.len() * 256);
        for doc in docs {
            serde_json::to_writer(&mut buf, doc)?;
            buf.push(b'\n');
        }
        // A poisoned lock only means another shard task panicked mid-write.
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.write_all(&buf)?;
        out.flush()
    }
}

struct Shared {
    metrics: Arc<WorkerMetrics>,
    config: WorkerConfig,
    stream: Stream,
    transforms: Vec<Compiled>,
    output: Output,
    client: kube::Client,
    identity: String,
}

impl Shared {
    /// A lease store of its own for each task: each keeps its own observations.
    fn store(&self) -> LeaseStore {
        let subscription = &self.config.subscription;
        let duration = std::time::Duration::from(self.config.leases.duration);
        LeaseStore::new(
            self.client.clone(),
            &subscription.namespace,
            &subscription.name,
            &self.identity,
            duration,
        )
    }
}

/// How a shard task ended.
#[derive(Debug)]
enum ShardExit {
    /// Read to its end; checkpointed SHARD_END.
    Finished,
    /// Another worker took the lease.
    Lost,
    /// Asked to stop; checkpointed and released.
    Stopped,
    /// Failed; the lease will expire and be taken again.
    Failed(String),
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
    let client = kube::Client::try_default().await?;
    let mut aws = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = &config.region {
        aws = aws.region(aws_config::Region::new(region.clone()));
    }
    let aws = aws.load().await;
    let stream = Stream::new(aws_sdk_kinesis::Client::new(&aws), &config.stream_arn);
    let shared = Arc::new(Shared {
        metrics,
        transforms: config.transforms.iter().map(Compiled::new).collect(),
        output: Output::new(&config.sink),
        stream,
        client,
        identity: identity.clone(),
        config,
    });
    let mut store = shared.store();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks: HashMap<String, JoinHandle<ShardExit>> = HashMap::new();
    let renew = std::time::Duration::from(shared.config.leases.renew_interval);
    tracing::info!(worker = %identity, stream = %shared.config.stream_arn, "worker started");

    tokio::pin!(shutdown);
    loop {
        match coordinate(&shared, &mut store, &mut tasks, &stop_rx).await {
            Ok(()) => ready.set(true),
            Err(e) => tracing::warn!(error = %e, "coordination round failed; retrying next round"),
        }
        shared.metrics.leases_held.set(tasks.len() as i64);
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(renew) => {}
        }
    }
    tracing::info!(
        shards = tasks.len(),
        "stopping: checkpointing and releasing leases"
    );
    let _ = stop_tx.send(true);
    for (shard, task) in tasks {
        report(&shard, task.await);
    }
    Ok(())
}

fn report(shard: &str, exit: Result<ShardExit, tokio::task::JoinError>) {
    match exit {
        Ok(ShardExit::Failed(reason)) => {
            tracing::warn!(%shard, %reason, "shard failed; its lease will be taken again")
        }
        Ok(exit) => tracing::info!(%shard, ?exit, "shard task ended"),
        Err(e) => tracing::error!(%shard, error = %e, "shard task panicked"),
    }
}

/// One round: discover shards, make sure each has a lease, drop leases of gone
/// shards, reap finished tasks, and take what the balance says.
async fn coordinate(
    shared: &Arc<Shared>,
    store: &mut LeaseStore,
    tasks: &mut HashMap<String, JoinHandle<ShardExit>>,
    stop: &watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    let ended: Vec<String> = tasks
        .iter()
        .filter(|(_, t)| t.is_finished())
        .map(|(s, _)| s.clone())
        .collect();
    for shard in ended {
        if let Some(task) = tasks.remove(&shard) {
            report(&shard, task.await);
        }
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
        if gone && lease.holder().is_none() {
            store.delete(&lease).await?;
        } else {
            kept.push(lease);
        }
    }
    let leases = kept;
    let views = store.views(&leases);
    let max_steal = usize::try_from(shared.config.leases.max_steal_per_round).unwrap_or(0);
    let decision = plan(&shared.identity, &views, max_steal);
    let wanted = decision
        .take
        .iter()
        .chain(decision.steal.iter().map(|(s, _)| s));
    for shard in wanted {
        if tasks.contains_key(shard) {
            continue;
        }
        let Some(lease) = leases.iter().find(|l| l.shard_id() == shard) else {
            continue;
        };
        match store.take(lease).await {
            Ok(taken) => {
                tracing::info!(%shard, from = lease.holder().unwrap_or("nobody"), "took shard lease");
                let task = tokio::spawn(run_shard(shared.clone(), taken, stop.clone()));
                tasks.insert(shard.clone(), task);
            }
            Err(LeaseError::Lost(_)) => {
                tracing::debug!(%shard, "another worker took the lease first")
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn run_shard(
    shared: Arc<Shared>,
    lease: ShardLease,
    mut stop: watch::Receiver<bool>,
) -> ShardExit {
    let shard = lease.shard_id().to_owned();
    let store = shared.store();
    let config = &shared.config;
    let start = match lease.checkpoint() {
        Checkpoint::ShardEnd => return ShardExit::Finished,
        Checkpoint::At(seq) => StartPosition::After(seq),
        // A child starts at its beginning so nothing between parent and child is lost.
        Checkpoint::None if !lease.parents().is_empty() => StartPosition::TrimHorizon,
        Checkpoint::None => match config.start_position {
            StartAt::TrimHorizon => StartPosition::TrimHorizon,
            StartAt::Latest => StartPosition::Latest,
            StartAt::AtTimestamp(millis) => StartPosition::AtTimestamp(millis),
        },
    };
    let resume = match &start {
        StartPosition::After(seq) => Some(seq.clone()),
        _ => None,
    };
    let mut watermark = Watermark::new(resume.clone());
    let mut written: Option<SequenceNumber> = resume;
    let mut lease = lease;
    let mut reader = ShardReader::new(
        shared.stream.clone(),
        shard.clone(),
        start,
        ReaderLimits::default(),
    );
    let limits = Limits {
        max_inflated_bytes: usize::try_from(config.max_inflated_bytes.0).unwrap_or(usize::MAX),
    };
    let checkpoint_every = std::time::Duration::from(config.leases.checkpoint_interval);
    let renew_every = std::time::Duration::from(config.leases.renew_interval);
    let mut last_write = Instant::now();
    tracing::info!(%shard, "reading shard");

    loop {
        let read = tokio::select! {
            _ = stop.changed() => {
                return match save(&store, &mut lease, &watermark, &mut written, true).await {
                    Ok(()) => match store.release(&lease).await {
                        Ok(_) => ShardExit::Stopped,
                        Err(_) => ShardExit::Lost,
                    },
                    Err(LeaseError::Lost(_)) => ShardExit::Lost,
                    Err(e) => ShardExit::Failed(e.to_string()),
                };
            }
            read = reader.next() => read,
        };
        let metrics = &shared.metrics;
        let labels = WorkerMetrics::shard(&shard);
        match read {
            Ok(Read::Records {
                records,
                millis_behind_latest,
            }) => {
                if let Some(behind) = millis_behind_latest {
                    metrics
                        .millis_behind_latest
                        .get_or_create(&labels)
                        .set(behind);
                }
                for record in &records {
                    metrics.records_read.get_or_create(&labels).inc();
                    metrics
                        .bytes_read
                        .get_or_create(&labels)
                        .inc_by(record.data.len() as u64);
                    let docs = match process(&shard, record, &shared.transforms, limits) {
                        Outcome::Documents(docs) => {
                            metrics.events_decoded.inc_by(docs.len() as u64);
                            docs
                        }
                        Outcome::Control => {
                            metrics.control_messages.inc();
                            Vec::new()
                        }
                        Outcome::Rejected(dead) => {
                            let error_type = dead.error.category().to_owned();
                            metrics
                                .records_dead_lettered
                                .get_or_create(&ErrorLabels { error_type })
                                .inc();
                            tracing::warn!(%shard, sequence = %record.sequence, error = %dead.error, "record rejected");
                            vec![dead.document(now_millis())]
                        }
                    };
                    if let Err(e) = shared.output.deliver(&docs) {
                        return ShardExit::Failed(format!("output: {e}"));
                    }
                    metrics.sent_events.inc_by(docs.len() as u64);
                    // Delivered synchronously: the record is acknowledged as it is read.
                    if let Err(e) = watermark.read(record.sequence.clone(), 0) {
                        return ShardExit::Failed(e.to_string());
                    }
                }
            }
            Ok(Read::End { children }) => {
                tracing::info!(%shard, ?children, "shard read to its end");
                return match store.checkpoint(&lease, &Checkpoint::ShardEnd).await {
                    Ok(done) => {
                        // SHARD_END is stored; a failed release only delays the
                        // lease's expiry, and nobody reads a finished shard.
                        let _ = store.release(&done).await;
                        ShardExit::Finished
                    }
                    Err(LeaseError::Lost(_)) => ShardExit::Lost,
                    Err(e) => ShardExit::Failed(e.to_string()),
                };
            }
            Err(e) => return ShardExit::Failed(e.to_string()),
        }
        let due =
            last_write.elapsed() >= checkpoint_every && watermark.checkpoint() != written.as_ref();
        if due || last_write.elapsed() >= renew_every {
            match save(&store, &mut lease, &watermark, &mut written, due).await {
                Ok(()) => {
                    last_write = Instant::now();
                    if due {
                        shared
                            .metrics
                            .checkpoint_time
                            .get_or_create(&labels)
                            .set(now_millis() / 1000);
                    }
                }
                Err(LeaseError::Lost(_)) => {
                    tracing::warn!(%shard, "lease taken by another worker; stopping this shard");
                    return ShardExit::Lost;
                }
                Err(e) => return ShardExit::Failed(e.to_string()),
            }
        }
    }
}

/// Writes the checkpoint (when `checkpoint` and it moved) or renews the lease.
async fn save(
    store: &LeaseStore,
    lease: &mut ShardLease,
    watermark: &Watermark,
    written: &mut Option<SequenceNumber>,
    checkpoint: bool,
) -> Result<(), LeaseError> {
    let current = watermark.checkpoint().cloned();
    *lease = match (&current, checkpoint && current != *written) {
        (Some(seq), true) => {
            store
                .checkpoint(lease, &Checkpoint::At(seq.clone()))
                .await?
        }
        _ => store.renew(lease).await?,
    };
    if checkpoint {
        *written = current;
    }
    Ok(())
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
