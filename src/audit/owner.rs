//! Who owns a chain, which chains all services share, and how a newer kube-proxy's dump
//! is read against v1.30 output (spec §8.2 P1/P2).

use super::parse::{Rule, Ruleset};

/// Who writes a chain's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// kube-proxy: every rule is compared.
    Proxy,
    /// Shared with kubelet (`KUBE-FIREWALL`): kube-proxy's rules must be there, others may be.
    Shared,
    /// Built-in chains and other software's chains (kubelet, CNI, Docker): only their jumps
    /// into kube-proxy's chains are kube-proxy's.
    Foreign,
}

/// kube-proxy's fixed chains (every release since 1.9, plus the newer ones).
const FIXED: &[&str] = &[
    "KUBE-SERVICES",
    "KUBE-EXTERNAL-SERVICES",
    "KUBE-NODEPORTS",
    "KUBE-POSTROUTING",
    "KUBE-MARK-MASQ",
    "KUBE-FORWARD",
    "KUBE-PROXY-FIREWALL",
];

/// Per-service-port chain prefixes, `KUBE-XLB-` of the releases before 1.24 included.
const HASHED: &[&str] = &[
    "KUBE-SVC-",
    "KUBE-SVL-",
    "KUBE-EXT-",
    "KUBE-FW-",
    "KUBE-SEP-",
    "KUBE-XLB-",
];

pub fn owner(chain: &str) -> Owner {
    if FIXED.contains(&chain) || HASHED.iter().any(|p| chain.starts_with(p)) {
        Owner::Proxy
    } else if chain == "KUBE-FIREWALL" {
        Owner::Shared
    } else {
        // Includes kubelet's KUBE-MARK-DROP / KUBE-KUBELET-CANARY / KUBE-IPTABLES-HINT, the
        // canaries, kube-router's KUBE-ROUTER-* / KUBE-POD-FW-*, CNI and Docker chains.
        Owner::Foreign
    }
}

/// Chain-name prefixes of other software, and who that is (for `explain`'s "other
/// software" list). Exact names first where a prefix would claim too much.
const SOFTWARE: &[(&str, &str)] = &[
    ("KUBE-FIREWALL", "kubelet"),
    ("KUBE-KUBELET-CANARY", "kubelet"),
    ("KUBE-MARK-DROP", "kubelet"),
    ("KUBE-IPTABLES-HINT", "kubelet"),
    ("KUBE-PROXY-CANARY", "kube-proxy canary (not compared)"),
    ("KUBE-METADATA-SERVER", "GKE metadata server"),
    ("KUBE-ROUTER-", "kube-router"),
    ("KUBE-POD-FW-", "kube-router"),
    ("KUBE-NWPLCY-", "kube-router"),
    ("KUBE-SRC-", "kube-router"),
    ("cali-", "Calico"),
    ("FLANNEL-", "Flannel"),
    ("CILIUM_", "Cilium"),
    ("OLD_CILIUM_", "Cilium"),
    ("AWS-SNAT-CHAIN-", "AWS VPC CNI"),
    ("AWS-CONNMARK-CHAIN-", "AWS VPC CNI"),
    ("WEAVE", "Weave Net"),
    ("DOCKER", "Docker"),
    ("IP-MASQ", "ip-masq-agent"),
    ("ANTREA-", "Antrea"),
    ("KIND-MASQ-AGENT", "kindnet"),
    ("ISTIO_", "Istio"),
    ("CNI-", "CNI plugins (portmap, bridge)"),
];

/// The other software that writes chain `chain`, when its name says.
pub fn software(chain: &str) -> Option<&'static str> {
    SOFTWARE
        .iter()
        .find(|(p, _)| chain == *p || p.ends_with(['-', '_']) && chain.starts_with(p))
        .or_else(|| {
            // `WEAVE`, `WEAVE-NPC`, `DOCKER-USER`, `IP-MASQ-AGENT`: the prefix without a dash.
            SOFTWARE
                .iter()
                .find(|(p, _)| matches!(*p, "WEAVE" | "DOCKER" | "IP-MASQ") && chain.starts_with(p))
        })
        .map(|(_, who)| *who)
}

pub fn is_proxy_chain(chain: &str) -> bool {
    owner(chain) == Owner::Proxy
}

/// Chains every service port writes into, in the Go map order of upstream's service loop:
/// only the order within one service port (and the NodePort catch-all last) is meaningful.
pub fn is_shared_chain(chain: &str) -> bool {
    matches!(
        chain,
        "KUBE-SERVICES" | "KUBE-NODEPORTS" | "KUBE-EXTERNAL-SERVICES" | "KUBE-PROXY-FIREWALL"
    )
}

/// nfacct objects of kube-proxy ≥ 1.31 (spec §8.2): P1 counts INVALID drops on the v1.30
/// rule, P2 adds a rule per NodePort counting localhost packets before the real one.
pub const NFACCT_INVALID: &str = "ct_state_invalid_dropped_pkts";
pub const NFACCT_LOCALHOST_NP: &str = "localhost_nps_accepted_pkts";

/// What the version adaptation did to a dump.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionNote {
    /// Rules whose nfacct match was dropped (P1).
    pub stripped: usize,
    /// Accounting-only rules left out (P2).
    pub removed: usize,
}

impl VersionNote {
    pub fn newer(&self) -> bool {
        self.stripped + self.removed > 0
    }

    pub fn text(&self) -> Option<String> {
        self.newer().then(|| {
            format!(
                "dump looks like kube-proxy ≥ 1.31 (nfacct rules); compared against 1.30 output; \
                 {} nfacct difference(s) suppressed",
                self.stripped + self.removed
            )
        })
    }
}

fn nfacct_name(r: &Rule) -> Option<&str> {
    r.spec.match_value("nfacct", "--nfacct-name")
}

/// True when `rs` has rules only a newer kube-proxy writes.
pub fn has_newer_rules(rs: &Ruleset) -> bool {
    rs.tables
        .iter()
        .flat_map(|t| t.chains.iter())
        .filter(|c| is_proxy_chain(&c.name))
        .flat_map(|c| c.rules.iter())
        .any(|r| matches!(nfacct_name(r), Some(NFACCT_INVALID | NFACCT_LOCALHOST_NP)))
}

/// The v1.30 form of a newer dump: P1's nfacct match dropped, P2's rules removed. Both
/// change only accounting: P2's rule jumps where the NodePort rule after it does.
pub fn to_v130(rs: &Ruleset) -> (Ruleset, VersionNote) {
    let mut out = rs.clone();
    let mut note = VersionNote::default();
    for t in &mut out.tables {
        for c in &mut t.chains {
            if !is_proxy_chain(&c.name) {
                continue;
            }
            c.rules.retain_mut(|r| match nfacct_name(r) {
                Some(NFACCT_LOCALHOST_NP) => {
                    note.removed += 1;
                    false
                }
                Some(NFACCT_INVALID) => {
                    r.spec.matches.retain(|m| m.name != "nfacct");
                    r.text = strip_nfacct_text(&r.text);
                    note.stripped += 1;
                    true
                }
                _ => true,
            });
        }
    }
    (out, note)
}

/// The rule text without its `-m nfacct --nfacct-name X` (for reports).
fn strip_nfacct_text(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut out = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        if words[i] == "-m" && words.get(i + 1) == Some(&"nfacct") {
            i += 2;
            if words.get(i) == Some(&"--nfacct-name") {
                i += 2;
            }
            continue;
        }
        out.push(words[i]);
        i += 1;
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners() {
        assert_eq!(owner("KUBE-SVC-ABC"), Owner::Proxy);
        assert_eq!(owner("KUBE-XLB-ABC"), Owner::Proxy);
        assert_eq!(owner("KUBE-SERVICES"), Owner::Proxy);
        assert_eq!(owner("KUBE-FIREWALL"), Owner::Shared);
        for f in [
            "KUBE-KUBELET-CANARY",
            "KUBE-PROXY-CANARY",
            "KUBE-MARK-DROP",
            "KUBE-IPTABLES-HINT",
            "KUBE-ROUTER-FORWARD",
            "KUBE-POD-FW-ABC",
            "DOCKER",
            "cali-FORWARD",
            "INPUT",
        ] {
            assert_eq!(owner(f), Owner::Foreign, "{f}");
        }
    }

    #[test]
    fn software_names() {
        for (c, who) in [
            ("cali-PREROUTING", "Calico"),
            ("FLANNEL-POSTRTG", "Flannel"),
            ("CILIUM_POST_nat", "Cilium"),
            ("AWS-SNAT-CHAIN-0", "AWS VPC CNI"),
            ("AWS-CONNMARK-CHAIN-1", "AWS VPC CNI"),
            ("WEAVE-NPC-EGRESS", "Weave Net"),
            ("DOCKER-ISOLATION-STAGE-1", "Docker"),
            ("KUBE-METADATA-SERVER", "GKE metadata server"),
            ("IP-MASQ-AGENT", "ip-masq-agent"),
            ("ANTREA-POSTROUTING", "Antrea"),
            ("KUBE-ROUTER-INPUT", "kube-router"),
            ("KUBE-FIREWALL", "kubelet"),
            ("KUBE-MARK-DROP", "kubelet"),
        ] {
            assert_eq!(software(c), Some(who), "{c}");
        }
        assert_eq!(software("KUBE-SERVICES"), None);
        assert_eq!(software("KUBE-MARK-DROPX"), None);
        assert_eq!(software("INPUT"), None);
    }

    #[test]
    fn newer_dump_is_read_as_v130() {
        let text = "*filter\n:KUBE-FORWARD - [0:0]\n\
            -A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name  ct_state_invalid_dropped_pkts -j DROP\n\
            COMMIT\n*nat\n:KUBE-NODEPORTS - [0:0]\n\
            -A KUBE-NODEPORTS -d 127.0.0.0/8 -p tcp -m comment --comment \"web/frontend:http\" -m tcp --dport 30080 -m nfacct --nfacct-name  localhost_nps_accepted_pkts -j KUBE-EXT-X\n\
            -A KUBE-NODEPORTS -p tcp -m comment --comment \"web/frontend:http\" -m tcp --dport 30080 -j KUBE-EXT-X\n\
            COMMIT\n";
        let rs = Ruleset::parse(text).unwrap();
        assert!(has_newer_rules(&rs));
        let (v, note) = to_v130(&rs);
        assert_eq!(
            note,
            VersionNote {
                stripped: 1,
                removed: 1
            }
        );
        let fwd = &v
            .table("filter")
            .unwrap()
            .chain("KUBE-FORWARD")
            .unwrap()
            .rules;
        assert_eq!(fwd[0].text, "-m conntrack --ctstate INVALID -j DROP");
        assert!(fwd[0].spec.find_match("nfacct").is_none());
        let np = &v
            .table("nat")
            .unwrap()
            .chain("KUBE-NODEPORTS")
            .unwrap()
            .rules;
        assert_eq!(np.len(), 1);
        assert!(!has_newer_rules(&v));
    }
}
