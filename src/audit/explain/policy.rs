//! Per service port, what the rules do: entry points, traffic policies read from the
//! rules' structure, endpoint shares, affinity, masquerading, firewall, REJECT/DROP. One
//! pass over every rule of the dump.

use super::{split_label, spn_of_comment, EndpointShare, Graph, PortInfo};
use crate::audit::diff::port_label;
use crate::audit::norm::probability_value;
use crate::audit::parse::{echo, Chain, Rule};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

/// The v1.1 masquerade mark: "MASQ" in ASCII, set inline instead of via KUBE-MARK-MASQ.
pub const V1_1_MASQ_MARK: &str = "0x4d415351";

fn rule_ref(table: &str, chain: &str, r: &Rule) -> String {
    super::findings::evidence(table, chain, r)
}

/// A rule matches every packet (no address, interface, protocol or match module).
fn unconditional(r: &Rule) -> bool {
    let s = &r.spec;
    s.src.is_none()
        && s.dst.is_none()
        && s.in_iface.is_none()
        && s.out_iface.is_none()
        && s.proto.is_none()
        && s.matches.iter().all(|m| m.name == "comment")
}

fn src_type_local(r: &Rule) -> bool {
    r.spec
        .match_value("addrtype", "--src-type")
        .is_some_and(|v| v == "LOCAL")
}

#[derive(Default)]
struct Acc {
    local: Vec<String>,
    cluster: Vec<String>,
    itp_local: bool,
    itp_cluster: bool,
    fw_targets: HashSet<&'static str>,
    fw_mark_drop: bool,
    fw_filter_drop: bool,
    /// A KUBE-SVL / KUBE-XLB chain is in the dump (its endpoints are the local ones).
    local_chain: bool,
    ext_to_svl: bool,
    ext_route_local: bool,
}

struct Ports {
    list: Vec<(PortInfo, Acc)>,
    index: HashMap<String, usize>,
    by_spn: HashMap<String, Vec<usize>>,
}

impl Ports {
    fn id(&mut self, key: &str) -> usize {
        if let Some(&i) = self.index.get(key) {
            return i;
        }
        let i = self.list.len();
        let (spn, _) = split_label(key);
        self.by_spn.entry(spn.to_string()).or_default().push(i);
        self.index.insert(key.to_string(), i);
        self.list.push((
            PortInfo {
                service_port: key.to_string(),
                named: !key.starts_with("unknown (hash "),
                ..PortInfo::default()
            },
            Acc::default(),
        ));
        i
    }

    /// The port a shared-chain rule's comment names (`ns/name:port has no endpoints`).
    fn by_comment(&mut self, spn: &str, proto: Option<&str>) -> &mut (PortInfo, Acc) {
        let spn = spn.strip_suffix(':').unwrap_or(spn);
        let found = self.by_spn.get(spn).and_then(|ids| {
            ids.iter()
                .find(|&&i| proto.is_none() || split_label(&self.list[i].0.service_port).1 == proto)
                .or(ids.first())
                .copied()
        });
        let i = match found {
            Some(i) => i,
            None => self.id(&match proto {
                Some(p) => port_label(spn, p),
                None => spn.to_string(),
            }),
        };
        &mut self.list[i]
    }
}

fn entry_text(chain: &str, r: &Rule) -> String {
    let dst = r.spec.dst.as_ref().map(|d| d.value.as_str());
    let port = r
        .spec
        .matches
        .iter()
        .find_map(|m| m.opts.iter().find(|o| o.name == "--dport"))
        .and_then(|o| o.values.first())
        .map(super::super::sym::Sym::as_str);
    let what = r.spec.comment().unwrap_or("");
    let mut s = format!("{chain}:");
    if let Some(d) = dst {
        let _ = write!(s, " {d}");
    }
    if r.spec.match_value("addrtype", "--dst-type") == Some("LOCAL") {
        s.push_str(" node addresses");
    }
    if let Some(p) = port {
        let _ = write!(s, " port {p}");
    }
    if let Some(sr) = &r.spec.src {
        let _ = write!(s, " from {}{}", if sr.neg { "not " } else { "" }, sr.value);
    }
    if !what.is_empty() {
        let _ = write!(s, " ({what})");
    }
    if let Some(n) = r.spec.match_value("nfacct", "--nfacct-name") {
        s.push_str(&nfacct_text(n, dst == Some("127.0.0.0/8")));
    }
    let _ = write!(s, " -> {}", r.spec.target_name().unwrap_or(""));
    s
}

/// What a `-m nfacct --nfacct-name N` match adds (spec §8.2: only counting).
fn nfacct_text(name: &str, localhost: bool) -> String {
    match name {
        "localhost_nps_accepted_pkts" if localhost => {
            ": localhost NodePort traffic, counted into nfacct localhost_nps_accepted_pkts \
             (kube-proxy >= 1.31 metric kubeproxy_iptables_localhost_nodeports_accepted_packets_total)"
                .to_string()
        }
        "ct_state_invalid_dropped_pkts" => {
            ", counted into nfacct ct_state_invalid_dropped_pkts (kube-proxy >= 1.31 \
             metric kubeproxy_iptables_ct_state_invalid_dropped_packets_total)"
                .to_string()
        }
        other => format!(", counted into nfacct {}", echo(other, 60)),
    }
}

pub(super) fn describe(g: &Graph) -> Vec<PortInfo> {
    let mut ports = Ports {
        list: Vec::new(),
        index: HashMap::new(),
        by_spn: HashMap::new(),
    };
    let gid: Vec<Option<usize>> = g
        .attrs
        .iter()
        .map(|a| a.group.as_deref().map(|k| ports.id(k)))
        .collect();
    for (i, n) in g.nodes.iter().enumerate() {
        if let Some(p) = gid[i] {
            ports.list[p].0.chains.push(n.name.to_string());
        }
    }
    for (ti, t) in g.rs.tables.iter().enumerate() {
        for (ci, c) in t.chains.iter().enumerate() {
            let own = g.node(ti, &c.name);
            let gc = own.and_then(|i| gid[i]);
            for (ri, r) in c.rules.iter().enumerate() {
                let tnode = g.target(ti, ci, ri);
                let gt = tnode.and_then(|j| gid[j]);
                let tkind = tnode.map_or("", |j| g.nodes[j].kind.id);
                match (gc, gt) {
                    (Some(p), _) => {
                        let kind = own.map_or("", |i| g.nodes[i].kind.id);
                        own_rule(&mut ports.list[p], &t.name, c, r, kind, tkind);
                    }
                    (None, Some(p)) => entry(&mut ports.list[p], &t.name, c, r, tkind),
                    (None, None) => shared_rule(&mut ports, &t.name, c, r),
                }
            }
        }
    }
    // Endpoint shares, chain by chain.
    for (i, n) in g.nodes.iter().enumerate() {
        let (Some(pi), Some(c)) = (gid[i], n.chain) else {
            continue;
        };
        if !matches!(n.kind.id, "svc" | "svl" | "xlb") {
            continue;
        }
        let (shares, rest) = shares(g, n.ti, c);
        let (p, acc) = &mut ports.list[pi];
        acc.local_chain |= n.kind.id != "svc";
        if n.kind.id == "svc" {
            p.endpoints = shares;
            p.unbalanced_remainder = rest;
        } else {
            p.local_endpoints = shares;
        }
    }
    let mut out: Vec<PortInfo> = ports
        .list
        .into_iter()
        .map(|(mut p, acc)| {
            finish(&mut p, acc);
            p
        })
        .collect();
    out.sort_unstable_by(|a, b| a.service_port.cmp(&b.service_port));
    out
}

fn finish(p: &mut PortInfo, acc: Acc) {
    if !acc.local.is_empty() {
        p.external_traffic_policy = Some("Local");
        p.policy_evidence.extend(acc.local);
    } else if !acc.cluster.is_empty() {
        p.external_traffic_policy = Some("Cluster");
        p.policy_evidence.extend(acc.cluster);
    }
    if acc.itp_local {
        p.internal_traffic_policy = Some("Local");
    } else if acc.itp_cluster {
        p.internal_traffic_policy = Some("Cluster");
    }
    if !acc.fw_targets.is_empty() || acc.fw_mark_drop || acc.fw_filter_drop {
        let to: Vec<&str> = {
            let mut v: Vec<&str> = acc.fw_targets.iter().copied().collect();
            v.sort_unstable();
            v
        };
        let form = if to.contains(&"ext") {
            "v1.24+ form: accepted sources go to KUBE-EXT"
        } else {
            "old form (before v1.24): accepted sources go straight to KUBE-SVC / KUBE-XLB"
        };
        let drop = if acc.fw_filter_drop {
            "other sources dropped by filter KUBE-PROXY-FIREWALL"
        } else if acc.fw_mark_drop {
            "other sources marked by KUBE-MARK-DROP (dropped by kubelet's KUBE-FIREWALL)"
        } else {
            "other sources fall through"
        };
        p.notes
            .push(format!("load-balancer firewall, {form}; {drop}"));
    }
    // Local vs remote: known when the dump holds a node-local chain with its rules.
    let local: HashSet<String> = p.local_endpoints.iter().map(|e| e.chain.clone()).collect();
    // v1.24+ eTP=Local without local endpoints: KUBE-EXT only routes pod and node
    // traffic to KUBE-SVC, there is no KUBE-SVL: every endpoint is remote.
    let has_local_chain = acc.local_chain || acc.ext_route_local && !acc.ext_to_svl;
    for e in &mut p.local_endpoints {
        e.local = Some(true);
    }
    if has_local_chain {
        for e in &mut p.endpoints {
            e.local = Some(local.contains(&e.chain));
        }
    }
    p.skewed = skewed(&p.endpoints) || skewed(&p.local_endpoints) || p.unbalanced_remainder > 1e-6;
    p.notes.dedup();
}

/// A shared chain (KUBE-SERVICES, KUBE-NODEPORTS, ...) jumping into the port's chains.
fn entry(p: &mut (PortInfo, Acc), table: &str, c: &Chain, r: &Rule, tkind: &str) {
    let (p, acc) = p;
    p.entries.push(entry_text(&c.name, r));
    let comment = r.spec.comment().unwrap_or("");
    let cluster_ip = comment.ends_with("cluster IP")
        || (comment.is_empty() || spn_of_comment(comment) == Some(comment))
            && c.name == "KUBE-SERVICES"
            && r.spec.dst.is_some();
    let ev = || rule_ref(table, &c.name, r);
    match tkind {
        "svl" if c.name == "KUBE-SERVICES" => acc.itp_local = true,
        "svc" if cluster_ip => acc.itp_cluster = true,
        "xlb" => acc.local.push(format!(
            "{} (jump to KUBE-XLB, releases before v1.24)",
            ev()
        )),
        // Before v1.24 node ports and external IPs jumped straight to KUBE-SVC.
        "svc"
            if c.name == "KUBE-NODEPORTS"
                || comment.ends_with("external IP")
                || comment.contains("loadbalancer IP") =>
        {
            acc.cluster.push(format!("{} (straight to KUBE-SVC)", ev()))
        }
        _ => {}
    }
}

/// A rule of one of the port's own chains.
fn own_rule(p: &mut (PortInfo, Acc), table: &str, c: &Chain, r: &Rule, kind: &str, tkind: &str) {
    let (p, acc) = p;
    let tg = r.spec.target_name().unwrap_or("");
    if let Some(s) = r.spec.match_value("recent", "--seconds") {
        p.affinity_timeout = s.parse().ok();
    }
    if matches!(tg, "DROP" | "REJECT") {
        p.rejects
            .push(format!("{table} {tg}: -A {} {}", c.name, r.text));
    }
    let ev = || rule_ref(table, &c.name, r);
    if tg == "KUBE-MARK-DROP" {
        let why = r.spec.comment().unwrap_or("");
        match kind {
            "fw" => acc.fw_mark_drop = true,
            "xlb" if why.contains("no local endpoints") => {
                p.rejects.push(format!(
                    "{table} DROP (KUBE-MARK-DROP, no local endpoints): -A {} {}",
                    c.name, r.text
                ));
            }
            _ => p.rejects.push(format!(
                "{table} DROP (KUBE-MARK-DROP): -A {} {}",
                c.name, r.text
            )),
        }
    }
    if tg == "MARK"
        && r.spec
            .target_value("--set-xmark")
            .is_some_and(|m| m.starts_with(V1_1_MASQ_MARK))
    {
        p.notes.push(if r.spec.src.is_some() {
            "hairpin: traffic from the endpoint to itself is marked for masquerading inline (MARK 0x4d415351 \"MASQ\", v1.1)".to_string()
        } else {
            format!("masquerade mark set inline (MARK 0x4d415351 \"MASQ\", v1.1) in {}", c.name)
        });
    }
    if tg == "KUBE-MARK-MASQ" {
        match (kind, &r.spec.src) {
            ("sep", Some(s)) if !s.neg => p
                .notes
                .push("hairpin: traffic from an endpoint to itself is masqueraded".to_string()),
            ("svc", Some(s)) if s.neg => p.notes.push(format!(
                "cluster IP traffic not from {} (the cluster CIDR) is masqueraded",
                s.value
            )),
            ("svc", None) if r.spec.dst.is_some() => p
                .notes
                .push("all cluster IP traffic is masqueraded (masqueradeAll)".to_string()),
            ("ext", _) | ("fw", _) | ("xlb", _) if src_type_local(r) => p
                .notes
                .push("external traffic from the node itself is masqueraded".to_string()),
            ("ext", _) | ("fw", _) if unconditional(r) => {
                p.notes.push("external traffic is masqueraded".to_string())
            }
            _ => {}
        }
    }
    match kind {
        "ext" => match tkind {
            "svl" => {
                acc.ext_to_svl = true;
                acc.local
                    .push(format!("{} (KUBE-EXT jumps to KUBE-SVL)", ev()))
            }
            "svc" if unconditional(r) => acc.cluster.push(format!(
                "{} (KUBE-EXT jumps to KUBE-SVC for all traffic)",
                ev()
            )),
            "svc" if src_type_local(r) => {
                acc.ext_route_local = true;
                acc.local.push(format!(
                    "{} (only pod and node-local traffic goes to KUBE-SVC)",
                    ev()
                ))
            }
            _ => {}
        },
        "xlb" if tkind != "sep" && acc.local.is_empty() => {
            acc.local.push(format!(
                "{}: KUBE-XLB chain (releases before v1.24)",
                c.name
            ));
        }
        "fw" => {
            if matches!(tkind, "svc" | "ext" | "xlb") {
                acc.fw_targets.insert(match tkind {
                    "svc" => "svc",
                    "ext" => "ext",
                    _ => "xlb",
                });
                if let Some(s) = r.spec.src.as_ref().filter(|s| !s.neg) {
                    p.source_ranges.push(s.value.to_string());
                }
                if tkind == "xlb" {
                    acc.local
                        .push(format!("{} (KUBE-FW jumps to KUBE-XLB)", ev()));
                }
            }
            if tg.is_empty()
                && r.spec
                    .comment()
                    .is_some_and(|x| x.contains("KUBE-PROXY-FIREWALL"))
            {
                acc.fw_filter_drop = true;
            }
        }
        _ => {}
    }
}

/// A rule of a shared chain that does not jump into a service port: REJECT/DROP rules
/// name their service port in the comment.
fn shared_rule(ports: &mut Ports, table: &str, c: &Chain, r: &Rule) {
    let tg = r.spec.target_name().unwrap_or("");
    if !matches!(tg, "DROP" | "REJECT") {
        return;
    }
    let Some(cm) = r.spec.comment() else {
        return;
    };
    let Some(spn) = spn_of_comment(cm) else {
        return;
    };
    let proto = r.spec.proto.as_ref().map(|p| p.value.as_str());
    let (p, acc) = ports.by_comment(spn, proto);
    p.rejects
        .push(format!("{table} {tg}: -A {} {}", c.name, r.text));
    if cm.ends_with("has no local endpoints") {
        acc.local.push(format!(
            "{} (DROP: externalTrafficPolicy=Local without local endpoints)",
            rule_ref(table, &c.name, r)
        ));
    }
    if cm.contains("traffic not accepted by KUBE-FW-") {
        acc.fw_filter_drop = true;
    }
}

/// Endpoint shares of new connections in a KUBE-SVC/SVL/XLB chain: each statistic rule
/// takes its probability of what earlier rules left; affinity (`--rcheck`) rules are
/// skipped, as they only catch returning clients.
fn shares(g: &Graph, ti: usize, c: &Chain) -> (Vec<EndpointShare>, f64) {
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
        let endpoint = g.node(ti, tg).and_then(|j| g.attrs[j].endpoint.clone());
        out.push(EndpointShare {
            endpoint,
            chain: tg.to_string(),
            probability: p,
            share: left * p,
            local: None,
        });
        left *= 1.0 - p;
    }
    (out, left)
}

fn skewed(s: &[EndpointShare]) -> bool {
    let max = s.iter().map(|e| e.share).fold(0.0, f64::max);
    let min = s.iter().map(|e| e.share).fold(1.0, f64::min);
    !s.is_empty() && max - min > 0.005
}

/// Node-wide facts: the masquerade mark and how marked packets leave.
pub(super) fn node_notes(g: &Graph) -> Vec<String> {
    let mut out = Vec::new();
    for t in &g.rs.tables {
        for c in &t.chains {
            let kube = c.name.starts_with("KUBE-");
            for r in &c.rules {
                let tg = r.spec.target_name().unwrap_or("");
                match (c.name.as_str(), tg) {
                    (_, "DROP")
                        if kube
                            && r.spec.match_value("conntrack", "--ctstate") == Some("INVALID") =>
                    {
                        let counted = r
                            .spec
                            .match_value("nfacct", "--nfacct-name")
                            .map(|n| nfacct_text(n, false))
                            .unwrap_or_else(|| " (not counted: the v1.30 form)".into());
                        out.push(format!(
                            "{} {}: packets of INVALID connections are dropped{counted}",
                            t.name, c.name
                        ));
                    }
                    ("KUBE-MARK-MASQ", "MARK") | ("KUBE-MARK-DROP", "MARK") => {
                        let m = r
                            .spec
                            .target_value("--set-xmark")
                            .or_else(|| r.spec.target_value("--or-mark"))
                            .unwrap_or("?");
                        out.push(format!("{} sets mark {m}", c.name));
                    }
                    (_, "MASQUERADE")
                        if kube
                            || r.spec
                                .comment()
                                .is_some_and(|x| x.starts_with("kubernetes")) =>
                    {
                        out.push(format!(
                            "{} {}: marked traffic is masqueraded{}",
                            t.name,
                            c.name,
                            if r.spec.target_has("--random-fully") {
                                " (--random-fully)"
                            } else {
                                ""
                            }
                        ));
                    }
                    (_, "SNAT") if kube || r.spec.find_match("mark").is_some() => {
                        out.push(format!(
                            "{} {}: traffic is SNATed to {} (kube-proxy writes MASQUERADE)",
                            t.name,
                            c.name,
                            r.spec.target_value("--to-source").unwrap_or("?")
                        ));
                    }
                    _ => {}
                }
            }
        }
    }
    out
}
