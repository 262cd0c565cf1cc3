//! Network-namespace harness for end-to-end tests: throwaway namespaces named
//! `kprs-<random>-<role>`, veth wiring of a node, an outside client and pods, echo
//! servers that answer with the addresses they saw, and clients that run inside a
//! namespace. Every namespace is deleted on drop, also when a test panics.
#![allow(dead_code)]

/// The list/watch test API server (used by the daemon tests).
pub mod apiserver;
/// A throwaway CA for the test API server's TLS.
pub mod pki;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Generous: the machine may be loaded; these bound waiting, they are never asserted on.
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);

pub const BIN: &str = env!("CARGO_BIN_EXE_kube-proxy-rs");

/// Root and the `ip` tool are needed; without them a test prints why and passes vacuously.
pub fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: network-namespace tests need root");
        return false;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        eprintln!("SKIPPED: the `ip` tool (iproute2) is not installed");
        return false;
    }
    true
}

fn unique() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:x}",
        (nanos ^ (std::process::id() << 12) ^ (n << 24)) & 0xffffff
    )
}

fn check(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn run(args: &[&str]) -> Output {
    check(
        Command::new(args[0])
            .args(&args[1..])
            .output()
            .expect(args[0]),
        &args.join(" "),
    )
}

pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Named `<prefix>-<id>-<role>`; the prefix is `kprs` unless `KPRS_NETNS_PREFIX`
    /// sets one (engineers sharing a machine keep their namespaces apart).
    pub fn new(id: &str, role: &str) -> Netns {
        let prefix = std::env::var("KPRS_NETNS_PREFIX").unwrap_or_else(|_| "kprs".into());
        let name = format!("{prefix}-{id}-{role}");
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> args...`
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        run(&v)
    }

    /// Runs a command inside the namespace; returns its output whatever the status.
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    /// Like [`Netns::exec`] but the command must succeed; returns stdout.
    pub fn exec_ok(&self, args: &[&str]) -> String {
        let out = check(self.exec(args), &args.join(" "));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn sh(&self, script: &str) -> Output {
        self.exec(&["sh", "-c", script])
    }

    /// Writes /proc/sys directly (the `sysctl` tool, from procps, may be absent).
    pub fn sysctl(&self, key: &str, value: &str) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.exec_ok(&["sh", "-c", &format!("echo {value} > {path}")]);
    }

    /// Runs `f` on a thread that has joined this namespace: sockets it creates (and
    /// processes it spawns) live there.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = PathBuf::from("/run/netns").join(&self.name);
        std::thread::spawn(move || {
            let fd = File::open(&path).expect("open netns");
            // SAFETY: setns on a namespace fd affects only this (fresh) thread.
            let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in namespace panicked")
    }

    /// `iptables-<mode>-save` output without comment lines and counters.
    pub fn save(&self, mode: &str) -> String {
        let text = self.exec_ok(&[&format!("iptables-{mode}-save")]);
        normalize_save(&text)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Drops `#` lines and `[packets:bytes]` of chain lines.
pub fn normalize_save(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let line = match (line.starts_with(':'), line.rfind(" [")) {
            (true, Some(i)) => &line[..i],
            _ => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);
/// A second client address, outside the LB source ranges the tests allow.
pub const CLIENT_IP2: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 3);
/// The node's address towards its pods (the masquerade source seen by pods).
pub const NODE_POD_GW: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
pub const TCP_PORT: u16 = 8080;
pub const UDP_PORT: u16 = 8053;

pub fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 1, 11 + i as u8)
}

/// A node namespace routing between an outside client (192.168.50.0/24) and pods
/// (10.244.1.11.., each on its own routed veth, so that every packet between pods or
/// to a pod crosses the node's netfilter). Each pod runs TCP and UDP echo servers.
pub struct Topology {
    pub id: String,
    pub dir: PathBuf,
    pub node: Netns,
    pub client: Netns,
    pub uplink: Netns,
    pub pods: Vec<Netns>,
}

impl Topology {
    pub fn new(pods: usize) -> Topology {
        let id = unique();
        let dir = std::env::temp_dir().join(format!("kprs-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let node = Netns::new(&id, "node");
        let client = Netns::new(&id, "client");
        let uplink = Netns::new(&id, "up");
        let mut topo = Topology {
            id: id.clone(),
            dir,
            node,
            client,
            uplink,
            pods: Vec::new(),
        };
        let node = &topo.node;
        node.sysctl("net.ipv4.ip_forward", "1");
        // A real node has a default route: without one, traffic to a VIP that no rule
        // DNATs would fail routing before the filter table could REJECT it. The route
        // leads to a namespace that does not forward, so nothing leaves our namespaces.
        let up = &topo.uplink;
        node.ip(&[
            "link", "add", "uplink", "type", "veth", "peer", "name", "eth0", "netns", &up.name,
        ]);
        node.ip(&["addr", "add", "172.30.0.1/24", "dev", "uplink"]);
        node.ip(&["link", "set", "uplink", "up"]);
        up.ip(&["addr", "add", "172.30.0.2/24", "dev", "eth0"]);
        up.ip(&["link", "set", "eth0", "up"]);
        node.ip(&["route", "add", "default", "via", "172.30.0.2"]);
        node.ip(&[
            "link",
            "add",
            "vc",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &topo.client.name,
        ]);
        node.ip(&["addr", "add", "192.168.50.1/24", "dev", "vc"]);
        node.ip(&["link", "set", "vc", "up"]);
        let c = &topo.client;
        c.ip(&["addr", "add", "192.168.50.2/24", "dev", "eth0"]);
        c.ip(&["addr", "add", "192.168.50.3/24", "dev", "eth0"]);
        c.ip(&["link", "set", "eth0", "up"]);
        c.ip(&["route", "add", "default", "via", "192.168.50.1"]);
        for i in 0..pods {
            let pod = Netns::new(&id, &format!("pod{i}"));
            let veth = format!("vp{i}");
            let ip = pod_ip(i).to_string();
            node.ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &pod.name,
            ]);
            node.ip(&["addr", "add", "10.244.1.1/32", "dev", &veth]);
            node.ip(&["link", "set", &veth, "up"]);
            node.ip(&["route", "add", &format!("{ip}/32"), "dev", &veth]);
            pod.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
            pod.ip(&["link", "set", "eth0", "up"]);
            pod.ip(&["route", "add", "10.244.1.1", "dev", "eth0"]);
            pod.ip(&[
                "route",
                "add",
                "default",
                "via",
                "10.244.1.1",
                "dev",
                "eth0",
            ]);
            start_echo_servers(&pod, pod_ip(i));
            topo.pods.push(pod);
        }
        topo
    }

    /// Writes config and objects files and runs `kube-proxy-rs apply` in the node namespace.
    pub fn apply(&self, objects: &str, mode: &str) -> Output {
        let (cfg, obj) = self.write_inputs(objects);
        self.node.exec(&[
            BIN,
            "apply",
            "--config",
            cfg.to_str().unwrap(),
            "--objects",
            obj.to_str().unwrap(),
            "--iptables",
            mode,
        ])
    }

    pub fn apply_ok(&self, objects: &str, mode: &str) {
        check(self.apply(objects, mode), "kube-proxy-rs apply");
    }

    pub fn write_inputs(&self, objects: &str) -> (PathBuf, PathBuf) {
        let cfg = self.dir.join("config.yaml");
        std::fs::write(&cfg, CONFIG).unwrap();
        let obj = self.dir.join("objects.yaml");
        std::fs::write(&obj, objects).unwrap();
        (cfg, obj)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// maxPerCore 0: nf_conntrack_max and hashsize are global; a daemon in a test namespace
/// must not even try them (the kernel would refuse, but tests do not lean on that).
pub const CONFIG: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: node-a
clusterCIDR: 10.244.0.0/16
conntrack:
  maxPerCore: 0
";

/// Servers answer every line with `<own address> <peer address>`.
fn start_echo_servers(pod: &Netns, own: Ipv4Addr) {
    let (tcp, udp) = pod.enter(|| {
        (
            TcpListener::bind(("0.0.0.0", TCP_PORT)).expect("bind tcp"),
            UdpSocket::bind(("0.0.0.0", UDP_PORT)).expect("bind udp"),
        )
    });
    std::thread::spawn(move || {
        for conn in tcp.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let (Ok(local), Ok(peer)) = (conn.local_addr(), conn.peer_addr()) else {
                    return;
                };
                let mut w = conn.try_clone().expect("clone");
                let mut r = BufReader::new(conn);
                let mut line = String::new();
                while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    if w.write_all(format!("{} {}\n", local.ip(), peer.ip()).as_bytes())
                        .is_err()
                    {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    // Bound to the wildcard address, the UDP socket cannot tell which address a
    // datagram was sent to; after DNAT that is this pod's only address.
    let own = own.to_string();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((_, peer)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(format!("{own} {}\n", peer.ip()).as_bytes(), peer);
        }
    });
}

/// What an echo server reported: its own address and the client address it saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub server: String,
    pub peer: String,
}

fn parse_seen(line: &str) -> Seen {
    let mut it = line.split_whitespace();
    Seen {
        server: it.next().unwrap_or_default().to_string(),
        peer: it.next().unwrap_or_default().to_string(),
    }
}

/// A TCP connection opened from inside a namespace, optionally from a given source.
pub struct Conn {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn ask(&mut self) -> std::io::Result<Seen> {
        self.stream.write_all(b"who\n")?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(parse_seen(&line))
    }

    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().map(|a| a.port()).unwrap_or(0)
    }
}

pub fn connect_from(
    ns: &Netns,
    src: Option<Ipv4Addr>,
    dst: SocketAddrV4,
    timeout: Duration,
) -> std::io::Result<Conn> {
    ns.enter(move || {
        let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        if let Some(src) = src {
            sock.bind(&SockAddr::from(SocketAddrV4::new(src, 0)))?;
        }
        sock.connect_timeout(&SockAddr::from(SocketAddr::V4(dst)), timeout)?;
        let stream: TcpStream = sock.into();
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Conn { stream, reader })
    })
}

/// One request over a new TCP connection.
pub fn tcp_once(ns: &Netns, src: Option<Ipv4Addr>, dst: SocketAddrV4) -> std::io::Result<Seen> {
    connect_from(ns, src, dst, IO_TIMEOUT)?.ask()
}

/// One datagram and its answer, over a connected UDP socket (so only an answer from
/// `dst` itself, i.e. correctly un-NATed, is accepted).
pub fn udp_once(ns: &Netns, dst: SocketAddrV4) -> std::io::Result<Seen> {
    ns.enter(move || {
        let sock = UdpSocket::bind(("0.0.0.0", 0))?;
        sock.connect(dst)?;
        sock.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut buf = [0u8; 1500];
        // UDP may lose the first datagram while ARP resolves: retry a few times.
        let mut last = std::io::Error::from(std::io::ErrorKind::TimedOut);
        for _ in 0..5 {
            sock.send(b"who\n")?;
            match sock.recv(&mut buf) {
                Ok(n) => return Ok(parse_seen(&String::from_utf8_lossy(&buf[..n]))),
                Err(e) => last = e,
            }
        }
        Err(last)
    })
}

/// YAML for a Service plus (unless `endpoints` is None) its EndpointSlice; each endpoint
/// is `(pod index, local to node-a)`.
pub struct Svc<'a> {
    pub name: &'a str,
    pub cluster_ip: &'a str,
    pub port: u16,
    pub protocol: &'a str,
    pub target_port: u16,
    pub node_port: Option<u16>,
    pub extra_spec: &'a str,
    pub status: &'a str,
    pub endpoints: Option<Vec<(usize, bool)>>,
}

impl Default for Svc<'_> {
    fn default() -> Self {
        Svc {
            name: "svc",
            cluster_ip: "10.96.0.10",
            port: 80,
            protocol: "TCP",
            target_port: TCP_PORT,
            node_port: None,
            extra_spec: "",
            status: "",
            endpoints: Some(vec![]),
        }
    }
}

impl Svc<'_> {
    pub fn yaml(&self) -> String {
        let mut y = format!(
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {n}\n  namespace: default\nspec:\n  clusterIP: {ip}\n  clusterIPs: [{ip}]\n  ports:\n  - name: p\n    port: {port}\n    protocol: {proto}\n    targetPort: {tp}\n{np}{extra}",
            n = self.name,
            ip = self.cluster_ip,
            port = self.port,
            proto = self.protocol,
            tp = self.target_port,
            extra = self.extra_spec,
            np = self
                .node_port
                .map_or(String::new(), |p| format!("    nodePort: {p}\n")),
        );
        if !self.status.is_empty() {
            y.push_str(self.status);
        }
        if let Some(eps) = &self.endpoints {
            y.push_str(&format!(
                "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {n}-abc\n  namespace: default\n  labels:\n    kubernetes.io/service-name: {n}\naddressType: IPv4\nports:\n- name: p\n  port: {tp}\n  protocol: {proto}\n",
                n = self.name,
                tp = self.target_port,
                proto = self.protocol,
            ));
            y.push_str(if eps.is_empty() {
                "endpoints: []\n"
            } else {
                "endpoints:\n"
            });
            for (i, local) in eps {
                y.push_str(&format!(
                    "- addresses: [{}]\n  conditions: {{ready: true}}\n  nodeName: {}\n",
                    pod_ip(*i),
                    if *local { "node-a" } else { "node-b" }
                ));
            }
        }
        y
    }
}

pub const NODE_YAML: &str = "---
apiVersion: v1
kind: Node
metadata:
  name: node-a
status:
  addresses:
  - type: InternalIP
    address: 192.168.50.1
";

pub fn sock(ip: &str, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip.parse().unwrap(), port)
}

/// A case directory of the v1.30.3 corpus copy under golden/upstream.
pub fn golden_case(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden/upstream")
        .join(name)
}

/// A file's text; the panic names the file.
pub fn read_text(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// filter and nat as chain → canonical rules (built-in chains without rules left out, as
/// iptables-nft lists only what exists): comparable across backends and spellings.
pub fn canonical(save: &str) -> std::collections::BTreeMap<(String, String), Vec<String>> {
    let rs = kube_proxy_rs::audit::parse::Ruleset::parse(save).expect("parses");
    let mut out = std::collections::BTreeMap::new();
    for t in rs
        .tables
        .iter()
        .filter(|t| t.name == "filter" || t.name == "nat")
    {
        for c in &t.chains {
            if c.policy.is_some() && c.rules.is_empty() {
                continue;
            }
            let rules = c
                .rules
                .iter()
                .map(|r| kube_proxy_rs::audit::norm::rule_key(&r.spec))
                .collect();
            out.insert((t.name.clone(), c.name.clone()), rules);
        }
    }
    out
}

/// Two namespaces with one fresh id: a node and its twin for comparing two ways.
pub fn ns_pair(tag: &str) -> (Netns, Netns) {
    let id = format!(
        "{tag}{:x}",
        std::process::id()
            ^ (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
                & 0xfffff)
    );
    (Netns::new(&id, "a"), Netns::new(&id, "b"))
}
