//! Times the restart comparison (`sync::restart_diff`) of a full payload against a
//! listing, for profilers:
//!
//!     kube-proxy-rs render --emulated-version 1.30 ... > full.rules
//!     (iptables-save -t filter; iptables-save -t nat) > live.save   # after restoring full.rules
//!     target/release/examples/restart-diff-profile full.rules live.save

use kube_proxy_rs::sync::restart_diff::differing_payload;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let desired = std::fs::read_to_string(&args[1]).expect("payload readable");
    let live = std::fs::read_to_string(&args[2]).expect("listing readable");
    let started = Instant::now();
    let d = differing_payload(&desired, &live).expect("both parse");
    println!(
        "{:?}: unchanged {} rewritten {} deleted {} payload {} bytes",
        started.elapsed(),
        d.unchanged_chains,
        d.rewritten_chains,
        d.deleted_chains,
        d.payload.map_or(0, |p| p.len())
    );
}
