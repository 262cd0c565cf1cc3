//! Renders one generated cluster a fixed number of times, for profilers whose figures do
//! not depend on the machine's load (`valgrind --tool=callgrind`, see BENCHMARKS.md):
//!
//!     python3 hack/gen-cluster.py 10000 5 target/bench/10000-5
//!     cargo build --release --locked --example render-profile
//!     valgrind --tool=callgrind --toggle-collect='*render_n*' \
//!         target/release/examples/render-profile target/bench/10000-5 5

use kube_proxy_rs::compat::Compat;
use kube_proxy_rs::config;
use kube_proxy_rs::model::ip::IpFamily;
use kube_proxy_rs::model::ClusterModel;
use kube_proxy_rs::resolve::{self, HostFacts};
use kube_proxy_rs::rules::{ProxierOptions, Renderer, SyncRequest};
use kube_proxy_rs::source::into_model;
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(args.get(1).map_or("target/bench/10000-5", String::as_str));
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let cfg = config::load_config(&dir.join("config.yaml")).expect("config loads");
    let compat = Compat::v1_30();
    let mopts = resolve::model_options(&cfg, &compat, IpFamily::V4);
    let objects = dir.join("objects.yaml");
    let loaded = into_model::load_model_file(objects.to_str().expect("UTF-8 path"), &mopts)
        .expect("objects load");
    let model = loaded.model;
    let host = HostFacts::offline(model.node.as_ref(), &cfg);
    let opts = resolve::proxier_options(&cfg, &compat, model.node.as_ref(), &host, IpFamily::V4);
    let bytes = render_n(&model, &opts, n);
    println!("{n} full renders, {bytes} bytes each");
}

/// `n` full renders into one reused payload buffer, as a proxier's syncs are.
#[inline(never)]
fn render_n(model: &ClusterModel, opts: &ProxierOptions, n: usize) -> usize {
    let mut renderer = Renderer::new();
    let mut payload = String::new();
    for _ in 0..n {
        renderer.render_into(model, opts, SyncRequest::FULL, &mut payload);
    }
    payload.len()
}
