//! The proxier's view of the cluster: service ports and their endpoints for one IP family.

pub mod cache;
pub mod endpoint;
pub mod ip;
pub mod node;
pub mod service;
pub mod slice_change;
pub mod topology;

use endpoint::SharedPortEndpoints;
use ip::IpFamily;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use node::NodeInfo;
use service::ServicePort;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Non-fatal problems found in objects (a field or object skipped, as upstream does).
pub type Warnings = Vec<Warning>;

/// One problem in one object: an endpoint dropped, a field ignored or rewritten.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Warning {
    /// `Service`, `EndpointSlice` or `Node`.
    pub kind: &'static str,
    /// The field path without indices, e.g. `endpoints.addresses`: a bounded metric label.
    pub field: &'static str,
    /// `Kind ns/name: path "value": problem; consequence`.
    pub text: String,
}

impl Warning {
    pub fn new(kind: &'static str, field: &'static str, text: String) -> Warning {
        Warning { kind, field, text }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Drops repeated warnings, keeping the first of each in order (dual-stack reads an
/// object once per family).
pub fn dedup_warnings(warn: &mut Warnings) {
    let mut seen = std::collections::HashSet::new();
    warn.retain(|w| seen.insert(w.clone()));
}

/// `namespace/name`, ordered byte-wise as that joined string (the canonical order of §4).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NsName {
    joined: String,
    slash: usize,
}

impl NsName {
    pub fn new(namespace: &str, name: &str) -> NsName {
        NsName {
            joined: format!("{namespace}/{name}"),
            slash: namespace.len(),
        }
    }
    pub fn namespace(&self) -> &str {
        &self.joined[..self.slash]
    }
    pub fn name(&self) -> &str {
        &self.joined[self.slash + 1..]
    }
    pub fn as_str(&self) -> &str {
        &self.joined
    }
    /// The service-port-name string: `ns/name:port`, or `ns/name` for an unnamed port.
    pub fn port_name_string(&self, port: &str) -> String {
        if port.is_empty() {
            self.joined.clone()
        } else {
            format!("{}:{port}", self.joined)
        }
    }
}

impl fmt::Display for NsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.joined)
    }
}

impl fmt::Debug for NsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.joined)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn from_api(s: &str) -> Option<Protocol> {
        match s {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
    /// Lower-case, as used in `-m <p> -p <p>` and in chain hashes.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// The Service `namespace/name` an object key stands for (namespace defaulted as the
/// reader does).
pub fn service_key(svc: &Service) -> NsName {
    NsName::new(
        svc.metadata.namespace.as_deref().unwrap_or("default"),
        svc.metadata.name.as_deref().unwrap_or(""),
    )
}

/// `namespace/name` of an EndpointSlice.
pub fn slice_key(slice: &EndpointSlice) -> String {
    format!(
        "{}/{}",
        slice.metadata.namespace.as_deref().unwrap_or("default"),
        slice.metadata.name.as_deref().unwrap_or("")
    )
}

/// What a proxier needs to know to read objects.
#[derive(Clone, Debug)]
pub struct ModelOptions {
    pub family: IpFamily,
    /// This node's name (lower-case hostname override).
    pub node_name: String,
    /// Zone hints are read.
    pub topology_aware_hints: bool,
    /// Node hints (PreferSameNode) are read.
    pub node_hints: bool,
    pub load_balancer_ip_mode: bool,
    pub compat: crate::compat::Compat,
}

/// Service ports and endpoints of one family, keyed by Service.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterModel {
    /// Ports of each Service, sorted by (port name, protocol); shared between
    /// consecutive models of a daemon when the Service did not change.
    pub services: BTreeMap<NsName, Arc<Vec<ServicePort>>>,
    /// Endpoints from slices that match no service port (yet): kept so that their
    /// changes still count as changes of that Service.
    pub unmatched_endpoints: BTreeMap<NsName, SharedPortEndpoints>,
    /// This node, if its Node object is known.
    pub node: Option<NodeInfo>,
    /// Services any of whose EndpointSlices had a pending change since the previous
    /// model of the same cache (upstream's "endpoints changed", spec §5.5): rewritten by
    /// the next partial sync even when their endpoints come out identical.
    pub endpoints_changed: std::collections::BTreeSet<NsName>,
}

impl ClusterModel {
    pub fn build<'a>(
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
        nodes: impl IntoIterator<Item = &'a Node>,
        opts: &ModelOptions,
        warn: &mut Warnings,
    ) -> ClusterModel {
        let mut cache = cache::ModelCache::new(opts.clone());
        for svc in services {
            cache.apply_service(&service_key(svc), Some(svc), warn);
        }
        // Two slices with one name: the later replaces the earlier, as an API update would
        // and as the daemon's store does (the loader warns about such duplicates).
        for slice in slices {
            cache.apply_slice(&slice_key(slice), Some(slice), warn);
        }
        cache.set_node(
            nodes
                .into_iter()
                .find(|n| n.metadata.name.as_deref() == Some(opts.node_name.as_str()))
                .map(|n| NodeInfo::read(n, warn)),
        );
        cache.model()
    }

    /// [`ClusterModel::build`] over a loaded object dump.
    pub fn from_objects(
        objects: &crate::source::objects::ObjectSet,
        opts: &ModelOptions,
        warn: &mut Warnings,
    ) -> ClusterModel {
        ClusterModel::build(
            objects.services.iter().map(|(s, _)| s),
            objects.endpoint_slices.iter().map(|(s, _)| s),
            objects.nodes.iter().map(|(n, _)| n),
            opts,
            warn,
        )
    }

    /// Endpoints of all service ports that exist (decides large-cluster mode).
    pub fn total_endpoints(&self) -> usize {
        self.services
            .values()
            .flat_map(|p| p.iter())
            .map(|sp| sp.endpoints.len())
            .sum()
    }

    /// Services whose ports or endpoints differ between `self` and `prev` (the change sets
    /// upstream's trackers would report for one sync).
    pub fn changed_services(&self, prev: &ClusterModel) -> std::collections::HashSet<NsName> {
        let mut out: std::collections::HashSet<NsName> =
            self.endpoints_changed.iter().cloned().collect();
        for (k, v) in &self.services {
            // Pointer equality first: unchanged Services share their ports.
            if !prev
                .services
                .get(k)
                .is_some_and(|p| Arc::ptr_eq(p, v) || p == v)
            {
                out.insert(k.clone());
            }
        }
        for k in prev.services.keys() {
            if !self.services.contains_key(k) {
                out.insert(k.clone());
            }
        }
        for (k, v) in &self.unmatched_endpoints {
            if prev.unmatched_endpoints.get(k) != Some(v) {
                out.insert(k.clone());
            }
        }
        for k in prev.unmatched_endpoints.keys() {
            if !self.unmatched_endpoints.contains_key(k) {
                out.insert(k.clone());
            }
        }
        out
    }
}
