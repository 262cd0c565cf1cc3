//! The deployment manifest is usable as shipped: its KubeProxyConfiguration passes the
//! strict loader, and the DaemonSet has what kube-proxy needs on a node.

use serde_yaml_ng::Value;

fn docs() -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kube-proxy-rs.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn kind<'a>(docs: &'a [Value], k: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(k))
        .unwrap_or_else(|| panic!("no {k}"))
}

#[test]
fn configmap_holds_a_valid_configuration() {
    let docs = docs();
    let text = kind(&docs, "ConfigMap")["data"]["config.conf"]
        .as_str()
        .unwrap();
    let cfg = kube_proxy_rs::config::parse_config(text, "deploy/kube-proxy-rs.yaml config.conf")
        .expect("config.conf must load");
    assert_eq!(cfg.cluster_cidr, "10.244.0.0/16");
    assert_eq!(cfg.iptables.masquerade_bit, 14);
}

#[test]
fn daemonset_runs_privileged_on_the_host_network_with_the_lock_and_modules() {
    let docs = docs();
    let spec = &kind(&docs, "DaemonSet")["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"].as_bool(), Some(true));
    let c = &spec["containers"][0];
    assert_eq!(c["securityContext"]["privileged"].as_bool(), Some(true));
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    for p in ["/run/xtables.lock", "/lib/modules", "/var/lib/kube-proxy"] {
        assert!(mounts.contains(&p), "{p} not mounted");
    }
    let role = kind(&docs, "ClusterRole");
    let resources: Vec<&str> = role["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|r| r["resources"].as_sequence().unwrap())
        .map(|r| r.as_str().unwrap())
        .collect();
    for r in ["services", "endpointslices", "nodes", "events"] {
        assert!(resources.contains(&r), "{r} not granted");
    }
}
