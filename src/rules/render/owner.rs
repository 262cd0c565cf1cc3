//! Which Service wrote a payload line: how a sync finds the Service whose rules
//! iptables-restore rejected (see `sync::proxier`).

use super::{RenderStats, Renderer};
use crate::model::{ClusterModel, NsName};
use crate::rules::names::{ChainKey, ChainKind};

impl Renderer {
    /// The Service whose rules make line `line` (1-based, as iptables-restore counts) of
    /// the last payload, and that line's text. `model` must be the model rendered. Cold
    /// path (a restore failed): the payload is written again to find the line.
    pub fn line_owner<'m>(
        &mut self,
        model: &'m ClusterModel,
        line: usize,
    ) -> Option<(&'m NsName, String)> {
        let mut payload = String::new();
        self.write_payload(&mut payload, &mut RenderStats::default());
        let (mut table, mut run_chain, mut run_start, mut offset) = ("", "", 0, 0);
        let mut found = None;
        for (i, text) in payload.split_inclusive('\n').enumerate() {
            let start = offset;
            offset += text.len();
            let t = text.trim_end_matches('\n');
            if let Some(name) = t.strip_prefix('*') {
                table = name;
            }
            // A chain's rules are contiguous: offsets count from its first rule.
            let chain = t.strip_prefix("-A ").and_then(|r| r.split(' ').next());
            match chain {
                Some(c) if c == run_chain => {}
                Some(c) => (run_chain, run_start) = (c, start),
                None => run_chain = "",
            }
            if i + 1 == line {
                found = Some((table, t, chain, start - run_start));
                break;
            }
        }
        let (table, text, chain, within) = found?;
        let index = match chain {
            Some(c) => self.rule_owner(table, c, within)?,
            None => self.chain_owner(table, text.strip_prefix(':')?.split(' ').next()?)?,
        };
        let name = model.services.keys().nth(index)?;
        Some((name, text.to_string()))
    }

    /// Owner of the rule `within` bytes into the body of `chain`.
    fn rule_owner(&self, table: &str, chain: &str, within: usize) -> Option<usize> {
        let slot = match (table, chain) {
            ("filter", "KUBE-SERVICES") => 0,
            ("filter", "KUBE-EXTERNAL-SERVICES") => 1,
            ("filter", "KUBE-NODEPORTS") => 2,
            ("filter", "KUBE-PROXY-FIREWALL") => 3,
            ("nat", "KUBE-SERVICES") => 4,
            ("nat", "KUBE-NODEPORTS") => 5,
            _ => return self.chain_owner(table, chain),
        };
        for (p, part) in self.parts[..self.used_parts].iter().enumerate() {
            let base = self.part_bases[p][slot] as usize;
            let len = if slot < 4 {
                part.filter.named_buf(slot).len()
            } else {
                part.nat.named_buf(slot - 4).len()
            };
            if (base..base + len).contains(&within) {
                let local = within - base;
                let i = part
                    .marks
                    .partition_point(|m| m.shared[slot] as usize <= local);
                return Some(self.part_starts[p] + i.checked_sub(1)?);
            }
        }
        // The NodePort tail and fixed rules belong to no Service.
        None
    }

    /// Owner of a per-service nat chain written by the last render.
    fn chain_owner(&self, table: &str, chain: &str) -> Option<usize> {
        if table != "nat" || !ChainKind::is_owned(chain) {
            return None;
        }
        let key = ChainKey::named(chain)?;
        for (p, part) in self.parts[..self.used_parts].iter().enumerate() {
            if let Some(r) = part.nat.range_position(key) {
                let i = part.marks.partition_point(|m| m.ranges as usize <= r);
                return Some(self.part_starts[p] + i.checked_sub(1)?);
            }
        }
        None
    }
}
