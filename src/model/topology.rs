//! Which endpoints a service port uses for cluster and local traffic (spec §3.1.3).

use super::endpoint::Endpoint;
use super::service::ServicePort;
use crate::compat::TopologyRule;

/// The feature gates (and release rule) that change endpoint selection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopologyGates {
    pub topology_aware_hints: bool,
    pub service_traffic_distribution: bool,
    pub rule: TopologyRule,
}

/// Which hints pick the cluster endpoints (upstream's topology mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    All,
    SameZone,
    SameNode,
}

#[derive(Debug, Default)]
pub struct Categorized<'a> {
    pub cluster: Vec<&'a Endpoint>,
    pub local: Vec<&'a Endpoint>,
    reachable: Reachable<'a>,
    pub has_any: bool,
}

/// Which list holds the endpoints that get KUBE-SEP chains (saves a copy in the common
/// cases where it is one of the other two).
#[derive(Debug, Default)]
enum Reachable<'a> {
    #[default]
    Cluster,
    Local,
    Merged(Vec<&'a Endpoint>),
}

impl<'a> Categorized<'a> {
    /// Every endpoint that gets a KUBE-SEP chain.
    pub fn all_reachable(&self) -> &[&'a Endpoint] {
        match &self.reachable {
            Reachable::Cluster => &self.cluster,
            Reachable::Local => &self.local,
            Reachable::Merged(v) => v,
        }
    }
}

pub fn categorize<'a>(
    sp: &ServicePort,
    endpoints: &'a [Endpoint],
    zone: Option<&str>,
    gates: TopologyGates,
) -> Categorized<'a> {
    categorize_reusing(sp, endpoints, zone, gates, Categorized::default())
}

/// [`categorize`], reusing the lists of an earlier result (saves allocations per port).
pub fn categorize_reusing<'a>(
    sp: &ServicePort,
    endpoints: &'a [Endpoint],
    zone: Option<&str>,
    gates: TopologyGates,
    mut c: Categorized<'a>,
) -> Categorized<'a> {
    c.cluster.clear();
    c.local.clear();
    c.reachable = Reachable::Cluster;
    c.has_any = false;
    let mut use_topology = false;
    if sp.uses_cluster_endpoints() {
        let mode = match gates.rule {
            TopologyRule::GatedByAnnotation if can_use_topology(sp, endpoints, zone, gates) => {
                Mode::SameZone
            }
            TopologyRule::GatedByAnnotation => Mode::All,
            TopologyRule::WheneverHinted => mode_from_hints(endpoints, zone),
        };
        use_topology = mode != Mode::All;
        c.cluster.extend(endpoints.iter().filter(|ep| {
            ep.ready
                && match mode {
                    Mode::All => true,
                    Mode::SameZone => zone.is_some_and(|z| has_hint(ep, z)),
                    Mode::SameNode => ep.node_hint_local,
                }
        }));
        if c.cluster.is_empty() {
            c.cluster
                .extend(endpoints.iter().filter(|ep| ep.serving && ep.terminating));
        }
        c.has_any = !c.cluster.is_empty();
    }
    if !sp.uses_local_endpoints() {
        return c;
    }
    let mut local_ready = false;
    let mut local_serving_terminating = false;
    for ep in endpoints {
        if ep.ready {
            c.has_any = true;
            local_ready |= ep.is_local;
        } else if ep.serving && ep.terminating {
            c.has_any = true;
            local_serving_terminating |= ep.is_local;
        }
    }
    let mut use_serving_terminating = false;
    if local_ready {
        c.local
            .extend(endpoints.iter().filter(|ep| ep.is_local && ep.ready));
    } else if local_serving_terminating {
        use_serving_terminating = true;
        c.local.extend(
            endpoints
                .iter()
                .filter(|ep| ep.is_local && ep.serving && ep.terminating),
        );
    }
    if !sp.uses_cluster_endpoints() {
        c.reachable = Reachable::Local;
    } else if !use_topology && !use_serving_terminating {
        c.reachable = Reachable::Cluster;
    } else {
        // Union by endpoint string; upstream's order here is map order, ours is sorted.
        let mut all: Vec<&Endpoint> = c.cluster.iter().chain(c.local.iter()).copied().collect();
        all.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
        all.dedup_by(|a, b| a.endpoint == b.endpoint);
        c.reachable = Reachable::Merged(all);
    }
    c
}

fn has_hint(ep: &Endpoint, zone: &str) -> bool {
    ep.zone_hints.iter().any(|z| z == zone)
}

/// Newer releases (§8 P3): node hints if every ready endpoint has some and one names this
/// node, else zone hints if every ready endpoint has some and one names this zone.
fn mode_from_hints(endpoints: &[Endpoint], zone: Option<&str>) -> Mode {
    let (mut all_node, mut for_node, mut all_zone, mut for_zone) = (true, false, true, false);
    for ep in endpoints.iter().filter(|ep| ep.ready) {
        if !ep.has_node_hints {
            all_node = false;
        }
        for_node |= ep.node_hint_local;
        if ep.zone_hints.is_empty() {
            all_zone = false;
        }
        for_zone |= zone.is_some_and(|z| has_hint(ep, z));
    }
    if all_node && for_node {
        Mode::SameNode
    } else if all_zone && for_zone {
        Mode::SameZone
    } else {
        Mode::All
    }
}

fn can_use_topology(
    sp: &ServicePort,
    endpoints: &[Endpoint],
    zone: Option<&str>,
    gates: TopologyGates,
) -> bool {
    if !gates.topology_aware_hints && !gates.service_traffic_distribution {
        return false;
    }
    if !gates.service_traffic_distribution
        && matches!(sp.hints_annotation.as_str(), "" | "disabled" | "Disabled")
    {
        return false;
    }
    let Some(zone) = zone else { return false };
    let mut has_endpoint_for_zone = false;
    for ep in endpoints.iter().filter(|ep| ep.ready) {
        if ep.zone_hints.is_empty() {
            return false;
        }
        has_endpoint_for_zone |= has_hint(ep, zone);
    }
    has_endpoint_for_zone
}
