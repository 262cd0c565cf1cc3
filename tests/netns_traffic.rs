//! End to end: `kube-proxy-rs apply` in a node namespace, real connections from an outside
//! client namespace and from pods (see `common` for the wiring).

mod common;
use common::*;
use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::time::Duration;

fn objects() -> String {
    let all = Some(vec![(0, false), (1, false), (2, false)]);
    let svcs = [
        Svc {
            name: "spread",
            cluster_ip: "10.96.0.10",
            endpoints: all.clone(),
            ..Svc::default()
        },
        Svc {
            name: "sticky",
            cluster_ip: "10.96.0.11",
            extra_spec: "  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n    clientIP:\n      timeoutSeconds: 10800\n",
            endpoints: all.clone(),
            ..Svc::default()
        },
        Svc {
            name: "np-cluster",
            cluster_ip: "10.96.0.12",
            node_port: Some(30080),
            extra_spec: "  type: NodePort\n  externalTrafficPolicy: Cluster\n",
            endpoints: Some(vec![(0, true)]),
            ..Svc::default()
        },
        Svc {
            name: "np-local",
            cluster_ip: "10.96.0.13",
            node_port: Some(30081),
            extra_spec: "  type: NodePort\n  externalTrafficPolicy: Local\n",
            endpoints: Some(vec![(1, true)]),
            ..Svc::default()
        },
        Svc {
            name: "hairpin",
            cluster_ip: "10.96.0.14",
            endpoints: Some(vec![(2, true)]),
            ..Svc::default()
        },
        Svc {
            name: "empty",
            cluster_ip: "10.96.0.15",
            endpoints: Some(vec![]),
            ..Svc::default()
        },
        Svc {
            name: "lb",
            cluster_ip: "10.96.0.16",
            node_port: Some(30082),
            extra_spec: "  type: LoadBalancer\n  loadBalancerSourceRanges: [192.168.50.2/32]\n",
            status: "status:\n  loadBalancer:\n    ingress:\n    - ip: 203.0.113.10\n",
            endpoints: Some(vec![(0, true)]),
            ..Svc::default()
        },
        Svc {
            name: "dns",
            cluster_ip: "10.96.0.53",
            port: 53,
            protocol: "UDP",
            target_port: UDP_PORT,
            endpoints: all,
            ..Svc::default()
        },
    ];
    let mut y = NODE_YAML.to_string();
    for s in &svcs {
        y.push_str(&s.yaml());
    }
    y
}

fn setup(mode: &str) -> Option<Topology> {
    if !can_run() {
        return None;
    }
    let topo = Topology::new(3);
    topo.apply_ok(&objects(), mode);
    Some(topo)
}

fn pods() -> BTreeSet<String> {
    (0..3).map(|i| pod_ip(i).to_string()).collect()
}

fn spread(mode: &str) -> Option<Topology> {
    let topo = setup(mode)?;
    let mut seen = BTreeSet::new();
    for _ in 0..60 {
        let s = tcp_once(&topo.client, None, sock("10.96.0.10", 80)).expect("connect to ClusterIP");
        assert!(pods().contains(&s.server), "answered by {s:?}");
        seen.insert(s.server);
    }
    assert_eq!(seen, pods(), "60 connections should reach all 3 endpoints");
    Some(topo)
}

#[test]
fn clusterip_spreads_over_all_endpoints_legacy() {
    if let Some(topo) = spread("legacy") {
        assert!(topo
            .node
            .save("legacy")
            .contains("-A KUBE-SERVICES -d 10.96.0.10/32"));
    }
}

#[test]
fn clusterip_spreads_over_all_endpoints_nft() {
    if let Some(topo) = spread("nft") {
        assert!(topo
            .node
            .save("nft")
            .contains("-A KUBE-SERVICES -d 10.96.0.10/32"));
        assert!(
            !topo.node.save("legacy").contains("KUBE-SERVICES"),
            "--iptables nft must not touch the legacy tables"
        );
    }
}

#[test]
fn client_ip_affinity_sticks_to_one_endpoint() {
    let Some(topo) = setup("legacy") else { return };
    let first = tcp_once(&topo.client, None, sock("10.96.0.11", 80)).unwrap();
    assert!(pods().contains(&first.server));
    for _ in 0..20 {
        let s = tcp_once(&topo.client, None, sock("10.96.0.11", 80)).unwrap();
        assert_eq!(s.server, first.server, "ClientIP affinity broken");
    }
}

#[test]
fn nodeport_masquerades_for_cluster_and_keeps_client_ip_for_local() {
    let Some(topo) = setup("legacy") else { return };
    let node = NODE_IP.to_string();
    let s = tcp_once(&topo.client, None, sock(&node, 30080)).unwrap();
    assert_eq!(s.server, pod_ip(0).to_string());
    assert_eq!(
        s.peer,
        NODE_POD_GW.to_string(),
        "externalTrafficPolicy Cluster: source is masqueraded to the node"
    );
    let s = tcp_once(&topo.client, None, sock(&node, 30081)).unwrap();
    assert_eq!(s.server, pod_ip(1).to_string());
    assert_eq!(
        s.peer,
        CLIENT_IP.to_string(),
        "externalTrafficPolicy Local: client IP is kept"
    );
}

#[test]
fn hairpin_endpoint_reaches_itself_through_the_service() {
    let Some(topo) = setup("legacy") else { return };
    let s = tcp_once(&topo.pods[2], None, sock("10.96.0.14", 80)).unwrap();
    assert_eq!(s.server, pod_ip(2).to_string());
    // Without the hairpin masquerade the reply would skip the node's un-DNAT.
    assert_eq!(s.peer, NODE_POD_GW.to_string());
}

#[test]
fn service_without_endpoints_rejects_at_once() {
    let Some(topo) = setup("legacy") else { return };
    let err = connect_from(&topo.client, None, sock("10.96.0.15", 80), IO_TIMEOUT)
        .err()
        .expect("no endpoints: connection must fail");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
}

#[test]
fn load_balancer_source_ranges_allow_and_drop() {
    let Some(topo) = setup("legacy") else { return };
    let s = tcp_once(&topo.client, Some(CLIENT_IP), sock("203.0.113.10", 80)).unwrap();
    assert_eq!(s.server, pod_ip(0).to_string());
    let err = connect_from(
        &topo.client,
        Some(CLIENT_IP2),
        sock("203.0.113.10", 80),
        Duration::from_secs(3),
    )
    .err()
    .expect("source outside loadBalancerSourceRanges must not connect");
    // Dropped, not rejected: the SYN gets no answer at all.
    assert_ne!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    // The allowed source still works after the dropped attempt.
    tcp_once(&topo.client, Some(CLIENT_IP), sock("203.0.113.10", 80)).unwrap();
}

#[test]
fn udp_service_answers_from_an_endpoint() {
    let Some(topo) = setup("legacy") else { return };
    let mut seen = BTreeSet::new();
    for _ in 0..10 {
        let s = udp_once(&topo.client, sock("10.96.0.53", 53)).expect("UDP answer via ClusterIP");
        assert!(pods().contains(&s.server), "{s:?}");
        seen.insert(s.server);
    }
    assert!(!seen.is_empty());
}
