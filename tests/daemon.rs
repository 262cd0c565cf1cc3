//! The daemon end to end, in process, with a recording netfilter backend: against the test
//! API server (real list/watch over HTTP) and against a static objects file. Expected
//! payloads come from the upstream golden corpus.

mod common;
use common::{golden_case as case, read_text as read};

use common::apiserver::{ApiServer, Kind};
use kube_proxy_rs::config::{self, KubeProxyConfiguration};
use kube_proxy_rs::daemon::{self, DaemonHandle, DaemonOptions, HostMode, SourceSpec};
use kube_proxy_rs::iptables::recording::{RecordingBackend, Tables};
use kube_proxy_rs::iptables::{Backend, CANARY_TABLES};
use kube_proxy_rs::model::ip::IpFamily;
use kube_proxy_rs::source::objects::load_objects;
use kube_proxy_rs::sync::conntrack::RecordingConntrack;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// A step's objects as the API server stores them (apiVersion and kind included).
fn step_objects(dir: &Path, step: usize) -> Vec<Value> {
    let p = dir.join(format!("step-{step}/objects.yaml"));
    let set = load_objects(p.to_str().unwrap()).unwrap();
    let mut out = Vec::new();
    out.extend(
        set.services
            .iter()
            .map(|(o, _)| serde_json::to_value(o).unwrap()),
    );
    out.extend(
        set.endpoint_slices
            .iter()
            .map(|(o, _)| serde_json::to_value(o).unwrap()),
    );
    out.extend(
        set.nodes
            .iter()
            .map(|(o, _)| serde_json::to_value(o).unwrap()),
    );
    out
}

fn key(v: &Value) -> (String, String, String) {
    let m = &v["metadata"];
    let s = |x: &Value| x.as_str().unwrap_or("").to_string();
    (s(&v["kind"]), s(&m["namespace"]), s(&m["name"]))
}

/// Objects that differ between two steps: (to apply, to delete).
fn diff(old: &[Value], new: &[Value]) -> (Vec<Value>, Vec<Value>) {
    let o: BTreeMap<_, _> = old.iter().map(|v| (key(v), v)).collect();
    let n: BTreeMap<_, _> = new.iter().map(|v| (key(v), v)).collect();
    let apply = n
        .iter()
        .filter(|(k, v)| o.get(*k) != Some(*v))
        .map(|(_, v)| (*v).clone())
        .collect();
    let delete = o
        .iter()
        .filter(|(k, _)| !n.contains_key(*k))
        .map(|(_, v)| (*v).clone())
        .collect();
    (apply, delete)
}

fn test_config(dir: &Path) -> KubeProxyConfiguration {
    let mut cfg = config::load_config(&dir.join("config.yaml")).unwrap();
    // Tests run in parallel: ephemeral ports.
    cfg.healthz_bind_address = "127.0.0.1:0".into();
    cfg.metrics_bind_address = "127.0.0.1:0".into();
    cfg
}

/// The simulated kernel after a node ran upstream's payloads of steps 1..=n.
fn golden_tables(dir: &Path, n: usize) -> Tables {
    let mut b = RecordingBackend::new(IpFamily::V4);
    b.ensure_jump_rules().unwrap();
    for t in CANARY_TABLES {
        b.create_canary(t).unwrap();
    }
    let mut tables = b.tables();
    for step in 1..=n {
        let payload = read(&dir.join(format!("step-{step}.rules")));
        RecordingBackend::apply_payload(&mut tables, &payload).unwrap();
    }
    tables
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    // Generous: CI machines are slow and shared. Never an assertion about speed.
    let deadline = Instant::now() + Duration::from_secs(90);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Running {
    handle: DaemonHandle,
    backend: RecordingBackend,
    conntrack: RecordingConntrack,
}

/// UDP endpoint removed over the API: the daemon clears its conntrack entries after the
/// sync (spec §6.7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_udp_endpoint_clears_conntrack() {
    let svc = serde_json::json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "dns", "namespace": "ns"},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}});
    let slice = |ips: &[&str]| {
        serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "dns-1", "namespace": "ns", "labels": {"kubernetes.io/service-name": "dns"}},
        "addressType": "IPv4",
        "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}],
        "endpoints": ips.iter().map(|ip| serde_json::json!({"addresses": [ip]})).collect::<Vec<_>>()})
    };
    let server = ApiServer::start().await;
    server.apply(svc);
    server.apply(slice(&["10.244.0.5", "10.244.0.6"]));
    let cfg = KubeProxyConfiguration {
        hostname_override: "node-a".into(),
        healthz_bind_address: "127.0.0.1:0".into(),
        metrics_bind_address: "127.0.0.1:0".into(),
        ..Default::default()
    };
    let d = start(cfg, api(&server)).await;
    wait_for("first sync", || d.backend.payload_count() == 1).await;
    let args = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
    // First sync: the service became active.
    assert_eq!(
        d.conntrack.commands(),
        vec![args("-D --orig-dst 10.96.0.10 -p udp")]
    );
    server.apply(slice(&["10.244.0.6"]));
    wait_for("second sync", || d.backend.payload_count() == 2).await;
    wait_for("conntrack", || d.conntrack.commands().len() == 2).await;
    assert_eq!(
        d.conntrack.commands()[1],
        args("-D --orig-dst 10.96.0.10 --dst-nat 10.244.0.5 -p udp")
    );
    d.handle.shutdown().await;
}

async fn start(cfg: KubeProxyConfiguration, source: SourceSpec) -> Running {
    start_with(cfg, source, RecordingBackend::new(IpFamily::V4)).await
}

async fn start_with(
    cfg: KubeProxyConfiguration,
    source: SourceSpec,
    backend: RecordingBackend,
) -> Running {
    let conntrack = RecordingConntrack::default();
    let opts = DaemonOptions {
        compat: kube_proxy_rs::compat::Compat::v1_30(),
        config: cfg,
        source,
        host: HostMode::Offline,
        minimal_restore: false,
    };
    let handle = daemon::start(
        opts,
        vec![Box::new(backend.clone())],
        Box::new(conntrack.clone()),
    )
    .await
    .unwrap();
    Running {
        handle,
        backend,
        conntrack,
    }
}

fn api(server: &ApiServer) -> SourceSpec {
    SourceSpec::Api {
        kubeconfig: None,
        master: Some(server.url()),
    }
}

/// Serves step 1, then moves the API server to each later step; the rules must end up as
/// upstream's after the same steps, and a one-object change must be exactly upstream's
/// partial payload.
async fn steps_over_api(name: &str) {
    let dir = case(name);
    let server = ApiServer::start().await;
    let mut current = step_objects(&dir, 1);
    for o in &current {
        server.apply(o.clone());
    }
    let d = start(test_config(&dir), api(&server)).await;
    wait_for("first sync", || d.backend.payload_count() >= 1).await;
    assert_eq!(
        d.backend.payloads()[0],
        read(&dir.join("step-1.rules")),
        "{name}: step 1"
    );
    assert_eq!(d.backend.ensure_calls(), 1, "first sync is full");
    let steps = read(&dir.join("steps.txt")).lines().count();
    for step in 2..=steps {
        let next = step_objects(&dir, step);
        let (apply, delete) = diff(&current, &next);
        let before = d.backend.payload_count();
        let single = apply.len() + delete.len() == 1;
        for o in apply {
            server.apply(o);
        }
        for o in &delete {
            server.delete(o);
        }
        let want = golden_tables(&dir, step);
        // Some steps leave the same tables as the step before: wait for the sync itself.
        wait_for(&format!("{name} step {step} rules"), || {
            d.backend.payload_count() > before && d.backend.tables() == want
        })
        .await;
        if single {
            assert_eq!(
                d.backend.payload_count(),
                before + 1,
                "{name}: one change, one sync"
            );
            assert_eq!(
                d.backend.last_payload().unwrap(),
                read(&dir.join(format!("step-{step}.rules"))),
                "{name}: step {step}"
            );
        }
        current = next;
    }
    d.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_steps_scale_up_over_the_api() {
    steps_over_api("steps-scale-up").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_steps_scale_down_over_the_api() {
    steps_over_api("steps-scale-down").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_steps_service_deleted_over_the_api() {
    steps_over_api("steps-service-deleted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_steps_endpoint_not_ready_over_the_api() {
    steps_over_api("steps-endpoint-not-ready").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_steps_node_zone_change_over_the_api() {
    steps_over_api("steps-node-zone-change-full-resync").await;
}

/// A 410 Gone makes every watcher relist; identical objects leave the rules alone, and the
/// next real change is a single partial sync.
/// The test API server pages lists as a real one does (`limit` / `continue`), so the daemon's
/// paged initial list is exercised: every object arrives once, in pages of at most `limit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_api_server_pages_lists() {
    use k8s_openapi::api::core::v1::Service;
    use kube::api::{Api, ListParams};
    let server = ApiServer::start().await;
    for i in 0..5 {
        server.apply(serde_json::json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("s{i}"), "namespace": if i % 2 == 0 { "a" } else { "b" }},
            "spec": {"clusterIP": format!("10.96.0.{}", i + 1)}}));
    }
    let client = kube::Client::try_from(kube::Config::new(server.url().parse().unwrap())).unwrap();
    let api = Api::<Service>::all(client);
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(2);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await.unwrap();
        assert!(page.items.len() <= 2);
        names.extend(page.items.iter().map(|s| s.metadata.name.clone().unwrap()));
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    names.sort();
    assert_eq!(names, ["s0", "s1", "s2", "s3", "s4"]);
    assert_eq!(
        server.lists(Kind::Services),
        1,
        "pages after the first are one list"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_relists_without_touching_rules() {
    let dir = case("steps-scale-up");
    let server = ApiServer::start().await;
    for o in step_objects(&dir, 1) {
        server.apply(o);
    }
    let d = start(test_config(&dir), api(&server)).await;
    wait_for("first sync", || d.backend.payload_count() == 1).await;
    let kinds = [Kind::Services, Kind::EndpointSlices, Kind::Nodes];
    let lists: Vec<usize> = kinds.iter().map(|k| server.lists(*k)).collect();
    assert!(lists.iter().all(|n| *n >= 1), "{lists:?}");
    server.expire();
    wait_for("relists", || {
        kinds.iter().zip(&lists).all(|(k, n)| server.lists(*k) > *n)
    })
    .await;
    let (apply, _) = diff(&step_objects(&dir, 1), &step_objects(&dir, 2));
    for o in apply {
        server.apply(o);
    }
    wait_for("step 2", || d.backend.tables() == golden_tables(&dir, 2)).await;
    assert_eq!(d.backend.payload_count(), 2, "the relist caused no sync");
    assert_eq!(
        d.backend.last_payload().unwrap(),
        read(&dir.join("step-2.rules"))
    );
    d.handle.shutdown().await;
}

/// The API server goes away: rules stay, health stays; it comes back with a change made
/// meanwhile (history compacted): the watchers relist and the change is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_away_and_back() {
    let dir = case("steps-scale-up");
    let mut server = ApiServer::start().await;
    for o in step_objects(&dir, 1) {
        server.apply(o);
    }
    let d = start(test_config(&dir), api(&server)).await;
    wait_for("first sync", || d.backend.payload_count() == 1).await;
    let tables = d.backend.tables();
    server.stop().await;
    // While it is away the watchers fail and back off; nothing may change.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(d.backend.payload_count(), 1);
    assert_eq!(d.backend.tables(), tables);
    let (code, _, _) = http_get(d.handle.healthz_addr.unwrap(), "/healthz").await;
    assert_eq!(code, 200);
    let (apply, _) = diff(&step_objects(&dir, 1), &step_objects(&dir, 2));
    for o in apply {
        server.apply(o);
    }
    server.expire();
    server.restart().await;
    wait_for("step 2 after reconnect", || {
        d.backend.tables() == golden_tables(&dir, 2)
    })
    .await;
    assert_eq!(d.backend.payload_count(), 2);
    d.handle.shutdown().await;
}

/// `--objects FILE`: loaded at start, reloaded when it changes; a broken file keeps the
/// previous objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_objects_file_reloads() {
    let dir = case("steps-scale-up");
    let tmp = std::env::temp_dir().join(format!("kprs-objects-{}.yaml", std::process::id()));
    std::fs::write(&tmp, read(&dir.join("step-1/objects.yaml"))).unwrap();
    let source = SourceSpec::File {
        path: tmp.clone(),
        poll: Duration::from_millis(100),
    };
    let d = start(test_config(&dir), source).await;
    wait_for("first sync", || d.backend.payload_count() == 1).await;
    assert_eq!(d.backend.payloads()[0], read(&dir.join("step-1.rules")));
    std::fs::write(&tmp, "kind: Service\nspec: [oops\n").unwrap();
    std::fs::write(&tmp, read(&dir.join("step-2/objects.yaml"))).unwrap();
    wait_for("reload", || d.backend.payload_count() == 2).await;
    assert_eq!(
        d.backend.last_payload().unwrap(),
        read(&dir.join("step-2.rules"))
    );
    std::fs::write(&tmp, "apiVersion: v1\nkind: Service\nspec: [oops\n").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        d.backend.payload_count(),
        2,
        "a broken file changes nothing"
    );
    assert_eq!(d.backend.tables(), golden_tables(&dir, 2));
    d.handle.shutdown().await;
    let _ = std::fs::remove_file(&tmp);
}

/// A failed restore: metrics count it, the rules stay, and the retry (after syncPeriod)
/// is a full sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_restore_forces_a_full_sync() {
    let dir = case("steps-scale-up");
    let server = ApiServer::start().await;
    for o in step_objects(&dir, 1) {
        server.apply(o);
    }
    let mut cfg = test_config(&dir);
    cfg.iptables.sync_period = Duration::from_secs(1);
    cfg.iptables.min_sync_period = Duration::ZERO;
    let d = start(cfg.clone(), api(&server)).await;
    wait_for("first sync", || d.backend.payload_count() == 1).await;
    let tables = d.backend.tables();
    d.backend
        .fail_next_restore("iptables-restore: line 7 failed");
    let (apply, _) = diff(&step_objects(&dir, 1), &step_objects(&dir, 2));
    for o in apply {
        server.apply(o);
    }
    wait_for("the failure", || d.backend.restore_failures() == 1).await;
    assert_eq!(
        d.backend.tables(),
        tables,
        "a failed restore changes nothing"
    );
    wait_for("the retry", || d.backend.payload_count() == 2).await;
    assert_eq!(d.backend.ensure_calls(), 2, "the retry is full");
    // A full sync of step 2 on a node without stale chains: upstream's full render.
    let set = load_objects(dir.join("step-2/objects.yaml").to_str().unwrap()).unwrap();
    let full = kube_proxy_rs::offline::render_syncs(
        kube_proxy_rs::offline::OfflineProxier::new(
            cfg,
            kube_proxy_rs::compat::Compat::v1_30(),
            IpFamily::V4,
        ),
        &[set],
        &mut Vec::new(),
    );
    assert_eq!(d.backend.last_payload().unwrap(), full);
    let m = d.handle.metrics.render();
    assert!(
        m.contains("kubeproxy_sync_proxy_rules_iptables_restore_failures_total 1\n"),
        "{m}"
    );
    assert!(
        m.contains("kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total 1\n"),
        "{m}"
    );
    d.handle.shutdown().await;
}

/// Someone flushes the tables (canaries included): the monitor notices and a full sync
/// puts every rule back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_gone_triggers_a_full_resync() {
    let dir = case("steps-scale-up");
    let tmp = std::env::temp_dir().join(format!("kprs-canary-{}.yaml", std::process::id()));
    std::fs::write(&tmp, read(&dir.join("step-1/objects.yaml"))).unwrap();
    let mut cfg = test_config(&dir);
    cfg.iptables.sync_period = Duration::from_secs(1);
    let d = start(
        cfg,
        SourceSpec::File {
            path: tmp.clone(),
            poll: Duration::from_millis(100),
        },
    )
    .await;
    wait_for("first sync", || d.backend.payload_count() == 1).await;
    let want = golden_tables(&dir, 1);
    wait_for("canaries", || d.backend.tables() == want).await;
    for t in ["mangle", "nat", "filter"] {
        d.backend.flush_table(t);
    }
    assert_ne!(d.backend.tables(), want);
    wait_for("full resync", || d.backend.payload_count() == 2).await;
    assert_eq!(d.backend.ensure_calls(), 2);
    wait_for("rules and canaries back", || d.backend.tables() == want).await;
    d.handle.shutdown().await;
    let _ = std::fs::remove_file(&tmp);
}

/// Plain HTTP/1.1 GET: (status, headers lower-cased, body).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, head.to_lowercase(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_metrics_and_service_health_over_http() {
    let dir = case("etp-local-with-local-endpoints");
    let tmp = std::env::temp_dir().join(format!("kprs-hc-{}.yaml", std::process::id()));
    std::fs::write(&tmp, read(&dir.join("objects.yaml"))).unwrap();
    let d = start(
        test_config(&dir),
        SourceSpec::File {
            path: tmp.clone(),
            poll: Duration::from_millis(100),
        },
    )
    .await;
    wait_for("first sync", || d.backend.payload_count() == 1).await;
    assert_eq!(d.backend.payloads()[0], read(&dir.join("expected.rules")));

    let h = d.handle.healthz_addr.unwrap();
    let (code, head, body) = http_get(h, "/healthz").await;
    assert_eq!(code, 200);
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    // {"lastUpdated": "<t>","currentTime": "<t>", "nodeEligible": true} with equal times.
    let rest = body.strip_prefix("{\"lastUpdated\": \"").expect(&body);
    let (last, rest) = rest.split_once("\",\"currentTime\": \"").expect(&body);
    let (now, rest) = rest.split_once('"').expect(&body);
    assert_eq!(last, now);
    assert!(now.contains(" +0000 UTC m=+"), "{now}");
    assert_eq!(rest, ", \"nodeEligible\": true}");
    let (code, _, body) = http_get(h, "/livez").await;
    assert_eq!(code, 200);
    assert!(
        body.starts_with("{\"lastUpdated\": \"") && !body.contains("nodeEligible"),
        "{body}"
    );
    assert_eq!(http_get(h, "/other").await.0, 404);

    let m = d.handle.metrics_addr.unwrap();
    let (code, _, body) = http_get(m, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        body.contains("kubeproxy_proxy_healthz_total{code=\"200\"} 1\n"),
        "{body}"
    );
    assert!(
        body.contains("kubeproxy_proxy_livez_total{code=\"200\"} 1\n"),
        "{body}"
    );
    assert!(
        body.contains("kubeproxy_sync_full_proxy_rules_duration_seconds_count 1\n"),
        "{body}"
    );
    let last = body
        .lines()
        .find_map(|l| l.strip_prefix("kubeproxy_sync_proxy_rules_last_timestamp_seconds "))
        .expect("last timestamp");
    assert!(last.parse::<f64>().unwrap() > 1.6e9, "{last}");
    let payload = &d.backend.payloads()[0];
    let filter_rules = payload
        .split("*nat")
        .next()
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("-A "))
        .count();
    assert!(
        body.contains(&format!(
            "kubeproxy_sync_proxy_rules_iptables_last{{table=\"filter\"}} {filter_rules}\n"
        )),
        "{body}"
    );
    assert_eq!(http_get(m, "/healthz").await.2, "ok");
    assert_eq!(http_get(m, "/proxyMode").await.2, "iptables");

    // The eTP=Local LoadBalancer's health-check node port.
    let objs = read(&dir.join("objects.yaml"));
    let port: u16 = objs
        .lines()
        .find_map(|l| l.trim().strip_prefix("healthCheckNodePort: "))
        .expect("case has a healthCheckNodePort")
        .parse()
        .unwrap();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    wait_for("health-check server", || {
        std::net::TcpStream::connect(addr).is_ok()
    })
    .await;
    let (code, head, body) = http_get(addr, "/anything").await;
    assert_eq!(code, 200, "{body}");
    assert!(
        head.contains("x-load-balancing-endpoint-weight: "),
        "{head}"
    );
    assert!(
        body.contains("\n\t\"serviceProxyHealthy\": true\n}"),
        "{body}"
    );
    assert!(!body.ends_with('\n'));
    d.handle.shutdown().await;
    let _ = std::fs::remove_file(&tmp);
}

/// The value of an unlabelled sample in a /metrics body.
fn sample(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} missing:\n{body}"))
        .parse()
        .unwrap()
}

/// A slice change stamped with `endpoints.kubernetes.io/last-change-trigger-time` is
/// observed in the network programming histogram after its sync (spec §6.6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_time_feeds_network_programming_latency() {
    const HIST: &str = "kubeproxy_network_programming_duration_seconds";
    let svc = serde_json::json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "ns"},
        "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}});
    let slice = |ips: &[&str], trigger: Option<String>| {
        let mut s = serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "ns", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": ips.iter().map(|ip| serde_json::json!({"addresses": [ip]})).collect::<Vec<_>>()});
        if let Some(t) = trigger {
            s["metadata"]["annotations"] =
                serde_json::json!({"endpoints.kubernetes.io/last-change-trigger-time": t});
        }
        s
    };
    let server = ApiServer::start().await;
    server.apply(svc);
    server.apply(slice(&["10.244.0.5"], None));
    let cfg = KubeProxyConfiguration {
        hostname_override: "node-a".into(),
        healthz_bind_address: "127.0.0.1:0".into(),
        metrics_bind_address: "127.0.0.1:0".into(),
        ..Default::default()
    };
    let d = start(cfg, api(&server)).await;
    let started = std::time::SystemTime::now();
    wait_for("first sync", || d.backend.payload_count() == 1).await;
    let m = d.handle.metrics_addr.unwrap();
    let body = http_get(m, "/metrics").await.2;
    assert_eq!(sample(&body, &format!("{HIST}_count")), 0.0);

    // A change triggered 0.5 s after the daemon started, applied ≥ 1.5 s later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let trigger = started + Duration::from_millis(500);
    let stamp = jiff::Timestamp::try_from(trigger).unwrap().to_string();
    assert!(stamp.ends_with('Z') && stamp.contains('.'), "{stamp}");
    let age = std::time::SystemTime::now()
        .duration_since(trigger)
        .unwrap()
        .as_secs_f64();
    server.apply(slice(&["10.244.0.5", "10.244.0.6"], Some(stamp)));
    wait_for("second sync", || d.backend.payload_count() == 2).await;
    let body = http_get(m, "/metrics").await.2;
    assert_eq!(sample(&body, &format!("{HIST}_count")), 1.0, "{body}");
    let sum = sample(&body, &format!("{HIST}_sum"));
    assert!(sum >= age && sum < age + 60.0, "sum {sum}, age {age}");
    d.handle.shutdown().await;
}

/// An iptables older than 1.6.2 (no `--random-fully`): the MASQUERADE rule goes without
/// it, and the payload is otherwise upstream's (spec §3, §5.7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_iptables_gets_no_random_fully() {
    let dir = case("steps-scale-up");
    let tmp = std::env::temp_dir().join(format!("kprs-oldipt-{}.yaml", std::process::id()));
    std::fs::write(&tmp, read(&dir.join("step-1/objects.yaml"))).unwrap();
    let backend = RecordingBackend::new(IpFamily::V4);
    backend.set_random_fully(false);
    let source = SourceSpec::File {
        path: tmp.clone(),
        poll: Duration::from_millis(100),
    };
    let d = start_with(test_config(&dir), source, backend).await;
    wait_for("first sync", || d.backend.payload_count() == 1).await;
    let golden = read(&dir.join("step-1.rules"));
    assert!(golden.contains("-j MASQUERADE --random-fully\n"));
    assert_eq!(
        d.backend.payloads()[0],
        golden.replace(" --random-fully", "")
    );
    assert_eq!(d.backend.restore_failures(), 0);
    d.handle.shutdown().await;
    let _ = std::fs::remove_file(&tmp);
}

/// Dual-stack: each family has its own rate-limited runner and syncs on its own changes
/// only (upstream runs two independent proxiers); an IPv6-only endpoint change leaves
/// IPv4 alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn families_sync_on_their_own_changes() {
    let svc = serde_json::json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "ns"},
        "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20", "fd00::20"],
            "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}});
    let slice = |name: &str, family: &str, ip: &str| {
        serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "ns", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": family,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip]}]})
    };
    let server = ApiServer::start().await;
    server.apply(svc);
    server.apply(slice("web-v4", "IPv4", "10.244.0.5"));
    server.apply(slice("web-v6", "IPv6", "fd00:244::5"));
    let cfg = KubeProxyConfiguration {
        hostname_override: "node-a".into(),
        healthz_bind_address: String::new(),
        metrics_bind_address: String::new(),
        ..Default::default()
    };
    let (v4, v6) = (
        RecordingBackend::new(IpFamily::V4),
        RecordingBackend::new(IpFamily::V6),
    );
    let opts = DaemonOptions {
        compat: kube_proxy_rs::compat::Compat::v1_30(),
        config: cfg,
        source: api(&server),
        host: HostMode::Offline,
        minimal_restore: false,
    };
    let handle = daemon::start(
        opts,
        vec![Box::new(v4.clone()), Box::new(v6.clone())],
        Box::new(RecordingConntrack::default()),
    )
    .await
    .unwrap();
    wait_for("first syncs", || {
        v4.payload_count() == 1 && v6.payload_count() == 1
    })
    .await;
    assert!(v6.last_payload().unwrap().contains("fd00:244::5"));
    server.apply(slice("web-v6", "IPv6", "fd00:244::6"));
    wait_for("IPv6 sync", || v6.payload_count() == 2).await;
    assert!(v6.last_payload().unwrap().contains("fd00:244::6"));
    // Give a wrongly coupled IPv4 runner time to show itself (min sync period is 1 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(v4.payload_count(), 1, "IPv4 had nothing to sync");
    server.apply(slice("web-v4", "IPv4", "10.244.0.6"));
    wait_for("IPv4 sync", || v4.payload_count() == 2).await;
    assert!(v4.last_payload().unwrap().contains("10.244.0.6"));
    assert_eq!(v6.payload_count(), 2, "IPv6 had nothing to sync");
    handle.shutdown().await;
}
