//! Turns a KubeProxyConfiguration, this node and this host into per-family proxier
//! settings (what upstream's `NewProxier` derives at start-up).

use crate::compat::Compat;
use crate::config::KubeProxyConfiguration;
use crate::model::ip::{parse_ip_sloppy, Cidr, IpFamily};
use crate::model::node::NodeInfo;
use crate::model::ModelOptions;
use crate::rules::{LocalDetector, NodePortAddresses, ProxierOptions};
use std::net::IpAddr;

/// Facts about the machine the rules are for.
#[derive(Clone, Debug)]
pub struct HostFacts {
    /// Addresses of the host's interfaces (for `nodePortAddresses`).
    pub interface_addrs: Vec<IpAddr>,
    /// iptables >= 1.6.2 (`--random-fully`).
    pub random_fully: bool,
    /// `net.netfilter.nf_conntrack_tcp_be_liberal` reads non-zero.
    pub tcp_be_liberal: bool,
    /// The nfacct objects exist (kernel nfnetlink_acct); releases after 1.30 count into them.
    pub nfacct: bool,
}

impl HostFacts {
    /// The host the golden corpus assumes when rendering offline: loopback plus the
    /// node's InternalIPs (or 192.168.0.2 without a Node), a modern iptables, and the
    /// be-liberal sysctl following the configuration.
    pub fn offline(node: Option<&NodeInfo>, cfg: &KubeProxyConfiguration) -> HostFacts {
        let mut interface_addrs: Vec<IpAddr> =
            vec![IpFamily::V4.loopback(), IpFamily::V6.loopback()];
        match node {
            Some(n) => interface_addrs.extend(n.internal_ips.iter().copied()),
            None => interface_addrs.push(IpAddr::from([192, 168, 0, 2])),
        }
        HostFacts {
            interface_addrs,
            random_fully: true,
            tcp_be_liberal: cfg.conntrack.tcp_be_liberal,
            // The v1.35 corpus' host has them (`render --nfacct no` says otherwise).
            nfacct: true,
        }
    }
}

/// The node name kube-proxy uses: hostname override, trimmed and lower-cased.
pub fn node_name(cfg: &KubeProxyConfiguration) -> String {
    cfg.hostname_override.trim().to_lowercase()
}

pub fn model_options(
    cfg: &KubeProxyConfiguration,
    compat: &Compat,
    family: IpFamily,
) -> ModelOptions {
    let gate = |name| compat.gate(&cfg.feature_gates, name);
    ModelOptions {
        family,
        node_name: node_name(cfg),
        topology_aware_hints: gate("TopologyAwareHints"),
        node_hints: compat.node_hints && gate("PreferSameTrafficDistribution"),
        load_balancer_ip_mode: gate("LoadBalancerIPMode"),
        compat: *compat,
    }
}

/// First CIDR of `family` in a comma-separated list, canonical.
fn first_cidr_of_family<'a>(
    list: impl IntoIterator<Item = &'a str>,
    family: IpFamily,
) -> Option<String> {
    list.into_iter()
        .filter_map(|s| Cidr::parse_sloppy(s.trim()))
        .find(|c| c.family() == family)
        .map(|c| c.to_string())
}

pub fn local_detector(
    cfg: &KubeProxyConfiguration,
    node: Option<&NodeInfo>,
    family: IpFamily,
) -> LocalDetector {
    let cidr = |c: Option<String>| c.map_or(LocalDetector::None, LocalDetector::Cidr);
    match cfg.detect_local_mode.as_str() {
        "" | "ClusterCIDR" => cidr(first_cidr_of_family(
            cfg.cluster_cidr.split(',').filter(|s| !s.trim().is_empty()),
            family,
        )),
        "NodeCIDR" => cidr(
            node.and_then(|n| first_cidr_of_family(n.pod_cidrs.iter().map(String::as_str), family)),
        ),
        "BridgeInterface" if !cfg.detect_local.bridge_interface.is_empty() => {
            LocalDetector::Interface(cfg.detect_local.bridge_interface.clone())
        }
        "InterfaceNamePrefix" if !cfg.detect_local.interface_name_prefix.is_empty() => {
            LocalDetector::InterfacePrefix(cfg.detect_local.interface_name_prefix.clone())
        }
        _ => LocalDetector::None,
    }
}

/// `nodePortAddresses: [primary]` in a release that knows it (§8 P5): which addresses
/// they are, and so whether localhost NodePorts apply, depends on the node IP.
pub fn node_port_addresses_are_primary(cfg: &KubeProxyConfiguration, compat: &Compat) -> bool {
    let list = &cfg.node_port_addresses;
    compat.node_port_addresses_primary && list.len() == 1 && list[0] == "primary"
}

/// This family's `nodePortAddresses`. `node_ip`: this family's node IP, for `primary`.
fn node_port_addresses(
    cfg: &KubeProxyConfiguration,
    compat: &Compat,
    node_ip: Option<IpAddr>,
    family: IpFamily,
) -> NodePortAddresses {
    let list = &cfg.node_port_addresses;
    if node_port_addresses_are_primary(cfg, compat) {
        // §8 P5: the node's primary IP of the family, unless it is loopback.
        let primary: Vec<String> = node_ip
            .filter(|ip| !ip.is_loopback())
            .map(|ip| format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 }))
            .into_iter()
            .collect();
        return NodePortAddresses::from_strings(family, &primary, true);
    }
    NodePortAddresses::from_strings(family, list, compat.zero_prefix_means_all)
}

/// "Localhost NodePorts enabled" (spec §3.16): IPv4, the option on, and a loopback
/// address inside nodePortAddresses.
pub fn localhost_nodeports(
    cfg: &KubeProxyConfiguration,
    compat: &Compat,
    node_ip: Option<IpAddr>,
    family: IpFamily,
) -> bool {
    family == IpFamily::V4
        && cfg.iptables.localhost_node_ports
        && node_port_addresses(cfg, compat, node_ip, family).contains_ipv4_loopback
}

pub fn proxier_options(
    cfg: &KubeProxyConfiguration,
    compat: &Compat,
    node: Option<&NodeInfo>,
    host: &HostFacts,
    family: IpFamily,
) -> ProxierOptions {
    let bind = parse_ip_sloppy(cfg.bind_address.trim());
    let node_ip = match node {
        Some(n) => n.node_ip(family, bind),
        None => match bind.filter(|b| !b.is_unspecified() && IpFamily::of(b) == family) {
            Some(b) => b,
            None if family == IpFamily::V4 => IpAddr::from([192, 168, 0, 2]),
            None => family.loopback(),
        },
    };
    let node_port_addresses = node_port_addresses(cfg, compat, Some(node_ip), family);
    let localhost_nodeports = localhost_nodeports(cfg, compat, Some(node_ip), family);
    let gate = |name| compat.gate(&cfg.feature_gates, name);
    ProxierOptions {
        family,
        node_name: node_name(cfg),
        node_ip,
        host_addrs: host.interface_addrs.clone(),
        masquerade_bit: cfg.iptables.masquerade_bit.clamp(0, 31) as u32,
        masquerade_all: cfg.iptables.masquerade_all,
        localhost_nodeports,
        node_port_addresses,
        local_detector: local_detector(cfg, node, family),
        tcp_be_liberal: host.tcp_be_liberal,
        random_fully: host.random_fully,
        topology_aware_hints: gate("TopologyAwareHints"),
        service_traffic_distribution: gate("ServiceTrafficDistribution"),
        load_balancer_ip_mode: gate("LoadBalancerIPMode"),
        compat: *compat,
        nfacct: host.nfacct,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spec §3.16 / §8 P5: localhost NodePorts (and so `route_localnet`) only when a
    /// loopback address is inside nodePortAddresses.
    #[test]
    fn localhost_nodeports_follow_node_port_addresses() {
        let cfg = |list: &[&str]| KubeProxyConfiguration {
            node_port_addresses: list.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let node: Option<IpAddr> = Some([192, 168, 10, 11].into());
        let v4 = IpFamily::V4;
        let (new, old) = (Compat::v1_35(), Compat::v1_30());
        let primary = cfg(&["primary"]);
        assert!(!localhost_nodeports(&primary, &new, node, v4));
        // No node IP known (upstream falls back to loopback, which `primary` skips):
        // the list is empty, which means all, loopback included.
        assert!(localhost_nodeports(&primary, &new, None, v4));
        assert!(localhost_nodeports(
            &primary,
            &new,
            Some([127, 0, 0, 1].into()),
            v4
        ));
        // v1.30 reads `primary` as no CIDR at all: all addresses.
        assert!(localhost_nodeports(&primary, &old, node, v4));
        assert!(node_port_addresses_are_primary(&primary, &new));
        assert!(!node_port_addresses_are_primary(&primary, &old));
        for c in [new, old] {
            assert!(localhost_nodeports(&cfg(&[]), &c, node, v4));
            assert!(localhost_nodeports(&cfg(&["127.0.0.0/8"]), &c, node, v4));
            assert!(!localhost_nodeports(
                &cfg(&["192.168.0.0/16"]),
                &c,
                node,
                v4
            ));
            assert!(!localhost_nodeports(&cfg(&[]), &c, node, IpFamily::V6));
        }
    }
}
