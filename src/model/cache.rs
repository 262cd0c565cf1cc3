//! One family's view of the objects, kept as derived service ports and per-slice endpoints
//! instead of raw API objects (upstream's change trackers do the same). Each object is
//! read once when it arrives; a [`ClusterModel`] is then assembled from shared pieces, so
//! consecutive models cost one map of reference-counted pointers, not a deep copy.

use super::endpoint::{self, Endpoint, PortEndpoints, SharedPortEndpoints, SliceReadOptions};
use super::node::NodeInfo;
use super::service::{self, ServicePort, ServiceReadOptions};
use super::slice_change::{self, SliceChanges};
use super::{ClusterModel, ModelOptions, NsName, Warnings};
use crate::compat::NodeChangeRule;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The endpoints one slice contributes to its Service, before merging and sorting.
#[derive(Clone, Debug, PartialEq)]
struct SliceEntry {
    service: NsName,
    /// Sorted and deduplicated within the slice.
    endpoints: SharedPortEndpoints,
}

#[derive(Debug)]
pub struct ModelCache {
    opts: ModelOptions,
    /// Services whose ports changed since the last assembly (`None`: no ports any more).
    /// Otherwise a Service's ports live only in `assembled`, next to their endpoints.
    pending_ports: BTreeMap<NsName, Option<Vec<ServicePort>>>,
    /// Slice key → what it contributes; slice keys order slices of one Service by name.
    slices: BTreeMap<String, SliceEntry>,
    slices_of: BTreeMap<NsName, BTreeSet<String>>,
    /// The assembled model pieces, rebuilt only for Services marked dirty.
    assembled: BTreeMap<NsName, Arc<Vec<ServicePort>>>,
    unmatched: BTreeMap<NsName, SharedPortEndpoints>,
    dirty: BTreeSet<NsName>,
    node: Option<NodeInfo>,
    /// Which Services' slices had a pending change (upstream's endpoints change tracker).
    slice_changes: SliceChanges,
    /// Whether slice versions are told apart by content (see [`ModelCache::one_shot`]).
    digests: bool,
}

impl ModelCache {
    pub fn new(opts: ModelOptions) -> ModelCache {
        ModelCache {
            opts,
            pending_ports: BTreeMap::new(),
            slices: BTreeMap::new(),
            slices_of: BTreeMap::new(),
            assembled: BTreeMap::new(),
            unmatched: BTreeMap::new(),
            dirty: BTreeSet::new(),
            node: None,
            slice_changes: SliceChanges::default(),
            digests: true,
        }
    }

    /// A cache that builds one model from nothing and is then dropped (an objects file):
    /// every slice is new, so `endpoints_changed` is the set of their Services whatever
    /// the slices hold, and hashing each slice's content (a sixth of loading a big dump)
    /// is skipped. The later return values of [`ModelCache::apply_slice`] do not tell
    /// content changes apart.
    pub fn one_shot(opts: ModelOptions) -> ModelCache {
        ModelCache {
            digests: false,
            ..ModelCache::new(opts)
        }
    }

    /// Adds, replaces (`Some`) or removes (`None`) the Service `key`. Returns whether this
    /// family's model changed.
    pub fn apply_service(
        &mut self,
        key: &NsName,
        svc: Option<&Service>,
        warn: &mut Warnings,
    ) -> bool {
        let mut ports = match svc {
            Some(s) if !service::filtered_by_labels(s.metadata.labels.as_ref()) => {
                let sopts = ServiceReadOptions {
                    family: self.opts.family,
                    load_balancer_ip_mode: self.opts.load_balancer_ip_mode,
                    compat: self.opts.compat,
                };
                service::service_ports(s, sopts, warn)
            }
            _ => Vec::new(),
        };
        ports.sort_by(|a, b| (&a.port_name, a.protocol).cmp(&(&b.port_name, b.protocol)));
        ports.shrink_to_fit();
        let current = match self.pending_ports.get(key) {
            Some(p) => p.as_deref(),
            None => self.assembled.get(key).map(|a| a.as_slice()),
        };
        let same = match current {
            None => ports.is_empty(),
            Some(cur) => same_ports(cur, &ports),
        };
        if same {
            return false;
        }
        self.pending_ports
            .insert(key.clone(), (!ports.is_empty()).then_some(ports));
        self.dirty.insert(key.clone());
        true
    }

    /// Adds, replaces (`Some`) or removes (`None`) the EndpointSlice `key` (any string
    /// unique per slice whose order within a namespace is the slice-name order). Returns
    /// whether this is a pending change of its Service (see [`SliceChanges`]).
    pub fn apply_slice(
        &mut self,
        key: &str,
        slice: Option<&EndpointSlice>,
        warn: &mut Warnings,
    ) -> bool {
        let mut state = None;
        let entry = slice
            .filter(|s| !service::filtered_by_labels(s.metadata.labels.as_ref()))
            .and_then(|s| {
                let svc = endpoint::slice_service(s, self.opts.family, warn)?;
                let rule = self.opts.compat.slice_change;
                let d = if self.digests {
                    slice_change::digest(s, rule, self.opts.topology_aware_hints)
                } else {
                    [0; 32]
                };
                state = Some((svc.clone(), d));
                let mut endpoints = PortEndpoints::new();
                let sopts = SliceReadOptions {
                    family: self.opts.family,
                    node_name: &self.opts.node_name,
                    topology_aware_hints: self.opts.topology_aware_hints,
                    node_hints: self.opts.node_hints,
                };
                endpoint::add_slice(&mut endpoints, &svc, s, sopts, warn);
                endpoint::finish(&mut endpoints);
                let endpoints = endpoints
                    .into_iter()
                    .map(|(port, mut list)| {
                        list.shrink_to_fit();
                        (port, Arc::new(list))
                    })
                    .collect();
                Some(SliceEntry {
                    service: svc,
                    endpoints,
                })
            });
        let pending = self.slice_changes.update(key, state);
        if self.slices.get(key) == entry.as_ref() {
            return pending;
        }
        let old = match entry {
            Some(e) => {
                self.slices_of
                    .entry(e.service.clone())
                    .or_default()
                    .insert(key.to_string());
                self.dirty.insert(e.service.clone());
                self.slices.insert(key.to_string(), e)
            }
            None => self.slices.remove(key),
        };
        if let Some(old) = old {
            let still_there = self
                .slices
                .get(key)
                .is_some_and(|e| e.service == old.service);
            if !still_there {
                if let Some(set) = self.slices_of.get_mut(&old.service) {
                    set.remove(key);
                    if set.is_empty() {
                        self.slices_of.remove(&old.service);
                    }
                }
            }
            self.dirty.insert(old.service);
        }
        true
    }

    /// Sets this node's info; returns whether it changed. Under
    /// [`NodeChangeRule::ZoneLabel`] a deletion (`None`) keeps what was known: the node
    /// manager no longer clears the zone.
    pub fn set_node(&mut self, node: Option<NodeInfo>) -> bool {
        let keep = self.opts.compat.node_change == NodeChangeRule::ZoneLabel;
        if self.node == node || (node.is_none() && keep) {
            return false;
        }
        self.node = node;
        true
    }

    /// The model as of now; only Services changed since the last call are re-assembled.
    /// Checks out the pending slice changes: call once per sync.
    pub fn model(&mut self) -> ClusterModel {
        for svc in std::mem::take(&mut self.dirty) {
            self.assemble(&svc);
        }
        ClusterModel {
            services: self.assembled.clone(),
            unmatched_endpoints: self.unmatched.clone(),
            node: self.node.clone(),
            endpoints_changed: self.slice_changes.checkout(),
        }
    }

    fn assemble(&mut self, svc: &NsName) {
        let mut lists: BTreeMap<&(String, super::Protocol), Vec<&Arc<Vec<Endpoint>>>> =
            BTreeMap::new();
        for key in self.slices_of.get(svc).into_iter().flatten() {
            for (port, eps) in &self.slices[key].endpoints {
                lists.entry(port).or_default().push(eps);
            }
        }
        let mut map: SharedPortEndpoints = lists
            .into_iter()
            .map(|(port, parts)| {
                let merged = match parts.as_slice() {
                    [one] => Arc::clone(one),
                    _ => {
                        let mut all: Vec<Endpoint> =
                            parts.iter().flat_map(|l| l.iter().cloned()).collect();
                        endpoint::finish_list(&mut all);
                        Arc::new(all)
                    }
                };
                (port.clone(), merged)
            })
            .collect();
        let ports = match self.pending_ports.remove(svc) {
            Some(p) => p,
            None => self.assembled.get(svc).map(|a| (**a).clone()),
        };
        match ports {
            Some(mut ports) => {
                for sp in ports.iter_mut() {
                    sp.endpoints = map
                        .remove(&(sp.port_name.clone(), sp.protocol))
                        .unwrap_or_default();
                }
                self.assembled.insert(svc.clone(), Arc::new(ports));
            }
            None => {
                self.assembled.remove(svc);
            }
        }
        if map.is_empty() {
            self.unmatched.remove(svc);
        } else {
            self.unmatched.insert(svc.clone(), map);
        }
    }
}

/// Equal apart from endpoints (which come from slices, not from the Service).
fn same_ports(a: &[ServicePort], b: &[ServicePort]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            let y = ServicePort {
                endpoints: Arc::clone(&x.endpoints),
                ..y.clone()
            };
            *x == y
        })
}

/// Reports each object's warnings once per change of that object, not on every relist,
/// file reload or sync that delivers it unchanged: a log line and a counter per warning.
#[derive(Debug, Default)]
pub struct WarnOnce {
    /// `Kind\0key` → what was last reported; only objects with warnings are kept.
    last: std::collections::HashMap<String, Warnings>,
    counter: Option<prometheus::IntCounterVec>,
}

impl WarnOnce {
    /// Counts reported warnings in `counter` (labels `kind`, `field`).
    pub fn set_counter(&mut self, counter: prometheus::IntCounterVec) {
        self.counter = Some(counter);
    }

    /// The warnings from reading object `key` of `kind` once more. `changed`: its derived
    /// form changed (a new version of the object). `None` warnings: the object is gone.
    /// Returns the warnings reported now.
    pub fn report(
        &mut self,
        kind: &str,
        key: &str,
        changed: bool,
        warnings: Option<Warnings>,
    ) -> Warnings {
        let id = format!("{kind}\0{key}");
        let mut warnings = warnings.unwrap_or_default();
        super::dedup_warnings(&mut warnings);
        if warnings.is_empty() {
            self.last.remove(&id);
            return warnings;
        }
        if !changed && self.last.get(&id) == Some(&warnings) {
            return Vec::new();
        }
        for w in &warnings {
            tracing::warn!("{w}");
            if let Some(c) = &self.counter {
                c.with_label_values(&[w.kind, w.field]).inc();
            }
        }
        self.last.insert(id, warnings.clone());
        warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ip::IpFamily;
    use proptest::prelude::*;

    fn slice(name: &str, eps: &[(u8, bool)]) -> EndpointSlice {
        let endpoints: Vec<_> = eps
            .iter()
            .map(|(ip, local)| {
                serde_json::json!({
                    "addresses": [format!("10.0.0.{ip}")],
                    "nodeName": if *local { "me" } else { "other" },
                    "conditions": {"ready": ip % 3 != 0},
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns",
                "labels": {"kubernetes.io/service-name": "svc"}},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": "p", "port": 80, "protocol": "TCP"}]
        }))
        .unwrap()
    }

    proptest! {
        /// Finishing per slice, then merging, equals finishing all slices' endpoints
        /// concatenated in slice-name order (how the lists were built before the cache).
        #[test]
        fn merged_slices_equal_one_concatenated_list(
            slices in proptest::collection::vec(
                proptest::collection::vec((0u8..6, any::<bool>()), 0..5), 1..4)
        ) {
            let opts = ModelOptions {
                family: IpFamily::V4,
                node_name: "me".into(),
                topology_aware_hints: false,
                node_hints: false,
                load_balancer_ip_mode: false,
                compat: crate::compat::Compat::v1_30(),
            };
            let objs: Vec<EndpointSlice> = slices
                .iter()
                .enumerate()
                .map(|(i, eps)| slice(&format!("svc-{i}"), eps))
                .collect();
            let mut cache = ModelCache::new(opts.clone());
            let mut warn = Vec::new();
            for s in objs.iter().rev() {
                cache.apply_slice(&crate::model::slice_key(s), Some(s), &mut warn);
            }
            let got = cache.model();
            let svc = NsName::new("ns", "svc");
            let mut expected = PortEndpoints::new();
            let sopts = SliceReadOptions {
                family: IpFamily::V4,
                node_name: "me",
                topology_aware_hints: false,
                node_hints: false,
            };
            for s in &objs {
                endpoint::add_slice(&mut expected, &svc, s, sopts, &mut warn);
            }
            endpoint::finish(&mut expected);
            expected.retain(|_, l| !l.is_empty());
            let got: PortEndpoints = got
                .unmatched_endpoints
                .get(&svc)
                .map(|m| m.iter().map(|(k, v)| (k.clone(), (**v).clone())).collect())
                .unwrap_or_default();
            let got: PortEndpoints = got.into_iter().filter(|(_, l)| !l.is_empty()).collect();
            prop_assert_eq!(got, expected);
        }
    }

    fn service(port_name: &str, port: i32) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "svc", "namespace": "ns"},
            "spec": {"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]}
        }))
        .unwrap()
    }

    #[test]
    fn service_updates_keep_or_release_their_endpoints() {
        let opts = ModelOptions {
            family: IpFamily::V4,
            node_name: "me".into(),
            topology_aware_hints: false,
            node_hints: false,
            load_balancer_ip_mode: false,
            compat: crate::compat::Compat::v1_30(),
        };
        let mut c = ModelCache::new(opts);
        let mut w = Vec::new();
        let key = NsName::new("ns", "svc");
        let s = slice("svc-a", &[(1, false), (2, true)]);
        assert!(c.apply_slice("ns/svc-a", Some(&s), &mut w));
        assert!(c.apply_service(&key, Some(&service("p", 80)), &mut w));
        let eps = |m: &ClusterModel| -> Vec<String> {
            m.services[&key][0]
                .endpoints
                .iter()
                .map(|e| e.endpoint.clone())
                .collect()
        };
        let m = c.model();
        assert_eq!(eps(&m), ["10.0.0.1:80", "10.0.0.2:80"]);
        assert!(m.unmatched_endpoints.is_empty());
        assert!(
            !c.apply_service(&key, Some(&service("p", 80)), &mut w),
            "same again"
        );
        assert!(c.apply_service(&key, Some(&service("p", 81)), &mut w));
        let m = c.model();
        assert_eq!(m.services[&key][0].port, 81);
        assert_eq!(eps(&m), ["10.0.0.1:80", "10.0.0.2:80"], "endpoints stay");
        // A renamed port no longer matches the slice's port.
        assert!(c.apply_service(&key, Some(&service("q", 81)), &mut w));
        let m = c.model();
        assert!(eps(&m).is_empty());
        assert_eq!(m.unmatched_endpoints[&key].len(), 1);
        assert!(c.apply_service(&key, None, &mut w));
        let m = c.model();
        assert!(m.services.is_empty() && m.unmatched_endpoints.contains_key(&key));
        assert!(!c.apply_service(&key, None, &mut w), "already gone");
    }

    /// Upstream's service change tracker compares the derived service-port info: a field
    /// it does not keep (spec.trafficDistribution) is no change in either release; the
    /// topology annotation is one in 1.30 only (1.35 no longer reads it).
    #[test]
    fn service_changes_follow_the_emulated_service_port_info() {
        let svc = |extra: serde_json::Value| -> Service {
            let mut v = serde_json::json!({
                "metadata": {"name": "svc", "namespace": "ns", "annotations": {}},
                "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "p", "port": 80}]}
            });
            if let Some(td) = extra.get("td") {
                v["spec"]["trafficDistribution"] = td.clone();
            }
            if let Some(a) = extra.get("annotation") {
                v["metadata"]["annotations"]["service.kubernetes.io/topology-mode"] = a.clone();
            }
            serde_json::from_value(v).unwrap()
        };
        let key = NsName::new("ns", "svc");
        for (compat, annotation_counts) in [
            (crate::compat::Compat::v1_30(), true),
            (crate::compat::Compat::v1_35(), false),
        ] {
            let mut c = ModelCache::new(ModelOptions {
                family: IpFamily::V4,
                node_name: "me".into(),
                topology_aware_hints: true,
                node_hints: false,
                load_balancer_ip_mode: true,
                compat,
            });
            let mut w = Vec::new();
            assert!(c.apply_service(&key, Some(&svc(serde_json::json!({}))), &mut w));
            let td = svc(serde_json::json!({"td": "PreferClose"}));
            assert!(
                !c.apply_service(&key, Some(&td), &mut w),
                "{:?}",
                compat.version
            );
            let an = svc(serde_json::json!({"td": "PreferClose", "annotation": "Auto"}));
            assert_eq!(c.apply_service(&key, Some(&an), &mut w), annotation_counts);
        }
    }
}
