//! The proxy health state behind /healthz and /livez (spec §6.5.1), sans IO: times are
//! passed in, so the rules are unit-tested without waiting.

use crate::model::ip::IpFamily;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A point in time as Go's `time.Now()` holds it: wall clock plus monotonic reading.
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    pub wall: SystemTime,
    pub mono: Instant,
}

impl Stamp {
    pub fn now() -> Stamp {
        Stamp {
            wall: SystemTime::now(),
            mono: Instant::now(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct FamilyState {
    last_updated: Option<Stamp>,
    oldest_pending: Option<Stamp>,
}

/// What a probe answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub healthy: bool,
    pub node_eligible: bool,
    /// Formatted like Go's `%q` of the time.
    pub last_updated: String,
    pub current_time: String,
}

#[derive(Debug)]
pub struct ProxyHealth {
    timeout: Duration,
    families: BTreeMap<IpFamily, FamilyState>,
    node_eligible: bool,
    /// Process start, for the `m=+…` suffix.
    start: Instant,
}

impl ProxyHealth {
    /// `timeout` = 2 × syncPeriod.
    pub fn new(timeout: Duration, start: Instant) -> ProxyHealth {
        ProxyHealth {
            timeout,
            families: BTreeMap::new(),
            node_eligible: true,
            start,
        }
    }

    /// A change is waiting for a sync (only the oldest counts).
    pub fn queued_update(&mut self, family: IpFamily, at: Stamp) {
        let f = self.families.entry(family).or_default();
        f.oldest_pending.get_or_insert(at);
    }

    /// The rules of `family` were written successfully.
    pub fn updated(&mut self, family: IpFamily, at: Stamp) {
        let f = self.families.entry(family).or_default();
        f.last_updated = Some(at);
        f.oldest_pending = None;
    }

    /// Node events: not eligible while being deleted or tainted for scale-down.
    pub fn sync_node(&mut self, node: Option<&k8s_openapi::api::core::v1::Node>) {
        self.node_eligible = match node {
            None => true,
            Some(n) => {
                let deleting = n.metadata.deletion_timestamp.is_some();
                let tainted = n
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.as_ref())
                    .is_some_and(|t| t.iter().any(|t| t.key == "ToBeDeletedByClusterAutoscaler"));
                !deleting && !tainted
            }
        };
    }

    pub fn is_healthy(&self, now: Stamp) -> bool {
        self.evaluate(now).0
    }

    fn evaluate(&self, now: Stamp) -> (bool, Option<Stamp>) {
        let mut last: Option<Stamp> = None;
        for f in self.families.values() {
            if let Some(p) = f.oldest_pending {
                if now.mono.saturating_duration_since(p.mono) > self.timeout {
                    return (false, f.last_updated);
                }
            }
            if let Some(u) = f.last_updated {
                if last.is_none_or(|l| u.mono > l.mono) {
                    last = Some(u);
                }
            }
        }
        (true, last)
    }

    pub fn verdict(&self, now: Stamp) -> Verdict {
        let (healthy, last) = self.evaluate(now);
        let current_time = go_time(Some(now), self.start);
        let last_updated = if healthy {
            current_time.clone()
        } else {
            go_time(last, self.start)
        };
        Verdict {
            healthy,
            node_eligible: self.node_eligible,
            last_updated,
            current_time,
        }
    }
}

impl Verdict {
    /// (status, body) of /healthz.
    pub fn healthz(&self) -> (u16, String) {
        let ok = self.healthy && self.node_eligible;
        (
            if ok { 200 } else { 503 },
            format!(
                "{{\"lastUpdated\": {},\"currentTime\": {}, \"nodeEligible\": {}}}",
                self.last_updated, self.current_time, self.node_eligible
            ),
        )
    }

    /// (status, body) of /livez.
    pub fn livez(&self) -> (u16, String) {
        (
            if self.healthy { 200 } else { 503 },
            format!(
                "{{\"lastUpdated\": {},\"currentTime\": {}}}",
                self.last_updated, self.current_time
            ),
        )
    }
}

/// Go's `%q` of a `time.Time` in UTC: `"2024-07-18 10:11:12.123456789 +0000 UTC m=+3600.123456789"`;
/// the zero time (never updated) has no monotonic part.
pub fn go_time(t: Option<Stamp>, start: Instant) -> String {
    let Some(t) = t else {
        return "\"0001-01-01 00:00:00 +0000 UTC\"".to_string();
    };
    let d = t.wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    let (y, mo, da) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let mut s = format!(
        "\"{y:04}-{mo:02}-{da:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    let m = t.mono.saturating_duration_since(start);
    s.push_str(&format!(
        " +0000 UTC m=+{}.{:09}\"",
        m.as_secs(),
        m.subsec_nanos()
    ));
    s
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(start: Instant, wall_unix: Duration, mono_offset: Duration) -> Stamp {
        Stamp {
            wall: UNIX_EPOCH + wall_unix,
            mono: start + mono_offset,
        }
    }

    #[test]
    fn go_time_format() {
        let start = Instant::now();
        // 2024-07-18 10:11:12.1234 UTC
        let t = stamp(
            start,
            Duration::new(1_721_297_472, 123_400_000),
            Duration::new(3600, 5),
        );
        assert_eq!(
            go_time(Some(t), start),
            "\"2024-07-18 10:11:12.1234 +0000 UTC m=+3600.000000005\""
        );
        let whole = stamp(start, Duration::from_secs(951_782_400), Duration::ZERO);
        // 2000-02-29, a leap day; no fractional part when the nanoseconds are zero.
        assert_eq!(
            go_time(Some(whole), start),
            "\"2000-02-29 00:00:00 +0000 UTC m=+0.000000000\""
        );
        assert_eq!(go_time(None, start), "\"0001-01-01 00:00:00 +0000 UTC\"");
    }

    #[test]
    fn healthy_until_a_pending_update_is_older_than_the_timeout() {
        let start = Instant::now();
        let at = |s: u64| {
            stamp(
                start,
                Duration::from_secs(1_700_000_000 + s),
                Duration::from_secs(s),
            )
        };
        let mut h = ProxyHealth::new(Duration::from_secs(60), start);
        // No family recorded yet: healthy.
        assert!(h.is_healthy(at(0)));
        h.updated(IpFamily::V4, at(1));
        h.queued_update(IpFamily::V4, at(10));
        // A later queue does not reset the oldest pending one.
        h.queued_update(IpFamily::V4, at(50));
        assert!(h.is_healthy(at(70)));
        let v = h.verdict(at(71));
        assert!(!v.healthy);
        let (code, body) = v.healthz();
        assert_eq!(code, 503);
        assert_eq!(
            body,
            format!(
                "{{\"lastUpdated\": {},\"currentTime\": {}, \"nodeEligible\": true}}",
                go_time(Some(at(1)), start),
                go_time(Some(at(71)), start)
            )
        );
        h.updated(IpFamily::V4, at(72));
        let v = h.verdict(at(73));
        let (code, body) = v.livez();
        assert_eq!(code, 200);
        // Healthy answers report the current time as lastUpdated.
        let now = go_time(Some(at(73)), start);
        assert_eq!(
            body,
            format!("{{\"lastUpdated\": {now},\"currentTime\": {now}}}")
        );
    }

    #[test]
    fn tainted_node_fails_healthz_not_livez() {
        let start = Instant::now();
        let mut h = ProxyHealth::new(Duration::from_secs(60), start);
        let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n"},
            "spec": {"taints": [{"key": "ToBeDeletedByClusterAutoscaler", "effect": "NoSchedule"}]}
        }))
        .unwrap();
        h.sync_node(Some(&node));
        let v = h.verdict(Stamp::now());
        assert_eq!(v.healthz().0, 503);
        assert_eq!(v.livez().0, 200);
    }
}
