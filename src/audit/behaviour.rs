//! Behaviour of a dump per service port, and the comparison of two dumps by behaviour
//! (`diff --behaviour A B`, the migration check).
//!
//! A service port is what its rules do, not how they are written: its entry points (the
//! shared chains' rules, matches only), the chains they lead to with chain names replaced
//! by roles (`<svc>`, `<svl>`, `<ext>`, `<fw>`, `<xlb>`), each endpoint's share of new
//! connections (product of the statistic probabilities, as the kernel rounds them),
//! hairpin masquerading and session affinity, and its REJECT/DROP/ACCEPT rules in the
//! filter table. Comments, chain order, shared-chain order, hash names, the accounting
//! rules of newer releases (nfacct) and probability formatting do not count.

use super::diff::comment_port;
use super::norm::{probability_value, rule_key};
use super::owner::{self, is_shared_chain, owner, Owner};
use super::parse::{Chain, Rule, RuleSpec, Ruleset, Table};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

/// Two shares closer than this are equal: 10⁻⁴ is far above the kernel's 2⁻³¹ rounding and
/// the 5-decimal formatting of old releases, far below a changed endpoint count.
pub const SHARE_TOLERANCE: f64 = 1e-4;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Endpoint {
    /// Share of new connections (without an affinity entry), 0..1.
    pub share: f64,
    /// The endpoint masquerades its own traffic to the service (`-s IP -j KUBE-MARK-MASQ`).
    pub hairpin_masquerade: bool,
    /// ClientIP affinity timeout in seconds, if the chain has an affinity rule for it.
    pub affinity_seconds: Option<u64>,
}

/// A chain of the service port (SVC, SVL, EXT, FW, XLB): its rules other than the endpoint
/// jumps, in order, and its endpoints.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Path {
    pub rules: Vec<String>,
    /// DNAT target (`ip:port`) → endpoint.
    pub endpoints: BTreeMap<String, Endpoint>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PortBehaviour {
    /// `nat CHAIN <matches> -> <role>`.
    pub entries: BTreeSet<String>,
    /// Role (`svc`, `svl`, `ext`, `fw`, `xlb`) → chain behaviour.
    pub paths: BTreeMap<String, Path>,
    /// `filter CHAIN <rule>` (REJECT / DROP / ACCEPT outcomes).
    pub filter: BTreeSet<String>,
}

impl PortBehaviour {
    /// Cluster when the cluster IP leads to the all-endpoints chain, Local to the local one.
    fn internal_policy(&self) -> Option<&'static str> {
        let to = |role: &str| {
            self.entries
                .iter()
                .any(|e| e.starts_with("nat KUBE-SERVICES ") && e.ends_with(role))
        };
        if to("-> svl") {
            Some("Local")
        } else if to("-> svc") {
            Some("Cluster")
        } else {
            None
        }
    }

    fn external_policy(&self) -> Option<&'static str> {
        if self.paths.contains_key("xlb") {
            return Some("Local");
        }
        let ext = self.paths.get("ext")?;
        let last = ext.rules.last()?;
        if last.ends_with("-j <svl>") {
            Some("Local")
        } else if last.ends_with("-j <svc>") {
            Some("Cluster")
        } else {
            None
        }
    }
}

/// A dump read for its behaviour.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Behaviour {
    /// `ns/name:port proto` (or the chain name when no comment names it) → behaviour.
    pub ports: BTreeMap<String, PortBehaviour>,
    /// kube-proxy's fixed chains (`table CHAIN` → rules) and the jumps into them.
    pub fixed: BTreeMap<String, Vec<String>>,
    /// Set when the dump holds a newer release's accounting rules.
    #[serde(skip)]
    pub version_note: Option<String>,
}

fn role(chain: &str) -> Option<&'static str> {
    [
        ("KUBE-SVC-", "svc"),
        ("KUBE-SVL-", "svl"),
        ("KUBE-EXT-", "ext"),
        ("KUBE-FW-", "fw"),
        ("KUBE-XLB-", "xlb"),
    ]
    .iter()
    .find(|(p, _)| chain.starts_with(p))
    .map(|(_, r)| *r)
}

/// The rule's key without its comment, the chain it jumps to named by role.
fn behaviour_key(spec: &RuleSpec) -> String {
    let mut s = spec.clone();
    s.matches.retain(|m| m.name != "comment");
    if let Some(t) = &mut s.target {
        if let Some(r) = role(&t.name) {
            t.name = format!("<{r}>").into();
        } else if t.name.starts_with("KUBE-SEP-") {
            t.name = "<endpoint>".into();
        }
    }
    rule_key(&s).trim_start().to_string()
}

/// The rule's matches only (no target), without comment.
fn match_key(spec: &RuleSpec) -> String {
    let mut s = spec.clone();
    s.matches.retain(|m| m.name != "comment");
    s.target = None;
    rule_key(&s).trim_start().to_string()
}

fn port_of(r: &Rule) -> Option<String> {
    let spn = comment_port(r.spec.comment()?)?;
    let proto = r
        .spec
        .proto
        .as_ref()
        .map(|p| p.value.as_str())
        .unwrap_or("");
    Some(format!("{spn} {proto}").trim_end().to_string())
}

fn recent_seconds(spec: &RuleSpec) -> Option<Option<u64>> {
    let m = spec.find_match("recent")?;
    if !m.opts.iter().any(|o| o.name == "--rcheck") {
        return None;
    }
    Some(
        spec.match_value("recent", "--seconds")
            .and_then(|v| v.parse().ok()),
    )
}

/// What a KUBE-SEP chain does: (DNAT target, hairpin masquerade).
fn endpoint_of(c: Option<&Chain>, name: &str) -> (String, bool) {
    let Some(c) = c else {
        return (format!("(missing chain {name})"), false);
    };
    let mut to = None;
    let mut masq = false;
    for r in &c.rules {
        match r.spec.target_name() {
            Some("DNAT") => {
                to = r
                    .spec
                    .target_value("--to-destination")
                    .or_else(|| r.spec.target_value("--to"))
                    .map(str::to_string)
            }
            Some("KUBE-MARK-MASQ") if r.spec.src.is_some() => masq = true,
            _ => {}
        }
    }
    (to.unwrap_or_else(|| format!("(no DNAT in {name})")), masq)
}

fn path_of(nat: &Table, c: &Chain, queue: &mut Vec<String>) -> Path {
    let mut p = Path::default();
    let mut left = 1.0f64;
    let mut affinity: HashMap<&str, Option<u64>> = HashMap::new();
    for r in &c.rules {
        let Some(tg) = r.spec.target_name() else {
            p.rules.push(behaviour_key(&r.spec));
            continue;
        };
        if tg.starts_with("KUBE-SEP-") {
            if let Some(secs) = recent_seconds(&r.spec) {
                affinity.insert(tg, secs);
                continue;
            }
            let prob = match r.spec.match_value("statistic", "--probability") {
                Some(v) => probability_value(v).unwrap_or(0.0),
                None => 1.0,
            };
            let (to, masq) = endpoint_of(nat.chain(tg), tg);
            let e = p.endpoints.entry(to).or_default();
            e.share += left * prob;
            e.hairpin_masquerade |= masq;
            if let Some(s) = affinity.get(tg) {
                e.affinity_seconds = *s;
            }
            left *= 1.0 - prob;
            continue;
        }
        if role(tg).is_some() {
            queue.push(tg.to_string());
        }
        p.rules.push(behaviour_key(&r.spec));
    }
    p
}

impl Behaviour {
    /// Reads `rs`; a newer release's dump is read in its v1.30 form (accounting only).
    pub fn of(rs: &Ruleset) -> Behaviour {
        let mut b = Behaviour::default();
        let adapted;
        let rs = if owner::has_newer_rules(rs) {
            let (v, note) = owner::to_v130(rs);
            b.version_note = note.text().map(|_| {
                format!(
                    "looks like kube-proxy ≥ 1.31 (nfacct rules): {} accounting rule(s) ignored",
                    note.stripped + note.removed
                )
            });
            adapted = v;
            &adapted
        } else {
            rs
        };
        let empty = Table::default();
        let nat = rs.table("nat").unwrap_or(&empty);
        // Entry points, and the chains they lead to.
        let mut chain_port: HashMap<String, String> = HashMap::new();
        let mut queue: Vec<(String, String)> = Vec::new();
        for c in nat.chains.iter().filter(|c| is_shared_chain(&c.name)) {
            for r in &c.rules {
                let tg = r.spec.target_name().unwrap_or("");
                if tg == "KUBE-NODEPORTS" || (tg.is_empty() && r.spec.comment().is_none()) {
                    b.fixed
                        .entry(format!("nat {} tail", c.name))
                        .or_default()
                        .push(behaviour_key(&r.spec));
                    continue;
                }
                let label = port_of(r).unwrap_or_else(|| tg.to_string());
                let to = role(tg).map(str::to_string).unwrap_or_else(|| tg.into());
                b.ports
                    .entry(label.clone())
                    .or_default()
                    .entries
                    .insert(format!("nat {} {} -> {to}", c.name, match_key(&r.spec)));
                if role(tg).is_some() {
                    queue.push((tg.to_string(), label));
                }
            }
        }
        for v in b.fixed.values_mut() {
            v.sort();
        }
        // Walk each port's chains.
        while let Some((chain, label)) = queue.pop() {
            if chain_port.contains_key(&chain) {
                continue;
            }
            chain_port.insert(chain.clone(), label.clone());
            let r = role(&chain).expect("only role chains are queued");
            let port = b.ports.entry(label.clone()).or_default();
            let Some(c) = nat.chain(&chain) else {
                port.paths.insert(
                    r.to_string(),
                    Path {
                        rules: vec![format!("(missing chain {chain})")],
                        ..Path::default()
                    },
                );
                continue;
            };
            let mut next = Vec::new();
            let p = path_of(nat, c, &mut next);
            port.paths.entry(r.to_string()).or_insert(p);
            queue.extend(next.into_iter().map(|n| (n, label.clone())));
        }
        // Filter outcomes.
        if let Some(filter) = rs.table("filter") {
            for c in filter.chains.iter().filter(|c| is_shared_chain(&c.name)) {
                for r in &c.rules {
                    let key = format!("filter {} {}", c.name, behaviour_key(&r.spec));
                    match port_of(r) {
                        Some(l) => {
                            b.ports.entry(l).or_default().filter.insert(key);
                        }
                        None => b
                            .fixed
                            .entry(format!("filter {} unattributed", c.name))
                            .or_default()
                            .push(key),
                    }
                }
            }
        }
        // Fixed chains, and the jumps into kube-proxy's chains from any other chain.
        for t in &rs.tables {
            for c in &t.chains {
                let ours = owner(&c.name) == Owner::Proxy;
                if ours && !is_shared_chain(&c.name) && role(&c.name).is_none() {
                    if c.name.starts_with("KUBE-SEP-") {
                        continue;
                    }
                    let rules = c.rules.iter().map(|r| behaviour_key(&r.spec)).collect();
                    b.fixed.insert(format!("{} {}", t.name, c.name), rules);
                } else if !ours {
                    let mut jumps: Vec<String> = c
                        .rules
                        .iter()
                        .filter(|r| r.spec.target_name().is_some_and(owner::is_proxy_chain))
                        .map(|r| behaviour_key(&r.spec))
                        .collect();
                    if !jumps.is_empty() {
                        jumps.sort();
                        jumps.dedup();
                        b.fixed
                            .insert(format!("{} {} jumps", t.name, c.name), jumps);
                    }
                }
            }
        }
        b
    }
}

/// One behaviour difference.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Difference {
    /// `entry`, `endpoint`, `share`, `masquerade`, `affinity`, `policy`, `source range`,
    /// `rule`, `filter`, `port`.
    pub what: String,
    pub detail: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct BehaviourReport {
    pub equal: bool,
    pub ports_compared: usize,
    /// Differences per service port; the fixed chains under `""`.
    pub ports: BTreeMap<String, Vec<Difference>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl BehaviourReport {
    pub fn count(&self) -> usize {
        self.ports.values().map(Vec::len).sum()
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        if self.equal {
            let _ = writeln!(
                s,
                "behaviour equal: {} service port(s) and the fixed chains",
                self.ports_compared
            );
            return s;
        }
        for (p, ds) in &self.ports {
            if p.is_empty() {
                let _ = writeln!(s, "fixed chains:");
            } else {
                let _ = writeln!(s, "service port {p}:");
            }
            for d in ds {
                let _ = writeln!(s, "  {}: {}", d.what, d.detail);
            }
        }
        let _ = writeln!(
            s,
            "behaviour different: {} difference(s) in {} group(s)",
            self.count(),
            self.ports.len()
        );
        s
    }
}

fn pct(x: f64) -> String {
    format!("{:.3}%", x * 100.0)
}

struct Out<'a>(&'a mut Vec<Difference>);

impl Out<'_> {
    fn push(&mut self, what: &str, detail: String) {
        self.0.push(Difference {
            what: what.into(),
            detail,
        });
    }
}

fn set_diff<'a, T: Ord + 'a>(
    a: impl IntoIterator<Item = &'a T>,
    b: impl IntoIterator<Item = &'a T>,
) -> (Vec<&'a T>, Vec<&'a T>) {
    let a: BTreeSet<&T> = a.into_iter().collect();
    let b: BTreeSet<&T> = b.into_iter().collect();
    (
        a.difference(&b).copied().collect(),
        b.difference(&a).copied().collect(),
    )
}

fn is_masquerade(rule: &str) -> bool {
    rule.ends_with("-j KUBE-MARK-MASQ")
}

/// `-s CIDR -j <ext>` in a firewall chain: an allowed source range.
fn source_range(role: &str, rule: &str) -> Option<String> {
    if role != "fw" {
        return None;
    }
    let r = rule.trim();
    let rest = r.strip_prefix("-s ")?;
    let (cidr, tail) = rest.split_once(' ')?;
    (tail == "-j <ext>" || tail == "-j <svc>" || tail == "-j <xlb>").then(|| cidr.to_string())
}

fn compare_paths(role: &str, a: &Path, b: &Path, out: &mut Out) {
    let (only_a, only_b) = set_diff(&a.rules, &b.rules);
    for (rules, side) in [(&only_a, "A"), (&only_b, "B")] {
        for r in rules {
            let what = match source_range(role, r) {
                Some(cidr) => {
                    out.push("source range", format!("{cidr} allowed only in {side}"));
                    continue;
                }
                None if is_masquerade(r) => "masquerade",
                None => "rule",
            };
            out.push(what, format!("{role}: only in {side}: {}", r.trim()));
        }
    }
    if only_a.is_empty() && only_b.is_empty() && a.rules != b.rules {
        out.push("rule", format!("{role}: same rules in a different order"));
    }
    for (ep, ea) in &a.endpoints {
        match b.endpoints.get(ep) {
            None => out.push(
                "endpoint",
                format!("{role}: {ep} only in A (share {})", pct(ea.share)),
            ),
            Some(eb) => {
                if (ea.share - eb.share).abs() > SHARE_TOLERANCE {
                    out.push(
                        "share",
                        format!(
                            "{role}: {ep} gets {} of new connections in A, {} in B",
                            pct(ea.share),
                            pct(eb.share)
                        ),
                    );
                }
                if ea.hairpin_masquerade != eb.hairpin_masquerade {
                    out.push(
                        "masquerade",
                        format!(
                            "{role}: {ep} hairpin masquerade {} in A, {} in B",
                            ea.hairpin_masquerade, eb.hairpin_masquerade
                        ),
                    );
                }
                if ea.affinity_seconds != eb.affinity_seconds {
                    let f = |s: Option<u64>| s.map_or("none".to_string(), |s| format!("{s}s"));
                    out.push(
                        "affinity",
                        format!(
                            "{role}: {ep} ClientIP affinity {} in A, {} in B",
                            f(ea.affinity_seconds),
                            f(eb.affinity_seconds)
                        ),
                    );
                }
            }
        }
    }
    for (ep, eb) in &b.endpoints {
        if !a.endpoints.contains_key(ep) {
            out.push(
                "endpoint",
                format!("{role}: {ep} only in B (share {})", pct(eb.share)),
            );
        }
    }
}

fn compare_port(a: &PortBehaviour, b: &PortBehaviour, out: &mut Out) {
    for (what, pa, pb) in [
        ("internal", a.internal_policy(), b.internal_policy()),
        ("external", a.external_policy(), b.external_policy()),
    ] {
        if let (Some(pa), Some(pb)) = (pa, pb) {
            if pa != pb {
                out.push(
                    "policy",
                    format!("{what} traffic policy {pa} in A, {pb} in B"),
                );
            }
        }
    }
    let (only_a, only_b) = set_diff(&a.entries, &b.entries);
    for e in only_a {
        out.push("entry", format!("only in A: {e}"));
    }
    for e in only_b {
        out.push("entry", format!("only in B: {e}"));
    }
    let empty = Path::default();
    let roles: BTreeSet<&String> = a.paths.keys().chain(b.paths.keys()).collect();
    for r in roles {
        match (a.paths.get(r), b.paths.get(r)) {
            (Some(pa), Some(pb)) => compare_paths(r, pa, pb, out),
            (Some(pa), None) => {
                out.push("rule", format!("{r} chain only in A"));
                compare_paths(r, pa, &empty, out);
            }
            (None, Some(pb)) => {
                out.push("rule", format!("{r} chain only in B"));
                compare_paths(r, &empty, pb, out);
            }
            (None, None) => {}
        }
    }
    let (only_a, only_b) = set_diff(&a.filter, &b.filter);
    for f in only_a {
        out.push("filter", format!("only in A: {f}"));
    }
    for f in only_b {
        out.push("filter", format!("only in B: {f}"));
    }
}

/// Compares two dumps by behaviour, per service port.
pub fn compare(a: &Behaviour, b: &Behaviour) -> BehaviourReport {
    let mut rep = BehaviourReport::default();
    for (side, x) in [("A", a), ("B", b)] {
        if let Some(n) = &x.version_note {
            rep.notes.push(format!("{side} {n}"));
        }
    }
    let labels: BTreeSet<&String> = a.ports.keys().chain(b.ports.keys()).collect();
    rep.ports_compared = labels.len();
    let empty = PortBehaviour::default();
    for l in labels {
        let mut ds = Vec::new();
        let mut out = Out(&mut ds);
        match (a.ports.get(l), b.ports.get(l)) {
            (Some(pa), Some(pb)) => compare_port(pa, pb, &mut out),
            (Some(pa), None) => {
                out.push("port", "only in A".into());
                compare_port(pa, &empty, &mut out);
            }
            (None, Some(pb)) => {
                out.push("port", "only in B".into());
                compare_port(&empty, pb, &mut out);
            }
            (None, None) => {}
        }
        if !ds.is_empty() {
            rep.ports.insert(l.clone(), ds);
        }
    }
    let mut ds = Vec::new();
    let mut out = Out(&mut ds);
    let chains: BTreeSet<&String> = a.fixed.keys().chain(b.fixed.keys()).collect();
    for c in chains {
        let none = Vec::new();
        let (ra, rb) = (
            a.fixed.get(c).unwrap_or(&none),
            b.fixed.get(c).unwrap_or(&none),
        );
        let (only_a, only_b) = set_diff(ra, rb);
        for r in only_a {
            out.push("rule", format!("{c}: only in A: {}", r.trim()));
        }
        for r in only_b {
            out.push("rule", format!("{c}: only in B: {}", r.trim()));
        }
        if ra != rb && set_diff(ra, rb) == (vec![], vec![]) {
            out.push("rule", format!("{c}: same rules in a different order"));
        }
    }
    if !ds.is_empty() {
        rep.ports.insert(String::new(), ds);
    }
    rep.equal = rep.ports.is_empty();
    rep
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-A - [0:0]\n\
        :KUBE-SEP-1 - [0:0]\n:KUBE-SEP-2 - [0:0]\n:KUBE-SEP-3 - [0:0]\n\
        -A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment \"ns/web:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-A\n\
        -A KUBE-SVC-A -m statistic --mode random --probability 0.33333333349 -j KUBE-SEP-1\n\
        -A KUBE-SVC-A -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-2\n\
        -A KUBE-SVC-A -j KUBE-SEP-3\n\
        -A KUBE-SEP-1 -s 10.0.0.1/32 -j KUBE-MARK-MASQ\n\
        -A KUBE-SEP-1 -p tcp -m tcp -j DNAT --to-destination 10.0.0.1:8080\n\
        -A KUBE-SEP-2 -p tcp -m tcp -j DNAT --to-destination 10.0.0.2:8080\n\
        -A KUBE-SEP-3 -p tcp -m tcp -j DNAT --to-destination 10.0.0.3:8080\n\
        COMMIT\n";

    #[test]
    fn shares_from_probabilities() {
        let b = Behaviour::of(&Ruleset::parse(DUMP).unwrap());
        let p = &b.ports["ns/web:http tcp"];
        assert_eq!(p.internal_policy(), Some("Cluster"));
        let eps = &p.paths["svc"].endpoints;
        for ep in ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"] {
            assert!(
                (eps[ep].share - 1.0 / 3.0).abs() < 1e-6,
                "{ep} {:?}",
                eps[ep]
            );
        }
        assert!(eps["10.0.0.1:8080"].hairpin_masquerade);
        assert!(!eps["10.0.0.2:8080"].hairpin_masquerade);
        // 5-decimal formatting (old releases) is the same behaviour.
        let old = DUMP.replace("0.33333333349", "0.33333");
        let r = compare(&b, &Behaviour::of(&Ruleset::parse(&old).unwrap()));
        assert!(r.equal, "{}", r.to_text());
        // Half the traffic to the first endpoint is not.
        let skew = DUMP.replace("0.33333333349", "0.50000000000");
        let r = compare(&b, &Behaviour::of(&Ruleset::parse(&skew).unwrap()));
        assert_eq!(r.ports["ns/web:http tcp"].len(), 3, "{}", r.to_text());
        assert!(r.ports["ns/web:http tcp"].iter().all(|d| d.what == "share"));
    }
}
