//! When a failed list or watch is tried again (sans IO: the caller sleeps). The delay
//! depends on what failed: an API server that answered with an error gets client-go's
//! patient backoff; one that cannot be reached at all is retried at most every few
//! seconds (a refused connection costs it nothing), so a restarted server is found
//! quickly; a 410 Gone (history compacted) relists at once. Any event resets it.

use std::time::Duration;

/// What kind of failure a watch stream reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// 410 Gone / Expired: the server is fine, our resourceVersion is not.
    Gone,
    /// The server answered with an error (5xx, 429, 403, garbage).
    Answered,
    /// No answer: connection refused or reset, timeout, TLS failure.
    Unreachable,
}

/// First delay, and the factor per failure (client-go's reflector).
pub const INITIAL: Duration = Duration::from_millis(800);
/// Longest delay after errors the server answered.
pub const MAX_ANSWERED: Duration = Duration::from_secs(30);
/// Longest delay while the server cannot be reached.
pub const MAX_UNREACHABLE: Duration = Duration::from_millis(3200);

#[derive(Debug, Default)]
pub struct Retry {
    failures: u32,
    /// A Gone relisted at once and nothing succeeded since: the next Gone backs off.
    gone_pending: bool,
}

impl Retry {
    /// An event arrived: the server works.
    pub fn succeeded(&mut self) {
        *self = Retry::default();
    }

    /// The delay before the next try after `f`; `jitter` in [0, 1) spreads clients apart
    /// (the delay is between half and all of the step).
    pub fn failed(&mut self, f: Failure, jitter: f64) -> Duration {
        let cap = match f {
            Failure::Gone if !self.gone_pending => {
                // The server answered: whatever the outage grew the backoff to is over.
                self.failures = 0;
                self.gone_pending = true;
                return Duration::ZERO;
            }
            Failure::Gone | Failure::Answered => MAX_ANSWERED,
            Failure::Unreachable => MAX_UNREACHABLE,
        };
        let step = INITIAL
            .saturating_mul(1u32 << self.failures.min(16))
            .min(cap);
        self.failures = self.failures.saturating_add(1);
        step.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// A number in [0, 1) that differs between calls and processes.
pub fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delays(r: &mut Retry, f: Failure, n: usize) -> Vec<Duration> {
        (0..n).map(|_| r.failed(f, 0.999_999)).collect()
    }

    #[test]
    fn unreachable_server_is_retried_at_most_every_few_seconds() {
        let mut r = Retry::default();
        let d = delays(&mut r, Failure::Unreachable, 8);
        assert!(d[0] < Duration::from_millis(801) && d[0] > Duration::from_millis(799));
        assert!(d.iter().all(|d| *d <= MAX_UNREACHABLE), "{d:?}");
        assert!(*d.last().unwrap() > Duration::from_secs(3), "{d:?}");
        // The smallest jitter halves the step.
        assert_eq!(r.failed(Failure::Unreachable, 0.0), MAX_UNREACHABLE / 2);
    }

    #[test]
    fn gone_after_an_outage_relists_at_once_and_resets_the_backoff() {
        let mut r = Retry::default();
        delays(&mut r, Failure::Unreachable, 10);
        assert_eq!(r.failed(Failure::Gone, 0.5), Duration::ZERO);
        // A second Gone without a success in between backs off, from the start.
        let d = r.failed(Failure::Gone, 0.999_999);
        assert!(d > Duration::from_millis(799) && d <= INITIAL, "{d:?}");
        r.succeeded();
        assert_eq!(r.failed(Failure::Gone, 0.5), Duration::ZERO);
    }

    #[test]
    fn answered_errors_back_off_to_thirty_seconds() {
        let mut r = Retry::default();
        let d = delays(&mut r, Failure::Answered, 12);
        assert!(*d.last().unwrap() > Duration::from_secs(29), "{d:?}");
        assert!(d.iter().all(|d| *d <= MAX_ANSWERED));
        r.succeeded();
        assert!(r.failed(Failure::Answered, 0.999_999) <= INITIAL);
    }

    #[test]
    fn jitter_is_in_range() {
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }
}
