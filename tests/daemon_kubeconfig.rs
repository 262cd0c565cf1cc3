//! `--kubeconfig` alone (no config file, no `--master`), with the real binary against the
//! test API server: the server and the bearer token come from the kubeconfig.

mod common;

use common::apiserver::{ApiServer, Kind};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn kubeconfig(server: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: {server}\n  name: default\n\
         contexts:\n- context:\n    cluster: default\n    user: default\n  name: default\n\
         current-context: default\nusers:\n- name: default\n  user:\n    token: {token}\n"
    )
}

/// Runs the daemon with `--kubeconfig` until `done` or the deadline; returns its stdout.
async fn run(kc: &std::path::Path, mut done: impl FnMut(&str) -> bool) -> String {
    let out = kc.with_extension("out");
    let mut child = Command::new(common::BIN)
        .arg("--kubeconfig")
        .arg(kc)
        .args(["--hostname-override", "node-a", "--dry-run"])
        .args(["--conntrack-max-per-core", "0"])
        .args(["--healthz-bind-address", &free_addr()])
        .args(["--metrics-bind-address", &free_addr()])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut text = String::new();
    while Instant::now() < deadline {
        text = std::fs::read_to_string(&out).unwrap_or_default();
        if done(&text) || child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let _ = std::fs::remove_file(&out);
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_alone_with_a_bearer_token() {
    let server = ApiServer::start().await;
    server.require_token("s3cret");
    server.apply(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "ns"},
        "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}));
    let dir = std::env::temp_dir().join(format!("kprs-kubeconfig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let good = dir.join("good.conf");
    std::fs::write(&good, kubeconfig(&server.url(), "s3cret")).unwrap();
    let out = run(&good, |o| o.contains("# sync 1\n")).await;
    assert!(out.contains("\"ns/web:http has no endpoints\""), "{out}");
    assert_eq!(server.unauthorized(), 0);
    assert!(server.lists(Kind::Services) >= 1);

    // A wrong token is refused: no sync happens.
    let lists = server.lists(Kind::Services);
    let bad = dir.join("bad.conf");
    std::fs::write(&bad, kubeconfig(&server.url(), "wrong")).unwrap();
    let out = run(&bad, |_| server.unauthorized() >= 3).await;
    assert!(server.unauthorized() >= 3, "the wrong token was not sent");
    assert!(!out.contains("# sync"), "{out}");
    assert_eq!(server.lists(Kind::Services), lists);
    let _ = std::fs::remove_dir_all(&dir);
}
