//! `explain`: every KUBE-* chain of a dump (declared, jumped to, or only jumped to) named
//! and attributed to its service port, and per service port what the rules really do.
//!
//! Linear in the dump: one pass indexes the jumps, names come from objects, the chains'
//! own comments, the comments of the rules jumping to them, sibling chains sharing a hash
//! and the chains jumping to them (a work list, each chain once); one more pass over the
//! rules describes the service ports ([`policy`]) and [`findings`] flags what needs a human.

mod findings;
mod kinds;
mod other;
mod policy;
mod render;

pub use findings::Finding;

use super::diff::{comment_spn, port_label};
use super::parse::{Chain, Rule, Ruleset};
use crate::model::ClusterModel;
use crate::rules::names::{ChainHash, ChainKind};
use kinds::{hash_part, kind_of, Kind};
pub use other::OtherSoftware;
use serde::Serialize;
use std::collections::HashMap;

/// The hash inputs naming a service port: today's `ns/name` for an unnamed port, and
/// the `ns/name:` older releases (1.9 era) hashed.
pub fn spn_forms(spn: &str, unnamed: bool) -> Vec<(String, &'static str)> {
    let mut v = vec![(spn.to_string(), "current")];
    if unnamed {
        v.push((format!("{spn}:"), "old (ns/name:)"));
    }
    v
}

pub const OLD_FORM: &str = "old (ns/name:)";

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
                for k in [
                    ChainKind::Svc,
                    ChainKind::Svl,
                    ChainKind::Ext,
                    ChainKind::Fw,
                ] {
                    chains.insert(h.chain_name(k), (label.clone(), None, form));
                }
                // Same hash input as KUBE-SVC (releases before v1.24).
                chains.insert(
                    format!("KUBE-XLB-{}", h.as_str()),
                    (label.clone(), None, form),
                );
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
    /// What the chain does.
    pub kind: &'static str,
    /// Short stable id of the kind: `svc`, `svl`, `ext`, `fw`, `xlb`, `sep`, `services`,
    /// `mark-drop`, ... (`other` for KUBE-* chains kube-proxy's iptables mode never writes).
    pub kind_id: &'static str,
    /// Who writes chains of this kind.
    pub owner: &'static str,
    /// `ns/name:port proto`, if known.
    pub service_port: Option<String>,
    pub endpoint: Option<String>,
    /// How the mapping was found: `objects`, `hash` (a name from a comment verified by the
    /// chain hash), `comment` (own comments, hash did not match), `jump comment` (comment of
    /// a rule jumping here, hash did not match), `sibling` (a chain with the same hash is
    /// named), `jump` (from the chain jumping here) or `unknown`; `shared` for fixed chains.
    pub source: &'static str,
    pub hash_form: Option<&'static str>,
    /// Declared (`:NAME`, `-N`) in the dump.
    pub declared: bool,
    /// Rules of the chain in the dump.
    pub rules: usize,
    /// The chain's own lines are in the dump (declared or with rules); false for a chain
    /// that is only the target of jumps.
    pub in_dump: bool,
    /// Rules in the dump jumping (or going) here.
    pub jumped_from: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct EndpointShare {
    pub endpoint: Option<String>,
    pub chain: String,
    /// The rule's own (conditional) probability, as the kernel applies it.
    pub probability: f64,
    /// Share of new connections: the product of the conditional probabilities.
    pub share: f64,
    /// Node-local endpoint (in KUBE-SVL / KUBE-XLB), remote, or unknown (no local chain
    /// in the dump).
    pub local: Option<bool>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PortInfo {
    pub service_port: String,
    /// False for a group of chains whose name nothing in the dump reveals (keyed by hash).
    pub named: bool,
    pub entries: Vec<String>,
    pub chains: Vec<String>,
    pub affinity_timeout: Option<u32>,
    /// Endpoints of the KUBE-SVC chain (all endpoints), in rule order.
    pub endpoints: Vec<EndpointShare>,
    /// Endpoints of the KUBE-SVL or KUBE-XLB chain (node-local endpoints), if any.
    pub local_endpoints: Vec<EndpointShare>,
    /// Share of new connections that match no endpoint rule.
    pub unbalanced_remainder: f64,
    pub skewed: bool,
    pub internal_traffic_policy: Option<&'static str>,
    pub external_traffic_policy: Option<&'static str>,
    /// The rules the traffic policies were read from.
    pub policy_evidence: Vec<String>,
    /// Load-balancer source ranges accepted by KUBE-FW.
    pub source_ranges: Vec<String>,
    /// What the rules do beyond the above (masquerading, hairpin, firewall form, ...).
    pub notes: Vec<String>,
    /// REJECT / DROP rules for this port (no endpoints, no local endpoints).
    pub rejects: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Explanation {
    /// Per-service-port chains (hashed names), declared ones in dump order, then the
    /// ones only jumped to.
    pub chains: Vec<ChainInfo>,
    /// Fixed-name KUBE-* chains (KUBE-SERVICES, KUBE-MARK-DROP, kubelet's, ...).
    pub shared_chains: Vec<ChainInfo>,
    pub ports: Vec<PortInfo>,
    /// Node-wide behaviour: masquerade mark and how marked traffic leaves.
    pub notes: Vec<String>,
    pub findings: Vec<Finding>,
    /// Chains of other software (kubelet, CNI, Docker, ...), one entry per owner.
    pub other_software: Vec<OtherSoftware>,
    /// What the parser left out of the input (prose, the other IP family's save).
    pub input_notes: Vec<String>,
}

/// A KUBE-* chain name seen in one table.
pub(crate) struct Node<'a> {
    pub ti: usize,
    pub name: &'a str,
    pub chain: Option<&'a Chain>,
    pub kind: Kind,
    /// Rules jumping here: (chain index in the table, rule index).
    pub refs: Vec<(u32, u32)>,
}

#[derive(Clone, Default)]
pub(crate) struct Attr {
    pub label: Option<String>,
    /// Port key: the label, or `unknown (hash H)` for chains nothing names.
    pub group: Option<String>,
    pub endpoint: Option<String>,
    pub source: &'static str,
    pub form: Option<&'static str>,
}

pub(crate) struct Graph<'a> {
    pub rs: &'a Ruleset,
    pub nodes: Vec<Node<'a>>,
    pub by_name: HashMap<(usize, &'a str), usize>,
    pub attrs: Vec<Attr>,
    /// Per table, chain and rule: the node the rule jumps to (`NONE` if not a KUBE-* chain).
    pub targets: Vec<Vec<Vec<u32>>>,
}

pub(crate) const NONE: u32 = u32::MAX;

impl<'a> Graph<'a> {
    pub fn node(&self, ti: usize, name: &str) -> Option<usize> {
        self.by_name.get(&(ti, name)).copied()
    }

    /// The node rule `ri` of chain `ci` jumps to.
    pub fn target(&self, ti: usize, ci: usize, ri: usize) -> Option<usize> {
        let t = self.targets[ti][ci][ri];
        (t != NONE).then_some(t as usize)
    }

    pub fn rule(&self, ti: usize, ci: u32, ri: u32) -> (&'a Chain, &'a Rule) {
        let c = &self.rs.tables[ti].chains[ci as usize];
        (c, &c.rules[ri as usize])
    }

    fn build(rs: &'a Ruleset) -> Graph<'a> {
        let mut nodes = Vec::new();
        let mut by_name = HashMap::new();
        let mut targets = Vec::with_capacity(rs.tables.len());
        for (ti, t) in rs.tables.iter().enumerate() {
            for c in &t.chains {
                if let Some(kind) = kind_of(&t.name, &c.name) {
                    by_name.insert((ti, c.name.as_str()), nodes.len());
                    nodes.push(Node {
                        ti,
                        name: &c.name,
                        chain: Some(c),
                        kind,
                        refs: Vec::new(),
                    });
                }
            }
            let mut tt = Vec::with_capacity(t.chains.len());
            for (ci, c) in t.chains.iter().enumerate() {
                let mut ct = vec![NONE; c.rules.len()];
                for (ri, r) in c.rules.iter().enumerate() {
                    let Some(tg) = r.spec.target_name() else {
                        continue;
                    };
                    let Some(kind) = kind_of(&t.name, tg) else {
                        continue;
                    };
                    ct[ri] = nodes.len() as u32;
                    let i = *by_name.entry((ti, tg)).or_insert_with(|| {
                        nodes.push(Node {
                            ti,
                            name: tg,
                            chain: None,
                            kind,
                            refs: Vec::new(),
                        });
                        nodes.len() - 1
                    });
                    ct[ri] = i as u32;
                    nodes[i].refs.push((ci as u32, ri as u32));
                }
                tt.push(ct);
            }
            targets.push(tt);
        }
        let attrs = vec![Attr::default(); nodes.len()];
        Graph {
            rs,
            nodes,
            by_name,
            attrs,
            targets,
        }
    }
}

/// A service port name in a comment: kube-proxy's `ns/name:port ...` forms, plus the
/// older `Balancing rule N for ns/name:port` and `other traffic to ns/name:port ...`.
pub(crate) fn spn_of_comment(c: &str) -> Option<&str> {
    if let Some(s) = comment_spn(c) {
        return Some(s);
    }
    let rest = c
        .strip_prefix("Balancing rule ")
        .and_then(|r| r.split_once(" for ").map(|x| x.1))
        .or_else(|| c.strip_prefix("other traffic to "))?;
    let w = rest.split(' ').next()?;
    (w.contains('/') && !w.starts_with('/')).then_some(w)
}

/// `ns/name:port -> 10.1.2.3:80` (v1.24+ comments of the jumps to endpoint chains).
fn endpoint_of_comment(c: &str) -> Option<&str> {
    let (_, ep) = c.split_once(" -> ")?;
    let ep = ep.trim();
    (!ep.is_empty() && !ep.contains(' ')).then_some(ep)
}

/// The service port named in a chain's own comments, with the protocol of its rules.
fn from_comments(c: &Chain) -> Option<(&str, Option<&str>)> {
    let spn = c
        .rules
        .iter()
        .find_map(|r| r.spec.comment().and_then(spn_of_comment))?;
    let proto = c
        .rules
        .iter()
        .find_map(|r| r.spec.proto.as_ref().map(|p| p.value.as_str()));
    Some((spn, proto))
}

pub(crate) fn dnat_endpoint(c: &Chain) -> Option<&str> {
    c.rules
        .iter()
        .filter(|r| r.spec.target_name() == Some("DNAT"))
        .find_map(|r| r.spec.target_value("--to-destination"))
}

/// Checks a name against the chain's hash, trying both hash input forms (and every
/// protocol if the rules do not say). Returns (label, form).
fn verify(
    chain: &str,
    kind: Kind,
    spn: &str,
    proto: Option<&str>,
    endpoint: Option<&str>,
) -> Option<(String, &'static str)> {
    let hash = hash_part(chain)?;
    let base = spn.strip_suffix(':').unwrap_or(spn);
    let unnamed = !base.contains(':');
    let protos: &[&str] = match proto {
        Some(p) => &[p][..],
        None => &["tcp", "udp", "sctp"],
    };
    let sep = kind.id == "sep";
    if sep && endpoint.is_none() {
        return None;
    }
    for (input, form) in spn_forms(base, unnamed) {
        for p in protos {
            let h = match endpoint.filter(|_| sep) {
                Some(ep) => ChainHash::of(&[&input, p, ep]),
                None => ChainHash::of(&[&input, p]),
            };
            if h.as_str() == hash {
                return Some((port_label(base, p), form));
            }
        }
    }
    None
}

/// Label (`ns/name:port proto`) of a service port whose chain's hash could not be checked.
fn unverified_label(spn: &str, proto: Option<&str>) -> String {
    let s = spn.strip_suffix(':').unwrap_or(spn);
    match proto {
        Some(p) => port_label(s, p),
        None => s.to_string(),
    }
}

/// Splits a label back into (spn, protocol).
pub(crate) fn split_label(l: &str) -> (&str, Option<&str>) {
    match l.rsplit_once(' ') {
        Some((s, p)) => (s, Some(p)),
        None => (l, None),
    }
}

fn attribute(g: &mut Graph, known: Option<&KnownPorts>) {
    // 1. Objects, then the chain's own comments.
    for i in 0..g.nodes.len() {
        let n = &g.nodes[i];
        if !n.kind.hashed {
            continue;
        }
        let own_ep = n.chain.and_then(dnat_endpoint);
        let a = &mut g.attrs[i];
        a.endpoint = own_ep.map(str::to_string);
        if let Some((label, ep, form)) = known.and_then(|k| k.chains.get(n.name)) {
            a.label = Some(label.clone());
            if ep.is_some() {
                a.endpoint = ep.clone();
            }
            a.source = "objects";
            a.form = Some(form);
        } else if let Some((spn, proto)) = n.chain.and_then(from_comments) {
            match verify(n.name, n.kind, spn, proto, own_ep) {
                Some((l, form)) => {
                    a.label = Some(l);
                    a.source = "hash";
                    a.form = Some(form);
                }
                None => {
                    a.label = Some(unverified_label(spn, proto));
                    a.source = "comment";
                }
            }
        }
    }
    // 2. Comments of the rules jumping here (the only names a fragment may hold).
    for i in 0..g.nodes.len() {
        let n = &g.nodes[i];
        if !n.kind.hashed || g.attrs[i].label.is_some() && g.attrs[i].source != "comment" {
            continue;
        }
        let mut found: Option<Attr> = None;
        for &(ci, ri) in &n.refs {
            let (_, r) = g.rule(n.ti, ci, ri);
            let Some(cm) = r.spec.comment() else {
                continue;
            };
            let ep = endpoint_of_comment(cm);
            if n.kind.id == "sep" && g.attrs[i].endpoint.is_none() {
                if let Some(ep) = ep {
                    g.attrs[i].endpoint = Some(ep.to_string());
                }
            }
            let Some(spn) = spn_of_comment(cm) else {
                continue;
            };
            let proto = r.spec.proto.as_ref().map(|p| p.value.as_str());
            let ep = g.attrs[i].endpoint.as_deref();
            if let Some((l, form)) = verify(n.name, n.kind, spn, proto, ep) {
                found = Some(Attr {
                    label: Some(l),
                    source: "hash",
                    form: Some(form),
                    ..Attr::default()
                });
                break;
            }
            if found.is_none() && g.attrs[i].label.is_none() {
                // The jumping chain's own (checked) name says the protocol.
                let base = spn.strip_suffix(':').unwrap_or(spn);
                let parent = g
                    .node(n.ti, &g.rs.tables[n.ti].chains[ci as usize].name)
                    .and_then(|p| g.attrs[p].label.clone())
                    .filter(|l| split_label(l).0 == base);
                found = Some(Attr {
                    source: if parent.is_some() {
                        "jump"
                    } else {
                        "jump comment"
                    },
                    label: Some(parent.unwrap_or_else(|| unverified_label(spn, proto))),
                    ..Attr::default()
                });
            }
        }
        if let Some(f) = found {
            let a = &mut g.attrs[i];
            a.label = f.label;
            a.source = f.source;
            a.form = f.form;
        }
    }
    // 3. Siblings (same hash) and the chains jumped to from named chains.
    let mut siblings: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if n.kind.hashed && n.kind.id != "sep" {
            if let Some(h) = hash_part(n.name) {
                siblings.entry(h).or_default().push(i);
            }
        }
    }
    let mut queue: Vec<usize> = (0..g.nodes.len())
        .filter(|&i| g.attrs[i].label.is_some())
        .collect();
    while let Some(i) = queue.pop() {
        let from = Attr {
            label: g.attrs[i].label.clone(),
            source: g.attrs[i].source,
            form: g.attrs[i].form,
            ..Attr::default()
        };
        let verified = matches!(from.source, "hash" | "objects");
        let n = &g.nodes[i];
        if n.kind.id != "sep" {
            for &j in hash_part(n.name)
                .and_then(|h| siblings.get(h))
                .map(Vec::as_slice)
                .unwrap_or(&[])
            {
                if g.attrs[j].label.is_none() {
                    let a = &mut g.attrs[j];
                    a.label = from.label.clone();
                    a.source = if verified { "hash" } else { "sibling" };
                    a.form = from.form.filter(|_| verified);
                    queue.push(j);
                }
            }
        }
        let Some(c) = n.chain else {
            continue;
        };
        let ti = n.ti;
        for r in &c.rules {
            let Some(j) = r.spec.target_name().and_then(|t| g.node(ti, t)) else {
                continue;
            };
            let m = &g.nodes[j];
            if !m.kind.hashed || g.attrs[j].label.is_some() {
                continue;
            }
            let label = from.label.clone().expect("queued nodes are named");
            let (spn, proto) = split_label(&label);
            let checked = verify(m.name, m.kind, spn, proto, g.attrs[j].endpoint.as_deref());
            let a = &mut g.attrs[j];
            match checked {
                Some((l, form)) => {
                    a.label = Some(l);
                    a.source = "hash";
                    a.form = Some(form);
                }
                None => {
                    a.label = Some(label);
                    a.source = "jump";
                }
            }
            queue.push(j);
        }
    }
    // 4. Chains nothing names: grouped by hash, endpoint chains with their parent.
    for i in 0..g.nodes.len() {
        let n = &g.nodes[i];
        if !n.kind.hashed {
            g.attrs[i].source = "shared";
            continue;
        }
        if let Some(l) = &g.attrs[i].label {
            g.attrs[i].group = Some(l.clone());
        } else {
            g.attrs[i].source = "unknown";
            if n.kind.id != "sep" {
                g.attrs[i].group = hash_part(n.name).map(|h| format!("unknown (hash {h})"));
            }
        }
    }
    for i in 0..g.nodes.len() {
        let n = &g.nodes[i];
        if g.attrs[i].label.is_some() || n.kind.id == "sep" || !n.kind.hashed {
            continue;
        }
        let (Some(c), Some(grp)) = (n.chain, g.attrs[i].group.clone()) else {
            continue;
        };
        for r in &c.rules {
            if let Some(j) = r.spec.target_name().and_then(|t| g.node(n.ti, t)) {
                if g.nodes[j].kind.id == "sep" && g.attrs[j].group.is_none() {
                    g.attrs[j].group = Some(grp.clone());
                }
            }
        }
    }
}

pub fn explain(rs: &Ruleset, known: Option<&KnownPorts>) -> Explanation {
    let mut g = Graph::build(rs);
    attribute(&mut g, known);
    let mut ex = Explanation::default();
    // Declared chains come first in `nodes` (per table); keep that order.
    for (i, n) in g.nodes.iter().enumerate() {
        let a = &g.attrs[i];
        let info = ChainInfo {
            table: rs.tables[n.ti].name.clone(),
            chain: n.name.to_string(),
            kind: n.kind.text,
            kind_id: n.kind.id,
            owner: n.kind.owner,
            service_port: a.label.clone(),
            endpoint: a.endpoint.clone(),
            source: a.source,
            hash_form: a.form,
            declared: n.chain.is_some_and(|c| c.line > 0),
            rules: n.chain.map_or(0, |c| c.rules.len()),
            in_dump: n.chain.is_some(),
            jumped_from: n.refs.len(),
        };
        if n.kind.hashed {
            ex.chains.push(info);
        } else {
            ex.shared_chains.push(info);
        }
    }
    ex.ports = policy::describe(&g);
    ex.notes = policy::node_notes(&g);
    ex.findings = findings::find(&g, &ex);
    ex.other_software = other::list(rs);
    ex.input_notes = rs.notes.clone();
    ex
}
