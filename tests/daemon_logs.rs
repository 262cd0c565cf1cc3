//! The daemon's logs, with the real binary (`--dry-run`: payloads on stdout) against the test
//! API server: `-v 2` is this crate's verbosity only, no colour codes on a pipe, the
//! "Not syncing" line once however many events arrive before the first sync, upstream's sync
//! lines and fields, and `--logging-format json` lines in component-base's shape.

mod common;

use common::apiserver::{ApiServer, Kind};
use serde_json::{json, Value};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NOT_SYNCING: &str =
    "Not syncing iptables until Services and Endpoints have been received from master";

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn service(label: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "ns", "labels": {"rev": label}},
        "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
}

fn slice() -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "ns", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.244.0.5"]}, {"addresses": ["10.244.0.6"]}]})
}

fn node() -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.10"}]}})
}

struct Daemon {
    child: Child,
    stdout: Arc<Mutex<String>>,
    log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Daemon {
    fn start(server: &ApiServer, tag: &str, extra: &[&str]) -> Daemon {
        let log = std::env::temp_dir().join(format!("kprs-logs-{tag}-{}.log", std::process::id()));
        let mut child = Command::new(common::BIN)
            .args(["--master", &server.url(), "--hostname-override", "node-a"])
            .args(["--dry-run", "--conntrack-max-per-core", "0"])
            .args(["--healthz-bind-address", &free_addr()])
            .args(["--metrics-bind-address", &free_addr()])
            .args(extra)
            // As a DaemonSet runs it: no RUST_LOG, no NO_COLOR, stderr not a terminal.
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
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
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    async fn wait_for(&mut self, what: &str, mut cond: impl FnMut(&Daemon) -> bool) {
        // Generous for a loaded machine; never an assertion about speed.
        let deadline = Instant::now() + Duration::from_secs(90);
        while !cond(self) {
            if let Some(status) = self.child.try_wait().unwrap() {
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

    fn stop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Chain declarations and rule lines per table of a restore payload, counted the way
/// upstream's numFilterChains/numFilterRules/numNATChains/numNATRules count its buffers.
fn payload_counts(payload: &str) -> [(String, usize, usize); 2] {
    let mut out: Vec<(String, usize, usize)> = Vec::new();
    for l in payload.lines() {
        if let Some(t) = l.strip_prefix('*') {
            out.push((t.to_string(), 0, 0));
        } else if let Some(cur) = out.last_mut() {
            if l.starts_with(':') {
                cur.1 += 1;
            } else if l.starts_with("-A ") || l.starts_with("-X ") {
                cur.2 += 1;
            }
        }
    }
    assert_eq!(out.len(), 2, "{payload}");
    [out[0].clone(), out[1].clone()]
}

fn first_payload(out: &str) -> String {
    out.split("# sync ").nth(1).expect("a payload").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_logs_this_crate_only_without_colour_and_says_not_syncing_once() {
    let server = ApiServer::start().await;
    server.apply(service("0"));
    server.apply(slice());
    server.apply(node());
    // Hold the first sync back: EndpointSlice lists fail while Services keep changing.
    server.refuse(Kind::EndpointSlices, true);
    let mut d = Daemon::start(&server, "v2", &["-v", "2"]);
    d.wait_for("the Service watch", |_| server.watches(Kind::Services) >= 1)
        .await;
    for i in 1..=5 {
        server.apply(service(&i.to_string()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    d.wait_for("the daemon to retry the slices", |_| {
        server.lists(Kind::EndpointSlices) >= 2
    })
    .await;
    server.refuse(Kind::EndpointSlices, false);
    d.wait_for("the first sync", |d| d.out().contains("# sync 1\n"))
        .await;
    // Our own summary line follows upstream's three.
    d.wait_for("the sync's log lines", |d| {
        d.log().contains("Synced proxy rules")
    })
    .await;
    d.stop();
    let log = d.log();
    assert!(d.out().contains("# sync 1\n"), "{}", d.out());

    std::fs::write(std::env::temp_dir().join("kprs-logs-v2-last.log"), &log).ok();
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape codes on a pipe:\n{log}"
    );
    // klog text lines: an info line (`I...`) whose caller is not one of this crate's
    // source files came from a dependency, which must stay at warn.
    // klog's caller is the file name alone: ours when some file under src/ has that name.
    fn names(dir: &std::path::Path, into: &mut std::collections::HashSet<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                names(&p, into);
            } else if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
                into.insert(n.to_string());
            }
        }
    }
    let mut src_files = std::collections::HashSet::new();
    names(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut src_files,
    );
    let ours = |caller: &str| {
        let file = caller.rsplit_once(':').map_or(caller, |(f, _)| f);
        src_files.contains(file)
    };
    let foreign: Vec<&str> = log
        .lines()
        .filter(|l| {
            let Some((head, _)) = l.split_once("] ") else {
                return false;
            };
            let caller = head.rsplit(' ').next().unwrap_or("");
            l.starts_with('I') && !ours(caller)
        })
        .collect();
    assert!(
        log.lines()
            .any(|l| l.starts_with('I') && l.contains("] \"Syncing iptables rules\"")),
        "no klog text line for the sync:\n{log}"
    );
    assert!(
        foreign.is_empty(),
        "dependency debug lines at -v 2:\n{}",
        foreign.join("\n")
    );
    assert_eq!(log.matches(NOT_SYNCING).count(), 1, "{log}");

    // Upstream's three sync lines, in order, with upstream's fields.
    let at = |s: &str| {
        log.find(s)
            .unwrap_or_else(|| panic!("{s:?} missing:\n{log}"))
    };
    assert!(at("Syncing iptables rules") < at("Reloading service iptables data"));
    assert!(at("Reloading service iptables data") < at("SyncProxyRules complete"));
    let reload = log
        .lines()
        .find(|l| l.contains("Reloading service iptables data"))
        .unwrap();
    let [(f, fc, fr), (n, nc, nr)] = payload_counts(&first_payload(&d.out()));
    assert_eq!((f.as_str(), n.as_str()), ("filter", "nat"));
    for field in [
        "numServices=1".to_string(),
        "numEndpoints=2".to_string(),
        format!("numFilterChains={fc}"),
        format!("numFilterRules={fr}"),
        format!("numNATChains={nc}"),
        format!("numNATRules={nr}"),
    ] {
        assert!(reload.contains(&field), "{field} not in {reload}");
    }
    let complete = log
        .lines()
        .find(|l| l.contains("SyncProxyRules complete"))
        .unwrap();
    assert!(complete.contains("elapsed="), "{complete}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_in_component_base_shape() {
    let server = ApiServer::start().await;
    server.apply(service("0"));
    server.apply(slice());
    server.apply(node());
    let mut d = Daemon::start(&server, "json", &["-v", "2", "--logging-format", "json"]);
    d.wait_for("the first sync", |d| {
        d.log().contains("SyncProxyRules complete")
    })
    .await;
    d.stop();
    let log = d.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 4, "{log}");
    for l in &lines {
        assert!(
            l["ts"].as_f64().is_some_and(|t| t > 1.6e12),
            "ts in epoch ms: {l}"
        );
        assert!(l["msg"].is_string(), "{l}");
        assert!(
            l["caller"].as_str().is_some_and(|c| c.contains(".rs:")),
            "{l}"
        );
        assert!(
            l["v"].is_u64() || l.get("err").is_some() || l.get("v").is_none(),
            "{l}"
        );
    }
    let find = |msg: &str| {
        lines
            .iter()
            .find(|l| l["msg"] == msg)
            .unwrap_or_else(|| panic!("{msg:?} missing:\n{log}"))
    };
    let complete = find("SyncProxyRules complete");
    assert_eq!(complete["v"], 2);
    assert!(
        complete["elapsed"]
            .as_str()
            .is_some_and(|e| e.ends_with('s')),
        "{complete}"
    );
    let reload = find("Reloading service iptables data");
    let [(_, fc, fr), (_, nc, nr)] = payload_counts(&first_payload(&d.out()));
    assert_eq!(reload["numServices"], 1);
    assert_eq!(reload["numEndpoints"], 2);
    assert_eq!(reload["numFilterChains"], fc);
    assert_eq!(reload["numFilterRules"], fr);
    assert_eq!(reload["numNATChains"], nc);
    assert_eq!(reload["numNATRules"], nr);
    assert_eq!(find("Syncing iptables rules")["v"], 2);
}
