//! Bad values in objects as `render` and `diff` meet them: normalised or dropped with one
//! warning naming `Kind ns/name` and the field; duplicate objects and keys resolve as last
//! wins with a warning naming file and line.

use std::path::PathBuf;
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kube-proxy-rs"))
}

fn tmp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kprs-objval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn render(objects: &PathBuf) -> Output {
    bin()
        .arg("render")
        .arg("--objects")
        .arg(objects)
        .output()
        .unwrap()
}

const SERVICE: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10]
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: TIMEOUT}}
  ports: [{name: http, port: 80, protocol: TCP}]
";

fn slice(name: &str, addresses: &[&str]) -> String {
    let eps: Vec<String> = addresses
        .iter()
        .map(|a| format!("- addresses: [\"{a}\"]\n"))
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}
  namespace: default
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv4
endpoints:
{}ports: [{{name: http, port: 8080, protocol: TCP}}]
",
        eps.concat()
    )
}

#[test]
fn render_normalises_addresses_and_ignores_a_bad_timeout_with_warnings() {
    let objs = format!(
        "{}---\n{}",
        SERVICE.replace("TIMEOUT", "0"),
        slice(
            "web-abc",
            &[
                "010.244.1.50",
                "::ffff:10.244.1.3",
                "010.244.1.500",
                "fd00::1"
            ]
        )
    );
    let o = render(&tmp("normalise.yaml", &objs));
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{err}");
    assert!(out.contains("--to-destination 10.244.1.50:8080"), "{out}");
    assert!(out.contains("--to-destination 10.244.1.3:8080"), "{out}");
    assert!(
        !out.contains("010.244") && !out.contains("::ffff") && !out.contains("fd00"),
        "{out}"
    );
    assert!(out.contains("--seconds 10800"), "{out}");
    assert!(!out.contains("--seconds 0"), "{out}");
    for w in [
        "warning: Service default/web: spec.sessionAffinityConfig.clientIP.timeoutSeconds 0: out of range 1..86400; default 10800 used\n",
        "warning: EndpointSlice default/web-abc: endpoints[0].addresses[0] \"010.244.1.50\": not in canonical form; used as 10.244.1.50\n",
        "warning: EndpointSlice default/web-abc: endpoints[1].addresses[0] \"::ffff:10.244.1.3\": not in canonical form; used as 10.244.1.3\n",
        "warning: EndpointSlice default/web-abc: endpoints[2].addresses[0] \"010.244.1.500\": not an IPv4 address; endpoint dropped\n",
        "warning: EndpointSlice default/web-abc: endpoints[3].addresses[0] \"fd00::1\": an IPv6 address in an IPv4 slice; endpoint dropped\n",
    ] {
        assert_eq!(err.matches(w).count(), 1, "{w} in:\n{err}");
    }
}

#[test]
fn timeouts_in_range_are_kept_and_out_of_range_never_reach_seconds() {
    for (t, want) in [
        ("1", "1"),
        ("86400", "86400"),
        ("-1", "10800"),
        ("86401", "10800"),
    ] {
        let objs = format!(
            "{}---\n{}",
            SERVICE.replace("TIMEOUT", t),
            slice("web-abc", &["10.244.1.5"])
        );
        let o = render(&tmp("timeout.yaml", &objs));
        let out = text(&o.stdout);
        assert!(out.contains(&format!("--seconds {want} ")), "{t}: {out}");
        assert_eq!(
            text(&o.stderr).contains("timeoutSeconds"),
            want != t,
            "{t}: {}",
            text(&o.stderr)
        );
    }
}

#[test]
fn duplicate_objects_are_last_wins_in_render_and_diff() {
    let svc = SERVICE.replace("TIMEOUT", "60");
    let dup = format!(
        "{svc}---\n{}---\n{}",
        slice("web-abc", &["10.244.1.1", "10.244.1.2"]),
        slice("web-abc", &["10.244.1.3"])
    );
    let last_only = format!("{svc}---\n{}", slice("web-abc", &["10.244.1.3"]));
    let dup_file = tmp("dup.yaml", &dup);
    let o = render(&dup_file);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{err}");
    assert_eq!(out, text(&render(&tmp("last.yaml", &last_only)).stdout));
    assert!(
        !out.contains("10.244.1.1:8080"),
        "the earlier copy is replaced"
    );
    let want = format!(
        "warning: {}:11: EndpointSlice default/web-abc is repeated at {}:23; the later one is used",
        dup_file.display(),
        dup_file.display()
    );
    assert!(err.contains(&want), "{want} in:\n{err}");

    // `diff` of a node synced from the last copy: the same report as for a file holding
    // only that copy (the save has no jump rules, so both list those; nothing else).
    let live = tmp("live.save", &out);
    let diff = |objects: &PathBuf| {
        bin()
            .arg("diff")
            .arg("--objects")
            .arg(objects)
            .arg("--live")
            .arg(&live)
            .output()
            .unwrap()
    };
    let d = diff(&dup_file);
    let report = text(&d.stdout);
    assert_eq!(report, text(&diff(&tmp("last2.yaml", &last_only)).stdout));
    assert!(
        !report.contains("KUBE-SEP") && !report.contains("KUBE-SVC"),
        "{report}"
    );
    assert!(
        text(&d.stderr).contains("is repeated at"),
        "{}",
        text(&d.stderr)
    );
}

#[test]
fn duplicate_services_and_yaml_keys_are_warned() {
    let svc = SERVICE.replace("TIMEOUT", "60");
    let objs = format!(
        "{}---\n{}",
        svc.replace(
            "clusterIP: 10.96.0.10\n",
            "clusterIP: 10.96.0.10\n  type: ClusterIP\n  type: NodePort\n"
        ),
        svc.replace("10.96.0.10", "10.96.0.11")
    );
    let f = tmp("dupkeys.yaml", &objs);
    let o = render(&f);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("-d 10.96.0.11") && !out.contains("-d 10.96.0.10"),
        "{out}"
    );
    let key = format!(
        "warning: {}:7:3: duplicate key \"type\" in spec; the last value is used",
        f.display()
    );
    assert!(err.contains(&key), "{key} in:\n{err}");
    let obj = format!(
        "warning: {}:1: Service default/web is repeated at {}:13;",
        f.display(),
        f.display()
    );
    assert!(err.contains(&obj), "{obj} in:\n{err}");
}
