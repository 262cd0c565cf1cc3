//! The API client's configuration, with the real binary against the test API server:
//! `--kubeconfig` alone (no config file, no `--master`) over HTTP and HTTPS (a CA bundle as
//! a file or inline, a bearer token, a client certificate), the in-cluster service account
//! as the DaemonSet in `deploy/` mounts it, and a CA that does not match.

mod common;

use base64::Engine as _;
use common::apiserver::{ApiServer, Kind};
use common::pki::{common_name, Pki};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A kubeconfig with one cluster and one user; `cluster` and `user` are extra YAML lines
/// (already indented) of the `cluster:` and `user:` maps.
fn kubeconfig(server: &str, cluster: &[String], user: &[String]) -> String {
    let ind = |l: &[String]| l.iter().map(|s| format!("    {s}\n")).collect::<String>();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: {server}\n{}  name: default\n\
         contexts:\n- context:\n    cluster: default\n    user: default\n  name: default\n\
         current-context: default\nusers:\n- name: default\n  user:\n{}",
        ind(cluster),
        if user.is_empty() { "    {}\n".to_string() } else { ind(user) },
    )
}

fn token(t: &str) -> Vec<String> {
    vec![format!("token: {t}")]
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kprs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A Service and this daemon's Node (1.35's /healthz is 503 until the Node is known).
fn web_service(server: &ApiServer) {
    server.apply(json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-a"},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.10"}]}}));
    server.apply(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "ns"},
        "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}));
}

/// What a daemon run left: its stdout (the --dry-run rules), stderr (the log), and the
/// status /healthz answered once `done` held (None: never asked or no answer).
struct Run {
    out: String,
    log: String,
    healthz: Option<u16>,
}

/// The daemon (`--dry-run`, node-a) run through `wrapper` (empty: directly) with `args`,
/// until `done(stdout)` or the deadline.
async fn run(
    wrapper: &[&str],
    args: &[&str],
    env: &[(&str, &str)],
    scratch: &Path,
    done: impl FnMut(&str) -> bool,
) -> Run {
    run_with_healthz(&free_addr(), wrapper, args, env, scratch, done).await
}

/// [`run`] with /healthz expected on `healthz` (a config file's address wins over the flag).
async fn run_with_healthz(
    healthz: &str,
    wrapper: &[&str],
    args: &[&str],
    env: &[(&str, &str)],
    scratch: &Path,
    mut done: impl FnMut(&str) -> bool,
) -> Run {
    let out = scratch.join("daemon.out");
    let log = scratch.join("daemon.log");
    let mut cmd = match wrapper.split_first() {
        Some((w, rest)) => {
            let mut c = Command::new(w);
            c.args(rest).arg(common::BIN);
            c
        }
        None => Command::new(common::BIN),
    };
    cmd.args(args)
        .args(["--hostname-override", "node-a", "--dry-run"])
        .args(["--conntrack-max-per-core", "0"])
        .args(["--healthz-bind-address", healthz])
        .args(["--metrics-bind-address", &free_addr()])
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn,kube_proxy_rs=info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut text = String::new();
    let mut code = None;
    while Instant::now() < deadline {
        text = std::fs::read_to_string(&out).unwrap_or_default();
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if done(&text) {
            code = healthz_status(healthz).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    Run {
        out: text,
        log: std::fs::read_to_string(&log).unwrap_or_default(),
        healthz: code,
    }
}

async fn healthz_status(addr: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    String::from_utf8_lossy(&buf)
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

/// The daemon listed the Service and rendered its rules, and /healthz answered 200.
fn assert_synced(r: &Run, server: &ApiServer) {
    assert!(
        r.out.contains("\"ns/web:http has no endpoints\""),
        "no rules for ns/web; log:\n{}",
        r.log
    );
    assert!(server.lists(Kind::Services) >= 1);
    assert!(server.lists(Kind::EndpointSlices) >= 1);
    assert_eq!(r.healthz, Some(200), "log:\n{}", r.log);
}

fn synced(o: &str) -> bool {
    o.contains("# sync 1\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_alone_with_a_bearer_token() {
    let server = ApiServer::start().await;
    server.require_token("s3cret");
    web_service(&server);
    let dir = scratch("kubeconfig");

    let good = dir.join("good.conf");
    std::fs::write(&good, kubeconfig(&server.url(), &[], &token("s3cret"))).unwrap();
    let r = run(
        &[],
        &["--kubeconfig", good.to_str().unwrap()],
        &[],
        &dir,
        synced,
    )
    .await;
    assert_synced(&r, &server);
    assert_eq!(server.unauthorized(), 0);

    // A wrong token is refused: no sync happens.
    let lists = server.lists(Kind::Services);
    let bad = dir.join("bad.conf");
    std::fs::write(&bad, kubeconfig(&server.url(), &[], &token("wrong"))).unwrap();
    let args = ["--kubeconfig", bad.to_str().unwrap()];
    let r = run(&[], &args, &[], &dir, |_| server.unauthorized() >= 3).await;
    assert!(server.unauthorized() >= 3, "the wrong token was not sent");
    assert!(!r.out.contains("# sync"), "{}", r.out);
    assert_eq!(server.lists(Kind::Services), lists);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_alone_over_tls_with_a_ca_bundle_and_a_token() {
    let pki = Pki::new("test-cluster-ca");
    let server = ApiServer::start_tls(&pki, false).await;
    assert!(server.url().starts_with("https://127.0.0.1:"));
    server.require_token("tls-token");
    web_service(&server);
    let dir = scratch("kubeconfig-tls");
    let ca = dir.join("ca.crt");
    std::fs::write(&ca, &pki.ca_pem).unwrap();

    for (name, cluster) in [
        ("file", format!("certificate-authority: {}", ca.display())),
        (
            "data",
            format!("certificate-authority-data: {}", b64(&pki.ca_pem)),
        ),
    ] {
        let kc = dir.join(format!("{name}.conf"));
        let text = kubeconfig(&server.url(), &[cluster], &token("tls-token"));
        std::fs::write(&kc, text).unwrap();
        let lists = server.lists(Kind::Services);
        let r = run(
            &[],
            &["--kubeconfig", kc.to_str().unwrap()],
            &[],
            &dir,
            synced,
        )
        .await;
        assert_synced(&r, &server);
        assert!(server.lists(Kind::Services) > lists, "{name}: no new list");
    }
    assert_eq!(server.unauthorized(), 0);
    assert_eq!(server.handshake_failures(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_with_a_client_certificate() {
    let pki = Pki::new("test-cluster-ca");
    let server = ApiServer::start_tls(&pki, true).await;
    web_service(&server);
    let dir = scratch("kubeconfig-cert");
    let client = pki.client("system:kube-proxy");
    assert_eq!(
        common_name(&client.cert_der).as_deref(),
        Some("system:kube-proxy")
    );
    let (crt, key) = (dir.join("client.crt"), dir.join("client.key"));
    std::fs::write(&crt, &client.cert_pem).unwrap();
    std::fs::write(&key, &client.key_pem).unwrap();
    let kc = dir.join("cert.conf");
    let cluster = [format!("certificate-authority-data: {}", b64(&pki.ca_pem))];
    let user = [
        format!("client-certificate: {}", crt.display()),
        format!("client-key: {}", key.display()),
    ];
    std::fs::write(&kc, kubeconfig(&server.url(), &cluster, &user)).unwrap();
    let r = run(
        &[],
        &["--kubeconfig", kc.to_str().unwrap()],
        &[],
        &dir,
        synced,
    )
    .await;
    assert_synced(&r, &server);
    let names = server.client_names();
    assert!(!names.is_empty());
    assert!(names.iter().all(|n| n == "system:kube-proxy"), "{names:?}");

    // Without the certificate the handshake fails and nothing is listed.
    let lists = server.lists(Kind::Services);
    let kc = dir.join("nocert.conf");
    std::fs::write(&kc, kubeconfig(&server.url(), &cluster, &token("x"))).unwrap();
    let args = ["--kubeconfig", kc.to_str().unwrap()];
    let r = run(&[], &args, &[], &dir, |_| server.handshake_failures() >= 2).await;
    assert!(server.handshake_failures() >= 2, "log:\n{}", r.log);
    assert!(!r.out.contains("# sync"), "{}", r.out);
    assert_eq!(server.lists(Kind::Services), lists);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_fails_with_a_clear_error() {
    let pki = Pki::new("test-cluster-ca");
    let other = Pki::new("some-other-ca");
    let server = ApiServer::start_tls(&pki, false).await;
    web_service(&server);
    let dir = scratch("kubeconfig-wrong-ca");
    let kc = dir.join("wrong-ca.conf");
    let cluster = [format!(
        "certificate-authority-data: {}",
        b64(&other.ca_pem)
    )];
    std::fs::write(&kc, kubeconfig(&server.url(), &cluster, &token("t"))).unwrap();
    let args = ["--kubeconfig", kc.to_str().unwrap()];
    let r = run(&[], &args, &[], &dir, |_| server.handshake_failures() >= 2).await;
    assert!(server.handshake_failures() >= 2, "log:\n{}", r.log);
    assert!(!r.out.contains("# sync"), "{}", r.out);
    assert_eq!(server.lists(Kind::Services), 0);
    // The log names the cause: the server's certificate is not from a trusted CA.
    if let Some(l) = r.log.lines().find(|l| l.contains("UnknownIssuer")) {
        eprintln!("{l}");
    }
    assert!(
        r.log.contains("UnknownIssuer") || r.log.contains("unknown issuer"),
        "{}",
        r.log
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The service account as kubelet mounts it, in a private mount namespace so the real
/// path is used without touching the host: a tmpfs on /run (= /var/run) holding
/// `secrets/kubernetes.io/serviceaccount` bind-mounted from `sa`.
fn in_mount_namespace(sa: &Path) -> Vec<String> {
    let script = format!(
        "set -e; mount -t tmpfs kprs-sa /run; d=/run/secrets/kubernetes.io/serviceaccount; \
         mkdir -p $d; mount --bind {} $d; exec \"$@\"",
        sa.display()
    );
    [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
    ]
    .map(String::from)
    .to_vec()
}

fn can_unshare() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: a private mount namespace needs root");
        return false;
    }
    let ok = Command::new("unshare")
        .args(["-m", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: unshare -m does not work here");
    }
    ok
}

fn service_account(dir: &Path, pki: &Pki, token: &str) -> PathBuf {
    let sa = dir.join("serviceaccount");
    std::fs::create_dir_all(&sa).unwrap();
    std::fs::write(sa.join("token"), token).unwrap();
    std::fs::write(sa.join("ca.crt"), &pki.ca_pem).unwrap();
    std::fs::write(sa.join("namespace"), "kube-system").unwrap();
    sa
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_cluster_service_account() {
    if !can_unshare() {
        return;
    }
    let pki = Pki::new("test-cluster-ca");
    let server = ApiServer::start_tls(&pki, false).await;
    server.require_token("sa-token");
    web_service(&server);
    let dir = scratch("incluster");
    let sa = service_account(&dir, &pki, "sa-token");
    let wrap = in_mount_namespace(&sa);
    let wrap: Vec<&str> = wrap.iter().map(String::as_str).collect();
    let port = server.addr.port().to_string();
    let env = [
        ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
        ("KUBERNETES_SERVICE_PORT", port.as_str()),
    ];
    // No --kubeconfig, no --master, no config file: kube-proxy's in-cluster fallback.
    let r = run(&wrap, &[], &env, &dir, synced).await;
    assert_synced(&r, &server);
    assert_eq!(server.unauthorized(), 0);
    assert!(
        !Path::new("/run/secrets/kubernetes.io/serviceaccount/token").exists(),
        "the service account leaked onto the host"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deploy_manifests_configuration_and_kubeconfig() {
    if !can_unshare() {
        return;
    }
    let pki = Pki::new("test-cluster-ca");
    let server = ApiServer::start_tls(&pki, false).await;
    server.require_token("ds-token");
    web_service(&server);
    let dir = scratch("deploy-config");
    let sa = service_account(&dir, &pki, "ds-token");

    // The ConfigMap's two files as shipped, with the API server's address (the manifest's
    // placeholder), the kubeconfig's path and this test's listen addresses put in.
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kube-proxy-rs.yaml"
    ))
    .unwrap();
    let cm: serde_yaml_ng::Value = serde_yaml_ng::Deserializer::from_str(&manifest)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .find(|d: &serde_yaml_ng::Value| d["kind"].as_str() == Some("ConfigMap"))
        .unwrap();
    let kubeconfig = cm["data"]["kubeconfig.conf"].as_str().unwrap();
    assert!(kubeconfig.contains("server: https://control-plane.example:6443"));
    let kubeconfig = kubeconfig.replace("https://control-plane.example:6443", &server.url());
    let kc = dir.join("kubeconfig.conf");
    std::fs::write(&kc, kubeconfig).unwrap();
    let config = cm["data"]["config.conf"].as_str().unwrap();
    let replace = |text: &str, from: &str, to: &str| {
        assert!(text.contains(from), "config.conf has no {from:?}");
        text.replace(from, to)
    };
    let config = replace(
        config,
        "kubeconfig: /var/lib/kube-proxy/kubeconfig.conf",
        &format!("kubeconfig: {}", kc.display()),
    );
    let config = replace(&config, "maxPerCore: 32768", "maxPerCore: 0");
    let healthz = free_addr();
    let config = replace(
        &config,
        "healthzBindAddress: 0.0.0.0:10256",
        &format!("healthzBindAddress: {healthz}"),
    );
    let config = replace(
        &config,
        "metricsBindAddress: 127.0.0.1:10249",
        &format!("metricsBindAddress: {}", free_addr()),
    );
    let cfg = dir.join("config.conf");
    std::fs::write(&cfg, config).unwrap();

    let wrap = in_mount_namespace(&sa);
    let wrap: Vec<&str> = wrap.iter().map(String::as_str).collect();
    let args = [format!("--config={}", cfg.display())];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = run_with_healthz(&healthz, &wrap, &args, &[], &dir, synced).await;
    assert_synced(&r, &server);
    assert_eq!(server.unauthorized(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
