//! Stale UDP conntrack entries after a successful sync (spec §6.7, v1.30 `conntrack` CLI):
//! which commands to run is computed sans IO from the previous and the new model.

use crate::model::endpoint::Endpoint;
use crate::model::ip::IpFamily;
use crate::model::service::ServicePort;
use crate::model::{ClusterModel, NsName, Protocol};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Runs one `conntrack` invocation (arguments without the program name); returns what
/// it printed (stdout, then stderr).
pub trait Conntrack: Send {
    fn run(&mut self, args: &[String]) -> Result<String, String>;
}

/// The real thing: the `conntrack` binary. "0 flow entries have been deleted" is success.
#[derive(Debug, Default)]
pub struct ConntrackCli;

impl Conntrack for ConntrackCli {
    fn run(&mut self, args: &[String]) -> Result<String, String> {
        let out = crate::iptables::process::run(
            std::process::Command::new("conntrack").args(args),
            crate::iptables::process::SHORT_DEADLINE,
            None,
        )
        .map_err(|e| format!("conntrack {}: {e}", args.join(" ")))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        if out.status.success() || text.contains(" 0 flow entries have been deleted") {
            Ok(text)
        } else {
            Err(format!("conntrack {}: {}", args.join(" "), text.trim()))
        }
    }
}

/// Records commands, for tests and dry runs.
#[derive(Clone, Debug, Default)]
pub struct RecordingConntrack(pub std::sync::Arc<std::sync::Mutex<Vec<Vec<String>>>>);

impl RecordingConntrack {
    pub fn commands(&self) -> Vec<Vec<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Conntrack for RecordingConntrack {
    fn run(&mut self, args: &[String]) -> Result<String, String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(args.to_vec());
        Ok(String::new())
    }
}

type PortKey<'a> = (&'a NsName, &'a str, Protocol);

fn endpoints_map(m: &ClusterModel) -> BTreeMap<PortKey<'_>, &[Endpoint]> {
    let mut out = BTreeMap::new();
    for (svc, ports) in &m.services {
        for sp in ports.iter() {
            out.insert(
                (svc, sp.port_name.as_str(), sp.protocol),
                sp.endpoints.as_slice(),
            );
        }
    }
    for (svc, map) in &m.unmatched_endpoints {
        for ((port, proto), eps) in map {
            out.insert((svc, port.as_str(), *proto), eps.as_slice());
        }
    }
    out
}

fn ports_map(m: &ClusterModel) -> BTreeMap<PortKey<'_>, &ServicePort> {
    m.services
        .iter()
        .flat_map(|(svc, ports)| {
            ports
                .iter()
                .map(move |sp| ((svc, sp.port_name.as_str(), sp.protocol), sp))
        })
        .collect()
}

fn family_args(family: IpFamily, mut args: Vec<String>) -> Vec<String> {
    if family == IpFamily::V6 {
        args.extend(["-f".into(), "ipv6".into()]);
    }
    args
}

fn for_ip(family: IpFamily, ip: IpAddr) -> Vec<String> {
    let a = ["-D", "--orig-dst", &ip.to_string(), "-p", "udp"];
    family_args(family, a.iter().map(|s| s.to_string()).collect())
}

fn for_port(family: IpFamily, port: u16) -> Vec<String> {
    let a = ["-D", "-p", "udp", "--dport", &port.to_string()];
    family_args(family, a.iter().map(|s| s.to_string()).collect())
}

fn for_nat(family: IpFamily, vip: IpAddr, ep: &str) -> Vec<String> {
    let a = [
        "-D",
        "--orig-dst",
        &vip.to_string(),
        "--dst-nat",
        ep,
        "-p",
        "udp",
    ];
    family_args(family, a.iter().map(|s| s.to_string()).collect())
}

fn for_port_nat(family: IpFamily, port: u16, ep: &str) -> Vec<String> {
    let a = [
        "-D",
        "-p",
        "udp",
        "--dport",
        &port.to_string(),
        "--dst-nat",
        ep,
    ];
    family_args(family, a.iter().map(|s| s.to_string()).collect())
}

fn vips(sp: &ServicePort) -> impl Iterator<Item = IpAddr> + '_ {
    std::iter::once(sp.cluster_ip)
        .chain(sp.external_ips.iter().copied())
        .chain(sp.load_balancer_vips.iter().copied())
}

/// The `conntrack` argument lists to run after a successful sync that went from `prev`
/// (`None` before the first sync) to `new`: removed UDP service ports, UDP service ports
/// whose serving endpoints went from none to some, and serving UDP endpoints that went away.
pub fn stale_entries(
    prev: Option<&ClusterModel>,
    new: &ClusterModel,
    family: IpFamily,
) -> Vec<Vec<String>> {
    let empty = ClusterModel::default();
    let prev = prev.unwrap_or(&empty);
    let (old_ports, new_ports) = (ports_map(prev), ports_map(new));
    let (old_eps, new_eps) = (endpoints_map(prev), endpoints_map(new));
    let mut out = Vec::new();

    let deleted_ips: BTreeSet<IpAddr> = old_ports
        .iter()
        .filter(|(k, _)| k.2 == Protocol::Udp && !new_ports.contains_key(*k))
        .map(|(_, sp)| sp.cluster_ip)
        .collect();
    out.extend(deleted_ips.into_iter().map(|ip| for_ip(family, ip)));

    let serving = |eps: Option<&&[Endpoint]>| eps.is_some_and(|e| e.iter().any(|e| e.serving));
    for (k, eps) in &new_eps {
        if k.2 != Protocol::Udp || serving(old_eps.get(k)) || !serving(Some(eps)) {
            continue;
        }
        if let Some(sp) = new_ports.get(k) {
            out.extend(vips(sp).map(|ip| for_ip(family, ip)));
            if sp.node_port != 0 {
                out.push(for_port(family, sp.node_port));
            }
        }
    }

    for (k, eps) in &old_eps {
        if k.2 != Protocol::Udp {
            continue;
        }
        let now: &[Endpoint] = new_eps.get(k).copied().unwrap_or(&[]);
        for ep in eps.iter().filter(|e| e.serving) {
            if now.contains(ep) {
                continue;
            }
            if let Some(sp) = new_ports.get(k) {
                out.extend(vips(sp).map(|vip| for_nat(family, vip, &ep.ip)));
                if sp.node_port != 0 {
                    out.push(for_port_nat(family, sp.node_port, &ep.ip));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelOptions;
    use crate::source::objects::parse_objects;

    fn model(yaml: &str, family: IpFamily) -> ClusterModel {
        let set = parse_objects(yaml, "test.yaml").unwrap();
        let opts = ModelOptions {
            family,
            node_name: "node1".into(),
            topology_aware_hints: true,
            load_balancer_ip_mode: true,
            node_hints: false,
            compat: crate::compat::Compat::v1_30(),
        };
        ClusterModel::build(
            set.services.iter().map(|(s, _)| s),
            set.endpoint_slices.iter().map(|(s, _)| s),
            set.nodes.iter().map(|(n, _)| n),
            &opts,
            &mut Vec::new(),
        )
    }

    const SVC: &str = "apiVersion: v1
kind: Service
metadata: {name: dns, namespace: ns}
spec:
  type: NodePort
  clusterIP: 10.0.0.10
  externalIPs: [192.0.2.1]
  ports: [{name: p, port: 53, protocol: UDP, nodePort: 30053}]
";

    fn slice(ips: &[&str], serving: bool) -> String {
        let eps: Vec<String> = ips
            .iter()
            .map(|ip| format!("  - addresses: [{ip}]\n    conditions: {{ready: {serving}, serving: {serving}}}\n"))
            .collect();
        format!(
            "---\napiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: dns-1, namespace: ns, labels: {{kubernetes.io/service-name: dns}}}}
addressType: IPv4
ports: [{{name: p, port: 5353, protocol: UDP}}]
endpoints:
{}",
            eps.concat()
        )
    }

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn newly_active_service_flushes_its_vips_and_node_port() {
        let before = model(SVC, IpFamily::V4);
        let after = model(
            &format!("{SVC}{}", slice(&["10.1.0.1"], true)),
            IpFamily::V4,
        );
        assert_eq!(
            stale_entries(Some(&before), &after, IpFamily::V4),
            vec![
                args("-D --orig-dst 10.0.0.10 -p udp"),
                args("-D --orig-dst 192.0.2.1 -p udp"),
                args("-D -p udp --dport 30053"),
            ]
        );
        // No change, nothing to do.
        assert!(stale_entries(Some(&after), &after, IpFamily::V4).is_empty());
    }

    #[test]
    fn removed_serving_endpoint_flushes_its_nat_entries() {
        let before = model(
            &format!("{SVC}{}", slice(&["10.1.0.1", "10.1.0.2"], true)),
            IpFamily::V4,
        );
        let after = model(
            &format!("{SVC}{}", slice(&["10.1.0.2"], true)),
            IpFamily::V4,
        );
        assert_eq!(
            stale_entries(Some(&before), &after, IpFamily::V4),
            vec![
                args("-D --orig-dst 10.0.0.10 --dst-nat 10.1.0.1 -p udp"),
                args("-D --orig-dst 192.0.2.1 --dst-nat 10.1.0.1 -p udp"),
                args("-D -p udp --dport 30053 --dst-nat 10.1.0.1"),
            ]
        );
    }

    #[test]
    fn non_serving_endpoints_leave_no_stale_entries() {
        let before = model(
            &format!("{SVC}{}", slice(&["10.1.0.1"], false)),
            IpFamily::V4,
        );
        let after = model(SVC, IpFamily::V4);
        assert!(stale_entries(Some(&before), &after, IpFamily::V4).is_empty());
    }

    #[test]
    fn deleted_udp_service_flushes_its_cluster_ip_and_tcp_is_ignored() {
        let before = model(SVC, IpFamily::V4);
        let after = model("", IpFamily::V4);
        assert_eq!(
            stale_entries(Some(&before), &after, IpFamily::V4),
            vec![args("-D --orig-dst 10.0.0.10 -p udp")]
        );
        let tcp = SVC.replace("UDP", "TCP");
        assert!(stale_entries(Some(&model(&tcp, IpFamily::V4)), &after, IpFamily::V4).is_empty());
    }

    #[test]
    fn ipv6_appends_the_family() {
        let svc = SVC
            .replace("10.0.0.10", "fd00::10")
            .replace("192.0.2.1", "fd00::1");
        let after = model("", IpFamily::V6);
        assert_eq!(
            stale_entries(Some(&model(&svc, IpFamily::V6)), &after, IpFamily::V6),
            vec![args("-D --orig-dst fd00::10 -p udp -f ipv6")]
        );
    }
}
