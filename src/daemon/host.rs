//! Facts about the machine the daemon runs on.

use super::HostMode;
use crate::config::KubeProxyConfiguration;
use crate::model::ip::{Cidr, IpFamily};
use crate::model::node::NodeInfo;
use crate::resolve::HostFacts;
use crate::rules::NodePortAddresses;
use std::net::IpAddr;

/// The OS hostname, lower-cased (upstream's node name without --hostname-override).
pub fn hostname() -> anyhow::Result<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_err(|e| anyhow::anyhow!("reading the hostname: {e}"))?;
    let h = h.trim().to_lowercase();
    anyhow::ensure!(!h.is_empty(), "empty hostname; use --hostname-override");
    Ok(h)
}

/// Addresses of this host's interfaces (`getifaddrs`).
pub fn interface_addrs() -> Vec<IpAddr> {
    let mut out = Vec::new();
    // SAFETY: getifaddrs fills a list we only read and then free with freeifaddrs.
    unsafe {
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut cur = head;
        while !cur.is_null() {
            let sa = (*cur).ifa_addr;
            if !sa.is_null() {
                match i32::from((*sa).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(sa as *const libc::sockaddr_in);
                        out.push(IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(sa as *const libc::sockaddr_in6);
                        out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out.sort();
    out.dedup();
    out
}

/// The facts a proxier renders for: `random_fully` is what its backend's iptables
/// supports (spec §5.7), in either mode.
pub fn facts(
    mode: HostMode,
    node: Option<&NodeInfo>,
    cfg: &KubeProxyConfiguration,
    random_fully: bool,
) -> HostFacts {
    let facts = match mode {
        HostMode::Offline => HostFacts::offline(node, cfg),
        HostMode::Detect => detect(cfg),
    };
    HostFacts {
        random_fully,
        ..facts
    }
}

/// This host: real interface addresses and the real be-liberal sysctl. `--random-fully`
/// is left on; [`facts`] sets it from the backend.
pub fn detect(cfg: &KubeProxyConfiguration) -> HostFacts {
    let liberal = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal")
        .map(|s| s.trim() != "0")
        .unwrap_or(cfg.conntrack.tcp_be_liberal);
    HostFacts {
        interface_addrs: interface_addrs(),
        random_fully: true,
        tcp_be_liberal: liberal,
        // The proxier sets it on each full sync, once it has ensured the objects.
        nfacct: false,
    }
}

/// Where health-check node ports listen: `None` = all addresses (nodePortAddresses
/// match-all), else this host's addresses inside nodePortAddresses.
pub fn health_check_ips(cfg: &KubeProxyConfiguration, mode: HostMode) -> Option<Vec<IpAddr>> {
    let cidrs: Vec<Cidr> = cfg
        .node_port_addresses
        .iter()
        .filter_map(|s| Cidr::parse_sloppy(s.trim()))
        .collect();
    let v4 = NodePortAddresses::new(IpFamily::V4, &cidrs);
    let v6 = NodePortAddresses::new(IpFamily::V6, &cidrs);
    if cidrs.is_empty() || v4.match_all && !v4.cidrs.is_empty() || cidrs.iter().any(|c| c.is_zero())
    {
        return None;
    }
    let addrs = match mode {
        HostMode::Detect => interface_addrs(),
        HostMode::Offline => vec![IpAddr::from([127, 0, 0, 1])],
    };
    let mut ips = v4.matching_ips(&addrs);
    ips.extend(v6.matching_ips(&addrs));
    Some(ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_fully_comes_from_the_backend() {
        let cfg = KubeProxyConfiguration::default();
        for mode in [HostMode::Offline, HostMode::Detect] {
            assert!(!facts(mode, None, &cfg, false).random_fully, "{mode:?}");
            assert!(facts(mode, None, &cfg, true).random_fully, "{mode:?}");
        }
    }
}
