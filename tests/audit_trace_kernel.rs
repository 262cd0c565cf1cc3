//! `trace` against a real kernel: the corpus rules applied with iptables-legacy in a
//! network namespace playing the node, a client namespace and an endpoint namespace
//! (holding every endpoint address, with a listener that reports which address was
//! reached and which source it saw). Needs root; skips with a message otherwise.

use kube_proxy_rs::audit::parse::{tokenize, Ruleset};
use kube_proxy_rs::audit::trace::{trace, Packet, Verdict};
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const NODE_CLIENT_SIDE: &str = "172.31.254.1";
const NODE_POD_SIDE: &str = "172.31.255.1";
const OUTSIDE_CLIENT: &str = "192.168.50.2";
const TRIES: usize = 60;

const LISTENER: &str = r#"
import socket, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(128)
    while True:
        c, peer = s.accept()
        l = c.getsockname()
        c.sendall(("%s:%d %s\n" % (l[0], l[1], peer[0])).encode()); c.close()
ports = [int(p) for p in sys.argv[1:]]
for p in ports:
    threading.Thread(target=serve, args=(p,), daemon=True).start()
import time; time.sleep(0.5); print("ready", flush=True)
threading.Event().wait()
"#;

const CLIENT: &str = r#"
import socket, sys, errno
dst, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for _ in range(n):
    s = socket.socket(); s.settimeout(5)
    try:
        s.connect((dst, port)); print(s.makefile().readline().strip())
    except ConnectionRefusedError: print("REFUSED")
    except (socket.timeout, OSError) as e: print("ERROR", e)
    finally: s.close()
"#;

fn sh(args: &[&str]) -> Result<String, String> {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if !o.status.success() {
        return Err(format!("{args:?}: {}", String::from_utf8_lossy(&o.stderr)));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn ns(name: &str, args: &[&str]) -> Result<String, String> {
    let mut v = vec!["ip", "netns", "exec", name];
    v.extend_from_slice(args);
    sh(&v)
}

/// Three namespaces wired node-centred; removed on drop (also on panic).
struct Lab {
    node: String,
    client: String,
    pods: String,
    listener: Option<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut l) = self.listener.take() {
            let _ = l.kill();
            let _ = l.wait();
        }
        for n in [&self.node, &self.client, &self.pods] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let id = format!("{}{}", std::process::id() % 100000, tag);
        let lab = Lab {
            node: format!("audn{id}"),
            client: format!("audc{id}"),
            pods: format!("audp{id}"),
            listener: None,
        };
        for n in [&lab.node, &lab.client, &lab.pods] {
            let _ = Command::new("ip")
                .args(["netns", "del", n])
                .stderr(Stdio::null())
                .status();
            sh(&["ip", "netns", "add", n]).unwrap();
            ns(n, &["ip", "link", "set", "lo", "up"]).unwrap();
            ns(n, &["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"]).unwrap();
        }
        ns(&lab.node, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]).unwrap();
        for (peer, addr) in [(&lab.client, NODE_CLIENT_SIDE), (&lab.pods, NODE_POD_SIDE)] {
            let (a, b) = (format!("va{peer}"), format!("vb{peer}"));
            let (a, b) = (&a[..a.len().min(15)], &b[..b.len().min(15)]);
            ns(
                &lab.node,
                &["ip", "link", "add", a, "type", "veth", "peer", "name", b],
            )
            .unwrap();
            ns(&lab.node, &["ip", "link", "set", b, "netns", peer]).unwrap();
            ns(peer, &["ip", "link", "set", b, "name", "eth0"]).unwrap();
            ns(
                &lab.node,
                &["ip", "addr", "add", &format!("{addr}/32"), "dev", a],
            )
            .unwrap();
            ns(&lab.node, &["ip", "link", "set", a, "up"]).unwrap();
            ns(
                &lab.node,
                &["sysctl", "-qw", &format!("net.ipv4.conf.{a}.rp_filter=0")],
            )
            .unwrap();
            ns(peer, &["ip", "link", "set", "eth0", "up"]).unwrap();
            ns(peer, &["ip", "route", "add", addr, "dev", "eth0"]).unwrap();
            ns(peer, &["ip", "route", "add", "default", "via", addr]).unwrap();
        }
        // A real node has a default route: unDNATed service traffic reaches FORWARD.
        let out = lab.node_if(&lab.pods);
        ns(&lab.node, &["ip", "route", "add", "default", "dev", &out]).unwrap();
        lab
    }

    fn node_if(&self, peer: &str) -> String {
        let a = format!("va{peer}");
        a[..a.len().min(15)].to_string()
    }

    fn add_client(&self, ip: &str) {
        self.add_host(&self.client, ip);
    }

    fn add_endpoint(&self, ip: &str) {
        self.add_host(&self.pods, ip);
    }

    /// Gives namespace `host` the address `ip` and routes it from the node.
    fn add_host(&self, host: &str, ip: &str) {
        ns(
            host,
            &["ip", "addr", "add", &format!("{ip}/32"), "dev", "eth0"],
        )
        .unwrap();
        ns(
            &self.node,
            &[
                "ip",
                "route",
                "replace",
                &format!("{ip}/32"),
                "dev",
                &self.node_if(host),
            ],
        )
        .unwrap();
    }

    fn listen(&mut self, ports: &BTreeSet<u16>) {
        let mut args = vec![
            "netns".to_string(),
            "exec".into(),
            self.pods.clone(),
            "python3".into(),
            "-c".into(),
            LISTENER.into(),
        ];
        args.extend(ports.iter().map(|p| p.to_string()));
        let mut child = Command::new("ip")
            .args(&args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut buf = [0u8; 6];
        std::io::Read::read_exact(&mut out, &mut buf).expect("listener starts");
        assert_eq!(&buf, b"ready\n");
        self.listener = Some(child);
    }

    fn apply(&self, case: &Path) {
        let ensure = std::fs::read_to_string(case.join("expected.ensure")).unwrap();
        for line in ensure.lines() {
            let args: Vec<String> = tokenize(line)
                .unwrap()
                .into_iter()
                .map(|t| t.text.into_owned())
                .collect();
            let mut a: Vec<&str> = vec!["iptables-legacy", "-w"];
            a.extend(args.iter().map(String::as_str));
            if args[2] == "-N" {
                let _ = ns(&self.node, &a); // exists already: fine, like EnsureChain
            } else {
                let mut check = a.clone();
                check[4] = "-C";
                if ns(&self.node, &check).is_err() {
                    ns(&self.node, &a).unwrap();
                }
            }
        }
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.node,
                "iptables-legacy-restore",
                "-w",
                "--noflush",
                "--counters",
            ])
            .stdin(std::fs::File::open(case.join("expected.rules")).unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "restore: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn connect(&self, dst: &str, port: u16, n: usize) -> Vec<String> {
        ns(
            &self.client,
            &[
                "python3",
                "-c",
                CLIENT,
                dst,
                &port.to_string(),
                &n.to_string(),
            ],
        )
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// (dst, dport) of every TCP cluster IP / external IP / LB IP / node port entry.
fn entries(save: &Ruleset) -> Vec<(String, u16, bool)> {
    let mut out = Vec::new();
    let nat = save.table("nat").unwrap();
    for (chain, nodeport) in [("KUBE-SERVICES", false), ("KUBE-NODEPORTS", true)] {
        let Some(c) = nat.chain(chain) else { continue };
        for r in &c.rules {
            let s = &r.spec;
            if s.proto.as_ref().map(|p| p.value.as_str()) != Some("tcp") {
                continue;
            }
            let Some(port) = s.match_value("tcp", "--dport").and_then(|p| p.parse().ok()) else {
                continue;
            };
            match (&s.dst, nodeport) {
                (Some(d), false) if !d.neg => {
                    out.push((d.value.trim_end_matches("/32").to_string(), port, false))
                }
                (None, true) => out.push((NODE_CLIENT_SIDE.to_string(), port, true)),
                _ => {}
            }
        }
    }
    // Filter-table REJECTs (services without endpoints) are entries too.
    if let Some(c) = save.table("filter").and_then(|t| t.chain("KUBE-SERVICES")) {
        for r in &c.rules {
            if let (Some(d), Some(p)) = (
                &r.spec.dst,
                r.spec
                    .match_value("tcp", "--dport")
                    .and_then(|p| p.parse().ok()),
            ) {
                out.push((d.value.trim_end_matches("/32").to_string(), p, false));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn check_case(name: &str, tag: &str) {
    let case = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("golden/upstream")
        .join(name);
    let save =
        Ruleset::parse(&std::fs::read_to_string(case.join("expected.save")).unwrap()).unwrap();
    let mut lab = Lab::new(tag);
    // Endpoints: every DNAT destination.
    let mut ports = BTreeSet::new();
    let mut eps = BTreeSet::new();
    for c in &save.table("nat").unwrap().chains {
        for r in &c.rules {
            if let Some((ip, port)) = r
                .spec
                .target_value("--to-destination")
                .and_then(|d| d.rsplit_once(':'))
            {
                if r.spec.proto.as_ref().is_some_and(|p| p.value == "tcp") {
                    eps.insert(ip.to_string());
                    ports.insert(port.parse::<u16>().unwrap());
                }
            }
        }
    }
    for ip in &eps {
        lab.add_endpoint(ip);
    }
    // Clients: one outside every cluster CIDR, one inside the local-traffic CIDR if any.
    let text = std::fs::read_to_string(case.join("expected.save")).unwrap();
    let mut clients = vec![OUTSIDE_CLIENT.to_string()];
    if let Some(cidr) = text.split("! -s ").nth(1).and_then(|s| s.split(' ').next()) {
        if let Some((net, _)) = cidr.split_once('/') {
            let mut o: Vec<u8> = net.split('.').map(|x| x.parse().unwrap()).collect();
            o[3] = 200;
            let ip = format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3]);
            if !eps.contains(&ip) && !cidr.starts_with("127.") {
                clients.push(ip);
            }
        }
    }
    for c in &clients {
        lab.add_client(c);
    }
    lab.listen(&ports);
    lab.apply(&case);
    let affinity = text.contains("--rcheck");
    let node_ips: Vec<IpAddr> = [NODE_CLIENT_SIDE, NODE_POD_SIDE]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let mut checked = 0;
    for (dst, port, _) in entries(&save) {
        for client in &clients {
            let pkt = Packet {
                src: client.parse().unwrap(),
                dst: dst.parse().unwrap(),
                dport: port,
                proto: "tcp".into(),
                from_node: false,
            };
            let t = trace(&save, &pkt, &node_ips);
            let ctx = format!("{name}: {client} -> {dst}:{port}\n{}", t.to_text());
            // Merged outcomes still add up to every branch, none left out.
            let total: f64 = t.outcomes.iter().map(|o| o.probability).sum();
            assert!(t.more.is_none() && (total - 1.0).abs() < 1e-9, "{ctx}");
            if t.outcomes.iter().any(|o| o.verdict == Verdict::Drop) {
                continue; // a drop only shows as a timeout: not worth the wait
            }
            let reject = t
                .outcomes
                .iter()
                .all(|o| matches!(o.verdict, Verdict::Reject(_)));
            let n = if reject || t.outcomes.len() == 1 {
                3
            } else {
                TRIES
            };
            let got = lab.connect(&dst, port, n);
            if reject {
                assert!(got.iter().all(|g| g == "REFUSED"), "{ctx}\nkernel: {got:?}");
                checked += 1;
                continue;
            }
            // Connections to node addresses that are not DNATed reach the node itself.
            if t.outcomes.iter().all(|o| o.dnat.is_none()) {
                continue;
            }
            let mut reached: HashMap<String, usize> = HashMap::new();
            for g in &got {
                let (local, peer) = g
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("{ctx}\nkernel: {g}"));
                let o = t
                    .outcomes
                    .iter()
                    .find(|o| o.dnat.as_deref() == Some(local))
                    .unwrap_or_else(|| panic!("{ctx}\nkernel reached {local}, not predicted"));
                let expect_src = if o.masquerade {
                    NODE_POD_SIDE
                } else {
                    client.as_str()
                };
                assert_eq!(peer, expect_src, "{ctx}\nsource seen by {local}");
                *reached.entry(local.to_string()).or_default() += 1;
            }
            if !affinity {
                for o in &t.outcomes {
                    if o.probability >= 0.2 {
                        let d = o.dnat.as_deref().unwrap();
                        assert!(
                            reached.contains_key(d),
                            "{ctx}\n{d} never reached in {n} tries: {reached:?}"
                        );
                    }
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 1, "{name}: only {checked} entries checked");
}

macro_rules! kernel_case {
    ($fn:ident, $case:expr, $tag:expr) => {
        #[test]
        fn $fn() {
            if !is_root() {
                eprintln!("skipped: needs root for network namespaces");
                return;
            }
            check_case($case, $tag);
        }
    };
}

kernel_case!(kernel_clusterip_single_port, "clusterip-single-port", "a");
kernel_case!(kernel_endpoint_counts, "endpoint-counts-1-2-3-5", "b");
kernel_case!(kernel_nodeport_basic, "nodeport-basic", "c");
kernel_case!(kernel_no_endpoints, "no-endpoints", "d");
kernel_case!(kernel_masquerade_all, "masquerade-all", "e");
kernel_case!(kernel_realistic_cluster, "realistic-cluster", "f");
