//! Chains of other software in a dump (kubelet, CNI plugins, Docker, ...): listed by owner,
//! never attributed to a service.

use super::super::owner::{is_proxy_chain, software};
use super::super::parse::Ruleset;
use serde::Serialize;

/// One owner's chains.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OtherSoftware {
    pub owner: &'static str,
    /// Distinct (table, chain) pairs, declared or jumped to.
    pub chains: usize,
    /// The first few names, for the reader.
    pub examples: Vec<String>,
}

const BUILTIN: &[&str] = &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];
const EXAMPLES: usize = 3;
/// Chains that are neither kube-proxy's nor named by known software.
pub const UNKNOWN_OWNER: &str = "unknown software";

pub fn list(rs: &Ruleset) -> Vec<OtherSoftware> {
    let mut out: Vec<OtherSoftware> = Vec::new();
    for t in &rs.tables {
        let mut seen = std::collections::HashSet::new();
        let names = t.chains.iter().flat_map(|c| {
            std::iter::once(c.name.as_str())
                .chain(c.rules.iter().filter_map(|r| r.spec.target_name()))
        });
        for name in names {
            if BUILTIN.contains(&name) || is_proxy_chain(name) || !seen.insert(name) {
                continue;
            }
            let owner = match software(name) {
                Some(o) => o,
                None if t.has_chain(name) => UNKNOWN_OWNER,
                // A target that is no chain here is a builtin target (DNAT, MASQUERADE, ...).
                None => continue,
            };
            let i = match out.iter().position(|o| o.owner == owner) {
                Some(i) => i,
                None => {
                    out.push(OtherSoftware {
                        owner,
                        chains: 0,
                        examples: Vec::new(),
                    });
                    out.len() - 1
                }
            };
            out[i].chains += 1;
            if out[i].examples.len() < EXAMPLES && !out[i].examples.iter().any(|e| e == name) {
                out[i].examples.push(name.to_string());
            }
        }
    }
    out
}
