//! What the benchmarks share to run the worker's shard path without Kinesis or
//! Kubernetes: a lease kept in memory, and the shard context around a sink.
#![allow(dead_code)] // each benchmark uses a different part

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use logsub::contract::{Checkpoint, ShardHealth};
use logsub::telemetry::WorkerMetrics;
use logsub::worker::decode::cloudwatch::Limits;
use logsub::worker::health::SinkHealth;
use logsub::worker::shard::{HeldLease, ShardContext};
use logsub::worker::sink::Sink;
use logsub::worker::sink::batch::BatchLimits;
use logsub::worker::sink::driver::{self, DriverLimits};
use logsub::worker::source::kinesis::lease::LeaseError;
use logsub::worker::source::kinesis::reader::{Read, Reads, reads_on_demand};
use logsub::worker::transform::Compiled;
use tokio::task::JoinHandle;

/// A lease kept in memory: checkpoints are counted, nothing is fenced.
#[derive(Clone, Default)]
pub struct MemoryLease {
    /// Checkpoints written, over every lease sharing the counter.
    pub checkpoints: Arc<AtomicU64>,
}

impl HeldLease for MemoryLease {
    async fn renew(&mut self, _: &ShardHealth) -> Result<(), LeaseError> {
        Ok(())
    }

    async fn checkpoint(&mut self, _: &Checkpoint, _: &ShardHealth) -> Result<(), LeaseError> {
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn release(&mut self) -> Result<(), LeaseError> {
        Ok(())
    }
}

/// The shard context of a worker delivering to `sink` with the default batch
/// limits, and its driver's task. Call inside the runtime.
pub fn context<S: Sink>(
    sink: Arc<S>,
    transforms: Vec<Compiled>,
) -> (Arc<ShardContext<S>>, JoinHandle<()>) {
    let metrics = Arc::new(WorkerMetrics::default());
    let sink_health = Arc::new(SinkHealth::default());
    let batch = BatchLimits::from(&logsub::api::BatchSpec::default());
    let limits = DriverLimits::new(batch, sink.concurrency());
    let (driver, delivering) =
        driver::spawn(sink.clone(), limits, metrics.clone(), sink_health.clone());
    let context = Arc::new(ShardContext {
        sink,
        sink_health,
        driver,
        batch,
        transforms,
        metrics,
        decode: Limits::default(),
        budget: Duration::from_secs(10),
        max_output: 64 << 20,
        prepares: logsub::worker::prepare_pool::PreparePool::per_core(),
        renew_interval: Duration::from_secs(5),
        lease_duration: Duration::from_secs(15),
        checkpoint_interval: Duration::from_secs(1),
    });
    (context, delivering)
}

/// A shard's reads, each handed over once the shard task asks for it (as the
/// worker's reader does), then the shard's end. Spawns the feeding task.
pub fn feed(reads: Vec<Read>) -> Reads {
    let (to, from) = reads_on_demand();
    tokio::spawn(async move {
        for read in reads.into_iter().chain([Read::End {
            children: Vec::new(),
        }]) {
            if !to.wanted().await || !to.send(Ok(read)).await {
                return;
            }
        }
    });
    from
}

/// Reads made by `next` without end, each once the shard task asks for it.
pub fn feed_forever(mut next: impl FnMut() -> Read + Send + 'static) -> Reads {
    let (to, from) = reads_on_demand();
    tokio::spawn(async move {
        while to.wanted().await {
            if !to.send(Ok(next())).await {
                return;
            }
        }
    });
    from
}
