//! Cost of the YAML guard (src/source/guard.rs): the linear pre-scan every objects file
//! and config file goes through before the YAML parser, on the 17 MB dump of the
//! 10,000 services × 5 endpoints cluster of hack/gen-cluster.py, next to the full load it
//! protects; and how fast a hostile 300 KB nested file is refused.

use criterion::{criterion_group, criterion_main, Criterion};
use kube_proxy_rs::source::guard::{check_depth, MAX_DEPTH};
use kube_proxy_rs::source::objects::parse_objects;
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
    let text = std::fs::read_to_string(dir.join("objects.yaml")).unwrap();
    let mb = text.len() as f64 / 1e6;
    let hostile = format!("{}{}\n", "[".repeat(150_000), "]".repeat(150_000));
    assert!(check_depth(&hostile, MAX_DEPTH).is_err());

    let mut g = c.benchmark_group("guard");
    g.sample_size(20);
    g.bench_function(format!("check_depth {mb:.1} MB dump"), |b| {
        b.iter(|| check_depth(&text, MAX_DEPTH).unwrap())
    });
    g.bench_function("check_depth 300 KB nested (refused)", |b| {
        b.iter(|| check_depth(&hostile, MAX_DEPTH).unwrap_err())
    });
    g.sample_size(10);
    g.bench_function(
        format!("parse_objects {mb:.1} MB dump (guard included)"),
        |b| b.iter(|| parse_objects(&text, "objects.yaml").unwrap()),
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
