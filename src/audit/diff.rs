//! What a node has vs what kube-proxy should have written: per service port and for the
//! fixed chains.
//!
//! Only kube-proxy's chains are compared, plus, in every other chain, the rules that jump
//! into them: other software's rules (kubelet, CNI, Docker) are not ours (see [`owner`]).
//! In the chains all services share, only the order within one service port counts.

use super::attribute::Attributor;
pub use super::attribute::{comment_port, comment_spn, model_labels, port_label, Labels};
use super::norm::rule_hash;
use super::owner::{self, is_proxy_chain, is_shared_chain, Owner};
use super::parse::{Chain, Rule, Ruleset, Table};
use crate::model::Warnings;
use crate::offline::OfflineProxier;
use crate::rules::jumps;
use crate::source::objects::ObjectSet;
use serde::Serialize;
use similar::{capture_diff_slices, Algorithm, DiffOp};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

/// What the node should have.
pub struct Expected {
    pub rules: Ruleset,
    pub labels: Labels,
    /// The restore payload it was built from (empty from [`expected_state_lean`]).
    pub payload: String,
    /// Digests of the compared rules' normalized keys per (table, chain), computed once.
    keys: ChainKeys,
}

/// Key digests per table, then per chain.
type ChainKeys = HashMap<String, HashMap<String, Vec<u64>>>;

impl Expected {
    pub fn new(rules: Ruleset, labels: Labels, payload: String) -> Expected {
        let mut keys = ChainKeys::new();
        for t in &rules.tables {
            let per = keys.entry(t.name.clone()).or_default();
            for c in &t.chains {
                let side = Side::new(c, |_| true, None);
                per.insert(c.name.clone(), side.keys.into_owned());
            }
        }
        Expected {
            rules,
            labels,
            payload,
            keys,
        }
    }
}

/// Renders a full sync for `objects` and the jump rules, as a node would show them.
/// `proxier`: a fresh one (see [`OfflineProxier::new`]).
pub fn expected_state(
    mut proxier: OfflineProxier,
    objects: &ObjectSet,
    warn: &mut Warnings,
) -> Expected {
    let model = proxier.build_model(objects, warn);
    let labels = model_labels(&model);
    let payload = proxier.sync(model).output.payload;
    let rules = parse_expected(&payload);
    Expected::new(rules, labels, payload)
}

/// [`expected_state`] for a one-shot comparison: the objects are not leaked but freed as
/// soon as the model is built, and the payload once parsed (`payload` is left empty), so
/// neither is held at the peak.
pub fn expected_state_lean(
    mut proxier: OfflineProxier,
    objects: ObjectSet,
    warn: &mut Warnings,
) -> Expected {
    let model = proxier.build_model(&objects, warn);
    drop(objects);
    let labels = model_labels(&model);
    let payload = proxier.sync(model).output.payload;
    // The proxier keeps its record of the sync (for a next one): not needed here.
    drop(proxier);
    let rules = parse_expected(&payload);
    drop(payload);
    Expected::new(rules, labels, String::new())
}

fn parse_expected(payload: &str) -> Ruleset {
    let mut rules = Ruleset::default();
    rules
        .apply_save(&jumps::ensure_text())
        .expect("the ensure text is well-formed");
    rules
        .apply_save(payload)
        .expect("the renderer's payload is well-formed");
    rules
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    MissingRule,
    ExtraRule,
    DifferentRule,
    MovedRule,
    MissingChain,
    StaleChain,
    OrphanedChain,
    JumpToMissingChain,
}

impl Kind {
    pub fn text(self) -> &'static str {
        match self {
            Kind::MissingRule => "missing rule",
            Kind::ExtraRule => "extra rule",
            Kind::DifferentRule => "different rule",
            Kind::MovedRule => "rule out of order",
            Kind::MissingChain => "missing chain",
            Kind::StaleChain => "stale chain",
            Kind::OrphanedChain => "orphaned chain",
            Kind::JumpToMissingChain => "jump to missing chain",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: Kind,
    pub table: String,
    pub chain: String,
    /// The rule as kube-proxy would write it (`-A CHAIN ...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// The rule as the node has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<String>,
    /// Line of the live rule or chain in the dump.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub equal: bool,
    /// Rules compared on each side.
    pub expected_rules: usize,
    pub live_rules: usize,
    /// Findings per service port (`ns/name:port proto`); the fixed chains under `""`.
    pub groups: BTreeMap<String, Vec<Finding>>,
    /// Said once for the whole dump (e.g. that a newer kube-proxy wrote it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Report {
    pub fn findings(&self) -> impl Iterator<Item = (&str, &Finding)> {
        self.groups
            .iter()
            .flat_map(|(g, fs)| fs.iter().map(move |f| (g.as_str(), f)))
    }

    pub fn count(&self) -> usize {
        self.groups.values().map(Vec::len).sum()
    }

    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        if self.equal {
            let _ = writeln!(
                s,
                "equal: {} rules in KUBE chains and jumps match",
                self.expected_rules
            );
            return s;
        }
        for (g, fs) in &self.groups {
            let title = if g.is_empty() {
                "fixed chains".to_string()
            } else {
                format!("service port {g}")
            };
            let _ = writeln!(s, "{title}:");
            for f in fs {
                let at = f
                    .live_line
                    .map(|l| format!(" (live line {l})"))
                    .unwrap_or_default();
                let _ = writeln!(s, "  {} in {} {}{at}", f.kind.text(), f.table, f.chain);
                if let Some(d) = &f.detail {
                    let _ = writeln!(s, "      {d}");
                }
                if let Some(e) = &f.expected {
                    let _ = writeln!(s, "    - {e}");
                }
                if let Some(l) = &f.live {
                    let _ = writeln!(s, "    + {l}");
                }
            }
        }
        let _ = writeln!(
            s,
            "different: {} finding(s) in {} group(s)",
            self.count(),
            self.groups.len()
        );
        s
    }
}

/// Chains whose differences matter: kube-proxy's own (not kubelet's, a CNI's, a canary).
pub fn is_kube_chain(name: &str) -> bool {
    is_proxy_chain(name)
}

fn jumps_to_proxy(r: &Rule) -> bool {
    r.spec.target_name().is_some_and(is_proxy_chain)
}

fn rule_line(chain: &str, r: &Rule) -> String {
    format!("-A {chain} {}", r.text)
}

/// The compared rules of one chain (or of one service port's share of a chain).
struct Side<'a> {
    chain: &'a str,
    rules: Vec<&'a Rule>,
    /// [`rule_hash`] of each rule.
    keys: Cow<'a, [u64]>,
    /// 0-based position of each rule in its chain.
    pos: Vec<usize>,
}

impl<'a> Side<'a> {
    fn new(
        chain: &'a Chain,
        keep: impl Fn(&Rule) -> bool,
        cached: Option<&'a Vec<u64>>,
    ) -> Side<'a> {
        let mut rules = Vec::with_capacity(chain.rules.len());
        let mut pos = Vec::with_capacity(chain.rules.len());
        for (i, r) in chain.rules.iter().enumerate() {
            if keep(r) {
                rules.push(r);
                pos.push(i);
            }
        }
        let keys = match cached {
            Some(k) if k.len() == rules.len() => Cow::Borrowed(k.as_slice()),
            _ => {
                let mut buf = String::with_capacity(256);
                Cow::Owned(rules.iter().map(|r| rule_hash(&r.spec, &mut buf)).collect())
            }
        };
        Side {
            chain: &chain.name,
            rules,
            keys,
            pos,
        }
    }

    fn empty(chain: &'a str) -> Side<'a> {
        Side {
            chain,
            rules: Vec::new(),
            keys: Cow::Owned(Vec::new()),
            pos: Vec::new(),
        }
    }

    /// The rules at `idx` (indexes into this side).
    fn subset(&self, idx: &[usize]) -> Side<'a> {
        Side {
            chain: self.chain,
            rules: idx.iter().map(|&i| self.rules[i]).collect(),
            keys: Cow::Owned(idx.iter().map(|&i| self.keys[i]).collect()),
            pos: idx.iter().map(|&i| self.pos[i]).collect(),
        }
    }
}

/// Compares the node's rules (`live`) with what kube-proxy should have (`expected`).
/// A dump of a newer kube-proxy compared with v1.30 output (no nfacct rules expected) is
/// read in its v1.30 form first, with one note saying so.
pub fn diff(expected: &Expected, live: &Ruleset) -> Report {
    let mut report = Report::default();
    let adapted;
    let live = if owner::has_newer_rules(live) && !owner::has_newer_rules(&expected.rules) {
        let (v, note) = owner::to_v130(live);
        report.notes.extend(note.text());
        adapted = v;
        &adapted
    } else {
        live
    };
    let mut attr = Attributor::new(&expected.labels);
    let empty = Table::default();
    for et in &expected.rules.tables {
        let lt = live.table(&et.name).unwrap_or(&empty);
        attr.learn_live(lt);
        diff_table(et, lt, &expected.keys, &attr, &mut report);
    }
    report.equal = report.groups.is_empty();
    report
}

fn push(report: &mut Report, group: String, f: Finding) {
    report.groups.entry(group).or_default().push(f);
}

fn diff_table(et: &Table, lt: &Table, cache: &ChainKeys, attr: &Attributor, report: &mut Report) {
    let table = &et.name;
    let cache = cache.get(table);
    let mut seen = HashSet::new();
    let live_targets: HashSet<&str> = lt
        .chains
        .iter()
        .flat_map(|c| c.rules.iter())
        .filter_map(|r| r.spec.target_name())
        .collect();
    for ec in &et.chains {
        seen.insert(ec.name.as_str());
        let cached = cache.and_then(|c| c.get(&ec.name));
        let e = Side::new(ec, |_| true, cached);
        report.expected_rules += e.rules.len();
        let own = owner::owner(&ec.name);
        let Some(lc) = lt.chain(&ec.name) else {
            if own == Owner::Proxy {
                push(
                    report,
                    attr.chain(ec),
                    Finding {
                        kind: Kind::MissingChain,
                        table: table.clone(),
                        chain: ec.name.clone(),
                        expected: None,
                        live: None,
                        live_line: None,
                        detail: Some(format!("{} rule(s) expected", ec.rules.len())),
                    },
                );
            } else {
                unordered(table, &e, &Side::empty(&ec.name), attr, report);
            }
            continue;
        };
        if own == Owner::Proxy {
            let l = Side::new(lc, |_| true, None);
            report.live_rules += l.rules.len();
            if e.keys == l.keys {
                continue;
            }
            if is_shared_chain(&ec.name) {
                shared(table, &e, &l, attr, report);
            } else {
                ordered(table, &e, &l, attr, report);
            }
        } else {
            // Built-in or kubelet's chain: kube-proxy only ensures its rules are there;
            // the other rules are someone else's unless they jump into kube-proxy's chains.
            let want: HashSet<u64> = e.keys.iter().copied().collect();
            let l = keep_where(Side::new(lc, |_| true, None), |k, r| {
                want.contains(&k) || jumps_to_proxy(r)
            });
            report.live_rules += l.rules.len();
            unordered(table, &e, &l, attr, report);
        }
    }
    for lc in &lt.chains {
        if seen.contains(lc.name.as_str()) {
            continue;
        }
        if is_proxy_chain(&lc.name) {
            report.live_rules += lc.rules.len();
            let referenced = live_targets.contains(lc.name.as_str());
            push(
                report,
                attr.chain(lc),
                Finding {
                    kind: if referenced {
                        Kind::StaleChain
                    } else {
                        Kind::OrphanedChain
                    },
                    table: table.clone(),
                    chain: lc.name.clone(),
                    expected: None,
                    live: None,
                    live_line: (lc.line > 0).then_some(lc.line),
                    detail: Some(format!(
                        "{} rule(s){}",
                        lc.rules.len(),
                        if referenced {
                            ", still jumped to"
                        } else {
                            ", nothing jumps to it"
                        }
                    )),
                },
            );
        } else {
            // Another program's chain: only its jumps into our chains are ours.
            let l = Side::new(lc, jumps_to_proxy, None);
            if !l.rules.is_empty() {
                report.live_rules += l.rules.len();
                unordered(table, &Side::empty(&lc.name), &l, attr, report);
            }
        }
    }
    // Jumps the kernel could not follow (only possible in files, not live dumps).
    for lc in &lt.chains {
        let ours = is_proxy_chain(&lc.name);
        for r in &lc.rules {
            let Some(tg) = r.spec.target_name() else {
                continue;
            };
            if (ours && tg.starts_with("KUBE-") || is_proxy_chain(tg)) && !lt.has_chain(tg) {
                push(
                    report,
                    attr.rule(&lc.name, r),
                    Finding {
                        kind: Kind::JumpToMissingChain,
                        table: table.clone(),
                        chain: lc.name.clone(),
                        expected: None,
                        live: Some(rule_line(&lc.name, r)),
                        live_line: Some(r.line),
                        detail: Some(format!("{tg} does not exist")),
                    },
                );
            }
        }
    }
}

fn keep_where<'a>(s: Side<'a>, keep: impl Fn(u64, &Rule) -> bool) -> Side<'a> {
    let idx: Vec<usize> = (0..s.rules.len())
        .filter(|&i| keep(s.keys[i], s.rules[i]))
        .collect();
    if idx.len() == s.rules.len() {
        s
    } else {
        s.subset(&idx)
    }
}

fn finding(kind: Kind, table: &str, chain: &str, e: Option<&Rule>, l: Option<&Rule>) -> Finding {
    Finding {
        kind,
        table: table.to_string(),
        chain: chain.to_string(),
        expected: e.map(|r| rule_line(chain, r)),
        live: l.map(|r| rule_line(chain, r)),
        live_line: l.map(|r| r.line),
        detail: None,
    }
}

/// Emits a run of expected-only and live-only rules: identical rules on both sides are
/// "out of order", same-service pairs "different", the rest missing / extra. Linear: the
/// pairing goes through hash maps, not a scan per rule.
fn emit_run(
    table: &str,
    e: &Side,
    l: &Side,
    dels: &[usize],
    ins: &[usize],
    attr: &Attributor,
    report: &mut Report,
) {
    let mut used = vec![false; ins.len()];
    let mut by_key: HashMap<u64, Vec<usize>> = HashMap::new();
    for (j, &i) in ins.iter().enumerate().rev() {
        by_key.entry(l.keys[i]).or_default().push(j);
    }
    let mut out: Vec<(String, Finding)> = Vec::new();
    let mut unpaired_dels = Vec::new();
    for &d in dels {
        // Same rule elsewhere in the chain: moved.
        if let Some(j) = by_key.get_mut(&e.keys[d]).and_then(Vec::pop) {
            used[j] = true;
            let mut f = finding(
                Kind::MovedRule,
                table,
                e.chain,
                Some(e.rules[d]),
                Some(l.rules[ins[j]]),
            );
            f.detail = Some(format!(
                "expected at position {}, found at {}",
                e.pos[d] + 1,
                l.pos[ins[j]] + 1
            ));
            out.push((attr.rule(e.chain, e.rules[d]), f));
        } else {
            unpaired_dels.push(d);
        }
    }
    let mut by_group: HashMap<String, Vec<usize>> = HashMap::new();
    if !unpaired_dels.is_empty() {
        for (j, &i) in ins.iter().enumerate().rev() {
            if !used[j] {
                by_group
                    .entry(attr.rule(l.chain, l.rules[i]))
                    .or_default()
                    .push(j);
            }
        }
    }
    for d in unpaired_dels {
        let group = attr.rule(e.chain, e.rules[d]);
        match by_group.get_mut(&group).and_then(Vec::pop) {
            Some(j) => {
                used[j] = true;
                out.push((
                    group,
                    finding(
                        Kind::DifferentRule,
                        table,
                        e.chain,
                        Some(e.rules[d]),
                        Some(l.rules[ins[j]]),
                    ),
                ));
            }
            None => out.push((
                group,
                finding(Kind::MissingRule, table, e.chain, Some(e.rules[d]), None),
            )),
        }
    }
    for (j, &i) in ins.iter().enumerate() {
        if !used[j] {
            out.push((
                attr.rule(l.chain, l.rules[i]),
                finding(Kind::ExtraRule, table, l.chain, None, Some(l.rules[i])),
            ));
        }
    }
    for (g, f) in out {
        push(report, g, f);
    }
}

fn ordered(table: &str, e: &Side, l: &Side, attr: &Attributor, report: &mut Report) {
    let ops = capture_diff_slices(Algorithm::Myers, &e.keys[..], &l.keys[..]);
    let mut dels = Vec::new();
    let mut ins = Vec::new();
    for op in ops {
        match op {
            DiffOp::Equal { .. } => {}
            DiffOp::Delete {
                old_index, old_len, ..
            } => dels.extend(old_index..old_index + old_len),
            DiffOp::Insert {
                new_index, new_len, ..
            } => ins.extend(new_index..new_index + new_len),
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => {
                dels.extend(old_index..old_index + old_len);
                ins.extend(new_index..new_index + new_len);
            }
        }
    }
    // One run per chain: a moved rule shows as a delete and an insert far apart.
    emit_run(table, e, l, &dels, &ins, attr, report);
}

/// Jump rules in built-in and foreign chains: kube-proxy only ensures they exist (set
/// semantics: kubelet ensuring the same jump is not a second rule to report).
fn unordered(table: &str, e: &Side, l: &Side, attr: &Attributor, report: &mut Report) {
    let live: HashSet<u64> = l.keys.iter().copied().collect();
    let want: HashSet<u64> = e.keys.iter().copied().collect();
    let dels: Vec<usize> = (0..e.keys.len())
        .filter(|&i| !live.contains(&e.keys[i]))
        .collect();
    let ins: Vec<usize> = (0..l.keys.len())
        .filter(|&i| !want.contains(&l.keys[i]))
        .collect();
    emit_run(table, e, l, &dels, &ins, attr, report);
}

/// A chain every service port writes into: compared per service port, in order within
/// each; unattributed rules (the NodePort catch-all) as a set, and the catch-all last.
fn shared(table: &str, e: &Side, l: &Side, attr: &Attributor, report: &mut Report) {
    let mut groups: Vec<(String, Vec<usize>, Vec<usize>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (side, n) in [(e, 0), (l, 1)] {
        for (i, r) in side.rules.iter().enumerate() {
            let g = attr.rule(side.chain, r);
            let at = *index.entry(g.clone()).or_insert_with(|| {
                groups.push((g, Vec::new(), Vec::new()));
                groups.len() - 1
            });
            if n == 0 {
                groups[at].1.push(i);
            } else {
                groups[at].2.push(i);
            }
        }
    }
    for (g, ei, li) in &groups {
        let (es, ls) = (e.subset(ei), l.subset(li));
        if es.keys == ls.keys {
            continue;
        }
        if g.is_empty() {
            unordered(table, &es, &ls, attr, report);
        } else {
            ordered(table, &es, &ls, attr, report);
        }
    }
    if table == "nat" && e.chain == "KUBE-SERVICES" {
        catch_all_last(table, e, l, report);
    }
}

fn is_catch_all(r: &Rule) -> bool {
    r.spec.target_name() == Some("KUBE-NODEPORTS")
}

/// `KUBE-SERVICES`' jumps to `KUBE-NODEPORTS` match any port on a node address, so they
/// must follow every service rule (upstream: "this must be the last rule in this chain").
fn catch_all_last(table: &str, e: &Side, l: &Side, report: &mut Report) {
    let Some(first) = l.rules.iter().position(|r| is_catch_all(r)) else {
        return;
    };
    let after: Vec<usize> = (first + 1..l.rules.len())
        .filter(|&i| !is_catch_all(l.rules[i]))
        .collect();
    if after.is_empty() {
        return;
    }
    let expected = e
        .rules
        .iter()
        .position(|r| is_catch_all(r))
        .map(|i| e.rules[i]);
    let mut f = finding(
        Kind::MovedRule,
        table,
        l.chain,
        expected,
        Some(l.rules[first]),
    );
    f.detail = Some(format!(
        "the NodePort catch-all must be the last rule(s) of KUBE-SERVICES; {} rule(s) follow it, \
         first at position {}",
        after.len(),
        l.pos[after[0]] + 1
    ));
    push(report, String::new(), f);
}
