//! S5 (newer releases, spec §8.3): the conntrack reconciler's rule, sans IO. After a
//! successful sync in which a UDP service's endpoints changed, every UDP entry whose
//! original destination is a VIP:port (ClusterIP, external IP, LB VIP) or a NodePort of a
//! UDP service port with ≥1 serving endpoint is deleted unless its reply source is one
//! of those serving endpoints. Service ports without serving endpoints are skipped (their
//! traffic is rejected anyway; deleting would only lose state).
//!
//! Upstream talks netlink; we list and delete with the `conntrack` binary that v1.30 used
//! (README, design notes): the rule is the same, the tool is not.
//!
//! Upstream compares the reply source's IP only; we compare `IP:port` (spec §8.3 S5): an
//! entry answered from a port no serving endpoint listens on (the target port changed)
//! is dead, and a client with a fixed source port (DNS, syslog) would keep it alive.

use super::conntrack::Conntrack;
use crate::model::ip::IpFamily;
use crate::model::{ClusterModel, NsName, Protocol};
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

    /// Whether the reconciler deletes `flow`: its destination is a VIP:port or a NodePort
    /// (either check alone suffices, as upstream's) not answered by a serving endpoint.
    pub fn is_stale(&self, flow: &Flow) -> bool {
        if flow.protocol != Protocol::Udp {
            return false;
        }
        let not_served =
            |s: Option<&BTreeSet<SocketAddr>>| s.is_some_and(|s| !s.contains(&flow.reply_src));
        not_served(self.vips.get(&flow.orig_dst))
            || not_served(self.node_ports.get(&flow.orig_dst.port()))
    }

    /// No UDP service port has a serving endpoint: nothing can be stale.
    pub fn is_empty(&self) -> bool {
        self.vips.is_empty() && self.node_ports.is_empty()
    }
}

/// Whether a sync from `prev` (`None`: the first) to `new` runs the reconciler: some
/// Service with a UDP port had a pending EndpointSlice change (upstream's
/// `ConntrackCleanupRequired`). On the first sync every slice is a change.
pub fn cleanup_required(prev: Option<&ClusterModel>, new: &ClusterModel) -> bool {
    let has_udp = |m: &ClusterModel, k: &NsName| {
        m.services
            .get(k)
            .is_some_and(|p| p.iter().any(|sp| sp.protocol == Protocol::Udp))
            || m.unmatched_endpoints
                .get(k)
                .is_some_and(|e| e.keys().any(|(_, proto)| *proto == Protocol::Udp))
    };
    match prev {
        None => new
            .services
            .keys()
            .chain(new.unmatched_endpoints.keys())
            .any(|k| has_udp(new, k)),
        Some(prev) => new
            .endpoints_changed
            .iter()
            .any(|k| has_udp(prev, k) || has_udp(new, k)),
    }
}

/// The UDP entries of a `conntrack -L` listing. Each line holds the original tuple's
/// `src= dst= sport= dport=` and then the reply tuple's; other lines are skipped.
pub fn parse_listing(text: &str) -> Vec<Flow> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Flow> {
    let mut words = line.split_whitespace();
    let protocol = match words.next()? {
        "udp" => Protocol::Udp,
        "tcp" => Protocol::Tcp,
        "sctp" => Protocol::Sctp,
        _ => return None,
    };
    // dst/dport of the first tuple, src/sport of the second.
    let (mut dst, mut dport, mut src, mut sport) = (None, None, None, None);
    let mut tuple = 0;
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            continue;
        };
        match (k, tuple) {
            ("src", _) => {
                tuple += 1;
                if tuple == 2 {
                    src = v.parse::<IpAddr>().ok();
                }
            }
            ("dst", 1) => dst = v.parse::<IpAddr>().ok(),
            ("dport", 1) => dport = v.parse::<u16>().ok(),
            ("sport", 2) => sport = v.parse::<u16>().ok(),
            _ => {}
        }
    }
    Some(Flow {
        protocol,
        orig_dst: SocketAddr::new(dst?, dport?),
        reply_src: SocketAddr::new(src?, sport?),
    })
}

/// One `conntrack -D` per distinct (original destination, reply source) of the stale
/// flows: it deletes exactly the entries sharing both, all stale by the same rule.
pub fn delete_commands(targets: &UdpTargets, flows: &[Flow], family: IpFamily) -> Vec<Vec<String>> {
    let stale: BTreeSet<(SocketAddr, SocketAddr)> = flows
        .iter()
        .filter(|f| targets.is_stale(f))
        .map(|f| (f.orig_dst, f.reply_src))
        .collect();
    stale
        .into_iter()
        .map(|(dst, reply)| {
            let mut a: Vec<String> = [
                "-D",
                "-p",
                "udp",
                "--orig-dst",
                &dst.ip().to_string(),
                "--orig-port-dst",
                &dst.port().to_string(),
                "--reply-src",
                &reply.ip().to_string(),
                "--reply-port-src",
                &reply.port().to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            a.extend(family_arg(family));
            a
        })
        .collect()
}

fn family_arg(family: IpFamily) -> [String; 2] {
    let f = if family == IpFamily::V6 {
        "ipv6"
    } else {
        "ipv4"
    };
    ["-f".into(), f.into()]
}

/// The count in conntrack's "N flow entries have been deleted." (0 when absent).
pub fn deleted_count(text: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            let head = l.strip_suffix(" flow entries have been deleted.")?;
            head.rsplit(' ').next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// What one reconcile did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub deleted: u64,
    pub errors: Vec<String>,
}

/// Lists the family's UDP entries and deletes the stale ones. A failed deletion is
/// reported and the others still run; a failed listing ends the reconcile.
pub fn reconcile(ct: &mut dyn Conntrack, targets: &UdpTargets, family: IpFamily) -> Reconciled {
    let mut out = Reconciled::default();
    if targets.is_empty() {
        return out;
    }
    let mut list: Vec<String> = ["-L", "-p", "udp"].iter().map(|s| s.to_string()).collect();
    list.extend(family_arg(family));
    let flows = match ct.run(&list) {
        Ok(text) => parse_listing(&text),
        Err(e) => {
            out.errors.push(e);
            return out;
        }
    };
    for args in delete_commands(targets, &flows, family) {
        match ct.run(&args) {
            Ok(text) => out.deleted += deleted_count(&text),
            Err(e) => out.errors.push(e),
        }
    }
    out
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

    #[test]
    fn listing_lines_give_the_original_destination_and_the_reply_source() {
        let text = "udp      17 29 src=192.168.50.2 dst=10.96.0.10 sport=40000 dport=53 [UNREPLIED] src=10.96.0.10 dst=192.168.50.2 sport=53 dport=40000 mark=0 use=1
udp      17 170 src=192.168.50.2 dst=10.96.0.10 sport=40001 dport=53 src=10.244.0.5 dst=192.168.50.2 sport=5353 dport=40001 [ASSURED] mark=0 use=1
udp      17 20 src=fd00::2 dst=fd00::10 sport=1 dport=53 src=fd00::5 dst=fd00::2 sport=5353 dport=1 mark=0 use=1
tcp      6 431999 ESTABLISHED src=1.1.1.1 dst=2.2.2.2 sport=1 dport=2 src=2.2.2.2 dst=1.1.1.1 sport=2 dport=1 [ASSURED] mark=0 use=1
conntrack v1.4.7 (conntrack-tools): 4 flow entries have been shown.
";
        let f = parse_listing(text);
        assert_eq!(f.len(), 4);
        assert_eq!(f[0], flow(Protocol::Udp, "10.96.0.10:53", "10.96.0.10:53"));
        assert_eq!(
            f[1],
            flow(Protocol::Udp, "10.96.0.10:53", "10.244.0.5:5353")
        );
        assert_eq!(f[2], flow(Protocol::Udp, "[fd00::10]:53", "[fd00::5]:5353"));
        assert_eq!(f[3].protocol, Protocol::Tcp);
        assert_eq!(
            deleted_count(
                "conntrack v1.4.7 (conntrack-tools): 12 flow entries have been deleted.\n"
            ),
            12
        );
        assert_eq!(deleted_count("garbage"), 0);
    }

    #[test]
    fn one_delete_per_stale_destination_and_reply_source() {
        let t = UdpTargets::of(&model());
        let u = Protocol::Udp;
        let flows = [
            flow(u, "10.96.0.10:53", "10.96.0.10:53"),
            flow(u, "10.96.0.10:53", "10.96.0.10:53"),
            flow(u, "10.96.0.10:53", "10.244.0.5:5353"),
            flow(u, "192.168.0.2:30053", "192.168.0.2:30053"),
        ];
        let cmds: Vec<String> = delete_commands(&t, &flows, IpFamily::V4)
            .iter()
            .map(|a| a.join(" "))
            .collect();
        assert_eq!(
            cmds,
            [
                "-D -p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --reply-src 10.96.0.10 --reply-port-src 53 -f ipv4",
                "-D -p udp --orig-dst 192.168.0.2 --orig-port-dst 30053 --reply-src 192.168.0.2 --reply-port-src 30053 -f ipv4",
            ]
        );
    }

    #[test]
    fn cleanup_is_required_only_for_udp_slice_changes() {
        let m = model();
        assert!(cleanup_required(None, &m), "first sync");
        let mut next = m.clone();
        next.endpoints_changed.clear();
        assert!(!cleanup_required(Some(&m), &next));
        next.endpoints_changed.insert(NsName::new("ns", "dns"));
        assert!(cleanup_required(Some(&m), &next));
        next.endpoints_changed = [NsName::new("ns", "nothing-here")].into();
        assert!(!cleanup_required(Some(&m), &next));
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
