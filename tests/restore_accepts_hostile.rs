//! Property: whatever values the objects carry, the payload rendered for them is accepted
//! by a real `iptables-restore --test` (legacy, IPv4 and IPv6) in a fresh network
//! namespace. One bad value that reached a rule would fail the whole payload, and so every
//! sync of the node (issue 8: `010.244.1.50`, `::ffff:10.244.1.3`, `timeoutSeconds: 0`).

mod common;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube_proxy_rs::config::KubeProxyConfiguration;
use kube_proxy_rs::model::ip::IpFamily;
use kube_proxy_rs::model::ClusterModel;
use kube_proxy_rs::resolve;
use kube_proxy_rs::rules::{Renderer, SyncRequest};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;
use std::io::Write;
use std::process::{Command, Stdio};

/// A good value most of the time, else one of `pool` (hostile ones among them).
fn mostly(good: &'static str, pool: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![6 => Just(good.to_string()), 1 => pick(pool)]
}

fn pick(pool: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        12 => prop::sample::select(pool).prop_map(String::from),
        1 => "[ -~]{0,10}",
    ]
}

const V4: &[&str] = &[
    "10.244.1.5",
    "10.244.1.6",
    "10.244.1.7",
    "10.244.1.10",
    "010.244.1.50",
    "::ffff:10.244.1.3",
    "010.244.1.500",
    "10.0.0.1 ",
    "1.2.3.4 -j DROP",
    "",
];
const V6: &[&str] = &[
    "fd00:10:244:1::5",
    "fd00:10:244:1::8",
    "fd00:10:244:1::9",
    "FD00:10:244:1::6",
    "fd00:10:244:1:0:0:0:7",
    "::ffff:10.244.1.3",
    "fe80::1%eth0",
    "fd00::1 -j DROP",
    "10.244.1.5",
];
const CIDRS: &[&str] = &[
    "10.0.0.0/8",
    "203.0.113.5/25",
    "fd00::/64",
    "FD00:1::5/56",
    "10.0.0.0/33",
    " 192.168.0.0/16 ",
    "1.2.3.4/32 -j ACCEPT",
];
/// Mostly one name, so that slices and Services often match.
const NAMES: &[&str] = &[
    "web",
    "web",
    "web",
    "web",
    "web",
    "web",
    "web",
    "",
    "a b",
    "x\" -j ACCEPT \"",
];

fn number() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0),
        Just(-1),
        Just(1),
        Just(80),
        Just(30080),
        Just(65535),
        Just(65536),
        Just(86400),
        Just(86401),
        Just(i64::from(i32::MIN)),
        -2i64..100_000,
    ]
}

/// Mostly valid, so that endpoints reach rules; `number()` for the rest.
fn port() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => prop::sample::select(&[80i64, 8080, 30080, 65535][..]),
        1 => number(),
    ]
}

fn proto() -> impl Strategy<Value = String> {
    prop::sample::select(
        &[
            "TCP", "TCP", "TCP", "TCP", "TCP", "UDP", "SCTP", "HTTP", "tcp",
        ][..],
    )
    .prop_map(String::from)
}

fn service(i: usize) -> impl Strategy<Value = Service> {
    (
        (
            mostly("web", NAMES),
            0usize..3,
            mostly("10.96.0.10", V4),
            mostly("fd00::10", V6),
        ),
        prop::collection::vec((mostly("http", NAMES), port(), proto(), number()), 1..3),
        (
            prop::collection::vec(pick(V4), 0..2),
            prop::collection::vec(pick(V6), 0..2),
            prop::collection::vec(pick(CIDRS), 0..3),
        ),
        (
            prop::sample::select(&["ClusterIP", "NodePort", "LoadBalancer"][..]),
            any::<bool>(),
            number(),
            prop::option::of(number()),
        ),
    )
        .prop_map(
            move |((ns, fam, cip4, cip6), ports, (e4, e6, ranges), (ty, local, hc, timeout))| {
                let (families, ips) = match fam {
                    0 => (vec!["IPv4"], vec![cip4.clone()]),
                    1 => (vec!["IPv6"], vec![cip6.clone()]),
                    _ => (vec!["IPv4", "IPv6"], vec![cip4.clone(), cip6.clone()]),
                };
                let ports: Vec<_> = ports
                    .iter()
                    .map(|(n, p, pr, np)| json!({"name": n, "port": p, "protocol": pr, "nodePort": np}))
                    .collect();
                let mut eips = e4.clone();
                eips.extend(e6.clone());
                let ingress: Vec<_> = e6.iter().chain(&e4).map(|ip| json!({"ip": ip})).collect();
                let spec = json!({
                    "type": ty,
                    "clusterIP": ips[0], "clusterIPs": ips, "ipFamilies": families,
                    "ports": ports, "externalIPs": eips, "loadBalancerSourceRanges": ranges,
                    "externalTrafficPolicy": if local { "Local" } else { "Cluster" },
                    "healthCheckNodePort": hc,
                    "sessionAffinity": "ClientIP",
                    "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": timeout}},
                });
                let mut v = json!({
                    "metadata": {"name": format!("svc{i}"), "namespace": ns},
                    "spec": spec,
                    "status": {"loadBalancer": {"ingress": ingress}}
                });
                // Out-of-range numbers do not fit the typed fields: clamp to i32 like the
                // API's int32 (values beyond are rejected by the loader before this).
                clamp(&mut v);
                serde_json::from_value(v).unwrap()
            },
        )
}

fn clamp(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                *v = json!(i.clamp(i64::from(i32::MIN), i64::from(i32::MAX)));
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(clamp),
        serde_json::Value::Object(o) => o.values_mut().for_each(clamp),
        _ => {}
    }
}

fn slice(i: usize) -> impl Strategy<Value = EndpointSlice> {
    (
        (mostly("web", NAMES), any::<bool>(), 0usize..2),
        prop::collection::vec((pick(V4), pick(V6), any::<bool>(), any::<bool>()), 0..4),
        prop::collection::vec((mostly("http", NAMES), port(), proto()), 1..3),
    )
        .prop_map(move |((ns, v6, svc), eps, ports)| {
            let eps: Vec<_> = eps
                .iter()
                .map(|(a4, a6, ready, local)| {
                    json!({
                        "addresses": [if v6 { a6 } else { a4 }],
                        "conditions": {"ready": ready},
                        "nodeName": if *local { "node-a" } else { "node-b" },
                    })
                })
                .collect();
            let ports: Vec<_> = ports
                .iter()
                .map(|(n, p, pr)| json!({"name": n, "port": p, "protocol": pr}))
                .collect();
            let mut v = json!({
                "metadata": {"name": format!("slice{i}"), "namespace": ns,
                    "labels": {"kubernetes.io/service-name": format!("svc{svc}")}},
                "addressType": if v6 { "IPv6" } else { "IPv4" },
                "endpoints": eps, "ports": ports,
            });
            clamp(&mut v);
            serde_json::from_value(v).unwrap()
        })
}

fn objects() -> impl Strategy<Value = (Vec<Service>, Vec<EndpointSlice>)> {
    (
        (service(0), service(1), service(0), service(1)),
        (slice(0), slice(1), slice(2), slice(3), slice(4)),
    )
        .prop_map(|((a, b, c, d), (e, f, g, h, i))| (vec![a, b, c, d], vec![e, f, g, h, i]))
}

fn node() -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": "node-a", "labels": {"topology.kubernetes.io/zone": "z1"}},
        "spec": {"podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64", "bad/99"]},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.2"},
            {"type": "InternalIP", "address": "fd00::2"},
            {"type": "InternalIP", "address": "010.0.0.9 -j DROP"}]}
    }))
    .unwrap()
}

fn restore_test(ns: &common::Netns, family: IpFamily, payload: &str) -> Result<(), String> {
    let tool = match family {
        IpFamily::V4 => "iptables-legacy-restore",
        IpFamily::V6 => "ip6tables-legacy-restore",
    };
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, tool, "--noflush", "--test"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(tool);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(payload.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{tool} --test: {}\npayload:\n{payload}",
        String::from_utf8_lossy(&out.stderr)
    ))
}

#[test]
fn every_rendered_payload_is_accepted_by_iptables_restore() {
    if !common::can_run() {
        return;
    }
    let ns = common::Netns::new(&format!("rah{}", std::process::id()), "restore");
    let cfg = KubeProxyConfiguration {
        hostname_override: "node-a".into(),
        cluster_cidr: "10.0.0.0/8,fd00::/48".into(),
        ..Default::default()
    };
    let nodes = [node()];
    let mut runner = TestRunner::new(Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    });
    let rendered = [std::cell::Cell::new(0usize), std::cell::Cell::new(0)];
    let result = runner.run(&objects(), |(services, slices)| {
        for (i, family) in [IpFamily::V4, IpFamily::V6].into_iter().enumerate() {
            let mut warnings = Vec::new();
            let mopts =
                resolve::model_options(&cfg, &kube_proxy_rs::compat::Compat::v1_30(), family);
            let model = ClusterModel::build(&services, &slices, &nodes, &mopts, &mut warnings);
            let host = resolve::HostFacts::offline(model.node.as_ref(), &cfg);
            let opts = resolve::proxier_options(
                &cfg,
                &kube_proxy_rs::compat::Compat::v1_30(),
                model.node.as_ref(),
                &host,
                family,
            );
            let out = Renderer::new().render(&model, &opts, SyncRequest::FULL);
            if out.payload.contains("-j KUBE-SEP-") {
                rendered[i].set(rendered[i].get() + 1);
            }
            restore_test(&ns, family, &out.payload).map_err(TestCaseError::fail)?;
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The property is vacuous unless endpoints reach the payload in both families.
    let rendered = rendered.map(|c| c.get());
    assert!(rendered[0] >= 10 && rendered[1] >= 10, "{rendered:?}");
}

/// The known bad values of issue 8, one at a time: each used to fail the payload.
#[test]
fn issue_8_values_are_accepted_by_iptables_restore() {
    if !common::can_run() {
        return;
    }
    let ns = common::Netns::new(&format!("rai{}", std::process::id()), "restore");
    let cfg = KubeProxyConfiguration {
        hostname_override: "node-a".into(),
        ..Default::default()
    };
    let svc = |family: &str, ip: &str, timeout: i32| -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": ip, "clusterIPs": [ip], "ipFamilies": [family],
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": timeout}},
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
        }))
        .unwrap()
    };
    let slice = |family: &str, addr: &str| -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": family,
            "endpoints": [{"addresses": [addr]}, {"addresses": [if family == "IPv4" { "10.244.1.9" } else { "fd00::9" }]}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }))
        .unwrap()
    };
    let cases = [
        (IpFamily::V4, "10.96.0.10", "010.244.1.50", 60),
        (IpFamily::V4, "10.96.0.10", "::ffff:10.244.1.3", 60),
        (IpFamily::V4, "10.96.0.10", "10.244.1.5", 0),
        (IpFamily::V4, "10.96.0.10", "10.244.1.5", -1),
        (IpFamily::V6, "fd00::10", "::ffff:10.244.1.3", 60),
        (IpFamily::V6, "fd00::10", "FD00:0::5", 0),
    ];
    for (family, cip, addr, timeout) in cases {
        let name = family.api_name();
        let mut warnings = Vec::new();
        let model = ClusterModel::build(
            &[svc(name, cip, timeout)],
            &[slice(name, addr)],
            [],
            &resolve::model_options(&cfg, &kube_proxy_rs::compat::Compat::v1_30(), family),
            &mut warnings,
        );
        let host = resolve::HostFacts::offline(None, &cfg);
        let opts = resolve::proxier_options(
            &cfg,
            &kube_proxy_rs::compat::Compat::v1_30(),
            None,
            &host,
            family,
        );
        let out = Renderer::new().render(&model, &opts, SyncRequest::FULL);
        assert!(out.payload.contains("-j KUBE-SEP-"), "{}", out.payload);
        assert!(!warnings.is_empty(), "{addr} {timeout}: reported");
        if let Err(e) = restore_test(&ns, family, &out.payload) {
            panic!("{addr} {timeout}: {e}");
        }
    }
}
