//! Renders one generated cluster a fixed number of times, for profilers whose figures do
//! not depend on the machine's load (`valgrind --tool=callgrind`, see BENCHMARKS.md):
//!
//!     python3 hack/gen-cluster.py 10000 5 target/bench/10000-5
//!     cargo build --release --locked --example render-profile
//!     valgrind --tool=callgrind --toggle-collect='*render_n*' \
//!         target/release/examples/render-profile target/bench/10000-5 5
//!
//! A third argument `partial` makes every render a partial sync with the first Service
//! changed (the first one fills the memo, the next reuse it), as `render_partial` does.

use kube_proxy_rs::compat::Compat;
use kube_proxy_rs::config;
use kube_proxy_rs::model::ip::IpFamily;
use kube_proxy_rs::model::ClusterModel;
use kube_proxy_rs::resolve::{self, HostFacts};
use kube_proxy_rs::rules::{ProxierOptions, Renderer, SyncRequest};
use kube_proxy_rs::source::into_model;
use std::collections::HashSet;
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
    let partial = args.get(3).is_some_and(|a| a == "partial");
    let changed: HashSet<_> = model.services.keys().take(1).cloned().collect();
    let req = SyncRequest {
        partial: partial.then_some(&changed),
        existing_nat_chains: None,
    };
    let bytes = render_n(&model, &opts, req, n);
    let kind = if partial { "partial" } else { "full" };
    println!("{n} {kind} renders, {bytes} bytes each");
}

/// `n` renders into one reused payload buffer, as a proxier's syncs are.
#[inline(never)]
fn render_n(model: &ClusterModel, opts: &ProxierOptions, req: SyncRequest, n: usize) -> usize {
    let mut renderer = Renderer::new();
    let mut payload = String::new();
    for _ in 0..n {
        renderer.render_into(model, opts, req, &mut payload);
    }
    payload.len()
}
