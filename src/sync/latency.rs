//! Network programming latency (spec §6.6): the trigger times EndpointSlice changes carry
//! in `endpoints.kubernetes.io/last-change-trigger-time`, remembered per family until
//! that family's next sync, then observed as now − t after a successful restore.

use crate::model::ip::IpFamily;
use crate::source::store::Change;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use prometheus::Histogram;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::time::SystemTime;

pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Pending trigger times of the families this node proxies.
#[derive(Debug)]
pub struct TriggerTimes {
    /// Times before this are ignored (upstream's tracker start time).
    started: SystemTime,
    /// Per family: service (namespace/name) → times of its changes since the last sync.
    pending: BTreeMap<IpFamily, BTreeMap<String, Vec<SystemTime>>>,
    /// Per slice (namespace/name): fingerprint of resourceVersion and trigger time, so a
    /// relist counts only the slices that changed since they were last seen.
    seen: HashMap<String, u64>,
    /// Slices listed so far by a streamed (re)list; replaces `seen` at its end.
    listing: Option<HashMap<String, u64>>,
}

/// `RFC3339` / `RFC3339Nano` → a time; anything else → `None`.
pub fn parse_trigger_time(s: &str) -> Option<SystemTime> {
    let ts: jiff::Timestamp = s.trim().parse().ok()?;
    Some(SystemTime::from(ts))
}

fn family_of(slice: &EndpointSlice) -> Option<IpFamily> {
    match slice.address_type.as_str() {
        "IPv4" => Some(IpFamily::V4),
        "IPv6" => Some(IpFamily::V6),
        _ => None,
    }
}

fn slice_key(slice: &EndpointSlice) -> String {
    let m = &slice.metadata;
    format!(
        "{}/{}",
        m.namespace.as_deref().unwrap_or(""),
        m.name.as_deref().unwrap_or("")
    )
}

fn annotation(slice: &EndpointSlice) -> Option<&str> {
    slice
        .metadata
        .annotations
        .as_ref()?
        .get(TRIGGER_TIME_ANNOTATION)
        .map(String::as_str)
}

fn fingerprint(slice: &EndpointSlice) -> u64 {
    let mut h = DefaultHasher::new();
    slice.metadata.resource_version.hash(&mut h);
    annotation(slice).hash(&mut h);
    h.finish()
}

impl TriggerTimes {
    /// `families`: the proxiers this node runs; other families' slices are not tracked.
    pub fn new(started: SystemTime, families: &[IpFamily]) -> TriggerTimes {
        TriggerTimes {
            started,
            pending: families.iter().map(|f| (*f, BTreeMap::new())).collect(),
            seen: HashMap::new(),
            listing: None,
        }
    }

    /// Notes one source change, before it reaches the store. Deletions record nothing.
    pub fn record(&mut self, change: &Change<EndpointSlice>) {
        match change {
            Change::Apply(s) => {
                self.seen.insert(slice_key(s), fingerprint(s));
                self.remember(s);
            }
            Change::Delete(s) => {
                self.seen.remove(&slice_key(s));
            }
            Change::Replace(items) => {
                self.listing = Some(HashMap::with_capacity(items.len()));
                for s in items {
                    self.listed(s);
                }
                self.list_done();
            }
            Change::ListStart => self.listing = Some(HashMap::new()),
            Change::Listed(s) => self.listed(s),
            Change::ListDone => self.list_done(),
        }
    }

    fn listed(&mut self, s: &EndpointSlice) {
        let key = slice_key(s);
        let fp = fingerprint(s);
        if self.seen.get(&key) != Some(&fp) {
            self.remember(s);
        }
        match &mut self.listing {
            Some(l) => {
                l.insert(key, fp);
            }
            None => {
                self.seen.insert(key, fp);
            }
        }
    }

    fn list_done(&mut self) {
        if let Some(l) = self.listing.take() {
            self.seen = l;
        }
    }

    fn remember(&mut self, slice: &EndpointSlice) {
        let Some(t) = annotation(slice).and_then(parse_trigger_time) else {
            return;
        };
        if t <= self.started {
            return;
        }
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .filter(|n| !n.is_empty())
        else {
            return;
        };
        let Some(per_service) = family_of(slice).and_then(|f| self.pending.get_mut(&f)) else {
            return;
        };
        let key = format!(
            "{}/{service}",
            slice.metadata.namespace.as_deref().unwrap_or("")
        );
        per_service.entry(key).or_default().push(t);
    }

    /// Takes `family`'s pending times: a sync consumes them whether or not it succeeds.
    pub fn take(&mut self, family: IpFamily) -> Vec<SystemTime> {
        self.pending
            .get_mut(&family)
            .map(std::mem::take)
            .unwrap_or_default()
            .into_values()
            .flatten()
            .collect()
    }
}

/// Observes now − t for each time (after a successful restore).
pub fn observe(times: &[SystemTime], now: SystemTime, histogram: &Histogram) {
    for t in times {
        let age = now.duration_since(*t).unwrap_or_default();
        histogram.observe(age.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// 2024-05-01T12:00:00Z.
    const NOON: u64 = 1_714_564_800;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    fn slice(name: &str, family: &str, rv: &str, trigger: Option<&str>) -> EndpointSlice {
        let mut meta = serde_json::json!({
            "name": name, "namespace": "ns", "resourceVersion": rv,
            "labels": {"kubernetes.io/service-name": "svc"}
        });
        if let Some(t) = trigger {
            meta["annotations"] = serde_json::json!({ TRIGGER_TIME_ANNOTATION: t });
        }
        serde_json::from_value(serde_json::json!({
            "metadata": meta, "addressType": family, "endpoints": []
        }))
        .unwrap()
    }

    fn apply(s: EndpointSlice) -> Change<EndpointSlice> {
        Change::Apply(Box::new(s))
    }

    fn both(started: SystemTime) -> TriggerTimes {
        TriggerTimes::new(started, &[IpFamily::V4, IpFamily::V6])
    }

    #[test]
    fn parses_rfc3339_with_and_without_fraction() {
        assert_eq!(
            parse_trigger_time("2024-05-01T12:00:00Z"),
            Some(at(NOON, 0))
        );
        assert_eq!(
            parse_trigger_time("2024-05-01T12:00:00.123456789Z"),
            Some(at(NOON, 123_456_789))
        );
        assert_eq!(
            parse_trigger_time("2024-05-01T14:00:00.5+02:00"),
            Some(at(NOON, 500_000_000))
        );
        assert_eq!(parse_trigger_time("yesterday"), None);
        assert_eq!(parse_trigger_time(""), None);
    }

    #[test]
    fn remembers_times_after_start_per_family() {
        let mut t = both(at(NOON, 0));
        t.record(&apply(slice(
            "a",
            "IPv4",
            "1",
            Some("2024-05-01T12:00:05Z"),
        )));
        t.record(&apply(slice(
            "b",
            "IPv6",
            "1",
            Some("2024-05-01T12:00:07Z"),
        )));
        // Before (or at) the start, unparsable, absent, FQDN: nothing.
        t.record(&apply(slice(
            "c",
            "IPv4",
            "1",
            Some("2024-05-01T11:59:59Z"),
        )));
        t.record(&apply(slice(
            "d",
            "IPv4",
            "1",
            Some("2024-05-01T12:00:00Z"),
        )));
        t.record(&apply(slice("e", "IPv4", "1", Some("soon"))));
        t.record(&apply(slice("f", "IPv4", "1", None)));
        t.record(&apply(slice(
            "g",
            "FQDN",
            "1",
            Some("2024-05-01T12:00:09Z"),
        )));
        assert_eq!(t.take(IpFamily::V4), vec![at(NOON + 5, 0)]);
        assert_eq!(t.take(IpFamily::V4), vec![], "a sync consumes them");
        assert_eq!(t.take(IpFamily::V6), vec![at(NOON + 7, 0)]);
    }

    #[test]
    fn deletions_and_absent_families_record_nothing() {
        let mut t = TriggerTimes::new(at(NOON, 0), &[IpFamily::V4]);
        t.record(&Change::Delete(Box::new(slice(
            "a",
            "IPv4",
            "1",
            Some("2024-05-01T12:00:05Z"),
        ))));
        t.record(&apply(slice(
            "b",
            "IPv6",
            "1",
            Some("2024-05-01T12:00:05Z"),
        )));
        assert_eq!(t.take(IpFamily::V4), vec![]);
        assert_eq!(t.take(IpFamily::V6), vec![]);
    }

    #[test]
    fn relist_counts_only_changed_slices() {
        let mut t = both(at(NOON, 0));
        let a1 = slice("a", "IPv4", "1", Some("2024-05-01T12:00:01Z"));
        let b1 = slice("b", "IPv4", "1", Some("2024-05-01T12:00:02Z"));
        t.record(&Change::Replace(vec![a1.clone(), b1.clone()]));
        assert_eq!(t.take(IpFamily::V4).len(), 2);
        let b2 = slice("b", "IPv4", "2", Some("2024-05-01T12:00:03Z"));
        t.record(&Change::Replace(vec![a1.clone(), b2]));
        assert_eq!(t.take(IpFamily::V4), vec![at(NOON + 3, 0)]);
        // Deleted while away, then back unchanged: new to us, so counted.
        t.record(&Change::Replace(vec![a1.clone()]));
        t.record(&Change::Replace(vec![a1, b1]));
        assert_eq!(t.take(IpFamily::V4), vec![at(NOON + 2, 0)]);
    }

    #[test]
    fn observes_age_of_each_time() {
        let h = Histogram::with_opts(prometheus::HistogramOpts::new("h", "h")).unwrap();
        observe(
            &[at(NOON, 0), at(NOON + 2, 500_000_000)],
            at(NOON + 4, 0),
            &h,
        );
        assert_eq!(h.get_sample_count(), 2);
        assert!(
            (h.get_sample_sum() - 5.5).abs() < 1e-9,
            "{}",
            h.get_sample_sum()
        );
    }
}
