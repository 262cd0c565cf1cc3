//! nfacct objects in a real network namespace (root): `apply` under 1.35 creates them
//! through netlink before restoring rules that use them, the kernel counts into them, and
//! the metrics read them back; 1.30 never creates them.

mod common;

use common::{can_run, Netns, BIN};
use kube_proxy_rs::iptables::nfacct::{Nfacct, NFACCT_INVALID, NFACCT_LOCALHOST_NODEPORTS};
use std::path::Path;

fn case(file: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden/upstream-v1.35/nodeport-basic")
        .join(file)
        .to_string_lossy()
        .into_owned()
}

fn apply(ns: &Netns, version: &str) -> String {
    let (cfg, obj) = (case("config.yaml"), case("objects.yaml"));
    let out = ns.exec(&[
        BIN,
        "apply",
        "--iptables",
        "legacy",
        "--emulated-version",
        version,
        "--config",
        &cfg,
        "--objects",
        &obj,
    ]);
    assert!(
        out.status.success(),
        "apply {version}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ns.exec_ok(&["iptables-legacy-save"])
}

fn packets(ns: &Netns, name: &'static str) -> Option<u64> {
    ns.enter(move || {
        Nfacct::open()
            .expect("netlink socket")
            .get(name)
            .expect("nfacct get")
            .map(|c| c.packets)
    })
}

#[test]
fn apply_1_35_creates_the_objects_and_localhost_nodeports_are_counted() {
    if !can_run() {
        return;
    }
    let id = format!("{}n{}", std::process::id() % 100000, line!());
    let ns = Netns::new(&id, "nfacct");
    assert_eq!(
        packets(&ns, NFACCT_INVALID),
        None,
        "a fresh namespace has none"
    );
    let save = apply(&ns, "1.35");
    assert!(
        save.contains("--nfacct-name  localhost_nps_accepted_pkts"),
        "{save}"
    );
    assert_eq!(packets(&ns, NFACCT_INVALID), Some(0));
    assert_eq!(packets(&ns, NFACCT_LOCALHOST_NODEPORTS), Some(0));
    // A SYN to the NodePort on loopback passes nat OUTPUT -> KUBE-NODEPORTS' counted rule
    // (the DNAT target is unreachable here; only the counting matters).
    ns.enter(|| {
        let _ = std::net::TcpStream::connect_timeout(
            &"127.0.0.1:30080".parse().unwrap(),
            std::time::Duration::from_millis(300),
        );
    });
    let n = packets(&ns, NFACCT_LOCALHOST_NODEPORTS).unwrap();
    assert!(n >= 1, "localhost NodePort packets counted: {n}");
    // The metrics read the same objects.
    let text = ns.enter(|| {
        let r = prometheus::Registry::new();
        r.register(Box::new(
            kube_proxy_rs::server::nfacct_metrics::NfacctCollector::new(),
        ))
        .unwrap();
        let mut buf = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &r.gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    });
    assert!(
        text.contains(&format!(
            "kubeproxy_iptables_localhost_nodeports_accepted_packets_total {n}\n"
        )),
        "{text}"
    );
    assert!(
        text.contains("kubeproxy_iptables_ct_state_invalid_dropped_packets_total 0\n"),
        "{text}"
    );
    // A second full sync keeps the objects and their counts.
    apply(&ns, "1.35");
    assert_eq!(packets(&ns, NFACCT_LOCALHOST_NODEPORTS), Some(n));
}

#[test]
fn apply_1_30_creates_no_objects_and_writes_uncounted_rules() {
    if !can_run() {
        return;
    }
    let id = format!("{}n{}", std::process::id() % 100000, line!());
    let ns = Netns::new(&id, "nfacct");
    let save = apply(&ns, "1.30");
    assert!(!save.contains("nfacct"), "{save}");
    assert!(
        save.contains("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP"),
        "{save}"
    );
    assert_eq!(packets(&ns, NFACCT_INVALID), None);
    assert_eq!(packets(&ns, NFACCT_LOCALHOST_NODEPORTS), None);
}
