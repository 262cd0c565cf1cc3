//! Times the restart comparison (`sync::restart_diff`) of a full payload against a
//! listing, for profilers:
//!
//!     kube-proxy-rs render --emulated-version 1.30 ... > full.rules
//!     (iptables-save -t filter; iptables-save -t nat) > live.save   # after restoring full.rules
//!     target/release/examples/restart-diff-profile full.rules live.save [--canonical]
//!
//! `--canonical`: the full-parse compare alone (what the text compare falls back to).
//! `--repeat N`: run N times, print each time and the fastest. `--stats`: how much the
//! text compare settled.

use kube_proxy_rs::sync::restart_diff::{
    differing_payload, differing_payload_canonical, fast_path_stats,
};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let desired = std::fs::read_to_string(&args[1]).expect("payload readable");
    let live = std::fs::read_to_string(&args[2]).expect("listing readable");
    let canonical = args.iter().any(|a| a == "--canonical");
    let repeat: usize = args
        .iter()
        .position(|a| a == "--repeat")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(1);
    let mut best = None;
    for _ in 0..repeat {
        let started = Instant::now();
        let d = if canonical {
            differing_payload_canonical(&desired, &live)
        } else {
            differing_payload(&desired, &live)
        }
        .expect("both parse");
        let took = started.elapsed();
        best = Some(best.map_or(took, |b: std::time::Duration| b.min(took)));
        println!(
            "{took:?}: unchanged {} rewritten {} deleted {} payload {} bytes",
            d.unchanged_chains,
            d.rewritten_chains,
            d.deleted_chains,
            d.payload.map_or(0, |p| p.len())
        );
    }
    if repeat > 1 {
        println!("fastest of {repeat}: {:?}", best.expect("ran"));
    }
    if args.iter().any(|a| a == "--stats") {
        println!("text compare: {:?}", fast_path_stats(&desired, &live));
    }
}
