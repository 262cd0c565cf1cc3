//! S5 and O3 with real UDP traffic (root): the daemon in a node namespace, the kernel's
//! conntrack entries made by a client's datagrams, and which of them each emulated release
//! deletes after a sync (spec §6.7 for 1.30, §8.3 S5 for 1.35), read back with
//! `conntrack -L`; the reconciler's metrics exist under 1.35 only (§8.4 O3).

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpStream, UdpSocket};
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

/// `dns` (10.96.0.53:53, pod 0) and `other` (10.96.0.54:53, pod `other_pod`), both UDP.
fn objects(other_pod: usize) -> String {
    let udp = |name, ip, pod| Svc {
        name,
        cluster_ip: ip,
        port: 53,
        protocol: "UDP",
        target_port: UDP_PORT,
        endpoints: Some(vec![(pod, false)]),
        ..Svc::default()
    };
    let mut y = NODE_YAML.to_string();
    y.push_str(&udp("dns", "10.96.0.53", 0).yaml());
    y.push_str(&udp("other", "10.96.0.54", other_pod).yaml());
    y
}

/// One datagram from the client's `sport` to `dst`; with `answer`, waits (bounded) for
/// the reply and returns which pod sent it.
fn send(topo: &Topology, sport: u16, dst: SocketAddrV4, answer: bool) -> Option<String> {
    topo.client.enter(move || {
        let s = UdpSocket::bind((CLIENT_IP, sport)).expect("bind client port");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 256];
        for _ in 0..5 {
            s.send_to(b"who\n", dst).expect("send");
            if !answer {
                return None;
            }
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                return text.split_whitespace().next().map(String::from);
            }
        }
        None
    })
}

/// The node's UDP entries as (client port, original destination, reply source).
fn entries(topo: &Topology) -> Vec<(u16, String, String)> {
    let out = topo.node.exec(&["conntrack", "-L", "-p", "udp"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .filter_map(|l| {
            let v: Vec<&str> = l.split_whitespace().collect();
            let get = |k: &str, nth: usize| {
                v.iter()
                    .filter_map(|w| w.strip_prefix(k))
                    .nth(nth)
                    .map(String::from)
            };
            Some((
                get("sport=", 0)?.parse().ok()?,
                format!("{}:{}", get("dst=", 0)?, get("dport=", 0)?),
                format!("{}:{}", get("src=", 1)?, get("sport=", 1)?),
            ))
        })
        .collect()
}

fn has(topo: &Topology, sport: u16) -> bool {
    entries(topo).iter().any(|e| e.0 == sport)
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    // Bounds waiting on a loaded machine; never a measure.
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(60), "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metrics(topo: &Topology) -> String {
    topo.node.enter(|| {
        let Ok(mut s) = TcpStream::connect("127.0.0.1:10249") else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(IO_TIMEOUT));
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    })
}

/// The value of a series (`name{labels}`) in a scrape, if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

const DELETED: &str = "kubeproxy_conntrack_reconciler_deleted_entries_total{ip_family=\"IPv4\"}";
const RUNS: &str = "kubeproxy_conntrack_reconciler_sync_duration_seconds_count{ip_family=\"IPv4\"}";

// Client source ports, one per entry the test follows.
const PRE_53: u16 = 40053;
const PRE_54: u16 = 40054;
const GOOD: u16 = 41000;
const LEAVING: u16 = 41001;
const STALE: u16 = 41002;

fn run(version: &str) {
    let topo = Topology::new(2);
    let node = &topo.node;
    // Entries outlive the test's waits on a loaded machine (default 30 s).
    node.sysctl("net.netfilter.nf_conntrack_udp_timeout", "600");
    node.sysctl("net.netfilter.nf_conntrack_udp_timeout_stream", "600");
    // Conntrack tracks a namespace's packets once a rule there needs it.
    node.exec_ok(&[
        "iptables-legacy",
        "-A",
        "FORWARD",
        "-m",
        "conntrack",
        "--ctstate",
        "NEW",
    ]);

    // Before any rule: datagrams to the ClusterIP go out unNATed (reply source = VIP).
    send(&topo, PRE_53, sock("10.96.0.53", 53), false);
    send(&topo, PRE_54, sock("10.96.0.53", 54), false);
    wait_until("pre-start entries", || {
        has(&topo, PRE_53) && has(&topo, PRE_54)
    });

    let (cfg, obj) = topo.write_inputs(&objects(1));
    let log = std::fs::File::create(topo.dir.join("daemon.log")).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &node.name, BIN])
        .args(["--config", cfg.to_str().unwrap()])
        .args(["--objects", obj.to_str().unwrap()])
        .args(["--emulated-version", version])
        .args(["--iptables-min-sync-period", "1s"])
        .args(["--healthz-bind-address", "127.0.0.1:10256"])
        .args(["--metrics-bind-address", "127.0.0.1:10249"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the daemon");
    let _daemon = Daemon(child);

    // First sync: both releases delete the unNATed entry to the service port.
    wait_until("first sync's cleanup", || !has(&topo, PRE_53));
    let v135 = version == "1.35";
    if v135 {
        wait_until("first reconcile counted", || {
            value(&metrics(&topo), DELETED).is_some()
        });
        let m = metrics(&topo);
        assert_eq!(value(&m, DELETED), Some(1.0), "only the :53 entry\n{m}");
    }
    // 1.30 flushes every port of a VIP whose service got endpoints; 1.35 only its port.
    assert_eq!(has(&topo, PRE_54), v135, "{version}: {:?}", entries(&topo));

    // Entries with the rules in place.
    assert_eq!(
        send(&topo, GOOD, sock("10.96.0.53", 53), true).as_deref(),
        Some("10.244.1.11")
    );
    assert_eq!(
        send(&topo, LEAVING, sock("10.96.0.54", 53), true).as_deref(),
        Some("10.244.1.12")
    );
    // One datagram that slips past the DNAT (as before kube-proxy's rules, or in a race).
    let rule = [
        "PREROUTING",
        "-p",
        "udp",
        "--sport",
        "41002",
        "-j",
        "ACCEPT",
    ];
    node.exec_ok(&[&["iptables-legacy", "-t", "nat", "-I"][..], &rule].concat());
    send(&topo, STALE, sock("10.96.0.53", 53), false);
    node.exec_ok(&[&["iptables-legacy", "-t", "nat", "-D"][..], &rule].concat());
    wait_until("entries made", || {
        [GOOD, LEAVING, STALE].iter().all(|p| has(&topo, *p))
    });
    let stale = entries(&topo).into_iter().find(|e| e.0 == STALE).unwrap();
    assert_eq!(stale.2, "10.96.0.53:53", "not DNATed: {stale:?}");

    // `other` moves from pod 1 to pod 0: a UDP endpoint change.
    let tmp = obj.with_extension("new");
    std::fs::write(&tmp, objects(0)).unwrap();
    std::fs::rename(&tmp, &obj).unwrap();
    wait_until("the gone endpoint's entry deleted", || !has(&topo, LEAVING));
    if v135 {
        wait_until("second reconcile counted", || {
            value(&metrics(&topo), DELETED).is_some_and(|v| v >= 3.0)
        });
    }
    let now = entries(&topo);
    assert!(
        has(&topo, GOOD),
        "{version}: answered by a serving endpoint: kept {now:?}"
    );
    // 1.30 deletes per change (`dns` did not change); 1.35 reconciles every UDP service.
    assert_eq!(!has(&topo, STALE), v135, "{version}: {now:?}");
    assert_eq!(
        has(&topo, PRE_54),
        v135,
        "{version}: not a service port {now:?}"
    );

    let m = metrics(&topo);
    if v135 {
        assert_eq!(value(&m, DELETED), Some(3.0), "{m}");
        assert!(value(&m, RUNS).is_some_and(|n| n >= 2.0), "{m}");
        assert!(m.contains("# TYPE kubeproxy_conntrack_reconciler_sync_duration_seconds histogram"));
    } else {
        assert!(
            m.contains("kubeproxy_sync_proxy_rules_duration_seconds"),
            "{m}"
        );
        assert!(
            !m.contains("conntrack_reconciler"),
            "1.30 has no reconciler:\n{m}"
        );
    }
}

#[test]
fn v1_30_deletes_per_change() {
    if can_run() {
        run("1.30");
    }
}

#[test]
fn v1_35_reconciles_every_udp_service() {
    if can_run() {
        run("1.35");
    }
}
