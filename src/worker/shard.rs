//! One shard held by this worker: reads come in, parts go out to the sink
//! driver, acknowledgements come back, and the lease is renewed and checkpointed
//! as they allow. The task owns its lease: a lease taken by another worker fails
//! its next write and the task stops at once (fencing).
//!
//! Generic over the lease, so the same loop runs on Kubernetes Leases and, in
//! the load harness, on memory.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::decode::cloudwatch::Limits;
use super::health::{ShardCounters, SinkHealth};
use super::pipeline::{
    Accepted, PartLimits, PipelineError, Prepared, ShardPipeline, Sizing, prepare,
};
use super::prepare_pool::PreparePool;
use super::sink::batch::{Acked, BatchLimits};
use super::sink::cut::{Cutter, Probe};
use super::sink::driver::{Closed, DriverHandle, Room};
use super::sink::{Batching, Earlier, Part, Sink, SinkError};
use super::source::kinesis::lease::LeaseError;
use super::source::kinesis::reader::{Read, Reads};
use super::transform::Compiled;
use crate::aws::kinesis::Record;
use crate::contract::SequenceNumber;
use crate::contract::{Checkpoint, ShardHealth};
use crate::telemetry::{BlockedLabels, WorkerMetrics};
use crate::time::{now_millis, sleep_until};

/// What a shard task needs of the lease it holds. Each write also renews it and
/// publishes the shard's health; each fails with [`LeaseError::Lost`] once the
/// lease is someone else's.
pub trait HeldLease: Send {
    /// Renews the lease.
    fn renew(
        &mut self,
        health: &ShardHealth,
    ) -> impl Future<Output = Result<(), LeaseError>> + Send;

    /// Stores a checkpoint.
    fn checkpoint(
        &mut self,
        checkpoint: &Checkpoint,
        health: &ShardHealth,
    ) -> impl Future<Output = Result<(), LeaseError>> + Send;

    /// Gives the lease up.
    fn release(&mut self) -> impl Future<Output = Result<(), LeaseError>> + Send;
}

/// Renews `lease`, storing `checkpoint` with it when given. A call that
/// fails for any reason but the lease being taken is made again, a moment
/// later, for as long as the caller's renew deadline allows: one connection
/// the API server dropped must not end a shard whose lease still has time.
async fn write_lease<L: HeldLease>(
    lease: &mut L,
    checkpoint: Option<&Checkpoint>,
    health: &ShardHealth,
    shard: &str,
) -> Result<(), LeaseError> {
    let mut pause = Duration::from_millis(200);
    loop {
        let written = match checkpoint {
            Some(checkpoint) => lease.checkpoint(checkpoint, health).await,
            None => lease.renew(health).await,
        };
        match written {
            Err(LeaseError::Api(e)) => {
                tracing::debug!(%shard, error = %e, "lease write failed; trying again before the renew deadline");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            done => return done,
        }
    }
}

/// What every shard task of a worker shares.
pub struct ShardContext<S> {
    /// The sink documents are encoded for.
    pub sink: Arc<S>,
    /// How the sink is doing, published with each shard's health.
    pub sink_health: Arc<SinkHealth>,
    /// The sink driver.
    pub driver: DriverHandle,
    /// How large and old a batch grows.
    pub batch: BatchLimits,
    /// The transforms, in order.
    pub transforms: Vec<Compiled>,
    /// The worker's metrics.
    pub metrics: Arc<WorkerMetrics>,
    /// Decode limits.
    pub decode: Limits,
    /// CPU time a record may take to prepare before it is dead-lettered.
    pub budget: Duration,
    /// Bytes of documents a record may become before it is dead-lettered.
    pub max_output: usize,
    /// The threads records are prepared on.
    pub prepares: PreparePool,
    /// How often leases are renewed.
    pub renew_interval: Duration,
    /// How long a lease lasts unrenewed: a holder that cannot renew within
    /// two thirds of it stops before another worker may take the shard.
    pub lease_duration: Duration,
    /// Least time between two checkpoint writes.
    pub checkpoint_interval: Duration,
}

/// How a shard task ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ShardExit {
    /// Read to its end and delivered; checkpointed SHARD_END.
    Finished,
    /// Another worker took the lease.
    Lost,
    /// Asked to stop; checkpointed and released.
    Stopped,
    /// Stopped at a record nothing would store: checkpointed before it, the
    /// lease kept, and the reason published on it.
    Blocked {
        /// The record.
        sequence: SequenceNumber,
        /// Why.
        reason: String,
    },
    /// Failed; the lease will be taken again.
    Failed(String),
}

/// Where a shard starts and what it has done so far.
pub struct Resume {
    /// The shard id.
    pub shard: String,
    /// The checkpoint it resumes after, if any.
    pub checkpoint: Option<SequenceNumber>,
    /// Delivery counters, continued from the previous holder.
    pub counters: ShardCounters,
}

type Probing = Pin<Box<dyn Future<Output = Result<Option<Earlier>, SinkError>> + Send>>;

/// Bytes of documents a shard prepares ahead of what the sink has taken:
/// enough records at once to spare a thread hand-over each, few enough that
/// a stalled sink holds little beyond its own buffer.
const PREPARE_AHEAD: usize = 256 << 10;

/// Bytes of documents a shard's unprepared records may still become when it
/// asks for its next read: enough work to cover a GetRecords round trip, and
/// far less than a read, so that a shard whose sink stalls early in a read
/// does not ask for another.
const ASK_AHEAD: usize = 2 << 20;

/// Records prepared together, those left for later, and what their sizes taught.
type PreparedSome = Result<(Vec<Prepared>, Vec<Record>, Sizing), PipelineError>;

/// Runs a shard until it ends, its lease is lost, or `stop` turns true. `reads`
/// come from the shard's reader, in order, each once asked for: the next is
/// asked for near the end of the last one (see [`ASK_AHEAD`]), or at once when
/// it brought no records.
pub async fn run<S: Sink, L: HeldLease>(
    context: Arc<ShardContext<S>>,
    lease: L,
    resume: Resume,
    mut reads: Reads,
    mut stop: watch::Receiver<bool>,
) -> ShardExit {
    let limits = PartLimits {
        max_bytes: context.batch.max_bytes,
        decode: context.decode,
        budget: context.budget,
        max_output: context.max_output,
        object_meta: context.sink.batching() == Batching::PerShard,
    };
    let (ack_tx, mut acks) = mpsc::unbounded_channel();
    let pipeline = ShardPipeline::new(
        &resume.shard,
        resume.checkpoint.clone(),
        ack_tx,
        limits,
        Cutter::new(context.sink.batching(), context.batch),
        resume.counters,
    );
    let mut task = ShardTask {
        context,
        lease,
        shard: resume.shard,
        pipeline,
        raw: VecDeque::new(),
        ready: VecDeque::new(),
        pending: VecDeque::new(),
        sent: 0,
        written: resume.checkpoint,
        last_write: Instant::now(),
        probed: None,
        sizing: Sizing::default(),
    };
    // Records being prepared off the runtime, and an object sink's probe:
    // each in its own branch, so that neither delays a renewal.
    let mut preparing: Option<JoinHandle<PreparedSome>> = None;
    let mut probing: Option<Probing> = None;
    let mut end: Option<Vec<String>> = None;
    reads.want();
    loop {
        if let Some(children) = &end
            && task.pipeline.in_flight() == 0
            && preparing.is_none()
            && task.ready.is_empty()
            && task.raw.is_empty()
        {
            tracing::info!(shard = %task.shard, ?children, "shard read to its end and delivered");
            return task.finish().await;
        }
        // Prepared records are taken one at a time, as the sink takes their parts.
        while task.pending.is_empty()
            && probing.is_none()
            && let Some(prepared) = task.ready.pop_front()
        {
            match task.accept(prepared) {
                Ok(probe) => probing = probe,
                Err(exit) => return exit,
            }
        }
        if task.pending.is_empty()
            && task.ready.is_empty()
            && preparing.is_none()
            && probing.is_none()
            && !task.raw.is_empty()
        {
            // Near the end of a read: the next is asked for now, so that the
            // call overlaps preparing what is left.
            if task.near_end_of_read() {
                reads.want();
            }
            preparing = Some(task.prepare_some());
        }
        let next_part = task
            .pending
            .front()
            .filter(|p| task.pipeline.may_send(task.sent, p))
            .map(|p| p.encoded().held());
        let driver = task.context.driver.clone();
        let wake = task.next_write();
        let busy = preparing.is_some() || probing.is_some() || !task.ready.is_empty();
        let can_read = task.pending.is_empty() && task.raw.is_empty() && !busy && end.is_none();
        let cut_due = task.pipeline.due().filter(|_| !busy);
        let result = tokio::select! {
            biased;
            _ = stop.changed() => return task.stop(acks).await,
            Some(acked) = acks.recv() => match task.acked(&acked) {
                Err(PipelineError::Unstored { sequence, reason }) => {
                    return task.blocked(sequence, reason).await;
                }
                other => other.map_err(|e| ShardExit::Failed(e.to_string())),
            },
            room = driver.reserve(next_part.unwrap_or(0)), if next_part.is_some() => {
                task.hand_over(room)
            }
            () = tokio::time::sleep_until(wake) => task.maintain(false).await,
            prepared = async { preparing.as_mut().expect("guarded").await }, if preparing.is_some() => {
                preparing = None;
                match prepared {
                    Ok(Ok((prepared, rest, sizing))) => {
                        task.sizing = sizing;
                        task.ready.extend(prepared);
                        if rest.is_empty() {
                            reads.want();
                        }
                        for record in rest.into_iter().rev() {
                            task.raw.push_front(record);
                        }
                        Ok(())
                    }
                    Ok(Err(e)) => Err(ShardExit::Failed(e.to_string())),
                    Err(e) => Err(ShardExit::Failed(format!("preparing records: {e}"))),
                }
            }
            end_at = async { probing.as_mut().expect("guarded").await }, if probing.is_some() => {
                probing = None;
                task.probed(end_at)
            }
            () = sleep_until(cut_due), if cut_due.is_some() => {
                task.pending.extend(task.pipeline.cut_now());
                Ok(())
            }
            read = reads.recv(), if can_read => match read {
                Some(Ok(Read::Records { records, millis_behind_latest })) => {
                    if records.is_empty() {
                        reads.want();
                    }
                    task.read(records, millis_behind_latest);
                    Ok(())
                }
                Some(Ok(Read::End { children })) => {
                    task.pending.extend(task.pipeline.cut_now());
                    end = Some(children);
                    task.context.driver.flush();
                    Ok(())
                }
                Some(Ok(Read::Stalled { error })) => {
                    tracing::warn!(shard = %task.shard, %error, "reading makes no progress");
                    task.pipeline.counters.health.read_error = Some(error);
                    reads.want();
                    Ok(())
                }
                Some(Err(e)) => {
                    // Said on the lease before the shard stops (a denied read,
                    // a shard that is gone): the status names it.
                    task.pipeline.counters.health.read_error = Some(e.to_string());
                    let _ = task.maintain(true).await;
                    Err(ShardExit::Failed(e.to_string()))
                }
                None => Err(ShardExit::Failed("the reader stopped".into())),
            },
        };
        if let Err(exit) = result {
            return exit;
        }
    }
}

/// A shard this worker holds: its lease, its pipeline, and the parts read but
/// not yet handed to the driver.
struct ShardTask<S, L> {
    context: Arc<ShardContext<S>>,
    lease: L,
    shard: String,
    pipeline: ShardPipeline,
    /// Records read and not yet prepared.
    raw: VecDeque<Record>,
    /// Records prepared and not yet taken by the pipeline.
    ready: VecDeque<Prepared>,
    pending: VecDeque<Part>,
    /// Parts handed to the driver and not yet acknowledged.
    sent: usize,
    /// The checkpoint last written.
    written: Option<SequenceNumber>,
    last_write: Instant,
    /// A record waiting for its probe's answer, with the probe.
    probed: Option<(Probe, Prepared)>,
    /// How much room a record's documents take, learnt from the last ones.
    sizing: Sizing,
}

impl<S: Sink, L: HeldLease> ShardTask<S, L> {
    fn read(&mut self, records: Vec<Record>, millis_behind_latest: Option<i64>) {
        if let Some(behind) = millis_behind_latest {
            self.context
                .metrics
                .millis_behind_latest
                .get_or_create(self.pipeline.labels())
                .set(behind);
            self.pipeline.counters.health.millis_behind_latest = Some(behind);
        }
        // Records came: whatever kept the reader from them is over.
        self.pipeline.counters.health.read_error = None;
        self.raw.extend(records);
    }

    /// Whether the records read and not yet prepared are likely to become
    /// less than [`ASK_AHEAD`] of documents.
    fn near_end_of_read(&self) -> bool {
        let bytes = self.raw.iter().map(|r| r.data.len()).sum();
        self.sizing.expected(bytes) < ASK_AHEAD
    }

    /// Prepares the records read, in order, on the blocking pool: decoding a
    /// large record (or a hostile one, up to its budget) must not hold the
    /// runtime's threads, where every shard's renewals run. Records go
    /// together, to spare a thread hand-over each, until their documents
    /// come to [`PREPARE_AHEAD`]; the rest are given back, still compressed.
    fn prepare_some(&mut self) -> JoinHandle<PreparedSome> {
        let context = self.context.clone();
        let shard = self.shard.clone();
        let limits = *self.pipeline.limits();
        let records: Vec<Record> = self.raw.drain(..).collect();
        let sizing = self.sizing;
        tokio::spawn(async move {
            let pool = context.prepares.clone();
            let prepared = pool
                .run(move || {
                    let mut out = Vec::new();
                    let mut sizing = sizing;
                    let mut bytes = 0;
                    let mut records = records.into_iter();
                    for record in records.by_ref() {
                        let prepared = prepare(
                            &shard,
                            &record,
                            &context.transforms,
                            context.sink.encoder(),
                            &limits,
                            &mut sizing,
                        )?;
                        bytes += prepared.encoded.byte_len();
                        out.push(prepared);
                        if bytes >= PREPARE_AHEAD.min(limits.max_bytes) {
                            break;
                        }
                    }
                    Ok((out, records.collect(), sizing))
                })
                .await;
            prepared.unwrap_or_else(|e| Err(PipelineError::Panicked(e.to_string())))
        })
    }

    /// Takes a prepared record; returns the probe to run when an object sink
    /// must first say where an earlier object ended.
    fn accept(&mut self, prepared: Prepared) -> Result<Option<Probing>, ShardExit> {
        let accepted = self
            .pipeline
            .accept(prepared, &self.context.metrics, &mut self.pending)
            .map_err(|e| ShardExit::Failed(e.to_string()))?;
        match accepted {
            Accepted::Done => Ok(None),
            Accepted::Probe(probed) => {
                let (probe, prepared) = *probed;
                let sink = self.context.sink.clone();
                let (shard, first, meta) =
                    (self.shard.clone(), probe.first.clone(), probe.meta.clone());
                self.probed = Some((probe, prepared));
                Ok(Some(Box::pin(async move {
                    sink.resume_cut(&shard, &first, &meta).await
                })))
            }
        }
    }

    /// The answer to a probe: the record waiting for it is accepted now.
    fn probed(&mut self, found: Result<Option<Earlier>, SinkError>) -> Result<(), ShardExit> {
        // A failed look-up fails the shard: its lease is taken again later,
        // and nothing was handed over for the records not yet accepted.
        let earlier =
            found.map_err(|e| ShardExit::Failed(format!("looking for earlier objects: {e}")))?;
        let Some((probe, prepared)) = self.probed.take() else {
            return Ok(());
        };
        if let Some(earlier) = &earlier {
            tracing::info!(shard = %self.shard, first = %probe.first, last = %earlier.last, key = %earlier.key, "an earlier holder wrote this object; cutting the replay at its end");
        }
        self.pipeline.probed(&probe, earlier);
        match self
            .pipeline
            .accept(prepared, &self.context.metrics, &mut self.pending)
            .map_err(|e| ShardExit::Failed(e.to_string()))?
        {
            Accepted::Done => Ok(()),
            Accepted::Probe(..) => Err(ShardExit::Failed(
                "a probed record asked for a probe again".into(),
            )),
        }
    }

    fn hand_over(&mut self, room: Result<Room, Closed>) -> Result<(), ShardExit> {
        let room = room.map_err(|e| ShardExit::Failed(e.to_string()))?;
        if let Some(part) = self.pending.pop_front() {
            // A part that goes alone is not kept waiting for a batch to fill.
            let alone = self.pipeline.goes_alone(&part);
            self.context
                .driver
                .send(part, room)
                .map_err(|e| ShardExit::Failed(e.to_string()))?;
            self.sent += 1;
            if alone {
                self.context.driver.flush();
            }
        }
        Ok(())
    }

    fn acked(&mut self, acked: &Acked) -> Result<(), PipelineError> {
        self.sent -= 1;
        self.pipeline.acked(acked)
    }

    /// When the lease must next be written: a renewal, or sooner a checkpoint
    /// that has moved.
    fn next_write(&self) -> Instant {
        let renew = self.context.renew_interval;
        let moved = self.pipeline.checkpoint() != self.written.as_ref();
        let wait = if moved {
            renew.min(self.context.checkpoint_interval)
        } else {
            renew
        };
        self.last_write + wait
    }

    /// Renews the lease, writing the checkpoint with it when it moved and is
    /// due (or `now`), and publishing the shard's health.
    async fn maintain(&mut self, now: bool) -> Result<(), ShardExit> {
        let current = self.pipeline.checkpoint().cloned();
        let due = current != self.written
            && (now || self.last_write.elapsed() >= self.context.checkpoint_interval);
        let health = self.pipeline.counters.snapshot(&self.context.sink_health);
        // As client-go's leader election: a renewal that does not come back
        // before the renew deadline ends this holder's part, even while the
        // call still hangs, so that it has stopped before the lease can expire
        // and another worker take the shard.
        let deadline = self.last_write + self.context.lease_duration * 2 / 3;
        let checkpoint = match (&current, due) {
            (Some(seq), true) => Some(Checkpoint::At(seq.clone())),
            _ => None,
        };
        let write = write_lease(&mut self.lease, checkpoint.as_ref(), &health, &self.shard);
        let Ok(written) = tokio::time::timeout_at(deadline, write).await else {
            tracing::warn!(shard = %self.shard, "the lease could not be renewed before its renew deadline; stopping this shard");
            return Err(ShardExit::Failed(
                "the lease could not be renewed before its renew deadline".into(),
            ));
        };
        match written {
            Ok(()) => {
                self.last_write = Instant::now();
                if due {
                    self.written = current;
                    self.context
                        .metrics
                        .checkpoint_time
                        .get_or_create(self.pipeline.labels())
                        .set(now_millis() / 1000);
                }
                Ok(())
            }
            Err(LeaseError::Lost(_)) => {
                tracing::warn!(shard = %self.shard, "lease taken by another worker; stopping this shard");
                Err(ShardExit::Lost)
            }
            Err(e) => Err(ShardExit::Failed(e.to_string())),
        }
    }

    /// Stops on shutdown: parts not yet handed over are dropped (never
    /// delivered, they are read again by the next holder); parts out are waited
    /// for, within a renewal interval; then the checkpoint and the release.
    async fn stop(mut self, mut acks: mpsc::UnboundedReceiver<Acked>) -> ShardExit {
        self.raw.clear();
        self.ready.clear();
        self.pending.clear();
        self.context.driver.flush();
        let deadline = Instant::now() + self.context.renew_interval;
        while self.sent > 0 {
            match tokio::time::timeout_at(deadline, acks.recv()).await {
                Ok(Some(acked)) => {
                    // A record stored nowhere just holds the checkpoint back.
                    let _ = self.acked(&acked);
                }
                Ok(None) | Err(_) => {
                    tracing::warn!(shard = %self.shard, parts = self.sent, "stopping with deliveries still out; they will be read again");
                    break;
                }
            }
        }
        if let Err(exit) = self.maintain(true).await {
            return exit;
        }
        match self.lease.release().await {
            Ok(()) => ShardExit::Stopped,
            Err(LeaseError::Lost(_)) => ShardExit::Lost,
            Err(e) => ShardExit::Failed(e.to_string()),
        }
    }

    /// A record of the shard cannot be stored anywhere: the shard stops
    /// there. What was delivered before it is checkpointed, and the reason
    /// is published on the lease, which this worker keeps.
    async fn blocked(mut self, sequence: SequenceNumber, reason: String) -> ShardExit {
        tracing::error!(shard = %self.shard, %sequence, %reason, "a record cannot be stored anywhere; the shard stops before it");
        self.context
            .metrics
            .blocked_shards
            .get_or_create(&BlockedLabels {
                shard: self.shard.clone(),
                sequence: sequence.to_string(),
            })
            .set(1);
        self.pipeline.counters.blocked(&sequence, &reason);
        if let Err(exit) = self.maintain(true).await {
            return exit;
        }
        ShardExit::Blocked { sequence, reason }
    }

    /// The shard is read to its end and everything delivered: SHARD_END.
    async fn finish(mut self) -> ShardExit {
        let health = self.pipeline.counters.snapshot(&self.context.sink_health);
        match self.lease.checkpoint(&Checkpoint::ShardEnd, &health).await {
            Ok(()) => {
                // SHARD_END is stored; a failed release only delays the lease's
                // expiry, and nobody reads a finished shard.
                let _ = self.lease.release().await;
                ShardExit::Finished
            }
            Err(LeaseError::Lost(_)) => ShardExit::Lost,
            Err(e) => ShardExit::Failed(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lease whose writes fail with `failures` in turn, then succeed.
    struct Flaky {
        failures: VecDeque<LeaseError>,
        writes: Vec<Option<Checkpoint>>,
    }

    impl Flaky {
        fn write(&mut self, checkpoint: Option<&Checkpoint>) -> Result<(), LeaseError> {
            self.writes.push(checkpoint.cloned());
            self.failures.pop_front().map_or(Ok(()), Err)
        }
    }

    impl HeldLease for Flaky {
        async fn renew(&mut self, _: &ShardHealth) -> Result<(), LeaseError> {
            self.write(None)
        }

        async fn checkpoint(
            &mut self,
            checkpoint: &Checkpoint,
            _: &ShardHealth,
        ) -> Result<(), LeaseError> {
            self.write(Some(checkpoint))
        }

        async fn release(&mut self) -> Result<(), LeaseError> {
            Ok(())
        }
    }

    fn dropped() -> LeaseError {
        LeaseError::Api(kube::Error::Service(
            "connection closed before message completed".into(),
        ))
    }

    /// A write the API server failed is made again and the shard goes on;
    /// a lease taken by another worker is not written again.
    #[tokio::test(start_paused = true)]
    async fn a_failed_lease_write_is_made_again_and_a_lost_lease_is_not() {
        let at = Checkpoint::At(SequenceNumber::parse("42").unwrap());
        let mut lease = Flaky {
            failures: VecDeque::from([dropped(), dropped()]),
            writes: Vec::new(),
        };
        let health = ShardHealth::default();
        write_lease(&mut lease, Some(&at), &health, "s")
            .await
            .unwrap();
        assert_eq!(
            lease.writes,
            vec![Some(at.clone()); 3],
            "the same checkpoint each time"
        );

        let mut lease = Flaky {
            failures: VecDeque::from([LeaseError::Lost("s".into())]),
            writes: Vec::new(),
        };
        let lost = write_lease(&mut lease, None, &health, "s").await;
        assert!(matches!(lost, Err(LeaseError::Lost(_))), "{lost:?}");
        assert_eq!(lease.writes.len(), 1);
    }
}
