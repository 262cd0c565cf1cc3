//! The daemon (real binary, real iptables-legacy, objects file) in a node namespace with
//! a bad endpoint and a bad timeout in one Service: that Service's rules are applied with
//! the values normalised, another Service's later change is applied too, and each problem
//! is logged and counted once, not on every sync or file reload.

mod common;
use common::*;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn service(name: &str, ip: &str, timeout: i32, addrs: &[&str]) -> String {
    let eps: String = addrs
        .iter()
        .map(|a| format!("- addresses: [\"{a}\"]\n  nodeName: node-a\n"))
        .collect();
    format!(
        "---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  clusterIP: {ip}
  clusterIPs: [{ip}]
  sessionAffinity: ClientIP
  sessionAffinityConfig: {{clientIP: {{timeoutSeconds: {timeout}}}}}
  ports: [{{name: http, port: 80, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
endpoints:
{eps}ports: [{{name: http, port: 8080, protocol: TCP}}]
"
    )
}

fn wait_for_save(ns: &Netns, what: &str, want: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let save = ns.save("legacy");
        if want.iter().all(|w| save.contains(w)) {
            return save;
        }
        assert!(Instant::now() < deadline, "{what} never applied:\n{save}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn metrics(ns: &Netns) -> String {
    ns.enter(|| {
        let mut s = std::net::TcpStream::connect("127.0.0.1:10249").expect("metrics");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    })
}

#[test]
fn a_bad_endpoint_is_isolated_and_reported_once() {
    if !can_run() {
        return;
    }
    let ns = Netns::new(&format!("bo{}", std::process::id()), "node");
    let dir = std::env::temp_dir().join(format!("kprs-badobj-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.yaml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let obj = dir.join("objects.yaml");
    let bad = service(
        "bad",
        "10.96.0.30",
        0,
        &["010.244.1.50", "010.244.1.500", "::ffff:10.244.1.3"],
    );
    std::fs::write(&obj, format!("{NODE_YAML}{bad}")).unwrap();
    let log = dir.join("daemon.log");
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name, BIN])
        .args(["--config", cfg.to_str().unwrap()])
        .args(["--objects", obj.to_str().unwrap()])
        .args(["--iptables-min-sync-period", "0s"])
        .args(["--healthz-bind-address", "127.0.0.1:10256"])
        .args(["--metrics-bind-address", "127.0.0.1:10249"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start the daemon");
    let daemon = Daemon(child);

    let save = wait_for_save(
        &ns,
        "the bad Service",
        &[
            "--to-destination 10.244.1.50:8080",
            "--to-destination 10.244.1.3:8080",
        ],
    );
    assert!(save.contains("--seconds 10800"), "{save}");
    assert!(
        !save.contains("010.244") && !save.contains("::ffff"),
        "{save}"
    );

    // An unrelated change after it: applied (atomic rename, as the README asks).
    let good = service("good", "10.96.0.31", 60, &["10.244.2.7"]);
    let tmp = obj.with_extension("new");
    std::fs::write(&tmp, format!("{NODE_YAML}{bad}{good}")).unwrap();
    std::fs::rename(&tmp, &obj).unwrap();
    wait_for_save(
        &ns,
        "the other Service",
        &["--to-destination 10.244.2.7:8080"],
    );
    // More syncs, each after a reload that delivers the same bad objects again.
    for ep in ["10.244.2.8", "10.244.2.9"] {
        let good = service("good", "10.96.0.31", 60, &[ep]);
        std::fs::write(&tmp, format!("{NODE_YAML}{good}{bad}")).unwrap();
        std::fs::rename(&tmp, &obj).unwrap();
        let want = format!("--to-destination {ep}:8080");
        wait_for_save(&ns, "a later change", &[want.as_str()]);
    }
    let m = metrics(&ns);
    let counted = |field: &str| -> String {
        let prefix = format!("kubeproxy_rs_invalid_object_fields_total{{field=\"{field}\",");
        m.lines()
            .filter(|l| l.starts_with(&prefix))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        counted("endpoints.addresses"),
        "kubeproxy_rs_invalid_object_fields_total{field=\"endpoints.addresses\",kind=\"EndpointSlice\"} 3",
        "{m}"
    );
    assert_eq!(
        counted("spec.sessionAffinityConfig.clientIP.timeoutSeconds"),
        "kubeproxy_rs_invalid_object_fields_total{field=\"spec.sessionAffinityConfig.clientIP.timeoutSeconds\",kind=\"Service\"} 1",
        "{m}"
    );
    drop(daemon);
    let log = std::fs::read_to_string(&log).unwrap();
    for w in [
        "EndpointSlice default/bad-1: endpoints[1].addresses[0] \"010.244.1.500\": not an IPv4 address; endpoint dropped",
        "EndpointSlice default/bad-1: endpoints[0].addresses[0] \"010.244.1.50\": not in canonical form; used as 10.244.1.50",
        "Service default/bad: spec.sessionAffinityConfig.clientIP.timeoutSeconds 0: out of range 1..86400; default 10800 used",
    ] {
        // klog text quotes the message as Go does: its own quotes come escaped.
        let w = w.replace('"', "\\\"");
        assert_eq!(log.matches(&w).count(), 1, "{w}\n{log}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
