//! EndpointSlices → endpoints merged per service port (spec §3.1.2).

use super::ip::{endpoint_addr, EndpointAddr, IpFamily};
use super::service::is_safe_name;
use super::{NsName, Protocol, Warning, Warnings};
use crate::rules::names::{ChainHash, ChainKind};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::BTreeMap;
use std::sync::Arc;

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const KIND: &str = "EndpointSlice";

/// One endpoint of one service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The slice's address in canonical form (v1.30.3 used it verbatim and failed on
    /// `010.244.1.50`; newer upstream normalises, and so do we in every version).
    pub ip: String,
    pub port: u16,
    /// `ip:port`, `[ip]:port` for IPv6.
    pub endpoint: String,
    pub is_local: bool,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// Sorted, deduplicated `hints.forZones[].name`.
    pub zone_hints: Vec<String>,
    /// `hints.forNodes` is non-empty (read only where node hints are, see `compat`).
    pub has_node_hints: bool,
    /// `hints.forNodes` names this node.
    pub node_hint_local: bool,
    /// `KUBE-SEP-<hash>`, hashed once here rather than on every sync.
    pub sep_chain: String,
}

/// (port name, protocol) → endpoints sorted by endpoint string.
pub type PortEndpoints = BTreeMap<(String, Protocol), Vec<Endpoint>>;

/// [`PortEndpoints`] with shareable lists: a Service with one slice per port (the common
/// case) uses that slice's list as is.
pub type SharedPortEndpoints = BTreeMap<(String, Protocol), Arc<Vec<Endpoint>>>;

#[derive(Clone, Copy, Debug)]
pub struct SliceReadOptions<'a> {
    pub family: IpFamily,
    pub node_name: &'a str,
    pub topology_aware_hints: bool,
    /// PreferSameNode node hints (`hints.forNodes`) are read.
    pub node_hints: bool,
}

/// The Service a slice belongs to, or `None` if kube-proxy would not use the slice.
pub fn slice_service(
    slice: &EndpointSlice,
    family: IpFamily,
    warn: &mut Warnings,
) -> Option<NsName> {
    let ns = slice.metadata.namespace.as_deref().unwrap_or("default");
    let slice_name = slice.metadata.name.as_deref().unwrap_or("");
    let svc = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    if !is_safe_name(ns) || !is_safe_name(svc) {
        warn.push(Warning::new(
            KIND,
            "metadata",
            format!(
                "{KIND} {ns}/{slice_name}: metadata: invalid namespace or service-name label {svc:?}; slice ignored"
            ),
        ));
        return None;
    }
    if slice.address_type != family.api_name() {
        return None;
    }
    Some(NsName::new(ns, svc))
}

/// Adds the endpoints of one slice to the per-port map of its Service.
pub fn add_slice(
    map: &mut PortEndpoints,
    service: &NsName,
    slice: &EndpointSlice,
    opts: SliceReadOptions,
    warn: &mut Warnings,
) {
    let slice_name = slice.metadata.name.as_deref().unwrap_or("");
    let what = || format!("EndpointSlice {}/{slice_name}", service.namespace());
    for (pi, port) in slice.ports.iter().flatten().enumerate() {
        let port_name = port.name.clone().unwrap_or_default();
        if !port_name.is_empty() && !is_safe_name(&port_name) {
            warn.push(Warning::new(
                KIND,
                "ports.name",
                format!(
                    "{}: ports[{pi}].name {port_name:?}: invalid port name; port ignored",
                    what()
                ),
            ));
            continue;
        }
        let proto_text = port.protocol.as_deref().unwrap_or("TCP");
        let Some(protocol) = Protocol::from_api(proto_text) else {
            warn.push(Warning::new(
                KIND,
                "ports.protocol",
                format!(
                    "{}: ports[{pi}].protocol {proto_text:?}: unsupported protocol; port ignored",
                    what()
                ),
            ));
            continue;
        };
        let port_num = match port.port.map(u16::try_from) {
            Some(Ok(p)) if p != 0 => p,
            None | Some(Ok(_)) => continue,
            Some(Err(_)) => {
                warn.push(Warning::new(
                    KIND,
                    "ports.port",
                    format!(
                        "{}: ports[{pi}].port {}: out of range 1..65535; port ignored",
                        what(),
                        port.port.unwrap_or_default()
                    ),
                ));
                continue;
            }
        };
        let spn = service.port_name_string(&port_name);
        let list = map.entry((port_name, protocol)).or_default();
        for (ei, ep) in slice.endpoints.iter().flatten().enumerate() {
            let Some(addr) = ep.addresses.first() else {
                continue;
            };
            // Reported for the first port only: every port sees the same address.
            let ip = match endpoint_addr(addr, opts.family) {
                EndpointAddr::Canonical(ip) => ip,
                EndpointAddr::Normalised(ip) => {
                    if pi == 0 {
                        warn.push(Warning::new(
                            KIND,
                            "endpoints.addresses",
                            format!(
                                "{}: endpoints[{ei}].addresses[0] {addr:?}: not in canonical form; used as {ip}",
                                what()
                            ),
                        ));
                    }
                    ip
                }
                EndpointAddr::Invalid(why) => {
                    if pi == 0 {
                        warn.push(Warning::new(
                            KIND,
                            "endpoints.addresses",
                            format!(
                                "{}: endpoints[{ei}].addresses[0] {addr:?}: {why}; endpoint dropped",
                                what()
                            ),
                        ));
                    }
                    continue;
                }
            };
            let addr = ip.to_string();
            let is_local = ep.node_name.as_deref().is_some_and(|n| n == opts.node_name);
            let cond = ep.conditions.as_ref();
            let ready = cond.and_then(|c| c.ready).unwrap_or(true);
            let serving = cond.and_then(|c| c.serving).unwrap_or(true);
            let terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
            let mut zone_hints: Vec<String> = if opts.topology_aware_hints {
                ep.hints
                    .as_ref()
                    .and_then(|h| h.for_zones.as_ref())
                    .into_iter()
                    .flatten()
                    .map(|z| z.name.clone())
                    .collect()
            } else {
                Vec::new()
            };
            zone_hints.sort();
            zone_hints.dedup();
            let for_nodes = ep
                .hints
                .as_ref()
                .and_then(|h| h.for_nodes.as_deref())
                .filter(|_| opts.node_hints)
                .unwrap_or(&[]);
            let has_node_hints = !for_nodes.is_empty();
            let node_hint_local = for_nodes.iter().any(|n| n.name == opts.node_name);
            let endpoint = join_host_port(&addr, port_num);
            let sep_chain =
                ChainHash::of(&[&spn, protocol.as_str(), &endpoint]).chain_name(ChainKind::Sep);
            let new = Endpoint {
                ip: addr,
                port: port_num,
                endpoint,
                is_local,
                ready,
                serving,
                terminating,
                zone_hints,
                has_node_hints,
                node_hint_local,
                sep_chain,
            };
            list.push(new);
        }
    }
}

/// Sorts every list by endpoint string, as upstream does (byte-wise, not numeric), and
/// collapses duplicates across slices: the first copy wins unless a later one is local.
pub fn finish(map: &mut PortEndpoints) {
    for list in map.values_mut() {
        finish_list(list);
    }
}

/// [`finish`] for one list. Finishing per slice and then again over the concatenation
/// (slices in name order) gives the same list as finishing the concatenation once: the
/// sort is stable and the winner of a duplicate is the first local copy, else the first.
pub fn finish_list(list: &mut Vec<Endpoint>) {
    list.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
    list.dedup_by(|later, kept| {
        if later.endpoint != kept.endpoint {
            return false;
        }
        if later.is_local && !kept.is_local {
            std::mem::swap(later, kept);
        }
        true
    });
}

/// Go's `net.JoinHostPort`: brackets around hosts containing a colon.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(ip: &str, port: u16, local: bool) -> Endpoint {
        Endpoint {
            ip: ip.into(),
            port,
            endpoint: join_host_port(ip, port),
            is_local: local,
            ready: true,
            serving: true,
            terminating: false,
            zone_hints: vec![],
            has_node_hints: false,
            node_hint_local: false,
            sep_chain: String::new(),
        }
    }

    #[test]
    fn endpoints_sort_as_strings_not_numbers() {
        let mut map = PortEndpoints::new();
        map.insert(
            ("http".into(), Protocol::Tcp),
            vec![ep("10.0.0.2", 80, false), ep("10.0.0.10", 80, false)],
        );
        finish(&mut map);
        let order: Vec<&str> = map
            .values()
            .next()
            .unwrap()
            .iter()
            .map(|e| e.endpoint.as_str())
            .collect();
        assert_eq!(order, ["10.0.0.10:80", "10.0.0.2:80"]);
    }

    #[test]
    fn duplicate_endpoints_collapse_and_a_local_copy_wins() {
        let mut map = PortEndpoints::new();
        map.insert(
            ("".into(), Protocol::Tcp),
            vec![
                ep("10.0.0.1", 80, false),
                ep("10.0.0.1", 80, true),
                ep("10.0.0.1", 80, false),
            ],
        );
        finish(&mut map);
        let list = map.values().next().unwrap();
        assert_eq!(list.len(), 1);
        assert!(list[0].is_local);
    }

    #[test]
    fn bad_addresses_drop_only_their_endpoint_and_are_reported_once() {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-abc", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["010.244.1.50"]}, {"addresses": ["010.244.1.500"]},
                {"addresses": ["::ffff:10.244.1.3"]}, {"addresses": ["10.244.1.7"]}],
            "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81},
                {"name": "c", "port": -1}]
        }))
        .unwrap();
        let mut map = PortEndpoints::new();
        let mut w = Vec::new();
        let opts = SliceReadOptions {
            family: IpFamily::V4,
            node_name: "n",
            topology_aware_hints: false,
            node_hints: false,
        };
        add_slice(
            &mut map,
            &NsName::new("default", "web"),
            &slice,
            opts,
            &mut w,
        );
        let eps: Vec<&str> = map[&("b".to_string(), Protocol::Tcp)]
            .iter()
            .map(|e| e.endpoint.as_str())
            .collect();
        assert_eq!(eps, ["10.244.1.50:81", "10.244.1.3:81", "10.244.1.7:81"]);
        let texts: Vec<&str> = w.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "EndpointSlice default/web-abc: endpoints[0].addresses[0] \"010.244.1.50\": not in canonical form; used as 10.244.1.50",
                "EndpointSlice default/web-abc: endpoints[1].addresses[0] \"010.244.1.500\": not an IPv4 address; endpoint dropped",
                "EndpointSlice default/web-abc: endpoints[2].addresses[0] \"::ffff:10.244.1.3\": not in canonical form; used as 10.244.1.3",
                "EndpointSlice default/web-abc: ports[2].port -1: out of range 1..65535; port ignored",
            ]
        );
        assert!(w.iter().all(|w| w.kind == "EndpointSlice"));
    }

    #[test]
    fn ipv6_endpoints_are_bracketed() {
        assert_eq!(join_host_port("fd00::5", 8080), "[fd00::5]:8080");
        assert_eq!(join_host_port("10.0.0.5", 80), "10.0.0.5:80");
    }
}
