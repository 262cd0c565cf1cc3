//! `cleanup` per emulated release in a real namespace (root): v1.30.3 leaves
//! KUBE-MARK-MASQ, KUBE-PROXY-FIREWALL and the canary chains behind (spec §6.8), newer
//! releases delete them too (§8.3 S6); both remove every jump and service chain.

mod common;
use common::*;

/// Sets a namespace up as a synced node (`apply`, plus the canaries a daemon makes),
/// runs `cleanup` as `version` and returns what both families hold afterwards.
fn cleaned(version: &str) -> String {
    let id = format!(
        "{}c{}",
        std::process::id() % 100000,
        version.replace('.', "")
    );
    let ns = Netns::new(&id, "clean");
    let dir = std::env::temp_dir().join(format!("kprs-clean-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let (cfg, obj) = (dir.join("config.yaml"), dir.join("objects.yaml"));
    std::fs::write(&cfg, CONFIG).unwrap();
    let svc = Svc {
        name: "web",
        node_port: Some(30080),
        extra_spec: "  type: LoadBalancer\n  loadBalancerSourceRanges: [192.168.50.2/32]\n",
        status: "status:\n  loadBalancer:\n    ingress:\n    - ip: 203.0.113.10\n",
        endpoints: Some(vec![(0, false)]),
        ..Svc::default()
    };
    std::fs::write(&obj, format!("{NODE_YAML}{}", svc.yaml())).unwrap();
    let (c, o) = (cfg.to_str().unwrap(), obj.to_str().unwrap());
    ns.exec_ok(&[
        BIN,
        "apply",
        "--iptables",
        "legacy",
        "--emulated-version",
        version,
        "--config",
        c,
        "--objects",
        o,
    ]);
    for bin in ["iptables-legacy", "ip6tables-legacy"] {
        for table in ["nat", "filter", "mangle"] {
            ns.exec_ok(&[bin, "-t", table, "-N", "KUBE-PROXY-CANARY"]);
        }
    }
    let before = ns.save("legacy");
    for chain in [
        ":KUBE-MARK-MASQ",
        ":KUBE-PROXY-FIREWALL",
        ":KUBE-SVC-",
        ":KUBE-FW-",
    ] {
        assert!(before.contains(chain), "{chain} made by apply:\n{before}");
    }
    ns.exec_ok(&[
        BIN,
        "cleanup",
        "--iptables",
        "legacy",
        "--emulated-version",
        version,
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    let mut after = ns.save("legacy");
    after.push_str(&normalize_save(&ns.exec_ok(&["ip6tables-legacy-save"])));
    after
}

/// Chains and rules every release's cleanup removes.
fn assert_common(after: &str) {
    for gone in [
        ":KUBE-SERVICES",
        ":KUBE-NODEPORTS",
        ":KUBE-POSTROUTING",
        ":KUBE-EXTERNAL-SERVICES",
        ":KUBE-FORWARD",
        ":KUBE-SVC-",
        ":KUBE-SEP-",
        ":KUBE-EXT-",
        ":KUBE-FW-",
    ] {
        assert!(!after.contains(gone), "{gone} left:\n{after}");
    }
    // Only kubelet's KUBE-FIREWALL jumps stay (spec §6.8: rows 13–14 are left alone).
    for line in after.lines().filter(|l| l.contains("-j KUBE-")) {
        assert!(
            line.contains("-j KUBE-FIREWALL"),
            "jump left: {line}\n{after}"
        );
    }
}

#[test]
fn v1_30_cleanup_leaves_mark_masq_firewall_and_canaries() {
    if !can_run() {
        return;
    }
    let after = cleaned("1.30");
    assert_common(&after);
    // IPv4 only: `apply` wrote one family; the canaries were made in both.
    assert_eq!(after.matches(":KUBE-MARK-MASQ").count(), 1, "{after}");
    assert_eq!(after.matches(":KUBE-PROXY-FIREWALL").count(), 1, "{after}");
    assert_eq!(after.matches(":KUBE-PROXY-CANARY").count(), 6, "{after}");
}

#[test]
fn v1_35_cleanup_removes_them_too() {
    if !can_run() {
        return;
    }
    let after = cleaned("1.35");
    assert_common(&after);
    for gone in [
        ":KUBE-MARK-MASQ",
        ":KUBE-PROXY-FIREWALL",
        ":KUBE-PROXY-CANARY",
    ] {
        assert!(!after.contains(gone), "{gone} left:\n{after}");
    }
}
