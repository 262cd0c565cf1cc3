//! Opt-in minimal partial syncs (`--iptables-minimal-restore`): a partial payload cut down
//! to the chains whose rules changed since the last successful sync.
//!
//! Upstream's partial payload rewrites every shared chain (KUBE-SERVICES, KUBE-NODEPORTS,
//! the filter chains) on each sync: 1.76 MB for one endpoint change at 10,000 Services.
//! `iptables-restore --noflush` leaves undeclared chains alone, so dropping a chain whose
//! rules are the ones the kernel already holds (as written by our own earlier payloads)
//! leaves the same tables. The record is a hash of each chain's rule lines as last
//! written; it is rebuilt from every full payload and forgotten after a failed restore.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hasher};

/// `(table, chain)` → hash of the chain's `-A` lines, in payload order.
type Contents = HashMap<(String, String), u64>;

/// What the kernel's KUBE chains hold, as far as our payloads tell.
#[derive(Debug, Default)]
pub struct ChainContents {
    /// `None`: unknown (start, failed restore): partial syncs write the default payload.
    known: Option<Contents>,
}

/// A partial payload cut down by [`ChainContents::minimal`].
#[derive(Debug, PartialEq, Eq)]
pub struct Minimal {
    /// The payload to restore; empty when no chain changed (nothing to restore).
    pub payload: String,
    /// For each line of `payload`, its line number (1-based) in the partial payload.
    pub origin: Vec<usize>,
    /// Chains declared by the partial payload, and their new content (`None`: `-X`-ed).
    written: Vec<((String, String), Option<u64>)>,
    /// Declared chains left out because their rules are unchanged.
    pub unchanged_chains: usize,
}

/// What one payload line is.
#[derive(Clone, Copy)]
enum Line<'a> {
    /// `*table`, `COMMIT` or anything else: kept with its table.
    Frame,
    Declare(&'a str),
    Rule(&'a str),
    Delete(&'a str),
}

/// One table of a payload: its name, declared chains and their rules' hashes.
struct Table<'a> {
    name: &'a str,
    declared: Vec<&'a str>,
    hashes: HashMap<&'a str, DefaultHasher>,
    deleted: HashSet<&'a str>,
}

/// Each line's kind and table (index into the tables), and the tables.
fn scan<'a>(lines: &[&'a str]) -> (Vec<(Line<'a>, usize)>, Vec<Table<'a>>) {
    let mut tables: Vec<Table> = Vec::new();
    let mut kinds = Vec::with_capacity(lines.len());
    for l in lines {
        if let Some(name) = l.strip_prefix('*') {
            tables.push(Table {
                name,
                declared: Vec::new(),
                hashes: HashMap::new(),
                deleted: HashSet::new(),
            });
            kinds.push((Line::Frame, tables.len() - 1));
            continue;
        }
        let Some(t) = tables.last_mut() else {
            kinds.push((Line::Frame, usize::MAX));
            continue;
        };
        let kind = if let Some((chain, _)) = l.strip_prefix(':').and_then(|r| r.split_once(' ')) {
            t.declared.push(chain);
            t.hashes.entry(chain).or_default();
            Line::Declare(chain)
        } else if let Some(rest) = l.strip_prefix("-A ") {
            let chain = rest.split_once(' ').map_or(rest, |(c, _)| c);
            let h = t.hashes.entry(chain).or_default();
            h.write(l.as_bytes());
            h.write_u8(b'\n');
            Line::Rule(chain)
        } else if let Some(chain) = l.strip_prefix("-X ") {
            let chain = chain.trim();
            t.deleted.insert(chain);
            Line::Delete(chain)
        } else {
            Line::Frame
        };
        kinds.push((kind, tables.len() - 1));
    }
    (kinds, tables)
}

fn key(table: &str, chain: &str) -> (String, String) {
    (table.to_string(), chain.to_string())
}

impl ChainContents {
    pub fn is_known(&self) -> bool {
        self.known.is_some()
    }

    /// The kernel may hold anything (failed restore, flushed table).
    pub fn forget(&mut self) {
        self.known = None;
    }

    /// A full payload was restored (or the kernel was made equal to it): every chain it
    /// declares now holds its rules, and the record starts over from it.
    pub fn full_applied(&mut self, payload: &str) {
        let lines: Vec<&str> = payload.lines().collect();
        let mut known = Contents::new();
        for t in scan(&lines).1 {
            for (chain, h) in t.hashes {
                if !t.deleted.contains(chain) {
                    known.insert(key(t.name, chain), h.finish());
                }
            }
        }
        self.known = Some(known);
    }

    /// The part of `partial` (a default partial payload) that changes the kernel: per
    /// table, declarations and rules of the chains whose rules differ from the record,
    /// plus every stale-chain deletion (declared and `-X`-ed, as in `partial`); a table
    /// with none of these is left out. `None` while the record is unknown.
    pub fn minimal(&self, partial: &str) -> Option<Minimal> {
        let known = self.known.as_ref()?;
        let lines: Vec<&str> = partial.lines().collect();
        let (kinds, tables) = scan(&lines);
        let mut out = Minimal {
            payload: String::new(),
            origin: Vec::new(),
            written: Vec::new(),
            unchanged_chains: 0,
        };
        let mut changed: Vec<HashSet<&str>> = Vec::with_capacity(tables.len());
        for t in &tables {
            let mut set = HashSet::new();
            for &chain in &t.declared {
                let k = key(t.name, chain);
                if t.deleted.contains(chain) {
                    set.insert(chain);
                    out.written.push((k, None));
                    continue;
                }
                let h = t.hashes[chain].finish();
                if known.get(&k) == Some(&h) {
                    out.unchanged_chains += 1;
                } else {
                    set.insert(chain);
                    out.written.push((k, Some(h)));
                }
            }
            changed.push(set);
        }
        for (i, (l, &(kind, t))) in lines.iter().zip(&kinds).enumerate() {
            let keep = match kind {
                // A table's frame only if the table keeps a chain.
                Line::Frame => changed.get(t).is_none_or(|s| !s.is_empty()),
                Line::Declare(c) | Line::Rule(c) | Line::Delete(c) => changed[t].contains(c),
            };
            if keep {
                out.payload.push_str(l);
                out.payload.push('\n');
                out.origin.push(i + 1);
            }
        }
        if changed.iter().all(HashSet::is_empty) {
            out.payload.clear();
            out.origin.clear();
        }
        Some(out)
    }

    /// A [`ChainContents::minimal`] payload (or the partial payload it came from) was
    /// restored.
    pub fn applied(&mut self, m: Minimal) {
        let Some(known) = self.known.as_mut() else {
            return;
        };
        for (k, h) in m.written {
            match h {
                Some(h) => known.insert(k, h),
                None => known.remove(&k),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "*filter
:KUBE-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
-A KUBE-FORWARD -j ACCEPT
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-A - [0:0]
:KUBE-SEP-A1 - [0:0]
-A KUBE-SERVICES -d 10.96.0.1 -j KUBE-SVC-A
-A KUBE-SVC-A -j KUBE-SEP-A1
-A KUBE-SEP-A1 -j DNAT --to-destination 10.0.0.1:80
COMMIT
";

    #[test]
    fn unknown_record_cuts_nothing() {
        assert_eq!(ChainContents::default().minimal(FULL), None);
    }

    #[test]
    fn only_changed_chains_and_deletions_are_kept() {
        let mut c = ChainContents::default();
        c.full_applied(FULL);
        // A second endpoint for A: SVC-A changes, SEP-A2 is new, the shared chains and
        // the whole filter table are as before; SEP-OLD is stale.
        let partial = "*filter
:KUBE-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
-A KUBE-FORWARD -j ACCEPT
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-A - [0:0]
:KUBE-SEP-A1 - [0:0]
:KUBE-SEP-A2 - [0:0]
:KUBE-SEP-OLD - [0:0]
-A KUBE-SERVICES -d 10.96.0.1 -j KUBE-SVC-A
-A KUBE-SVC-A -m statistic --mode random --probability 0.5 -j KUBE-SEP-A1
-A KUBE-SVC-A -j KUBE-SEP-A2
-A KUBE-SEP-A1 -j DNAT --to-destination 10.0.0.1:80
-A KUBE-SEP-A2 -j DNAT --to-destination 10.0.0.2:80
-X KUBE-SEP-OLD
COMMIT
";
        let m = c.minimal(partial).unwrap();
        assert_eq!(
            m.payload,
            "*nat
:KUBE-SVC-A - [0:0]
:KUBE-SEP-A2 - [0:0]
:KUBE-SEP-OLD - [0:0]
-A KUBE-SVC-A -m statistic --mode random --probability 0.5 -j KUBE-SEP-A1
-A KUBE-SVC-A -j KUBE-SEP-A2
-A KUBE-SEP-A2 -j DNAT --to-destination 10.0.0.2:80
-X KUBE-SEP-OLD
COMMIT
"
        );
        assert_eq!(m.origin, [6, 8, 10, 11, 13, 14, 16, 17, 18]);
        assert_eq!(m.unchanged_chains, 4);
        c.applied(m);
        // Applied: the same partial again changes nothing but the deletion.
        let again = c.minimal(partial).unwrap();
        assert_eq!(
            again.payload,
            "*nat\n:KUBE-SEP-OLD - [0:0]\n-X KUBE-SEP-OLD\nCOMMIT\n"
        );
        let quiet = partial
            .replace(":KUBE-SEP-OLD - [0:0]\n", "")
            .replace("-X KUBE-SEP-OLD\n", "");
        assert_eq!(c.minimal(&quiet).unwrap().payload, "");
    }

    #[test]
    fn a_shared_chain_that_changed_is_rewritten_whole_in_its_table_only() {
        let mut c = ChainContents::default();
        c.full_applied(FULL);
        let partial = FULL.replace(
            "-A KUBE-SERVICES -d 10.96.0.1 -j KUBE-SVC-A\n",
            "-A KUBE-SERVICES -d 10.96.0.1 -j KUBE-SVC-A\n-A KUBE-SERVICES -j KUBE-NODEPORTS\n",
        );
        let m = c.minimal(&partial).unwrap();
        assert_eq!(
            m.payload,
            "*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -d 10.96.0.1 -j KUBE-SVC-A\n-A KUBE-SERVICES -j KUBE-NODEPORTS\nCOMMIT\n"
        );
        // A forgotten record cuts nothing until the next full payload.
        c.forget();
        assert!(c.minimal(&partial).is_none());
    }
}
