//! Rule generation speed on generated clusters (hack/gen-cluster.py), the shapes of
//! upstream's proxier benchmark: services × endpoints, every 4th service with two ports.
//! Chain names are hashed when the model is built, so this times rule generation only,
//! like upstream's `syncProxyRules` with its name cache warm.

use criterion::{criterion_group, criterion_main, Criterion};
use kube_proxy_rs::config;
use kube_proxy_rs::model::ip::IpFamily;
use kube_proxy_rs::model::ClusterModel;
use kube_proxy_rs::resolve::{self, HostFacts};
use kube_proxy_rs::rules::{ProxierOptions, Renderer, SyncRequest};
use kube_proxy_rs::source::objects::load_objects;
use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

fn cluster(services: usize, endpoints: usize) -> (ClusterModel, ProxierOptions) {
    cluster_as(services, endpoints, kube_proxy_rs::compat::Compat::v1_30())
}

/// The generated cluster as release `compat` reads and renders it.
fn cluster_as(
    services: usize,
    endpoints: usize,
    compat: kube_proxy_rs::compat::Compat,
) -> (ClusterModel, ProxierOptions) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join(format!("target/bench/{services}-{endpoints}"));
    if !dir.join("objects.yaml").exists() {
        let ok = Command::new("python3")
            .arg(root.join("hack/gen-cluster.py"))
            .args([services.to_string(), endpoints.to_string()])
            .arg(&dir)
            .status()
            .expect("python3 runs hack/gen-cluster.py")
            .success();
        assert!(ok, "hack/gen-cluster.py failed");
    }
    let cfg = config::load_config(&dir.join("config.yaml")).expect("generated config loads");
    let objects =
        load_objects(dir.join("objects.yaml").to_str().unwrap()).expect("generated objects load");
    let mut warnings = Vec::new();
    let model = ClusterModel::from_objects(
        &objects,
        &resolve::model_options(&cfg, &compat, IpFamily::V4),
        &mut warnings,
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    let host = HostFacts::offline(model.node.as_ref(), &cfg);
    let opts = resolve::proxier_options(&cfg, &compat, model.node.as_ref(), &host, IpFamily::V4);
    (model, opts)
}

fn bench_render(c: &mut Criterion) {
    let mut group = c.benchmark_group("render_full");
    group.sample_size(20);
    for (s, e) in [(1000, 10), (5000, 10), (10000, 5)] {
        let (model, opts) = cluster(s, e);
        let mut renderer = Renderer::new();
        let bytes = renderer
            .render(&model, &opts, SyncRequest::FULL)
            .payload
            .len();
        eprintln!("{s}x{e}: payload {bytes} bytes");
        group.bench_function(format!("{s}x{e}"), |b| {
            b.iter(|| {
                renderer
                    .render(&model, &opts, SyncRequest::FULL)
                    .payload
                    .len()
            })
        });
        // As a proxier syncs (and upstream's keeps its bytes.Buffer): into one payload
        // buffer reused from sync to sync, so the figure is the rendering, not page faults.
        let mut payload = String::new();
        group.bench_function(format!("{s}x{e}_reused_payload"), |b| {
            b.iter(|| {
                renderer.render_into(&model, &opts, SyncRequest::FULL, &mut payload);
                payload.len()
            })
        });
    }
    group.finish();

    // Partial sync after one Service's endpoints changed: the common steady-state case.
    let mut group = c.benchmark_group("render_partial");
    group.sample_size(20);
    let (model, opts) = cluster(10000, 5);
    let changed: HashSet<_> = model.services.keys().take(1).cloned().collect();
    let mut renderer = Renderer::new();
    let req = SyncRequest {
        partial: Some(&changed),
        existing_nat_chains: None,
    };
    eprintln!(
        "10000x5 partial: payload {} bytes",
        renderer.render(&model, &opts, req).payload.len()
    );
    group.bench_function("10000x5_one_service_changed", |b| {
        b.iter(|| renderer.render(&model, &opts, req).payload.len())
    });
    group.finish();
}

/// The same cluster under each emulated release (full and one-Service partial sync).
fn bench_versions(c: &mut Criterion) {
    let mut group = c.benchmark_group("render_version");
    group.sample_size(20);
    for compat in [
        kube_proxy_rs::compat::Compat::v1_30(),
        kube_proxy_rs::compat::Compat::v1_35(),
    ] {
        let (model, opts) = cluster_as(10000, 5, compat);
        let mut renderer = Renderer::new();
        let v = compat.version;
        eprintln!(
            "10000x5 {v}: payload {} bytes",
            renderer
                .render(&model, &opts, SyncRequest::FULL)
                .payload
                .len()
        );
        group.bench_function(format!("{v}_10000x5_full"), |b| {
            b.iter(|| {
                renderer
                    .render(&model, &opts, SyncRequest::FULL)
                    .payload
                    .len()
            })
        });
        let changed: HashSet<_> = model.services.keys().take(1).cloned().collect();
        let req = SyncRequest {
            partial: Some(&changed),
            existing_nat_chains: None,
        };
        group.bench_function(format!("{v}_10000x5_partial"), |b| {
            b.iter(|| renderer.render(&model, &opts, req).payload.len())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_render, bench_versions);
criterion_main!(benches);
