//! Ratios measured by alternation: the baseline and logsub take turns within
//! one process, so a machine whose speed drifts during the run (frequency,
//! neighbours, a cold cache) moves both sides of each round alike. Each round
//! gives one ratio; the median of the rounds is the figure, the lowest and
//! highest its spread.
#![allow(dead_code)] // each benchmark uses a different part

use std::fmt;

/// CPU time this thread has run, in nanoseconds (the scheduler's per-thread
/// accounting: exact, and blind to time the thread spent preempted).
pub fn thread_cpu() -> u64 {
    schedstat("/proc/thread-self/schedstat").expect("/proc/thread-self/schedstat")
}

/// CPU time of every thread of this process so far, in nanoseconds.
pub fn process_cpu() -> u64 {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| schedstat(task.ok()?.path().join("schedstat")))
        .sum()
}

fn schedstat(path: impl AsRef<std::path::Path>) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Samples of one quantity: the median, and the lowest and highest.
#[derive(Clone, Debug)]
pub struct Spread {
    /// The samples, sorted.
    pub sorted: Vec<f64>,
}

impl Spread {
    /// The spread of `samples` (at least one).
    pub fn of(mut samples: Vec<f64>) -> Spread {
        assert!(!samples.is_empty(), "no samples");
        samples.sort_by(f64::total_cmp);
        Spread { sorted: samples }
    }

    /// The median (the mean of the middle two for an even count).
    pub fn median(&self) -> f64 {
        let n = self.sorted.len();
        if n % 2 == 1 {
            self.sorted[n / 2]
        } else {
            (self.sorted[n / 2 - 1] + self.sorted[n / 2]) / 2.0
        }
    }

    /// The lowest sample.
    pub fn low(&self) -> f64 {
        self.sorted[0]
    }

    /// The highest sample.
    pub fn high(&self) -> f64 {
        self.sorted[self.sorted.len() - 1]
    }
}

impl fmt::Display for Spread {
    /// `0.42 (0.39–0.45, 9 rounds)`, with the precision asked for.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = f.precision().unwrap_or(2);
        write!(
            f,
            "{:.p$} ({:.p$}–{:.p$}, {} rounds)",
            self.median(),
            self.low(),
            self.high(),
            self.sorted.len()
        )
    }
}

/// What `rounds` alternations of two throughputs gave: each side's samples
/// and the ratio `ours / baseline` of each round.
#[derive(Clone, Debug)]
pub struct Alternated {
    /// The baseline's throughputs.
    pub baseline: Spread,
    /// logsub's throughputs.
    pub ours: Spread,
    /// `ours / baseline`, round by round.
    pub ratio: Spread,
}

/// Runs `baseline` then `ours`, `rounds` times, each call returning a
/// throughput (higher is better); the order within a round alternates too,
/// so neither side always runs on a cache the other warmed.
pub fn alternate(
    rounds: usize,
    mut baseline: impl FnMut() -> f64,
    mut ours: impl FnMut() -> f64,
) -> Alternated {
    let (mut b, mut o, mut r) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds.max(1) {
        let (base, logsub) = if round % 2 == 0 {
            let base = baseline();
            (base, ours())
        } else {
            let logsub = ours();
            (baseline(), logsub)
        };
        b.push(base);
        o.push(logsub);
        r.push(logsub / base);
    }
    Alternated {
        baseline: Spread::of(b),
        ours: Spread::of(o),
        ratio: Spread::of(r),
    }
}
