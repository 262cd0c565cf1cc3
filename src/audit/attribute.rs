//! Which service port a rule or chain belongs to (`ns/name:port proto`), for grouping
//! the findings of `diff`: from the rendered model's chain names, from the comments of
//! the node's rules, and for uncommented chains (large-cluster mode) from the rules
//! jumping to them.

use super::owner::is_shared_chain;
use super::parse::{Chain, Rule, Table};
use crate::model::ClusterModel;
use crate::rules::names::{ChainHash, ChainKind};
use std::collections::HashMap;

/// Chain name → `ns/name:port proto` for every chain of the rendered model.
pub type Labels = HashMap<String, String>;

/// Display label of a service port: `ns/name:port tcp` (`ns/name tcp` when unnamed).
pub fn port_label(spn: &str, proto: &str) -> String {
    format!("{spn} {proto}")
}

/// Chain → service port, for the chains of the model and, for unnamed ports, the chains
/// the same port had under the `ns/name:` hash input of older releases (so their leftovers
/// are grouped with the port).
pub fn model_labels(model: &ClusterModel) -> Labels {
    let mut l = Labels::new();
    for sp in model.services.values().flat_map(|p| p.iter()) {
        let proto = sp.protocol.as_str();
        let label = port_label(&sp.spn, proto);
        for c in [
            &sp.chains.svc,
            &sp.chains.svl,
            &sp.chains.ext,
            &sp.chains.fw,
        ] {
            l.insert(c.clone(), label.clone());
        }
        for ep in sp.endpoints.iter() {
            l.insert(ep.sep_chain.clone(), label.clone());
        }
        // Releases before 1.24 had KUBE-XLB where KUBE-SVL/EXT are now.
        if let Some(h) = sp.chains.svc.strip_prefix("KUBE-SVC-") {
            l.entry(format!("KUBE-XLB-{h}"))
                .or_insert_with(|| label.clone());
        }
        if sp.port_name.is_empty() {
            let old = format!("{}:", sp.spn);
            let h = ChainHash::of(&[&old, proto]);
            for k in [
                ChainKind::Svc,
                ChainKind::Svl,
                ChainKind::Ext,
                ChainKind::Fw,
            ] {
                l.entry(h.chain_name(k)).or_insert_with(|| label.clone());
            }
            l.entry(format!("KUBE-XLB-{}", h.as_str()))
                .or_insert_with(|| label.clone());
            for ep in sp.endpoints.iter() {
                let h = ChainHash::of(&[&old, proto, &ep.endpoint]);
                l.entry(h.chain_name(ChainKind::Sep))
                    .or_insert_with(|| label.clone());
            }
        }
    }
    l
}

/// `ns/name:port` from a kube-proxy comment, if it names one.
pub fn comment_spn(comment: &str) -> Option<&str> {
    let c = comment.trim();
    let word = match c.find(" for ") {
        Some(i)
            if c.starts_with("masquerade")
                || c.starts_with("pod traffic")
                || c.starts_with("route LOCAL") =>
        {
            c[i + 5..].split(' ').next()?
        }
        _ => c.split(' ').next()?,
    };
    (word.contains('/') && !word.starts_with('/')).then_some(word)
}

/// [`comment_spn`] with the `ns/name:` of older releases' unnamed ports read as `ns/name`.
pub fn comment_port(comment: &str) -> Option<&str> {
    comment_spn(comment).map(|s| s.strip_suffix(':').unwrap_or(s))
}

/// Attribution of rules to service ports.
pub(super) struct Attributor<'a> {
    labels: &'a Labels,
    /// spn → labels with that spn (to add the protocol when a rule has no `-p`).
    by_spn: HashMap<&'a str, Vec<&'a str>>,
    /// Live-only chains → label from their comments.
    live: HashMap<String, String>,
}

impl<'a> Attributor<'a> {
    pub(super) fn new(labels: &'a Labels) -> Self {
        let mut by_spn: HashMap<&str, Vec<&str>> = HashMap::new();
        for l in labels.values() {
            if let Some((spn, _)) = l.rsplit_once(' ') {
                let v = by_spn.entry(spn).or_default();
                if !v.contains(&l.as_str()) {
                    v.push(l);
                }
            }
        }
        Attributor {
            labels,
            by_spn,
            live: HashMap::new(),
        }
    }

    fn label_from_comment(&self, r: &Rule) -> Option<String> {
        let spn = comment_port(r.spec.comment()?)?;
        if let Some(p) = &r.spec.proto {
            return Some(port_label(spn, &p.value));
        }
        match self.by_spn.get(spn).map(Vec::as_slice) {
            Some([one]) => Some(one.to_string()),
            _ => Some(spn.to_string()),
        }
    }

    /// Learns labels for chains only the node has, from their rules' comments.
    pub(super) fn learn_live(&mut self, t: &Table) {
        for c in &t.chains {
            if ChainKind::is_owned(&c.name) && !self.labels.contains_key(&c.name) {
                if let Some(l) = c.rules.iter().find_map(|r| self.label_from_comment(r)) {
                    self.live.insert(c.name.clone(), l);
                }
            }
        }
        // Chains without comments (large-cluster mode) from the rules jumping to them.
        for c in &t.chains {
            for r in &c.rules {
                if let Some(tg) = r.spec.target_name() {
                    if ChainKind::is_owned(tg)
                        && !self.labels.contains_key(tg)
                        && !self.live.contains_key(tg)
                    {
                        if let Some(l) = self.chain_label(&c.name) {
                            self.live.insert(tg.to_string(), l);
                        }
                    }
                }
            }
        }
    }

    fn chain_label(&self, chain: &str) -> Option<String> {
        self.labels
            .get(chain)
            .or_else(|| self.live.get(chain))
            .cloned()
    }

    /// The service port a rule belongs to; `""` for the fixed chains.
    pub(super) fn rule(&self, chain: &str, r: &Rule) -> String {
        if let Some(l) = self.chain_label(chain) {
            return l;
        }
        if let Some(l) = r.spec.target_name().and_then(|t| self.chain_label(t)) {
            return l;
        }
        if is_shared_chain(chain) {
            if let Some(l) = self.label_from_comment(r) {
                return l;
            }
        }
        String::new()
    }

    pub(super) fn chain(&self, chain: &Chain) -> String {
        self.chain_label(&chain.name).unwrap_or_default()
    }
}
