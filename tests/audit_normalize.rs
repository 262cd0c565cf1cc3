//! The normalizer against the corpus: every restore payload must compare equal to the
//! iptables-save view the kernel printed for it (golden/upstream, both families).

use kube_proxy_rs::audit::norm::rule_key;
use kube_proxy_rs::audit::parse::Ruleset;
use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/upstream")
}

/// (table, chain, normalized rules) for every KUBE-* chain the payload declares.
fn kube_chains(rs: &Ruleset) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for t in &rs.tables {
        for c in &t.chains {
            if c.name.starts_with("KUBE-") {
                let rules = c.rules.iter().map(|r| rule_key(&r.spec)).collect();
                out.push((t.name.clone(), c.name.clone(), rules));
            }
        }
    }
    out.sort();
    out
}

/// Pairs (rules file, save file) in the corpus.
fn pairs() -> Vec<(PathBuf, PathBuf)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(corpus()).unwrap() {
        let dir = e.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir).unwrap() {
            let p = f.unwrap().path();
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            if let Some(stem) = name.strip_suffix(".rules") {
                let save = dir.join(format!("{stem}.save"));
                if save.exists() {
                    out.push((p, save));
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn restore_form_equals_save_form_for_every_corpus_file() {
    let pairs = pairs();
    assert!(
        pairs.len() >= 50,
        "corpus incomplete: {} pairs",
        pairs.len()
    );
    for (rules, save) in pairs {
        // Multi-step saves hold the sum of all steps; compare step-1 / full syncs only
        // chain by chain on the chains the payload itself declares.
        let r = Ruleset::parse(&std::fs::read_to_string(&rules).unwrap()).unwrap();
        let s = Ruleset::parse(&std::fs::read_to_string(&save).unwrap()).unwrap();
        let rc = kube_chains(&r);
        assert!(!rc.is_empty() || rules.to_str().unwrap().contains("step-"));
        for (table, chain, keys) in rc {
            let live = s
                .table(&table)
                .and_then(|t| t.chain(&chain))
                .unwrap_or_else(|| panic!("{}: {table} {chain} missing in save", save.display()));
            let live_keys: Vec<String> = live.rules.iter().map(|r| rule_key(&r.spec)).collect();
            assert_eq!(
                keys,
                live_keys,
                "{} vs {}: chain {table} {chain}",
                rules.display(),
                save.display()
            );
        }
        for t in &r.tables {
            for d in &t.deleted {
                assert!(
                    s.table(&t.name).is_some_and(|st| !st.has_chain(d)),
                    "{}: {d} deleted by payload but present in save",
                    save.display()
                );
            }
        }
    }
}
