//! The sink driver: one task per worker that batches the parts of every shard,
//! delivers batches (as many at once as the sink allows), retries failures with
//! backoff until they are stored, and acknowledges parts to their shards.
//!
//! Memory is bounded by a byte budget: a shard task reserves room for a part
//! before handing it over and the room comes back when the part is delivered, so
//! a slow sink makes shard tasks wait, and their readers with them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::batch::{Batch, BatchLimits, Batcher, Part};
use super::{Batching, Delivered, Sink, SinkError};
use crate::retry::Backoff;
use crate::telemetry::{ErrorLabels, SinkErrorLabels, WorkerMetrics};
use crate::time::sleep_until;
use crate::worker::health::{SinkHealth, Trouble};

/// Batch limits and the buffer's size.
#[derive(Clone, Debug)]
pub struct DriverLimits {
    /// How large and old a shared batch grows.
    pub batch: BatchLimits,
    /// Bytes of parts the driver holds at most (waiting, batching or in flight).
    pub buffer_bytes: usize,
}

impl DriverLimits {
    /// Room for the batches in flight plus one filling, so shards keep
    /// reading while a batch is out (a little less: a part's room counts
    /// its keys and places beside its wire bytes, which batches are cut by).
    pub fn new(batch: BatchLimits, concurrency: usize) -> Self {
        DriverLimits {
            batch,
            buffer_bytes: batch.max_bytes.saturating_mul(concurrency.max(1) + 1),
        }
    }
}

/// The driver is gone (the worker is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the sink driver has stopped")]
pub struct Closed;

/// Room reserved in the driver's buffer for one part.
#[derive(Debug)]
pub struct Room(OwnedSemaphorePermit);

/// How shard tasks reach the driver.
#[derive(Clone, Debug)]
pub struct DriverHandle {
    parts: mpsc::UnboundedSender<Part>,
    room: Arc<Semaphore>,
    buffer_bytes: usize,
    flush: Arc<Notify>,
}

impl DriverHandle {
    /// Waits for room for a part of `bytes` bytes (a part larger than the whole
    /// buffer waits for all of it). Cancel-safe: nothing is taken until it returns.
    pub async fn reserve(&self, bytes: usize) -> Result<Room, Closed> {
        let n = u32::try_from(bytes.clamp(1, self.buffer_bytes)).unwrap_or(u32::MAX);
        self.room
            .clone()
            .acquire_many_owned(n)
            .await
            .map(Room)
            .map_err(|_| Closed)
    }

    /// Hands a part over in the room reserved for it.
    pub fn send(&self, mut part: Part, room: Room) -> Result<(), Closed> {
        part.hold(room.0);
        self.parts.send(part).map_err(|_| Closed)
    }

    /// Sends the open batch now rather than when it fills (before a checkpoint
    /// on shutdown or handoff).
    pub fn flush(&self) {
        self.flush.notify_one();
    }
}

/// Starts the driver for `sink`. It ends once every handle is dropped and
/// everything handed over is delivered.
pub fn spawn<S: Sink>(
    sink: Arc<S>,
    limits: DriverLimits,
    metrics: Arc<WorkerMetrics>,
    health: Arc<SinkHealth>,
) -> (DriverHandle, JoinHandle<()>) {
    let (parts, rx) = mpsc::unbounded_channel();
    let buffer_bytes = limits.buffer_bytes.clamp(1, Semaphore::MAX_PERMITS);
    let handle = DriverHandle {
        parts,
        room: Arc::new(Semaphore::new(buffer_bytes)),
        buffer_bytes,
        flush: Arc::new(Notify::new()),
    };
    // Parts cut by their shards are each a batch already.
    let batcher = match sink.batching() {
        Batching::Shared => Some(Batcher::new(limits.batch)),
        Batching::PerShard => None,
    };
    let driver = Driver {
        slots: Arc::new(Semaphore::new(sink.concurrency().max(1))),
        sink,
        metrics,
        health,
        in_flight: JoinSet::new(),
    };
    let task = tokio::spawn(driver.run(rx, batcher, handle.flush.clone()));
    (handle, task)
}

struct Driver<S> {
    sink: Arc<S>,
    metrics: Arc<WorkerMetrics>,
    health: Arc<SinkHealth>,
    /// One per delivery the sink takes at once. A delivery holds its slot
    /// while it retries, except one whose documents have been refused for
    /// long (an index that takes nothing): it waits without, so the rest of
    /// the worker's documents go on past it.
    slots: Arc<Semaphore>,
    in_flight: JoinSet<()>,
}

impl<S: Sink> Driver<S> {
    async fn run(
        mut self,
        mut parts: mpsc::UnboundedReceiver<Part>,
        mut batcher: Option<Batcher>,
        flush: Arc<Notify>,
    ) {
        loop {
            let due = batcher.as_ref().and_then(Batcher::due);
            tokio::select! {
                part = parts.recv() => match part {
                    Some(part) => self.take(part, &mut batcher).await,
                    None => break,
                },
                () = sleep_until(due), if due.is_some() => {
                    if let Some(batch) = batcher.as_mut().and_then(Batcher::take) {
                        self.launch(batch).await;
                    }
                }
                () = flush.notified() => {
                    // Parts handed over before the flush was asked for go with it.
                    while let Ok(part) = parts.try_recv() {
                        self.take(part, &mut batcher).await;
                    }
                    if let Some(batch) = batcher.as_mut().and_then(Batcher::take) {
                        self.launch(batch).await;
                    }
                }
                Some(done) = self.in_flight.join_next(), if !self.in_flight.is_empty() => reap(done),
            }
        }
        if let Some(batch) = batcher.as_mut().and_then(Batcher::take) {
            self.launch(batch).await;
        }
        while let Some(done) = self.in_flight.join_next().await {
            reap(done);
        }
    }

    /// Adds a part to the open batch (launching those it fills), or
    /// delivers it alone for a sink that batches per shard.
    async fn take(&mut self, part: Part, batcher: &mut Option<Batcher>) {
        match batcher {
            Some(batcher) => {
                for batch in batcher.push(part, Instant::now()) {
                    self.launch(batch).await;
                }
            }
            None => self.launch(Batch::of(part)).await,
        }
    }

    /// Starts delivering `batch` once a slot is free.
    async fn launch(&mut self, batch: Batch) {
        let slot = loop {
            tokio::select! {
                slot = self.slots.clone().acquire_owned() => break slot.expect("never closed"),
                Some(done) = self.in_flight.join_next(), if !self.in_flight.is_empty() => reap(done),
            }
        };
        let (sink, metrics, health) =
            (self.sink.clone(), self.metrics.clone(), self.health.clone());
        let slots = self.slots.clone();
        self.in_flight
            .spawn(deliver(sink, batch, metrics, health, (slots, Some(slot))));
    }
}

fn reap(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        // The batch's parts were dropped unacknowledged: their shards' watermarks
        // hold, and the next holder reads them again.
        tracing::error!(error = %e, "a delivery task panicked");
    }
}

/// How long documents may be refused for now (throttled, a shard not yet
/// allocated) before the status says the sink is failing.
const REFUSED_FOR_LONG: Duration = Duration::from_secs(10);

/// Delivers a batch until every document is stored (or is stored nowhere,
/// which fails its part and stops its shard), retrying with backoff. Parts
/// whose shard task has gone are abandoned before each attempt.
async fn deliver<S: Sink>(
    sink: Arc<S>,
    batch: Batch,
    metrics: Arc<WorkerMetrics>,
    health: Arc<SinkHealth>,
    (slots, mut slot): (Arc<Semaphore>, Option<OwnedSemaphorePermit>),
) {
    // Capped at 10 s: once the sink is back, the backlog drains within seconds.
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    let trouble = health.watch();
    // Since when documents of this batch are refused for now, attempt after
    // attempt: a moment of throttling is not a failing sink, a minute is.
    let mut refused_since = None;
    let mut pending = Some(batch);
    while let Some(mut batch) = pending.take() {
        let abandoned = batch.abandon();
        if abandoned > 0 {
            metrics.abandoned_events.inc_by(abandoned as u64);
            tracing::debug!(
                documents = abandoned,
                "their shard's lease went to another worker; not delivering them"
            );
        }
        if batch.is_empty() {
            return;
        }
        if slot.is_none() {
            slot = Some(slots.clone().acquire_owned().await.expect("never closed"));
        }
        let started = Instant::now();
        let result = sink.deliver(&batch).await;
        metrics
            .sink_request_seconds
            .observe(started.elapsed().as_secs_f64());
        metrics.sink_requests.inc();
        match result {
            Ok(delivered) => {
                count(&metrics, &batch, &delivered);
                let refused = !delivered.retry.is_empty();
                if refused {
                    let since = *refused_since.get_or_insert(started);
                    let why = refusal(&batch, &delivered);
                    if why.category == "unwritable" || since.elapsed() >= REFUSED_FOR_LONG {
                        trouble.failed(&why);
                        slot = None;
                    }
                } else {
                    refused_since = None;
                    trouble.ok();
                    backoff.reset();
                }
                pending = batch.settle(&delivered);
                if refused {
                    let wait = backoff.next_wait();
                    tracing::debug!(
                        documents = pending.as_ref().map_or(0, Batch::len),
                        wait_ms = wait.as_millis() as u64,
                        "documents refused for now; retrying them"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
            Err(e) => {
                failed(&metrics, &trouble, &e);
                let wait = backoff.next_wait();
                tracing::warn!(
                    error = %e,
                    category = e.category,
                    documents = batch.len(),
                    wait_ms = wait.as_millis() as u64,
                    "delivery failed; retrying"
                );
                tokio::time::sleep(wait).await;
                pending = Some(batch);
            }
        }
    }
}

/// Why documents of `batch` are sent again, as the status shows it.
fn refusal(batch: &Batch, delivered: &Delivered) -> SinkError {
    let (category, why) = delivered
        .refused
        .as_ref()
        .map_or(("refused_for_now", ""), |r| {
            (r.category, r.message.as_str())
        });
    SinkError::new(
        category,
        format!(
            "{} of {} documents refused: {why}",
            delivered.retry.len(),
            batch.len()
        ),
    )
}

/// Counts what the sink made of an attempt.
fn count(metrics: &WorkerMetrics, batch: &Batch, delivered: &Delivered) {
    let refused = delivered.retry.len() + delivered.dead_lettered.len() + delivered.failed.len();
    metrics
        .sent_events
        .inc_by(batch.len().saturating_sub(refused) as u64);
    let resent: usize = if delivered.retry.is_empty() {
        0
    } else {
        let mut retry = delivered.retry.clone();
        retry.sort_unstable();
        batch
            .docs()
            .enumerate()
            .filter(|(i, _)| retry.binary_search(i).is_ok())
            .map(|(_, d)| d.len())
            .sum()
    };
    metrics
        .sent_bytes
        .inc_by(batch.byte_len().saturating_sub(resent) as u64);
    metrics
        .sink_dead_lettered_events
        .inc_by(delivered.dead_lettered.len() as u64);
    for (_, reason) in &delivered.failed {
        metrics.sink_failed_events.inc();
        tracing::error!(%reason, "a document and its dead letter were both refused; its shard stops there");
    }
    metrics
        .sink_retried_events
        .inc_by(delivered.retry.len() as u64);
}

fn failed(metrics: &WorkerMetrics, trouble: &Trouble, e: &SinkError) {
    trouble.failed(e);
    metrics
        .sink_errors
        .get_or_create(&SinkErrorLabels {
            error_type: e.category.to_owned(),
        })
        .inc();
    metrics
        .errors
        .get_or_create(&ErrorLabels::sending(e.category))
        .inc();
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::worker::sink::batch::tests::{part, seq};
    use crate::worker::sink::batch::{Acked, Stored};
    use crate::worker::sink::{Delivered, NdJson};

    /// Keeps what it is given; fails the first `fail` deliveries, then asks to
    /// retry every document whose text starts with `r` once.
    #[derive(Default)]
    struct Recorder {
        fail: AtomicUsize,
        stored: Mutex<Vec<String>>,
        retried: Mutex<Vec<String>>,
    }

    impl Sink for Recorder {
        type Encoder = NdJson;

        fn encoder(&self) -> &NdJson {
            &NdJson
        }

        async fn deliver(&self, batch: &Batch) -> Result<Delivered, SinkError> {
            if self
                .fail
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(SinkError::new("unavailable", "down"));
            }
            let mut retry = Vec::new();
            let mut retried = self.retried.lock().unwrap();
            for (i, doc) in batch.docs().enumerate() {
                let doc = String::from_utf8(doc.to_vec()).unwrap();
                if doc.starts_with('r') && !retried.contains(&doc) {
                    retried.push(doc);
                    retry.push(i);
                } else {
                    self.stored.lock().unwrap().push(doc);
                }
            }
            Ok(Delivered {
                retry,
                ..Delivered::default()
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn delivers_everything_through_failures_and_retries_then_acks_in_full() {
        let sink = Arc::new(Recorder::default());
        sink.fail.store(2, Ordering::Relaxed);
        let metrics = Arc::new(WorkerMetrics::default());
        let health = Arc::new(SinkHealth::default());
        let limits = DriverLimits::new(BatchLimits::new(3, 1 << 20, Duration::from_millis(50)), 1);
        let (handle, task) = spawn(sink.clone(), limits, metrics.clone(), health.clone());
        let (tx, mut acks) = mpsc::unbounded_channel();
        let inputs = [
            (vec!["a", "b"], 1),
            (vec!["r1", "c"], 2),
            (vec!["d"], 3),
            (vec!["r2"], 4),
        ];
        for (docs, n) in &inputs {
            let p = part(docs, *n, &tx);
            let room = handle.reserve(p.encoded().byte_len()).await.unwrap();
            handle.send(p, room).unwrap();
        }
        let mut acked = Vec::new();
        while acked.len() < inputs.len() {
            acked.push(acks.recv().await.unwrap());
        }
        let documents: Vec<usize> = acked
            .iter()
            .map(|a: &Acked| a.result.as_ref().map_or(0, |s: &Stored| s.documents))
            .collect();
        assert_eq!(documents.iter().sum::<usize>(), 6);
        let mut stored = sink.stored.lock().unwrap().clone();
        stored.sort();
        assert_eq!(stored, ["a", "b", "c", "d", "r1", "r2"]);
        assert_eq!(metrics.sent_events.get(), 6);
        assert_eq!(health.error(), None, "recovered");
        assert_eq!(
            metrics
                .sink_errors
                .get_or_create(&SinkErrorLabels {
                    error_type: "unavailable".into()
                })
                .get(),
            2
        );
        drop(handle);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_buffer_makes_senders_wait_until_delivery_frees_room() {
        let sink = Arc::new(Recorder::default());
        sink.fail.store(usize::MAX, Ordering::Relaxed);
        let limits = DriverLimits {
            buffer_bytes: 4,
            ..DriverLimits::new(BatchLimits::new(100, 100, Duration::ZERO), 1)
        };
        let health = Arc::new(SinkHealth::default());
        let (handle, _task) = spawn(sink.clone(), limits, Arc::default(), health.clone());
        let (tx, _acks) = mpsc::unbounded_channel();
        let room = handle.reserve(3).await.unwrap();
        handle.send(part(&["abc"], 1, &tx), room).unwrap();
        // The sink keeps failing: the part holds its room, so no room for 2 more.
        let waiting = tokio::time::timeout(Duration::from_secs(60), handle.reserve(2)).await;
        assert!(waiting.is_err(), "must wait while the buffer is full");
        assert_eq!(health.error().as_deref(), Some("unavailable: down"));
        sink.fail.store(0, Ordering::Relaxed);
        let room = tokio::time::timeout(Duration::from_secs(60), handle.reserve(2)).await;
        assert!(room.is_ok(), "delivery gave the room back");
    }

    /// Refuses every document that starts with `x` while `blocked` (its index
    /// takes nothing), and every document for the first `throttled` attempts.
    /// Notes the health the worker would publish at each attempt.
    #[derive(Default)]
    struct Refusing {
        blocked: std::sync::atomic::AtomicBool,
        throttled: AtomicUsize,
        stored: Mutex<Vec<String>>,
        health: Mutex<Option<Arc<SinkHealth>>>,
        seen: Mutex<Vec<Option<String>>>,
    }

    impl Sink for Refusing {
        type Encoder = NdJson;

        fn encoder(&self) -> &NdJson {
            &NdJson
        }

        async fn deliver(&self, batch: &Batch) -> Result<Delivered, SinkError> {
            let health = self.health.lock().unwrap().clone().unwrap();
            self.seen.lock().unwrap().push(health.error());
            let throttled = self
                .throttled
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok();
            let mut delivered = Delivered::default();
            for (i, doc) in batch.docs().enumerate() {
                let doc = String::from_utf8(doc.to_vec()).unwrap();
                if doc.starts_with('x') && self.blocked.load(Ordering::Relaxed) {
                    delivered.retry.push(i);
                    delivered.refused = Some(SinkError::new(
                        "unwritable",
                        "403 cluster_block_exception: index [old] blocked",
                    ));
                } else if throttled {
                    delivered.retry.push(i);
                    delivered.refused = Some(SinkError::new(
                        "refused_for_now",
                        "429 es_rejected_execution_exception",
                    ));
                } else {
                    self.stored.lock().unwrap().push(doc);
                }
            }
            Ok(delivered)
        }
    }

    fn refusing(sink: Refusing) -> (Arc<Refusing>, Arc<SinkHealth>) {
        let health = Arc::new(SinkHealth::default());
        *sink.health.lock().unwrap() = Some(health.clone());
        (Arc::new(sink), health)
    }

    #[tokio::test(start_paused = true)]
    async fn a_document_its_index_refuses_holds_only_its_part_and_stays_on_the_status() {
        let (sink, health) = refusing(Refusing {
            blocked: true.into(),
            ..Refusing::default()
        });
        // One delivery at a time: the stuck one must not keep it.
        let limits = DriverLimits::new(BatchLimits::new(10, 1 << 20, Duration::from_millis(50)), 1);
        let (handle, _task) = spawn(sink.clone(), limits, Arc::default(), health.clone());
        let (tx, mut acks) = mpsc::unbounded_channel();
        let send = |docs: &[&str], n| {
            let (handle, p) = (handle.clone(), part(docs, n, &tx));
            async move {
                let room = handle.reserve(p.encoded().byte_len()).await.unwrap();
                handle.send(p, room).unwrap();
            }
        };
        send(&["x-late"], 1).await;
        send(&["a"], 2).await;
        assert_eq!(
            acks.recv().await.unwrap().sequence,
            seq(2),
            "delivered beside it"
        );
        let said = health.error().unwrap_or_default();
        assert!(
            said.starts_with("unwritable: 1 of 2 documents refused: 403 cluster_block_exception"),
            "{said}"
        );
        for n in 3..6 {
            send(&["b"], n).await;
            assert_eq!(acks.recv().await.unwrap().sequence, seq(n), "and after it");
            assert!(health.error().is_some(), "their success does not hide it");
        }
        sink.blocked.store(false, Ordering::Relaxed);
        let acked = acks.recv().await.unwrap();
        assert_eq!((acked.sequence, acked.result.is_ok()), (seq(1), true));
        assert_eq!(health.error(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_for_a_moment_are_no_failure_and_for_long_are() {
        let (sink, health) = refusing(Refusing {
            throttled: 9.into(),
            ..Refusing::default()
        });
        let limits = DriverLimits::new(BatchLimits::new(10, 1 << 20, Duration::from_millis(50)), 1);
        let (handle, _task) = spawn(sink.clone(), limits, Arc::default(), health.clone());
        let (tx, mut acks) = mpsc::unbounded_channel();
        let p = part(&["a"], 1, &tx);
        let room = handle.reserve(p.encoded().byte_len()).await.unwrap();
        handle.send(p, room).unwrap();
        assert!(acks.recv().await.unwrap().result.is_ok());
        let seen = sink.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 10);
        // Waits from 100 ms, doubling, each jittered to between half and all
        // of it: the first 6 come to under 10 s, the first 8 to over.
        assert!(seen[..8].iter().all(Option::is_none), "{seen:?}");
        assert_eq!(
            seen[9].as_deref(),
            Some("refused_for_now: 1 of 1 documents refused: 429 es_rejected_execution_exception")
        );
        assert_eq!(health.error(), None, "stored at last");
        assert_eq!(sink.stored.lock().unwrap().as_slice(), ["a"]);
    }
}
