//! detectLocalMode NodeCIDR with the real binary as a child process against the test API
//! server (spec §6.1 step 5, §6.4): start-up waits for the podCIDR allocation, and a later
//! podCIDR change makes the process exit with status 1. `--dry-run` (payloads on stdout,
//! no iptables, no sysctls) keeps the host untouched.

mod common;

use common::apiserver::ApiServer;
use serde_json::{json, Value};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A loopback address with a port nobody listens on (the configuration rejects port 0).
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

struct Daemon {
    child: Child,
    stdout: Arc<Mutex<String>>,
    log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Daemon {
    fn start(server: &ApiServer, tag: &str) -> Daemon {
        let log =
            std::env::temp_dir().join(format!("kprs-nodecidr-{tag}-{}.log", std::process::id()));
        let mut child = Command::new(common::BIN)
            .args(["--master", &server.url(), "--hostname-override", "node-a"])
            .args(["--detect-local-mode", "NodeCIDR", "--dry-run"])
            .args(["--healthz-bind-address", &free_addr()])
            .args(["--metrics-bind-address", &free_addr()])
            // Belt and braces: --dry-run already skips the sysctls.
            .args(["--conntrack-max-per-core", "0"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the daemon");
        let stdout = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stdout.take().unwrap();
        let sink = stdout.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    return;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Daemon { child, stdout, log }
    }

    fn out(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Generous bound for a loaded machine; never an assertion about speed.
    async fn wait_for(&mut self, what: &str, mut cond: impl FnMut(&mut Daemon) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cond(self) {
            if let Some(status) = self.exited() {
                panic!("exited ({status}) waiting for {what}\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\nstdout:\n{}\nlog:\n{}",
                self.out(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn node(pod_cidrs: &[&str], zone: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-a", "labels": {"topology.kubernetes.io/zone": zone}},
        "spec": {"podCIDRs": pod_cidrs},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.50.1"}]}})
}

/// A ClusterIP service with one endpoint: its SVC chain carries the local-traffic match.
fn serve_web(server: &ApiServer) {
    server.apply(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "ns"},
        "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}));
    server.apply(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "ns", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.244.0.5"]}]}));
}

/// The SVC chain masquerades traffic to the ClusterIP from outside the local pod CIDR.
fn has_not_local(out: &str, cidr: &str) -> bool {
    let m = format!(" ! -s {cidr} ");
    out.lines().any(|l| {
        l.starts_with("-A KUBE-SVC-")
            && l.contains(" -d 10.96.0.20 ")
            && l.contains(&m)
            && l.ends_with("-j KUBE-MARK-MASQ")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_cidr_change_exits_with_status_1() {
    let server = ApiServer::start().await;
    server.apply(node(&["10.244.1.0/24"], "a"));
    serve_web(&server);
    let mut d = Daemon::start(&server, "change");
    d.wait_for("the first sync with the node's podCIDR", |d| {
        d.out().contains("# sync 1\n") && has_not_local(&d.out(), "10.244.1.0/24")
    })
    .await;

    // Another change of the Node (its zone) is no reason to exit.
    server.apply(node(&["10.244.1.0/24"], "b"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        d.exited().is_none(),
        "exited on a label change:\n{}",
        d.log()
    );

    server.apply(node(&["10.244.2.0/24"], "b"));
    d.wait_for("the exit", |d| d.exited().is_some()).await;
    assert_eq!(d.exited().unwrap().code(), Some(1), "{}", d.log());
    let log = d.log();
    assert!(
        log.contains("podCIDRs changed") && log.contains("10.244.2.0/24"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_waits_for_pod_cidrs() {
    let server = ApiServer::start().await;
    server.apply(node(&[], "a"));
    serve_web(&server);
    let mut d = Daemon::start(&server, "wait");
    d.wait_for("the wait to start", |d| {
        d.log().contains("awaiting podCIDR")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(d.exited().is_none(), "{}", d.log());
    assert!(!d.out().contains("# sync"), "synced before the allocation");

    server.apply(node(&["10.244.5.0/24"], "a"));
    d.wait_for("the first sync with the allocated podCIDR", |d| {
        d.out().contains("# sync 1\n") && has_not_local(&d.out(), "10.244.5.0/24")
    })
    .await;
    assert!(d.exited().is_none(), "{}", d.log());
}
