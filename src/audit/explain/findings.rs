//! Findings worth a human's attention, each with the rules that show it.

use super::{Explanation, Graph, OLD_FORM};
use crate::audit::norm::probability_fixed;
use crate::audit::parse::{echo, Chain, Rule};
use serde::Serialize;
use std::collections::HashMap;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Finding {
    /// Stable id: `absent-chain`, `five-decimal-probabilities`, `old-hash-input`,
    /// `no-comments`, `empty-service-chain`, `orphan-chain`, `unreferenced-sep`, `snat`,
    /// `comment-without-value`, `bad-probability`.
    pub id: &'static str,
    pub service_port: Option<String>,
    pub chain: Option<String>,
    pub message: String,
    /// The rules (or declarations) showing it: `table chain #n (line L): rule`.
    pub evidence: Vec<String>,
}

/// Longest rule text quoted as evidence; real rules are far shorter.
const EVIDENCE_MAX: usize = 300;

/// `nat KUBE-SVC-X #2 (line 14): -m ... -j KUBE-SEP-Y`, control characters escaped.
pub(crate) fn evidence(table: &str, chain: &str, r: &Rule) -> String {
    format!(
        "{table} {chain} (line {}): {}",
        r.line,
        echo(&r.text, EVIDENCE_MAX)
    )
}

/// At most this many rules are quoted per finding.
const MAX_EVIDENCE: usize = 5;

fn refs_evidence(g: &Graph, i: usize) -> Vec<String> {
    let n = &g.nodes[i];
    let t = &g.rs.tables[n.ti].name;
    let mut v: Vec<String> = n
        .refs
        .iter()
        .take(MAX_EVIDENCE)
        .map(|&(ci, ri)| {
            let (c, r) = g.rule(n.ti, ci, ri);
            evidence(t, &c.name, r)
        })
        .collect();
    if n.refs.len() > MAX_EVIDENCE {
        v.push(format!("... and {} more", n.refs.len() - MAX_EVIDENCE));
    }
    v
}

fn chain_evidence(table: &str, c: &Chain) -> Vec<String> {
    let mut v: Vec<String> = c
        .rules
        .iter()
        .take(MAX_EVIDENCE)
        .map(|r| evidence(table, &c.name, r))
        .collect();
    if c.rules.is_empty() {
        v.push(format!("{table} :{} (line {}), no rules", c.name, c.line));
    } else if c.rules.len() > MAX_EVIDENCE {
        v.push(format!(
            "... and {} more rules",
            c.rules.len() - MAX_EVIDENCE
        ));
    }
    v
}

pub(super) fn find(g: &Graph, ex: &Explanation) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut no_comments = 0usize;
    let mut recovered: HashMap<&'static str, usize> = HashMap::new();
    let mut no_comment_example = Vec::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let a = &g.attrs[i];
        let table = &g.rs.tables[n.ti].name;
        let Some(c) = n.chain else {
            if !n.refs.is_empty() {
                out.push(Finding {
                    id: "absent-chain",
                    service_port: a.label.clone(),
                    chain: Some(n.name.to_string()),
                    message: format!(
                        "{table} {} is jumped to but not in the dump (its own rules were not included)",
                        n.name
                    ),
                    evidence: refs_evidence(g, i),
                });
            }
            continue;
        };
        if !n.kind.hashed {
            continue;
        }
        if !c.rules.is_empty() && c.rules.iter().all(|r| r.spec.comment().is_none()) {
            no_comments += 1;
            *recovered.entry(a.source).or_default() += 1;
            if no_comment_example.is_empty() {
                no_comment_example = chain_evidence(table, c);
            }
        }
        let jumps_to_sep = c.rules.iter().any(|r| {
            r.spec
                .target_name()
                .is_some_and(|t| t.starts_with("KUBE-SEP-"))
        });
        let drops = c.rules.iter().any(|r| {
            matches!(
                r.spec.target_name(),
                Some("DROP" | "REJECT" | "KUBE-MARK-DROP")
            )
        });
        if matches!(n.kind.id, "svc" | "svl" | "xlb") && !jumps_to_sep && !drops {
            out.push(Finding {
                id: "empty-service-chain",
                service_port: a.group.clone(),
                chain: Some(n.name.to_string()),
                message: format!(
                    "{} has no endpoint rule: new connections fall through to the rule after the jump here",
                    n.name
                ),
                evidence: chain_evidence(table, c),
            });
        }
        if n.refs.is_empty() {
            let sep = n.kind.id == "sep";
            out.push(Finding {
                id: if sep { "unreferenced-sep" } else { "orphan-chain" },
                service_port: a.group.clone(),
                chain: Some(n.name.to_string()),
                message: format!(
                    "nothing in the dump jumps to {}{} (in a fragment the jumping rules may just be missing)",
                    n.name,
                    if sep { ": this endpoint gets no traffic" } else { "" }
                ),
                evidence: chain_evidence(table, c),
            });
        }
        for r in &c.rules {
            bad_values(table, c, r, a.group.as_deref(), &mut out);
        }
    }
    for t in &g.rs.tables {
        for c in &t.chains {
            let hashed = super::kinds::kind_of(&t.name, &c.name).is_some_and(|k| k.hashed);
            for r in &c.rules {
                if !hashed {
                    bad_values(&t.name, c, r, None, &mut out);
                }
                if r.spec.target_name() == Some("SNAT")
                    && (c.name.starts_with("KUBE-") || r.spec.find_match("mark").is_some())
                {
                    out.push(Finding {
                        id: "snat",
                        service_port: None,
                        chain: Some(c.name.clone()),
                        message: format!(
                            "SNAT to {} where kube-proxy writes MASQUERADE: replies only come back if that address stays this node's",
                            r.spec.target_value("--to-source").unwrap_or("?")
                        ),
                        evidence: vec![evidence(&t.name, &c.name, r)],
                    });
                }
            }
        }
    }
    if no_comments > 0 {
        let mut parts: Vec<String> = recovered
            .iter()
            .map(|(s, n)| format!("{n} {}", recovered_text(s)))
            .collect();
        parts.sort();
        out.push(Finding {
            id: "no-comments",
            service_port: None,
            chain: None,
            message: format!(
                "{no_comments} per-service chains carry no comments (large-cluster mode, over 1000 endpoints, or an old release): {}{}",
                parts.join(", "),
                if recovered.contains_key("unknown") {
                    "; chain hashes are one-way: pass --objects to recompute them for the rest"
                } else {
                    ""
                }
            ),
            evidence: no_comment_example,
        });
    }
    let mut old_by_port: HashMap<&str, Vec<&str>> = HashMap::new();
    for c in &ex.chains {
        if let (Some(OLD_FORM), Some(l)) = (c.hash_form, c.service_port.as_deref()) {
            old_by_port.entry(l).or_default().push(c.chain.as_str());
        }
    }
    for p in &ex.ports {
        five_decimals(g, p, &mut out);
        if let Some(old) = old_by_port.get(p.service_port.as_str()) {
            out.push(Finding {
                id: "old-hash-input",
                service_port: Some(p.service_port.clone()),
                chain: None,
                message: format!(
                    "chain names hash the old `ns/name:` input (releases before the service port name dropped the trailing colon): {} chain(s)",
                    old.len()
                ),
                evidence: old.iter().take(MAX_EVIDENCE).map(|s| s.to_string()).collect(),
            });
        }
    }
    out
}

fn recovered_text(source: &str) -> &'static str {
    match source {
        "objects" => "named from the objects",
        "hash" => "named and verified by their hash",
        "comment" | "jump comment" => "named from comments of jumping rules (hash not verified)",
        "sibling" => "named by a sibling chain with the same hash",
        "jump" => "named by the chain jumping to them",
        _ => "not named (grouped by hash only)",
    }
}

/// `--comment` without a value and `--probability` outside [0, 1] (iptables-restore
/// refuses both, so such a dump was edited or is not a real save).
fn bad_values(table: &str, c: &Chain, r: &Rule, group: Option<&str>, out: &mut Vec<Finding>) {
    for m in &r.spec.matches {
        for o in &m.opts {
            if m.name == "comment" && o.name == "--comment" && o.values.is_empty() {
                out.push(Finding {
                    id: "comment-without-value",
                    service_port: group.map(str::to_string),
                    chain: Some(c.name.clone()),
                    message: "--comment without a value (iptables-restore refuses this rule)"
                        .to_string(),
                    evidence: vec![evidence(table, &c.name, r)],
                });
            }
            if m.name == "statistic" && o.name == "--probability" {
                let ok = o
                    .values
                    .first()
                    .is_some_and(|v| probability_fixed(v).is_some());
                if !ok {
                    out.push(Finding {
                        id: "bad-probability",
                        service_port: group.map(str::to_string),
                        chain: Some(c.name.clone()),
                        message: format!(
                            "--probability {} is not a number in [0, 1] (iptables-restore refuses it; counted as 1 in the shares)",
                            echo(o.values.first().map_or("(none)", |v| v.as_str()), 40)
                        ),
                        evidence: vec![evidence(table, &c.name, r)],
                    });
                }
            }
        }
    }
}

/// Probabilities printed with 5 decimals (`%0.5f`, kube-proxy before v1.17): 1/(n-i)
/// rounded, so endpoint shares drift from an even split as endpoints grow.
fn five_decimals(g: &Graph, p: &super::PortInfo, out: &mut Vec<Finding>) {
    for (eps, title) in [
        (&p.endpoints, "endpoints"),
        (&p.local_endpoints, "local endpoints"),
    ] {
        let n = eps.len();
        if n < 3 {
            continue;
        }
        let mut five = 0;
        let mut exact = 0;
        for (i, e) in eps.iter().take(n - 1).enumerate() {
            let want = 1.0 / (n - i) as f64;
            let fixed = |s: String| probability_fixed(&s);
            let have = probability_fixed(&format!("{:.11}", e.probability));
            if have == fixed(format!("{want:.5}")) {
                five += 1;
            }
            if have == fixed(format!("{want:.10}")) {
                exact += 1;
            }
        }
        if five == n - 1 && exact < n - 1 {
            let min = eps.iter().map(|e| e.share).fold(1.0, f64::min);
            let max = eps.iter().map(|e| e.share).fold(0.0, f64::max);
            let chain = p
                .chains
                .iter()
                .find(|c| {
                    c.starts_with(if title == "endpoints" {
                        "KUBE-SVC-"
                    } else {
                        "KUBE-SV"
                    }) || c.starts_with("KUBE-XLB-")
                })
                .cloned();
            let ev = chain
                .as_deref()
                .and_then(|c| (0..g.rs.tables.len()).find_map(|ti| g.node(ti, c)))
                .and_then(|i| g.nodes[i].chain.map(|ch| (&g.nodes[i], ch)))
                .map(|(n, ch)| chain_evidence(&g.rs.tables[n.ti].name, ch))
                .unwrap_or_default();
            out.push(Finding {
                id: "five-decimal-probabilities",
                service_port: Some(p.service_port.clone()),
                chain,
                message: format!(
                    "{title}: probabilities rounded to 5 decimals (kube-proxy before v1.17): shares {:.4}%..{:.4}% of new connections instead of {:.4}% each (spread {:.4} points)",
                    min * 100.0,
                    max * 100.0,
                    100.0 / n as f64,
                    (max - min) * 100.0
                ),
                evidence: ev,
            });
        }
    }
}
