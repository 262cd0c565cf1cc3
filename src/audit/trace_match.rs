//! Rule semantics for `trace`: whether a rule matches the packet in a given state and,
//! when asked, the facts about the packet that made it match (worded as facts, so a
//! negated match reads "dst … is not a node address", never "not (… is …)"); and what
//! the DNAT and MARK targets do to the packet.

use super::norm::{mask, parse_cidr, parse_u32, probability_value};
use super::parse::{Match, Rule};
use std::net::IpAddr;

/// The client's source port (unknown to the caller, irrelevant to kube-proxy's rules).
pub(super) const SPORT: u16 = 40000;

/// What the rules can change or test about the packet on its way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct State {
    pub dst: IpAddr,
    pub dport: u16,
    pub mark: u32,
    pub dnat: bool,
    pub masq: bool,
}

pub(super) enum Hit {
    No,
    Yes,
    /// Random: matches with this probability.
    Split(f64),
}

/// What stays the same for the whole trace.
pub(super) struct Env<'a> {
    pub src: IpAddr,
    pub proto: &'a str,
    pub node_ips: &'a [IpAddr],
}

impl Env<'_> {
    pub fn is_local(&self, ip: &IpAddr) -> bool {
        ip.is_loopback() || self.node_ips.contains(ip)
    }
}

/// Facts are only worded when an explanation is wanted (the walk itself skips it).
struct Why<'w>(Option<&'w mut Vec<String>>);

impl Why<'_> {
    fn push(&mut self, f: impl FnOnce() -> String) {
        if let Some(v) = self.0.as_mut() {
            v.push(f());
        }
    }
}

/// Whether `r` matches in state `st`; `why` (when given) collects the facts that made it.
pub(super) fn eval(env: &Env, r: &Rule, st: &State, why: Option<&mut Vec<String>>) -> Hit {
    let mut why = Why(why);
    let s = &r.spec;
    for (basic, ip, name) in [(&s.src, env.src, "src"), (&s.dst, st.dst, "dst")] {
        let Some(x) = basic else { continue };
        let inside = parse_cidr(&x.value)
            .is_some_and(|(net, len)| net.is_ipv4() == ip.is_ipv4() && mask(ip, len) == net);
        if inside == x.neg {
            return Hit::No;
        }
        why.push(|| {
            let rel = if inside { "in" } else { "not in" };
            format!("{name} {ip} {rel} {}", x.value)
        });
    }
    if let Some(p) = &s.proto {
        let is = p.value == env.proto;
        if is == p.neg {
            return Hit::No;
        }
        why.push(|| match is {
            true => format!("proto {}", env.proto),
            false => format!("proto {} is not {}", env.proto, p.value),
        });
    }
    // Interfaces are not known: a positive interface match never matches.
    for (i, dir) in [(&s.in_iface, "in"), (&s.out_iface, "out")] {
        let Some(i) = i else { continue };
        if !i.neg {
            return Hit::No;
        }
        why.push(|| format!("{dir}-interface assumed not {}", i.value));
    }
    if s.fragment == Some(true) {
        return Hit::No;
    }
    if !s.opaque.is_empty() {
        return Hit::No;
    }
    let mut split: Option<f64> = None;
    for m in &s.matches {
        match eval_match(env, m, st, &mut why) {
            Hit::No => return Hit::No,
            Hit::Yes => {}
            Hit::Split(p) => split = Some(split.unwrap_or(1.0) * p),
        }
    }
    match split {
        Some(p) => Hit::Split(p),
        None => Hit::Yes,
    }
}

fn eval_match(env: &Env, m: &Match, st: &State, why: &mut Why) -> Hit {
    let mut split = None;
    for o in &m.opts {
        let v0 = o.values.first().map(|v| v.as_str()).unwrap_or("");
        // `is`: the option's test on this packet, before any `!`; `fact` words its result.
        let (is, fact) = match (m.name.as_str(), o.name.as_str()) {
            ("comment" | "nfacct", _) => continue,
            // A protocol match never matches another protocol, `!` or not.
            ("tcp" | "udp" | "sctp", _) if m.name != env.proto => return Hit::No,
            ("tcp" | "udp" | "sctp", "--dport" | "--destination-port") => {
                (port_in(st.dport, v0), Fact::Ports("dport", st.dport, v0))
            }
            ("tcp" | "udp" | "sctp", "--sport" | "--source-port") => (
                port_in(SPORT, v0),
                Fact::Ports("sport (assumed)", SPORT, v0),
            ),
            ("multiport", "--dports" | "--destination-ports") => (
                v0.split(',').any(|p| port_in(st.dport, p)),
                Fact::Ports("dport", st.dport, v0),
            ),
            ("conntrack", "--ctstate") | ("state", "--state") => {
                let is = v0
                    .split(',')
                    .any(|s| s == "NEW" || (st.dnat && s == "DNAT"));
                (is, Fact::CtState(st.dnat, v0))
            }
            ("mark", "--mark") => {
                let (v, msk) = match v0.split_once('/') {
                    Some((v, k)) => (parse_u32(v), parse_u32(k)),
                    None => (parse_u32(v0), Some(u32::MAX)),
                };
                let (Some(v), Some(msk)) = (v, msk) else {
                    return Hit::No;
                };
                (st.mark & msk == v, Fact::Mark(st.mark, msk, v))
            }
            ("addrtype", "--src-type" | "--dst-type") => {
                let src = o.name == "--src-type";
                let ip = if src { env.src } else { st.dst };
                let local = env.is_local(&ip);
                let is = v0.split(',').any(|t| match t {
                    "LOCAL" => local,
                    "UNICAST" => !local,
                    _ => false,
                });
                let which = if src { "src" } else { "dst" };
                (is, Fact::AddrType(which, ip, local, v0))
            }
            ("addrtype", "--limit-iface-in" | "--limit-iface-out") => continue,
            ("statistic", "--probability") => {
                let p = probability_value(v0).unwrap_or(0.0);
                let p = if o.neg { 1.0 - p } else { p };
                why.push(|| format!("random, probability {p:.11}"));
                split = Some(p);
                continue;
            }
            ("statistic", "--every") => {
                let n: f64 = v0.parse().unwrap_or(1.0);
                let p = 1.0 / n.max(1.0);
                let p = if o.neg { 1.0 - p } else { p };
                why.push(|| format!("every {n}th packet, probability {p:.11}"));
                split = Some(p);
                continue;
            }
            ("statistic", _) => continue,
            ("recent", "--rcheck" | "--update") => (false, Fact::Recent),
            ("recent", _) => continue,
            // Unknown matches: the trace cannot tell, so the rule is taken as not matching.
            _ => return Hit::No,
        };
        if is == o.neg {
            return Hit::No;
        }
        why.push(|| fact.word(is));
    }
    match split {
        Some(p) => Hit::Split(p),
        None => Hit::Yes,
    }
}

/// A tested property of the packet, worded only when an explanation is printed.
enum Fact<'a> {
    Ports(&'static str, u16, &'a str),
    CtState(bool, &'a str),
    Mark(u32, u32, u32),
    AddrType(&'static str, IpAddr, bool, &'a str),
    Recent,
}

impl Fact<'_> {
    /// The fact as it stands: `is` is the test's result on this packet.
    fn word(&self, is: bool) -> String {
        match *self {
            Fact::Ports(what, port, spec) => {
                let single = !spec.contains([':', ',']);
                match (single, is) {
                    (true, true) => format!("{what} {port}"),
                    (true, false) => format!("{what} {port} is not {spec}"),
                    (false, true) => format!("{what} {port} in {spec}"),
                    (false, false) => format!("{what} {port} not in {spec}"),
                }
            }
            Fact::CtState(dnat, spec) => {
                let have = if dnat { "NEW,DNAT" } else { "NEW" };
                let rel = if is { "is in" } else { "is not in" };
                format!("ctstate {have} {rel} {spec}")
            }
            Fact::Mark(mark, msk, v) => {
                let op = if is { "==" } else { "!=" };
                format!("mark {mark:#x} & {msk:#x} {op} {v:#x}")
            }
            Fact::AddrType(which, ip, local, types) => {
                let node = if local { "is" } else { "is not" };
                let base = format!("{which} {ip} {node} a node address");
                if types == "LOCAL" {
                    base
                } else {
                    let not = if is { "" } else { "not " };
                    format!("{base}, so {not}of type {types}")
                }
            }
            Fact::Recent => match is {
                true => "affinity: a recent entry".into(),
                false => "affinity: no recent entry (assuming a new client)".into(),
            },
        }
    }
}

fn port_in(p: u16, spec: &str) -> bool {
    match spec.split_once(':') {
        Some((a, b)) => {
            let a = a.parse().unwrap_or(0);
            let b = b.parse().unwrap_or(u16::MAX);
            (a..=b).contains(&p)
        }
        None => spec.parse() == Ok(p),
    }
}

pub(super) fn split_host_port(s: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, port) = rest.split_once(']')?;
        let port = port
            .strip_prefix(':')
            .and_then(|p| p.split('-').next()?.parse().ok());
        return Some((ip.parse().ok()?, port));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some((ip, None));
    }
    let (ip, port) = s.rsplit_once(':')?;
    let ip: std::net::Ipv4Addr = ip.split('-').next()?.parse().ok()?;
    Some((IpAddr::V4(ip), port.split('-').next()?.parse().ok()))
}

pub(super) fn apply_mark(mark: u32, r: &Rule) -> u32 {
    let Some(t) = &r.spec.target else {
        return mark;
    };
    let mut m = mark;
    for o in &t.opts {
        let v0 = o.values.first().map(|v| v.as_str()).unwrap_or("");
        let vm = |d: u32| match v0.split_once('/') {
            Some((v, k)) => (parse_u32(v).unwrap_or(0), parse_u32(k).unwrap_or(0)),
            None => (parse_u32(v0).unwrap_or(0), d),
        };
        m = match o.name.as_str() {
            "--set-xmark" => {
                let (v, k) = vm(u32::MAX);
                (m & !k) ^ v
            }
            "--set-mark" => {
                let (v, k) = vm(u32::MAX);
                (m & !(k | v)) ^ v
            }
            "--or-mark" => m | parse_u32(v0).unwrap_or(0),
            "--xor-mark" => m ^ parse_u32(v0).unwrap_or(0),
            "--and-mark" => m & parse_u32(v0).unwrap_or(u32::MAX),
            _ => m,
        };
    }
    m
}
