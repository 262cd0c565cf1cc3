//! Large clusters are rendered by several threads; the payload must not depend on how
//! many (the corpus has no case large enough to take that path).

use kube_proxy_rs::config;
use kube_proxy_rs::model::ip::IpFamily;
use kube_proxy_rs::model::ClusterModel;
use kube_proxy_rs::resolve::{self, HostFacts};
use kube_proxy_rs::rules::{Renderer, SyncRequest};
use kube_proxy_rs::source::objects::parse_objects;
use std::collections::HashSet;
use std::fmt::Write;

/// 700 services with 1..=12 endpoints, mixed features, > 4000 endpoints in all.
fn cluster_yaml() -> String {
    let mut y = String::from(
        "apiVersion: v1\nkind: Node\nmetadata: {name: node-a, labels: {topology.kubernetes.io/zone: z1}}\nstatus: {addresses: [{type: InternalIP, address: 192.168.0.10}]}\n",
    );
    for i in 0..700u32 {
        let n = 1 + i % 12;
        let ty = ["ClusterIP", "NodePort", "LoadBalancer"][(i % 3) as usize];
        let etp = if i % 5 == 0 && ty != "ClusterIP" {
            "Local"
        } else {
            "Cluster"
        };
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: ns{}}}\nspec:\n  type: {ty}\n  clusterIP: 10.96.{}.{}\n  externalTrafficPolicy: {etp}\n  healthCheckNodePort: {}\n  sessionAffinity: {}\n  ports:\n  - {{name: p, port: 80, nodePort: {}}}\n  - {{name: q, port: 53, protocol: UDP, nodePort: {}}}\n",
            i % 7,
            i / 250,
            i % 250 + 1,
            32000 + i,
            if i % 4 == 0 { "ClientIP" } else { "None" },
            30000 + i,
            31000 + i,
        );
        if ty == "LoadBalancer" {
            let _ = write!(y, "  loadBalancerSourceRanges: [10.0.0.0/8]\nstatus: {{loadBalancer: {{ingress: [{{ip: 203.0.{}.{}}}]}}}}\n", i / 250, i % 250 + 1);
        }
        let _ = write!(
            y,
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: s{i}-x, namespace: ns{}, labels: {{kubernetes.io/service-name: s{i}}}}}\naddressType: IPv4\nendpoints:\n",
            i % 7
        );
        for j in 0..n {
            let _ = write!(
                y,
                "- addresses: [10.{}.{}.{}]\n  nodeName: node-{}\n  conditions: {{ready: {}, serving: true, terminating: {}}}\n",
                1 + i / 250,
                i % 250,
                j + 1,
                if j % 3 == 0 { "a" } else { "b" },
                j % 5 != 4,
                j % 5 == 4
            );
        }
        y.push_str("ports: [{name: p, port: 8080}, {name: q, port: 5353, protocol: UDP}]\n");
    }
    y
}

#[test]
fn payload_is_the_same_with_one_or_many_workers() {
    let cfg = config::parse_config(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nhostnameOverride: node-a\nclusterCIDR: 10.0.0.0/8\n",
        "test",
    )
    .unwrap();
    let objects = parse_objects(&cluster_yaml(), "generated").unwrap();
    let mut warnings = Vec::new();
    let model = ClusterModel::from_objects(
        &objects,
        &resolve::model_options(&cfg, &kube_proxy_rs::compat::Compat::v1_30(), IpFamily::V4),
        &mut warnings,
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(
        model.total_endpoints() > 4000,
        "{}",
        model.total_endpoints()
    );
    let host = HostFacts::offline(model.node.as_ref(), &cfg);
    let opts = resolve::proxier_options(
        &cfg,
        &kube_proxy_rs::compat::Compat::v1_30(),
        model.node.as_ref(),
        &host,
        IpFamily::V4,
    );
    let existing = HashSet::new();
    let changed: HashSet<_> = model.services.keys().step_by(3).cloned().collect();
    for req in [
        SyncRequest::FULL,
        SyncRequest {
            partial: Some(&changed),
            existing_nat_chains: Some(&existing),
        },
    ] {
        let one = Renderer::new()
            .with_max_workers(1)
            .render(&model, &opts, req);
        for n in [2, 3, 4] {
            let many = Renderer::new()
                .with_max_workers(n)
                .render(&model, &opts, req);
            assert!(
                one.payload == many.payload,
                "{n} workers changed the payload"
            );
            assert_eq!(one.stats, many.stats, "{n} workers changed the stats");
        }
        assert!(one.payload.contains("KUBE-SEP-"));
    }
}
