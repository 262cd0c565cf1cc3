//! Parse + diff of a ~300,000-line dump: the 10,000 services × 5 endpoints cluster of
//! hack/gen-cluster.py, rendered (restore form, with the jump rules in ensure form) and
//! compared with what the same objects should produce. The expected side is built once,
//! outside the timing: the figure is the audit work on the node's dump.
//!
//! `trace fan-out`: one service with 20,000 endpoint chains (statistic rules, DNAT to 3
//! targets), traced and printed: the walk of every branch, merged into 3 outcomes.

use criterion::{criterion_group, criterion_main, Criterion};
use kube_proxy_rs::audit::diff::{diff, expected_state};
use kube_proxy_rs::audit::parse::Ruleset;
use kube_proxy_rs::audit::trace::{trace_with, Packet, TraceOptions};
use kube_proxy_rs::config;
use kube_proxy_rs::model::ip::IpFamily;
use kube_proxy_rs::rules::jumps;
use kube_proxy_rs::source::objects::load_objects;
use std::path::Path;
use std::process::Command;

fn bench(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/bench/10000-5");
    if !dir.join("objects.yaml").exists() {
        let ok = Command::new("python3")
            .arg(root.join("hack/gen-cluster.py"))
            .args(["10000", "5"])
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
    let live = format!("{}{}", jumps::ensure_text(), expected.payload);
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

criterion_group!(benches, bench_trace, bench);
criterion_main!(benches);
