//! Parse + diff of a ~300,000-line dump: the 10,000 services × 5 endpoints cluster of
//! hack/gen-cluster.py, rendered (restore form, with the jump rules in ensure form) and
//! compared with what the same objects should produce. The expected side is built once,
//! outside the timing: the figure is the audit work on the node's dump.
//!
//! `explain`: parse + explain + text of the 10,000 × 5 payload (large-cluster mode, no
//! comments), of the same shape with comments (hack/gen-commented-dump.py) and of a
//! 27,000 × 5 payload (202,510 chains).
//!
//! `trace fan-out`: one service with 20,000 endpoint chains (statistic rules, DNAT to 3
//! targets), traced and printed: the walk of every branch, merged into 3 outcomes.

use criterion::{criterion_group, criterion_main, Criterion};
use kube_proxy_rs::audit::diff::{diff, expected_state};
use kube_proxy_rs::audit::explain::explain;
use kube_proxy_rs::audit::parse::Ruleset;
use kube_proxy_rs::audit::trace::{trace_with, Packet, TraceOptions};
use kube_proxy_rs::config;
use kube_proxy_rs::model::ip::IpFamily;
use kube_proxy_rs::rules::jumps;
use kube_proxy_rs::source::objects::load_objects;
use std::path::Path;
use std::process::Command;

fn bench(c: &mut Criterion) {
    let (expected, live) = cluster(10_000, 5);
    let lines = live.lines().count();
    assert!(lines > 280_000, "{lines} lines");
    let mut g = c.benchmark_group("audit");
    g.sample_size(10);
    g.bench_function(format!("parse+diff {lines} lines"), |b| {
        b.iter(|| {
            let rs = Ruleset::parse(&live).unwrap();
            let r = diff(&expected, &rs);
            assert!(r.equal);
        })
    });
    g.finish();
}

/// A service with `n` endpoint chains picked by statistic rules, DNATing to 3 targets.
fn fan_out(n: usize) -> String {
    let mut s = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-FAN - [0:0]\n",
    );
    for i in 0..n {
        s += &format!(":KUBE-SEP-{i:06} - [0:0]\n");
    }
    s += "-A PREROUTING -j KUBE-SERVICES\n\
          -A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-FAN\n";
    for i in 0..n - 1 {
        let p = 1.0 / (n - i) as f64;
        s += &format!(
            "-A KUBE-SVC-FAN -m statistic --mode random --probability {p:.11} -j KUBE-SEP-{i:06}\n"
        );
    }
    s += &format!("-A KUBE-SVC-FAN -j KUBE-SEP-{:06}\n", n - 1);
    for i in 0..n {
        s += &format!(
            "-A KUBE-SEP-{i:06} -s 10.1.{}.{}/32 -j KUBE-MARK-MASQ\n\
             -A KUBE-SEP-{i:06} -p tcp -m tcp -j DNAT --to-destination 10.2.0.{}:8080\n",
            i / 250,
            i % 250,
            i % 3
        );
    }
    s + "COMMIT\n"
}

fn bench_trace(c: &mut Criterion) {
    let rs = Ruleset::parse(&fan_out(20_000)).unwrap();
    let pkt = Packet {
        src: "1.2.3.4".parse().unwrap(),
        dst: "10.96.0.10".parse().unwrap(),
        dport: 80,
        proto: "tcp".into(),
        from_node: false,
    };
    let opts = TraceOptions {
        max_outcomes: 20,
        ..TraceOptions::default()
    };
    let mut g = c.benchmark_group("audit");
    g.sample_size(10);
    g.bench_function("trace fan-out 20000 branches", |b| {
        b.iter(|| {
            let t = trace_with(&rs, &pkt, &[], &opts).unwrap();
            assert_eq!(t.outcomes.len(), 3);
            t.to_text()
        })
    });
    g.finish();
}

/// The restore payload of `hack/gen-cluster.py N M` (large-cluster mode: no comments on
/// the per-service rules).
fn rendered(n: usize, m: usize) -> String {
    cluster(n, m).0.payload
}

/// `hack/gen-commented-dump.py N M`: the same shape with a comment on every rule.
fn commented(root: &Path, n: usize, m: usize) -> String {
    let out = Command::new("python3")
        .arg(root.join("hack/gen-commented-dump.py"))
        .args([n.to_string(), m.to_string()])
        .output()
        .expect("python3 runs hack/gen-commented-dump.py");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// Parse + explain + text output, as the `explain` command does.
fn bench_explain(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut g = c.benchmark_group("audit");
    g.sample_size(10);
    for (what, text) in [
        ("10000x5 large-cluster (no comments)", rendered(10_000, 5)),
        ("10000x5 commented", commented(root, 10_000, 5)),
        (
            "27000x5 large-cluster (202,510 chains)",
            rendered(27_000, 5),
        ),
    ] {
        let lines = text.lines().count();
        g.bench_function(format!("explain {what}, {lines} lines"), |b| {
            b.iter(|| {
                let rs = Ruleset::parse(&text).unwrap();
                let ex = explain(&rs, None);
                assert!(ex.chains.len() > 50_000);
                ex.to_text().len()
            })
        });
    }
    g.finish();
}

#[path = "../tests/support/dumps.rs"]
mod dumps;

/// The cluster of `hack/gen-cluster.py n m`, rendered; (expected, dump in restore form).
fn cluster(n: usize, m: usize) -> (kube_proxy_rs::audit::diff::Expected, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join(format!("target/bench/{n}-{m}"));
    if !dir.join("objects.yaml").exists() {
        let ok = Command::new("python3")
            .arg(root.join("hack/gen-cluster.py"))
            .args([n.to_string(), m.to_string()])
            .arg(&dir)
            .status()
            .expect("python3 runs hack/gen-cluster.py")
            .success();
        assert!(ok);
    }
    let cfg = config::load_config(&dir.join("config.yaml")).unwrap();
    let set = load_objects(dir.join("objects.yaml").to_str().unwrap()).unwrap();
    let expected = expected_state(
        kube_proxy_rs::offline::OfflineProxier::new(
            cfg,
            kube_proxy_rs::compat::Compat::v1_30(),
            IpFamily::V4,
        ),
        &set,
        &mut Vec::new(),
    );
    let text = format!("{}{}", jumps::ensure_text(), expected.payload);
    (expected, text)
}

/// `diff` and `diff --behaviour` on a dump in upstream's Go map order (shared chains
/// shuffled service by service), the shape of a real node: 10,000 × 5 and ~200,000 chains.
fn bench_shuffled(c: &mut Criterion) {
    use kube_proxy_rs::audit::behaviour::{compare, Behaviour};
    let mut g = c.benchmark_group("audit");
    g.sample_size(10);
    for (n, m) in [(10_000, 5), (33_000, 4)] {
        let (expected, canonical) = cluster(n, m);
        let node = dumps::shuffle_save(&canonical, 42);
        let chains = node.lines().filter(|l| l.starts_with(':')).count();
        let lines = node.lines().count();
        g.bench_function(
            format!("parse+diff shuffled {n}x{m} ({chains} chains, {lines} lines)"),
            |b| {
                b.iter(|| {
                    let rs = Ruleset::parse(&node).unwrap();
                    let r = diff(&expected, &rs);
                    assert!(r.equal);
                })
            },
        );
        g.bench_function(
            format!("behaviour diff {n}x{m} canonical vs shuffled ({chains} chains)"),
            |b| {
                b.iter(|| {
                    let a = Behaviour::of(&Ruleset::parse(&canonical).unwrap());
                    let b2 = Behaviour::of(&Ruleset::parse(&node).unwrap());
                    let r = compare(&a, &b2);
                    assert!(r.equal);
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench_trace, bench, bench_explain, bench_shuffled);
criterion_main!(benches);
