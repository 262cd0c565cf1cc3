//! Field hardening with the real daemon and real iptables in network namespaces: a Service
//! whose rules iptables-restore rejects is held back while the rest converges; SIGTERM
//! ends the daemon even while iptables-restore hangs; a rejected `apply` changes nothing;
//! cleanup removes every kube-proxy chain of both families and nothing else.

mod common;
use common::*;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The test hook of `kube_proxy_rs::sync::fault`.
const HOOK: &str = "KUBE_PROXY_RS_TEST_CORRUPT_PORT_NAME";
const BAD_PORT: &str = "kprs-test-hook-invalid-port";

/// SIGTERM on drop, even when the test panics.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

impl Daemon {
    fn start(topo: &Topology, objects: &str, env: &[(&str, String)], log: &Path) -> Daemon {
        let (cfg, obj) = topo.write_inputs(objects);
        let log = std::fs::File::create(log).unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &topo.node.name, BIN])
            .args(["--config", cfg.to_str().unwrap()])
            .args(["--objects", obj.to_str().unwrap()])
            .args(["--iptables-min-sync-period", "1s"])
            .args(["--healthz-bind-address", "127.0.0.1:10256"])
            .args(["--metrics-bind-address", "127.0.0.1:10249"])
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Daemon(cmd.spawn().expect("start the daemon"))
    }

    /// SIGTERM; whether the daemon exited within `limit` (a bound, never a measure).
    fn terminate(&mut self, limit: Duration) -> bool {
        // SAFETY: as in drop.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.0.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

/// Replaces the objects file atomically (the file source never sees half a file).
fn replace_objects(topo: &Topology, objects: &str) {
    let obj = topo.dir.join("objects.yaml");
    let tmp = obj.with_extension("new");
    std::fs::write(&tmp, objects).unwrap();
    std::fs::rename(&tmp, &obj).unwrap();
}

/// Polls (bounded) until `cond` holds.
fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}");
}

fn served_by(topo: &Topology, vip: &str, pod: usize) -> bool {
    tcp_once(&topo.client, None, sock(vip, 80)).is_ok_and(|s| s.server == pod_ip(pod).to_string())
}

/// `GET path` on 127.0.0.1:port inside `ns`: (status, body).
fn http_get(ns: &Netns, port: u16, path: &str) -> (u16, String) {
    let path = path.to_string();
    ns.enter(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    })
}

fn quarantined_metric(ns: &Netns) -> Option<f64> {
    let (_, body) = http_get(ns, 10249, "/metrics");
    body.lines()
        .find(|l| {
            l.starts_with("kubeproxy_rs_sync_proxy_rules_quarantined_services{ip_family=\"IPv4\"}")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn svc(name: &str, vip: &str, pod: usize, port_name: &str) -> String {
    Svc {
        name,
        cluster_ip: vip,
        endpoints: Some(vec![(pod, false)]),
        ..Svc::default()
    }
    .yaml()
    .replace("name: p\n", &format!("name: {port_name}\n"))
}

#[test]
fn a_rejected_service_is_held_back_while_the_rest_converges() {
    if !can_run() {
        return;
    }
    let topo = Topology::new(2);
    let log = topo.dir.join("daemon.log");
    let v1 = format!(
        "{NODE_YAML}{}{}",
        svc("web", "10.96.0.10", 0, "p"),
        svc("held", "10.96.0.11", 0, "p")
    );
    let mut daemon = Daemon::start(&topo, &v1, &[(HOOK, "bad".into())], &log);
    let long = Duration::from_secs(60);
    wait_until("both Services on pod 0", long, || {
        served_by(&topo, "10.96.0.10", 0) && served_by(&topo, "10.96.0.11", 0)
    });
    let applied_held: Vec<String> = topo
        .node
        .save("legacy")
        .lines()
        .filter(|l| l.contains("default/held"))
        .map(str::to_string)
        .collect();
    assert!(!applied_held.is_empty());

    // "held" turns bad (its renamed port hits the hook) and moves to pod 1; "web" moves
    // to pod 1 too. iptables-restore rejects held's rules: web must still move.
    let v2 = format!(
        "{NODE_YAML}{}{}",
        svc("web", "10.96.0.10", 1, "p"),
        svc("held", "10.96.0.11", 1, "bad")
    );
    replace_objects(&topo, &v2);
    wait_until("web on pod 1 despite the rejected Service", long, || {
        served_by(&topo, "10.96.0.10", 1)
    });
    let save = topo.node.save("legacy");
    assert!(!save.contains(BAD_PORT), "{save}");
    // held stays exactly as last applied: same chains, same jump rules, same traffic.
    let now_held: Vec<String> = save
        .lines()
        .filter(|l| l.contains("default/held"))
        .map(str::to_string)
        .collect();
    assert_eq!(now_held, applied_held);
    assert!(served_by(&topo, "10.96.0.11", 0));
    assert_eq!(quarantined_metric(&topo.node), Some(1.0));
    assert_eq!(http_get(&topo.node, 10256, "/healthz").0, 200);
    // A report and its multi-line fields (klog's `key=<` block: tab-indented lines, ` >`).
    let reports = || -> Vec<String> {
        let text = std::fs::read_to_string(&log).unwrap();
        let mut out: Vec<String> = Vec::new();
        let mut open = false;
        for l in text.lines() {
            if l.contains("iptables-restore rejected this Service's rules") {
                out.push(l.to_string());
                open = true;
            } else if open && (l.starts_with('\t') || l.starts_with(" >")) {
                let last = out.last_mut().unwrap();
                last.push('\n');
                last.push_str(l);
            } else {
                open = false;
            }
        }
        out
    };
    // One report per rejected version (the file source may show the Service before its
    // EndpointSlice: two versions), each naming the Service and the rejected line.
    let seen = reports();
    assert!(!seen.is_empty());
    for r in &seen {
        assert!(r.contains("default/held"), "{r}");
        assert!(r.contains(BAD_PORT), "names the line: {r}");
    }
    // An unrelated change syncs again; the unchanged bad Service is not retried.
    let v2b = format!("{v2}{}", svc("other", "10.96.0.13", 0, "p"));
    replace_objects(&topo, &v2b);
    wait_until("the unrelated Service", long, || {
        served_by(&topo, "10.96.0.13", 0)
    });
    assert_eq!(reports(), seen);
    assert!(served_by(&topo, "10.96.0.11", 0));

    // Fixed: retried because it changed, and applied.
    let v3 = format!(
        "{NODE_YAML}{}{}{}",
        svc("web", "10.96.0.10", 1, "p"),
        svc("held", "10.96.0.11", 1, "p"),
        svc("other", "10.96.0.13", 0, "p")
    );
    replace_objects(&topo, &v3);
    wait_until("held on pod 1 once fixed", long, || {
        served_by(&topo, "10.96.0.11", 1)
    });
    wait_until("the gauge back at 0", long, || {
        quarantined_metric(&topo.node) == Some(0.0)
    });
    assert!(daemon.terminate(Duration::from_secs(20)));
}

/// More rejected Services than one sync sets aside (10): that sync fails, the next ones
/// set the rest aside, and the healthy Service's change is applied in the end.
#[test]
fn more_rejected_services_than_one_sync_holds_still_converge() {
    if !can_run() {
        return;
    }
    let topo = Topology::new(2);
    let log = topo.dir.join("daemon.log");
    let bad: String = (0..12)
        .map(|i| svc(&format!("bad{i}"), &format!("10.96.1.{}", i + 1), 0, "bad"))
        .collect();
    let v1 = format!("{NODE_YAML}{}{bad}", svc("web", "10.96.0.10", 0, "p"));
    let mut daemon = Daemon::start(&topo, &v1, &[(HOOK, "bad".into())], &log);
    let long = Duration::from_secs(90);
    wait_until("web on pod 0 beside 12 rejected Services", long, || {
        served_by(&topo, "10.96.0.10", 0)
    });
    wait_until("all 12 held back", long, || {
        quarantined_metric(&topo.node) == Some(12.0)
    });
    let save = topo.node.save("legacy");
    assert!(!save.contains(BAD_PORT), "{save}");
    assert!(
        !save.contains("default/bad"),
        "never applied, so left out: {save}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let held = text
        .lines()
        .filter(|l| l.contains("iptables-restore rejected this Service's rules"))
        .count();
    assert!(held >= 12, "one report per rejected Service: {held}");
    // The first sync hit the bound: it failed as a whole, as upstream's would.
    assert!(text.contains("Failed to sync proxy rules"), "{text}");
    // A change of the healthy Service still converges with the 12 held.
    let v2 = format!("{NODE_YAML}{}{bad}", svc("web", "10.96.0.10", 1, "p"));
    replace_objects(&topo, &v2);
    wait_until("web on pod 1", long, || served_by(&topo, "10.96.0.10", 1));
    assert_eq!(http_get(&topo.node, 10256, "/healthz").0, 200);
    assert!(daemon.terminate(Duration::from_secs(20)));
}

#[test]
fn sigterm_ends_the_daemon_while_iptables_restore_hangs() {
    if !can_run() {
        return;
    }
    let topo = Topology::new(1);
    let fake = topo.dir.join("bin");
    std::fs::create_dir_all(&fake).unwrap();
    let mark = topo.dir.join("restore-started");
    for name in [
        "iptables-legacy-restore",
        "ip6tables-legacy-restore",
        "iptables-nft-restore",
        "ip6tables-nft-restore",
    ] {
        let p = fake.join(name);
        std::fs::write(
            &p,
            format!("#!/bin/sh\ntouch {}\nexec sleep 600\n", mark.display()),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        fake.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let objects = format!("{NODE_YAML}{}", svc("web", "10.96.0.10", 0, "p"));
    let log = topo.dir.join("daemon.log");
    let mut daemon = Daemon::start(&topo, &objects, &[("PATH", path)], &log);
    wait_until("the first restore to hang", Duration::from_secs(60), || {
        mark.exists()
    });
    assert!(
        daemon.terminate(Duration::from_secs(20)),
        "the daemon did not exit after SIGTERM:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

fn rejected_apply_changes_nothing(mode: &str) {
    if !can_run() {
        return;
    }
    let topo = Topology::new(1);
    let node = &topo.node;
    node.exec_ok(&[
        &format!("iptables-{mode}"),
        "-A",
        "INPUT",
        "-s",
        "10.9.9.9/32",
        "-j",
        "DROP",
    ]);
    // Reading nat makes legacy list it in saves from now on: read it before, too.
    node.exec_ok(&[&format!("iptables-{mode}"), "-t", "nat", "-S"]);
    let before = node.save(mode);
    // "empty" (no endpoints) puts a REJECT rule in filter, committed before nat's failure
    // without the up-front test; "bad" is rejected in nat.
    let objects = format!(
        "{NODE_YAML}{}{}",
        Svc {
            name: "empty",
            cluster_ip: "10.96.0.12",
            ..Svc::default()
        }
        .yaml(),
        svc("bad", "10.96.0.11", 0, "bad")
    );
    let (cfg, obj) = topo.write_inputs(&objects);
    let out = Command::new("ip")
        .args(["netns", "exec", &node.name, BIN, "apply"])
        .args(["--config", cfg.to_str().unwrap()])
        .args(["--objects", obj.to_str().unwrap()])
        .args(["--iptables", mode])
        .env(HOOK, "bad")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(BAD_PORT),
        "names the failing line: {stderr}"
    );
    assert_eq!(
        node.save(mode),
        before,
        "a rejected payload changes nothing"
    );
}

#[test]
fn rejected_apply_changes_nothing_legacy() {
    rejected_apply_changes_nothing("legacy");
}

#[test]
fn rejected_apply_changes_nothing_nft() {
    rejected_apply_changes_nothing("nft");
}

/// Chains kubelet (not kube-proxy) owns: cleanup must leave them.
const KUBELET_CHAINS: [&str; 3] = ["KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT"];

#[test]
fn cleanup_after_a_daemon_sync_leaves_no_kube_proxy_chain() {
    if !can_run() {
        return;
    }
    let topo = Topology::new(1);
    let node = &topo.node;
    for bin in ["iptables-legacy", "ip6tables-legacy"] {
        node.exec_ok(&[bin, "-t", "mangle", "-N", "KUBE-KUBELET-CANARY"]);
        node.exec_ok(&[bin, "-t", "mangle", "-N", "KUBE-IPTABLES-HINT"]);
        node.exec_ok(&[
            bin, "-A", "INPUT", "-p", "tcp", "--dport", "9999", "-j", "DROP",
        ]);
    }
    let objects = format!("{NODE_YAML}{}", svc("web", "10.96.0.10", 0, "p"));
    let log = topo.dir.join("daemon.log");
    let mut daemon = Daemon::start(&topo, &objects, &[], &log);
    let save_all = || {
        let mut s = String::new();
        for bin in ["iptables-legacy-save", "ip6tables-legacy-save"] {
            s.push_str(&normalize_save(&node.exec_ok(&[bin])));
        }
        s
    };
    wait_until(
        "both families synced with canaries",
        Duration::from_secs(60),
        || {
            let s = save_all();
            s.matches(":KUBE-PROXY-CANARY").count() == 6
                && s.contains(":KUBE-SVC-")
                && s.matches(":KUBE-MARK-MASQ").count() == 2
                && s.matches(":KUBE-PROXY-FIREWALL").count() == 2
        },
    );
    assert!(daemon.terminate(Duration::from_secs(20)));
    node.exec_ok(&[BIN, "--cleanup"]);
    let after = save_all();
    for line in after.lines() {
        let ours = line.contains("KUBE-") && !KUBELET_CHAINS.iter().any(|k| line.contains(k));
        assert!(!ours, "kube-proxy state left: {line}\n{after}");
    }
    for kept in [
        ":KUBE-KUBELET-CANARY",
        ":KUBE-IPTABLES-HINT",
        "--dport 9999 -j DROP",
    ] {
        assert_eq!(
            after.matches(kept).count(),
            2,
            "{kept} must stay in both families:\n{after}"
        );
    }
}
