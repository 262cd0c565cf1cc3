//! The rate limiter in front of the sync function: v1.30's BoundedFrequencyRunner
//! (spec §6.3) as a state machine over an injected clock (any monotonic `Duration`).
//!
//! Token bucket of `burst` runs refilled at one per `min_interval`; a run at least every
//! `max_interval`; `retry_after` pulls the next run forward.

use std::time::Duration;

/// What the driver should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Run the sync function now (the runner has already counted the run).
    Run,
    /// Nothing to do before this time (unless a request arrives).
    SleepUntil(Duration),
}

#[derive(Clone, Debug)]
pub struct Runner {
    min_interval: Duration,
    max_interval: Duration,
    burst: f64,
    tokens: f64,
    refilled_at: Duration,
    last_run: Option<Duration>,
    /// When the timer fires next.
    deadline: Duration,
    requested: bool,
}

impl Runner {
    /// Upstream's parameters: `burst` 2, `max_interval` 1 h.
    pub fn new(
        min_interval: Duration,
        max_interval: Duration,
        burst: u32,
        now: Duration,
    ) -> Runner {
        Runner {
            min_interval,
            max_interval,
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            refilled_at: now,
            last_run: None,
            deadline: now + max_interval,
            requested: false,
        }
    }

    pub fn upstream(min_sync_period: Duration, now: Duration) -> Runner {
        Runner::new(min_sync_period, Duration::from_secs(3600), 2, now)
    }

    /// `Run()`: asks for a run; requests coalesce.
    pub fn request(&mut self) {
        self.requested = true;
    }

    /// `RetryAfter(d)`: run no later than `now + d` (the earliest pending retry wins).
    pub fn retry_after(&mut self, now: Duration, d: Duration) {
        self.deadline = self.deadline.min(now + d);
    }

    /// Records a run made outside the limiter (initial and forced syncs): it pushes the
    /// periodic timer back but takes no token, as upstream's direct calls do.
    pub fn ran_directly(&mut self, now: Duration) {
        self.last_run = Some(now);
    }

    fn refill(&mut self, now: Duration) {
        if self.min_interval.is_zero() {
            self.tokens = self.burst;
        } else {
            let dt = now.saturating_sub(self.refilled_at).as_secs_f64();
            self.tokens = (self.tokens + dt / self.min_interval.as_secs_f64()).min(self.burst);
        }
        self.refilled_at = now;
    }

    /// Decides what happens at `now`.
    pub fn step(&mut self, now: Duration) -> Step {
        if !self.requested && now < self.deadline {
            return Step::SleepUntil(self.deadline);
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.requested = false;
            self.last_run = Some(now);
            self.deadline = now + self.max_interval;
            return Step::Run;
        }
        // No token: come back when one is due (upstream: minInterval after the last run,
        // never later than the pending timer). The request stays pending.
        let token_due =
            now + Duration::from_secs_f64((1.0 - self.tokens) * self.min_interval.as_secs_f64());
        let after_last = self.last_run.map_or(now, |t| t + self.min_interval);
        let next = token_due.max(after_last);
        if now >= self.deadline || next < self.deadline {
            self.deadline = next;
        }
        self.requested = true;
        Step::SleepUntil(self.deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn secs(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    #[test]
    fn idle_runner_sleeps_until_max_interval() {
        let mut r = Runner::upstream(S, Duration::ZERO);
        assert_eq!(r.step(Duration::ZERO), Step::SleepUntil(secs(3600.0)));
        // The hourly run happens without a request.
        assert_eq!(r.step(secs(3600.0)), Step::Run);
        assert_eq!(r.step(secs(3600.0)), Step::SleepUntil(secs(7200.0)));
    }

    #[test]
    fn burst_of_two_then_min_interval() {
        let mut r = Runner::upstream(S, Duration::ZERO);
        r.request();
        assert_eq!(r.step(secs(10.0)), Step::Run);
        r.request();
        assert_eq!(r.step(secs(10.0)), Step::Run);
        r.request();
        // Bucket empty: the third waits a full minInterval after the last run.
        assert_eq!(r.step(secs(10.0)), Step::SleepUntil(secs(11.0)));
        // Further requests coalesce into the pending one.
        r.request();
        assert_eq!(r.step(secs(10.5)), Step::SleepUntil(secs(11.0)));
        assert_eq!(r.step(secs(11.0)), Step::Run);
        assert_eq!(r.step(secs(11.0)), Step::SleepUntil(secs(3611.0)));
    }

    #[test]
    fn tokens_refill_at_one_per_min_interval() {
        let mut r = Runner::upstream(secs(2.0), Duration::ZERO);
        for t in [0.0, 0.0] {
            r.request();
            assert_eq!(r.step(secs(t)), Step::Run);
        }
        r.request();
        assert_eq!(r.step(secs(1.0)), Step::SleepUntil(secs(2.0)));
        assert_eq!(r.step(secs(2.0)), Step::Run);
        r.request();
        // One token came back at t=2 and was spent; the next is due at t=4.
        assert_eq!(r.step(secs(2.5)), Step::SleepUntil(secs(4.0)));
    }

    #[test]
    fn zero_min_interval_is_unlimited() {
        let mut r = Runner::upstream(Duration::ZERO, Duration::ZERO);
        for _ in 0..10 {
            r.request();
            assert_eq!(r.step(secs(5.0)), Step::Run);
        }
    }

    #[test]
    fn retry_after_pulls_the_timer_forward_only() {
        let mut r = Runner::upstream(S, Duration::ZERO);
        r.retry_after(secs(1.0), secs(30.0));
        assert_eq!(r.step(secs(1.0)), Step::SleepUntil(secs(31.0)));
        // A later retry does not postpone the earlier one.
        r.retry_after(secs(2.0), secs(60.0));
        assert_eq!(r.step(secs(2.0)), Step::SleepUntil(secs(31.0)));
        assert_eq!(r.step(secs(31.0)), Step::Run);
    }

    #[test]
    fn direct_runs_take_no_token() {
        let mut r = Runner::upstream(S, Duration::ZERO);
        r.ran_directly(Duration::ZERO);
        r.request();
        assert_eq!(r.step(Duration::ZERO), Step::Run);
        r.request();
        assert_eq!(r.step(Duration::ZERO), Step::Run);
    }
}
