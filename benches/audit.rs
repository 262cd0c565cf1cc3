//! Parse + diff of a ~300,000-line dump: the 10,000 services × 5 endpoints cluster of
//! hack/gen-cluster.py, rendered (restore form, with the jump rules in ensure form) and
//! compared with what the same objects should produce. The expected side is built once,
//! outside the timing: the figure is the audit work on the node's dump.

use criterion::{criterion_group, criterion_main, Criterion};
use kube_proxy_rs::audit::diff::{diff, expected_state};
use kube_proxy_rs::audit::parse::Ruleset;
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
    let expected = expected_state(cfg, IpFamily::V4, &set, &mut Vec::new());
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

criterion_group!(benches, bench);
criterion_main!(benches);
