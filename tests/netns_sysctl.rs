//! Start-up conntrack sysctls (spec §6.7) set by the real daemon binary in a fresh node
//! namespace, read back from inside it. maxPerCore is 0: nf_conntrack_max and the
//! module's hashsize are global, so this test never asks for them.

mod common;
use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

const SYSCTL_CONFIG: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: node-a
clusterCIDR: 10.244.0.0/16
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack:
  maxPerCore: 0
  tcpEstablishedTimeout: 2h0m0s
  tcpCloseWaitTimeout: 2m0s
  tcpBeLiberal: true
  udpTimeout: 45s
  udpStreamTimeout: 150s
";

/// (sysctl, value the config asks for).
const WANT: [(&str, &str); 5] = [
    ("nf_conntrack_tcp_timeout_established", "7200"),
    ("nf_conntrack_tcp_timeout_close_wait", "120"),
    ("nf_conntrack_tcp_be_liberal", "1"),
    ("nf_conntrack_udp_timeout", "45"),
    ("nf_conntrack_udp_timeout_stream", "150"),
];

fn read_in(ns: &Netns, name: &str) -> String {
    ns.exec_ok(&["cat", &format!("/proc/sys/net/netfilter/{name}")])
        .trim()
        .to_string()
}

fn read_here(path: &str) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

#[test]
fn daemon_sets_conntrack_sysctls_in_its_namespace() {
    if !can_run() {
        return;
    }
    let topo = Topology::new(0);
    let ns = &topo.node;
    // Our namespace's (global or per-namespace) values, which must not move.
    let ours: Vec<(String, String)> = WANT
        .iter()
        .map(|(k, _)| format!("/proc/sys/net/netfilter/{k}"))
        .chain(["/proc/sys/net/netfilter/nf_conntrack_max".into()])
        .chain(["/sys/module/nf_conntrack/parameters/hashsize".into()])
        .chain(["/proc/sys/net/ipv4/conf/all/route_localnet".into()])
        .map(|p| {
            let v = read_here(&p);
            (p, v)
        })
        .collect();
    for (k, v) in WANT {
        assert_ne!(
            read_in(ns, k),
            v,
            "{k} must start elsewhere to show a write"
        );
    }
    let route_localnet = |ns: &Netns| {
        ns.exec_ok(&["cat", "/proc/sys/net/ipv4/conf/all/route_localnet"])
            .trim()
            .to_string()
    };
    assert_eq!(
        route_localnet(ns),
        "0",
        "a fresh namespace starts without it"
    );
    let cfg = topo.dir.join("config.yaml");
    std::fs::write(&cfg, SYSCTL_CONFIG).unwrap();
    let obj = topo.dir.join("objects.yaml");
    std::fs::write(&obj, NODE_YAML).unwrap();
    let log = topo.dir.join("daemon.log");
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name, BIN])
        .args(["--config", cfg.to_str().unwrap()])
        .args(["--objects", obj.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start the daemon");
    let mut daemon = Daemon(child);

    // Bounds the wait on a loaded machine; not a measure.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = daemon.0.try_wait().unwrap();
        assert!(
            status.is_none(),
            "daemon exited ({status:?}):\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        if WANT.iter().all(|(k, v)| read_in(ns, k) == *v) {
            break;
        }
        assert!(Instant::now() < deadline, "sysctls never set");
        std::thread::sleep(Duration::from_millis(100));
    }
    // It synced the rules too, so start-up went past the sysctls.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ns.save("legacy").contains("-A KUBE-POSTROUTING") {
        assert!(Instant::now() < deadline, "no rules");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(daemon.0.try_wait().unwrap().is_none(), "still running");
    // Localhost NodePorts are on by default (nodePortAddresses match-all): spec §3.16.
    assert_eq!(route_localnet(ns), "1");
    for (p, v) in &ours {
        assert_eq!(&read_here(p), v, "{p} changed outside the test namespace");
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("nf_conntrack_max"),
        "maxPerCore 0 leaves nf_conntrack_max alone:\n{text}"
    );
}

/// A namespace of this test's own (`vob-` names), deleted on drop.
struct OwnNs(String);

impl Drop for OwnNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// Runs the daemon with `nodePortAddresses` set to `list` in a fresh namespace until its
/// rules are in; returns `route_localnet` there and the restored NodePort tail rule(s).
fn route_localnet_with(tag: &str, list: &str, version: &str) -> (String, String) {
    let name = format!("vob-rl{tag}-{}", std::process::id() % 100_000);
    run(&["ip", "netns", "add", &name]);
    let ns = OwnNs(name.clone());
    run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
    let exec = |args: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", &name])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let read = || {
        exec(&["cat", "/proc/sys/net/ipv4/conf/all/route_localnet"])
            .trim()
            .to_string()
    };
    assert_eq!(read(), "0", "a fresh namespace starts without it");
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
             mode: iptables\nhostnameOverride: node-a\nclusterCIDR: 10.244.0.0/16\n\
             healthzBindAddress: \"\"\nmetricsBindAddress: \"\"\nconntrack:\n  maxPerCore: 0\n\
             nodePortAddresses: {list}\n"
        ),
    )
    .unwrap();
    let obj = dir.join("objects.yaml");
    std::fs::write(&obj, NODE_YAML).unwrap();
    let log = dir.join("daemon.log");
    let child = Command::new("ip")
        .args(["netns", "exec", &name, BIN])
        .args(["--config", cfg.to_str().unwrap()])
        .args(["--objects", obj.to_str().unwrap()])
        .args(["--emulated-version", version])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start the daemon");
    let mut daemon = Daemon(child);
    // Bounds the wait on a loaded machine; not a measure.
    let deadline = Instant::now() + Duration::from_secs(60);
    let rules = loop {
        let status = daemon.0.try_wait().unwrap();
        assert!(
            status.is_none(),
            "daemon exited ({status:?}):\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let save = exec(&["iptables-legacy-save", "-t", "nat"]);
        if save.contains("-A KUBE-POSTROUTING") {
            break save;
        }
        assert!(Instant::now() < deadline, "no rules");
        std::thread::sleep(Duration::from_millis(100));
    };
    let tail: Vec<&str> = rules
        .lines()
        .filter(|l| l.contains("kubernetes service nodeports"))
        .collect();
    let value = read();
    drop(daemon);
    drop(ns);
    let _ = std::fs::remove_dir_all(&dir);
    (value, tail.join("\n"))
}

/// Spec §3.16 / §8 P5: `route_localnet` only when localhost NodePorts apply. Under 1.35
/// `[primary]` is the node's IP (192.168.50.1): no loopback, so it stays 0; an explicit
/// loopback CIDR sets it.
#[test]
fn route_localnet_only_when_loopback_is_a_node_port_address() {
    if !can_run() {
        return;
    }
    // (The namespace has no 192.168.50.1 interface, so no per-IP tail rule either.)
    let (value, tail) = route_localnet_with("p", "[primary]", "1.35");
    assert_eq!(value, "0", "{tail}");
    assert!(!tail.contains("127.0.0"), "{tail}");
    let (value, tail) = route_localnet_with("l", "[127.0.0.0/8]", "1.35");
    assert_eq!(value, "1", "{tail}");
    let (value, _) = route_localnet_with("o", "[192.168.50.0/24]", "1.30");
    assert_eq!(value, "0");
}
