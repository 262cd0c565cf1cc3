//! Real-node-shaped variants of canonical dumps, made by text edits that do not use the
//! code under test: upstream's Go map order in the shared chains, chains in any order,
//! comments gone.
#![allow(dead_code)]

use std::collections::HashMap;

/// Deterministic xorshift64*.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

pub const SHARED: &[&str] = &[
    "KUBE-SERVICES",
    "KUBE-NODEPORTS",
    "KUBE-EXTERNAL-SERVICES",
    "KUBE-PROXY-FIREWALL",
];

const BUILTIN: &[&str] = &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// The chain of a `-A CHAIN ...` line (counters `[p:b]` allowed in front).
pub fn rule_chain(line: &str) -> Option<&str> {
    let mut w = line.split_whitespace();
    let mut first = w.next()?;
    if first.starts_with('[') {
        first = w.next()?;
    }
    (first == "-A").then(|| w.next()).flatten()
}

/// `ns/name:port proto` of a shared-chain rule from its comment's first word and `-p`;
/// `None` for the chain's unattributed rules (the NodePort catch-all).
pub fn port_key(line: &str) -> Option<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let c = words.iter().position(|w| *w == "--comment")?;
    let first = words.get(c + 1)?.trim_matches('"');
    if !first.contains('/') {
        return None;
    }
    let p = words.iter().position(|w| *w == "-p").map(|i| words[i + 1]);
    Some(format!("{first} {}", p.unwrap_or("?")))
}

/// Upstream's order on a live node: in every shared chain the service ports' blocks in
/// random order (each block's own order kept), the unattributed rules last; the order of
/// chain declarations and of the other chains' rule blocks shuffled too. Lines outside
/// `*table`/`COMMIT` (ensure form) are kept where they are.
pub fn shuffle_save(text: &str, seed: u64) -> String {
    let mut rng = Rng::new(seed);
    let mut out = String::with_capacity(text.len());
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if !line.starts_with('*') {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        out.push_str(line);
        out.push('\n');
        let mut decls_builtin = Vec::new();
        let mut decls = Vec::new();
        let mut order: Vec<String> = Vec::new();
        let mut rules: HashMap<String, Vec<&str>> = HashMap::new();
        let mut other = Vec::new();
        for l in lines.by_ref() {
            if l == "COMMIT" {
                break;
            }
            if let Some(d) = l.strip_prefix(':') {
                let name = d.split_whitespace().next().unwrap_or("");
                if BUILTIN.contains(&name) {
                    decls_builtin.push(l);
                } else {
                    decls.push(l);
                }
            } else if let Some(c) = rule_chain(l) {
                if !rules.contains_key(c) {
                    order.push(c.to_string());
                }
                rules.entry(c.to_string()).or_default().push(l);
            } else {
                other.push(l);
            }
        }
        rng.shuffle(&mut decls);
        let (mut builtin, mut user): (Vec<String>, Vec<String>) = order
            .into_iter()
            .partition(|c| BUILTIN.contains(&c.as_str()));
        rng.shuffle(&mut user);
        builtin.append(&mut user);
        for l in decls_builtin.iter().chain(decls.iter()).chain(other.iter()) {
            out.push_str(l);
            out.push('\n');
        }
        for c in builtin {
            let rs = &rules[&c];
            let rs = if SHARED.contains(&c.as_str()) {
                shuffle_blocks(rs, &mut rng)
            } else {
                rs.clone()
            };
            for l in rs {
                out.push_str(l);
                out.push('\n');
            }
        }
        out.push_str("COMMIT\n");
    }
    out
}

fn shuffle_blocks<'a>(rules: &[&'a str], rng: &mut Rng) -> Vec<&'a str> {
    let mut keys: Vec<String> = Vec::new();
    let mut blocks: HashMap<String, Vec<&str>> = HashMap::new();
    let mut tail = Vec::new();
    for l in rules {
        match port_key(l) {
            Some(k) => {
                if !blocks.contains_key(&k) {
                    keys.push(k.clone());
                }
                blocks.entry(k).or_default().push(l);
            }
            None => tail.push(*l),
        }
    }
    rng.shuffle(&mut keys);
    let mut out: Vec<&str> = keys.iter().flat_map(|k| blocks[k].clone()).collect();
    out.extend(tail);
    out
}

/// True when the shared chains' rule order differs between two texts.
pub fn shared_order_changed(a: &str, b: &str) -> bool {
    let pick = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| rule_chain(l).is_some_and(|c| SHARED.contains(&c)))
            .map(str::to_string)
            .collect()
    };
    pick(a) != pick(b)
}

/// Removes every `-m comment --comment X` (quoted or not), as large-cluster mode and
/// very old releases write per-service chains.
pub fn strip_comments(line: &str) -> String {
    let Some(i) = line.find(" -m comment --comment ") else {
        return line.to_string();
    };
    let rest = &line[i + " -m comment --comment ".len()..];
    let after = if let Some(r) = rest.strip_prefix('"') {
        let mut esc = false;
        let mut end = r.len();
        for (j, ch) in r.char_indices() {
            match ch {
                '\\' if !esc => esc = true,
                '"' if !esc => {
                    end = j + 1;
                    break;
                }
                _ => esc = false,
            }
        }
        &r[end..]
    } else {
        rest.find(' ').map(|j| &rest[j..]).unwrap_or("")
    };
    strip_comments(&format!("{}{after}", &line[..i]))
}

#[test]
fn shuffle_keeps_every_line() {
    let text = "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n\
        -A KUBE-SERVICES -d 10.0.0.1/32 -p tcp -m comment --comment \"a/x:p cluster IP\" -j KUBE-SVC-A\n\
        -A KUBE-SERVICES -d 10.0.0.2/32 -p tcp -m comment --comment \"b/y:p cluster IP\" -j KUBE-SVC-B\n\
        -A KUBE-SERVICES -d 10.0.0.3/32 -p tcp -m comment --comment \"c/z:p cluster IP\" -j KUBE-SVC-C\n\
        -A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n\
        COMMIT\n";
    let mut sorted_in: Vec<&str> = text.lines().collect();
    sorted_in.sort();
    let mut changed = false;
    for seed in 0..8 {
        let s = shuffle_save(text, seed);
        let mut sorted_out: Vec<&str> = s.lines().collect();
        sorted_out.sort();
        assert_eq!(sorted_in, sorted_out);
        assert!(s
            .lines()
            .nth(s.lines().count() - 2)
            .unwrap()
            .contains("KUBE-NODEPORTS"));
        changed |= shared_order_changed(text, &s);
    }
    assert!(changed);
    assert_eq!(
        strip_comments("-A X -s 1.2.3.4 -m comment --comment \"a \\\"b\\\" c\" -j Y"),
        "-A X -s 1.2.3.4 -j Y"
    );
    assert_eq!(
        strip_comments("-A X -m comment --comment a/b:c -j Y"),
        "-A X -j Y"
    );
}
