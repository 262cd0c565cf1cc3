//! `diff` against the corpus: the render output equals every expected.save, and every
//! single-rule change to a save is reported as exactly that change, attributed to the
//! right service port.

use kube_proxy_rs::audit::diff::{diff, expected_state, Expected, Kind, Report};
use kube_proxy_rs::audit::parse::Ruleset;
use kube_proxy_rs::config;
use kube_proxy_rs::model::ip::IpFamily;
use kube_proxy_rs::offline::OfflineProxier;
use kube_proxy_rs::source::objects::load_objects;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/upstream")
}

/// (case dir, objects file, save file, family) for every corpus state.
fn states() -> Vec<(PathBuf, PathBuf, PathBuf, IpFamily)> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for d in dirs {
        out.push((
            d.clone(),
            d.join("objects.yaml"),
            d.join("expected.save"),
            IpFamily::V4,
        ));
        if d.join("expected-ipv6.save").exists() {
            out.push((
                d.clone(),
                d.join("objects.yaml"),
                d.join("expected-ipv6.save"),
                IpFamily::V6,
            ));
        }
        for n in 2..10 {
            let save = d.join(format!("step-{n}.save"));
            if save.exists() {
                out.push((
                    d.clone(),
                    d.join(format!("step-{n}/objects.yaml")),
                    save,
                    IpFamily::V4,
                ));
            }
        }
    }
    out
}

fn expected(dir: &Path, objects: &Path, family: IpFamily) -> Expected {
    let cfg = config::load_config(&dir.join("config.yaml")).unwrap();
    let set = load_objects(objects.to_str().unwrap()).unwrap();
    expected_state(
        kube_proxy_rs::offline::OfflineProxier::new(
            cfg,
            kube_proxy_rs::compat::Compat::v1_30(),
            family,
        ),
        &set,
        &mut Vec::new(),
    )
}

#[test]
fn render_output_equals_every_corpus_save() {
    let states = states();
    assert!(states.len() > 45, "{} corpus states", states.len());
    for (dir, objects, save, family) in states {
        let e = expected(&dir, &objects, family);
        let live = Ruleset::parse(&std::fs::read_to_string(&save).unwrap()).unwrap();
        let r = diff(&e, &live);
        assert!(r.equal, "{}:\n{}", save.display(), r.to_text());
        assert!(r.expected_rules > 10 && r.expected_rules == r.live_rules);
    }
}

/// The service port a save line belongs to, worked out independently of `diff`: chain
/// names from the model's hashes, else the comment's first word plus `-p`.
struct Oracle {
    chains: HashMap<String, String>,
}

impl Oracle {
    fn new(dir: &Path, family: IpFamily) -> Oracle {
        let cfg = config::load_config(&dir.join("config.yaml")).unwrap();
        let set = load_objects(dir.join("objects.yaml").to_str().unwrap()).unwrap();
        let model = OfflineProxier::new(cfg, kube_proxy_rs::compat::Compat::v1_30(), family)
            .build_model(&set, &mut Vec::new());
        let mut chains = HashMap::new();
        for sp in model.services.values().flat_map(|p| p.iter()) {
            let l = format!("{} {}", sp.spn, sp.protocol.as_str());
            for c in [
                &sp.chains.svc,
                &sp.chains.svl,
                &sp.chains.ext,
                &sp.chains.fw,
            ] {
                chains.insert(c.clone(), l.clone());
            }
            for ep in sp.endpoints.iter() {
                chains.insert(ep.sep_chain.clone(), l.clone());
            }
        }
        Oracle { chains }
    }

    fn label(&self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        let chain = words[1];
        if let Some(l) = self.chains.get(chain) {
            return l.clone();
        }
        let target = words.iter().position(|w| *w == "-j").map(|i| words[i + 1]);
        if let Some(l) = target.and_then(|t| self.chains.get(t)) {
            return l.clone();
        }
        let shared = [
            "KUBE-SERVICES",
            "KUBE-NODEPORTS",
            "KUBE-EXTERNAL-SERVICES",
            "KUBE-PROXY-FIREWALL",
        ];
        if shared.contains(&chain) {
            if let Some(c) = line.split("--comment \"").nth(1) {
                let first = c.split([' ', '"']).next().unwrap();
                if first.contains('/') {
                    let p = words
                        .iter()
                        .position(|w| *w == "-p")
                        .map(|i| words[i + 1])
                        .unwrap();
                    return format!("{first} {p}");
                }
            }
        }
        String::new()
    }
}

fn only_finding(r: &Report) -> (&str, &kube_proxy_rs::audit::diff::Finding) {
    let all: Vec<_> = r.findings().collect();
    assert_eq!(
        all.len(),
        1,
        "expected exactly one finding:\n{}",
        r.to_text()
    );
    all[0]
}

const MUTATED_CASES: &[(&str, &str, IpFamily)] = &[
    ("realistic-cluster", "expected.save", IpFamily::V4),
    ("loadbalancer-source-ranges", "expected.save", IpFamily::V4),
    (
        "session-affinity-clientip-custom-timeout",
        "expected.save",
        IpFamily::V4,
    ),
    (
        "etp-local-no-local-endpoints",
        "expected.save",
        IpFamily::V4,
    ),
    ("dual-stack", "expected-ipv6.save", IpFamily::V6),
];

#[test]
fn every_single_rule_change_is_reported_exactly() {
    let mut checked = 0;
    for (case, save_name, family) in MUTATED_CASES {
        let dir = corpus().join(case);
        let e = expected(&dir, &dir.join("objects.yaml"), *family);
        let oracle = Oracle::new(&dir, *family);
        let save = std::fs::read_to_string(dir.join(save_name)).unwrap();
        let lines: Vec<&str> = save.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(rest) = line.strip_prefix("-A ") else {
                continue;
            };
            let chain = rest.split(' ').next().unwrap();
            let group = oracle.label(line);
            let ctx = format!("{case} line {}: {line}", i + 1);
            let variant = line.replacen(
                &format!("-A {chain} "),
                &format!("-A {chain} -m mark --mark 0x77/0xff "),
                1,
            );
            let run = |edit: &dyn Fn(&mut Vec<String>)| -> Report {
                let mut v: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
                edit(&mut v);
                diff(&e, &Ruleset::parse(&(v.join("\n") + "\n")).unwrap())
            };

            let r = run(&|v| {
                v.remove(i);
            });
            let (g, f) = only_finding(&r);
            assert_eq!(
                (f.kind, f.chain.as_str(), g),
                (Kind::MissingRule, chain, group.as_str()),
                "removed {ctx}"
            );

            // KUBE-FIREWALL is shared with kubelet: kube-proxy's rules must be there, but
            // other rules in it or jumping to it are kubelet's, never findings.
            let kubelet_shared = chain == "KUBE-FIREWALL" || line.ends_with("-j KUBE-FIREWALL");
            if kubelet_shared {
                let r = run(&|v| v.insert(i + 1, variant.clone()));
                assert!(r.equal, "added after {ctx}:\n{}", r.to_text());
                let r = run(&|v| v[i] = variant.clone());
                let (g, f) = only_finding(&r);
                assert_eq!(
                    (f.kind, f.chain.as_str(), g),
                    (Kind::MissingRule, chain, group.as_str()),
                    "altered {ctx}"
                );
                checked += 1;
                continue;
            }

            let r = run(&|v| v.insert(i + 1, variant.clone()));
            let (g, f) = only_finding(&r);
            assert_eq!(
                (f.kind, f.chain.as_str(), g),
                (Kind::ExtraRule, chain, group.as_str()),
                "added after {ctx}"
            );
            assert_eq!(f.live_line, Some(i + 2), "{ctx}");

            let r = run(&|v| v[i] = variant.clone());
            let (g, f) = only_finding(&r);
            assert_eq!(
                (f.kind, f.chain.as_str(), g),
                (Kind::DifferentRule, chain, group.as_str()),
                "altered {ctx}"
            );
            assert_eq!(f.live.as_deref(), Some(variant.as_str()), "{ctx}");
            checked += 1;
        }
    }
    assert!(checked > 300, "only {checked} rules mutated");
}

#[test]
fn chain_level_findings_and_foreign_rules() {
    let dir = corpus().join("realistic-cluster");
    let e = expected(&dir, &dir.join("objects.yaml"), IpFamily::V4);
    let save = std::fs::read_to_string(dir.join("expected.save")).unwrap();
    // Other software's chains and rules are ignored; canaries too.
    let extra = save.replace(
        "*nat\n",
        "*nat\n:DOCKER -\n:KUBE-PROXY-CANARY -\n-A PREROUTING -j DOCKER\n-A DOCKER -d 172.17.0.2/32 -j RETURN\n",
    );
    assert!(extra != save);
    assert!(diff(&e, &Ruleset::parse(&extra).unwrap()).equal);
    // A stale endpoint chain still jumped to, an orphaned one, and a jump to a missing chain.
    let stale = save.replace(
        "*nat\n",
        "*nat\n:KUBE-SEP-AAAAAAAAAAAAAAAA -\n:KUBE-SEP-BBBBBBBBBBBBBBBB -\n",
    );
    let stale = stale.replacen(
        "-A KUBE-SERVICES -d 10.96.0.1/32",
        "-A KUBE-SEP-BBBBBBBBBBBBBBBB -m comment --comment \"shop/old:http\" -j KUBE-SEP-CCCCCCCCCCCCCCCC\n-A KUBE-SERVICES -d 10.96.0.1/32",
        1,
    );
    let r = diff(&e, &Ruleset::parse(&stale).unwrap());
    let kinds: Vec<(Kind, &str)> = r
        .findings()
        .map(|(_, f)| (f.kind, f.chain.as_str()))
        .collect();
    assert!(
        kinds.contains(&(Kind::OrphanedChain, "KUBE-SEP-AAAAAAAAAAAAAAAA")),
        "{}",
        r.to_text()
    );
    assert!(
        kinds.contains(&(Kind::OrphanedChain, "KUBE-SEP-BBBBBBBBBBBBBBBB")),
        "{}",
        r.to_text()
    );
    assert!(
        kinds.contains(&(Kind::JumpToMissingChain, "KUBE-SEP-BBBBBBBBBBBBBBBB")),
        "{}",
        r.to_text()
    );
    assert_eq!(
        r.groups.get("shop/old:http").map(Vec::len),
        Some(2),
        "{}",
        r.to_text()
    );
    // A chain kube-proxy needs that the node lacks.
    let missing: String = save
        .lines()
        .filter(|l| {
            !l.starts_with(":KUBE-SVC-NPX46M4PTMTKRN6Y ")
                && !l.starts_with("-A KUBE-SVC-NPX46M4PTMTKRN6Y ")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let r = diff(&e, &Ruleset::parse(&missing).unwrap());
    let kinds: Vec<(&str, Kind)> = r.findings().map(|(g, f)| (g, f.kind)).collect();
    assert!(
        kinds.contains(&("default/kubernetes:https tcp", Kind::MissingChain)),
        "{}",
        r.to_text()
    );
    assert!(
        kinds.contains(&("default/kubernetes:https tcp", Kind::JumpToMissingChain)),
        "{}",
        r.to_text()
    );
    assert_eq!(kinds.len(), 2, "{}", r.to_text());
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kube-proxy-rs")
}

#[test]
fn cli_exit_codes_and_json() {
    let dir = corpus().join("nodeport-basic");
    let args = |live: &str| {
        Command::new(bin())
            .args(["diff", "--config"])
            .arg(dir.join("config.yaml"))
            .arg("--objects")
            .arg(dir.join("objects.yaml"))
            .args(["--live", live, "--output", "json"])
            .output()
            .unwrap()
    };
    let ok = args(dir.join("expected.save").to_str().unwrap());
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(v["equal"], true);
    // The other case's save: different.
    let other = corpus().join("clusterip-single-port/expected.save");
    let bad = args(other.to_str().unwrap());
    assert_eq!(bad.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(v["equal"], false);
    assert!(v["groups"].as_object().unwrap().len() > 1);
    let missing = args("/nonexistent/save");
    assert_eq!(missing.status.code(), Some(2));
    let garbage = std::env::temp_dir().join(format!("audit-garbage-{}", std::process::id()));
    std::fs::write(&garbage, "*nat\n-A X -m comment --comment \"unterminated\n").unwrap();
    let g = args(garbage.to_str().unwrap());
    std::fs::remove_file(&garbage).ok();
    assert_eq!(g.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&g.stderr).contains("line 2"));
}

/// The CLI renders with `expected_state_lean` while parsing the dump on a second thread:
/// its report must be the sequential library path's, findings included.
#[test]
fn cli_threaded_report_equals_sequential() {
    let dir = corpus().join("nodeport-basic");
    let save = corpus().join("clusterip-single-port/expected.save");
    let e = expected(&dir, &dir.join("objects.yaml"), IpFamily::V4);
    let live = Ruleset::parse(&std::fs::read_to_string(&save).unwrap()).unwrap();
    let want = diff(&e, &live);
    assert!(!want.equal, "the two cases must differ");
    let out = Command::new(bin())
        .args(["diff", "--emulated-version", "1.30", "--config"])
        .arg(dir.join("config.yaml"))
        .arg("--objects")
        .arg(dir.join("objects.yaml"))
        .arg("--live")
        .arg(&save)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout), want.to_text());
    // The lean state drops only the payload text.
    let cfg = config::load_config(&dir.join("config.yaml")).unwrap();
    let set = load_objects(dir.join("objects.yaml").to_str().unwrap()).unwrap();
    let lean = kube_proxy_rs::audit::diff::expected_state_lean(
        OfflineProxier::new(cfg, kube_proxy_rs::compat::Compat::v1_30(), IpFamily::V4),
        set,
        &mut Vec::new(),
    );
    assert!(lean.payload.is_empty());
    assert_eq!(lean.rules, e.rules);
    assert_eq!(diff(&lean, &live).to_text(), want.to_text());
}
