//! The restart compare (`sync::restart_diff`) over both upstream corpora: each case's
//! restore payload against the kernel's listing of the state it leaves (`expected.save`,
//! `step-N.save`, printed by iptables-legacy 1.8.9) differs nowhere, every chain is
//! settled by the text compare (the save spelling matches the kernel's for every rule
//! shape the corpora hold), and one rule changed in the listing rewrites exactly its
//! chain. Every answer is also checked against the full-parse canonical compare, which
//! the text compare must equal on any input (random edits below).

use kube_proxy_rs::sync::restart_diff::{
    differing_payload, differing_payload_canonical, fast_path_stats,
};
use proptest::prelude::*;
use std::path::{Path, PathBuf};

const CORPORA: [&str; 2] = ["golden/upstream", "golden/upstream-v1.35"];

/// (name, restore payload, listing of the state it leaves) of every case, both families,
/// every step.
fn pairs() -> &'static [(String, String, String)] {
    static PAIRS: std::sync::OnceLock<Vec<(String, String, String)>> = std::sync::OnceLock::new();
    PAIRS.get_or_init(read_pairs)
}

fn read_pairs() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for corpus in CORPORA {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(corpus);
        let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
            .expect("corpus copy present")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.is_dir())
            .collect();
        cases.sort();
        for case in cases {
            let mut files: Vec<String> = std::fs::read_dir(&case)
                .expect("case dir")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .filter(|f| f.ends_with(".rules"))
                .collect();
            files.sort();
            for rules in files {
                let save = case.join(rules.replace(".rules", ".save"));
                if !save.exists() {
                    continue;
                }
                let read = |p: &Path| {
                    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                };
                out.push((
                    format!("{}/{rules}", case.display()),
                    read(&case.join(&rules)),
                    read(&save),
                ));
            }
        }
    }
    assert!(out.len() > 80, "both corpora found ({} pairs)", out.len());
    out
}

#[test]
fn corpus_listings_equal_their_payloads_by_text() {
    for (name, desired, live) in pairs() {
        let d = differing_payload(desired, live).expect("both parse");
        assert_eq!(d.payload, None, "{name}: nothing differs");
        assert_eq!(d.rewritten_chains, 0, "{name}");
        assert!(d.unchanged_chains > 0, "{name}");
        assert_eq!(
            Ok(&d),
            differing_payload_canonical(desired, live).as_ref(),
            "{name}: the canonical compare agrees"
        );
        let stats = fast_path_stats(desired, live).expect("the text compare decides");
        assert_eq!(
            stats.parsed_chains, 0,
            "{name}: every chain equal as text (the save spelling is the kernel's)"
        );
        assert_eq!(stats.text_equal_chains, d.unchanged_chains, "{name}");
    }
}

/// Chains the payload declares, by table.
fn declared(desired: &str) -> Vec<(String, String)> {
    let mut table = String::new();
    let mut out = Vec::new();
    for l in desired.lines() {
        if let Some(t) = l.strip_prefix('*') {
            table = t.to_string();
        } else if let Some(d) = l.strip_prefix(':') {
            out.push((table.clone(), d.split(' ').next().unwrap().to_string()));
        }
    }
    out
}

/// What rewriting `chain` alone restores: its declaration and its rules as the payload
/// has them.
fn rewrite_of(desired: &str, table: &str, chain: &str) -> String {
    let decl = format!(":{chain} ");
    let rule = format!("-A {chain} ");
    let mut out = format!("*{table}\n");
    let mut in_table = false;
    for l in desired.lines() {
        if let Some(t) = l.strip_prefix('*') {
            in_table = t == table;
        } else if in_table && (l.starts_with(&decl) || l.starts_with(&rule)) {
            out.push_str(l);
            out.push('\n');
        }
    }
    out.push_str("COMMIT\n");
    out
}

type Mutation = fn(&[&str], usize) -> Option<Vec<String>>;

/// Listing line `i` changed by one edit (`None` if it does not apply there).
fn edit(lines: &[&str], i: usize, f: impl Fn(&str) -> Option<String>) -> Option<Vec<String>> {
    let new = f(lines[i])?;
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    out[i] = new;
    Some(out)
}

fn probability(lines: &[&str], i: usize) -> Option<Vec<String>> {
    edit(lines, i, |l| {
        let at = l.find("--probability 0.")? + "--probability 0.".len();
        let digit = l.as_bytes()[at];
        let other = if digit == b'1' { '2' } else { '1' };
        Some(format!("{}{other}{}", &l[..at], &l[at + 1..]))
    })
}

fn port(lines: &[&str], i: usize) -> Option<Vec<String>> {
    edit(lines, i, |l| {
        let at = l.find("--dport ")? + "--dport ".len();
        let end = l[at..].find(' ').map_or(l.len(), |e| at + e);
        let n: u32 = l[at..end].parse().ok()?;
        Some(format!("{}{}{}", &l[..at], n + 1, &l[end..]))
    })
}

fn comment(lines: &[&str], i: usize) -> Option<Vec<String>> {
    edit(lines, i, |l| {
        let at = l.find("--comment \"")? + "--comment \"".len();
        Some(format!("{}x{}", &l[..at], &l[at..]))
    })
}

fn extra(lines: &[&str], i: usize) -> Option<Vec<String>> {
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    out.insert(i, lines[i].to_string());
    Some(out)
}

fn missing(lines: &[&str], i: usize) -> Option<Vec<String>> {
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    out.remove(i);
    Some(out)
}

fn reordered(lines: &[&str], i: usize) -> Option<Vec<String>> {
    let next = lines.get(i + 1)?;
    let chain = |l: &str| l.split(' ').nth(1).map(str::to_string);
    if chain(next) != chain(lines[i]) || *next == lines[i] {
        return None;
    }
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    out.swap(i, i + 1);
    Some(out)
}

#[test]
fn one_changed_live_rule_rewrites_exactly_its_chain() {
    let kinds: [(&str, Mutation); 6] = [
        ("probability", probability),
        ("port", port),
        ("comment", comment),
        ("extra rule", extra),
        ("missing rule", missing),
        ("reordered rules", reordered),
    ];
    let mut applied = [0usize; 6];
    for (name, desired, live) in pairs() {
        let ours = declared(desired);
        let lines: Vec<&str> = live.lines().collect();
        let mut table = String::new();
        let mut done = [0usize; 6];
        for (i, l) in lines.iter().enumerate() {
            if let Some(t) = l.strip_prefix('*') {
                table = t.to_string();
            }
            let Some(chain) = l.strip_prefix("-A ").and_then(|r| r.split(' ').next()) else {
                continue;
            };
            if !ours.iter().any(|(t, c)| *t == table && c == chain) {
                continue;
            }
            for (k, (kind, mutate)) in kinds.iter().enumerate() {
                // A few lines of each kind per case keep the test quick.
                if done[k] == 3 {
                    continue;
                }
                let Some(changed) = mutate(&lines, i) else {
                    continue;
                };
                let changed = changed.join("\n") + "\n";
                let d = differing_payload(desired, &changed).expect("parses");
                assert_eq!(
                    d.payload.as_deref(),
                    Some(rewrite_of(desired, &table, chain).as_str()),
                    "{name}: {kind} at listing line {} rewrites {chain} alone",
                    i + 1
                );
                assert_eq!(d.rewritten_chains, 1, "{name}: {kind}");
                assert_eq!(
                    Ok(&d),
                    differing_payload_canonical(desired, &changed).as_ref(),
                    "{name}: {kind}: the canonical compare agrees"
                );
                done[k] += 1;
                applied[k] += 1;
            }
        }
    }
    for (k, (kind, _)) in kinds.iter().enumerate() {
        assert!(applied[k] >= 20, "{kind}: applied {} times", applied[k]);
    }
}

/// Small cases, for the random edits.
fn small_pairs() -> Vec<&'static (String, String, String)> {
    pairs()
        .iter()
        .filter(|(_, d, l)| d.len() + l.len() < 40_000)
        .collect()
}

/// One random edit of a random line: a byte removed, one of a few telling characters put
/// in, a word doubled or dropped.
fn mutate(text: &str, line: usize, at: usize, op: u8, ch: u8) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.is_empty() {
        return text.to_string();
    }
    let i = line % lines.len();
    let l = &mut lines[i];
    const CHARS: &[u8] = b" \"\\!/:-0123456789x\t";
    let pos = |l: &str| {
        let mut p = if l.is_empty() { 0 } else { at % (l.len() + 1) };
        while !l.is_char_boundary(p) {
            p -= 1;
        }
        p
    };
    match op % 5 {
        0 if !l.is_empty() => {
            let p = pos(l).min(l.len() - 1);
            let mut p2 = p + 1;
            while !l.is_char_boundary(p2) {
                p2 += 1;
            }
            l.replace_range(p..p2, "");
        }
        1 => {
            let p = pos(l);
            l.insert(p, CHARS[ch as usize % CHARS.len()] as char);
        }
        2 => {
            let words: Vec<&str> = l.split(' ').collect();
            let w = at % words.len();
            let mut v = words.clone();
            v.insert(w, words[w]);
            *l = v.join(" ");
        }
        3 => {
            let words: Vec<&str> = l.split(' ').collect();
            let w = at % words.len();
            let mut v = words.clone();
            v.remove(w);
            *l = v.join(" ");
        }
        _ => {
            let dup = l.clone();
            lines.insert(i, dup);
        }
    }
    lines.join("\n") + "\n"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Whatever the edit, on either side, the answer (or the parse error) is the full
    /// parse's.
    #[test]
    fn random_edits_give_the_canonical_answer(
        case in any::<usize>(),
        live_side in any::<bool>(),
        edits in proptest::collection::vec((any::<usize>(), any::<usize>(), any::<u8>(), any::<u8>()), 1..4),
    ) {
        let pairs = small_pairs();
        let (name, desired, live) = pairs[case % pairs.len()];
        let (mut d, mut l) = (desired.clone(), live.clone());
        for (line, at, op, ch) in edits {
            if live_side {
                l = mutate(&l, line, at, op, ch);
            } else {
                d = mutate(&d, line, at, op, ch);
            }
        }
        prop_assert_eq!(
            differing_payload(&d, &l),
            differing_payload_canonical(&d, &l),
            "{}", name
        );
    }
}
