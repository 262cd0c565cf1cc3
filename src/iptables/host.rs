//! Facts about the real host (in the network namespace of the calling thread) that shape
//! the rules: interface addresses, the conntrack be-liberal sysctl, iptables capabilities.

use super::detect::Capabilities;
use crate::config::KubeProxyConfiguration;
use crate::model::ip::IpFamily;
use crate::model::node::NodeInfo;
use crate::resolve::HostFacts;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

pub const TCP_BE_LIBERAL: &str = "/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal";

/// Addresses of every interface (any state), from getifaddrs(3).
pub fn interface_addrs() -> std::io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned; ifa_addr may be null
        // and points to a sockaddr of the family it announces.
        unsafe {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() {
                match (*addr).sa_family as i32 {
                    libc::AF_INET => {
                        let sin = &*(addr as *const libc::sockaddr_in);
                        out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            sin.sin_addr.s_addr,
                        ))));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(addr as *const libc::sockaddr_in6);
                        out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
    }
    // SAFETY: `head` came from a successful getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Reads a 0/1 sysctl; `None` if absent (e.g. nf_conntrack not loaded) or unreadable.
pub fn read_flag(path: &Path) -> Option<bool> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(text.trim().parse::<i64>().ok()? != 0)
}

/// What upstream's start-up does for `conntrack.tcpBeLiberal: true` (spec §6.7): set the
/// sysctl; the proxier then reads it back, so the INVALID-drop rule follows the kernel.
pub fn configure_tcp_be_liberal(cfg: &KubeProxyConfiguration) {
    if cfg.conntrack.tcp_be_liberal && read_flag(Path::new(TCP_BE_LIBERAL)) != Some(true) {
        if let Err(e) = std::fs::write(TCP_BE_LIBERAL, "1") {
            tracing::warn!(error = %e, "could not set {TCP_BE_LIBERAL}");
        }
    }
}

/// Host facts for a real node. The interface addresses are the kernel's, plus loopback
/// (always present on a running node, even if `lo` is still down in a fresh namespace)
/// and the Node's InternalIPs (addresses of this host by definition); on a configured
/// node that union is exactly the kernel's list.
pub fn real_host_facts(node: Option<&NodeInfo>, caps: &Capabilities) -> HostFacts {
    let mut interface_addrs = interface_addrs().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot list interface addresses");
        Vec::new()
    });
    interface_addrs.extend([IpFamily::V4.loopback(), IpFamily::V6.loopback()]);
    if let Some(n) = node {
        interface_addrs.extend(n.internal_ips.iter().copied());
    }
    interface_addrs.sort();
    interface_addrs.dedup();
    HostFacts {
        interface_addrs,
        random_fully: caps.random_fully,
        tcp_be_liberal: read_flag(Path::new(TCP_BE_LIBERAL)).unwrap_or(false),
        // Set by the caller once it has ensured the objects (`nfacct::ensure_objects`).
        nfacct: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_loopback_of_the_host() {
        // The test process runs in a namespace whose `lo` is up (as on any real host).
        let addrs = interface_addrs().expect("getifaddrs");
        assert!(
            addrs.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{addrs:?}"
        );
    }

    #[test]
    fn flag_parsing() {
        let dir = std::env::temp_dir().join(format!("kprs-flag-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("v");
        std::fs::write(&f, "1\n").unwrap();
        assert_eq!(read_flag(&f), Some(true));
        std::fs::write(&f, "0\n").unwrap();
        assert_eq!(read_flag(&f), Some(false));
        assert_eq!(read_flag(&dir.join("missing")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
