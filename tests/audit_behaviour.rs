//! `diff --behaviour A B`: the v1.30 and v1.35 states of every corpus scenario behave the
//! same (except where spec §8.2 P3 changes endpoint selection), whatever the chain order,
//! comments and probability formatting; mutations that change behaviour are each named
//! under their service port.

#[path = "support/dumps.rs"]
mod dumps;

use dumps::{rule_chain, shuffle_save, strip_comments, SHARED};
use kube_proxy_rs::audit::behaviour::{compare, Behaviour, BehaviourReport};
use kube_proxy_rs::audit::parse::Ruleset;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn v130() -> PathBuf {
    root().join("golden/upstream")
}

fn v135() -> PathBuf {
    let p = root().join("golden/upstream-v1.35");
    assert!(p.is_dir(), "{} is missing", p.display());
    p
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn bcmp(a: &str, b: &str) -> BehaviourReport {
    compare(
        &Behaviour::of(&Ruleset::parse(a).unwrap()),
        &Behaviour::of(&Ruleset::parse(b).unwrap()),
    )
}

/// A real node's view of the same rules: Go map order, no comments in the per-service
/// chains (large-cluster mode), probabilities printed without trailing zeros.
fn rewritten(text: &str, seed: u64) -> String {
    shuffle_save(text, seed)
        .lines()
        .map(|l| {
            let mut l = match rule_chain(l) {
                Some(c) if !SHARED.contains(&c) => strip_comments(l),
                _ => l.to_string(),
            };
            if let Some(i) = l.find("--probability ") {
                let start = i + "--probability ".len();
                let end = l[start..].find(' ').map_or(l.len(), |j| start + j);
                let v = l[start..end].trim_end_matches('0').to_string();
                l.replace_range(start..end, &v);
            }
            l + "\n"
        })
        .collect()
}

/// Every save of every case (name relative to the case directory).
fn saves() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cases: Vec<String> = std::fs::read_dir(v130())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    cases.sort();
    for c in cases {
        let mut names: Vec<String> = std::fs::read_dir(v130().join(&c))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".save"))
            .collect();
        names.sort();
        for n in names {
            out.push((c.clone(), n));
        }
    }
    out
}

#[test]
fn v130_and_v135_states_behave_the_same() {
    let mut compared = 0;
    for (case, save) in saves() {
        let a = read(&v130().join(&case).join(&save));
        let b = read(&v135().join(&case).join(&save));
        for (what, b) in [("as written", b.clone()), ("rewritten", rewritten(&b, 3))] {
            let r = bcmp(&a, &b);
            let ctx = format!("{case}/{save} {what}");
            if b.contains("-m nfacct") {
                assert_eq!(r.notes.len(), 1, "{ctx}");
                assert!(
                    r.notes[0].starts_with("B looks like kube-proxy ≥ 1.31"),
                    "{ctx}"
                );
            }
            if case == "topology-hints" {
                // §8.2 P3: v1.35 uses the hints of this port, v1.30 does not (its gate).
                let groups: Vec<&String> = r.ports.keys().collect();
                assert_eq!(groups, vec!["apps/no-annotation:http tcp"], "{ctx}");
                let ds: Vec<(&str, &str)> = r.ports["apps/no-annotation:http tcp"]
                    .iter()
                    .map(|d| (d.what.as_str(), d.detail.as_str()))
                    .collect();
                assert_eq!(
                    ds,
                    vec![
                        (
                            "share",
                            "svc: 10.244.1.146:8080 gets 50.000% of new connections in A, \
                             100.000% in B"
                        ),
                        (
                            "endpoint",
                            "svc: 10.244.2.147:8080 only in A (share 50.000%)"
                        ),
                    ],
                    "{ctx}"
                );
            } else {
                assert!(r.equal, "{ctx}:\n{}", r.to_text());
                assert!(
                    r.ports_compared > 0 || case.contains("no-endpoints"),
                    "{ctx}"
                );
            }
            compared += 1;
        }
    }
    assert!(compared > 90, "{compared}");
}

/// Applies `edit` to the lines of a case's v1.30 save; returns (original, mutated).
fn mutate(case: &str, edit: impl Fn(&mut Vec<String>)) -> (String, String) {
    let a = read(&v130().join(case).join("expected.save"));
    let mut v: Vec<String> = a.lines().map(str::to_string).collect();
    let before = v.clone();
    edit(&mut v);
    assert_ne!(before, v, "{case}: edit changed nothing");
    (a, v.join("\n") + "\n")
}

/// The only service port that differs, and its differences as (what, detail).
fn only_port(r: &BehaviourReport) -> (String, Vec<(String, String)>) {
    assert_eq!(r.ports.len(), 1, "{}", r.to_text());
    let (p, ds) = r.ports.iter().next().unwrap();
    (
        p.clone(),
        ds.iter()
            .map(|d| (d.what.clone(), d.detail.clone()))
            .collect(),
    )
}

fn find(v: &[String], pred: impl Fn(&str) -> bool) -> usize {
    v.iter()
        .position(|l| pred(l))
        .expect("line to mutate present")
}

#[test]
fn behaviour_changes_are_named_per_service_port() {
    // An endpoint dropped from a service (its SVC rule removed).
    let (a, b) = mutate("endpoint-counts-1-2-3-5", |v| {
        let i = find(v, |l| {
            l.starts_with("-A KUBE-SVC-") && l.contains("-> ") && !l.contains("--probability")
        });
        if v[i - 1].contains("--probability") {
            // Keep the rules well-formed: the previous rule becomes the last one.
            let p = v[i - 1].find(" -m statistic").unwrap();
            let q = v[i - 1].find(" -j ").unwrap();
            v[i - 1].replace_range(p..q, "");
        }
        v.remove(i);
    });
    let r = bcmp(&a, &b);
    let (_, ds) = only_port(&r);
    assert!(
        ds.iter()
            .any(|(w, d)| w == "endpoint" && d.contains("only in A")),
        "{}",
        r.to_text()
    );

    // A probability changed: shares move.
    let (a, b) = mutate("realistic-cluster", |v| {
        let i = find(v, |l| l.contains("--probability 0.50000000000"));
        v[i] = v[i].replace("0.50000000000", "0.25000000000");
    });
    let r = bcmp(&a, &b);
    let (_, ds) = only_port(&r);
    assert_eq!(ds.len(), 2, "{}", r.to_text());
    assert!(ds.iter().all(|(w, d)| w == "share"
        && (d.contains("50.000% of new connections in A, 25.000% in B")
            || d.contains("50.000% of new connections in A, 75.000% in B"))));

    // Masquerading removed from a cluster IP.
    let (a, b) = mutate("realistic-cluster", |v| {
        let i = find(v, |l| {
            l.starts_with("-A KUBE-SVC-") && l.ends_with("-j KUBE-MARK-MASQ")
        });
        v.remove(i);
    });
    let r = bcmp(&a, &b);
    let (_, ds) = only_port(&r);
    assert_eq!(ds.len(), 1, "{}", r.to_text());
    assert_eq!(ds[0].0, "masquerade");
    assert!(
        ds[0].1.starts_with("svc: only in A: ! -s 10.244"),
        "{:?}",
        ds[0]
    );

    // A load-balancer source range changed.
    let (a, b) = mutate("loadbalancer-source-ranges", |v| {
        let i = find(v, |l| l.contains("-s 198.51.100.128/25"));
        v[i] = v[i].replace("198.51.100.128/25", "198.51.100.0/24");
    });
    let r = bcmp(&a, &b);
    let (p, ds) = only_port(&r);
    assert_eq!(p, "web/partner-api:grpc tcp");
    assert_eq!(
        ds,
        vec![
            (
                "source range".to_string(),
                "198.51.100.128/25 allowed only in A".to_string()
            ),
            (
                "source range".to_string(),
                "198.51.100.0/24 allowed only in B".to_string()
            ),
        ]
    );

    // Session affinity timeout changed.
    let (a, b) = mutate("session-affinity-clientip-custom-timeout", |v| {
        for l in v.iter_mut() {
            if l.starts_with("-A KUBE-SVC-") {
                *l = l.replace("--seconds 600", "--seconds 60");
            }
        }
    });
    let r = bcmp(&a, &b);
    let (_, ds) = only_port(&r);
    assert!(!ds.is_empty());
    assert!(ds
        .iter()
        .all(|(w, d)| w == "affinity" && d.contains("600s in A, 60s in B")));

    // externalTrafficPolicy Local turned into Cluster.
    let (a, b) = mutate("etp-local-with-local-endpoints", |v| {
        let i = find(v, |l| {
            l.starts_with("-A KUBE-EXT-") && l.contains(" -j KUBE-SVL-")
        });
        v[i] = v[i].replace(" -j KUBE-SVL-", " -j KUBE-SVC-");
    });
    let r = bcmp(&a, &b);
    let (_, ds) = only_port(&r);
    assert!(
        ds.iter()
            .any(|(w, d)| w == "policy" && d == "external traffic policy Local in A, Cluster in B"),
        "{}",
        r.to_text()
    );

    // The REJECT of a service without endpoints gone.
    let (a, b) = mutate("realistic-cluster", |v| {
        let i = find(v, |l| {
            l.contains("has no endpoints") && l.contains("REJECT")
        });
        v.remove(i);
    });
    let r = bcmp(&a, &b);
    let (p, ds) = only_port(&r);
    assert_eq!(p, "shop/payments:http tcp");
    // Its only rule: the port is gone from B altogether.
    assert_eq!(ds.len(), 2, "{}", r.to_text());
    assert_eq!(ds[0], ("port".to_string(), "only in A".to_string()));
    assert_eq!(ds[1].0, "filter");
    assert!(
        ds[1].1.contains("only in A: filter KUBE-SERVICES"),
        "{:?}",
        ds[1]
    );
}

#[test]
fn cli_behaviour_diff() {
    let bin = env!("CARGO_BIN_EXE_kube-proxy-rs");
    let case = |root: PathBuf, c: &str| root.join(c).join("expected.save");
    let run = |a: &Path, b: &Path, json: bool| {
        let mut cmd = Command::new(bin);
        cmd.args(["diff", "--behaviour"]).arg(a).arg(b);
        if json {
            cmd.args(["--output", "json"]);
        }
        cmd.output().unwrap()
    };
    let same = run(
        &case(v130(), "nodeport-basic"),
        &case(v135(), "nodeport-basic"),
        false,
    );
    assert_eq!(same.status.code(), Some(0));
    let text = String::from_utf8_lossy(&same.stdout);
    assert!(
        text.contains("behaviour equal: 1 service port(s)"),
        "{text}"
    );
    assert!(
        text.contains("note: B looks like kube-proxy ≥ 1.31"),
        "{text}"
    );
    let diff = run(
        &case(v130(), "topology-hints"),
        &case(v135(), "topology-hints"),
        true,
    );
    assert_eq!(diff.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&diff.stdout).unwrap();
    assert_eq!(v["equal"], false);
    assert_eq!(
        v["ports"]["apps/no-annotation:http tcp"][1]["what"],
        "endpoint"
    );
    let missing = run(
        Path::new("/nonexistent"),
        &case(v130(), "topology-hints"),
        false,
    );
    assert_eq!(missing.status.code(), Some(2));
    // --behaviour and --objects do not mix.
    let both = Command::new(bin)
        .args(["diff", "--objects", "x", "--behaviour", "a", "b"])
        .output()
        .unwrap();
    assert_eq!(both.status.code(), Some(2));
}
