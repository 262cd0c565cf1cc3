//! What kube-proxy reads from its own Node object.

use super::ip::{parse_ip_sloppy, Cidr, IpFamily};
use super::{Warning, Warnings};
use k8s_openapi::api::core::v1::Node;
use std::collections::BTreeMap;
use std::net::IpAddr;

pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Primary node IP, then the first IP of the other family if any (upstream `GetNodeHostIPs`).
    pub ips: Vec<IpAddr>,
    /// Every InternalIP (used as the host's interface addresses when rendering offline).
    pub internal_ips: Vec<IpAddr>,
    pub pod_cidrs: Vec<String>,
}

impl NodeInfo {
    pub fn from_node(node: &Node) -> NodeInfo {
        NodeInfo::read(node, &mut Vec::new())
    }

    /// [`NodeInfo::from_node`], reporting addresses and pod CIDRs that do not parse (they
    /// are skipped, as upstream skips them).
    pub fn read(node: &Node, warn: &mut Warnings) -> NodeInfo {
        let name = node.metadata.name.as_deref().unwrap_or("");
        let mut field = |field: &'static str, text: String| {
            warn.push(Warning::new("Node", field, format!("Node {name}: {text}")));
        };
        let addrs = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for (i, a) in addrs.iter().enumerate() {
            let ip_type = a.type_ == "InternalIP" || a.type_ == "ExternalIP";
            if ip_type && parse_ip_sloppy(&a.address).is_none() {
                field(
                    "status.addresses",
                    format!(
                        "status.addresses[{i}].address {:?}: not an IP address; ignored",
                        a.address
                    ),
                );
            }
        }
        let of_type = |t: &str| -> Vec<IpAddr> {
            addrs
                .iter()
                .filter(|a| a.type_ == t)
                .filter_map(|a| parse_ip_sloppy(&a.address))
                .collect()
        };
        let internal_ips = of_type("InternalIP");
        let mut all = internal_ips.clone();
        all.extend(of_type("ExternalIP"));
        let mut ips = Vec::new();
        if let Some(first) = all.first() {
            ips.push(*first);
            if let Some(other) = all.iter().find(|ip| ip.is_ipv6() != first.is_ipv6()) {
                ips.push(*other);
            }
        }
        let spec = node.spec.as_ref();
        let mut pod_cidrs: Vec<String> = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
        if pod_cidrs.is_empty() {
            if let Some(c) = spec.and_then(|s| s.pod_cidr.clone()) {
                pod_cidrs.push(c);
            }
        }
        for (i, c) in pod_cidrs.iter().enumerate() {
            if Cidr::parse_sloppy(c.trim()).is_none() {
                field(
                    "spec.podCIDRs",
                    format!("spec.podCIDRs[{i}] {c:?}: not a CIDR; ignored"),
                );
            }
        }
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            ips,
            internal_ips,
            pod_cidrs,
        }
    }

    pub fn zone(&self) -> Option<&str> {
        self.labels
            .get(ZONE_LABEL)
            .map(String::as_str)
            .filter(|z| !z.is_empty())
    }

    /// The node IP of `family` (upstream `detectNodeIPs`): a specific `bindAddress`
    /// overrides the primary; the fallback is the family's loopback.
    pub fn node_ip(&self, family: IpFamily, bind_address: Option<IpAddr>) -> IpAddr {
        if let Some(b) = bind_address.filter(|b| !b.is_unspecified() && IpFamily::of(b) == family) {
            return b;
        }
        self.ips
            .iter()
            .copied()
            .find(|ip| IpFamily::of(ip) == family)
            .unwrap_or_else(|| family.loopback())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unparsable_node_addresses_and_pod_cidrs_are_skipped_and_reported() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1"},
            "spec": {"podCIDRs": ["10.244.1.0/24", "10.244.1.0/33"]},
            "status": {"addresses": [{"type": "Hostname", "address": "n1"},
                {"type": "InternalIP", "address": "10.0.0.1 -j DROP"},
                {"type": "InternalIP", "address": "010.0.0.2"}]}
        }))
        .unwrap();
        let mut w = Vec::new();
        let info = NodeInfo::read(&node, &mut w);
        assert_eq!(info.ips, ["10.0.0.2".parse::<IpAddr>().unwrap()]);
        let fields: Vec<&str> = w.iter().map(|w| w.field).collect();
        assert_eq!(fields, ["status.addresses", "spec.podCIDRs"]);
        assert!(
            w[0].text
                .starts_with("Node n1: status.addresses[1].address"),
            "{}",
            w[0]
        );
    }
}
