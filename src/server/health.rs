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
    /// O4 (releases after 1.30): the JSON body, when that release is emulated.
    pub json: Option<JsonVerdict>,
}

/// The fields of the newer JSON body (spec §8.4 O4), times in RFC 3339 (nanoseconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonVerdict {
    /// The latest update of any family (the zero time if none).
    pub last_updated: String,
    pub current_time: String,
    /// (family, its last update, its health), families in API-name order.
    pub status: Vec<(IpFamily, String, bool)>,
}

#[derive(Debug)]
pub struct ProxyHealth {
    timeout: Duration,
    families: BTreeMap<IpFamily, FamilyState>,
    node_eligible: bool,
    /// Eligibility while this Node is unknown: v1.30 true, later releases false (O4).
    eligible_without_node: bool,
    /// O4: answer with the JSON body of later releases.
    json: bool,
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
            eligible_without_node: true,
            json: false,
            start,
        }
    }

    /// As the emulated release answers (`Compat::health_json`, spec §8.4 O4).
    pub fn for_release(mut self, compat: &crate::compat::Compat) -> ProxyHealth {
        self.json = compat.health_json;
        self.eligible_without_node = !compat.health_json;
        self.node_eligible = self.eligible_without_node;
        self
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
            None => self.eligible_without_node,
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
        let json = self.json.then(|| self.json_verdict(now));
        Verdict {
            healthy,
            node_eligible: self.node_eligible,
            last_updated,
            current_time,
            json,
        }
    }

    fn json_verdict(&self, now: Stamp) -> JsonVerdict {
        let mut latest: Option<SystemTime> = None;
        let mut status = Vec::new();
        for (family, f) in &self.families {
            // Families are reported once they have synced (upstream's lastUpdated map).
            let Some(u) = f.last_updated else { continue };
            latest = Some(latest.map_or(u.wall, |l| l.max(u.wall)));
            let healthy = f
                .oldest_pending
                .is_none_or(|p| now.mono.saturating_duration_since(p.mono) <= self.timeout);
            status.push((*family, rfc3339_nano(Some(u.wall)), healthy));
        }
        status.sort_by_key(|(f, _, _)| f.api_name());
        JsonVerdict {
            last_updated: rfc3339_nano(latest),
            current_time: rfc3339_nano(Some(now.wall)),
            status,
        }
    }
}

impl Verdict {
    /// The O4 body; `node_eligible` only for /healthz.
    fn json_body(&self, j: &JsonVerdict, node_eligible: Option<bool>) -> String {
        let mut s = format!(
            "{{\"lastUpdated\":\"{}\",\"currentTime\":\"{}\"",
            j.last_updated, j.current_time
        );
        if let Some(e) = node_eligible {
            s.push_str(&format!(",\"nodeEligible\":{e}"));
        }
        s.push_str(&format!(",\"healthy\":{}", self.healthy));
        if !j.status.is_empty() {
            let parts: Vec<String> = j
                .status
                .iter()
                .map(|(f, t, h)| {
                    format!(
                        "\"{}\":{{\"lastUpdated\":\"{t}\",\"healthy\":{h}}}",
                        f.api_name()
                    )
                })
                .collect();
            s.push_str(&format!(",\"status\":{{{}}}", parts.join(",")));
        }
        s.push('}');
        s
    }

    /// (status, body) of /healthz.
    pub fn healthz(&self) -> (u16, String) {
        let ok = self.healthy && self.node_eligible;
        if let Some(j) = &self.json {
            return (
                if ok { 200 } else { 503 },
                self.json_body(j, Some(self.node_eligible)),
            );
        }
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
        if let Some(j) = &self.json {
            return (
                if self.healthy { 200 } else { 503 },
                self.json_body(j, None),
            );
        }
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

/// Go's JSON form of a `time.Time` in UTC (RFC 3339 with nanoseconds, trailing zeros
/// dropped): `2024-07-18T10:11:12.1234Z`; the zero time is `0001-01-01T00:00:00Z`.
pub fn rfc3339_nano(t: Option<SystemTime>) -> String {
    // jiff writes the fraction with the fewest digits, as Go's RFC3339Nano does.
    match t.and_then(|t| jiff::Timestamp::try_from(t).ok()) {
        Some(ts) => ts.to_string(),
        None => "0001-01-01T00:00:00Z".to_string(),
    }
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
    fn newer_releases_answer_json_per_family() {
        let start = Instant::now();
        let at = |s: u64, n: u32| {
            stamp(
                start,
                Duration::new(1_721_297_472 + s, n),
                Duration::from_secs(s),
            )
        };
        let mut h = ProxyHealth::new(Duration::from_secs(60), start)
            .for_release(&crate::compat::Compat::v1_35());
        h.updated(IpFamily::V6, at(0, 500_000_000));
        h.updated(IpFamily::V4, at(1, 0));
        // No Node known yet: not eligible (the node manager has not seen it).
        let (code, body) = h.verdict(at(2, 123_000)).healthz();
        assert_eq!(code, 503);
        assert_eq!(
            body,
            "{\"lastUpdated\":\"2024-07-18T10:11:13Z\",\"currentTime\":\"2024-07-18T10:11:14.000123Z\",\"nodeEligible\":false,\"healthy\":true,\"status\":{\"IPv4\":{\"lastUpdated\":\"2024-07-18T10:11:13Z\",\"healthy\":true},\"IPv6\":{\"lastUpdated\":\"2024-07-18T10:11:12.5Z\",\"healthy\":true}}}"
        );
        let node: k8s_openapi::api::core::v1::Node =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "n"}})).unwrap();
        h.sync_node(Some(&node));
        assert_eq!(h.verdict(at(2, 0)).healthz().0, 200);
        // IPv6 waits too long: unhealthy, and only IPv6 says so.
        h.queued_update(IpFamily::V6, at(3, 0));
        let (code, body) = h.verdict(at(70, 0)).livez();
        assert_eq!(code, 503);
        assert_eq!(
            body,
            "{\"lastUpdated\":\"2024-07-18T10:11:13Z\",\"currentTime\":\"2024-07-18T10:12:22Z\",\"healthy\":false,\"status\":{\"IPv4\":{\"lastUpdated\":\"2024-07-18T10:11:13Z\",\"healthy\":true},\"IPv6\":{\"lastUpdated\":\"2024-07-18T10:11:12.5Z\",\"healthy\":false}}}"
        );
        assert_eq!(h.verdict(at(70, 0)).healthz().0, 503);
        // Nothing synced yet: no status, the zero time.
        let h = ProxyHealth::new(Duration::from_secs(60), start)
            .for_release(&crate::compat::Compat::v1_35());
        assert_eq!(
            h.verdict(at(0, 0)).livez().1,
            "{\"lastUpdated\":\"0001-01-01T00:00:00Z\",\"currentTime\":\"2024-07-18T10:11:12Z\",\"healthy\":true}"
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
