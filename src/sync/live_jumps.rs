//! Which of kube-proxy's jump rules a listing already shows, so that a start (which lists
//! the tables anyway) does not re-check each with its own `iptables -N` / `-C` exec: on
//! a 10,000-Service node each of those reads the whole table, about a second apiece.

use crate::audit::norm::rule_key;
use crate::audit::parse::Ruleset;
use crate::rules::jumps::{JumpRule, JUMP_RULES};
use std::collections::HashSet;

/// For each of [`JUMP_RULES`], whether `live` (`iptables-save` of filter and nat) holds
/// both its target chain and its rule in its source chain. `false` whenever in doubt:
/// the caller then runs the usual `-N` / `-C` / `-I` for it.
pub fn present(live: &str) -> Vec<bool> {
    let mut out = vec![false; JUMP_RULES.len()];
    for table in ["filter", "nat"] {
        let Some(section) = table_section(live, table) else {
            continue;
        };
        let (declared, rules) = scan(section, table);
        let Ok(have) = Ruleset::parse_save(&rules) else {
            continue;
        };
        let Some(have) = have.table(table) else {
            continue;
        };
        for (i, j) in JUMP_RULES.iter().enumerate() {
            if j.table != table || !declared.contains(j.dst_chain) {
                continue;
            }
            let Ok(want) = Ruleset::parse_save(&format!("*{table}\n{}\nCOMMIT\n", line(j))) else {
                continue;
            };
            let Some(rule) = want
                .table(table)
                .and_then(|t| t.chain(j.src_chain))
                .and_then(|c| c.rules.first())
            else {
                continue;
            };
            let key = rule_key(&rule.spec);
            out[i] = have
                .chain(j.src_chain)
                .is_some_and(|c| c.rules.iter().any(|r| rule_key(&r.spec) == key));
        }
    }
    out
}

/// `-A SRC args...` of one jump rule, quoted as iptables-restore reads it.
fn line(j: &JumpRule) -> String {
    format!("-A {}{}", j.src_chain, j.quoted_args())
}

/// One pass over a table's section: which jump targets it declares, and the rules of the
/// jump rules' source chains (the built-in chains: a few lines, however large the table)
/// as a restore text.
fn scan<'a>(section: &'a str, table: &str) -> (HashSet<&'a str>, String) {
    let ours: Vec<&JumpRule> = JUMP_RULES.iter().filter(|j| j.table == table).collect();
    let mut declared = HashSet::new();
    let mut rules = format!("*{table}\n");
    for l in section.lines() {
        if let Some((name, _)) = l.strip_prefix(':').and_then(|r| r.split_once(' ')) {
            if ours.iter().any(|j| j.dst_chain == name) {
                declared.insert(name);
            }
        } else if let Some(rest) = l.strip_prefix("-A ") {
            let src = rest.split(' ').next().unwrap_or("");
            if ours.iter().any(|j| j.src_chain == src) {
                rules.push_str(l);
                rules.push('\n');
            }
        }
    }
    rules.push_str("COMMIT\n");
    (declared, rules)
}

/// The lines of `live` between `*table` and its `COMMIT`.
fn table_section<'a>(live: &'a str, table: &str) -> Option<&'a str> {
    let head = format!("*{table}\n");
    let start = if live.starts_with(&head) {
        0
    } else {
        live.find(&format!("\n{head}"))? + 1
    };
    let body = &live[start + head.len()..];
    let end = body.find("\nCOMMIT").map_or(body.len(), |i| i + 1);
    Some(&body[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's view (iptables-legacy-save) after upstream's ensure calls and restore.
    const SAVE: &str =
        include_str!("../../golden/upstream/clusterip-multiport-named/expected.save");

    fn index(table: &str, src: &str, dst: &str) -> usize {
        JUMP_RULES
            .iter()
            .position(|j| (j.table, j.src_chain, j.dst_chain) == (table, src, dst))
            .expect("jump rule exists")
    }

    #[test]
    fn every_jump_rule_of_a_real_listing_is_found() {
        assert_eq!(present(SAVE), vec![true; JUMP_RULES.len()]);
    }

    #[test]
    fn a_missing_rule_or_chain_or_a_different_rule_is_not_present() {
        let prerouting =
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n";
        assert!(SAVE.contains(prerouting));
        let p = present(&SAVE.replace(prerouting, ""));
        assert!(!p[index("nat", "PREROUTING", "KUBE-SERVICES")]);
        assert_eq!(p.iter().filter(|x| !**x).count(), 1, "{p:?}");

        let other_comment = SAVE.replace(
            "--comment \"kubernetes postrouting rules\"",
            "--comment \"someone else's rule\"",
        );
        assert!(other_comment != SAVE);
        assert!(!present(&other_comment)[index("nat", "POSTROUTING", "KUBE-POSTROUTING")]);

        // The corpus saves drop the counters: `:NAME -` (iptables-save adds ` [0:0]`).
        let no_chain = SAVE.replace(":KUBE-FORWARD -\n", "");
        assert!(no_chain != SAVE);
        let p = present(&no_chain);
        assert!(!p[index("filter", "FORWARD", "KUBE-FORWARD")]);
        assert!(p[index("filter", "FORWARD", "KUBE-SERVICES")]);
    }

    #[test]
    fn nothing_is_present_in_an_empty_or_foreign_listing() {
        assert_eq!(present(""), vec![false; JUMP_RULES.len()]);
        let nat_only = "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j DOCKER\nCOMMIT\n";
        assert_eq!(present(nat_only), vec![false; JUMP_RULES.len()]);
    }
}
