//! The `render` command as a user meets it: exit codes, messages, warnings, stdin.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kube-proxy-rs"))
}

fn corpus(case: &str, file: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden/upstream")
        .join(case)
        .join(file)
        .to_string_lossy()
        .into_owned()
}

fn tmp_file(name: &str, text: &str) -> tempfile_path::TempPath {
    tempfile_path::TempPath::new(name, text)
}

/// A file in the target dir's tmp area, removed on drop (no extra crate for this).
mod tempfile_path {
    pub struct TempPath(pub std::path::PathBuf);
    impl TempPath {
        pub fn new(name: &str, text: &str) -> TempPath {
            let dir = std::env::temp_dir().join(format!("kprs-cli-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            TempPath(p)
        }
        pub fn as_str(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn malformed_objects_yaml_exits_2_naming_file_and_line() {
    let f = tmp_file(
        "bad.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: [unclosed\n",
    );
    let o = bin()
        .args(["render", "--objects", f.as_str()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("bad.yaml:"), "{err}");
    // The broken flow sequence starts on line 9.
    assert!(err.contains(":9:") || err.contains(":10:"), "{err}");
}

#[test]
fn unknown_config_field_exits_2_naming_it() {
    let cfg = tmp_file(
        "cfg.yaml",
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\niptables:\n  masqueradeBitt: 3\n",
    );
    let o = bin()
        .args([
            "render",
            "--config",
            cfg.as_str(),
            "--objects",
            &corpus("clusterip-single-port", "objects.yaml"),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("cfg.yaml:4") && err.contains("masqueradeBitt"),
        "{err}"
    );
}

#[test]
fn hostile_fields_are_skipped_with_warnings_and_add_no_tokens() {
    let objects = tmp_file(
        "hostile.yaml",
        r#"apiVersion: v1
kind: Service
metadata: {name: lb, namespace: prod}
spec:
  type: LoadBalancer
  clusterIP: 10.96.7.7
  externalIPs: ["1.2.3.4 -j DROP", "192.0.2.9"]
  loadBalancerSourceRanges: ["1.2.3.4/32 -j ACCEPT", "198.51.100.0/24"]
  ports:
  - {name: "web port\"", port: 80, nodePort: 30080}
  - {name: https, port: 443, nodePort: 30443}
status:
  loadBalancer:
    ingress: [{ip: 203.0.113.10}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: lb-1
  namespace: prod
  labels: {kubernetes.io/service-name: lb}
addressType: IPv4
endpoints:
- addresses: ["10.244.1.1 -j ACCEPT"]
- addresses: [10.244.1.2]
ports:
- {name: https, port: 8443}
"#,
    );
    let o = bin()
        .args(["render", "--objects", objects.as_str()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    for needle in [
        "Service prod/lb: spec.externalIPs[0]",
        "Service prod/lb: spec.loadBalancerSourceRanges[0]",
        "Service prod/lb: spec.ports[0].name",
        "EndpointSlice prod/lb-1: endpoints[0].addresses[0]",
    ] {
        assert!(
            err.contains(needle),
            "missing warning {needle:?} in:\n{err}"
        );
    }
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        !out.contains("-j DROP -") && !out.contains("1.2.3.4"),
        "{out}"
    );
    assert!(!out.contains("web port"), "{out}");
    // The valid parts still get their rules.
    assert!(out.contains("-d 192.0.2.9 --dport 443"), "{out}");
    assert!(out.contains("-s 198.51.100.0/24 -j KUBE-EXT-"), "{out}");
    assert!(out.contains("--to-destination 10.244.1.2:8443"), "{out}");
}

#[test]
fn objects_can_come_from_stdin_as_a_kubectl_list() {
    let list = r#"apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: web, namespace: default}
  spec:
    clusterIP: 10.96.0.10
    ports: [{name: http, port: 80}]
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    name: web-1
    namespace: default
    labels: {kubernetes.io/service-name: web}
  addressType: IPv4
  endpoints: [{addresses: [10.244.1.5]}]
  ports: [{name: http, port: 8080}]
"#;
    let mut child = bin()
        .args(["render", "--objects", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(list.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.contains("-A KUBE-SERVICES -m comment --comment \"default/web:http cluster IP\" -m tcp -p tcp -d 10.96.0.10 --dport 80 -j KUBE-SVC-"),
        "{out}"
    );
    assert!(out.contains("--to-destination 10.244.1.5:8080"), "{out}");
}

#[test]
fn ensure_rules_match_the_corpus() {
    let o = bin()
        .args([
            "render",
            "--objects",
            &corpus("nodeport-basic", "objects.yaml"),
            "--ensure-rules",
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    let want = std::fs::read_to_string(corpus("nodeport-basic", "expected.ensure")).unwrap();
    assert_eq!(String::from_utf8(o.stdout).unwrap(), want);
}

fn render_with_config(name: &str, body: &str) -> (Option<i32>, String, String) {
    let cfg = tmp_file(
        name,
        &format!(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n{body}"
        ),
    );
    let o = bin()
        .args([
            "render",
            "--config",
            cfg.as_str(),
            "--objects",
            &corpus("clusterip-single-port", "objects.yaml"),
        ])
        .output()
        .unwrap();
    (
        o.status.code(),
        stderr(&o),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

#[test]
fn config_values_that_would_inject_rules_exit_2_naming_field_and_line() {
    let (code, err, out) = render_with_config(
        "inject.yaml",
        "detectLocalMode: BridgeInterface\ndetectLocal:\n  bridgeInterface: \"br0 -j RETURN\\n-A PREROUTING -s 6.6.6.6 -j ACCEPT\"\n",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("inject.yaml:5: invalid configuration: detectLocal.bridgeInterface"),
        "{err}"
    );
    assert!(!out.contains("6.6.6.6"), "{out}");

    let (code, err, _) = render_with_config(
        "prefix.yaml",
        "detectLocalMode: InterfaceNamePrefix\ndetectLocal:\n  interfaceNamePrefix: \"veth+ -j ACCEPT\"\n",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("prefix.yaml:5:"), "{err}");
    assert!(err.contains("detectLocal.interfaceNamePrefix"), "{err}");

    // A valid name still renders, into the local-traffic match.
    let (code, err, out) = render_with_config(
        "bridge.yaml",
        "detectLocalMode: BridgeInterface\ndetectLocal:\n  bridgeInterface: cbr0\n",
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("-i cbr0"), "{out}");
}

#[test]
fn validation_errors_and_other_modes_name_the_line() {
    let (code, err, _) = render_with_config("bit.yaml", "\niptables:\n  masqueradeBit: 32\n");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(
            "bit.yaml:5: invalid configuration: iptables.masqueradeBit: Invalid value: 32"
        ),
        "{err}"
    );
    let (code, err, out) = render_with_config("ipvs.yaml", "mode: ipvs\n");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(
            "ipvs.yaml:3: invalid configuration: mode: Invalid value: \"ipvs\": not supported"
        ),
        "{err}"
    );
    assert!(out.is_empty(), "{out}");
}

/// Nested collections cost libyaml quadratic time (80 KB took 9 s, 300 KB 16 minutes);
/// the guard refuses them before parsing, naming file, line and column.
#[test]
fn deeply_nested_objects_are_refused_naming_file_and_line() {
    let service = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec:\n  x: ";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "flow80k.yaml",
            format!("{service}{}{}\n", "[".repeat(40_000), "]".repeat(40_000)),
            ":6:68:",
        ),
        (
            "flow300k.yaml",
            format!("{}{}\n", "[".repeat(150_000), "]".repeat(150_000)),
            ":1:65:",
        ),
        (
            "block80k.yaml",
            format!("{service}\n  {}x\n", "- ".repeat(40_000)),
            ":7:129:",
        ),
        (
            "block300k.yaml",
            format!("{}x\n", "- ".repeat(150_000)),
            ":1:129:",
        ),
        (
            "map80k.yaml",
            format!("{}1{}\n", "{a: ".repeat(16_000), "}".repeat(16_000)),
            ":1:257:",
        ),
        (
            "json80k.json",
            format!(
                "{{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"x\":{}{}}}\n",
                "[".repeat(40_000),
                "]".repeat(40_000)
            ),
            ":1:104:",
        ),
    ];
    for (name, text, at) in cases {
        let f = tmp_file(name, &text);
        let o = bin()
            .args(["render", "--objects", f.as_str()])
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert!(
            err.contains(&format!(
                "{name}{at} invalid YAML: nesting deeper than 64 levels"
            )),
            "{name}: {err}"
        );
    }
}

#[test]
fn corpus_and_kubectl_shaped_dumps_pass_the_guard() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/upstream");
    let mut n = 0;
    for case in std::fs::read_dir(&dir).unwrap() {
        let objects = case.unwrap().path().join("objects.yaml");
        if !objects.exists() {
            continue;
        }
        let o = bin()
            .args(["render", "--objects", objects.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}: {}",
            objects.display(),
            stderr(&o)
        );
        n += 1;
    }
    assert!(n > 30, "{n} corpus cases");
    // A kubectl-style List with managedFields and a JSON annotation full of brackets.
    let list = r#"apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata:
    annotations:
      kubectl.kubernetes.io/last-applied-configuration: |
        {"apiVersion":"v1","kind":"Service","metadata":{"annotations":{},"name":"web"},"spec":{"ports":[{"port":80}]}}
      note: '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[['
    managedFields:
    - apiVersion: v1
      fieldsType: FieldsV1
      fieldsV1:
        f:metadata:
          f:annotations:
            .: {}
            f:kubectl.kubernetes.io/last-applied-configuration: {}
        f:spec:
          f:ports:
            k:{"port":80,"protocol":"TCP"}:
              .: {}
              f:port: {}
    name: web
    namespace: default
  spec:
    clusterIP: 10.96.0.10
    ports:
    - port: 80
      protocol: TCP
"#;
    let f = tmp_file("kubectl-list.yaml", list);
    let o = bin()
        .args(["render", "--objects", f.as_str()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("default/web"));
}
