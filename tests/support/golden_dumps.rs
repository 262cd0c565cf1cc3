//! Helpers shared by the tests of the hand-written dumps under golden/dumps.
#![allow(dead_code)]

use kube_proxy_rs::audit::explain::{explain, Explanation};
use kube_proxy_rs::audit::parse::Ruleset;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub fn path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden/dumps")
        .join(name)
}

pub fn read(name: &str) -> String {
    std::fs::read_to_string(path(name)).unwrap()
}

pub fn dump(name: &str) -> (Ruleset, Explanation) {
    let rs = Ruleset::parse(&read(name)).unwrap();
    let ex = explain(&rs, None);
    (rs, ex)
}

/// Runs the binary with no stdin: (exit code, stdout, stderr).
pub fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kube-proxy-rs"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The corpus `nodeport-basic` save, whole or its nat table only.
pub fn corpus(nat_only: bool) -> String {
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/upstream/nodeport-basic/expected.save");
    let s = std::fs::read_to_string(p).unwrap();
    if nat_only {
        s[s.find("*nat").unwrap()..].to_string()
    } else {
        s
    }
}

/// `explain` text without the notes and the `(line N)` references.
pub fn answers(ex: &Explanation) -> Vec<String> {
    ex.to_text()
        .lines()
        .filter(|l| !l.starts_with("note: "))
        .map(|l| match l.find(" (line ") {
            Some(p) => {
                let rest = &l[p + 7..];
                let close = rest.find(')').unwrap();
                format!("{}{}", &l[..p], &rest[close + 1..])
            }
            None => l.to_string(),
        })
        .collect()
}

/// Rules of a chain; `usize::MAX` when the table or chain is missing.
pub fn rules(rs: &Ruleset, table: &str, chain: &str) -> usize {
    rs.table(table)
        .and_then(|t| t.chain(chain))
        .map_or(usize::MAX, |c| c.rules.len())
}

/// The five endpoints of the shop/cart fragment (see fragment-5-endpoints-jumps-only.txt).
pub fn assert_shop_cart(ex: &Explanation) {
    let p = ex
        .ports
        .iter()
        .find(|p| p.service_port == "shop/cart:http tcp")
        .expect("shop/cart port");
    assert_eq!(p.endpoints.len(), 5);
    for e in &p.endpoints {
        assert!((e.share - 0.2).abs() < 1e-6, "{e:?}");
    }
    let ids: Vec<&str> = ex.findings.iter().map(|f| f.id).collect();
    assert_eq!(ids, vec!["absent-chain"; 6]);
}
