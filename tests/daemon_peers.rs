//! The daemon in process (recording netfilter backend) against peers that fail: an API
//! server that restarts with a compacted history, and server ports that are taken.

mod common;

use common::apiserver::ApiServer;
use kube_proxy_rs::config::KubeProxyConfiguration;
use kube_proxy_rs::daemon::{self, DaemonOptions, HostMode, SourceSpec};
use kube_proxy_rs::iptables::recording::RecordingBackend;
use kube_proxy_rs::model::ip::IpFamily;
use kube_proxy_rs::sync::conntrack::RecordingConntrack;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn service(name: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
}

fn config() -> KubeProxyConfiguration {
    let mut cfg = KubeProxyConfiguration {
        hostname_override: "node-a".into(),
        healthz_bind_address: "127.0.0.1:0".into(),
        metrics_bind_address: "127.0.0.1:0".into(),
        ..Default::default()
    };
    cfg.iptables.min_sync_period = Duration::ZERO;
    cfg
}

async fn start(
    cfg: KubeProxyConfiguration,
    source: SourceSpec,
) -> anyhow::Result<(daemon::DaemonHandle, RecordingBackend)> {
    let backend = RecordingBackend::new(IpFamily::V4);
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
        Box::new(RecordingConntrack::default()),
    )
    .await?;
    Ok((handle, backend))
}

async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// The API server is away for 10 s (the watchers' retries grow meanwhile), then comes
/// back with its history compacted, so the resumed watches get 410 Gone. The first change
/// after the restart must not wait on the backoff the outage grew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_restart_with_compacted_history_converges_promptly() {
    let mut server = ApiServer::start().await;
    server.apply(service("a", "10.96.0.10"));
    let source = SourceSpec::Api {
        kubeconfig: None,
        master: Some(server.url()),
    };
    let (handle, backend) = start(config(), source).await.unwrap();
    wait_for("first sync", Duration::from_secs(90), || {
        backend.payload_count() >= 1
    })
    .await;
    server.stop().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    server.expire();
    server.restart().await;
    let restarted = Instant::now();
    server.apply(service("b", "10.96.0.11"));
    let has_b = || {
        backend
            .last_payload()
            .is_some_and(|p| p.contains("-d 10.96.0.11 "))
    };
    wait_for(
        "the change after the restart",
        Duration::from_secs(90),
        has_b,
    )
    .await;
    let took = restarted.elapsed();
    eprintln!("first change after the API server restart reached the rules in {took:?}");
    // Generous (the fix makes it ~3 s at worst; the outage's backoff made it 12 s or more).
    assert!(took < Duration::from_secs(8), "took {took:?}");
    handle.shutdown().await;
}

/// A 200 to GET /healthz within a few seconds (a bound but unserved port never answers).
async fn answers(addr: SocketAddr) -> bool {
    tokio::time::timeout(Duration::from_secs(3), get_ok(addr))
        .await
        .unwrap_or(false)
}

async fn get_ok(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let req = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200")
}

fn objects_file(tag: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("kprs-peers-{tag}-{}.yaml", std::process::id()));
    std::fs::write(
        &p,
        "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: ns}\nspec:\n  clusterIP: 10.96.0.10\n  ports: [{name: http, port: 80, protocol: TCP}]\n",
    )
    .unwrap();
    p
}

/// Without bindAddressHardFail, taken healthz and metrics ports are logged and retried
/// (every 5 s): the daemon syncs meanwhile, and both servers come up once the ports free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taken_server_ports_are_retried_without_hard_fail() {
    let healthz = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (h, m) = (healthz.local_addr().unwrap(), metrics.local_addr().unwrap());
    let mut cfg = config();
    cfg.healthz_bind_address = h.to_string();
    cfg.metrics_bind_address = m.to_string();
    let path = objects_file("retry");
    let source = SourceSpec::File {
        path: path.clone(),
        poll: Duration::from_millis(100),
    };
    let (handle, backend) = start(cfg, source).await.expect("no hard fail: starts");
    wait_for("first sync", Duration::from_secs(90), || {
        backend.payload_count() >= 1
    })
    .await;
    assert_eq!(handle.healthz_addr, Some(h));
    assert_eq!(handle.metrics_addr, Some(m));
    assert!(!answers(h).await && !answers(m).await);
    drop(healthz);
    drop(metrics);
    let mut up = (false, false);
    let took = wait_for(
        "servers after the ports freed",
        Duration::from_secs(60),
        || {
            up.0 |= std::net::TcpStream::connect(h).is_ok();
            up.1 |= std::net::TcpStream::connect(m).is_ok();
            up == (true, true)
        },
    )
    .await;
    eprintln!("servers listening {took:?} after the ports were freed (retry every 5 s)");
    assert!(answers(h).await && answers(m).await);
    handle.shutdown().await;
    let _ = std::fs::remove_file(&path);
}

/// With bindAddressHardFail a taken port is an error naming the server and address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taken_server_ports_fail_with_hard_fail() {
    let path = objects_file("hard");
    for which in ["healthz", "metrics"] {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let mut cfg = config();
        cfg.bind_address_hard_fail = true;
        if which == "healthz" {
            cfg.healthz_bind_address = addr.clone();
        } else {
            cfg.metrics_bind_address = addr.clone();
        }
        let source = SourceSpec::File {
            path: path.clone(),
            poll: Duration::from_millis(100),
        };
        let err = match start(cfg, source).await {
            Ok(_) => panic!("{which}: started on a taken port"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(&format!("{which} server on {addr}")), "{err}");
    }
    let _ = std::fs::remove_file(&path);
}
