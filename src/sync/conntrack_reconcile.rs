//! S5 (newer releases, spec §8.3): the conntrack reconciler's rule, sans IO. After a
//! successful sync in which a UDP service's endpoints changed, every UDP entry whose
//! original destination is a VIP:port (ClusterIP, external IP, LB VIP) or a NodePort of a
//! UDP service port with ≥1 serving endpoint is deleted unless its reply source is one
//! of those serving endpoints. Service ports without serving endpoints are skipped (their
//! traffic is rejected anyway; deleting would only lose state).

use crate::model::{ClusterModel, Protocol};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

/// One conntrack entry, as far as the rule looks at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    pub protocol: Protocol,
    pub orig_dst: SocketAddr,
    pub reply_src: SocketAddr,
}

/// Serving endpoints per destination of the UDP service ports that have some.
#[derive(Debug, Default)]
pub struct UdpTargets {
    vips: BTreeMap<SocketAddr, BTreeSet<SocketAddr>>,
    node_ports: BTreeMap<u16, BTreeSet<SocketAddr>>,
}

impl UdpTargets {
    pub fn of(model: &ClusterModel) -> UdpTargets {
        let mut t = UdpTargets::default();
        for sp in model.services.values().flat_map(|p| p.iter()) {
            if sp.protocol != Protocol::Udp {
                continue;
            }
            let serving: BTreeSet<SocketAddr> = sp
                .endpoints
                .iter()
                .filter(|e| e.serving)
                .filter_map(|e| Some(SocketAddr::new(e.ip.parse::<IpAddr>().ok()?, e.port)))
                .collect();
            if serving.is_empty() {
                continue;
            }
            let vips = std::iter::once(sp.cluster_ip)
                .chain(sp.external_ips.iter().copied())
                .chain(sp.load_balancer_vips.iter().copied());
            for ip in vips {
                t.vips
                    .entry(SocketAddr::new(ip, sp.port))
                    .or_default()
                    .extend(serving.iter().copied());
            }
            if sp.node_port != 0 {
                t.node_ports
                    .entry(sp.node_port)
                    .or_default()
                    .extend(serving.iter().copied());
            }
        }
        t
    }

    /// Whether the reconciler deletes `flow`.
    pub fn is_stale(&self, flow: &Flow) -> bool {
        if flow.protocol != Protocol::Udp {
            return false;
        }
        let serving = self
            .vips
            .get(&flow.orig_dst)
            .or_else(|| self.node_ports.get(&flow.orig_dst.port()));
        serving.is_some_and(|s| !s.contains(&flow.reply_src))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ip::IpFamily;
    use crate::model::ModelOptions;

    fn model() -> ClusterModel {
        let svc = |name: &str, ip: &str, np: i32| -> k8s_openapi::api::core::v1::Service {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"type": "NodePort", "clusterIP": ip, "clusterIPs": [ip],
                    "externalIPs": ["203.0.113.7"],
                    "ports": [{"port": 53, "protocol": "UDP", "nodePort": np}]}
            }))
            .unwrap()
        };
        let slice =
            |svc: &str, eps: serde_json::Value| -> k8s_openapi::api::discovery::v1::EndpointSlice {
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("{svc}-1"), "namespace": "ns",
                        "labels": {"kubernetes.io/service-name": svc}},
                    "addressType": "IPv4", "endpoints": eps,
                    "ports": [{"port": 5353, "protocol": "UDP"}]
                }))
                .unwrap()
            };
        let dns = svc("dns", "10.96.0.10", 30053);
        let idle = svc("idle", "10.96.0.11", 30054);
        let dns_eps = slice(
            "dns",
            serde_json::json!([
                {"addresses": ["10.244.0.5"]},
                {"addresses": ["10.244.0.6"], "conditions": {"ready": false, "serving": false}}
            ]),
        );
        let idle_eps = slice(
            "idle",
            serde_json::json!([
                {"addresses": ["10.244.0.9"], "conditions": {"ready": false, "serving": false}}
            ]),
        );
        let opts = ModelOptions {
            family: IpFamily::V4,
            node_name: "n".into(),
            topology_aware_hints: false,
            node_hints: false,
            load_balancer_ip_mode: true,
            compat: crate::compat::Compat::v1_35(),
        };
        ClusterModel::build(
            [&dns, &idle],
            [&dns_eps, &idle_eps],
            [],
            &opts,
            &mut Vec::new(),
        )
    }

    fn flow(p: Protocol, dst: &str, reply: &str) -> Flow {
        Flow {
            protocol: p,
            orig_dst: dst.parse().unwrap(),
            reply_src: reply.parse().unwrap(),
        }
    }

    /// The cases of spec §8.3 S5, one by one.
    #[test]
    fn deletes_udp_entries_not_answered_by_a_serving_endpoint() {
        let t = UdpTargets::of(&model());
        let u = Protocol::Udp;
        for (f, stale) in [
            // To the ClusterIP, answered by the serving endpoint: kept.
            (flow(u, "10.96.0.10:53", "10.244.0.5:5353"), false),
            // Answered by the ClusterIP itself (no DNAT, from before the rules): deleted.
            (flow(u, "10.96.0.10:53", "10.96.0.10:53"), true),
            // Answered by an endpoint that is no longer serving: deleted.
            (flow(u, "10.96.0.10:53", "10.244.0.6:5353"), true),
            // External IP and NodePort (any node address) likewise.
            (flow(u, "203.0.113.7:53", "10.244.0.6:5353"), true),
            (flow(u, "203.0.113.7:53", "10.244.0.5:5353"), false),
            (flow(u, "192.168.0.2:30053", "192.168.0.2:30053"), true),
            (flow(u, "192.168.0.2:30053", "10.244.0.5:5353"), false),
            // A service port without serving endpoints is skipped.
            (flow(u, "10.96.0.11:53", "10.96.0.11:53"), false),
            (flow(u, "192.168.0.2:30054", "192.168.0.2:30054"), false),
            // Another port of the ClusterIP, or not a service at all: not ours.
            (flow(u, "10.96.0.10:54", "10.96.0.10:54"), false),
            (flow(u, "8.8.8.8:53", "8.8.8.8:53"), false),
            // TCP (and SCTP) entries are never deleted.
            (flow(Protocol::Tcp, "10.96.0.10:53", "10.96.0.10:53"), false),
            (
                flow(Protocol::Sctp, "10.96.0.10:53", "10.96.0.10:53"),
                false,
            ),
        ] {
            assert_eq!(t.is_stale(&f), stale, "{f:?}");
        }
    }
}
