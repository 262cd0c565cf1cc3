//! The proxier settings the renderer needs, resolved for one IP family.

use crate::compat::Compat;
use crate::model::ip::{Cidr, IpFamily};
use std::net::IpAddr;

/// How "traffic from a local pod" is recognised (spec §3.6.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalDetector {
    /// No detector for this family: the rules that need one are omitted.
    None,
    /// ClusterCIDR or NodeCIDR mode, canonical CIDR text.
    Cidr(String),
    /// BridgeInterface mode.
    Interface(String),
    /// InterfaceNamePrefix mode (matched as `<prefix>+`).
    InterfacePrefix(String),
}

impl LocalDetector {
    pub fn is_implemented(&self) -> bool {
        !matches!(self, LocalDetector::None)
    }

    /// Appends ` <match>` (or ` ! <match>` when `negate`) to `out`.
    pub fn write_match(&self, out: &mut String, negate: bool) {
        let (flag, value, plus) = match self {
            LocalDetector::None => return,
            LocalDetector::Cidr(c) => ("-s ", c.as_str(), ""),
            LocalDetector::Interface(i) => ("-i ", i.as_str(), ""),
            LocalDetector::InterfacePrefix(p) => ("-i ", p.as_str(), "+"),
        };
        out.push_str(if negate { " ! " } else { " " });
        out.push_str(flag);
        out.push_str(value);
        out.push_str(plus);
    }
}

/// Which node addresses accept NodePort traffic (`nodePortAddresses`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePortAddresses {
    pub match_all: bool,
    pub cidrs: Vec<Cidr>,
    pub contains_ipv4_loopback: bool,
}

impl NodePortAddresses {
    /// Keeps the CIDRs of `family`; none left = match all, as does any `/0`.
    pub fn new(family: IpFamily, cidrs: &[Cidr]) -> NodePortAddresses {
        let items: Vec<(Cidr, bool)> = cidrs.iter().map(|c| (*c, c.is_zero())).collect();
        NodePortAddresses::build(family, &items)
    }

    /// From the configured strings. With `any_zero_prefix` false (v1.30) only the exact
    /// strings `0.0.0.0/0` and `::/0` mean "all"; another `/0` is an ordinary CIDR.
    pub fn from_strings(
        family: IpFamily,
        entries: &[String],
        any_zero_prefix: bool,
    ) -> NodePortAddresses {
        let items: Vec<(Cidr, bool)> = entries
            .iter()
            .filter_map(|s| {
                let c = Cidr::parse_sloppy(s.trim())?;
                let zero = if any_zero_prefix {
                    c.is_zero()
                } else {
                    s == "0.0.0.0/0" || s == "::/0"
                };
                Some((c, zero))
            })
            .collect();
        NodePortAddresses::build(family, &items)
    }

    fn build(family: IpFamily, items: &[(Cidr, bool)]) -> NodePortAddresses {
        let mine: Vec<(Cidr, bool)> = items
            .iter()
            .copied()
            .filter(|(c, _)| c.family() == family)
            .collect();
        let mut npa = NodePortAddresses {
            match_all: mine.is_empty(),
            cidrs: Vec::new(),
            contains_ipv4_loopback: mine.is_empty() && family == IpFamily::V4,
        };
        let loopback_start: IpAddr = "127.0.0.0".parse().expect("literal");
        for (c, zero) in mine {
            if c.family() == IpFamily::V4 && (c.addr.is_loopback() || c.contains(&loopback_start)) {
                npa.contains_ipv4_loopback = true;
            }
            if zero {
                npa.match_all = true;
                break;
            }
            npa.cidrs.push(c);
        }
        npa
    }

    /// Host addresses in any configured CIDR, deduplicated and sorted.
    pub fn matching_ips(&self, host_addrs: &[IpAddr]) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = host_addrs
            .iter()
            .copied()
            .filter(|ip| self.cidrs.iter().any(|c| c.contains(ip)))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Everything that shapes the payload apart from the objects themselves.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxierOptions {
    pub family: IpFamily,
    pub node_name: String,
    /// This family's node IP (for the "allow from node" source-range rules).
    pub node_ip: IpAddr,
    /// The host's interface addresses (for per-IP NodePort rules).
    pub host_addrs: Vec<IpAddr>,
    pub masquerade_bit: u32,
    pub masquerade_all: bool,
    /// Effective value: configured, IPv4, and loopback in nodePortAddresses.
    pub localhost_nodeports: bool,
    pub node_port_addresses: NodePortAddresses,
    pub local_detector: LocalDetector,
    /// `nf_conntrack_tcp_be_liberal` is set: no INVALID drop rule.
    pub tcp_be_liberal: bool,
    /// iptables >= 1.6.2.
    pub random_fully: bool,
    pub topology_aware_hints: bool,
    pub service_traffic_distribution: bool,
    pub load_balancer_ip_mode: bool,
    /// The emulated release's behaviour table.
    pub compat: Compat,
    /// The node has the nfacct objects (a host fact, like `random_fully`).
    pub nfacct: bool,
}

/// nfacct object counting INVALID packets dropped in KUBE-FORWARD (§8 P1).
pub const NFACCT_INVALID: &str = "ct_state_invalid_dropped_pkts";
/// nfacct object counting localhost NodePort packets accepted (§8 P2).
pub const NFACCT_LOCALHOST_NODEPORTS: &str = "localhost_nps_accepted_pkts";

impl ProxierOptions {
    /// The release writes nfacct rules and the node has the objects.
    pub fn nfacct_rules(&self) -> bool {
        self.compat.nfacct_rules && self.nfacct
    }

    /// The masquerade mark as Go's `%#08x` prints it (`0x00004000`).
    pub fn mark(&self) -> String {
        format!("0x{:08x}", 1u64 << self.masquerade_bit)
    }
}
