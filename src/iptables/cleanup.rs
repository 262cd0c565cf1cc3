//! `--cleanup`: remove kube-proxy's jump rules and chains. v1.30.3 (spec §6.8) leaves
//! KUBE-MARK-MASQ, KUBE-PROXY-FIREWALL and the canaries behind (unreferenced once the
//! jumps are gone, so harmless); newer releases remove them too (spec §8.3 S6): which
//! one is `Compat::cleanup_extended`. Kubelet's chains (KUBE-FIREWALL and its jumps,
//! KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT) and everyone else's stay.

use super::command::{chains_in_save, is_not_found, CliBackend};
use super::BackendError;
use crate::rules::jumps::JUMP_RULES;
use crate::rules::names::ChainKind;

/// Base chains every release's cleanup deletes per table (owned service chains come on
/// top in nat).
const NAT_CHAINS: &[&str] = &["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING"];
const FILTER_CHAINS: &[&str] = &[
    "KUBE-SERVICES",
    "KUBE-EXTERNAL-SERVICES",
    "KUBE-FORWARD",
    "KUBE-NODEPORTS",
];
/// What the extended cleanup (S6) deletes on top.
const NAT_EXTENDED: &[&str] = &["KUBE-MARK-MASQ", "KUBE-PROXY-CANARY"];
const FILTER_EXTENDED: &[&str] = &["KUBE-PROXY-FIREWALL", "KUBE-PROXY-CANARY"];
const MANGLE_EXTENDED: &[&str] = &["KUBE-PROXY-CANARY"];

/// Tables the cleanup visits, in this order (nat first: its chains hold no filter jumps).
pub const TABLES: [&str; 3] = ["nat", "filter", "mangle"];

/// The restore payload that flushes and deletes `chains` in `table`: all declarations,
/// then all `-X` lines. `None` when there is nothing to delete.
pub fn deletion_payload(table: &str, chains: &[&str]) -> Option<String> {
    if chains.is_empty() {
        return None;
    }
    let mut p = format!("*{table}\n");
    for c in chains {
        p.push_str(&format!(":{c} - [0:0]\n"));
    }
    for c in chains {
        p.push_str(&format!("-X {c}\n"));
    }
    p.push_str("COMMIT\n");
    Some(p)
}

/// Chains of `save` (an `iptables-save -t table` output) the cleanup removes, in save
/// order; `extended`: S6's cleanup.
pub fn chains_to_delete<'a>(table: &str, save: &'a str, extended: bool) -> Vec<&'a str> {
    let (base, more): (&[&str], &[&str]) = match table {
        "nat" => (NAT_CHAINS, NAT_EXTENDED),
        "filter" => (FILTER_CHAINS, FILTER_EXTENDED),
        "mangle" => (&[], MANGLE_EXTENDED),
        _ => (&[], &[]),
    };
    chains_in_save(save)
        .filter(|c| {
            base.contains(c)
                || (extended && more.contains(c))
                || (table == "nat" && ChainKind::is_owned(c))
        })
        .collect()
}

/// Runs every cleanup step for this backend's family, continuing past failures;
/// returns all errors (empty = clean). `extended`: S6's cleanup (also the mangle table).
pub fn cleanup(backend: &CliBackend, extended: bool) -> Vec<BackendError> {
    let mut errors = Vec::new();
    for j in JUMP_RULES.iter().filter(|j| !j.kubelet_owned) {
        let mut args = vec!["-C", j.src_chain, "-t", j.table];
        args.extend(j.rule_args());
        match backend.iptables(&args) {
            Ok(r) if r.ok() => {}
            Ok(r) if r.code == Some(1) || is_not_found(&r.output) => continue,
            Ok(r) => {
                errors.push(BackendError::Command {
                    command: format!("{} {}", backend.tools().bins.iptables, args.join(" ")),
                    message: r.output.trim().to_string(),
                });
                continue;
            }
            Err(e) => {
                errors.push(e);
                continue;
            }
        }
        args[0] = "-D";
        match backend.iptables(&args) {
            Ok(r) if r.ok() || is_not_found(&r.output) => {}
            Ok(r) => errors.push(BackendError::Command {
                command: format!("{} {}", backend.tools().bins.iptables, args.join(" ")),
                message: r.output.trim().to_string(),
            }),
            Err(e) => errors.push(e),
        }
    }
    let tables = if extended { &TABLES[..] } else { &TABLES[..2] };
    for &table in tables {
        let save = match backend.save_table(table) {
            Ok(s) => s,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let chains = chains_to_delete(table, &save, extended);
        if let Some(payload) = deletion_payload(table, &chains) {
            if let Err(e) = backend.restore_with(&["-T", table], &payload) {
                errors.push(e);
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_kube_proxy_chains_only() {
        let nat = ":PREROUTING ACCEPT [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-AAAA - [0:0]\n:KUBE-SEP-BBBB - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-PROXY-CANARY - [0:0]\n:CNI-X - [0:0]\n";
        assert_eq!(
            chains_to_delete("nat", nat, false),
            [
                "KUBE-SERVICES",
                "KUBE-SVC-AAAA",
                "KUBE-SEP-BBBB",
                "KUBE-POSTROUTING"
            ],
            "v1.30.3 leaves KUBE-MARK-MASQ and the canary"
        );
        assert_eq!(
            chains_to_delete("nat", nat, true),
            [
                "KUBE-MARK-MASQ",
                "KUBE-SERVICES",
                "KUBE-SVC-AAAA",
                "KUBE-SEP-BBBB",
                "KUBE-POSTROUTING",
                "KUBE-PROXY-CANARY"
            ]
        );
        let filter = ":INPUT ACCEPT [0:0]\n:KUBE-FIREWALL - [0:0]\n:KUBE-PROXY-FIREWALL - [0:0]\n:KUBE-FORWARD - [0:0]\n:KUBE-SVC-AAAA - [0:0]\n:KUBE-KUBELET-CANARY - [0:0]\n";
        assert_eq!(chains_to_delete("filter", filter, false), ["KUBE-FORWARD"]);
        assert_eq!(
            chains_to_delete("filter", filter, true),
            ["KUBE-PROXY-FIREWALL", "KUBE-FORWARD"]
        );
        let mangle = ":PREROUTING ACCEPT [0:0]\n:KUBE-IPTABLES-HINT - [0:0]\n:KUBE-PROXY-CANARY - [0:0]\n:KUBE-KUBELET-CANARY - [0:0]\n";
        assert_eq!(
            chains_to_delete("mangle", mangle, true),
            ["KUBE-PROXY-CANARY"]
        );
        assert!(chains_to_delete("mangle", mangle, false).is_empty());
    }

    #[test]
    fn payload_declares_then_deletes() {
        assert_eq!(
            deletion_payload("nat", &["KUBE-SERVICES", "KUBE-SVC-A"]).unwrap(),
            "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-A - [0:0]\n-X KUBE-SERVICES\n-X KUBE-SVC-A\nCOMMIT\n"
        );
        assert_eq!(deletion_payload("nat", &[]), None);
    }
}
