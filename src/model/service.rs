//! Service → service ports, with the API defaulting and field filtering of spec §3.1.1.

use super::endpoint::Endpoint;
use super::ip::{parse_ip_sloppy, Cidr, IpFamily};
use super::{NsName, Protocol, Warning, Warnings};
use crate::compat::Compat;
use crate::rules::names::{ChainHash, ChainKind};
use k8s_openapi::api::core::v1::Service;
use std::net::IpAddr;
use std::sync::Arc;

/// Labels whose presence makes kube-proxy's informers never deliver the object.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
const TOPOLOGY_HINTS_ANNOTATION: &str = "service.kubernetes.io/topology-aware-hints";
const TOPOLOGY_MODE_ANNOTATION: &str = "service.kubernetes.io/topology-mode";
const DEFAULT_AFFINITY_TIMEOUT: i32 = 10800;
/// API validation's range for `sessionAffinityConfig.clientIP.timeoutSeconds`.
const MAX_AFFINITY_TIMEOUT: i32 = 86400;
const KIND: &str = "Service";

/// One `spec.ports[]` entry of a Service, as one proxier family sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub service: NsName,
    pub port_name: String,
    pub protocol: Protocol,
    /// `ns/name:port`, or `ns/name` for an unnamed port.
    pub spn: String,
    /// Names of this port's SVC/SVL/EXT/FW chains (one hash shared by all four).
    pub chains: ServiceChains,
    pub cluster_ip: IpAddr,
    /// `cluster_ip` and `port` as rule text, formatted once per change, not per sync.
    pub cluster_ip_text: String,
    pub port: u16,
    pub port_text: String,
    /// 0 = none.
    pub node_port: u16,
    pub external_ips: Vec<IpAddr>,
    pub load_balancer_vips: Vec<IpAddr>,
    pub load_balancer_source_ranges: Vec<Cidr>,
    /// `Some(seconds)` for ClientIP session affinity.
    pub affinity_timeout: Option<i32>,
    pub external_policy_local: bool,
    pub internal_policy_local: bool,
    /// 0 = none.
    pub health_check_node_port: u16,
    /// The topology annotation (empty where the release no longer reads it). Part of the
    /// service-port info, so changing it changes the Service; `spec.trafficDistribution`
    /// is not (upstream keeps no such field).
    pub hints_annotation: String,
    /// This port's endpoints (from the Service's EndpointSlices), sorted by endpoint string.
    /// Shared with the slice it came from when only one slice serves the port.
    pub endpoints: Arc<Vec<Endpoint>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceChains {
    pub svc: String,
    pub svl: String,
    pub ext: String,
    pub fw: String,
}

impl ServiceChains {
    pub fn new(spn: &str, protocol: Protocol) -> ServiceChains {
        let h = ChainHash::of(&[spn, protocol.as_str()]);
        ServiceChains {
            svc: h.chain_name(ChainKind::Svc),
            svl: h.chain_name(ChainKind::Svl),
            ext: h.chain_name(ChainKind::Ext),
            fw: h.chain_name(ChainKind::Fw),
        }
    }
}

impl ServicePort {
    /// NodePort, a load-balancer VIP or an external IP (per the family-filtered lists).
    pub fn externally_accessible(&self) -> bool {
        self.node_port != 0 || !self.load_balancer_vips.is_empty() || !self.external_ips.is_empty()
    }

    pub fn uses_cluster_endpoints(&self) -> bool {
        !self.internal_policy_local || self.externally_accessible()
    }

    pub fn uses_local_endpoints(&self) -> bool {
        self.internal_policy_local || (self.external_policy_local && self.externally_accessible())
    }
}

/// Options of the proxier that change how a Service is read.
#[derive(Clone, Copy, Debug)]
pub struct ServiceReadOptions {
    pub family: IpFamily,
    pub load_balancer_ip_mode: bool,
    pub compat: Compat,
}

/// True if kube-proxy's informer label selector filters this object out.
pub fn filtered_by_labels(labels: Option<&std::collections::BTreeMap<String, String>>) -> bool {
    labels
        .is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME_LABEL) || l.contains_key(HEADLESS_LABEL))
}

/// DNS-1123 style names only: anything else could smuggle tokens into a rule.
pub fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

/// Derives the service ports of `svc` for one family. Returns an empty list for Services
/// kube-proxy ignores (headless, ExternalName, no ClusterIP of this family).
pub fn service_ports(
    svc: &Service,
    opts: ServiceReadOptions,
    warn: &mut Warnings,
) -> Vec<ServicePort> {
    let meta = &svc.metadata;
    let namespace = meta.namespace.as_deref().unwrap_or("default");
    let Some(name) = meta.name.as_deref() else {
        warn.push(Warning::new(
            KIND,
            "metadata.name",
            format!("{KIND} in namespace {namespace:?}: metadata.name missing; service ignored"),
        ));
        return vec![];
    };
    let what = format!("{KIND} {namespace}/{name}");
    if !is_safe_name(namespace) || !is_safe_name(name) {
        warn.push(Warning::new(
            KIND,
            "metadata",
            format!("{what}: metadata: invalid namespace or name; service ignored"),
        ));
        return vec![];
    }
    let mut field = |field: &'static str, text: String| {
        warn.push(Warning::new(KIND, field, format!("{what}: {text}")));
    };
    let Some(spec) = svc.spec.as_ref() else {
        return vec![];
    };
    let svc_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    if svc_type == "ExternalName" {
        return vec![];
    }
    let cluster_ip_raw = spec.cluster_ip.as_deref().unwrap_or("");
    if cluster_ip_raw.is_empty() || cluster_ip_raw == "None" {
        return vec![];
    }
    let Some(cip_text) = cluster_ip_for_family(svc, opts.family) else {
        return vec![];
    };
    let Some(cluster_ip) = parse_ip_sloppy(cip_text).filter(|ip| IpFamily::of(ip) == opts.family)
    else {
        field(
            "spec.clusterIPs",
            format!(
                "spec.clusterIPs {cip_text:?}: not an {} address; service ignored",
                opts.family
            ),
        );
        return vec![];
    };

    let external_ips: Vec<IpAddr> = spec
        .external_ips
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, s)| {
            let ip = parse_ip_sloppy(s.trim());
            if ip.is_none() {
                field(
                    "spec.externalIPs",
                    format!("spec.externalIPs[{i}] {s:?}: not an IP address; ignored"),
                );
            }
            ip
        })
        .filter(|ip| IpFamily::of(ip) == opts.family)
        .collect();

    let load_balancer_vips: Vec<IpAddr> = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, ing)| {
            let ip = ing.ip.as_deref().filter(|s| !s.is_empty())?;
            // With the LoadBalancerIPMode gate, only VIP-mode (or unset) ingress gets rules.
            let vip_mode =
                !opts.load_balancer_ip_mode || ing.ip_mode.as_deref().is_none_or(|m| m == "VIP");
            if !vip_mode {
                return None;
            }
            let parsed = parse_ip_sloppy(ip);
            if parsed.is_none() {
                field(
                    "status.loadBalancer.ingress.ip",
                    format!(
                        "status.loadBalancer.ingress[{i}].ip {ip:?}: not an IP address; ignored"
                    ),
                );
            }
            parsed
        })
        .filter(|ip| IpFamily::of(ip) == opts.family)
        .collect();

    let mut load_balancer_source_ranges: Vec<Cidr> = spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, s)| {
            let c = Cidr::parse_sloppy(s.trim());
            if c.is_none() {
                field(
                    "spec.loadBalancerSourceRanges",
                    format!("spec.loadBalancerSourceRanges[{i}] {s:?}: not a CIDR; ignored"),
                );
            }
            c
        })
        .filter(|c| c.family() == opts.family)
        .collect();
    // Newer releases: a zero-prefix range of the family allows all (no firewall at all).
    if opts.compat.zero_prefix_means_all && load_balancer_source_ranges.iter().any(Cidr::is_zero) {
        load_balancer_source_ranges.clear();
    }

    // Out of API validation's range (0 and -1 would make `--seconds` fail the whole
    // payload): ignored as if unset, so API defaulting's 10800 applies.
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        let t = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds);
        match t {
            Some(t) if (1..=MAX_AFFINITY_TIMEOUT).contains(&t) => t,
            None => DEFAULT_AFFINITY_TIMEOUT,
            Some(t) => {
                field(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    format!("spec.sessionAffinityConfig.clientIP.timeoutSeconds {t}: out of range 1..{MAX_AFFINITY_TIMEOUT}; default {DEFAULT_AFFINITY_TIMEOUT} used"),
                );
                DEFAULT_AFFINITY_TIMEOUT
            }
        }
    });

    let externally_accessible_by_type = svc_type == "LoadBalancer"
        || svc_type == "NodePort"
        || (svc_type == "ClusterIP" && spec.external_ips.as_ref().is_some_and(|v| !v.is_empty()));
    let external_policy_local =
        externally_accessible_by_type && spec.external_traffic_policy.as_deref() == Some("Local");
    let internal_policy_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let mut health_check_node_port = 0;
    if svc_type == "LoadBalancer" && external_policy_local {
        match spec.health_check_node_port.map(u16::try_from) {
            Some(Ok(p)) if p != 0 => health_check_node_port = p,
            _ => field(
                "spec.healthCheckNodePort",
                format!(
                    "spec.healthCheckNodePort {:?}: missing or out of range 1..65535 for an externalTrafficPolicy Local LoadBalancer; no health check",
                    spec.health_check_node_port
                ),
            ),
        }
    }
    let annotations = meta
        .annotations
        .as_ref()
        .filter(|_| opts.compat.service_info_has_topology_annotation);
    let hints_annotation = annotations
        .and_then(|a| a.get(TOPOLOGY_HINTS_ANNOTATION))
        .filter(|v| !v.is_empty())
        .or_else(|| annotations.and_then(|a| a.get(TOPOLOGY_MODE_ANNOTATION)))
        .cloned()
        .unwrap_or_default();

    let service = NsName::new(namespace, name);
    let mut out = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let port_name = p.name.clone().unwrap_or_default();
        if !port_name.is_empty() && !is_safe_name(&port_name) {
            field(
                "spec.ports.name",
                format!("spec.ports[{i}].name {port_name:?}: invalid port name; port ignored"),
            );
            continue;
        }
        let proto_text = p.protocol.as_deref().unwrap_or("TCP");
        let Some(protocol) = Protocol::from_api(proto_text) else {
            field(
                "spec.ports.protocol",
                format!(
                    "spec.ports[{i}].protocol {proto_text:?}: unsupported protocol; port ignored"
                ),
            );
            continue;
        };
        let Some(port) = u16::try_from(p.port).ok().filter(|v| *v != 0) else {
            field(
                "spec.ports.port",
                format!(
                    "spec.ports[{i}].port {}: out of range 1..65535; port ignored",
                    p.port
                ),
            );
            continue;
        };
        let node_port = match p.node_port.map(u16::try_from) {
            None => 0,
            Some(Ok(v)) => v,
            Some(Err(_)) => {
                field(
                    "spec.ports.nodePort",
                    format!(
                        "spec.ports[{i}].nodePort {}: out of range 1..65535; ignored",
                        p.node_port.unwrap_or_default()
                    ),
                );
                0
            }
        };
        let spn = service.port_name_string(&port_name);
        let chains = ServiceChains::new(&spn, protocol);
        out.push(ServicePort {
            service: service.clone(),
            port_name,
            protocol,
            spn,
            chains,
            cluster_ip,
            cluster_ip_text: cluster_ip.to_string(),
            port,
            port_text: port.to_string(),
            node_port,
            external_ips: external_ips.clone(),
            load_balancer_vips: load_balancer_vips.clone(),
            load_balancer_source_ranges: load_balancer_source_ranges.clone(),
            affinity_timeout,
            external_policy_local,
            internal_policy_local,
            health_check_node_port,
            hints_annotation: hints_annotation.clone(),
            endpoints: Arc::default(),
        });
    }
    out
}

/// `spec.clusterIPs[i]` for the family (or `spec.clusterIP` when `ipFamilies` is unset).
fn cluster_ip_for_family(svc: &Service, family: IpFamily) -> Option<&str> {
    let spec = svc.spec.as_ref()?;
    let families = spec.ip_families.as_deref().unwrap_or(&[]);
    if families.is_empty() {
        let ip = spec.cluster_ip.as_deref()?;
        let is_v6 = parse_ip_sloppy(ip).is_some_and(|i| i.is_ipv6());
        return ((family == IpFamily::V6) == is_v6).then_some(ip);
    }
    let idx = families.iter().position(|f| f == family.api_name())?;
    match spec.cluster_ips.as_deref() {
        Some(ips) => ips.get(idx).map(String::as_str),
        // Objects written by hand often carry only clusterIP: it is clusterIPs[0].
        None if idx == 0 => spec.cluster_ip.as_deref(),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(spec: serde_json::Value) -> (Vec<ServicePort>, Warnings) {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns"}, "spec": spec
        }))
        .unwrap();
        let mut w = Vec::new();
        let opts = ServiceReadOptions {
            family: IpFamily::V4,
            load_balancer_ip_mode: true,
            compat: Compat::v1_30(),
        };
        (service_ports(&svc, opts, &mut w), w)
    }

    fn affinity(t: i32) -> (Option<i32>, Warnings) {
        let (p, w) = read(serde_json::json!({
            "clusterIP": "10.96.0.1", "ports": [{"port": 80}],
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": t}}
        }));
        (p[0].affinity_timeout, w)
    }

    #[test]
    fn affinity_timeouts_outside_api_validation_fall_back_to_the_default() {
        assert_eq!(affinity(1), (Some(1), vec![]));
        assert_eq!(affinity(86400), (Some(86400), vec![]));
        for t in [0, -1, 86401, i32::MIN] {
            let (got, w) = affinity(t);
            assert_eq!(got, Some(10800), "{t}");
            assert_eq!(w.len(), 1);
            assert_eq!(
                w[0].field,
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds"
            );
            assert_eq!(
                w[0].text,
                format!("Service ns/web: spec.sessionAffinityConfig.clientIP.timeoutSeconds {t}: out of range 1..86400; default 10800 used")
            );
        }
    }

    #[test]
    fn ports_out_of_range_are_ignored_with_their_field() {
        let (p, w) = read(serde_json::json!({
            "clusterIP": "010.96.0.1", "type": "NodePort",
            "ports": [{"name": "a", "port": 0}, {"name": "b", "port": 65536},
                {"name": "c", "port": 80, "nodePort": 70000},
                {"name": "d", "port": 81, "nodePort": 30001, "protocol": "HTTP"},
                {"name": "e f", "port": 82}, {"name": "g", "port": 65535, "nodePort": 65535}]
        }));
        let fields: Vec<&str> = w.iter().map(|w| w.field).collect();
        assert_eq!(
            fields,
            [
                "spec.ports.port",
                "spec.ports.port",
                "spec.ports.nodePort",
                "spec.ports.protocol",
                "spec.ports.name"
            ]
        );
        let kept: Vec<(&str, u16, u16)> = p
            .iter()
            .map(|p| (p.port_name.as_str(), p.port, p.node_port))
            .collect();
        assert_eq!(kept, [("c", 80, 0), ("g", 65535, 65535)]);
        assert_eq!(p[0].cluster_ip_text, "10.96.0.1", "canonical");
    }

    #[test]
    fn bad_addresses_and_ranges_are_ignored_with_their_field() {
        let (p, w) = read(serde_json::json!({
            "clusterIP": "10.96.0.1", "type": "LoadBalancer",
            "externalTrafficPolicy": "Local", "healthCheckNodePort": -5,
            "externalIPs": ["1.2.3.4 -j DROP", "203.0.113.1"],
            "loadBalancerSourceRanges": ["10.0.0.0/33", "192.168.0.5/16"],
            "ports": [{"port": 80, "nodePort": 30080}]
        }));
        let fields: Vec<&str> = w.iter().map(|w| w.field).collect();
        assert_eq!(
            fields,
            [
                "spec.externalIPs",
                "spec.loadBalancerSourceRanges",
                "spec.healthCheckNodePort"
            ]
        );
        assert_eq!(
            p[0].external_ips,
            ["203.0.113.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            p[0].load_balancer_source_ranges[0].to_string(),
            "192.168.0.0/16"
        );
        assert_eq!(p[0].health_check_node_port, 0);
    }
}
