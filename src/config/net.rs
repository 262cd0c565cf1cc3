//! Address parsing with the same acceptance rules as the Go helpers that
//! kube-proxy validates with (`netutils.ParseIPSloppy`, `ParseCIDRSloppy`,
//! `net.SplitHostPort`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Parses an IP address; IPv4 octets may have leading zeros ("010.0.0.1" is
/// 10.0.0.1), which Go's "sloppy" parser allows and Rust's std rejects.
pub(crate) fn parse_ip_sloppy(s: &str) -> Option<IpAddr> {
    if s.contains(':') {
        return s.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *octet = part
            .parse::<u16>()
            .ok()
            .and_then(|v| u8::try_from(v).ok())?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(IpAddr::V4(Ipv4Addr::from(octets)))
}

/// Parses "addr/prefix", returning the address and prefix length.
pub(crate) fn parse_cidr_sloppy(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = s.split_once('/')?;
    let ip = parse_ip_sloppy(addr)?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits: u32 = prefix.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if bits > max {
        return None;
    }
    Some((ip, bits as u8))
}

/// True for IPv4 and IPv4-mapped IPv6 addresses (Go's `To4() != nil`).
pub(crate) fn is_ipv4_like(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(_) => true,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
    }
}

/// Splits "host:port" / "[host]:port" the way Go's `net.SplitHostPort` does.
/// The port is returned unparsed (it may be empty).
pub(crate) fn split_host_port(s: &str) -> Option<(&str, &str)> {
    let colon = s.rfind(':')?;
    let (host, port) = if let Some(bracketed) = s.strip_prefix('[') {
        let close = bracketed.find(']')? + 1;
        // The closing bracket must be immediately followed by the last colon.
        if close + 1 != colon {
            return None;
        }
        (&s[1..close], &s[colon + 1..])
    } else {
        let host = &s[..colon];
        if host.contains(':') {
            return None;
        }
        (host, &s[colon + 1..])
    };
    if host.contains(['[', ']']) || port.contains(['[', ']']) {
        return None;
    }
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sloppy_ipv4_allows_leading_zeros() {
        assert_eq!(
            parse_ip_sloppy("010.000.0.1"),
            Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)))
        );
        for bad in [
            "256.0.0.1",
            "1.2.3",
            "1.2.3.4.5",
            "a.b.c.d",
            "",
            "1..2.3",
            " 1.2.3.4",
        ] {
            assert_eq!(parse_ip_sloppy(bad), None, "{bad:?}");
        }
        assert!(parse_ip_sloppy("fd00::1").is_some());
        assert!(parse_ip_sloppy("::ffff:1.2.3.4").is_some());
        assert!(parse_ip_sloppy("fe80::1%eth0").is_none());
    }

    #[test]
    fn cidrs() {
        assert!(parse_cidr_sloppy("10.0.0.0/8").is_some());
        assert!(parse_cidr_sloppy("0.0.0.0/0").is_some());
        assert!(parse_cidr_sloppy("fd00::/128").is_some());
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "x/8",
        ] {
            assert_eq!(parse_cidr_sloppy(bad), None, "{bad:?}");
        }
        let (ip, _) = parse_cidr_sloppy("::ffff:10.0.0.0/104").unwrap();
        assert!(is_ipv4_like(&ip));
    }

    #[test]
    fn host_port_splitting_matches_go() {
        assert_eq!(split_host_port("0.0.0.0:10256"), Some(("0.0.0.0", "10256")));
        assert_eq!(split_host_port("[::]:10256"), Some(("::", "10256")));
        assert_eq!(split_host_port("1.2.3.4:"), Some(("1.2.3.4", "")));
        assert_eq!(split_host_port(":80"), Some(("", "80")));
        for bad in [
            "1.2.3.4",
            "::1",
            "[::1]",
            "::1:80",
            "[::1]x:80",
            "[::1:80",
            "a]:80",
        ] {
            assert_eq!(split_host_port(bad), None, "{bad:?}");
        }
    }
}
