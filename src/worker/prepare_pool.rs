//! The threads records are prepared on: one per core, apart from the async
//! runtime, so that decoding a large (or hostile) record never holds a thread
//! where lease renewals run. A fixed set of threads rather than the runtime's
//! blocking pool: each keeps its allocator's memory warm (a record's
//! documents are made and dropped on the same few threads), and there are
//! never more records being prepared, nor more of their documents in memory,
//! than there are cores.

use std::sync::{Arc, Mutex, mpsc};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed pool of threads that run jobs in the order given.
#[derive(Clone)]
pub struct PreparePool {
    jobs: mpsc::Sender<Job>,
}

/// The pool has stopped (its threads are gone).
#[derive(Debug, thiserror::Error)]
#[error("the prepare threads have stopped")]
pub struct Stopped;

impl PreparePool {
    /// A pool of `threads` threads (at least one).
    pub fn new(threads: usize) -> PreparePool {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("logsub-prepare-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only to take the next job.
                        let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a prepare thread");
            }
        }
        PreparePool { jobs }
    }

    /// One thread per core.
    pub fn per_core() -> PreparePool {
        PreparePool::new(std::thread::available_parallelism().map_or(2, usize::from))
    }

    /// Runs `work` on the pool; its result, once done.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Stopped> {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            // A panic is caught here so that the thread serves the next job.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            let _ = done.send(outcome);
        });
        self.jobs.send(job).map_err(|_| Stopped)?;
        match result.await {
            Ok(Ok(value)) => Ok(value),
            _ => Err(Stopped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_off_the_runtime_and_a_panic_is_only_that_job_s() {
        let pool = PreparePool::new(2);
        let name = pool
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert!(name.is_some_and(|n| n.starts_with("logsub-prepare-")));
        assert!(pool.run(|| panic!("a bug")).await.is_err());
        assert_eq!(pool.run(|| 2 + 2).await.unwrap(), 4, "the pool goes on");
    }
}
