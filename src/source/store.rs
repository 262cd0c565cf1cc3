//! What the daemon keeps of the objects sources send: per IP family, the derived service
//! ports and endpoints ([`ModelCache`]), not the API objects themselves; raw objects are
//! dropped once read. Only Nodes are kept whole (a handful; health checks read them).

use crate::model::cache::{ModelCache, WarnOnce};
use crate::model::ip::IpFamily;
use crate::model::node::NodeInfo;
use crate::model::{service_key, slice_key, ClusterModel, ModelOptions, NsName};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::BTreeSet;

/// One watch event, or (part of) a complete (re)list.
#[derive(Clone, Debug)]
pub enum Change<K> {
    /// The full set after an initial list or a relist, in one piece.
    Replace(Vec<K>),
    /// A (re)list starts: the objects `Listed` until `ListDone` are the complete set.
    /// Streaming a list keeps only one raw object in memory at a time.
    ListStart,
    Listed(Box<K>),
    ListDone,
    /// The list failed midway (the watcher will start another): what was listed stays
    /// applied, nothing is deleted, and syncs are no longer held back.
    ListAbort,
    // Boxed: objects are large and most events carry one.
    Apply(Box<K>),
    Delete(Box<K>),
}

#[derive(Clone, Debug)]
pub enum SourceEvent {
    Services(Change<Service>),
    Slices(Change<EndpointSlice>),
    Nodes(Change<Node>),
}

/// What applying events did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Objects whose derived form changed for at least one family.
    pub services_changed: usize,
    pub slices_changed: usize,
    pub nodes_changed: usize,
    /// Bit i: the model of family cache i changed.
    pub families: u8,
    /// Events as upstream's change counters count them: every Service event once per
    /// family proxier (dual-stack: twice), every EndpointSlice event of a supported
    /// address type once (only its family's proxier gets it).
    pub service_events: usize,
    pub slice_events: usize,
}

impl Applied {
    pub fn any(&self) -> bool {
        self.services_changed + self.slices_changed + self.nodes_changed > 0
    }

    pub fn family_changed(&self, i: usize) -> bool {
        self.families & (1 << i) != 0
    }

    fn add(&mut self, other: Applied) {
        self.services_changed += other.services_changed;
        self.slices_changed += other.slices_changed;
        self.nodes_changed += other.nodes_changed;
        self.families |= other.families;
        self.service_events += other.service_events;
        self.slice_events += other.slice_events;
    }
}

/// Keys of one kind: those known, and those seen since a list started.
#[derive(Debug)]
struct Keys<T: Ord> {
    known: BTreeSet<T>,
    listing: Option<BTreeSet<T>>,
    synced: bool,
}

impl<T: Ord> Default for Keys<T> {
    fn default() -> Self {
        Keys {
            known: BTreeSet::new(),
            listing: None,
            synced: false,
        }
    }
}

impl<T: Ord + Clone> Keys<T> {
    fn start(&mut self) {
        self.listing = Some(BTreeSet::new());
    }

    fn seen(&mut self, k: &T) {
        if let Some(l) = &mut self.listing {
            l.insert(k.clone());
        }
        self.known.insert(k.clone());
    }

    /// Ends a list: returns the keys that were not listed (deleted meanwhile).
    fn done(&mut self) -> Vec<T> {
        self.synced = true;
        let Some(listed) = self.listing.take() else {
            return Vec::new();
        };
        let gone: Vec<T> = self.known.difference(&listed).cloned().collect();
        self.known = listed;
        gone
    }
}

#[derive(Debug)]
pub struct Store {
    caches: Vec<ModelCache>,
    node_name: String,
    /// This node's object (the only Node kept).
    node: Option<Node>,
    services: Keys<NsName>,
    slices: Keys<String>,
    node_keys: Keys<String>,
    warn_once: WarnOnce,
}

impl Store {
    /// One cache per proxier, in the proxiers' order; all share `node_name`.
    pub fn new(families: Vec<ModelOptions>) -> Store {
        let node_name = families
            .first()
            .map(|o| o.node_name.clone())
            .unwrap_or_default();
        Store {
            caches: families.into_iter().map(ModelCache::new).collect(),
            node_name,
            node: None,
            services: Keys::default(),
            slices: Keys::default(),
            node_keys: Keys::default(),
            warn_once: WarnOnce::default(),
        }
    }

    /// Counts the problems found in objects (`kubeproxy_rs_invalid_object_fields_total`).
    pub fn set_invalid_counter(&mut self, counter: prometheus::IntCounterVec) {
        self.warn_once.set_counter(counter);
    }

    pub fn all_synced(&self) -> bool {
        self.services.synced && self.slices.synced && self.node_keys.synced
    }

    /// A list is being received: syncing now would see half of it.
    pub fn in_list(&self) -> bool {
        self.services.listing.is_some()
            || self.slices.listing.is_some()
            || self.node_keys.listing.is_some()
    }

    /// This node's object, if known (the only Node kept).
    pub fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }

    /// Family `i`'s model as of now.
    pub fn model(&mut self, i: usize) -> ClusterModel {
        self.caches[i].model()
    }

    pub fn apply(&mut self, ev: SourceEvent) -> Applied {
        match ev {
            SourceEvent::Services(c) => self.change(c, Store::service),
            SourceEvent::Slices(c) => self.change(c, Store::slice),
            SourceEvent::Nodes(c) => self.change(c, Store::node_object),
        }
    }

    fn change<K: Listed>(
        &mut self,
        c: Change<K>,
        one: fn(&mut Store, Op<K>) -> Applied,
    ) -> Applied {
        let mut a = Applied::default();
        match c {
            Change::Replace(items) => {
                a.add(self.change(Change::ListStart, one));
                for o in items {
                    a.add(self.change(Change::Listed(Box::new(o)), one));
                }
                a.add(self.change(Change::ListDone, one));
            }
            Change::ListStart => K::keys(self).start(),
            Change::ListAbort => K::keys(self).listing = None,
            Change::Listed(o) => {
                K::keys(self).seen(&o.key());
                a = one(self, Op::Put(&o));
            }
            Change::Apply(o) => {
                K::keys(self).seen(&o.key());
                a = one(self, Op::Put(&o));
            }
            Change::ListDone => {
                for k in K::keys(self).done() {
                    a.add(one(self, Op::Remove(&k)));
                }
            }
            Change::Delete(o) => {
                let k = o.key();
                K::keys(self).known.remove(&k);
                if let Some(l) = &mut K::keys(self).listing {
                    l.remove(&k);
                }
                a = one(self, Op::Remove(&k));
            }
        }
        a
    }

    fn service(&mut self, op: Op<Service>) -> Applied {
        let mut warnings = Vec::new();
        let mut a = Applied::default();
        let (key, obj) = match op {
            Op::Put(o) => (service_key(o), Some(o)),
            Op::Remove(k) => (k.clone(), None),
        };
        for (i, c) in self.caches.iter_mut().enumerate() {
            if c.apply_service(&key, obj, &mut warnings) {
                a.families |= 1 << i;
            }
        }
        a.services_changed = usize::from(a.families != 0);
        // Upstream hands every Service event to each family's proxier, and each counts it.
        a.service_events = self.caches.len();
        self.warn_once.report(
            "Service",
            key.as_str(),
            a.families != 0,
            obj.is_some().then_some(warnings),
        );
        a
    }

    fn slice(&mut self, op: Op<EndpointSlice>) -> Applied {
        let mut warnings = Vec::new();
        let mut a = Applied::default();
        let (key, obj) = match op {
            Op::Put(o) => (slice_key(o), Some(o)),
            Op::Remove(k) => (k.clone(), None),
        };
        for (i, c) in self.caches.iter_mut().enumerate() {
            if c.apply_slice(&key, obj, &mut warnings) {
                a.families |= 1 << i;
            }
        }
        a.slices_changed = usize::from(a.families != 0);
        a.slice_events =
            usize::from(obj.is_none_or(|s| IpFamily::from_api_name(&s.address_type).is_some()));
        self.warn_once.report(
            "EndpointSlice",
            &key,
            a.families != 0,
            obj.is_some().then_some(warnings),
        );
        a
    }

    fn node_object(&mut self, op: Op<Node>) -> Applied {
        let key = match &op {
            Op::Put(o) => o.key(),
            Op::Remove(k) => (*k).clone(),
        };
        // Only this node matters (a dump may list every node of the cluster).
        if key != self.node_name {
            return Applied::default();
        }
        let changed = match op {
            Op::Put(o) => {
                let changed = self.node.as_ref() != Some(o);
                if changed {
                    self.node = Some(o.clone());
                }
                changed
            }
            Op::Remove(_) => self.node.take().is_some(),
        };
        let mut a = Applied {
            nodes_changed: usize::from(changed),
            ..Applied::default()
        };
        let mut warnings = Vec::new();
        let info = self.node.as_ref().map(|n| NodeInfo::read(n, &mut warnings));
        for (i, c) in self.caches.iter_mut().enumerate() {
            if c.set_node(info.clone()) {
                a.families |= 1 << i;
            }
        }
        let warnings = info.is_some().then_some(warnings);
        self.warn_once.report("Node", &key, changed, warnings);
        a
    }
}

enum Op<'a, K: Listed> {
    Put(&'a K),
    Remove(&'a K::Key),
}

/// How the store keys one kind of object.
trait Listed {
    type Key: Ord + Clone;
    fn key(&self) -> Self::Key;
    fn keys(store: &mut Store) -> &mut Keys<Self::Key>;
}

impl Listed for Service {
    type Key = NsName;
    fn key(&self) -> NsName {
        service_key(self)
    }
    fn keys(store: &mut Store) -> &mut Keys<NsName> {
        &mut store.services
    }
}

impl Listed for EndpointSlice {
    type Key = String;
    fn key(&self) -> String {
        slice_key(self)
    }
    fn keys(store: &mut Store) -> &mut Keys<String> {
        &mut store.slices
    }
}

impl Listed for Node {
    type Key = String;
    fn key(&self) -> String {
        self.metadata.name.clone().unwrap_or_default()
    }
    fn keys(store: &mut Store) -> &mut Keys<String> {
        &mut store.node_keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ip::IpFamily;

    fn opts(family: IpFamily) -> ModelOptions {
        ModelOptions {
            family,
            node_name: "node-a".into(),
            topology_aware_hints: false,
            load_balancer_ip_mode: false,
            node_hints: false,
            compat: crate::compat::Compat::v1_30(),
        }
    }

    fn store() -> Store {
        Store::new(vec![opts(IpFamily::V4), opts(IpFamily::V6)])
    }

    fn svc(name: &str, ip: &str, port: i32) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": "1"},
            "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"port": port, "protocol": "TCP"}]}
        }))
        .unwrap()
    }

    fn slice(name: &str, svc: &str, ip: &str) -> EndpointSlice {
        let family = if ip.contains(':') { "IPv6" } else { "IPv4" };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns",
                "labels": {"kubernetes.io/service-name": svc}},
            "addressType": family,
            "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
            "ports": [{"port": 8080, "protocol": "TCP"}]
        }))
        .unwrap()
    }

    fn services(s: &mut Store, i: usize) -> Vec<String> {
        s.model(i).services.keys().map(|k| k.to_string()).collect()
    }

    #[test]
    fn identical_relist_changes_nothing() {
        let mut s = store();
        let a = s.apply(SourceEvent::Services(Change::Replace(vec![
            svc("a", "10.0.0.1", 80),
            svc("b", "10.0.0.2", 80),
        ])));
        assert_eq!(a.services_changed, 2);
        assert!(
            a.family_changed(0) && !a.family_changed(1),
            "IPv4 services only"
        );
        assert!(!s.all_synced());
        let a = s.apply(SourceEvent::Services(Change::Replace(vec![
            svc("b", "10.0.0.2", 80),
            svc("a", "10.0.0.1", 80),
        ])));
        assert!(!a.any());
        let a = s.apply(SourceEvent::Services(Change::Replace(vec![svc(
            "a", "10.0.0.1", 81,
        )])));
        assert_eq!(a.services_changed, 2, "a changed, b removed");
        assert_eq!(services(&mut s, 0), ["ns/a"]);
        assert_eq!(
            s.apply(SourceEvent::Services(Change::Apply(Box::new(svc(
                "a", "10.0.0.1", 81
            )))))
            .services_changed,
            0
        );
        let a = s.apply(SourceEvent::Services(Change::Delete(Box::new(svc(
            "a", "10.0.0.1", 81,
        )))));
        assert_eq!(a.services_changed, 1);
        assert!(services(&mut s, 0).is_empty());
    }

    #[test]
    fn a_streamed_relist_deletes_what_it_did_not_list_only_at_its_end() {
        let mut s = store();
        s.apply(SourceEvent::Services(Change::Replace(vec![
            svc("a", "10.0.0.1", 80),
            svc("b", "10.0.0.2", 80),
        ])));
        s.apply(SourceEvent::Services(Change::ListStart));
        assert!(s.in_list());
        s.apply(SourceEvent::Services(Change::Listed(Box::new(svc(
            "b", "10.0.0.2", 80,
        )))));
        assert_eq!(
            services(&mut s, 0),
            ["ns/a", "ns/b"],
            "a still there mid-list"
        );
        let a = s.apply(SourceEvent::Services(Change::ListDone));
        assert_eq!(a.services_changed, 1);
        assert!(!s.in_list());
        assert_eq!(services(&mut s, 0), ["ns/b"]);
        // A list that fails midway deletes nothing and stops holding syncs back.
        s.apply(SourceEvent::Services(Change::ListStart));
        s.apply(SourceEvent::Services(Change::Listed(Box::new(svc(
            "c", "10.0.0.3", 80,
        )))));
        let a = s.apply(SourceEvent::Services(Change::ListAbort));
        assert!(!a.any() && !s.in_list());
        assert_eq!(services(&mut s, 0), ["ns/b", "ns/c"]);
    }

    #[test]
    fn slices_reach_their_family_only_and_changes_are_per_family() {
        let mut s = store();
        s.apply(SourceEvent::Services(Change::Replace(vec![svc(
            "a", "10.0.0.1", 80,
        )])));
        let a = s.apply(SourceEvent::Slices(Change::Apply(Box::new(slice(
            "a-1", "a", "10.1.0.1",
        )))));
        assert_eq!((a.slices_changed, a.families), (1, 0b01));
        let a = s.apply(SourceEvent::Slices(Change::Apply(Box::new(slice(
            "a-2", "a", "fd00::1",
        )))));
        assert_eq!(a.families, 0b10, "an IPv6 slice changes the IPv6 model");
        let m = s.model(0);
        let eps: Vec<&str> = m
            .services
            .values()
            .flat_map(|p| p.iter())
            .flat_map(|sp| sp.endpoints.iter().map(|e| e.endpoint.as_str()))
            .collect();
        assert_eq!(eps, ["10.1.0.1:8080"]);
        // Unchanged services are shared between consecutive models.
        let m2 = s.model(0);
        let k = NsName::new("ns", "a");
        assert!(std::sync::Arc::ptr_eq(&m.services[&k], &m2.services[&k]));
        s.apply(SourceEvent::Slices(Change::Delete(Box::new(slice(
            "a-1", "a", "10.1.0.1",
        )))));
        assert!(s.model(0).services[&k][0].endpoints.is_empty());
    }

    #[test]
    fn a_bad_endpoint_is_reported_once_per_change_not_per_delivery() {
        let mut s = store();
        let c = prometheus::IntCounterVec::new(prometheus::Opts::new("t", "t"), &["kind", "field"])
            .unwrap();
        s.set_invalid_counter(c.clone());
        let count = || {
            c.with_label_values(&["EndpointSlice", "endpoints.addresses"])
                .get()
        };
        let bad = slice("a-1", "a", "010.0.0.500");
        s.apply(SourceEvent::Slices(Change::Apply(Box::new(bad.clone()))));
        assert_eq!(count(), 1);
        // The same object again: a relist, a file reload, a resync.
        s.apply(SourceEvent::Slices(Change::Apply(Box::new(bad.clone()))));
        s.apply(SourceEvent::Slices(Change::Replace(vec![bad.clone()])));
        assert_eq!(count(), 1, "unchanged objects are not reported again");
        // Another bad value is a change of the object: reported.
        s.apply(SourceEvent::Slices(Change::Apply(Box::new(slice(
            "a-1",
            "a",
            "10.0.0.1 ",
        )))));
        assert_eq!(count(), 2);
        // Gone and back: reported again.
        s.apply(SourceEvent::Slices(Change::Replace(vec![])));
        s.apply(SourceEvent::Slices(Change::Apply(Box::new(bad))));
        assert_eq!(count(), 3);
        // A dual-stack Service is read once per family, reported once.
        let mut svc = svc("a", "10.0.0.1", 80);
        svc.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
        svc.spec.as_mut().unwrap().session_affinity_config =
            serde_json::from_value(serde_json::json!({"clientIP": {"timeoutSeconds": -1}}))
                .unwrap();
        s.apply(SourceEvent::Services(Change::Apply(Box::new(svc.clone()))));
        s.apply(SourceEvent::Services(Change::Apply(Box::new(svc))));
        let field = "spec.sessionAffinityConfig.clientIP.timeoutSeconds";
        assert_eq!(c.with_label_values(&["Service", field]).get(), 1);
        let m = s.model(0);
        assert_eq!(
            m.services[&NsName::new("ns", "a")][0].affinity_timeout,
            Some(10800)
        );
    }

    #[test]
    fn only_this_node_changes_the_models() {
        let node = |name: &str, zone: &str| -> Node {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}}
            }))
            .unwrap()
        };
        let mut s = store();
        let a = s.apply(SourceEvent::Nodes(Change::Replace(vec![node(
            "other", "z",
        )])));
        assert_eq!(
            (a.nodes_changed, a.families),
            (0, 0),
            "other nodes are not kept"
        );
        assert!(s.node().is_none());
        let a = s.apply(SourceEvent::Nodes(Change::Apply(Box::new(node(
            "node-a", "z1",
        )))));
        assert_eq!(a.families, 0b11);
        assert!(s.node_keys.synced, "the node list completed");
        assert_eq!(s.model(1).node.unwrap().zone(), Some("z1"));
        assert!(s.node().is_some());
        let a = s.apply(SourceEvent::Nodes(Change::Replace(vec![])));
        assert_eq!((a.nodes_changed, a.families), (1, 0b11), "our node gone");
        assert!(s.model(0).node.is_none());
    }
}
