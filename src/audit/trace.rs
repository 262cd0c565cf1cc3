//! `trace`: the first packet of a new connection walked through a dump's nat and filter
//! chains the way netfilter would, with every random branch followed (and weighted).

use super::norm::{parse_cidr, parse_u32, probability_value};
use super::parse::{Match, Rule, Ruleset, Table};
use serde::Serialize;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

/// The packet: first packet of a new connection.
#[derive(Clone, Debug, Serialize)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub dport: u16,
    pub proto: String,
    /// Sent by the node itself (nat OUTPUT) rather than arriving (nat PREROUTING).
    pub from_node: bool,
}

/// The client's source port (unknown to the caller, irrelevant to kube-proxy's rules).
const SPORT: u16 = 40000;
const MAX_DEPTH: usize = 64;

#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub table: String,
    pub chain: String,
    /// 1-based position of the rule in its chain (0 = the chain's policy).
    pub rule: usize,
    pub text: String,
    pub why: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    #[serde(rename = "ACCEPT")]
    Accept,
    #[serde(rename = "DROP")]
    Drop,
    #[serde(rename = "REJECT")]
    Reject(String),
}

#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub probability: f64,
    pub verdict: Verdict,
    /// Destination after DNAT, if any (`ip:port`).
    pub dnat: Option<String>,
    pub masquerade: bool,
    /// `local` (delivered to the node) or `forward` (routed on).
    pub delivery: &'static str,
    pub path: Vec<Step>,
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Trace {
    pub packet: Packet,
    pub outcomes: Vec<Outcome>,
}

#[derive(Clone, Debug, PartialEq)]
enum Status {
    Running,
    Returned,
    /// Accepted by the current table (DNAT / MASQUERADE / ACCEPT).
    TableDone,
    Final(Verdict),
}

#[derive(Clone, Debug)]
struct Branch {
    prob: f64,
    dst: IpAddr,
    dport: u16,
    mark: u32,
    dnat: bool,
    masquerade: bool,
    status: Status,
    path: Vec<Step>,
    notes: Vec<String>,
}

enum M {
    No,
    Yes(String),
    /// Random: matches with this probability.
    Split(f64, String),
}

struct Ctx<'a> {
    /// Rule evaluations left: self-jumping random chains could otherwise branch forever.
    budget: std::cell::Cell<usize>,
    rs: &'a Ruleset,
    pkt: &'a Packet,
    node_ips: &'a [IpAddr],
}

impl Ctx<'_> {
    fn is_local(&self, ip: &IpAddr) -> bool {
        ip.is_loopback() || self.node_ips.contains(ip)
    }

    fn eval_match(&self, m: &Match, b: &Branch) -> M {
        let mut why = Vec::new();
        for o in &m.opts {
            let v0 = o.values.first().map(String::as_str).unwrap_or("");
            let (ok, text): (Option<bool>, String) = match (m.name.as_str(), o.name.as_str()) {
                ("comment", _) => continue,
                ("tcp" | "udp" | "sctp", "--dport" | "--destination-port") => (
                    Some(m.name == self.pkt.proto && port_in(b.dport, v0)),
                    format!("dport {} in {v0}", b.dport),
                ),
                ("tcp" | "udp" | "sctp", "--sport" | "--source-port") => {
                    (Some(port_in(SPORT, v0)), format!("sport {SPORT} in {v0}"))
                }
                ("multiport", "--dports" | "--destination-ports") => (
                    Some(v0.split(',').any(|p| port_in(b.dport, p))),
                    format!("dport {} in {v0}", b.dport),
                ),
                ("conntrack", "--ctstate") | ("state", "--state") => {
                    let mut st = vec!["NEW"];
                    if b.dnat {
                        st.push("DNAT");
                    }
                    let hit = v0.split(',').any(|s| st.contains(&s));
                    (Some(hit), format!("ctstate {} vs {v0}", st.join(",")))
                }
                ("mark", "--mark") => {
                    let (v, msk) = match v0.split_once('/') {
                        Some((v, m)) => (parse_u32(v), parse_u32(m)),
                        None => (parse_u32(v0), Some(u32::MAX)),
                    };
                    match (v, msk) {
                        (Some(v), Some(msk)) => (
                            Some(b.mark & msk == v),
                            format!("mark {:#x} & {msk:#x} == {v:#x}", b.mark),
                        ),
                        _ => (None, format!("mark {v0}")),
                    }
                }
                ("addrtype", "--src-type" | "--dst-type") => {
                    let src = o.name == "--src-type";
                    let ip = if src { self.pkt.src } else { b.dst };
                    let local = self.is_local(&ip);
                    let hit = v0.split(',').any(|t| match t {
                        "LOCAL" => local,
                        "UNICAST" => !local,
                        _ => false,
                    });
                    let which = if src { "src" } else { "dst" };
                    let what = if local { "is" } else { "is not" };
                    (
                        Some(hit),
                        format!("{which} {ip} {what} a node address ({v0})"),
                    )
                }
                ("addrtype", "--limit-iface-in" | "--limit-iface-out") => continue,
                ("statistic", "--mode") => continue,
                ("statistic", "--probability") => {
                    let p = probability_value(v0).unwrap_or(0.0);
                    let p = if o.neg { 1.0 - p } else { p };
                    return M::Split(p, format!("random, probability {p:.11}"));
                }
                ("statistic", "--every") => {
                    let n: f64 = v0.parse().unwrap_or(1.0);
                    return M::Split(1.0 / n.max(1.0), format!("every {n}th packet"));
                }
                ("statistic", _) => continue,
                ("recent", "--rcheck" | "--update") => (
                    Some(false),
                    "affinity: assuming a new client (no recent entry)".into(),
                ),
                ("recent", _) => continue,
                ("nfacct", _) => continue,
                (name, opt) => (None, format!("unknown match -m {name} {opt}")),
            };
            match ok {
                Some(hit) => {
                    if hit == o.neg {
                        return M::No;
                    }
                    why.push(if o.neg { format!("not ({text})") } else { text });
                }
                None => return M::No,
            }
        }
        M::Yes(why.join(", "))
    }

    fn eval(&self, r: &Rule, b: &Branch) -> M {
        let s = &r.spec;
        let mut why = Vec::new();
        let mut check = |basic: &Option<super::parse::Basic>, ip: IpAddr, name: &str| -> bool {
            let Some(x) = basic else { return true };
            let hit = parse_cidr(&x.value).is_some_and(|(net, len)| {
                super::norm::mask(ip, len) == net && net.is_ipv4() == ip.is_ipv4()
            });
            if hit != x.neg {
                why.push(format!(
                    "{name} {ip} {}in {}",
                    if x.neg { "not " } else { "" },
                    x.value
                ));
                true
            } else {
                false
            }
        };
        if !check(&s.src, self.pkt.src, "src") || !check(&s.dst, b.dst, "dst") {
            return M::No;
        }
        if let Some(p) = &s.proto {
            if (p.value == self.pkt.proto) == p.neg {
                return M::No;
            }
            why.push(format!("proto {}", self.pkt.proto));
        }
        // Interfaces are not known: a positive interface match never matches.
        for i in [&s.in_iface, &s.out_iface].into_iter().flatten() {
            if !i.neg {
                return M::No;
            }
        }
        if s.fragment == Some(true) {
            return M::No;
        }
        let mut split = None;
        for m in &s.matches {
            match self.eval_match(m, b) {
                M::No => return M::No,
                M::Yes(w) => {
                    if !w.is_empty() {
                        why.push(w);
                    }
                }
                M::Split(p, w) => split = Some((p, w)),
            }
        }
        if !s.opaque.is_empty() {
            return M::No;
        }
        match split {
            Some((p, w)) => {
                why.push(w);
                M::Split(p, why.join(", "))
            }
            None => M::Yes(if why.is_empty() {
                "matches everything".into()
            } else {
                why.join(", ")
            }),
        }
    }

    /// Walks `chain` of `table` for one branch; returns the branches that come out
    /// (returned to the caller, or with a table or final verdict).
    fn walk(&self, t: &Table, chain: &str, b: Branch, depth: usize) -> Vec<Branch> {
        let Some(c) = t.chain(chain) else {
            let mut b = b;
            b.notes
                .push(format!("{} chain {chain} does not exist", t.name));
            b.status = Status::Returned;
            return vec![b];
        };
        let mut out = Vec::new();
        let mut active = vec![(b, 0usize)];
        while let Some((mut b, i)) = active.pop() {
            if i >= c.rules.len() {
                b.status = Status::Returned;
                out.push(b);
                continue;
            }
            if self.budget.get() == 0 {
                b.notes
                    .push("evaluation budget exhausted; branch abandoned".into());
                b.status = Status::Final(Verdict::Drop);
                out.push(b);
                continue;
            }
            self.budget.set(self.budget.get() - 1);
            let r = &c.rules[i];
            let (mut hit, miss, why) = match self.eval(r, &b) {
                M::No => {
                    active.push((b, i + 1));
                    continue;
                }
                M::Yes(w) => (b, None, w),
                M::Split(p, w) => {
                    let mut m = b.clone();
                    m.prob *= p;
                    let mut n = b;
                    n.prob *= 1.0 - p;
                    (m, (n.prob > 1e-12).then_some(n), w)
                }
            };
            if let Some(n) = miss {
                active.push((n, i + 1));
            }
            if hit.prob <= 1e-12 {
                continue;
            }
            hit.path.push(Step {
                table: t.name.clone(),
                chain: chain.to_string(),
                rule: i + 1,
                text: r.text.clone(),
                why,
            });
            let target = r.spec.target.as_ref();
            let name = target.map(|t| t.name.as_str()).unwrap_or("");
            match name {
                "" => active.push((hit, i + 1)),
                "RETURN" => {
                    hit.status = Status::Returned;
                    out.push(hit);
                }
                "ACCEPT" => {
                    hit.status = Status::TableDone;
                    out.push(hit);
                }
                "DROP" => {
                    hit.status = Status::Final(Verdict::Drop);
                    out.push(hit);
                }
                "REJECT" => {
                    let with = r
                        .spec
                        .target_value("--reject-with")
                        .unwrap_or("icmp-port-unreachable")
                        .to_string();
                    hit.status = Status::Final(Verdict::Reject(with));
                    out.push(hit);
                }
                "DNAT" => {
                    if let Some(to) = r.spec.target_value("--to-destination") {
                        if let Some((ip, port)) = split_host_port(to) {
                            hit.dst = ip;
                            if let Some(p) = port {
                                hit.dport = p;
                            }
                        }
                    }
                    hit.dnat = true;
                    hit.status = Status::TableDone;
                    out.push(hit);
                }
                "MASQUERADE" | "SNAT" => {
                    hit.masquerade = true;
                    hit.status = Status::TableDone;
                    out.push(hit);
                }
                "MARK" => {
                    hit.mark = apply_mark(hit.mark, r);
                    active.push((hit, i + 1));
                }
                _ if t.has_chain(name) => {
                    if depth >= MAX_DEPTH {
                        hit.notes.push(format!("jump depth limit at {name}"));
                        hit.status = Status::Final(Verdict::Drop);
                        out.push(hit);
                        continue;
                    }
                    let goto = target.is_some_and(|t| t.goto);
                    for mut sub in self.walk(t, name, hit, depth + 1) {
                        if sub.status == Status::Returned && !goto {
                            sub.status = Status::Running;
                            active.push((sub, i + 1));
                        } else {
                            out.push(sub);
                        }
                    }
                }
                other => {
                    // LOG and friends: non-terminating; a jump to a missing chain is noted.
                    hit.notes
                        .push(format!("target {other} treated as non-terminating"));
                    active.push((hit, i + 1));
                }
            }
        }
        out
    }

    /// Runs a built-in chain (hook) of a table; unterminated branches get its policy.
    fn hook(&self, table: &str, chain: &str, branches: Vec<Branch>) -> Vec<Branch> {
        let Some(t) = self.rs.table(table) else {
            return branches;
        };
        let policy = t
            .chain(chain)
            .and_then(|c| c.policy.clone())
            .unwrap_or_else(|| "ACCEPT".into());
        let mut out = Vec::new();
        for b in branches {
            if b.status != Status::Running {
                out.push(b);
                continue;
            }
            for mut r in self.walk(t, chain, b, 0) {
                match r.status {
                    Status::Returned | Status::Running => {
                        if policy == "DROP" {
                            r.path.push(Step {
                                table: table.into(),
                                chain: chain.into(),
                                rule: 0,
                                text: "policy DROP".into(),
                                why: "end of chain".into(),
                            });
                            r.status = Status::Final(Verdict::Drop);
                        } else {
                            r.status = Status::Running;
                        }
                    }
                    Status::TableDone => r.status = Status::Running,
                    Status::Final(_) => {}
                }
                out.push(r);
            }
        }
        out
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

fn split_host_port(s: &str) -> Option<(IpAddr, Option<u16>)> {
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
    let ip: Ipv4Addr = ip.split('-').next()?.parse().ok()?;
    Some((IpAddr::V4(ip), port.split('-').next()?.parse().ok()))
}

fn apply_mark(mark: u32, r: &Rule) -> u32 {
    let Some(t) = &r.spec.target else {
        return mark;
    };
    let mut m = mark;
    for o in &t.opts {
        let v0 = o.values.first().map(String::as_str).unwrap_or("");
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

/// Traces `pkt` through `rs`. `node_ips` are the addresses `addrtype LOCAL` matches
/// (loopback always does).
pub fn trace(rs: &Ruleset, pkt: &Packet, node_ips: &[IpAddr]) -> Trace {
    let ctx = Ctx {
        budget: std::cell::Cell::new(5_000_000),
        rs,
        pkt,
        node_ips,
    };
    let start = Branch {
        prob: 1.0,
        dst: pkt.dst,
        dport: pkt.dport,
        mark: 0,
        dnat: false,
        masquerade: false,
        status: Status::Running,
        path: Vec::new(),
        notes: Vec::new(),
    };
    let mut bs = vec![start];
    let mut outcomes = Vec::new();
    if pkt.from_node {
        bs = ctx.hook("nat", "OUTPUT", bs);
        bs = ctx.hook("filter", "OUTPUT", bs);
        bs = ctx.hook("nat", "POSTROUTING", bs);
        let (local, fwd): (Vec<_>, Vec<_>) = bs.into_iter().partition(|b| ctx.is_local(&b.dst));
        for b in ctx.hook("filter", "INPUT", local) {
            outcomes.push(finish(b, "local"));
        }
        for b in fwd {
            outcomes.push(finish(b, "forward"));
        }
    } else {
        bs = ctx.hook("nat", "PREROUTING", bs);
        let (local, fwd): (Vec<_>, Vec<_>) = bs.into_iter().partition(|b| ctx.is_local(&b.dst));
        for b in ctx.hook("filter", "INPUT", local) {
            outcomes.push(finish(b, "local"));
        }
        let fwd = ctx.hook("filter", "FORWARD", fwd);
        for b in ctx.hook("nat", "POSTROUTING", fwd) {
            outcomes.push(finish(b, "forward"));
        }
    }
    outcomes.sort_by(|a, b| {
        b.probability
            .total_cmp(&a.probability)
            .then_with(|| a.dnat.cmp(&b.dnat))
    });
    Trace {
        packet: pkt.clone(),
        outcomes,
    }
}

fn finish(b: Branch, delivery: &'static str) -> Outcome {
    let verdict = match b.status {
        Status::Final(v) => v,
        _ => Verdict::Accept,
    };
    let dnat = b.dnat.then(|| match b.dst {
        IpAddr::V6(a) => format!("[{a}]:{}", b.dport),
        IpAddr::V4(a) => format!("{a}:{}", b.dport),
    });
    Outcome {
        probability: b.prob,
        verdict,
        dnat,
        masquerade: b.masquerade,
        delivery,
        path: b.path,
        notes: b.notes,
    }
}

impl Trace {
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let p = &self.packet;
        let _ = writeln!(
            s,
            "packet {} {} -> {}:{} ({})",
            p.proto,
            p.src,
            p.dst,
            p.dport,
            if p.from_node {
                "from the node: nat OUTPUT"
            } else {
                "arriving: nat PREROUTING"
            }
        );
        for o in &self.outcomes {
            let v = match &o.verdict {
                Verdict::Accept => "ACCEPT".to_string(),
                Verdict::Drop => "DROP".to_string(),
                Verdict::Reject(w) => format!("REJECT ({w})"),
            };
            let _ = writeln!(
                s,
                "\n[{:7.3}%] {v}, {}, {}, delivered {}",
                o.probability * 100.0,
                o.dnat
                    .as_ref()
                    .map(|d| format!("DNAT to {d}"))
                    .unwrap_or_else(|| "no DNAT".into()),
                if o.masquerade {
                    "masqueraded"
                } else {
                    "not masqueraded"
                },
                o.delivery
            );
            for st in &o.path {
                let _ = writeln!(
                    s,
                    "  {} {} #{}: {}\n      because {}",
                    st.table, st.chain, st.rule, st.text, st.why
                );
            }
            for n in &o.notes {
                let _ = writeln!(s, "  note: {n}");
            }
        }
        s
    }
}
