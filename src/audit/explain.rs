//! `explain`: every per-service chain of a dump mapped back to its service port and
//! endpoint, and per service port what the rules really do.

use super::diff::{comment_spn, port_label};
use super::norm::probability_value;
use super::parse::{Chain, Rule, Ruleset, Table};
use crate::model::ClusterModel;
use crate::rules::names::{ChainHash, ChainKind};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

const KINDS: [ChainKind; 5] = [
    ChainKind::Svc,
    ChainKind::Svl,
    ChainKind::Ext,
    ChainKind::Fw,
    ChainKind::Sep,
];

fn kind_of(chain: &str) -> Option<ChainKind> {
    KINDS.into_iter().find(|k| chain.starts_with(k.prefix()))
}

fn kind_text(k: ChainKind) -> &'static str {
    match k {
        ChainKind::Svc => "service (all endpoints)",
        ChainKind::Svl => "service (node-local endpoints)",
        ChainKind::Ext => "external traffic",
        ChainKind::Fw => "load-balancer firewall",
        ChainKind::Sep => "endpoint",
    }
}

/// The hash inputs naming a service port: today's `ns/name` for an unnamed port, and
/// the `ns/name:` older releases (1.9 era) hashed.
pub fn spn_forms(spn: &str, unnamed: bool) -> Vec<(String, &'static str)> {
    let mut v = vec![(spn.to_string(), "current")];
    if unnamed {
        v.push((format!("{spn}:"), "old (ns/name:)"));
    }
    v
}

/// Chain names computed from objects: chain → (label, endpoint, hash form).
#[derive(Default)]
pub struct KnownPorts {
    chains: HashMap<String, (String, Option<String>, &'static str)>,
}

impl KnownPorts {
    pub fn from_model(model: &ClusterModel) -> KnownPorts {
        let mut chains = HashMap::new();
        for sp in model.services.values().flat_map(|p| p.iter()) {
            let proto = sp.protocol.as_str();
            let label = port_label(&sp.spn, proto);
            for (input, form) in spn_forms(&sp.spn, sp.port_name.is_empty()) {
                let h = ChainHash::of(&[&input, proto]);
                for k in &KINDS[..4] {
                    chains.insert(h.chain_name(*k), (label.clone(), None, form));
                }
                for ep in sp.endpoints.iter() {
                    let h = ChainHash::of(&[&input, proto, &ep.endpoint]);
                    chains.insert(
                        h.chain_name(ChainKind::Sep),
                        (label.clone(), Some(ep.endpoint.clone()), form),
                    );
                }
            }
        }
        KnownPorts { chains }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ChainInfo {
    pub table: String,
    pub chain: String,
    pub kind: &'static str,
    /// `ns/name:port proto`, if known.
    pub service_port: Option<String>,
    pub endpoint: Option<String>,
    /// How the mapping was found: `objects`, `hash` (comment verified by the chain hash),
    /// `comment` (hash did not match), `jump` (from the rules jumping here) or `unknown`.
    pub source: &'static str,
    pub hash_form: Option<&'static str>,
}

#[derive(Clone, Debug, Serialize)]
pub struct EndpointShare {
    pub endpoint: Option<String>,
    pub chain: String,
    /// The rule's own (conditional) probability, as the kernel applies it.
    pub probability: f64,
    /// Share of new connections: the product of the conditional probabilities.
    pub share: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PortInfo {
    pub service_port: String,
    pub entries: Vec<String>,
    pub chains: Vec<String>,
    pub affinity_timeout: Option<u32>,
    /// Endpoints of the KUBE-SVC chain (all endpoints), in rule order.
    pub endpoints: Vec<EndpointShare>,
    /// Endpoints of the KUBE-SVL chain (node-local endpoints), if any.
    pub local_endpoints: Vec<EndpointShare>,
    /// Share of new connections that match no endpoint rule.
    pub unbalanced_remainder: f64,
    pub skewed: bool,
    pub internal_traffic_policy: Option<&'static str>,
    pub external_traffic_policy: Option<&'static str>,
    /// REJECT / DROP rules for this port (no endpoints, no local endpoints).
    pub rejects: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Explanation {
    pub chains: Vec<ChainInfo>,
    pub ports: Vec<PortInfo>,
}

/// The service port named in a chain's own comments, with the protocol of its rules.
fn from_comments(c: &Chain) -> Option<(String, Option<String>)> {
    let spn = c
        .rules
        .iter()
        .find_map(|r| r.spec.comment().and_then(comment_spn))?;
    let proto = c
        .rules
        .iter()
        .find_map(|r| r.spec.proto.as_ref().map(|p| p.value.clone()));
    Some((spn.to_string(), proto))
}

fn dnat_endpoint(c: &Chain) -> Option<String> {
    c.rules
        .iter()
        .filter(|r| r.spec.target_name() == Some("DNAT"))
        .find_map(|r| r.spec.target_value("--to-destination").map(str::to_string))
}

/// Checks a comment-derived name against the chain's hash, trying both hash input forms.
/// Returns (display spn, protocol, form).
fn verify(
    chain: &str,
    kind: ChainKind,
    spn: &str,
    proto: Option<&str>,
    endpoint: Option<&str>,
) -> Option<(String, String, &'static str)> {
    let base = spn.strip_suffix(':').unwrap_or(spn);
    let unnamed = !base.contains(':');
    let protos: Vec<&str> = match proto {
        Some(p) => vec![p],
        None => vec!["tcp", "udp", "sctp"],
    };
    for (input, form) in spn_forms(base, unnamed) {
        for p in &protos {
            let h = match (kind, endpoint) {
                (ChainKind::Sep, Some(ep)) => ChainHash::of(&[&input, p, ep]),
                (ChainKind::Sep, None) => continue,
                _ => ChainHash::of(&[&input, p]),
            };
            if h.chain_name(kind) == chain {
                return Some((base.to_string(), p.to_string(), form));
            }
        }
    }
    None
}

pub fn explain(rs: &Ruleset, known: Option<&KnownPorts>) -> Explanation {
    let mut ex = Explanation::default();
    let mut label_of: HashMap<String, String> = HashMap::new();
    let mut endpoint_of: HashMap<String, String> = HashMap::new();
    for t in &rs.tables {
        let mut pending = Vec::new();
        for c in &t.chains {
            let Some(kind) = kind_of(&c.name) else {
                continue;
            };
            let endpoint = dnat_endpoint(c);
            let mut info = ChainInfo {
                table: t.name.clone(),
                chain: c.name.clone(),
                kind: kind_text(kind),
                service_port: None,
                endpoint: endpoint.clone(),
                source: "unknown",
                hash_form: None,
            };
            if let Some((label, ep, form)) = known.and_then(|k| k.chains.get(&c.name)) {
                info.service_port = Some(label.clone());
                info.endpoint = ep.clone().or(endpoint);
                info.source = "objects";
                info.hash_form = Some(form);
            } else if let Some((spn, proto)) = from_comments(c) {
                match verify(&c.name, kind, &spn, proto.as_deref(), endpoint.as_deref()) {
                    Some((s, p, form)) => {
                        info.service_port = Some(port_label(&s, &p));
                        info.source = "hash";
                        info.hash_form = Some(form);
                    }
                    None => {
                        let s = spn.strip_suffix(':').unwrap_or(&spn);
                        info.service_port = Some(match &proto {
                            Some(p) => port_label(s, p),
                            None => s.to_string(),
                        });
                        info.source = "comment";
                    }
                }
            }
            if let Some(l) = &info.service_port {
                label_of.insert(c.name.clone(), l.clone());
            } else {
                pending.push(ex.chains.len());
            }
            if let Some(e) = &info.endpoint {
                endpoint_of.insert(c.name.clone(), e.clone());
            }
            ex.chains.push(info);
        }
        // Chains without comments (large-cluster mode): named by the chains jumping to them.
        for i in pending {
            let name = ex.chains[i].chain.clone();
            let from = t.chains.iter().find_map(|c| {
                c.rules
                    .iter()
                    .any(|r| r.spec.target_name() == Some(&name))
                    .then(|| label_of.get(&c.name))
                    .flatten()
            });
            if let Some(l) = from {
                ex.chains[i].service_port = Some(l.clone());
                ex.chains[i].source = "jump";
            }
        }
        for c in &ex.chains {
            if let Some(l) = &c.service_port {
                label_of.insert(c.chain.clone(), l.clone());
            }
        }
    }
    let mut ports: BTreeMap<String, PortInfo> = BTreeMap::new();
    for c in &ex.chains {
        if let Some(l) = &c.service_port {
            let p = ports.entry(l.clone()).or_insert_with(|| PortInfo {
                service_port: l.clone(),
                ..PortInfo::default()
            });
            p.chains.push(c.chain.clone());
        }
    }
    for t in &rs.tables {
        for p in ports.values_mut() {
            describe_port(t, p, &label_of, &endpoint_of);
        }
    }
    ex.ports = ports.into_values().collect();
    ex
}

fn describe_port(
    t: &Table,
    p: &mut PortInfo,
    label_of: &HashMap<String, String>,
    endpoint_of: &HashMap<String, String>,
) {
    let mine = |c: &str| label_of.get(c) == Some(&p.service_port);
    let spn = p
        .service_port
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    for c in &t.chains {
        for r in &c.rules {
            let target = r.spec.target_name().unwrap_or("");
            // Entry points: shared chains jumping into this port's chains.
            if !mine(&c.name) && mine(target) && c.name.starts_with("KUBE-") {
                p.entries.push(entry_text(&c.name, r));
                if target.starts_with("KUBE-SVL-")
                    && r.spec.comment().is_some_and(|x| x.ends_with("cluster IP"))
                {
                    p.internal_traffic_policy = Some("Local");
                } else if target.starts_with("KUBE-SVC-")
                    && r.spec.comment().is_some_and(|x| x.ends_with("cluster IP"))
                {
                    p.internal_traffic_policy = Some("Cluster");
                }
            }
            if matches!(target, "REJECT" | "DROP") && !mine(&c.name) {
                if let Some(cm) = r.spec.comment() {
                    if comment_spn(cm).is_some_and(|s| s.trim_end_matches(':') == spn) {
                        p.rejects
                            .push(format!("{} {}: -A {} {}", t.name, target, c.name, r.text));
                    }
                }
            }
        }
        if !mine(&c.name) {
            continue;
        }
        if c.name.starts_with("KUBE-EXT-") {
            let local = c.rules.iter().any(|r| {
                r.spec
                    .target_name()
                    .is_some_and(|x| x.starts_with("KUBE-SVL-"))
            });
            p.external_traffic_policy = Some(if local { "Local" } else { "Cluster" });
        }
        for r in &c.rules {
            if let Some(s) = r.spec.match_value("recent", "--seconds") {
                p.affinity_timeout = s.parse().ok();
            }
            if matches!(r.spec.target_name(), Some("DROP" | "REJECT")) {
                p.rejects.push(format!(
                    "{} {}: -A {} {}",
                    t.name,
                    r.spec.target_name().unwrap_or(""),
                    c.name,
                    r.text
                ));
            }
        }
        if c.name.starts_with("KUBE-SVC-") || c.name.starts_with("KUBE-SVL-") {
            let (shares, rest) = shares(c, endpoint_of);
            if c.name.starts_with("KUBE-SVC-") {
                p.endpoints = shares;
                p.unbalanced_remainder = rest;
            } else {
                p.local_endpoints = shares;
            }
        }
    }
    p.skewed = skewed(&p.endpoints) || skewed(&p.local_endpoints) || p.unbalanced_remainder > 1e-6;
}

fn skewed(s: &[EndpointShare]) -> bool {
    let max = s.iter().map(|e| e.share).fold(0.0, f64::max);
    let min = s.iter().map(|e| e.share).fold(1.0, f64::min);
    !s.is_empty() && max - min > 0.005
}

fn entry_text(chain: &str, r: &Rule) -> String {
    let dst = r.spec.dst.as_ref().map(|d| d.value.as_str());
    let port = r
        .spec
        .matches
        .iter()
        .find_map(|m| m.opts.iter().find(|o| o.name == "--dport"))
        .and_then(|o| o.values.first())
        .map(String::as_str);
    let what = r.spec.comment().unwrap_or("");
    let mut s = format!("{chain}:");
    if let Some(d) = dst {
        let _ = write!(s, " {d}");
    }
    if let Some(p) = port {
        let _ = write!(s, " port {p}");
    }
    if !what.is_empty() {
        let _ = write!(s, " ({what})");
    }
    s
}

/// Endpoint shares of new connections in a KUBE-SVC/SVL chain: each statistic rule takes
/// its probability of what earlier rules left; affinity (`--rcheck`) rules are skipped,
/// as they only catch returning clients.
fn shares(c: &Chain, endpoint_of: &HashMap<String, String>) -> (Vec<EndpointShare>, f64) {
    let mut left = 1.0f64;
    let mut out = Vec::new();
    for r in &c.rules {
        let Some(tg) = r.spec.target_name() else {
            continue;
        };
        if !tg.starts_with("KUBE-SEP-") || r.spec.find_match("recent").is_some() {
            continue;
        }
        let p = r
            .spec
            .match_value("statistic", "--probability")
            .and_then(probability_value)
            .unwrap_or(1.0);
        out.push(EndpointShare {
            endpoint: endpoint_of.get(tg).cloned(),
            chain: tg.to_string(),
            probability: p,
            share: left * p,
        });
        left *= 1.0 - p;
    }
    (out, left)
}

impl Explanation {
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "chains:");
        for c in &self.chains {
            let _ = write!(
                s,
                "  {:<27} {} {}",
                c.chain,
                c.service_port.as_deref().unwrap_or("?"),
                c.kind
            );
            if let Some(e) = &c.endpoint {
                let _ = write!(s, " {e}");
            }
            let _ = write!(s, " [{}", c.source);
            if let Some(f) = c.hash_form {
                let _ = write!(s, ", {f} hash input");
            }
            let _ = writeln!(s, "]");
        }
        for p in &self.ports {
            let _ = writeln!(s, "\nservice port {}", p.service_port);
            for e in &p.entries {
                let _ = writeln!(s, "  entry {e}");
            }
            let _ = writeln!(s, "  chains: {}", p.chains.join(" "));
            if let Some(t) = p.internal_traffic_policy {
                let _ = writeln!(s, "  internalTrafficPolicy: {t}");
            }
            if let Some(t) = p.external_traffic_policy {
                let _ = writeln!(s, "  externalTrafficPolicy: {t}");
            }
            match p.affinity_timeout {
                Some(t) => {
                    let _ = writeln!(s, "  session affinity: ClientIP, timeout {t}s");
                }
                None => {
                    let _ = writeln!(s, "  session affinity: none");
                }
            }
            for (title, eps) in [
                ("endpoints", &p.endpoints),
                ("local endpoints", &p.local_endpoints),
            ] {
                if eps.is_empty() {
                    continue;
                }
                let _ = writeln!(s, "  {title}:");
                for e in eps {
                    let _ = writeln!(
                        s,
                        "    {:<24} {} share {:.4}% (rule probability {:.11})",
                        e.endpoint.as_deref().unwrap_or("?"),
                        e.chain,
                        e.share * 100.0,
                        e.probability
                    );
                }
            }
            if p.unbalanced_remainder > 1e-6 {
                let _ = writeln!(
                    s,
                    "  {:.4}% of new connections match no endpoint rule",
                    p.unbalanced_remainder * 100.0
                );
            }
            if p.skewed {
                let _ = writeln!(s, "  WARNING: endpoint shares are skewed");
            }
            for r in &p.rejects {
                let _ = writeln!(s, "  {r}");
            }
        }
        s
    }
}
