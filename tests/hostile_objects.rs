//! Property tests: arbitrary (often invalid or hostile) objects never make the renderer
//! panic, and nothing taken from an object can add a token to a rule.

use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Service, ServicePort, ServiceSpec, ServiceStatus,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_proxy_rs::config::KubeProxyConfiguration;
use kube_proxy_rs::model::ip::IpFamily;
use kube_proxy_rs::model::ClusterModel;
use kube_proxy_rs::resolve;
use kube_proxy_rs::rules::{Renderer, SyncRequest};
use proptest::prelude::*;
use std::collections::BTreeMap;

/// Pools mixing valid values (most of the time) with injection attempts.
fn pick(
    valid: &'static [&'static str],
    hostile: &'static [&'static str],
) -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(valid).prop_map(String::from),
        2 => prop::sample::select(hostile).prop_map(String::from),
        1 => "[ -~]{0,12}",
    ]
}

const HOSTILE: &[&str] = &[
    "1.2.3.4 -j DROP",
    "1.2.3.4/32 -j ACCEPT",
    "a b\"c",
    "",
    "x\" -j ACCEPT \"",
];

fn name() -> impl Strategy<Value = String> {
    pick(&["web", "db", "ns1", "default"], HOSTILE)
}
fn ip() -> impl Strategy<Value = String> {
    pick(
        &["10.0.0.1", "10.0.0.2", "10.0.0.10", "fd00::1", "010.0.0.3"],
        HOSTILE,
    )
}
fn cidr() -> impl Strategy<Value = String> {
    pick(
        &[
            "10.0.0.0/8",
            "192.168.0.0/16",
            "203.0.113.5/25",
            "fd00::/64",
        ],
        HOSTILE,
    )
}
fn proto() -> impl Strategy<Value = String> {
    pick(&["TCP", "UDP", "SCTP"], &["HTTP", "tcp", "", "TCP -j DROP"])
}
fn node() -> impl Strategy<Value = String> {
    pick(&["node-a", "node-b"], HOSTILE)
}

fn port() -> impl Strategy<Value = i32> {
    prop_oneof![
        Just(80),
        Just(8080),
        Just(0),
        Just(-1),
        Just(70000),
        any::<i32>()
    ]
}

fn service() -> impl Strategy<Value = Service> {
    (
        name(),
        name(),
        prop::collection::vec((name(), port(), proto(), prop::option::of(port())), 1..3),
        ip(),
        prop::collection::vec(ip(), 0..3),
        prop::collection::vec(cidr(), 0..3),
        prop::collection::vec(ip(), 0..3),
        prop_oneof![
            Just("ClusterIP"),
            Just("NodePort"),
            Just("LoadBalancer"),
            Just("ExternalName")
        ],
        prop_oneof![
            Just(None),
            Just(Some("Local".to_string())),
            Just(Some("Cluster".to_string()))
        ],
    )
        .prop_map(
            |(ns, name, ports, cip, eips, ranges, ingress, ty, policy)| Service {
                metadata: ObjectMeta {
                    namespace: Some(ns),
                    name: Some(name),
                    ..Default::default()
                },
                spec: Some(ServiceSpec {
                    cluster_ip: Some(cip.clone()),
                    cluster_ips: Some(vec![cip]),
                    type_: Some(ty.to_string()),
                    external_ips: Some(eips),
                    load_balancer_source_ranges: Some(ranges),
                    external_traffic_policy: policy.clone(),
                    internal_traffic_policy: policy,
                    health_check_node_port: Some(30000),
                    session_affinity: Some("ClientIP".into()),
                    ports: Some(
                        ports
                            .into_iter()
                            .map(|(n, port, proto, node_port)| ServicePort {
                                name: Some(n),
                                port,
                                protocol: Some(proto),
                                node_port,
                                ..Default::default()
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }),
                status: Some(ServiceStatus {
                    load_balancer: Some(LoadBalancerStatus {
                        ingress: Some(
                            ingress
                                .into_iter()
                                .map(|ip| LoadBalancerIngress {
                                    ip: Some(ip),
                                    ..Default::default()
                                })
                                .collect(),
                        ),
                    }),
                    ..Default::default()
                }),
            },
        )
}

fn slice() -> impl Strategy<Value = EndpointSlice> {
    (
        name(),
        name(),
        prop::collection::vec((ip(), any::<bool>(), node()), 0..4),
        prop::collection::vec((name(), prop::option::of(port()), proto()), 0..3),
    )
        .prop_map(|(ns, svc, eps, ports)| EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some(ns),
                name: Some("s".into()),
                labels: Some(BTreeMap::from([(
                    "kubernetes.io/service-name".to_string(),
                    svc,
                )])),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: Some(
                eps.into_iter()
                    .map(|(addr, ready, node)| Endpoint {
                        addresses: vec![addr],
                        conditions: Some(EndpointConditions {
                            ready: Some(ready),
                            ..Default::default()
                        }),
                        node_name: Some(node),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ports: Some(
                ports
                    .into_iter()
                    .map(|(name, port, proto)| EndpointPort {
                        name: Some(name),
                        port,
                        protocol: Some(proto),
                        ..Default::default()
                    })
                    .collect(),
            ),
        })
}

/// Splits a rule like iptables-restore does: words, or double-quoted strings.
fn tokens(line: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let mut rest = line;
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            return Some(out);
        }
        if let Some(q) = rest.strip_prefix('"') {
            let end = q.find('"')?;
            out.push(&q[..end]);
            rest = &q[end + 1..];
            if !(rest.is_empty() || rest.starts_with(' ')) {
                return None;
            }
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            out.push(&rest[..end]);
            rest = &rest[end..];
        }
    }
}

/// Every value in a rule is one of the shapes kube-proxy writes.
fn check_line(line: &str) -> Result<(), String> {
    let t = tokens(line).ok_or_else(|| format!("unbalanced quotes: {line}"))?;
    if t.iter().filter(|w| **w == "-j").count() > 1 {
        return Err(format!("two targets: {line}"));
    }
    for (i, w) in t.iter().enumerate() {
        let next = t.get(i + 1).copied().unwrap_or("");
        match *w {
            "-d" | "-s" => {
                let ok = next.parse::<std::net::IpAddr>().is_ok()
                    || next.split_once('/').is_some_and(|(a, p)| {
                        a.parse::<std::net::IpAddr>().is_ok() && p.parse::<u8>().is_ok()
                    });
                if !ok {
                    return Err(format!("bad address {next:?}: {line}"));
                }
            }
            "--dport" | "--seconds" => {
                next.parse::<u32>()
                    .map_err(|_| format!("bad number {next:?}: {line}"))?;
            }
            "-j" => {
                let ok = [
                    "ACCEPT",
                    "DROP",
                    "REJECT",
                    "RETURN",
                    "DNAT",
                    "MARK",
                    "MASQUERADE",
                    "KUBE-MARK-MASQ",
                    "KUBE-NODEPORTS",
                ]
                .contains(&next)
                    || [
                        "KUBE-SVC-",
                        "KUBE-SVL-",
                        "KUBE-EXT-",
                        "KUBE-FW-",
                        "KUBE-SEP-",
                    ]
                    .iter()
                    .any(|p| next.starts_with(p) && next.len() == p.len() + 16);
                if !ok {
                    return Err(format!("bad target {next:?}: {line}"));
                }
            }
            "-p" | "-m"
                if ![
                    "tcp",
                    "udp",
                    "sctp",
                    "comment",
                    "conntrack",
                    "mark",
                    "addrtype",
                    "statistic",
                    "recent",
                ]
                .contains(&next) =>
            {
                return Err(format!("bad module/protocol {next:?}: {line}"));
            }
            _ => {}
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn hostile_objects_render_only_well_formed_rules(
        services in prop::collection::vec(service(), 0..4),
        slices in prop::collection::vec(slice(), 0..4),
    ) {
        let cfg = KubeProxyConfiguration {
            hostname_override: "node-a".into(),
            cluster_cidr: "10.0.0.0/8".into(),
            ..Default::default()
        };
        let family = IpFamily::V4;
        let mut warnings = Vec::new();
        let model = ClusterModel::build(&services, &slices, [], &resolve::model_options(&cfg, &kube_proxy_rs::compat::Compat::v1_30(), family), &mut warnings);
        let host = resolve::HostFacts::offline(None, &cfg);
        let opts = resolve::proxier_options(&cfg, &kube_proxy_rs::compat::Compat::v1_30(), None, &host, family);
        let out = Renderer::new().render(&model, &opts, SyncRequest::FULL);
        for line in out.payload.lines().filter(|l| l.starts_with("-A ")) {
            prop_assert!(check_line(line).is_ok(), "{}", check_line(line).unwrap_err());
        }
        prop_assert!(!out.payload.contains("-j DROP\"") && !out.payload.contains("ACCEPT\""));
    }
}

/// The generator must reach the renderer's interesting paths, or the property is vacuous.
#[test]
fn generated_objects_often_produce_service_rules() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let cfg = KubeProxyConfiguration {
        hostname_override: "node-a".into(),
        ..Default::default()
    };
    let mut with_rules = 0;
    for _ in 0..400 {
        let services: Vec<Service> = prop::collection::vec(service(), 1..4)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let slices: Vec<EndpointSlice> = prop::collection::vec(slice(), 1..4)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let mut w = Vec::new();
        let model = ClusterModel::build(
            &services,
            &slices,
            [],
            &resolve::model_options(&cfg, &kube_proxy_rs::compat::Compat::v1_30(), IpFamily::V4),
            &mut w,
        );
        if !model.services.is_empty() {
            with_rules += 1;
        }
    }
    assert!(
        with_rules >= 20,
        "only {with_rules} of 400 generated sets had a usable service"
    );
}

#[test]
fn the_checker_rejects_injected_tokens() {
    assert!(check_line("-A KUBE-SERVICES -d 1.2.3.4 -j DROP -j ACCEPT").is_err());
    assert!(check_line("-A KUBE-FW-ABCDEFGHIJKLMNOP -s 1.2.3.4/32 -j ACCEPT").is_ok());
    assert!(check_line("-A X -m comment --comment \"a\"b\" -j DROP").is_err());
    assert!(check_line("-A X -d 1.2.3.4 -j KUBE-SVC-EVIL").is_err());
}
