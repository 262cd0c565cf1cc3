//! A service port's own chains: KUBE-EXT/FW/SVC/SVL/SEP (B7–B12).

use super::port::PortCtx;
use crate::model::endpoint::Endpoint;
use crate::rules::names::ChainKey;
use crate::rules::table::Put;
use crate::rules::table::Table;
use std::fmt::Write as _;

impl PortCtx<'_> {
    /// The per-service chains (B7–B12).
    pub(super) fn write_chains(
        &self,
        probabilities: &[String],
        nat: &mut Table,
        chains: &mut Vec<ChainKey>,
    ) {
        let sp = self.sp;
        let spn = sp.spn.as_str();
        let mut begin = |nat: &mut Table, name: &str| {
            let key = ChainKey::named(name).expect("hashed chain names fit a key");
            chains.push(key);
            nat.begin_chain(key);
        };

        // B8: KUBE-EXT-*
        if self.uses_ext {
            begin(nat, self.ext);
            let b = nat.arena();
            let ext = self.ext;
            if !sp.external_policy_local {
                self.ext_rule(b, ext, "masquerade traffic for");
                b.put(" -j KUBE-MARK-MASQ\n");
            } else {
                if self.opts.local_detector.is_implemented() {
                    self.ext_rule(b, ext, "pod traffic for");
                    self.opts.local_detector.write_match(b, false);
                    b.put(" -j ");
                    b.put(self.svc);
                    b.push('\n');
                }
                self.ext_rule(b, ext, "masquerade LOCAL traffic for");
                b.put(" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ\n");
                self.ext_rule(b, ext, "route LOCAL traffic for");
                b.put(" -m addrtype --src-type LOCAL -j ");
                b.put(self.svc);
                b.push('\n');
            }
            if self.has_external {
                b.put("-A ");
                b.put(ext);
                b.put(" -j ");
                b.put(self.external_policy_chain());
                b.push('\n');
            }
            nat.finish_chain();
        }

        // B9: KUBE-FW-*
        if self.uses_fw {
            begin(nat, self.fw);
            let b = nat.arena();
            let fw = self.fw;
            let mut allow_from_node = false;
            for cidr in &sp.load_balancer_source_ranges {
                self.head(b, fw, "loadbalancer IP");
                let _ = write!(b, " -s {cidr} -j {}", self.ext);
                b.push('\n');
                allow_from_node |= cidr.contains(&self.opts.node_ip);
            }
            if allow_from_node {
                for ip in &sp.load_balancer_vips {
                    self.head(b, fw, "loadbalancer IP");
                    let _ = writeln!(b, " -s {ip} -j {}", self.ext);
                }
            }
            let _ = writeln!(
                b,
                "-A {fw} -m comment --comment \"other traffic to {spn} will be dropped by KUBE-PROXY-FIREWALL\""
            );
            nat.finish_chain();
        }

        // B10 / B11 (with B7 in whichever chain carries internal traffic)
        if self.uses_svc {
            begin(nat, self.svc);
            if !sp.internal_policy_local {
                self.write_masq(nat.arena(), self.svc);
            }
            self.write_dispatch(
                probabilities,
                nat.arena(),
                self.svc,
                &self.categorized.cluster,
            );
            nat.finish_chain();
        }
        if self.uses_svl {
            begin(nat, self.svl);
            if sp.internal_policy_local {
                self.write_masq(nat.arena(), self.svl);
            }
            self.write_dispatch(
                probabilities,
                nat.arena(),
                self.svl,
                &self.categorized.local,
            );
            nat.finish_chain();
        }

        // B12: KUBE-SEP-*
        for ep in self.categorized.all_reachable() {
            begin(nat, &ep.sep_chain);
            let b = nat.arena();
            let sep = ep.sep_chain.as_str();
            b.put("-A ");
            b.put(sep);
            self.sep_comment(b);
            b.put(" -s ");
            b.put(&ep.ip);
            b.put(" -j KUBE-MARK-MASQ\n-A ");
            b.put(sep);
            self.sep_comment(b);
            if sp.affinity_timeout.is_some() {
                b.put(" -m recent --name ");
                b.put(sep);
                b.put(" --set");
            }
            self.match_protocol(b);
            b.put(" -j DNAT --to-destination ");
            b.put(&ep.endpoint);
            b.push('\n');
            nat.finish_chain();
        }
    }

    pub(super) fn sep_comment(&self, b: &mut String) {
        if !self.large {
            b.put(" -m comment --comment ");
            b.put(&self.sp.spn);
        }
    }

    pub(super) fn ext_rule(&self, b: &mut String, ext: &str, what: &str) {
        b.put("-A ");
        b.put(ext);
        b.put(" -m comment --comment \"");
        b.put(what);
        b.push(' ');
        b.put(&self.sp.spn);
        b.put(" external destinations\"");
    }

    /// B7: masquerade off-cluster traffic to the ClusterIP.
    pub(super) fn write_masq(&self, b: &mut String, chain: &str) {
        if !self.has_internal {
            return;
        }
        let detector = &self.opts.local_detector;
        if !self.opts.masquerade_all && !detector.is_implemented() {
            return;
        }
        self.head(b, chain, "cluster IP");
        self.match_dest(b, self.cluster_ip, self.port);
        if !self.opts.masquerade_all {
            detector.write_match(b, true);
        }
        b.put(" -j KUBE-MARK-MASQ\n");
    }

    /// Affinity rules, then the probability ladder (§3.12, §3.13).
    pub(super) fn write_dispatch(
        &self,
        probabilities: &[String],
        b: &mut String,
        chain: &str,
        eps: &[&Endpoint],
    ) {
        if let Some(timeout) = self.sp.affinity_timeout {
            let timeout = timeout.to_string();
            for ep in eps {
                self.dispatch_head(b, chain, ep);
                b.put(" -m recent --name ");
                b.put(&ep.sep_chain);
                b.put(" --rcheck --seconds ");
                b.put(&timeout);
                b.put(" --reap -j ");
                b.put(&ep.sep_chain);
                b.push('\n');
            }
        }
        let n = eps.len();
        for (i, ep) in eps.iter().enumerate() {
            self.dispatch_head(b, chain, ep);
            if i + 1 < n {
                b.put(" -m statistic --mode random --probability ");
                b.put(&probabilities[n - i]);
            }
            b.put(" -j ");
            b.put(&ep.sep_chain);
            b.push('\n');
        }
    }

    pub(super) fn dispatch_head(&self, b: &mut String, chain: &str, ep: &Endpoint) {
        b.put("-A ");
        b.put(chain);
        if !self.large {
            b.put(" -m comment --comment \"");
            b.put(&self.sp.spn);
            b.put(" -> ");
            b.put(&ep.endpoint);
            b.push('"');
        }
    }
}
