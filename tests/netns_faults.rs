//! Faults and node states around applying rules: a failing restore, a held xtables lock,
//! re-applying on a node that has the rules, backend detection, cleanup, IPv6.

mod common;
use common::*;
use kube_proxy_rs::iptables::{Backend, BackendError, CliBackend, Mode, Toolset};
use kube_proxy_rs::model::ip::IpFamily;

fn one_service() -> String {
    let svc = Svc {
        name: "web",
        cluster_ip: "10.96.0.10",
        endpoints: Some(vec![(0, true)]),
        ..Svc::default()
    };
    format!("{NODE_YAML}{}", svc.yaml())
}

fn restore_in(ns: &Netns, mode: Mode, payload: &'static str) -> Result<(), BackendError> {
    ns.enter(move || {
        let tools = Toolset::probe(IpFamily::V4, mode).expect("iptables installed");
        CliBackend::new(tools).restore(payload)
    })
}

/// Line 5 references a chain that does not exist.
const BAD_PAYLOAD: &str = "*filter
:KUBE-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
-A KUBE-FORWARD -j ACCEPT
-A KUBE-SERVICES -j KUBE-NO-SUCH-CHAIN
-A KUBE-FORWARD -j DROP
COMMIT
*nat
:KUBE-SERVICES - [0:0]
COMMIT
";

fn failing_restore_keeps_rules(mode: &str, m: Mode) {
    if !can_run() {
        return;
    }
    let topo = Topology::new(1);
    topo.apply_ok(&one_service(), mode);
    let before = topo.node.save(mode);
    assert!(before.contains("KUBE-SVC-"), "{before}");
    let err = restore_in(&topo.node, m, BAD_PAYLOAD).expect_err("bad payload must fail");
    let BackendError::RestoreLine { line, context, .. } = &err else {
        panic!("expected a failing line, got {err}");
    };
    // Legacy names the bad rule; nft names the COMMIT that rejected it.
    assert!([5, 7].contains(line), "line {line}: {err}");
    assert!(
        context.contains(&format!(">{line:>7} | ")),
        "failing line is marked: {context}"
    );
    assert!(
        context.contains("5 | -A KUBE-SERVICES -j KUBE-NO-SUCH-CHAIN"),
        "{context}"
    );
    assert!(
        context.contains("4 | -A KUBE-FORWARD -j ACCEPT"),
        "{context}"
    );
    assert!(err.to_string().contains(&format!("line {line}")), "{err}");
    assert_eq!(
        topo.node.save(mode),
        before,
        "a failed restore must change nothing"
    );
    // Traffic still flows through the old rules.
    let s = tcp_once(&topo.client, None, sock("10.96.0.10", 80)).unwrap();
    assert_eq!(s.server, pod_ip(0).to_string());
}

#[test]
fn failing_restore_keeps_previous_rules_legacy() {
    failing_restore_keeps_rules("legacy", Mode::Legacy);
}

#[test]
fn failing_restore_keeps_previous_rules_nft() {
    failing_restore_keeps_rules("nft", Mode::Nft);
}

#[test]
fn commit_time_failure_names_its_line() {
    if !can_run() {
        return;
    }
    let topo = Topology::new(1);
    topo.apply_ok(&one_service(), "legacy");
    let before = topo.node.save("legacy");
    // KUBE-SERVICES is still referenced from PREROUTING/OUTPUT: deletion fails at commit.
    let err = restore_in(&topo.node, Mode::Legacy, "*nat\n-X KUBE-SERVICES\nCOMMIT\n")
        .expect_err("deleting a referenced chain must fail");
    let BackendError::RestoreLine { line, context, .. } = &err else {
        panic!("expected a failing line, got {err}");
    };
    assert_eq!(*line, 2, "{err}");
    assert!(context.contains(">      2 | -X KUBE-SERVICES"), "{context}");
    assert_eq!(topo.node.save("legacy"), before);
}

#[test]
fn apply_waits_for_a_held_xtables_lock() {
    if !can_run() {
        return;
    }
    let topo = Topology::new(1);
    let (cfg, obj) = topo.write_inputs(&one_service());
    // A private /run (own mount namespace) so the lock held here blocks nobody else.
    let script = format!(
        "mount -t tmpfs kprs-run /run && \
         (flock /run/xtables.lock sh -c 'touch /run/held; sleep 3; echo released') & \
         while [ ! -e /run/held ]; do sleep 0.05; done; \
         {BIN} apply --config {} --objects {} --iptables legacy && echo applied",
        cfg.display(),
        obj.display()
    );
    let out = topo.node.exec(&[
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let released = stdout.find("released").expect("lock holder finished");
    let applied = stdout.find("applied").expect("apply finished");
    assert!(released < applied, "apply must wait for the lock: {stdout}");
    assert!(topo
        .node
        .save("legacy")
        .contains("-A KUBE-SERVICES -d 10.96.0.10/32"));
}

/// Packet counter of nat PREROUTING's jump to KUBE-SERVICES.
fn prerouting_packets(ns: &Netns) -> u64 {
    let save = ns.exec_ok(&["iptables-legacy-save", "-c", "-t", "nat"]);
    let line = save
        .lines()
        .find(|l| l.contains("-A PREROUTING") && l.contains("-j KUBE-SERVICES"))
        .expect("PREROUTING jump");
    line[1..line.find(':').unwrap()].parse().unwrap()
}

fn conntrack_has(ns: &Netns, port: u16) -> bool {
    let out = ns.exec(&["conntrack", "-L", "-p", "tcp", "--orig-dst", "10.96.0.10"]);
    String::from_utf8_lossy(&out.stdout).contains(&format!("sport={port} "))
}

#[test]
fn reapply_keeps_established_connections_and_counters() {
    if !can_run() {
        return;
    }
    let topo = Topology::new(1);
    topo.apply_ok(&one_service(), "legacy");
    let mut conn = connect_from(&topo.client, None, sock("10.96.0.10", 80), IO_TIMEOUT).unwrap();
    let first = conn.ask().unwrap();
    assert_eq!(first.server, pod_ip(0).to_string());
    let packets = prerouting_packets(&topo.node);
    assert!(packets > 0);
    assert!(
        conntrack_has(&topo.node, conn.local_port()),
        "conntrack entry"
    );
    let rules = topo.node.save("legacy");

    topo.apply_ok(&one_service(), "legacy");
    assert_eq!(topo.node.save("legacy"), rules, "same objects, same rules");
    assert!(
        prerouting_packets(&topo.node) >= packets,
        "jump rules were not recreated (counters kept)"
    );
    assert!(
        conntrack_has(&topo.node, conn.local_port()),
        "conntrack not flushed"
    );
    assert_eq!(
        conn.ask().unwrap(),
        first,
        "established connection keeps working"
    );
}

#[test]
fn auto_detection_follows_the_backend_in_use() {
    if !can_run() {
        return;
    }
    let id = format!("{:x}", std::process::id());
    // kubelet's hint chain in nf_tables: the node uses nft.
    let nft_node = Netns::new(&id, "det-nft");
    nft_node.exec_ok(&["iptables-nft", "-t", "mangle", "-N", "KUBE-IPTABLES-HINT"]);
    let topo = Topology::new(0);
    let (cfg, obj) = topo.write_inputs(&one_service());
    let apply = |ns: &Netns| {
        ns.exec_ok(&[
            BIN,
            "apply",
            "--config",
            cfg.to_str().unwrap(),
            "--objects",
            obj.to_str().unwrap(),
        ])
    };
    apply(&nft_node);
    assert!(nft_node.save("nft").contains("KUBE-SVC-"));
    assert!(!nft_node.save("legacy").contains("KUBE-SVC-"));
    // Nothing anywhere (a fresh namespace): legacy, as the corpus' expected.save assumes.
    let empty = Netns::new(&id, "det-none");
    apply(&empty);
    assert!(empty.save("legacy").contains("KUBE-SVC-"));
    assert!(!empty.save("nft").contains("KUBE-SVC-"));
}

#[test]
fn cleanup_removes_kube_proxy_state_only() {
    if !can_run() {
        return;
    }
    let topo = Topology::new(1);
    let node = &topo.node;
    node.exec_ok(&[
        "iptables-legacy",
        "-A",
        "INPUT",
        "-s",
        "10.9.9.9/32",
        "-j",
        "DROP",
    ]);
    node.exec_ok(&["iptables-legacy", "-t", "nat", "-N", "CNI-HOSTPORT-DNAT"]);
    topo.apply_ok(&one_service(), "legacy");
    node.exec_ok(&[BIN, "cleanup", "--iptables", "legacy"]);
    let after = node.save("legacy");
    for gone in [
        "KUBE-SERVICES",
        "KUBE-SVC-",
        "KUBE-SEP-",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-FORWARD",
        "KUBE-EXTERNAL-SERVICES",
    ] {
        assert!(!after.contains(gone), "{gone} left behind:\n{after}");
    }
    assert!(!after.contains("KUBE-MARK-MASQ"), "{after}");
    // Kept: kubelet's KUBE-FIREWALL jumps and everything not ours.
    for kept in [
        "-A INPUT -j KUBE-FIREWALL",
        "-A OUTPUT -j KUBE-FIREWALL",
        "-A INPUT -s 10.9.9.9/32 -j DROP",
        ":CNI-HOSTPORT-DNAT",
    ] {
        assert!(after.contains(kept), "{kept} removed:\n{after}");
    }
    // Nothing left to do: a second run succeeds and changes nothing.
    node.exec_ok(&[BIN, "cleanup", "--iptables", "legacy"]);
    assert_eq!(node.save("legacy"), after);
}

#[test]
fn ipv6_apply_matches_upstream_state() {
    if !can_run() {
        return;
    }
    let case = concat!(env!("CARGO_MANIFEST_DIR"), "/golden/upstream/dual-stack");
    let ns = Netns::new(&format!("{:x}", std::process::id()), "v6");
    ns.exec_ok(&[
        BIN,
        "apply",
        "--config",
        &format!("{case}/config.yaml"),
        "--objects",
        &format!("{case}/objects.yaml"),
        "--ip-family",
        "IPv6",
        "--emulated-version",
        "1.30",
    ]);
    let mut got = String::new();
    for table in ["filter", "nat"] {
        let text = ns.exec_ok(&["ip6tables-legacy-save", "-t", table]);
        got.push_str(&normalize_save(&text));
    }
    let want = std::fs::read_to_string(format!("{case}/expected-ipv6.save")).unwrap();
    assert_eq!(got, want);
}
