//! Exponential backoff with jitter, for every retry loop in the process.

use std::time::Duration;

/// Doubling waits between `min` and `max`, each jittered so that many retrying
/// tasks spread out.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Waits from `min` doubling up to `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            current: Duration::ZERO,
        }
    }

    /// The next wait: twice the last (at least `min`, at most `max`), jittered.
    pub fn next_wait(&mut self) -> Duration {
        self.current = (self.current * 2).clamp(self.min, self.max);
        jitter(self.current)
    }

    /// Starts again from `min` after a success.
    pub fn reset(&mut self) {
        self.current = Duration::ZERO;
    }
}

/// Between half and all of `d`, from the clock's low bits (spreads retries of
/// many tasks; no cryptographic quality needed).
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    d / 2 + d.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_and_all() {
        for ms in [100u64, 1000, 10_000] {
            let d = Duration::from_millis(ms);
            let j = jitter(d);
            assert!(j >= d / 2 && j <= d, "{j:?} for {d:?}");
        }
    }

    #[test]
    fn waits_double_up_to_the_cap_and_reset() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(350));
        let caps: Vec<Duration> = (0..4)
            .map(|_| {
                b.next_wait();
                b.current
            })
            .collect();
        assert_eq!(caps, [ms(100), ms(200), ms(350), ms(350)]);
        b.reset();
        let w = b.next_wait();
        assert!(w >= ms(50) && w <= ms(100));
    }
}
