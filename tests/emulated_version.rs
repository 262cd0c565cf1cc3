//! `--emulated-version` as a user meets it: parsing, defaults, the version-gated
//! behaviours of the offline commands (expected values read off spec §8 and the v1.35
//! corpus README by hand), and config errors only the newer release makes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kube-proxy-rs"))
}

fn corpus(dir: &str, case: &str, file: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(dir)
        .join(case)
        .join(file)
        .to_string_lossy()
        .into_owned()
}

fn tmp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kprs-ev-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn render(version: Option<&str>, cfg: &Path, objects: &Path, extra: &[&str]) -> String {
    let mut args = vec!["render", "--config", cfg.to_str().unwrap()];
    args.extend(["--objects", objects.to_str().unwrap()]);
    if let Some(v) = version {
        args.extend(["--emulated-version", v]);
    }
    args.extend(extra);
    stdout(&run(&args))
}

const CFG: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
hostnameOverride: node-a
clusterCIDR: 10.244.0.0/16
";

const NODE: &str = "apiVersion: v1
kind: Node
metadata:
  name: node-a
  labels:
    topology.kubernetes.io/zone: zone-a
status:
  addresses:
  - type: InternalIP
    address: 192.168.10.11
---
";

/// A NodePort Service `ns/web` (port 80, nodePort 30080) and one slice of `endpoints`.
fn nodeport_objects(extra_spec: &str, endpoints: &str) -> String {
    format!(
        "{NODE}apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: ns
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.10
  ports:
  - name: http
    port: 80
    nodePort: 30080
{extra_spec}status:
  loadBalancer:
    ingress:
    - ip: 203.0.113.20
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: ns
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
- name: http
  port: 8080
endpoints:
{endpoints}"
    )
}

const TWO_ENDPOINTS: &str = "- addresses: [10.244.1.5]
  nodeName: node-a
- addresses: [10.244.2.6]
  nodeName: node-b
";

#[test]
fn unsupported_versions_exit_2_naming_the_supported_ones() {
    let cfg = corpus("golden/upstream", "nodeport-basic", "config.yaml");
    let obj = corpus("golden/upstream", "nodeport-basic", "objects.yaml");
    for cmd in ["render", "apply", "diff"] {
        let mut args = vec![cmd, "--emulated-version", "1.31", "--config", &cfg];
        args.extend(["--objects", &obj]);
        if cmd == "diff" {
            args.extend(["--live", &obj]);
        }
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{cmd}");
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(
            e.contains("supported versions are 1.30, 1.35"),
            "{cmd}: {e}"
        );
    }
    for cmd in [
        &["render", "--help"][..],
        &["apply", "--help"],
        &["diff", "--help"],
        &["explain", "--help"],
        &["--help"],
    ] {
        let help = stdout(&run(cmd));
        assert!(help.contains("--emulated-version"), "{cmd:?}");
    }
}

#[test]
fn offline_default_is_1_35_and_1_30_is_exactly_the_old_corpus() {
    let cfg = PathBuf::from(corpus("golden/upstream", "nodeport-basic", "config.yaml"));
    let obj = PathBuf::from(corpus("golden/upstream", "nodeport-basic", "objects.yaml"));
    let v135 = std::fs::read_to_string(corpus(
        "golden/upstream-v1.35",
        "nodeport-basic",
        "expected.rules",
    ))
    .unwrap();
    let v130 = std::fs::read_to_string(corpus(
        "golden/upstream",
        "nodeport-basic",
        "expected.rules",
    ))
    .unwrap();
    assert_eq!(render(None, &cfg, &obj, &[]), v135);
    assert_eq!(render(Some("v1.35"), &cfg, &obj, &[]), v135);
    assert_eq!(render(Some("1.30"), &cfg, &obj, &[]), v130);
    // nodeport-basic differs between the releases by P1/P2 only: without the nfacct
    // objects 1.35 writes the 1.30 forms.
    assert_eq!(render(Some("1.35"), &cfg, &obj, &["--nfacct", "no"]), v130);
}

#[test]
fn locked_ga_gates_set_false_are_fatal_in_1_35_only() {
    let cfg = tmp(
        "locked.yaml",
        &format!("{CFG}featureGates:\n  LoadBalancerIPMode: true\n  TopologyAwareHints: false\n"),
    );
    let obj = tmp("locked-objects.yaml", &nodeport_objects("", TWO_ENDPOINTS));
    let c = cfg.to_str().unwrap();
    let o = run(&["render", "--config", c, "--objects", obj.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains(&format!("{c}:7:")), "line of the gate: {e}");
    assert!(e.contains("featureGates.TopologyAwareHints"), "{e}");
    assert!(e.contains("locked to true in 1.35"), "{e}");
    render(Some("1.30"), &cfg, &obj, &[]);
}

#[test]
fn zero_prefix_source_range_allows_all_in_1_35() {
    let cfg = tmp("zero.yaml", CFG);
    let obj = tmp(
        "zero-objects.yaml",
        &nodeport_objects(
            "  loadBalancerSourceRanges:\n  - 0.0.0.0/0\n",
            TWO_ENDPOINTS,
        ),
    );
    let old = render(Some("1.30"), &cfg, &obj, &[]);
    assert!(
        old.contains("loadbalancer IP\" -s 0.0.0.0/0 -j KUBE-EXT-"),
        "{old}"
    );
    assert!(old.contains("-A KUBE-PROXY-FIREWALL"), "{old}");
    let new = render(Some("1.35"), &cfg, &obj, &[]);
    assert!(!new.contains("KUBE-FW-"), "{new}");
    assert!(!new.contains("-A KUBE-PROXY-FIREWALL"), "{new}");
    assert!(
        new.contains("-d 203.0.113.20 --dport 80 -j KUBE-EXT-"),
        "the LB VIP jumps straight to EXT: {new}"
    );
}

#[test]
fn node_port_addresses_zero_prefix_and_primary() {
    let obj = tmp("npa-objects.yaml", &nodeport_objects("", TWO_ENDPOINTS));
    let all = "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n";
    let to = |ip: &str| {
        format!("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -d {ip} -j KUBE-NODEPORTS\n")
    };
    // A /0 other than the string 0.0.0.0/0: v1.30 treats it as a CIDR (per-IP rules).
    let cfg = tmp(
        "npa-zero.yaml",
        &format!("{CFG}nodePortAddresses: [10.0.0.0/0]\n"),
    );
    let old = render(Some("1.30"), &cfg, &obj, &[]);
    assert!(
        old.contains(&to("127.0.0.1")) && old.contains(&to("192.168.10.11")),
        "{old}"
    );
    assert!(!old.contains(all), "{old}");
    let new = render(Some("1.35"), &cfg, &obj, &[]);
    assert!(new.contains(all), "{new}");
    // primary: v1.30 (iptables) ignores it (all addresses); 1.35 uses the node IP, which
    // is not loopback, so localhost NodePorts are off.
    let cfg = tmp(
        "npa-primary.yaml",
        &format!("{CFG}nodePortAddresses: [primary]\n"),
    );
    let old = render(Some("1.30"), &cfg, &obj, &[]);
    assert!(old.contains(all), "{old}");
    let new = render(Some("1.35"), &cfg, &obj, &[]);
    assert!(new.contains(&to("192.168.10.11")), "{new}");
    assert!(!new.contains(all) && !new.contains("127.0.0.0/8"), "{new}");
}

#[test]
fn prefer_same_node_hints_pick_this_nodes_endpoint_in_1_35() {
    let eps = "- addresses: [10.244.1.5]
  nodeName: node-a
  hints:
    forNodes: [{name: node-a}]
    forZones: [{name: zone-a}]
- addresses: [10.244.2.6]
  nodeName: node-b
  hints:
    forNodes: [{name: node-b}]
    forZones: [{name: zone-a}]
";
    let cfg = tmp("node-hints.yaml", CFG);
    let obj = tmp(
        "node-hints-objects.yaml",
        &nodeport_objects("  trafficDistribution: PreferSameNode\n", eps),
    );
    let dnat = |ip: &str| format!("-j DNAT --to-destination {ip}:8080");
    let old = render(Some("1.30"), &cfg, &obj, &[]);
    assert!(
        old.contains(&dnat("10.244.1.5")) && old.contains(&dnat("10.244.2.6")),
        "{old}"
    );
    let new = render(Some("1.35"), &cfg, &obj, &[]);
    assert!(new.contains(&dnat("10.244.1.5")), "{new}");
    assert!(!new.contains(&dnat("10.244.2.6")), "{new}");
    // Zone hints alone (both in zone-a) keep both; with the PreferSameNode gate off too.
    let off = tmp(
        "node-hints-off.yaml",
        &format!("{CFG}featureGates:\n  PreferSameTrafficDistribution: false\n"),
    );
    let new = render(Some("1.35"), &off, &obj, &[]);
    assert!(
        new.contains(&dnat("10.244.1.5")) && new.contains(&dnat("10.244.2.6")),
        "{new}"
    );
}

#[test]
fn diff_infers_the_version_from_the_dump_and_says_so() {
    for (dir, want) in [
        ("golden/upstream", "1.30"),
        ("golden/upstream-v1.35", "1.35"),
    ] {
        let o = run(&[
            "diff",
            "--config",
            &corpus(dir, "nodeport-basic", "config.yaml"),
            "--objects",
            &corpus(dir, "nodeport-basic", "objects.yaml"),
            "--live",
            &corpus(dir, "nodeport-basic", "expected.save"),
        ]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{dir}: {e}");
        assert!(
            e.contains(&format!("diff: emulating {want} (")),
            "{dir}: {e}"
        );
    }
    // Explicitly the wrong release: the 1.30 dump lacks the 1.35 rules... except that a
    // node without nfacct writes the 1.30 forms, so only a real payload change shows:
    let o = run(&[
        "diff",
        "--emulated-version",
        "1.30",
        "--config",
        &corpus("golden/upstream-v1.35", "topology-hints", "config.yaml"),
        "--objects",
        &corpus("golden/upstream-v1.35", "topology-hints", "objects.yaml"),
        "--live",
        &corpus("golden/upstream-v1.35", "topology-hints", "expected.save"),
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}
