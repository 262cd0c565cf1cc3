//! The emulated release as the daemon picks and shows it: the default from the API
//! server's /version (the real binary, `--dry-run`, against the test API server), and the
//! version-dependent metrics (spec §8.4 O1), health bodies (O4) and change counters
//! (§1.4: every Service event reaches each family's proxier) of the in-process daemon.
//! Expected forms are read off the spec by hand, not produced by the code under test.

mod common;

use common::apiserver::ApiServer;
use kube_proxy_rs::compat::Compat;
use kube_proxy_rs::config::KubeProxyConfiguration;
use kube_proxy_rs::daemon::{self, DaemonHandle, DaemonOptions, HostMode, SourceSpec};
use kube_proxy_rs::iptables::recording::RecordingBackend;
use kube_proxy_rs::iptables::Backend;
use kube_proxy_rs::model::ip::IpFamily;
use kube_proxy_rs::sync::conntrack::RecordingConntrack;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Plain HTTP/1.1 GET: (status, body); None while nothing listens.
async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8(buf).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.split(' ').nth(1)?.parse().ok()?, body.to_string()))
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    // Bounds waiting on a loaded machine; never an assertion about speed.
    let deadline = Instant::now() + Duration::from_secs(90);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn node() -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.10.11"}]}})
}

/// A LoadBalancer whose source ranges are `0.0.0.0/0`: v1.30 writes a KUBE-FW chain
/// that accepts 0.0.0.0/0, later releases none (allow-all; issue 10, v1.35 corpus README).
fn open_lb() -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "lb", "namespace": "ns"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10",
                "loadBalancerSourceRanges": ["0.0.0.0/0"],
                "ports": [{"name": "http", "port": 80, "nodePort": 30080, "protocol": "TCP"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}}),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "lb-1", "namespace": "ns",
                "labels": {"kubernetes.io/service-name": "lb"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.244.1.5"]}]}),
    ]
}

/// What the daemon binary showed: its first payload, /healthz and /metrics, its log.
struct Seen {
    payload: String,
    healthz: (u16, String),
    metrics: String,
    log: String,
}

/// Runs the binary against `server` until its first sync, then reads its servers.
async fn run_binary(server: &ApiServer, extra: &[&str]) -> Seen {
    let dir = std::env::temp_dir().join(format!(
        "kprs-vob-{}-{}",
        std::process::id(),
        server.addr.port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let (h, m) = (free_addr(), free_addr());
    let mut child = Command::new(common::BIN)
        .args([
            "--master",
            &server.url(),
            "--hostname-override",
            "node-a",
            "--dry-run",
        ])
        .args(["--conntrack-max-per-core", "0"])
        .args(["--healthz-bind-address", &h.to_string()])
        .args(["--metrics-bind-address", &m.to_string()])
        .args(extra)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    // The Node event (eligibility) lands after the first sync: wait for a 200 too.
    let mut healthz = (0, String::new());
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if read(&out).contains("COMMIT\n") {
            if let Some(r) = http_get(h, "/healthz").await {
                healthz = r;
                if healthz.0 == 200 {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = http_get(m, "/metrics")
        .await
        .map(|r| r.1)
        .unwrap_or_default();
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let seen = Seen {
        payload: read(&out),
        healthz,
        metrics,
        log: read(&err),
    };
    let _ = std::fs::remove_dir_all(&dir);
    assert!(seen.payload.contains("COMMIT\n"), "no sync:\n{}", seen.log);
    seen
}

async fn server_at(version: &str) -> ApiServer {
    let server = ApiServer::start().await;
    server.set_version(version);
    server.apply(node());
    for o in open_lb() {
        server.apply(o);
    }
    server
}

/// The observable marks of each release, all three together.
fn assert_emulates(seen: &Seen, version: &str) {
    let Seen {
        payload,
        healthz,
        metrics,
        log,
    } = seen;
    assert_eq!(healthz.0, 200, "{healthz:?}\n{log}");
    let count_v4 = "kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"} 1\n";
    let count = "kubeproxy_sync_full_proxy_rules_duration_seconds_count 1\n";
    match version {
        "1.30" => {
            assert!(payload.contains(":KUBE-FW-"), "{payload}");
            assert!(healthz.1.starts_with("{\"lastUpdated\": \""), "{healthz:?}");
            assert!(
                healthz.1.ends_with(", \"nodeEligible\": true}"),
                "{healthz:?}"
            );
            assert!(metrics.contains(count), "{metrics}");
            assert!(!metrics.contains(count_v4), "{metrics}");
        }
        "1.35" => {
            assert!(!payload.contains("KUBE-FW-"), "{payload}");
            assert!(healthz.1.starts_with("{\"lastUpdated\":\""), "{healthz:?}");
            assert!(
                healthz.1.contains(",\"nodeEligible\":true,\"healthy\":true,\"status\":{\"IPv4\":{\"lastUpdated\":\""),
                "{healthz:?}"
            );
            assert!(metrics.contains(count_v4), "{metrics}");
            assert!(!metrics.contains(count), "{metrics}");
        }
        _ => unreachable!(),
    }
}

fn log_line(log: &str) -> &str {
    log.lines()
        .find(|l| l.contains("Emulating upstream kube-proxy"))
        .unwrap_or_else(|| panic!("no version line:\n{log}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_1_29_is_emulated_as_1_30() {
    let server = server_at("v1.29.7").await;
    let seen = run_binary(&server, &[]).await;
    assert_emulates(&seen, "1.30");
    let l = log_line(&seen.log);
    assert!(l.contains("v1.29.7") && l.contains("1.30"), "{l}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_1_33_is_emulated_as_1_35() {
    let server = server_at("v1.33.2").await;
    let seen = run_binary(&server, &[]).await;
    assert_emulates(&seen, "1.35");
    let l = log_line(&seen.log);
    assert!(l.contains("v1.33.2") && l.contains("1.35"), "{l}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_1_36_is_emulated_as_the_newest() {
    let server = server_at("v1.36.0").await;
    let seen = run_binary(&server, &[]).await;
    assert_emulates(&seen, "1.35");
    assert!(
        log_line(&seen.log).contains("newer than the newest"),
        "{}",
        seen.log
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flag_beats_the_server() {
    let server = server_at("v1.33.2").await;
    let seen = run_binary(&server, &["--emulated-version", "1.30"]).await;
    assert_emulates(&seen, "1.30");
    assert!(
        log_line(&seen.log).contains("--emulated-version"),
        "{}",
        seen.log
    );
    let server = server_at("v1.29.0").await;
    assert_emulates(
        &run_binary(&server, &["--emulated-version=1.35"]).await,
        "1.35",
    );
}

/// /version answers 500: the newest supported release, a warning, and the daemon runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_server_version_falls_back_to_the_newest() {
    let server = server_at("").await;
    let seen = run_binary(&server, &[]).await;
    assert_emulates(&seen, "1.35");
    assert!(
        seen.log
            .lines()
            .any(|l| l.starts_with('W') && l.contains("Cannot read the API server's version")),
        "{}",
        seen.log
    );
}

/// In-process daemon on a node whose families are `families`.
async fn start(
    compat: Compat,
    server: &ApiServer,
    families: &[IpFamily],
) -> (DaemonHandle, Vec<RecordingBackend>) {
    let cfg = KubeProxyConfiguration {
        hostname_override: "node-a".into(),
        healthz_bind_address: "127.0.0.1:0".into(),
        metrics_bind_address: "127.0.0.1:0".into(),
        ..Default::default()
    };
    let backends: Vec<RecordingBackend> =
        families.iter().map(|f| RecordingBackend::new(*f)).collect();
    let opts = DaemonOptions {
        compat,
        config: cfg,
        source: SourceSpec::Api {
            kubeconfig: None,
            master: Some(server.url()),
        },
        host: HostMode::Offline,
        minimal_restore: false,
    };
    let boxed: Vec<Box<dyn Backend>> = backends
        .iter()
        .map(|b| Box::new(b.clone()) as Box<dyn Backend>)
        .collect();
    let handle = daemon::start(opts, boxed, Box::new(RecordingConntrack::default()))
        .await
        .unwrap();
    (handle, backends)
}

fn dual_stack_objects() -> Vec<Value> {
    let svc = |name: &str, ip: &str| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "ns"},
            "spec": {"clusterIP": ip, "clusterIPs": [ip, "fd00:96::a"], "ipFamilies": ["IPv4", "IPv6"],
                "ipFamilyPolicy": "PreferDualStack",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
    };
    let slice = |name: &str, family: &str, ip: &str| {
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "ns",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": family,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip]}]})
    };
    vec![
        node(),
        svc("web", "10.96.0.10"),
        svc("api", "10.96.0.11"),
        slice("web-4", "IPv4", "10.244.1.5"),
        slice("web-6", "IPv6", "fd00:244::5"),
    ]
}

fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

/// Upstream's change counters on a dual-stack node (spec §1.4, §6.6): every Service
/// event goes to both family proxiers and each counts it; each EndpointSlice event goes
/// to its family's proxier only. Single-stack: once each. Same in both releases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_counters_count_per_family_proxier() {
    for compat in [Compat::v1_30(), Compat::v1_35()] {
        for families in [&[IpFamily::V4, IpFamily::V6][..], &[IpFamily::V4][..]] {
            let server = ApiServer::start().await;
            let objects = dual_stack_objects();
            for o in &objects {
                server.apply(o.clone());
            }
            let (d, backends) = start(compat, &server, families).await;
            wait_for("first syncs", || {
                backends.iter().all(|b| b.payload_count() == 1)
            })
            .await;
            // 2 Services + 2 slices listed; then one Service update and one slice update.
            let mut svc = objects[1].clone();
            svc["spec"]["ports"][0]["port"] = json!(81);
            server.apply(svc);
            let mut slice = objects[3].clone();
            slice["endpoints"][0]["addresses"] = json!(["10.244.1.6"]);
            server.apply(slice);
            let n = families.len() as f64;
            let want = |m: &str, series: &str, v: f64| sample(m, series) == Some(v);
            let addr = d.metrics_addr.unwrap();
            let deadline = Instant::now() + Duration::from_secs(90);
            let body = loop {
                let body = http_get(addr, "/metrics").await.unwrap().1;
                let done = want(
                    &body,
                    "kubeproxy_sync_proxy_rules_endpoint_changes_total",
                    3.0,
                ) && want(
                    &body,
                    "kubeproxy_sync_proxy_rules_service_changes_total",
                    3.0 * n,
                );
                if done || Instant::now() > deadline {
                    break body;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let what = format!("{} with {families:?}", compat.version);
            assert_eq!(
                sample(&body, "kubeproxy_sync_proxy_rules_service_changes_total"),
                Some(3.0 * n),
                "{what}\n{body}"
            );
            assert_eq!(
                sample(&body, "kubeproxy_sync_proxy_rules_endpoint_changes_total"),
                Some(3.0),
                "{what}\n{body}"
            );
            d.shutdown().await;
        }
    }
}

const LABELED: [&str; 11] = [
    "kubeproxy_sync_proxy_rules_duration_seconds_count",
    "kubeproxy_sync_full_proxy_rules_duration_seconds_count",
    "kubeproxy_sync_partial_proxy_rules_duration_seconds_count",
    "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
    "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
    "kubeproxy_network_programming_duration_seconds_count",
    "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
    "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total",
    "kubeproxy_sync_proxy_rules_iptables_total",
    "kubeproxy_sync_proxy_rules_iptables_last",
    "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
];

const UNLABELED: [&str; 4] = [
    "kubeproxy_sync_proxy_rules_service_changes_total",
    "kubeproxy_sync_proxy_rules_endpoint_changes_total",
    "kubeproxy_sync_proxy_rules_service_changes_pending",
    "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
];

/// The O1 label rule on one scrape (upstream's own metrics only).
fn check_labels(body: &str, labeled: bool) -> Result<(), String> {
    let ours = |l: &&str| !l.starts_with("kubeproxy_rs_") && !l.starts_with('#');
    let lines: Vec<&str> = body.lines().filter(ours).collect();
    let series = |name: &str| -> Vec<&str> {
        lines
            .iter()
            .copied()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .collect()
    };
    for name in LABELED {
        let found = series(name);
        if found.is_empty() {
            return Err(format!("{name} missing"));
        }
        let has = |f: &str| {
            found
                .iter()
                .any(|l| l.contains(&format!("ip_family=\"{f}\"")))
        };
        // Only IPv6's restore failed; only IPv4's slice had a trigger time.
        let fams: &[&str] = if name.contains("restore_failures") {
            &["IPv6"]
        } else if name.contains("network_programming") {
            &["IPv4"]
        } else {
            &["IPv4", "IPv6"]
        };
        for f in ["IPv4", "IPv6"] {
            let want = labeled && fams.contains(&f);
            if has(f) != want {
                return Err(format!("{name}: ip_family={f} present: {}", has(f)));
            }
        }
        if name.contains("restore_failures") && !found.iter().any(|l| l.ends_with(" 1")) {
            return Err(format!("{name}: no failure counted yet"));
        }
        if name.contains("network_programming") && found.iter().any(|l| l.ends_with(" 0")) {
            return Err(format!("{name}: not observed yet"));
        }
    }
    for name in UNLABELED {
        if !lines.iter().any(|l| l.starts_with(&format!("{name} "))) {
            return Err(format!("{name} must stay unlabeled"));
        }
    }
    if !labeled && lines.iter().any(|l| l.contains("ip_family")) {
        return Err("ip_family under 1.30".into());
    }
    Ok(())
}

/// O1 (spec §8.4): under 1.35 exactly the listed metrics carry `ip_family`, one series
/// per family proxier; under 1.30 none does (§6.6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_family_label_per_release() {
    for compat in [Compat::v1_30(), Compat::v1_35()] {
        let server = ApiServer::start().await;
        let objects = dual_stack_objects();
        for o in &objects {
            server.apply(o.clone());
        }
        let (d, backends) = start(compat, &server, &[IpFamily::V4, IpFamily::V6]).await;
        wait_for("first syncs", || {
            backends.iter().all(|b| b.payload_count() == 1)
        })
        .await;
        // A partial sync per family, a restore failure of IPv6's, a trigger time seen.
        backends[1].fail_next_restore("iptables-restore: line 3 failed");
        let mut s4 = objects[3].clone();
        s4["metadata"]["annotations"] = json!({"endpoints.kubernetes.io/last-change-trigger-time": jiff::Timestamp::now().to_string()});
        s4["endpoints"][0]["addresses"] = json!(["10.244.1.6"]);
        server.apply(s4);
        let mut s6 = objects[4].clone();
        s6["endpoints"][0]["addresses"] = json!(["fd00:244::6"]);
        server.apply(s6);
        wait_for("the v4 partial sync", || backends[0].payload_count() == 2).await;
        wait_for("the v6 failure", || backends[1].restore_failures() == 1).await;
        // The counters land just after the backend calls: scrape until they show.
        let addr = d.metrics_addr.unwrap();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let body = http_get(addr, "/metrics").await.unwrap().1;
            match check_labels(&body, compat.metrics_ip_family_label) {
                Ok(()) => break,
                Err(e) if Instant::now() > deadline => panic!("{} {e}\n{body}", compat.version),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        d.shutdown().await;
    }
}

/// O4 (spec §8.4): the JSON health bodies of 1.35, per family, `nodeEligible` on
/// /healthz only; 1.30's bodies (§6.5.1) otherwise. Status codes as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_bodies_per_release() {
    for compat in [Compat::v1_30(), Compat::v1_35()] {
        let server = ApiServer::start().await;
        for o in dual_stack_objects() {
            server.apply(o);
        }
        let (d, backends) = start(compat, &server, &[IpFamily::V4, IpFamily::V6]).await;
        wait_for("first syncs", || {
            backends.iter().all(|b| b.payload_count() == 1)
        })
        .await;
        let h = d.healthz_addr.unwrap();
        // The Node arrives on its own watch; with it the node is eligible.
        let deadline = Instant::now() + Duration::from_secs(90);
        let (code, body) = loop {
            let r = http_get(h, "/healthz").await.unwrap();
            if r.0 == 200 || Instant::now() > deadline {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (lcode, live) = http_get(h, "/livez").await.unwrap();
        assert_eq!((code, lcode), (200, 200), "{body} {live}");
        if compat.health_json {
            let v: Value = serde_json::from_str(&body).unwrap();
            let keys: Vec<&str> = body
                .split("\":")
                .filter_map(|p| p.rsplit(['{', ',']).next()?.strip_prefix('"'))
                .collect();
            assert_eq!(
                keys,
                [
                    "lastUpdated",
                    "currentTime",
                    "nodeEligible",
                    "healthy",
                    "status",
                    "IPv4",
                    "lastUpdated",
                    "healthy",
                    "IPv6",
                    "lastUpdated",
                    "healthy"
                ],
                "{body}"
            );
            assert_eq!(v["nodeEligible"], json!(true));
            assert_eq!(v["healthy"], json!(true));
            for f in ["IPv4", "IPv6"] {
                assert_eq!(v["status"][f]["healthy"], json!(true), "{body}");
                let t = v["status"][f]["lastUpdated"].as_str().unwrap();
                assert!(
                    t.parse::<jiff::Timestamp>().is_ok() && t.ends_with('Z'),
                    "{t}"
                );
            }
            let t = v["currentTime"].as_str().unwrap();
            assert!(t.parse::<jiff::Timestamp>().is_ok(), "{t}");
            let l: Value = serde_json::from_str(&live).unwrap();
            assert!(l.get("nodeEligible").is_none(), "{live}");
            assert_eq!(l["status"]["IPv6"]["healthy"], json!(true), "{live}");
        } else {
            assert!(body.starts_with("{\"lastUpdated\": \""), "{body}");
            assert!(body.ends_with(", \"nodeEligible\": true}"), "{body}");
            assert!(
                live.starts_with("{\"lastUpdated\": \"") && !live.contains("status"),
                "{live}"
            );
        }
        d.shutdown().await;
    }
}

/// `web` (two endpoints) and `api` (one), v4 ClusterIP Services with one slice each.
fn two_services() -> Vec<Value> {
    let svc = |name: &str, ip: &str| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "ns"},
            "spec": {"clusterIP": ip, "clusterIPs": [ip],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
    };
    let slice = |name: &str, svc: &str, ips: &[&str]| {
        let eps: Vec<Value> = ips.iter().map(|ip| json!({"addresses": [ip]})).collect();
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "ns",
                "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": eps})
    };
    vec![
        node(),
        svc("web", "10.96.0.10"),
        svc("api", "10.96.0.11"),
        slice("web-1", "web", &["10.244.1.5", "10.244.1.6"]),
        slice("api-1", "api", &["10.244.2.1"]),
    ]
}

/// An edit of a slice object.
type Mutation = fn(&mut Value);

/// `web`'s own chain lines (its KUBE-SVC/KUBE-SEP rules; KUBE-SERVICES, rewritten by
/// every sync, does not count).
fn web_chain_lines(payload: &str) -> usize {
    payload
        .lines()
        .filter(|l| l.starts_with("-A KUBE-SVC-") || l.starts_with("-A KUBE-SEP-"))
        .filter(|l| l.contains("ns/web:http"))
        .count()
}

/// v1.35 corpus README ("Upstream changes not in §8"): an EndpointSlice update that
/// changes only the object (a label, the endpoints' order) marks its Service changed, so
/// the next partial sync rewrites its chains; v1.30.3 compared the fields it reads and
/// writes nothing for it. `api`'s endpoint change after each update forces a sync in both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_only_slice_update_marks_the_service_changed_in_1_35_only() {
    for compat in [Compat::v1_30(), Compat::v1_35()] {
        let server = ApiServer::start().await;
        let objects = two_services();
        for o in &objects {
            server.apply(o.clone());
        }
        let (d, backends) = start(compat, &server, &[IpFamily::V4]).await;
        let b = &backends[0];
        wait_for("first sync", || b.payload_count() == 1).await;
        // Two SVC jumps, two SEP chains of two rules.
        let full = web_chain_lines(&b.payloads()[0]);
        assert_eq!(full, 6, "{}", b.payloads()[0]);
        let mut web = objects[3].clone();
        let mut api = objects[4].clone();
        let mutations: [(&str, Mutation); 2] = [
            ("a label", |s| {
                s["metadata"]["labels"]["team"] = json!("blue")
            }),
            (
                "endpoint order",
                |s| {
                    s["endpoints"] =
                        json!([{"addresses": ["10.244.1.6"]}, {"addresses": ["10.244.1.5"]}])
                },
            ),
        ];
        for (i, (what, mutate)) in mutations.iter().enumerate() {
            let before = b.payload_count();
            mutate(&mut web);
            server.apply(web.clone());
            let ep = format!("10.244.2.{}", i + 2);
            api["endpoints"] = json!([{"addresses": [ep]}]);
            server.apply(api.clone());
            let marker = format!("-j DNAT --to-destination {ep}:8080");
            wait_for("api's change synced", || {
                b.payloads()[before..].iter().any(|p| p.contains(&marker))
            })
            .await;
            let since = b.payloads()[before..].to_vec();
            let rewritten: usize = since.iter().map(|p| web_chain_lines(p)).sum();
            let want = if compat.version.as_str() == "1.35" {
                full
            } else {
                0
            };
            assert_eq!(
                rewritten, want,
                "{} after {what}: web's chains rewritten\n{since:#?}",
                compat.version
            );
        }
        d.shutdown().await;
    }
}
