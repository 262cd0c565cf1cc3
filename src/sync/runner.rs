//! The rate limiter in front of the sync function, as a state machine over an injected
//! clock (any monotonic `Duration`), in the release's form ([`RunnerRule`]):
//!
//! * v1.30's BoundedFrequencyRunner (spec §6.3): token bucket of `burst` runs refilled at
//!   one per `min_interval`; a run at least every `max_interval`; `retry_after` pulls the
//!   next run forward.
//! * Newer (spec §8.3 S2): no burst; the next run waits `min_interval` after the last one
//!   completed (at once if that run itself took longer than `min_interval`); a run every
//!   `max_interval` after the last; a failed run is retried `retry` after it, and a
//!   successful one cancels a pending retry.

use crate::compat::RunnerRule;
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
    rule: RunnerRule,
    /// Newer rule: start and end of the last run; the pending retry.
    last_end: Option<Duration>,
    last_took: Duration,
    retry_at: Option<Duration>,
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
            rule: RunnerRule::BoundedFrequency,
            last_end: None,
            last_took: Duration::ZERO,
            retry_at: None,
        }
    }

    /// v1.30's parameters.
    pub fn upstream(min_sync_period: Duration, now: Duration) -> Runner {
        Runner::new(min_sync_period, Duration::from_secs(3600), 2, now)
    }

    /// The release's runner: max interval one hour in both.
    pub fn for_rule(rule: RunnerRule, min_sync_period: Duration, now: Duration) -> Runner {
        let burst = match rule {
            RunnerRule::BoundedFrequency => 2,
            RunnerRule::WaitAfterRun => 1,
        };
        Runner {
            rule,
            ..Runner::new(min_sync_period, Duration::from_secs(3600), burst, now)
        }
    }

    /// A run that started at `started` (through [`Step::Run`] or directly) ended at `now`;
    /// `ok`: the sync succeeded. A failure is retried `retry` later.
    pub fn finished(&mut self, started: Duration, now: Duration, ok: bool, retry: Duration) {
        match self.rule {
            RunnerRule::BoundedFrequency => {
                if !ok {
                    self.retry_after(started, retry);
                }
            }
            RunnerRule::WaitAfterRun => {
                self.last_end = Some(now);
                self.last_took = now.saturating_sub(started);
                self.deadline = now + self.max_interval;
                self.retry_at = (!ok).then_some(now + retry);
            }
        }
    }

    /// Newer rule: the earliest start of the next run.
    fn allowed_at(&self, now: Duration) -> Duration {
        match self.last_end {
            None => now,
            Some(end) if self.last_took > self.min_interval => end,
            Some(end) => end + self.min_interval,
        }
    }

    fn step_wait_after_run(&mut self, now: Duration) -> Step {
        let timer = self
            .retry_at
            .map_or(self.deadline, |r| r.min(self.deadline));
        let due = self.requested || now >= timer;
        let allowed = self.allowed_at(now);
        if due && now >= allowed {
            self.requested = false;
            self.last_run = Some(now);
            return Step::Run;
        }
        Step::SleepUntil(if due { allowed } else { timer.max(allowed) })
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
        if self.rule == RunnerRule::WaitAfterRun {
            return self.step_wait_after_run(now);
        }
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

    mod wait_after_run {
        use super::*;

        fn runner(min: f64) -> Runner {
            Runner::for_rule(RunnerRule::WaitAfterRun, secs(min), Duration::ZERO)
        }

        /// Runs at `t` for `took` seconds, successfully or not (retry 30 s).
        fn run(r: &mut Runner, t: f64, took: f64, ok: bool) {
            assert_eq!(r.step(secs(t)), Step::Run, "at {t}");
            r.finished(secs(t), secs(t + took), ok, secs(30.0));
        }

        #[test]
        fn no_burst_min_interval_counts_from_completion() {
            let mut r = runner(1.0);
            r.request();
            run(&mut r, 10.0, 0.5, true);
            r.request();
            // v1.30 would run again at once (burst 2); here 1 s after the end at 10.5.
            assert_eq!(r.step(secs(10.5)), Step::SleepUntil(secs(11.5)));
            assert_eq!(r.step(secs(11.4)), Step::SleepUntil(secs(11.5)));
            run(&mut r, 11.5, 0.1, true);
            assert_eq!(r.step(secs(11.6)), Step::SleepUntil(secs(3611.6)));
        }

        #[test]
        fn a_request_during_a_long_run_runs_right_after_it() {
            let mut r = runner(1.0);
            r.request();
            assert_eq!(r.step(secs(0.0)), Step::Run);
            r.request(); // arrives while the 3 s run is going on
            r.finished(secs(0.0), secs(3.0), true, secs(30.0));
            assert_eq!(r.step(secs(3.0)), Step::Run);
        }

        #[test]
        fn failures_retry_after_sync_period_and_success_cancels_it() {
            let mut r = runner(1.0);
            r.request();
            run(&mut r, 0.0, 0.2, false);
            assert_eq!(r.step(secs(1.0)), Step::SleepUntil(secs(30.2)));
            run(&mut r, 30.2, 0.2, false);
            // A request before the retry runs it (after min interval) and succeeds...
            r.request();
            run(&mut r, 31.4, 0.1, true);
            // ...which cancels the retry: next is the hourly run.
            assert_eq!(r.step(secs(60.4)), Step::SleepUntil(secs(3631.5)));
            assert_eq!(r.step(secs(3631.5)), Step::Run);
        }

        #[test]
        fn zero_min_interval_runs_every_request() {
            let mut r = runner(0.0);
            for i in 0..5 {
                r.request();
                run(&mut r, 5.0 + f64::from(i) * 0.01, 0.0, true);
            }
        }
    }

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
