//! IP families and the lenient address/CIDR parsing kube-proxy applies to API fields.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The address family one proxier instance handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    pub fn of(ip: &IpAddr) -> IpFamily {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// The Kubernetes API spelling (`IPv4` / `IPv6`).
    pub fn api_name(self) -> &'static str {
        match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        }
    }

    pub fn from_api_name(s: &str) -> Option<IpFamily> {
        match s {
            "IPv4" => Some(IpFamily::V4),
            "IPv6" => Some(IpFamily::V6),
            _ => None,
        }
    }

    pub fn loopback(self) -> IpAddr {
        match self {
            IpFamily::V4 => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpFamily::V6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.api_name())
    }
}

/// Parses an IP the way Kubernetes' `ParseIPSloppy` does: IPv4 octets may carry leading
/// zeros (read as decimal), and IPv4-mapped IPv6 addresses count as IPv4.
pub fn parse_ip_sloppy(s: &str) -> Option<IpAddr> {
    let ip = match IpAddr::from_str(s) {
        Ok(ip) => ip,
        Err(_) => IpAddr::V4(parse_ipv4_leading_zeros(s)?),
    };
    Some(unmap(ip))
}

/// An endpoint address checked against its slice's family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointAddr {
    /// Already in canonical form.
    Canonical(IpAddr),
    /// Valid, but written another way (`010.244.1.50`, `::ffff:10.244.1.3`, `FD00::1`).
    Normalised(IpAddr),
    /// Not usable: the reason, e.g. `not an IPv4 address`.
    Invalid(&'static str),
}

/// Reads an EndpointSlice address the way newer upstream does (`ParseIPSloppy`, then
/// printed canonically): leading zeros are decimal, an IPv4-mapped IPv6 address is IPv4
/// (so it belongs in an IPv4 slice, not an IPv6 one), zone indices are refused.
pub fn endpoint_addr(s: &str, family: IpFamily) -> EndpointAddr {
    let Some(ip) = parse_ip_sloppy(s).filter(|_| !s.contains('%')) else {
        return EndpointAddr::Invalid(match family {
            IpFamily::V4 => "not an IPv4 address",
            IpFamily::V6 => "not an IPv6 address",
        });
    };
    if IpFamily::of(&ip) != family {
        return EndpointAddr::Invalid(match family {
            IpFamily::V4 => "an IPv6 address in an IPv4 slice",
            IpFamily::V6 => "an IPv4 address in an IPv6 slice",
        });
    }
    if ip.to_string() == s {
        EndpointAddr::Canonical(ip)
    } else {
        EndpointAddr::Normalised(ip)
    }
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

fn parse_ipv4_leading_zeros(s: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for o in octets.iter_mut() {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *o = p.parse::<u16>().ok().filter(|v| *v <= 255)? as u8;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

/// An IP network in canonical (masked) form, as Go's `net.IPNet.String()` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `addr/prefix` leniently (leading zeros allowed) and masks the address.
    pub fn parse_sloppy(s: &str) -> Option<Cidr> {
        let (a, p) = s.split_once('/')?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let prefix: u8 = p.parse().ok()?;
        // A mapped v6 CIDR is not unmapped by Go; keep families as written.
        let addr = match IpAddr::from_str(a) {
            Ok(ip) => ip,
            Err(_) => IpAddr::V4(parse_ipv4_leading_zeros(a)?),
        };
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if prefix > max {
            return None;
        }
        Some(Cidr {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    pub fn family(&self) -> IpFamily {
        IpFamily::of(&self.addr)
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(*ip, self.prefix) == self.addr
            }
            _ => false,
        }
    }

    pub fn is_zero(&self) -> bool {
        self.prefix == 0
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix as u32)
            };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix as u32)
            };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sloppy_ipv4_accepts_leading_zeros() {
        assert_eq!(
            parse_ip_sloppy("010.001.2.3"),
            Some("10.1.2.3".parse().unwrap())
        );
        assert_eq!(parse_ip_sloppy("1.2.3.4 -j DROP"), None);
        assert_eq!(parse_ip_sloppy("256.1.1.1"), None);
    }

    #[test]
    fn endpoint_addresses_are_canonical_for_their_family() {
        use EndpointAddr::*;
        let v4 = |s: &str| endpoint_addr(s, IpFamily::V4);
        let v6 = |s: &str| endpoint_addr(s, IpFamily::V6);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(v4("10.244.1.50"), Canonical(ip("10.244.1.50")));
        assert_eq!(v4("010.244.1.50"), Normalised(ip("10.244.1.50")));
        assert_eq!(v4("::ffff:10.244.1.3"), Normalised(ip("10.244.1.3")));
        assert_eq!(v6("FD00:0::1"), Normalised(ip("fd00::1")));
        assert_eq!(v6("fd00::1"), Canonical(ip("fd00::1")));
        assert_eq!(v4("010.244.1.500"), Invalid("not an IPv4 address"));
        assert_eq!(v4("10.0.0.1 "), Invalid("not an IPv4 address"));
        assert_eq!(v4("1.2.3.4 -j DROP"), Invalid("not an IPv4 address"));
        assert_eq!(v4(""), Invalid("not an IPv4 address"));
        assert_eq!(v6("fe80::1%eth0"), Invalid("not an IPv6 address"));
        assert_eq!(v4("fd00::1"), Invalid("an IPv6 address in an IPv4 slice"));
        assert_eq!(
            v6("::ffff:10.244.1.3"),
            Invalid("an IPv4 address in an IPv6 slice")
        );
    }

    #[test]
    fn mapped_v6_is_v4() {
        assert_eq!(
            parse_ip_sloppy("::ffff:1.2.3.4"),
            Some("1.2.3.4".parse().unwrap())
        );
    }

    #[test]
    fn cidr_is_masked_and_printed_canonically() {
        assert_eq!(
            Cidr::parse_sloppy("203.0.113.5/25").unwrap().to_string(),
            "203.0.113.0/25"
        );
        assert_eq!(
            Cidr::parse_sloppy("FD00:10:244:1::5/56")
                .unwrap()
                .to_string(),
            "fd00:10:244::/56"
        );
        assert!(Cidr::parse_sloppy("1.2.3.4/33").is_none());
        assert!(Cidr::parse_sloppy("1.2.3.4/32 -j ACCEPT").is_none());
        let c = Cidr::parse_sloppy("127.0.0.0/8").unwrap();
        assert!(c.contains(&"127.0.0.1".parse().unwrap()));
        assert!(!c.contains(&"::1".parse().unwrap()));
    }
}
