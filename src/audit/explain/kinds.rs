//! What every KUBE-* chain name means, across releases (v1.1 to today).

/// A recognised chain kind: a short id (stable, for JSON and tests), what it does, and
/// who writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    pub id: &'static str,
    pub text: &'static str,
    pub owner: &'static str,
    /// Per-service-port chain named by a hash (`KUBE-SVC-<hash>` ...).
    pub hashed: bool,
}

const KP: &str = "kube-proxy";

const fn k(id: &'static str, text: &'static str, owner: &'static str, hashed: bool) -> Kind {
    Kind {
        id,
        text,
        owner,
        hashed,
    }
}

/// Hashed per-service chains. All but SEP hash the same input (service port + protocol),
/// so siblings of one service port share the 16-character suffix.
const HASHED: [(&str, Kind); 6] = [
    ("KUBE-SVC-", k("svc", "service (all endpoints)", KP, true)),
    (
        "KUBE-SVL-",
        k("svl", "service (node-local endpoints)", KP, true),
    ),
    ("KUBE-EXT-", k("ext", "external traffic", KP, true)),
    ("KUBE-FW-", k("fw", "load-balancer firewall", KP, true)),
    (
        "KUBE-XLB-",
        k(
            "xlb",
            "external traffic to node-local endpoints (externalTrafficPolicy=Local, before v1.24)",
            KP,
            true,
        ),
    ),
    ("KUBE-SEP-", k("sep", "endpoint", KP, true)),
];

/// Kind of chain `name` in table `table`; `None` if it is not a KUBE-* chain.
pub fn kind_of(table: &str, name: &str) -> Option<Kind> {
    if !name.starts_with("KUBE-") {
        return None;
    }
    if let Some((_, kd)) = HASHED.iter().find(|(p, _)| name.starts_with(p)) {
        return Some(*kd);
    }
    let filter = table == "filter";
    Some(match name {
        "KUBE-SERVICES" if filter => k(
            "services-filter",
            "rejects traffic to services without endpoints",
            KP,
            false,
        ),
        "KUBE-SERVICES" => k(
            "services",
            "service portals: cluster, external and load-balancer IPs",
            KP,
            false,
        ),
        "KUBE-NODEPORTS" if filter => k(
            "nodeports-filter",
            "accepts health-check node ports",
            KP,
            false,
        ),
        "KUBE-NODEPORTS" => k("nodeports", "node ports", KP, false),
        "KUBE-EXTERNAL-SERVICES" => k(
            "external-services",
            "rejects / drops external traffic of services without (local) endpoints",
            KP,
            false,
        ),
        "KUBE-PROXY-FIREWALL" => k(
            "proxy-firewall",
            "drops load-balancer traffic KUBE-FW-* did not accept (v1.25+)",
            KP,
            false,
        ),
        "KUBE-FORWARD" => k(
            "forward",
            "accepts forwarded service traffic (marked or established)",
            KP,
            false,
        ),
        "KUBE-MARK-MASQ" => k("mark-masq", "marks packets for masquerading", KP, false),
        "KUBE-MARK-DROP" => k(
            "mark-drop",
            "marks packets for kubelet's KUBE-FIREWALL to drop (kube-proxy used it before v1.25)",
            "kube-proxy / kubelet",
            false,
        ),
        "KUBE-POSTROUTING" => k(
            "postrouting",
            "masquerades (or SNATs) marked packets",
            KP,
            false,
        ),
        "KUBE-PROXY-CANARY" => k("canary", "canary (detects a flushed table)", KP, false),
        "KUBE-KUBELET-CANARY" => k(
            "canary",
            "kubelet's canary (detects a flushed table)",
            "kubelet",
            false,
        ),
        "KUBE-FIREWALL" if filter => k(
            "kubelet-firewall",
            "kubelet's firewall: drops marked packets, blocks localnet",
            "kubelet",
            false,
        ),
        "KUBE-PORTALS-CONTAINER"
        | "KUBE-PORTALS-HOST"
        | "KUBE-NODEPORT-CONTAINER"
        | "KUBE-NODEPORT-HOST" => k(
            "userspace",
            "userspace proxy mode: redirects to the proxy process",
            "kube-proxy (userspace mode)",
            false,
        ),
        "KUBE-LOAD-BALANCER"
        | "KUBE-NODE-PORT"
        | "KUBE-LOOP-BACK"
        | "KUBE-FIREWALL"
        | "KUBE-IPVS-FILTER"
        | "KUBE-IPVS-OUT-FILTER"
        | "KUBE-SOURCE-RANGES-FIREWALL" => k(
            "ipvs",
            "IPVS proxy mode (rules match ipsets)",
            "kube-proxy (ipvs mode)",
            false,
        ),
        _ => k(
            "other",
            "not written by kube-proxy's iptables mode",
            "unknown",
            false,
        ),
    })
}

/// The hash suffix of a hashed chain name.
pub fn hash_part(name: &str) -> Option<&str> {
    let (_, rest) = name.split_at(name.find('-')? + 1);
    let (_, h) = rest.split_at(rest.find('-')? + 1);
    (!h.is_empty()).then_some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(kind_of("nat", "KUBE-XLB-ABC").unwrap().id, "xlb");
        assert_eq!(
            kind_of("filter", "KUBE-SERVICES").unwrap().id,
            "services-filter"
        );
        assert_eq!(kind_of("nat", "KUBE-FIREWALL").unwrap().id, "ipvs");
        assert_eq!(kind_of("filter", "KUBE-FIREWALL").unwrap().owner, "kubelet");
        assert!(kind_of("nat", "DOCKER").is_none());
        assert_eq!(hash_part("KUBE-SVC-ABCD"), Some("ABCD"));
        assert_eq!(hash_part("KUBE-FW-ABCD"), Some("ABCD"));
    }
}
