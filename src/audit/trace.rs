//! `trace`: the first packet of a new connection walked through a dump's nat and filter
//! chains the way netfilter would, with every random branch followed (and weighted).
//!
//! The walk is depth-first over one shared path, so a fan-out costs its branches, not
//! branches × path length. Branches ending alike (same verdict, DNAT target, masquerading
//! and delivery) are merged into one outcome whose probabilities add up; only the most
//! likely path of each printed outcome is kept. A chain jumped to while already on the
//! current path is a loop outcome at once, and a rule-evaluation budget bounds the rest.

use super::parse::{Rule, Ruleset, Table};
use super::trace_match::{apply_mark, eval, split_host_port, Env, Hit, State};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

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

/// Rule evaluations per trace: a real dump needs a dozen or so per endpoint of the service
/// traced; a hostile one ends with an "unknown" outcome instead of hanging.
pub const BUDGET: usize = 2_000_000;
/// Longest path kept per outcome: its first and last `PATH_KEEP` steps.
const PATH_KEEP: usize = 100;

#[derive(Clone, Debug)]
pub struct TraceOptions {
    /// Start in this chain (nat, else filter) instead of the built-in entry chain.
    pub start_chain: Option<String>,
    /// Outcomes listed in full (most likely first); the rest are summed up.
    pub max_outcomes: usize,
    pub budget: usize,
}

impl Default for TraceOptions {
    fn default() -> Self {
        TraceOptions {
            start_chain: None,
            max_outcomes: usize::MAX,
            budget: BUDGET,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TraceError {
    #[error("chain {0} is not in the dump's nat or filter table")]
    NoChain(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    pub table: String,
    pub chain: String,
    /// 1-based position of the rule in its chain (0 = the chain's policy or an elision).
    pub rule: usize,
    pub text: String,
    pub why: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Verdict {
    #[serde(rename = "ACCEPT")]
    Accept,
    #[serde(rename = "DROP")]
    Drop,
    #[serde(rename = "REJECT")]
    Reject(String),
    /// A jump back to a chain already on the path: `A -> B -> A`.
    #[serde(rename = "loop")]
    Loop(String),
    /// The walk cannot go on (a chain not in the dump, an unmodelled target, the budget).
    #[serde(rename = "unknown")]
    Unknown(String),
}

#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// Sum over every path ending in this outcome.
    pub probability: f64,
    pub verdict: Verdict,
    /// Destination after DNAT, if any (`ip:port`).
    pub dnat: Option<String>,
    pub masquerade: bool,
    /// `local` (delivered to the node) or `forward` (routed on).
    pub delivery: &'static str,
    /// How many paths end here.
    pub paths: u64,
    /// The most likely of those paths.
    pub path: Vec<Step>,
    pub notes: Vec<String>,
}

/// Outcomes past `max_outcomes`, summed.
#[derive(Clone, Debug, Serialize)]
pub struct More {
    pub outcomes: usize,
    pub probability: f64,
    pub paths: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Trace {
    pub packet: Packet,
    /// Where the walk started, e.g. `nat PREROUTING`.
    pub start: String,
    pub notes: Vec<String>,
    pub outcomes: Vec<Outcome>,
    pub more: Option<More>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hook {
    NatPre,
    NatOut,
    FilterIn,
    FilterFwd,
    FilterOut,
    NatPost,
}

impl Hook {
    fn table(self) -> &'static str {
        match self {
            Hook::NatPre | Hook::NatOut | Hook::NatPost => "nat",
            _ => "filter",
        }
    }

    fn chain(self) -> &'static str {
        match self {
            Hook::NatPre => "PREROUTING",
            Hook::NatOut | Hook::FilterOut => "OUTPUT",
            Hook::FilterIn => "INPUT",
            Hook::FilterFwd => "FORWARD",
            Hook::NatPost => "POSTROUTING",
        }
    }
}

/// One step of a path, worded only when printed (the state says how it read the packet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rec {
    Rule { t: u32, c: u32, r: u32, st: State },
    Policy { t: u32, c: u32 },
    Gap(usize),
}

#[derive(Clone, Copy, Debug)]
struct Frame {
    c: u32,
    next: u32,
    /// Entered with `-g`: returning from it returns from the chain that went there too.
    goto: bool,
}

/// A branch waiting to be walked (the miss side of a random rule).
struct Cont {
    prob: f64,
    st: State,
    hook: Hook,
    /// Inside `hook`'s table (else about to enter it).
    entered: bool,
    frames: Vec<Frame>,
    path_len: usize,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    verdict: Verdict,
    dnat: Option<(IpAddr, u16)>,
    masq: bool,
    delivery: &'static str,
}

struct Agg {
    prob: f64,
    paths: u64,
    first: usize,
    best_prob: f64,
    best: Option<Vec<Rec>>,
}

/// Which outcomes keep a path: all until there are more than can be printed, then
/// (second walk) only the ones printed.
enum Keep {
    All,
    None,
    Only(HashSet<Key>),
}

struct Walker<'a> {
    rs: &'a Ruleset,
    env: Env<'a>,
    from_node: bool,
    max: usize,
    budget: usize,
    keep: Keep,
    work: Vec<Cont>,
    path: Vec<Rec>,
    aggs: HashMap<Key, Agg>,
    notes: Vec<String>,
}

impl<'a> Walker<'a> {
    fn table_idx(&self, name: &str) -> Option<u32> {
        self.rs
            .tables
            .iter()
            .position(|t| t.name == name)
            .map(|i| i as u32)
    }

    fn table(&self, t: u32) -> &'a Table {
        &self.rs.tables[t as usize]
    }

    fn chain_idx(&self, t: u32, name: &str) -> Option<u32> {
        self.table(t).chain_index(name).map(|i| i as u32)
    }

    fn note(&mut self, n: String) {
        if !self.notes.contains(&n) {
            self.notes.push(n);
        }
    }

    fn run(&mut self, first: Cont) {
        self.work.push(first);
        while let Some(c) = self.work.pop() {
            self.path.truncate(c.path_len);
            self.walk(c);
        }
    }

    fn leaf(&mut self, b: &Cont, verdict: Verdict, delivery: &'static str) {
        let key = Key {
            verdict,
            dnat: b.st.dnat.then_some((b.st.dst, b.st.dport)),
            masq: b.st.masq,
            delivery,
        };
        let n = self.aggs.len();
        let keep_all = matches!(self.keep, Keep::All);
        if keep_all && n >= self.max && !self.aggs.contains_key(&key) {
            // More outcomes than are printed: which ones is known only at the end.
            self.keep = Keep::None;
            for a in self.aggs.values_mut() {
                a.best = None;
            }
        }
        let keep = match &self.keep {
            Keep::All => true,
            Keep::None => false,
            Keep::Only(s) => s.contains(&key),
        };
        let a = self.aggs.entry(key).or_insert(Agg {
            prob: 0.0,
            paths: 0,
            first: n,
            best_prob: -1.0,
            best: None,
        });
        a.prob += b.prob;
        a.paths += 1;
        if keep && b.prob > a.best_prob {
            a.best_prob = b.prob;
            a.best = Some(compact(&self.path));
        }
    }

    /// The hook after `h` for a packet now headed to `dst`; `None` when it is delivered.
    fn next_hook(&self, h: Hook, st: &State) -> Option<Hook> {
        let local = self.env.is_local(&st.dst);
        match (self.from_node, h) {
            (false, Hook::NatPre) if local => Some(Hook::FilterIn),
            (false, Hook::NatPre) => Some(Hook::FilterFwd),
            (false, Hook::FilterFwd) => Some(Hook::NatPost),
            (true, Hook::NatOut) => Some(Hook::FilterOut),
            (true, Hook::FilterOut) => Some(Hook::NatPost),
            (true, Hook::NatPost) if local => Some(Hook::FilterIn),
            _ => None,
        }
    }

    /// The branch is done with its hook: on to the next one, or delivered.
    fn hook_done(&mut self, b: &mut Cont) -> bool {
        match self.next_hook(b.hook, &b.st) {
            Some(h) => {
                b.hook = h;
                b.entered = false;
                b.frames.clear();
                true
            }
            None => {
                let delivery = if b.hook == Hook::FilterIn {
                    "local"
                } else {
                    "forward"
                };
                self.leaf(b, Verdict::Accept, delivery);
                false
            }
        }
    }

    /// Returns from the current chain (end of chain or RETURN); `false` when the branch ended.
    fn ret(&mut self, b: &mut Cont) -> bool {
        while let Some(f) = b.frames.pop() {
            if !f.goto {
                break;
            }
        }
        if !b.frames.is_empty() {
            return true;
        }
        // Off the end of the hook's chain: its policy.
        let t = self.table_idx(b.hook.table());
        let policy = t.and_then(|t| {
            let c = self.chain_idx(t, b.hook.chain())?;
            let p = self.table(t).chains[c as usize].policy.as_deref()?;
            (p == "DROP").then_some((t, c))
        });
        if let Some((t, c)) = policy {
            self.path.push(Rec::Policy { t, c });
            self.leaf(b, Verdict::Drop, "forward");
            return false;
        }
        self.hook_done(b)
    }

    /// Walks one branch to its end, leaving its random misses on the work stack.
    fn walk(&mut self, mut b: Cont) {
        loop {
            if !b.entered {
                b.entered = true;
                let name = b.hook.table();
                let Some(t) = self.table_idx(name) else {
                    self.note(format!(
                        "no {name} table in the dump: {name} {} taken as empty (policy ACCEPT)",
                        b.hook.chain()
                    ));
                    if !self.hook_done(&mut b) {
                        return;
                    }
                    continue;
                };
                let Some(c) = self.chain_idx(t, b.hook.chain()) else {
                    self.note(format!(
                        "{name} {} is not in the dump: taken as empty (policy ACCEPT)",
                        b.hook.chain()
                    ));
                    if !self.hook_done(&mut b) {
                        return;
                    }
                    continue;
                };
                b.frames.push(Frame {
                    c,
                    next: 0,
                    goto: false,
                });
            }
            let t = self.table_idx(b.hook.table()).expect("entered table");
            let tb = self.table(t);
            let f = *b.frames.last().expect("a frame while entered");
            let chain = &tb.chains[f.c as usize];
            if f.next as usize >= chain.rules.len() {
                if !self.ret(&mut b) {
                    return;
                }
                continue;
            }
            if self.budget == 0 {
                let v = Verdict::Unknown("evaluation budget exhausted".into());
                self.leaf(&b, v, "forward");
                return;
            }
            self.budget -= 1;
            b.frames.last_mut().expect("frame").next += 1;
            let r = &chain.rules[f.next as usize];
            match eval(&self.env, r, &b.st, None) {
                Hit::No => continue,
                Hit::Yes => {}
                Hit::Split(p) => {
                    let miss = b.prob * (1.0 - p);
                    if miss > 0.0 {
                        self.budget = self.budget.saturating_sub(b.frames.len());
                        self.work.push(Cont {
                            prob: miss,
                            st: b.st,
                            hook: b.hook,
                            entered: true,
                            frames: b.frames.clone(),
                            path_len: self.path.len(),
                        });
                    }
                    b.prob *= p;
                    if b.prob <= 0.0 {
                        return;
                    }
                }
            }
            self.path.push(Rec::Rule {
                t,
                c: f.c,
                r: f.next,
                st: b.st,
            });
            if !self.target(&mut b, tb, r) {
                return;
            }
        }
    }

    /// Applies a matched rule's target; `false` when the branch ended.
    fn target(&mut self, b: &mut Cont, tb: &Table, r: &Rule) -> bool {
        let target = r.spec.target.as_ref();
        let name = target.map(|t| t.name.as_str()).unwrap_or("");
        match name {
            "" => true,
            "RETURN" => self.ret(b),
            "ACCEPT" => self.hook_done(b),
            "DROP" => {
                self.leaf(b, Verdict::Drop, "forward");
                false
            }
            "REJECT" => {
                let with = r
                    .spec
                    .target_value("--reject-with")
                    .unwrap_or("icmp-port-unreachable");
                self.leaf(b, Verdict::Reject(with.into()), "forward");
                false
            }
            "DNAT" => {
                if let Some((ip, port)) = r
                    .spec
                    .target_value("--to-destination")
                    .and_then(split_host_port)
                {
                    b.st.dst = ip;
                    if let Some(p) = port {
                        b.st.dport = p;
                    }
                }
                b.st.dnat = true;
                self.hook_done(b)
            }
            "MASQUERADE" | "SNAT" => {
                b.st.masq = true;
                self.hook_done(b)
            }
            "MARK" => {
                b.st.mark = apply_mark(b.st.mark, r);
                true
            }
            _ if tb.has_chain(name) => {
                let t = self.table_idx(&tb.name).expect("own table");
                let c = self.chain_idx(t, name).expect("has_chain");
                if let Some(pos) = b.frames.iter().position(|f| f.c == c) {
                    let via: Vec<&str> = b.frames[pos..]
                        .iter()
                        .map(|f| tb.chains[f.c as usize].name.as_str())
                        .chain([name])
                        .collect();
                    let v = format!("chain {name} jumps back to itself via {}", via.join(" -> "));
                    self.leaf(b, Verdict::Loop(v), "forward");
                    return false;
                }
                b.frames.push(Frame {
                    c,
                    next: 0,
                    goto: target.is_some_and(|t| t.goto),
                });
                true
            }
            _ if NON_TERMINATING.contains(&name) => true,
            _ if UNMODELLED.contains(&name) => {
                let v = format!("target {name} is not modelled by trace");
                self.leaf(b, Verdict::Unknown(v), "forward");
                false
            }
            _ => {
                let v = format!("chain {name} not in the dump");
                self.leaf(b, Verdict::Unknown(v), "forward");
                false
            }
        }
    }

    /// Words a kept path.
    fn steps(&self, recs: &[Rec]) -> Vec<Step> {
        recs.iter().map(|r| self.step(r)).collect()
    }

    fn step(&self, rec: &Rec) -> Step {
        match *rec {
            Rec::Rule { t, c, r, st } => {
                let tb = self.table(t);
                let chain = &tb.chains[c as usize];
                let rule = &chain.rules[r as usize];
                let mut why = Vec::new();
                let _ = eval(&self.env, rule, &st, Some(&mut why));
                let mut why = if why.is_empty() {
                    "matches everything".to_string()
                } else {
                    why.join(", ")
                };
                if let Some(t) = rule.spec.target_name() {
                    if NON_TERMINATING.contains(&t) {
                        why.push_str(&format!("; {t} does not end the walk"));
                    }
                }
                Step {
                    table: tb.name.clone(),
                    chain: chain.name.clone(),
                    rule: r as usize + 1,
                    text: rule.text.clone(),
                    why,
                }
            }
            Rec::Policy { t, c } => Step {
                table: self.table(t).name.clone(),
                chain: self.table(t).chains[c as usize].name.clone(),
                rule: 0,
                text: "policy DROP".into(),
                why: "end of chain".into(),
            },
            Rec::Gap(n) => Step {
                table: String::new(),
                chain: String::new(),
                rule: 0,
                text: format!("... {n} steps left out ..."),
                why: String::new(),
            },
        }
    }
}

/// Targets that let the packet go on to the next rule.
const NON_TERMINATING: &[&str] = &[
    "LOG",
    "NFLOG",
    "ULOG",
    "TRACE",
    "CONNMARK",
    "CT",
    "NOTRACK",
    "CLASSIFY",
    "DSCP",
    "TOS",
    "TTL",
    "HL",
    "TCPMSS",
    "SECMARK",
    "CONNSECMARK",
    "AUDIT",
    "CHECKSUM",
    "IDLETIMER",
    "LED",
    "RATEEST",
    "SET",
    "TEE",
];

/// Targets that decide the packet's fate in ways trace does not follow.
const UNMODELLED: &[&str] = &[
    "REDIRECT", "NETMAP", "NFQUEUE", "QUEUE", "TPROXY", "SYNPROXY",
];

/// A path kept whole up to `2 * PATH_KEEP` steps, else its two ends around a gap.
fn compact(path: &[Rec]) -> Vec<Rec> {
    if path.len() <= 2 * PATH_KEEP {
        return path.to_vec();
    }
    let mut v = path[..PATH_KEEP].to_vec();
    v.push(Rec::Gap(path.len() - 2 * PATH_KEEP));
    v.extend_from_slice(&path[path.len() - PATH_KEEP..]);
    v
}

/// Traces `pkt` through `rs` from the built-in entry chain (or nat KUBE-SERVICES when the
/// dump has no entry chain). `node_ips` are the addresses `addrtype LOCAL` matches
/// (loopback always does). Every outcome is listed.
pub fn trace(rs: &Ruleset, pkt: &Packet, node_ips: &[IpAddr]) -> Trace {
    trace_with(rs, pkt, node_ips, &TraceOptions::default()).expect("no start chain given")
}

/// [`trace`] with a start chain, an outcome cap and a budget.
pub fn trace_with(
    rs: &Ruleset,
    pkt: &Packet,
    node_ips: &[IpAddr],
    opts: &TraceOptions,
) -> Result<Trace, TraceError> {
    let mut w = Walker {
        rs,
        env: Env {
            src: pkt.src,
            proto: &pkt.proto,
            node_ips,
        },
        from_node: pkt.from_node,
        max: opts.max_outcomes.max(1),
        budget: opts.budget,
        keep: Keep::All,
        work: Vec::new(),
        path: Vec::new(),
        aggs: HashMap::new(),
        notes: Vec::new(),
    };
    let st = State {
        dst: pkt.dst,
        dport: pkt.dport,
        mark: 0,
        dnat: false,
        masq: false,
    };
    let entry = if pkt.from_node {
        Hook::NatOut
    } else {
        Hook::NatPre
    };
    let mut first = Cont {
        prob: 1.0,
        st,
        hook: entry,
        entered: false,
        frames: Vec::new(),
        path_len: 0,
    };
    let nat = w.table_idx("nat");
    let find = |w: &Walker, t: Option<u32>, name: &str| t.and_then(|t| w.chain_idx(t, name));
    let start_in = |first: &mut Cont, hook: Hook, c: u32| {
        first.hook = hook;
        first.entered = true;
        first.frames.push(Frame {
            c,
            next: 0,
            goto: false,
        });
    };
    let mut start = format!("nat {}", entry.chain());
    match &opts.start_chain {
        Some(name) => {
            if let Some(c) = find(&w, nat, name) {
                start_in(&mut first, entry, c);
                start = format!("nat {name}");
            } else if let Some(c) = find(&w, w.table_idx("filter"), name) {
                // A filter chain: no nat entry hook before it.
                let hook = match (pkt.from_node, w.env.is_local(&pkt.dst)) {
                    (true, _) => Hook::FilterOut,
                    (false, true) => Hook::FilterIn,
                    (false, false) => Hook::FilterFwd,
                };
                start_in(&mut first, hook, c);
                start = format!("filter {name}");
            } else {
                return Err(TraceError::NoChain(name.clone()));
            }
        }
        None => {
            let services = find(&w, nat, "KUBE-SERVICES");
            if let (None, Some(c)) = (find(&w, nat, entry.chain()), services) {
                w.note(format!(
                    "nat {} is not in the dump: tracing from nat KUBE-SERVICES \
                     (kube-proxy's entry chain)",
                    entry.chain()
                ));
                start_in(&mut first, entry, c);
                start = "nat KUBE-SERVICES".into();
            }
        }
    }
    let again = Cont {
        frames: first.frames.clone(),
        ..first
    };
    w.run(first);
    let mut order = sorted(&w.aggs);
    if matches!(w.keep, Keep::None) {
        // Walk again, keeping the paths of the outcomes that are printed.
        let chosen: HashSet<Key> = order.iter().take(w.max).map(|(k, _)| k.clone()).collect();
        w.keep = Keep::Only(chosen);
        w.aggs.clear();
        w.budget = opts.budget;
        w.run(again);
        order = sorted(&w.aggs);
    }
    let mut outcomes = Vec::new();
    let mut more: Option<More> = None;
    for (i, (k, _)) in order.iter().enumerate() {
        let a = &w.aggs[k];
        if i >= w.max {
            let m = more.get_or_insert(More {
                outcomes: 0,
                probability: 0.0,
                paths: 0,
            });
            m.outcomes += 1;
            m.probability += a.prob;
            m.paths += a.paths;
            continue;
        }
        outcomes.push(Outcome {
            probability: a.prob,
            verdict: k.verdict.clone(),
            dnat: k.dnat.map(|(ip, port)| host_port(ip, port)),
            masquerade: k.masq,
            delivery: k.delivery,
            paths: a.paths,
            path: w.steps(a.best.as_deref().unwrap_or(&[])),
            notes: outcome_notes(&k.verdict, opts.budget),
        });
    }
    Ok(Trace {
        packet: pkt.clone(),
        start,
        notes: w.notes,
        outcomes,
        more,
    })
}

/// Most likely first; ties by DNAT target, then by discovery.
fn sorted(aggs: &HashMap<Key, Agg>) -> Vec<(Key, f64)> {
    let mut v: Vec<(&Key, &Agg)> = aggs.iter().collect();
    // Rounded so that float noise between equal shares does not reorder them.
    let q = |p: f64| (p * 1e12).round();
    v.sort_by(|(ka, a), (kb, b)| {
        q(b.prob)
            .total_cmp(&q(a.prob))
            .then_with(|| ka.dnat.cmp(&kb.dnat))
            .then_with(|| a.first.cmp(&b.first))
    });
    v.into_iter().map(|(k, a)| (k.clone(), a.prob)).collect()
}

fn host_port(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V6(a) => format!("[{a}]:{port}"),
        IpAddr::V4(a) => format!("{a}:{port}"),
    }
}

fn outcome_notes(v: &Verdict, budget: usize) -> Vec<String> {
    match v {
        Verdict::Loop(_) => vec![
            "netfilter refuses to load rules with a loop (iptables-nft-restore: \"Too many \
             links\"; iptables-legacy-restore fails at COMMIT), so no node runs this dump"
                .into(),
        ],
        Verdict::Unknown(u) if u.starts_with("evaluation budget") => vec![format!(
            "the walk stops after {budget} rule evaluations; these branches were not followed"
        )],
        Verdict::Unknown(u) if u.starts_with("chain ") => {
            vec!["trace a dump that holds the chain to follow it".into()]
        }
        _ => Vec::new(),
    }
}
