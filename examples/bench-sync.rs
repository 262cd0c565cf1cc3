//! The daemon's sync path on real iptables, timed: a fresh node's full sync, partial syncs
//! (one endpoint moved each, every one with a stale-chain deletion due), and a restart on
//! the node whose rules are right. With `--upstream`, upstream's way (listing the nat table
//! before each deletion, full restore at the restart); without, the record and the diff.
//! Run it in a fresh network namespace (see BENCHMARKS.md):
//!
//!     python3 hack/gen-cluster.py 2000 5 target/bench/2000-5
//!     cargo build --release --locked --example bench-sync
//!     ip netns add s3-b && ip netns exec s3-b \
//!         target/release/examples/bench-sync target/bench/2000-5 legacy 5 [--upstream]
//!
//! `--minimal`: the partial syncs with `--iptables-minimal-restore`; `--no-restart` skips
//! the restart (on iptables-nft at 10,000 Services it is another full listing).

use kube_proxy_rs::compat::Compat;
use kube_proxy_rs::config;
use kube_proxy_rs::iptables::{CliBackend, Mode, Toolset};
use kube_proxy_rs::model::ip::IpFamily;
use kube_proxy_rs::offline::OfflineProxier;
use kube_proxy_rs::server::metrics::Metrics;
use kube_proxy_rs::source::objects::load_objects;
use kube_proxy_rs::sync::proxier::Proxier;
use std::path::Path;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(args.get(1).map_or("target/bench/2000-5", String::as_str));
    let mode = match args.get(2).map(String::as_str) {
        Some("nft") => Mode::Nft,
        _ => Mode::Legacy,
    };
    let partials: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(5);
    let upstream = args.iter().any(|a| a == "--upstream");
    let minimal = args.iter().any(|a| a == "--minimal");
    let restart = !args.iter().any(|a| a == "--no-restart");
    let cfg = config::load_config(&dir.join("config.yaml")).expect("config loads");
    let mut off = OfflineProxier::new(cfg, Compat::v1_30(), IpFamily::V4);
    let mut set = load_objects(dir.join("objects.yaml").to_str().unwrap()).expect("objects");
    let model = off.next_model(&set, &mut Vec::new());
    let opts = off.options_for(&model);
    let metrics = Metrics::new();
    let proxier = || {
        let tools = Toolset::probe(IpFamily::V4, mode).expect("iptables installed");
        Proxier::new(
            Box::new(CliBackend::new(tools)),
            Duration::from_secs(30),
            Compat::v1_30(),
        )
        .with_upstream_listing(upstream)
        .with_minimal_restore(minimal)
    };
    let mut p = proxier();
    // 31 s between syncs: every one has a large-cluster stale-chain deletion due.
    let mut now = Duration::ZERO;
    let sync = |p: &mut Proxier, m, now: Duration| {
        let o = opts.clone();
        let t = Instant::now();
        let out = p.sync(m, move |_| o, now, &metrics);
        out.result.expect("sync succeeds");
        let t = t.elapsed();
        // Wall times; at a restart the listing overlaps the render.
        eprintln!(
            "  listing {:.2?}, render {:.2?}, compare/restore {:.2?}, rest {:.2?}",
            out.list_time,
            out.render_time,
            out.restore_time,
            t.saturating_sub(out.restore_time + out.render_time.max(out.list_time)),
        );
        (t, out.restore_time, out.payload_bytes)
    };
    let (t, r, b) = sync(&mut p, model, now);
    println!("first full sync (fresh node): {t:.2?} (restore {r:.2?}, {b} bytes)");
    let mut total = Duration::ZERO;
    for i in 0..partials {
        now += Duration::from_secs(31);
        // Move the first endpoint of the first slice to a new address.
        let ep = &mut set.endpoint_slices[0]
            .0
            .endpoints
            .as_mut()
            .expect("endpoints")[0];
        ep.addresses = vec![format!("10.200.0.{}", i + 1)];
        let m = off.next_model(&set, &mut Vec::new());
        let (t, r, b) = sync(&mut p, m, now);
        total += t;
        println!("partial sync {i}: {t:.2?} (restore {r:.2?}, {b} bytes)");
    }
    if partials > 0 {
        println!("partial sync mean: {:.2?}", total / partials as u32);
    }
    if !restart {
        return;
    }
    let m = off.next_model(&set, &mut Vec::new());
    let mut fresh = proxier();
    let (t, r, b) = sync(&mut fresh, m, now + Duration::from_secs(31));
    println!("restart, rules right: {t:.2?} (restore {r:.2?}, {b} bytes)");
}
