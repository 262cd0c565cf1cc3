//! The `Starting` Event upstream kube-proxy records for its Node at start (`birthCry`:
//! `Eventf(NodeRef, nil, Normal, "Starting", "StartKubeProxy", "")` through client-go's
//! events.k8s.io/v1 recorder named "kube-proxy"), posted to the test API server.

mod common;

use common::apiserver::ApiServer;
use kube_proxy_rs::config::KubeProxyConfiguration;
use kube_proxy_rs::daemon::{self, DaemonOptions, HostMode, SourceSpec};
use kube_proxy_rs::iptables::recording::RecordingBackend;
use kube_proxy_rs::model::ip::IpFamily;
use kube_proxy_rs::sync::conntrack::RecordingConntrack;
use std::time::{Duration, Instant};

fn cfg() -> KubeProxyConfiguration {
    KubeProxyConfiguration {
        hostname_override: "node-a".into(),
        healthz_bind_address: "127.0.0.1:0".into(),
        metrics_bind_address: "127.0.0.1:0".into(),
        ..Default::default()
    }
}

async fn start(source: SourceSpec) -> daemon::DaemonHandle {
    let opts = DaemonOptions {
        config: cfg(),
        source,
        host: HostMode::Offline,
        minimal_restore: false,
        compat: kube_proxy_rs::compat::Compat::v1_30(),
    };
    daemon::start(
        opts,
        vec![Box::new(RecordingBackend::new(IpFamily::V4))],
        Box::new(RecordingConntrack::default()),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_event_for_the_node() {
    let server = ApiServer::start().await;
    let d = start(SourceSpec::Api {
        kubeconfig: None,
        master: Some(server.url()),
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.events().is_empty() {
        assert!(Instant::now() < deadline, "no Event posted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give a second Event (there must be none) a chance to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = server.events();
    assert_eq!(events.len(), 1, "{events:?}");
    let (ns, e) = &events[0];
    // The Node is cluster-scoped: client-go puts its Events in "default".
    assert_eq!(ns, "default");
    assert_eq!(e["apiVersion"], "events.k8s.io/v1");
    assert_eq!(e["kind"], "Event");
    assert_eq!(e["type"], "Normal");
    assert_eq!(e["reason"], "Starting");
    assert_eq!(e["action"], "StartKubeProxy");
    assert_eq!(e["reportingController"], "kube-proxy");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(
        e["reportingInstance"],
        format!("kube-proxy-{}", host.trim().to_lowercase())
    );
    let r = &e["regarding"];
    assert_eq!(r["kind"], "Node");
    assert_eq!(r["name"], "node-a");
    // Upstream's NodeRef uses the node name as UID.
    assert_eq!(r["uid"], "node-a");
    assert!(r.get("namespace").is_none(), "{r}");
    assert!(e.get("note").is_none(), "upstream's note is empty: {e}");
    assert!(
        e["eventTime"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{e}"
    );
    assert!(e["metadata"]["name"]
        .as_str()
        .is_some_and(|n| n.starts_with("node-a.")));
    d.shutdown().await;
}
