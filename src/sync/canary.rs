//! The KUBE-PROXY-CANARY monitor (spec §1.3) as a state machine: the driver asks what to
//! do at `now` and reports what it saw.

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CanaryAction {
    /// Create the canary chain in mangle, nat and filter.
    Create,
    /// Check whether the mangle canary still exists.
    Check,
    Wait(Duration),
}

#[derive(Clone, Debug)]
pub struct CanaryMonitor {
    period: Duration,
    created: bool,
    next: Duration,
}

/// How long to wait for the nat and filter canaries to vanish too, and how often to look.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
pub const SETTLE_POLL: Duration = Duration::from_millis(100);

impl CanaryMonitor {
    /// Creates the canaries at once, then checks every `period` (syncPeriod).
    pub fn new(period: Duration, now: Duration) -> CanaryMonitor {
        CanaryMonitor {
            period,
            created: false,
            next: now,
        }
    }

    pub fn next_action(&self, now: Duration) -> CanaryAction {
        if now < self.next {
            CanaryAction::Wait(self.next)
        } else if self.created {
            CanaryAction::Check
        } else {
            CanaryAction::Create
        }
    }

    /// Result of a `Create`: on failure retry after a period.
    pub fn created(&mut self, ok: bool, now: Duration) {
        self.created = ok;
        self.next = now + self.period;
    }

    /// Result of a `Check`. Returns true when the tables were flushed: the caller forces a
    /// full sync; the canaries are then created again at once.
    pub fn checked(&mut self, exists: bool, now: Duration) -> bool {
        if exists {
            self.next = now + self.period;
            false
        } else {
            self.created = false;
            self.next = now;
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_check_and_recreate_after_a_flush() {
        let p = Duration::from_secs(30);
        let mut m = CanaryMonitor::new(p, Duration::ZERO);
        assert_eq!(m.next_action(Duration::ZERO), CanaryAction::Create);
        m.created(true, Duration::ZERO);
        assert_eq!(m.next_action(Duration::from_secs(1)), CanaryAction::Wait(p));
        assert_eq!(m.next_action(p), CanaryAction::Check);
        assert!(!m.checked(true, p));
        assert_eq!(m.next_action(p), CanaryAction::Wait(2 * p));
        assert!(m.checked(false, 2 * p));
        assert_eq!(m.next_action(2 * p), CanaryAction::Create);
    }

    #[test]
    fn failed_creation_retries_after_a_period() {
        let p = Duration::from_secs(30);
        let mut m = CanaryMonitor::new(p, Duration::ZERO);
        m.created(false, Duration::ZERO);
        assert_eq!(m.next_action(p), CanaryAction::Create);
    }
}
