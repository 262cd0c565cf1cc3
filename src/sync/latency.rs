//! Network programming latency (spec §6.6): the trigger times EndpointSlice changes carry
//! in `endpoints.kubernetes.io/last-change-trigger-time`, remembered per family until
//! that family's next sync, then observed as now − t after a successful restore.

use crate::model::endpoint::SERVICE_NAME_LABEL;
use crate::model::ip::IpFamily;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use prometheus::Histogram;
use std::collections::BTreeMap;
use std::time::SystemTime;

pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// Pending trigger times of the families this node proxies.
#[derive(Debug)]
pub struct TriggerTimes {
    /// Times before this are ignored (upstream's tracker start time).
    started: SystemTime,
    /// Per family: service (namespace/name) → times of its changes since the last sync.
    pending: BTreeMap<IpFamily, BTreeMap<String, Vec<SystemTime>>>,
}

/// A slice event's trigger time, to keep if the event changed its family's rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    pub family: IpFamily,
    pub service: String,
    pub time: SystemTime,
}

/// `RFC3339` / `RFC3339Nano` → a time; anything else → `None`.
pub fn parse_trigger_time(s: &str) -> Option<SystemTime> {
    let ts: jiff::Timestamp = s.trim().parse().ok()?;
    Some(SystemTime::from(ts))
}

fn family_of(slice: &EndpointSlice) -> Option<IpFamily> {
    IpFamily::from_api_name(&slice.address_type)
}

/// `namespace/service` of a slice, from its service-name label.
pub fn service_of(slice: &EndpointSlice) -> Option<String> {
    let service = slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)
        .filter(|n| !n.is_empty())?;
    Some(format!(
        "{}/{service}",
        slice.metadata.namespace.as_deref().unwrap_or("")
    ))
}

fn annotation(slice: &EndpointSlice) -> Option<&str> {
    slice
        .metadata
        .annotations
        .as_ref()?
        .get(TRIGGER_TIME_ANNOTATION)
        .map(String::as_str)
}

impl TriggerTimes {
    /// `families`: the proxiers this node runs; other families' slices are not tracked.
    pub fn new(started: SystemTime, families: &[IpFamily]) -> TriggerTimes {
        TriggerTimes {
            started,
            pending: families.iter().map(|f| (*f, BTreeMap::new())).collect(),
        }
    }

    /// The trigger an added or updated slice carries, if it is after the start and of a
    /// tracked family. Kept with [`TriggerTimes::add`] only when the event changed that
    /// family's rules (upstream records it only when its tracker saw a change).
    pub fn trigger(&self, slice: &EndpointSlice) -> Option<Trigger> {
        let time = annotation(slice).and_then(parse_trigger_time)?;
        if time <= self.started {
            return None;
        }
        let family = family_of(slice).filter(|f| self.pending.contains_key(f))?;
        Some(Trigger {
            family,
            service: service_of(slice)?,
            time,
        })
    }

    pub fn add(&mut self, t: Trigger) {
        if let Some(per_service) = self.pending.get_mut(&t.family) {
            per_service.entry(t.service).or_default().push(t.time);
        }
    }

    /// A slice of `service` was deleted: its pending times go (as upstream drops them).
    pub fn forget(&mut self, family: IpFamily, service: &str) {
        if let Some(per_service) = self.pending.get_mut(&family) {
            per_service.remove(service);
        }
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

/// A deleted slice's family and service, for [`TriggerTimes::forget`].
pub fn deleted(slice: &EndpointSlice) -> Option<(IpFamily, String)> {
    Some((family_of(slice)?, service_of(slice)?))
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
    fn triggers_after_start_per_family() {
        let mut t = both(at(NOON, 0));
        let keep = |t: &mut TriggerTimes, s: EndpointSlice| {
            let trig = t.trigger(&s);
            trig.map(|x| t.add(x)).is_some()
        };
        assert!(keep(
            &mut t,
            slice("a", "IPv4", "1", Some("2024-05-01T12:00:05Z"))
        ));
        assert!(keep(
            &mut t,
            slice("b", "IPv6", "1", Some("2024-05-01T12:00:07Z"))
        ));
        // Before (or at) the start, unparsable, absent, FQDN: nothing.
        for (family, time) in [
            ("IPv4", Some("2024-05-01T11:59:59Z")),
            ("IPv4", Some("2024-05-01T12:00:00Z")),
            ("IPv4", Some("soon")),
            ("IPv4", None),
            ("FQDN", Some("2024-05-01T12:00:09Z")),
        ] {
            assert!(
                !keep(&mut t, slice("c", family, "1", time)),
                "{family} {time:?}"
            );
        }
        assert_eq!(t.take(IpFamily::V4), vec![at(NOON + 5, 0)]);
        assert_eq!(t.take(IpFamily::V4), vec![], "a sync consumes them");
        assert_eq!(t.take(IpFamily::V6), vec![at(NOON + 7, 0)]);
    }

    #[test]
    fn untracked_families_and_deleted_services_keep_nothing() {
        let mut t = TriggerTimes::new(at(NOON, 0), &[IpFamily::V4]);
        let v6 = slice("b", "IPv6", "1", Some("2024-05-01T12:00:05Z"));
        assert_eq!(t.trigger(&v6), None, "no IPv6 proxier");
        let v4 = slice("a", "IPv4", "1", Some("2024-05-01T12:00:05Z"));
        t.add(t.trigger(&v4).unwrap());
        let (family, service) = deleted(&v4).unwrap();
        assert_eq!(service, "ns/svc");
        t.forget(family, &service);
        assert_eq!(t.take(IpFamily::V4), vec![]);
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
