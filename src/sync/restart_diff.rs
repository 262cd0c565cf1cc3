//! Restarts without rewrites: the part of a full payload that differs from the kernel.
//!
//! `iptables-restore --noflush` flushes every chain the payload declares and leaves the
//! others alone, so restoring only the chains whose rules differ from the live ones (plus
//! the stale-chain deletions) leaves exactly the tables the full payload would, without
//! touching the rules (and counters) of the chains that were already right. Live and
//! desired rules are compared in the audit's canonical form ([`crate::audit::norm`]):
//! `iptables-save` prints rules differently from how they were written (`/32`, `-m tcp`,
//! probabilities), and that form makes the two views of one rule equal.

pub use super::restart_fast::FastStats;
use crate::audit::norm::rule_key_to;
use crate::audit::parse::{Chain, ParseError, Ruleset};
use std::collections::HashMap;

/// What [`differing_payload`] found.
#[derive(Debug, PartialEq, Eq)]
pub struct Diff {
    /// The restore payload for the differing chains; `None` when nothing differs.
    pub payload: Option<String>,
    /// Chains declared by the full payload that were already right (left untouched).
    pub unchanged_chains: usize,
    /// Chains the payload rewrites or creates.
    pub rewritten_chains: usize,
    /// Chains it deletes (`-X`).
    pub deleted_chains: usize,
    /// Rules of the chains left alone (0: nothing worth keeping, e.g. a fresh node).
    pub kept_rules: usize,
}

/// The restore payload that turns the kernel's `live` tables (`iptables-save` of every
/// table `desired` writes) into what restoring the full `desired` payload would leave.
///
/// Chains are first compared as text ([`super::restart_fast`]); the canonical compare of
/// [`differing_payload_canonical`] decides whatever that cannot, with the same result.
pub fn differing_payload(desired: &str, live: &str) -> Result<Diff, ParseError> {
    match super::restart_fast::differing_payload(desired, live) {
        Some((d, _)) => Ok(d),
        None => differing_payload_canonical(desired, live),
    }
}

/// How much of [`differing_payload`] the text compare settled (`None`: none, the full
/// parse ran). For tests and profiles.
pub fn fast_path_stats(desired: &str, live: &str) -> Option<FastStats> {
    super::restart_fast::differing_payload(desired, live).map(|(_, s)| s)
}

/// [`differing_payload`] by parsing both texts whole and comparing every rule in the
/// audit's canonical form.
pub fn differing_payload_canonical(desired: &str, live: &str) -> Result<Diff, ParseError> {
    // Two large texts, two cores: parse them side by side.
    // A refused thread (a pids limit) only costs the overlap.
    let (want, have) = std::thread::scope(|s| {
        let have = std::thread::Builder::new().spawn_scoped(s, || Ruleset::parse_save(live));
        let want = Ruleset::parse_save(desired);
        let have = match have {
            Ok(h) => h.join().expect("parser does not panic"),
            Err(_) => Ruleset::parse_save(live),
        };
        (want, have)
    });
    let (want, have) = (want?, have?);
    let mut keys = (String::new(), String::new());
    let lines: Vec<&str> = desired.lines().collect();
    let mut emit = Emitter::new(&lines);
    for table in &want.tables {
        let live_table = have.table(&table.name);
        let differing: Vec<&Chain> = table
            .chains
            .iter()
            .filter(|c| !same_rules(c, live_table.and_then(|t| t.chain(&c.name)), &mut keys))
            .collect();
        let kept = table.chains.iter().map(|c| c.rules.len()).sum::<usize>()
            - differing.iter().map(|c| c.rules.len()).sum::<usize>();
        // A deleted chain must exist to be deleted (it came from the listing); one that
        // does not is nothing to do.
        let deleted: Vec<&str> = table
            .deleted
            .iter()
            .filter(|n| live_table.is_some_and(|t| t.has_chain(n)))
            .map(String::as_str)
            .collect();
        let decls = differing
            .iter()
            .map(|c| (c.line, c.name.as_str()))
            .collect();
        let rules = differing
            .iter()
            .flat_map(|c| c.rules.iter().map(|r| r.line))
            .collect();
        emit.table(
            &table.name,
            table.chains.len(),
            kept,
            decls,
            rules,
            &deleted,
        );
    }
    // ~10⁶ small allocations: freed off the sync path (a fifth of its time at 10,000
    // Services otherwise).
    // If no thread can be had, the closure (and the rules) are dropped right here.
    let _ = std::thread::Builder::new().spawn(move || drop((want, have)));
    Ok(emit.finish())
}

/// Writes the restore payload table by table, in the full payload's order.
pub(super) struct Emitter<'l, 'a> {
    lines: &'l [&'a str],
    /// Found when a deletion first needs them.
    decl_lines: Option<HashMap<&'a str, usize>>,
    out: String,
    diff: Diff,
}

impl<'l, 'a> Emitter<'l, 'a> {
    pub(super) fn new(lines: &'l [&'a str]) -> Self {
        Emitter {
            lines,
            decl_lines: None,
            out: String::new(),
            diff: Diff {
                payload: None,
                unchanged_chains: 0,
                rewritten_chains: 0,
                deleted_chains: 0,
                kept_rules: 0,
            },
        }
    }

    /// One table of `chains` declared chains: `differing` (declaration line, name) and
    /// their rules' lines are rewritten, `deleted` chains (present in the kernel) go,
    /// `kept` rules stay.
    pub(super) fn table(
        &mut self,
        name: &str,
        chains: usize,
        kept: usize,
        differing: Vec<(usize, &str)>,
        mut rules: Vec<usize>,
        deleted: &[&str],
    ) {
        let (out, diff, lines) = (&mut self.out, &mut self.diff, self.lines);
        diff.unchanged_chains += chains - differing.len();
        diff.kept_rules += kept;
        if differing.is_empty() && deleted.is_empty() {
            return;
        }
        diff.rewritten_chains += differing.len();
        diff.deleted_chains += deleted.len();
        out.push('*');
        out.push_str(name);
        out.push('\n');
        // The full payload's order: declarations (creating missing chains in the same
        // order it would), then rules, then deletions.
        let mut decls = differing;
        if !deleted.is_empty() {
            let at = self
                .decl_lines
                .get_or_insert_with(|| declaration_lines(lines));
            decls.extend(deleted.iter().map(|n| {
                let line = at.get(n).copied().unwrap_or(usize::MAX);
                (line, *n)
            }));
        }
        decls.sort_unstable();
        // A chain the payload never declared (line 0, or none for a deletion) has no
        // declaration to copy.
        for (line, _) in &decls {
            if let Some(l) = line.checked_sub(1).and_then(|i| lines.get(i)) {
                out.push_str(l);
                out.push('\n');
            }
        }
        rules.sort_unstable();
        for line in rules {
            out.push_str(lines[line - 1]);
            out.push('\n');
        }
        for n in deleted {
            out.push_str("-X ");
            out.push_str(n);
            out.push('\n');
        }
        out.push_str("COMMIT\n");
    }

    pub(super) fn finish(mut self) -> Diff {
        if !self.out.is_empty() {
            self.diff.payload = Some(self.out);
        }
        self.diff
    }
}

/// Line (1-based) of each chain's first `:name` declaration in the payload (a deleted
/// chain is declared before its `-X`): one pass, not a scan per deleted chain.
fn declaration_lines<'a>(lines: &[&'a str]) -> HashMap<&'a str, usize> {
    let mut at = HashMap::new();
    for (i, l) in lines.iter().enumerate() {
        if let Some((name, _)) = l.strip_prefix(':').and_then(|r| r.split_once(' ')) {
            at.entry(name).or_insert(i + 1);
        }
    }
    at
}

/// `keys`: scratch buffers reused across rules.
fn same_rules(want: &Chain, have: Option<&Chain>, keys: &mut (String, String)) -> bool {
    let Some(have) = have else {
        return false;
    };
    want.rules.len() == have.rules.len()
        && want.rules.iter().zip(&have.rules).all(|(a, b)| {
            a.text == b.text || {
                rule_key_to(&a.spec, &mut keys.0);
                rule_key_to(&b.spec, &mut keys.1);
                keys.0 == keys.1
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESIRED: &str = "*filter
:KUBE-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-AAA - [0:0]
:KUBE-SEP-BBB - [0:0]
:KUBE-SEP-OLD - [0:0]
-A KUBE-SERVICES -m comment --comment \"ns/web cluster IP\" -m tcp -p tcp -d 10.96.0.10 --dport 80 -j KUBE-SVC-AAA
-A KUBE-SVC-AAA -m comment --comment \"ns/web -> 10.244.1.11:8080\" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-BBB
-A KUBE-SEP-BBB -s 10.244.1.11 -j KUBE-MARK-MASQ
-X KUBE-SEP-OLD
COMMIT
";

    /// The kernel's view of the same rules (as iptables-save prints them), plus the
    /// stale chain.
    const LIVE_SAME: &str = "# Generated by iptables-save
*filter
:INPUT ACCEPT [10:20]
:KUBE-FORWARD - [0:0]
:KUBE-SERVICES - [0:0]
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:KUBE-SEP-BBB - [0:0]
:KUBE-SEP-OLD - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-AAA - [0:0]
-A KUBE-SEP-BBB -s 10.244.1.11/32 -j KUBE-MARK-MASQ
-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment \"ns/web cluster IP\" -m tcp --dport 80 -j KUBE-SVC-AAA
-A KUBE-SVC-AAA -m comment --comment \"ns/web -> 10.244.1.11:8080\" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-BBB
COMMIT
";

    #[test]
    fn equal_rules_in_the_kernels_spelling_are_left_alone() {
        let d = differing_payload(DESIRED, LIVE_SAME).unwrap();
        assert_eq!(
            d.payload.as_deref(),
            Some("*nat\n:KUBE-SEP-OLD - [0:0]\n-X KUBE-SEP-OLD\nCOMMIT\n")
        );
        assert_eq!((d.unchanged_chains, d.rewritten_chains), (5, 0));
        let no_stale = LIVE_SAME.replace(":KUBE-SEP-OLD - [0:0]\n", "");
        assert_eq!(differing_payload(DESIRED, &no_stale).unwrap().payload, None);
    }

    #[test]
    fn a_changed_or_missing_chain_is_rewritten_whole() {
        let live = LIVE_SAME
            .replace("10.244.1.11/32", "10.244.1.12/32")
            .replace(":KUBE-FORWARD - [0:0]\n", "")
            .replace(
                "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n",
                "",
            );
        let d = differing_payload(DESIRED, &live).unwrap();
        assert_eq!(
            d.payload.as_deref(),
            Some(
                "*filter\n:KUBE-FORWARD - [0:0]\n-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\nCOMMIT\n\
                 *nat\n:KUBE-SEP-BBB - [0:0]\n:KUBE-SEP-OLD - [0:0]\n-A KUBE-SEP-BBB -s 10.244.1.11 -j KUBE-MARK-MASQ\n-X KUBE-SEP-OLD\nCOMMIT\n"
            )
        );
        assert_eq!(d.rewritten_chains, 2);
        // An extra live rule differs too.
        let extra = LIVE_SAME.replace(
            "-A KUBE-SEP-BBB -s",
            "-A KUBE-SEP-BBB -j ACCEPT\n-A KUBE-SEP-BBB -s",
        );
        let d = differing_payload(DESIRED, &extra).unwrap();
        assert!(d.payload.unwrap().contains(":KUBE-SEP-BBB - [0:0]\n"));
    }

    /// An IPv6 node's listing is two saves (filter, then nat) and another program's
    /// comment may name IPv4 addresses: the kernel's text is read as it is, so the nat
    /// save is not dropped as "the other family" and the stale chain is still deleted.
    #[test]
    fn a_kernel_listing_is_not_read_as_a_paste() {
        let desired = "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SEP-OLD - [0:0]\n-A KUBE-SERVICES -d fd00::10/128 -j RETURN\n-X KUBE-SEP-OLD\nCOMMIT\n";
        let live = "# Generated by ip6tables-save v1.8.9\n*filter\n:INPUT ACCEPT [0:0]\n\
            -A INPUT -s fd00::1/128 -m comment --comment \"was -d 10.0.0.1 -d 10.0.0.2 -s 10.0.0.3\" -j ACCEPT\nCOMMIT\n\
            # Generated by ip6tables-save v1.8.9\n*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SEP-OLD - [0:0]\n:KUBE-SERVICES - [0:0]\n\
            -A KUBE-SERVICES -d fd00::10/128 -j RETURN\nCOMMIT\n";
        let d = differing_payload(desired, live).unwrap();
        assert_eq!(
            d.payload.as_deref(),
            Some("*nat\n:KUBE-SEP-OLD - [0:0]\n-X KUBE-SEP-OLD\nCOMMIT\n")
        );
        assert_eq!(d.unchanged_chains, 1);
    }
}
