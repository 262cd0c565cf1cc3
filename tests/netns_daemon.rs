//! The daemon itself (real binary, real iptables-legacy) in a node namespace, fed by a
//! static objects file: endpoint churn must reach the kernel, and real traffic follows it.

mod common;
use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Stops the daemon (SIGTERM, as the kubelet would) when the test ends, even on panic.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn objects(endpoint_pod: usize) -> String {
    let svc = Svc {
        name: "churn",
        cluster_ip: "10.96.0.20",
        endpoints: Some(vec![(endpoint_pod, false)]),
        ..Svc::default()
    };
    format!("{NODE_YAML}{}", svc.yaml())
}

/// Polls (bounded) until a connection to the Service is answered by `pod`.
fn wait_for_server(topo: &Topology, pod: usize, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let want = pod_ip(pod).to_string();
    while start.elapsed() < limit {
        if let Ok(s) = tcp_once(&topo.client, None, sock("10.96.0.20", 80)) {
            if s.server == want {
                return Some(start.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn daemon_follows_endpoint_churn_into_the_kernel() {
    if !can_run() {
        return;
    }
    let topo = Topology::new(2);
    let (cfg, obj) = topo.write_inputs(&objects(0));
    let child = Command::new("ip")
        .args(["netns", "exec", &topo.node.name, BIN])
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "--objects",
            obj.to_str().unwrap(),
        ])
        .args(["--iptables-min-sync-period", "1s"])
        .args([
            "--healthz-bind-address",
            "127.0.0.1:10256",
            "--metrics-bind-address",
            "127.0.0.1:10249",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the daemon");
    let _daemon = Daemon(child);

    // Generous bounds: they limit waiting on a loaded machine, they are not the measure.
    assert!(
        wait_for_server(&topo, 0, Duration::from_secs(60)).is_some(),
        "the first sync never made the ClusterIP reach pod 0"
    );
    let first_sep = sep_chains(&topo);
    assert_eq!(first_sep.len(), 1, "{first_sep:?}");

    // Move the endpoint to pod 1 (atomic rename: the source must never see half a file).
    let tmp = obj.with_extension("new");
    std::fs::write(&tmp, objects(1)).unwrap();
    std::fs::rename(&tmp, &obj).unwrap();
    let took = wait_for_server(&topo, 1, Duration::from_secs(60))
        .expect("the endpoint change never reached the kernel");
    eprintln!(
        "endpoint change reached the kernel after {took:?} (file poll 1 s + minSyncPeriod 1 s)"
    );

    // The partial sync deleted the old endpoint's chain and kept everything else.
    let now = sep_chains(&topo);
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now, first_sep, "the stale KUBE-SEP chain must be replaced");
    let save = topo.node.save("legacy");
    assert!(
        save.contains("-A KUBE-POSTROUTING"),
        "fixed chains kept:\n{save}"
    );
    assert!(
        save.contains("-j KUBE-SERVICES"),
        "jump rules kept:\n{save}"
    );
}

fn sep_chains(topo: &Topology) -> Vec<String> {
    topo.node
        .save("legacy")
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter(|l| l.starts_with("KUBE-SEP-"))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect()
}
