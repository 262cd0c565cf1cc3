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
}

fn named<'a>(docs: &'a [Value], k: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(k) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {k} {name}"))
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

/// Field by field against kubeadm's kube-proxy addon (cmd/kubeadm/app/phases/addons/proxy:
/// manifests.go and proxy.go, v1.30): only the image, the binary's path, a liveness probe,
/// the healthz port and resource requests are ours.
#[test]
fn daemonset_matches_kubeadms_field_by_field() {
    let docs = docs();
    let ds = named(&docs, "DaemonSet", "kube-proxy");
    assert_eq!(s(&ds["metadata"]["namespace"]), "kube-system");
    assert_eq!(s(&ds["metadata"]["labels"]["k8s-app"]), "kube-proxy");
    assert_eq!(
        s(&ds["spec"]["selector"]["matchLabels"]["k8s-app"]),
        "kube-proxy"
    );
    assert_eq!(s(&ds["spec"]["updateStrategy"]["type"]), "RollingUpdate");
    let t = &ds["spec"]["template"];
    assert_eq!(s(&t["metadata"]["labels"]["k8s-app"]), "kube-proxy");
    let spec = &t["spec"];
    assert_eq!(s(&spec["priorityClassName"]), "system-node-critical");
    assert_eq!(spec["hostNetwork"].as_bool(), Some(true));
    assert_eq!(s(&spec["serviceAccountName"]), "kube-proxy");
    assert_eq!(s(&spec["nodeSelector"]["kubernetes.io/os"]), "linux");
    // Tolerates every taint: `operator: Exists` with no key.
    let tol = spec["tolerations"].as_sequence().unwrap();
    assert!(
        tol.iter()
            .any(|t| t["operator"].as_str() == Some("Exists") && t.get("key").is_none()),
        "{tol:?}"
    );
    let c = &spec["containers"][0];
    assert_eq!(s(&c["name"]), "kube-proxy");
    assert_eq!(s(&c["imagePullPolicy"]), "IfNotPresent");
    let cmd: Vec<&str> = c["command"].as_sequence().unwrap().iter().map(s).collect();
    assert_eq!(
        cmd[1..],
        [
            "--config=/var/lib/kube-proxy/config.conf",
            "--hostname-override=$(NODE_NAME)"
        ]
    );
    let env = &c["env"][0];
    assert_eq!(s(&env["name"]), "NODE_NAME");
    assert_eq!(
        s(&env["valueFrom"]["fieldRef"]["fieldPath"]),
        "spec.nodeName"
    );
    assert_eq!(c["securityContext"]["privileged"].as_bool(), Some(true));
    // (name, mountPath, readOnly) as kubeadm mounts them.
    let mounts: Vec<(&str, &str, Option<bool>)> = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| (s(&m["name"]), s(&m["mountPath"]), m["readOnly"].as_bool()))
        .collect();
    assert_eq!(
        mounts,
        [
            ("kube-proxy", "/var/lib/kube-proxy", None),
            ("xtables-lock", "/run/xtables.lock", Some(false)),
            ("lib-modules", "/lib/modules", Some(true)),
        ]
    );
    let vols = spec["volumes"].as_sequence().unwrap();
    let vol = |n: &str| {
        vols.iter()
            .find(|v| v["name"].as_str() == Some(n))
            .unwrap_or_else(|| panic!("no volume {n}"))
    };
    assert_eq!(s(&vol("kube-proxy")["configMap"]["name"]), "kube-proxy");
    assert_eq!(
        s(&vol("xtables-lock")["hostPath"]["path"]),
        "/run/xtables.lock"
    );
    assert_eq!(s(&vol("xtables-lock")["hostPath"]["type"]), "FileOrCreate");
    assert_eq!(s(&vol("lib-modules")["hostPath"]["path"]), "/lib/modules");
    assert_eq!(vols.len(), 3);
}

#[test]
fn configmap_has_kubeadms_layout() {
    let docs = docs();
    let cm = named(&docs, "ConfigMap", "kube-proxy");
    assert_eq!(s(&cm["metadata"]["namespace"]), "kube-system");
    assert_eq!(s(&cm["metadata"]["labels"]["app"]), "kube-proxy");
    let keys: Vec<&str> = cm["data"].as_mapping().unwrap().keys().map(s).collect();
    assert_eq!(keys, ["config.conf", "kubeconfig.conf"]);
    let cfg =
        kube_proxy_rs::config::parse_config(s(&cm["data"]["config.conf"]), "config.conf").unwrap();
    assert_eq!(
        cfg.client_connection.kubeconfig,
        "/var/lib/kube-proxy/kubeconfig.conf"
    );
    let kc: Value = serde_yaml_ng::from_str(s(&cm["data"]["kubeconfig.conf"])).unwrap();
    assert_eq!(s(&kc["current-context"]), "default");
    assert_eq!(
        s(&kc["clusters"][0]["cluster"]["certificate-authority"]),
        "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    );
    assert_eq!(
        s(&kc["users"][0]["user"]["tokenFile"]),
        "/var/run/secrets/kubernetes.io/serviceaccount/token"
    );
    let ctx = &kc["contexts"][0]["context"];
    assert_eq!(
        (s(&ctx["cluster"]), s(&ctx["user"])),
        ("default", "default")
    );
}

#[test]
fn service_account_is_bound_to_system_node_proxier() {
    let docs = docs();
    let sa = named(&docs, "ServiceAccount", "kube-proxy");
    assert_eq!(s(&sa["metadata"]["namespace"]), "kube-system");
    let crb = named(&docs, "ClusterRoleBinding", "kubeadm:node-proxier");
    assert_eq!(s(&crb["roleRef"]["kind"]), "ClusterRole");
    assert_eq!(s(&crb["roleRef"]["name"]), "system:node-proxier");
    let sub = &crb["subjects"][0];
    assert_eq!(
        (s(&sub["kind"]), s(&sub["name"]), s(&sub["namespace"])),
        ("ServiceAccount", "kube-proxy", "kube-system")
    );
    // kubeadm's Role and RoleBinding for bootstrap-token nodes reading the ConfigMap.
    let role = named(&docs, "Role", "kube-proxy");
    assert_eq!(s(&role["rules"][0]["resourceNames"][0]), "kube-proxy");
    let rb = named(&docs, "RoleBinding", "kube-proxy");
    assert_eq!(
        s(&rb["subjects"][0]["name"]),
        "system:bootstrappers:kubeadm:default-node-token"
    );
    // No role of our own: system:node-proxier is what kube-proxy gets.
    assert!(docs
        .iter()
        .all(|d| d["kind"].as_str() != Some("ClusterRole")));
}
