//! When an EndpointSlice event is a pending change of its Service (spec §3.1, §5.5):
//! upstream's EndpointSliceCache keeps, per slice, an applied and a pending version and
//! compares each event with the pending one, else the applied one. Any pending change at
//! a sync marks the Service "endpoints changed" (its chains are rewritten by a partial
//! sync), even when the merged endpoint set is identical. What is compared is the
//! release's [`SliceChangeRule`]; we keep a digest of it, not the object.

use super::NsName;
use crate::compat::SliceChangeRule;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// What a slice looks like for change detection (`None`: deleted).
pub type SliceState = Option<(NsName, [u8; 32])>;

/// The digest of what `rule` compares of `slice` (read with zone hints or not).
pub fn digest(slice: &EndpointSlice, rule: SliceChangeRule, zone_hints: bool) -> [u8; 32] {
    let bytes = match rule {
        SliceChangeRule::AnyObjectChange => serde_json::to_vec(slice),
        SliceChangeRule::ReadFields => serde_json::to_vec(&read_fields(slice, zone_hints)),
    }
    .unwrap_or_default();
    Sha256::digest(bytes).into()
}

/// v1.30's endpointSliceInfo: ports sorted by number, endpoints by their addresses (both
/// stable sorts: Go's sort of up to 12 elements is an insertion sort, hence stable).
fn read_fields(slice: &EndpointSlice, zone_hints: bool) -> serde_json::Value {
    let mut ports: Vec<_> = slice
        .ports
        .iter()
        .flatten()
        .map(|p| {
            (
                p.port,
                p.name.clone().unwrap_or_default(),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.app_protocol.clone(),
            )
        })
        .collect();
    ports.sort_by_key(|p| p.0);
    let mut eps: Vec<_> = slice
        .endpoints
        .iter()
        .flatten()
        .map(|e| {
            let c = e.conditions.as_ref();
            let hints: Option<BTreeSet<&str>> = zone_hints
                .then(|| e.hints.as_ref().and_then(|h| h.for_zones.as_ref()))
                .flatten()
                .filter(|z| !z.is_empty())
                .map(|z| z.iter().map(|z| z.name.as_str()).collect());
            serde_json::json!({
                "a": e.addresses,
                "n": e.node_name,
                "z": e.zone,
                "h": hints,
                "r": c.and_then(|c| c.ready).unwrap_or(true),
                "s": c.and_then(|c| c.serving).unwrap_or(true),
                "t": c.and_then(|c| c.terminating).unwrap_or(false),
            })
        })
        .collect();
    eps.sort_by_cached_key(|e| e["a"].as_array().map(|a| join(a)).unwrap_or_default());
    serde_json::json!({"p": ports, "e": eps})
}

fn join(a: &[serde_json::Value]) -> String {
    a.iter()
        .filter_map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Applied and pending slice versions; the Services with a pending change.
#[derive(Debug, Default)]
pub struct SliceChanges {
    applied: BTreeMap<String, (NsName, [u8; 32])>,
    pending: BTreeMap<String, SliceState>,
    changed: BTreeSet<NsName>,
}

impl SliceChanges {
    /// Slice `key` is now `state`; returns whether that is a pending change.
    pub fn update(&mut self, key: &str, state: SliceState) -> bool {
        let before = match self.pending.get(key) {
            Some(p) => p.as_ref(),
            None => self.applied.get(key),
        };
        if before == state.as_ref() {
            return false;
        }
        // A slice that moved to another Service (label edited) changes both.
        for (svc, _) in before.into_iter().chain(state.as_ref()) {
            self.changed.insert(svc.clone());
        }
        self.pending.insert(key.to_string(), state);
        true
    }

    /// Applies the pending versions; returns the Services they changed.
    pub fn checkout(&mut self) -> BTreeSet<NsName> {
        for (k, v) in std::mem::take(&mut self.pending) {
            match v {
                Some(v) => self.applied.insert(k, v),
                None => self.applied.remove(&k),
            };
        }
        std::mem::take(&mut self.changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "metadata": {"name": "s-1", "namespace": "ns",
                "labels": {"kubernetes.io/service-name": "svc"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.0.0.2"], "nodeName": "a"},
                {"addresses": ["10.0.0.1"], "nodeName": "b"}
            ],
            "ports": [{"name": "p", "port": 80, "protocol": "TCP"}]
        })
    }

    /// The 1.35 corpus README's list: conditions spelled out, a label, endpoint order are
    /// changes in 1.35 only; a node name is one in both.
    #[test]
    fn what_each_release_compares() {
        let b = base();
        let mut spelled = b.clone();
        spelled["endpoints"][0]["conditions"] =
            serde_json::json!({"ready": true, "serving": true, "terminating": false});
        let mut label = b.clone();
        label["metadata"]["labels"]["extra"] = "x".into();
        let mut order = b.clone();
        order["endpoints"] = serde_json::json!([b["endpoints"][1], b["endpoints"][0]]);
        let mut node = b.clone();
        node["endpoints"][1]["nodeName"] = "c".into();
        let mut default_port = b.clone();
        default_port["ports"] = serde_json::json!([{"name": "p", "port": 80}]);
        let d = |v: &serde_json::Value, r| digest(&slice(v.clone()), r, true);
        for (v, in_130, in_135) in [
            (&spelled, false, true),
            (&label, false, true),
            (&order, false, true),
            (&node, true, true),
            (&default_port, false, true),
        ] {
            assert_eq!(
                d(v, SliceChangeRule::ReadFields) != d(&b, SliceChangeRule::ReadFields),
                in_130,
                "{v}"
            );
            assert_eq!(
                d(v, SliceChangeRule::AnyObjectChange) != d(&b, SliceChangeRule::AnyObjectChange),
                in_135,
                "{v}"
            );
        }
    }

    #[test]
    fn pending_versions_compare_with_pending_then_applied() {
        let svc = NsName::new("ns", "svc");
        let st = |x: u8| Some((svc.clone(), [x; 32]));
        let mut c = SliceChanges::default();
        assert!(!c.update("ns/s", None), "deleting an unknown slice");
        assert!(c.update("ns/s", st(1)));
        assert!(!c.update("ns/s", st(1)));
        assert_eq!(c.checkout(), BTreeSet::from([svc.clone()]));
        assert!(c.checkout().is_empty());
        assert!(!c.update("ns/s", st(1)), "same as applied");
        // Changed and changed back before a sync: still a pending change (upstream).
        assert!(c.update("ns/s", st(2)));
        assert!(c.update("ns/s", st(1)));
        assert_eq!(c.checkout().len(), 1);
        // Added and deleted before a sync: a pending change too.
        assert!(c.update("ns/t", st(3)));
        assert!(c.update("ns/t", None));
        assert_eq!(c.checkout().len(), 1);
        assert!(!c.update("ns/t", None));
    }
}
