//! Reading one shard within the Kinesis limits: at most 5 GetRecords calls a second
//! and 2 MB/s per shard, shared by every consumer; back off when throttled; get a
//! new iterator when one expires; report the end of a closed shard with its children.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::aws::kinesis::{Record, StartPosition, Stream};
use crate::aws::{AwsError, ErrorClass};
use crate::contract::SequenceNumber;
use crate::retry::Backoff;

/// Pace and size of the reads.
#[derive(Clone, Debug)]
pub struct ReaderLimits {
    /// Least time between two GetRecords calls (Kinesis allows 5 a second per shard).
    pub min_interval: Duration,
    /// Bytes a second this reader may take (Kinesis allows 2 MB/s per shard).
    pub max_bytes_per_second: u64,
    /// Records asked for per call (Kinesis caps it at 10000).
    pub records_per_call: i32,
    /// Wait after a call that found nothing new.
    pub idle: Duration,
    /// Cap of the backoff after throttling or transient failures.
    pub max_backoff: Duration,
    /// How long reads may fail (or time out) in a row before the reader says
    /// so, while it goes on retrying: the shard is then shown unhealthy
    /// rather than held silently.
    pub stall_after: Duration,
}

impl Default for ReaderLimits {
    fn default() -> Self {
        ReaderLimits {
            min_interval: Duration::from_millis(200),
            max_bytes_per_second: 2 << 20,
            records_per_call: 10_000,
            idle: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            stall_after: Duration::from_secs(30),
        }
    }
}

/// What one read gave.
#[derive(Debug, PartialEq)]
pub enum Read {
    /// Records, in order (possibly none).
    Records {
        /// The records.
        records: Vec<Record>,
        /// How far behind the tip, when Kinesis says.
        millis_behind_latest: Option<i64>,
    },
    /// The shard is closed and fully read; its children take over.
    End {
        /// The child shards.
        children: Vec<String>,
    },
    /// Reads have been failing for longer than `stall_after`; the reader
    /// goes on retrying.
    Stalled {
        /// The last failure.
        error: String,
    },
}

/// A reader of one shard.
pub struct ShardReader {
    stream: Stream,
    shard: String,
    start: StartPosition,
    limits: ReaderLimits,
    iterator: Option<String>,
    last: Option<SequenceNumber>,
    ended: Option<Vec<String>>,
    next_call: Instant,
    backoff: Backoff,
    /// Since when reads have been failing, and whether that was said.
    failing: Option<(Instant, bool)>,
    /// Records asked for per call: about a second's worth at the byte limit,
    /// from the size of the records read so far, so that a shard of large
    /// records holds a few MiB in reads, not the 10 MiB Kinesis may answer.
    per_call: i32,
}

impl ShardReader {
    /// A reader of `shard` from `start` (a checkpoint, or the configured position).
    pub fn new(
        stream: Stream,
        shard: impl Into<String>,
        start: StartPosition,
        limits: ReaderLimits,
    ) -> ShardReader {
        let limits_backoff = limits.max_backoff;
        let limits_records = limits.records_per_call;
        ShardReader {
            stream,
            shard: shard.into(),
            start,
            limits,
            iterator: None,
            last: None,
            ended: None,
            next_call: Instant::now(),
            backoff: Backoff::new(Duration::from_millis(100), limits_backoff),
            failing: None,
            per_call: limits_records,
        }
    }

    /// The shard read.
    pub fn shard(&self) -> &str {
        &self.shard
    }

    /// The next records, waiting as the limits require. Throttling, transient
    /// failures and expired iterators are handled here; other errors are returned.
    pub async fn next(&mut self) -> Result<Read, AwsError> {
        if let Some(children) = self.ended.take() {
            return Ok(Read::End { children });
        }
        loop {
            tokio::time::sleep_until(self.next_call).await;
            // A call that hangs until its deadline counts from its start.
            let started = Instant::now();
            match self.call().await {
                Ok(read) => {
                    self.backoff.reset();
                    self.failing = None;
                    return Ok(read);
                }
                Err(e) if e.class == ErrorClass::ExpiredIterator => {
                    tracing::info!(shard = %self.shard, "shard iterator expired; getting a new one");
                    self.iterator = None;
                }
                Err(e) if matches!(e.class, ErrorClass::Throttled | ErrorClass::Transient) => {
                    let wait = self.backoff.next_wait();
                    tracing::warn!(shard = %self.shard, error = %e, class = e.category(), wait_ms = wait.as_millis() as u64, "read failed; retrying");
                    self.next_call = Instant::now() + wait;
                    let (since, said) = self.failing.get_or_insert((started, false));
                    if !*said && since.elapsed() >= self.limits.stall_after {
                        *said = true;
                        return Ok(Read::Stalled {
                            error: format!(
                                "no read has succeeded for {}s: {}: {}",
                                since.elapsed().as_secs(),
                                e.code,
                                e.message
                            ),
                        });
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn call(&mut self) -> Result<Read, AwsError> {
        let iterator = match self.iterator.take() {
            Some(i) => i,
            None => {
                // Resume right after the last record read, else at the start position.
                let position = self
                    .last
                    .clone()
                    .map_or_else(|| self.start.clone(), StartPosition::After);
                self.stream.iterator(&self.shard, &position).await?
            }
        };
        let page = match self.stream.records(&iterator, self.per_call).await {
            Ok(page) => page,
            Err(e) => {
                if e.class != ErrorClass::ExpiredIterator {
                    self.iterator = Some(iterator); // still good: retry with it
                }
                return Err(e);
            }
        };
        let bytes: u64 = page.records.iter().map(|r| r.data.len() as u64).sum();
        if let Some(average) = bytes.checked_div(page.records.len() as u64) {
            let fits = self.limits.max_bytes_per_second / average.max(1);
            self.per_call = i32::try_from(fits)
                .unwrap_or(i32::MAX)
                .clamp(1, self.limits.records_per_call);
        }
        let budget =
            Duration::from_secs_f64(bytes as f64 / self.limits.max_bytes_per_second as f64);
        let pause = if page.records.is_empty() {
            self.limits.idle
        } else {
            budget.max(self.limits.min_interval)
        };
        self.next_call = Instant::now() + pause;
        if let Some(last) = page.records.last() {
            self.last = Some(last.sequence.clone());
        }
        match page.next_iterator {
            Some(next) => self.iterator = Some(next),
            None if page.records.is_empty() => {
                return Ok(Read::End {
                    children: page.child_shards,
                });
            }
            None => self.ended = Some(page.child_shards),
        }
        Ok(Read::Records {
            records: page.records,
            millis_behind_latest: page.millis_behind_latest,
        })
    }
}

/// Hands a shard's reads from its reader to its task, each only once the task
/// asks for it: a shard whose documents wait on a stalled sink holds the read
/// it works through and no second one, whatever the size of its reads.
pub fn reads_on_demand() -> (ReadSender, Reads) {
    let (tx, rx) = mpsc::channel(1);
    let wanted = Arc::new(Notify::new());
    (
        ReadSender {
            tx,
            wanted: wanted.clone(),
        },
        Reads {
            rx,
            wanted,
            asked: false,
        },
    )
}

/// The reader's end of [`reads_on_demand`].
#[derive(Debug)]
pub struct ReadSender {
    tx: mpsc::Sender<Result<Read, AwsError>>,
    wanted: Arc<Notify>,
}

impl ReadSender {
    /// Waits until the task asks for a read; false once the task is gone.
    pub async fn wanted(&self) -> bool {
        tokio::select! {
            () = self.wanted.notified() => true,
            () = self.tx.closed() => false,
        }
    }

    /// Hands the task a read; false once the task is gone.
    pub async fn send(&self, read: Result<Read, AwsError>) -> bool {
        self.tx.send(read).await.is_ok()
    }
}

/// The task's end of [`reads_on_demand`].
#[derive(Debug)]
pub struct Reads {
    rx: mpsc::Receiver<Result<Read, AwsError>>,
    wanted: Arc<Notify>,
    /// A read is asked for and has not come yet.
    asked: bool,
}

impl Reads {
    /// Asks for the next read. Asking again before it came asks for no more.
    pub fn want(&mut self) {
        if !self.asked {
            self.asked = true;
            self.wanted.notify_one();
        }
    }

    /// The read asked for; `None` once the reader is gone. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Result<Read, AwsError>> {
        let read = self.rx.recv().await;
        self.asked = false;
        read
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    fn read() -> Result<Read, AwsError> {
        Ok(Read::Records {
            records: Vec::new(),
            millis_behind_latest: None,
        })
    }

    /// The reader makes a call only once the shard task asks, and asking twice
    /// before the read came asks for one read.
    #[tokio::test]
    async fn a_read_is_made_only_once_asked_for() {
        let (sender, mut reads) = reads_on_demand();
        assert_eq!(sender.wanted().now_or_never(), None, "nothing asked yet");
        reads.want();
        reads.want();
        assert_eq!(sender.wanted().now_or_never(), Some(true));
        assert_eq!(sender.wanted().now_or_never(), None, "one read asked for");
        // Asked again after the reader took the question, before the read came.
        reads.want();
        assert_eq!(sender.wanted().now_or_never(), None, "still one read");
        assert!(sender.send(read()).await);
        assert_eq!(reads.recv().await.map(|r| r.is_ok()), Some(true));
        reads.want();
        assert_eq!(sender.wanted().now_or_never(), Some(true), "the next one");
        drop(reads);
        assert!(!sender.wanted().await, "the task is gone");
        assert!(!sender.send(read()).await);
    }
}
