//! The daemon's record of the nat chains in the kernel, so that stale-chain deletion does
//! not have to list the table (`iptables-save -t nat`) on every sync: on iptables-nft at
//! 10,000 Services that listing is most of a sync.
//!
//! Every chain the kernel gains or loses between two listings comes from our own payloads
//! (declared chains exist afterwards, `-X` removes them), so the record stays exact as long
//! as no one else edits the table. The proxier forgets it, and lists again, at start, after
//! a failed restore (the outcome is unknown) and when the canary says the table was flushed.
//! A chain a third party creates between listings is therefore deleted at the next listing
//! rather than at the next sync (documented in README.md).

use crate::rules::names::ChainKey;
use std::collections::HashSet;

#[derive(Debug, Default)]
pub struct ChainRecord {
    /// `None`: unknown, the next stale-chain deletion must list the table.
    present: Option<HashSet<ChainKey>>,
}

impl ChainRecord {
    /// The nat chains the kernel holds, if known.
    pub fn known(&self) -> Option<&HashSet<ChainKey>> {
        self.present.as_ref()
    }

    /// A listing of the table's chains.
    pub fn listed(&mut self, chains: HashSet<ChainKey>) {
        self.present = Some(chains);
    }

    /// The kernel may hold anything now (flushed table, failed restore, start).
    pub fn forget(&mut self) {
        self.present = None;
    }

    /// A restore of a payload declaring `chains` (with whether each was `-X`-ed) succeeded.
    pub fn applied(&mut self, chains: impl Iterator<Item = (ChainKey, bool)>) {
        let Some(present) = self.present.as_mut() else {
            return;
        };
        for (k, deleted) in chains {
            if deleted {
                present.remove(&k);
            } else {
                present.insert(k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> ChainKey {
        ChainKey::named(s).unwrap()
    }

    #[test]
    fn declared_chains_appear_and_deleted_ones_go() {
        let mut r = ChainRecord::default();
        r.applied([(key("KUBE-SVC-A"), false)].into_iter());
        assert!(r.known().is_none(), "nothing to update while unknown");
        r.listed([key("KUBE-SVC-A"), key("KUBE-SEP-B")].into_iter().collect());
        r.applied([(key("KUBE-SVC-C"), false), (key("KUBE-SEP-B"), true)].into_iter());
        let want: HashSet<_> = [key("KUBE-SVC-A"), key("KUBE-SVC-C")].into_iter().collect();
        assert_eq!(r.known(), Some(&want));
        r.forget();
        assert!(r.known().is_none());
    }
}
