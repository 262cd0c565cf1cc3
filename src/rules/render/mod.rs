//! The renderer: model + options → iptables-restore payload (spec §3), canonical order.

use super::names::{ChainKey, ChainKind};
use super::options::ProxierOptions;
use super::table::{Out, Table};
use crate::model::ip::IpFamily;
use crate::model::service::ServicePort;
use crate::model::{ClusterModel, NsName};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;

mod chains;
mod memo;
mod owner;
mod part;
mod port;
mod shared;

use memo::{Inputs, Memo};
use part::{Part, PARALLEL_MIN_ENDPOINTS};

/// More endpoints than this switches to large-cluster mode (§3.18).
pub const LARGE_CLUSTER_ENDPOINTS: usize = 1000;

const NODEPORTS_COMMENT: &str =
    "\"kubernetes service nodeports; NOTE: this must be the last rule in this chain\"";

/// What one sync asks of the renderer.
#[derive(Clone, Copy, Debug)]
pub struct SyncRequest<'a> {
    /// `None` = full sync; `Some(changed)` = partial sync that rewrites only the
    /// per-service chains of these Services.
    pub partial: Option<&'a HashSet<NsName>>,
    /// nat chains present in the kernel; `None` skips stale-chain deletion.
    pub existing_nat_chains: Option<&'a HashSet<ChainKey>>,
}

impl SyncRequest<'_> {
    pub const FULL: SyncRequest<'static> = SyncRequest {
        partial: None,
        existing_nat_chains: None,
    };
}

/// Figures of one render, for logs and metrics (§6.6).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RenderStats {
    pub filter_rules: usize,
    /// nat rule lines written, `-X` lines included.
    pub nat_rules: usize,
    /// nat rule lines a partial sync computed but did not write.
    pub nat_rules_skipped: usize,
    pub deleted_chains: usize,
    pub large_cluster_mode: bool,
    pub no_local_endpoints_internal: usize,
    pub no_local_endpoints_external: usize,
    /// For the "Reloading service iptables data" line: chain declarations written per
    /// table, service ports and endpoints of the model.
    pub filter_chains: usize,
    pub nat_chains: usize,
    pub service_ports: usize,
    pub endpoints: usize,
}

pub struct RenderOutput {
    pub payload: String,
    pub stats: RenderStats,
}

/// Keeps what is worth keeping between renders: probability strings and the tables'
/// buffers (a large cluster's payload is tens of MB; reusing them saves the page faults).
pub struct Renderer {
    probabilities: Vec<String>,
    filter: Table,
    nat: Table,
    parts: Vec<Part>,
    /// Parts holding the last render.
    used_parts: usize,
    /// Per part: index (in `model.services` order) of its first Service, and where its
    /// shared-chain text starts in the merged buffers (slots of [`Mark::shared`]).
    part_starts: Vec<usize>,
    part_bases: Vec<[u32; 6]>,
    max_workers: usize,
    /// The last render's per-Service results, reused by partial syncs.
    memo: Memo,
}

/// Where one Service's text starts in its part: the lengths of the shared-chain buffers
/// (filter KUBE-SERVICES, KUBE-EXTERNAL-SERVICES, KUBE-NODEPORTS, KUBE-PROXY-FIREWALL,
/// nat KUBE-SERVICES, KUBE-NODEPORTS) and the number of nat chain ranges. One small push
/// per Service lets a failing payload line be traced back to its Service. The counts so
/// far (chain names, rule lines of the Service chains, ports without local endpoints)
/// give each Service's own for the memo.
#[derive(Clone, Copy)]
struct Mark {
    shared: [u32; 6],
    ranges: u32,
    chains: u32,
    lines: u32,
    no_local: [u32; 2],
}

/// Slots of the six merged shared chains in the renderer's tables (declaration order of
/// [`Renderer::render_tables`]): filter KUBE-SERVICES, KUBE-EXTERNAL-SERVICES,
/// KUBE-NODEPORTS, KUBE-PROXY-FIREWALL, then nat KUBE-SERVICES, KUBE-NODEPORTS.
/// A contiguous run of Services in canonical order, with their shared ports.
type Run<'a> = [(&'a NsName, &'a Arc<Vec<ServicePort>>)];

const FILTER_SHARED: [usize; 4] = [0, 1, 3, 4];
const NAT_SHARED: [usize; 2] = [0, 1];

impl Default for Renderer {
    fn default() -> Self {
        Renderer {
            probabilities: Vec::new(),
            filter: Table::new("filter"),
            nat: Table::new("nat"),
            parts: Vec::new(),
            used_parts: 0,
            part_starts: Vec::new(),
            part_bases: Vec::new(),
            max_workers: std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(4),
            memo: Memo::default(),
        }
    }
}

impl Renderer {
    pub fn new() -> Renderer {
        Renderer::default()
    }

    /// Caps the threads a large render uses (the output never depends on it).
    pub fn with_max_workers(mut self, n: usize) -> Renderer {
        self.max_workers = n.max(1);
        self
    }

    /// Drops the tables' buffers. A daemon calls this after each sync: keeping tens of MB
    /// for the next full sync would save only page faults, a few ms next to the restore.
    pub fn release_buffers(&mut self) {
        self.take_memo_shared();
        self.filter = Table::new("filter");
        self.nat = Table::new("nat");
        self.parts = Vec::new();
        self.used_parts = 0;
    }

    /// Moves the last render's merged shared-chain text to the memo (before the tables
    /// are cleared or dropped).
    fn take_memo_shared(&mut self) {
        if !self.memo.shared_pending() {
            return;
        }
        if self.filter.named_len() < 5 || self.nat.named_len() < 2 {
            self.memo.clear();
            return;
        }
        let (f, n) = (&mut self.filter, &mut self.nat);
        let [a, b, c, d] = f.bufs_mut(FILTER_SHARED);
        let [e, g] = n.bufs_mut(NAT_SHARED);
        self.memo.take_shared([a, b, c, d, e, g]);
    }

    /// Makes `probabilities[k]` = `1/k` printed like Go's `%0.10f`, for every k <= n.
    fn ensure_probabilities(&mut self, n: usize) {
        while self.probabilities.len() <= n {
            let n = self.probabilities.len();
            let s = if n == 0 {
                String::new()
            } else {
                format!("{:.10}", 1.0 / n as f64)
            };
            self.probabilities.push(s);
        }
    }

    pub fn render(
        &mut self,
        model: &ClusterModel,
        opts: &ProxierOptions,
        req: SyncRequest,
    ) -> RenderOutput {
        let mut payload = String::new();
        let stats = self.render_into(model, opts, req, &mut payload);
        RenderOutput { payload, stats }
    }

    /// Like [`Renderer::render`], writing into `payload` (cleared first) so that a caller
    /// syncing repeatedly reuses one buffer.
    pub fn render_into(
        &mut self,
        model: &ClusterModel,
        opts: &ProxierOptions,
        req: SyncRequest,
        payload: &mut String,
    ) -> RenderStats {
        let mut stats = self.render_tables(model, opts, req);
        payload.clear();
        payload.reserve(self.approx_payload_len());
        self.write_payload(payload, &mut stats);
        stats
    }

    /// Renders into the tables without writing the payload: [`Renderer::write_payload`]
    /// does that, into a string or straight into iptables-restore's stdin.
    pub fn render_tables(
        &mut self,
        model: &ClusterModel,
        opts: &ProxierOptions,
        req: SyncRequest,
    ) -> RenderStats {
        let mark = opts.mark();
        let mut stats = RenderStats::default();
        self.take_memo_shared();
        let mut filter = std::mem::replace(&mut self.filter, Table::new("filter"));
        let mut nat = std::mem::replace(&mut self.nat, Table::new("nat"));
        filter.clear();
        nat.clear();

        let f_services = filter.declare("KUBE-SERVICES");
        let f_external = filter.declare("KUBE-EXTERNAL-SERVICES");
        let f_forward = filter.declare("KUBE-FORWARD");
        let f_nodeports = filter.declare("KUBE-NODEPORTS");
        let f_firewall = filter.declare("KUBE-PROXY-FIREWALL");
        let n_services = nat.declare("KUBE-SERVICES");
        let n_nodeports = nat.declare("KUBE-NODEPORTS");
        debug_assert_eq!(
            [f_services, f_external, f_nodeports, f_firewall],
            FILTER_SHARED
        );
        debug_assert_eq!([n_services, n_nodeports], NAT_SHARED);
        let n_postrouting = nat.declare("KUBE-POSTROUTING");
        let n_markmasq = nat.declare("KUBE-MARK-MASQ");

        {
            let b = nat.buf(n_postrouting);
            let _ = write!(
                b,
                "-A KUBE-POSTROUTING -m mark ! --mark {mark}/{mark} -j RETURN\n\
                 -A KUBE-POSTROUTING -j MARK --xor-mark {mark}\n\
                 -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE{}\n",
                if opts.random_fully { " --random-fully" } else { "" }
            );
            let _ = writeln!(
                nat.buf(n_markmasq),
                "-A KUBE-MARK-MASQ -j MARK --or-mark {mark}"
            );
        }
        if opts.family == IpFamily::V4 && opts.localhost_nodeports {
            let s = filter.declare("KUBE-FIREWALL");
            filter.buf(s).push_str(
                "-A KUBE-FIREWALL -m comment --comment \"block incoming localnet connections\" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP\n",
            );
        }

        let total_endpoints = model.total_endpoints();
        stats.large_cluster_mode = total_endpoints > LARGE_CLUSTER_ENDPOINTS;
        stats.endpoints = total_endpoints;
        stats.service_ports = model.services.values().map(|p| p.len()).sum();
        let max_endpoints = model
            .services
            .values()
            .flat_map(|p| p.iter())
            .map(|sp| sp.endpoints.len())
            .max();
        self.ensure_probabilities(max_endpoints.unwrap_or(0));
        let zone = model.node.as_ref().and_then(|n| n.zone());

        // Services in canonical order, cut into runs of about equal endpoint counts.
        let services: Vec<(&NsName, &Arc<Vec<ServicePort>>)> = model.services.iter().collect();
        // Capped by `with_max_workers`: tests compare renders on 1..n threads.
        let workers = if total_endpoints >= PARALLEL_MIN_ENDPOINTS {
            self.max_workers
        } else {
            1
        };
        let mut cuts = vec![0];
        let mut seen = 0;
        for (i, (_, ports)) in services.iter().enumerate() {
            seen += ports.iter().map(|sp| sp.endpoints.len() + 1).sum::<usize>();
            if seen * workers >= (total_endpoints + services.len()) * cuts.len()
                && cuts.len() < workers
            {
                cuts.push(i + 1);
            }
        }
        cuts.push(services.len());
        cuts.dedup();
        let runs: Vec<&Run> = cuts.windows(2).map(|w| &services[w[0]..w[1]]).collect();
        while self.parts.len() < runs.len() {
            self.parts.push(Part::new());
        }
        let parts = &mut self.parts[..runs.len()];
        let probabilities = &self.probabilities;
        let large = stats.large_cluster_mode;
        let inputs = Inputs {
            opts: opts.clone(),
            zone: zone.map(str::to_string),
            large,
        };
        // A full sync renders everything; a partial one copies unchanged Services.
        let lookup = req.partial.and_then(|_| self.memo.lookup(&inputs));
        let memo = lookup.as_ref();
        if let ([part], [run]) = (&mut *parts, runs.as_slice()) {
            part.render(run, opts, req, zone, large, probabilities, memo);
        } else {
            std::thread::scope(|scope| {
                for (part, run) in parts.iter_mut().zip(&runs) {
                    scope.spawn(move || {
                        part.render(run, opts, req, zone, large, probabilities, memo)
                    });
                }
            });
        }
        drop(lookup);
        let parts = &self.parts[..runs.len()];

        // Shared chains: each part holds a contiguous run of the canonical order.
        self.part_starts.clear();
        self.part_starts.extend_from_slice(&cuts[..runs.len()]);
        self.part_bases.clear();
        for (main, slot) in [
            (f_services, 0),
            (f_external, 1),
            (f_nodeports, 2),
            (f_firewall, 3),
        ] {
            let total = parts.iter().map(|p| p.filter.named_buf(slot).len()).sum();
            filter.buf(main).reserve(total);
        }
        for (main, slot) in [(n_services, 0), (n_nodeports, 1)] {
            let total = parts.iter().map(|p| p.nat.named_buf(slot).len()).sum();
            nat.buf(main).reserve(total);
        }
        for part in parts {
            self.part_bases.push([
                filter.buf(f_services).len() as u32,
                filter.buf(f_external).len() as u32,
                filter.buf(f_nodeports).len() as u32,
                filter.buf(f_firewall).len() as u32,
                nat.buf(n_services).len() as u32,
                nat.buf(n_nodeports).len() as u32,
            ]);
            for (main, slot) in [
                (f_services, 0),
                (f_external, 1),
                (f_nodeports, 2),
                (f_firewall, 3),
            ] {
                filter.buf(main).push_str(part.filter.named_buf(slot));
            }
            for (main, slot) in [(n_services, 0), (n_nodeports, 1)] {
                nat.buf(main).push_str(part.nat.named_buf(slot));
            }
            stats.no_local_endpoints_internal += part.no_local_internal;
            stats.no_local_endpoints_external += part.no_local_external;
            stats.nat_rules_skipped += part.skipped_lines;
        }
        let active: Option<Vec<ChainKey>> = req.existing_nat_chains.map(|_| {
            let mut all: Vec<ChainKey> = parts
                .iter()
                .flat_map(|p| p.chains.iter().copied())
                .collect();
            all.sort_unstable();
            all.dedup();
            all
        });

        if let (Some(existing), Some(active)) = (req.existing_nat_chains, active.as_ref()) {
            let mut stale: Vec<ChainKey> = existing
                .iter()
                .filter(|k| ChainKind::is_owned(k.as_str()) && active.binary_search(k).is_err())
                .copied()
                .collect();
            stale.sort();
            stats.deleted_chains = stale.len();
            for k in stale {
                nat.delete_chain(k);
            }
        }

        write_nodeport_tail(&mut nat, n_services, opts);

        {
            let b = filter.buf(f_forward);
            if !opts.tcp_be_liberal {
                b.push_str("-A KUBE-FORWARD -m conntrack --ctstate INVALID");
                if opts.nfacct_rules() {
                    b.push_str(" -m nfacct --nfacct-name ");
                    b.push_str(super::options::NFACCT_INVALID);
                }
                b.push_str(" -j DROP\n");
            }
            let _ = write!(
                b,
                "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {mark}/{mark} -j ACCEPT\n\
                 -A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
            );
        }

        self.filter = filter;
        self.nat = nat;
        self.used_parts = runs.len();
        // The memo takes the parts' chain names (swapped, no copy) after their end marks.
        let n = runs.len();
        let ends: Vec<Mark> = self.parts[..n].iter().map(Part::mark_now).collect();
        let mut names: Vec<Vec<ChainKey>> = self.parts[..n]
            .iter_mut()
            .map(|p| std::mem::take(&mut p.chains))
            .collect();
        let marks: Vec<(&[Mark], Mark)> = self.parts[..n]
            .iter()
            .zip(&ends)
            .map(|(p, e)| (&p.marks[..], *e))
            .collect();
        self.memo
            .record(inputs, &runs, &marks, &self.part_bases, names.iter_mut());
        drop(marks);
        for (p, n) in self.parts.iter_mut().zip(names) {
            p.chains = n;
        }
        stats
    }

    /// Bytes [`Renderer::write_payload`] will write, roughly (for buffer sizing).
    pub fn approx_payload_len(&self) -> usize {
        self.filter.approx_len()
            + self.nat.approx_len()
            + self.parts[..self.used_parts]
                .iter()
                .map(|p| p.nat.approx_len())
                .sum::<usize>()
    }

    /// Writes the payload of the last [`Renderer::render_tables`] and completes `stats`'
    /// rule counts. Can be called again (e.g. to quote a failing line).
    pub fn write_payload<O: Out + ?Sized>(&mut self, out: &mut O, stats: &mut RenderStats) {
        let part_nats: Vec<&Table> = self.parts[..self.used_parts]
            .iter()
            .map(|p| &p.nat)
            .collect();
        self.filter.write_to(out, &[]);
        self.nat.write_to(out, &part_nats);
        stats.filter_rules = self.filter.written_rule_lines();
        stats.filter_chains = self.filter.written_chains();
        stats.nat_chains = self.nat.written_chains();
        stats.nat_rules = self.nat.written_rule_lines() + stats.deleted_chains;
    }
}

impl Renderer {
    /// Services the last render copied from its predecessor's results instead of
    /// rendering them (partial syncs only; for logs and tests).
    pub fn reused_services(&self) -> usize {
        self.parts[..self.used_parts].iter().map(|p| p.reused).sum()
    }

    /// Whether the last render, asked with `existing` as the kernel's nat chains, would
    /// have deleted one of them. When not, its output is exactly what that request gives
    /// (a render overlapped with the listing is made without it). True when unknown.
    pub fn would_delete_stale(&self, existing: &HashSet<ChainKey>) -> bool {
        let Some(active) = self.memo.active_chains() else {
            return true;
        };
        let active: HashSet<&ChainKey> = active.collect();
        existing
            .iter()
            .any(|k| ChainKind::is_owned(k.as_str()) && !active.contains(k))
    }

    /// nat chains the last [`Renderer::write_payload`] declared, with whether each was
    /// deleted: how the daemon keeps its record of the kernel's chains without listing.
    pub fn written_nat_chains(&self) -> impl Iterator<Item = (ChainKey, bool)> + '_ {
        self.nat.written_chain_keys()
    }
}

/// The NodePort jump(s) that must end nat KUBE-SERVICES (§3.3 step D).
fn write_nodeport_tail(nat: &mut Table, n_services: usize, opts: &ProxierOptions) {
    let npa = &opts.node_port_addresses;
    if npa.match_all {
        let excl = match opts.family {
            IpFamily::V6 => " ! -d ::1/128",
            IpFamily::V4 if !opts.localhost_nodeports => " ! -d 127.0.0.0/8",
            IpFamily::V4 => "",
        };
        nat.push_tail(
            n_services,
            format!(
                "-A KUBE-SERVICES -m comment --comment {NODEPORTS_COMMENT} -m addrtype --dst-type LOCAL{excl} -j KUBE-NODEPORTS\n"
            ),
        );
        return;
    }
    for ip in npa.matching_ips(&opts.host_addrs) {
        if ip.is_loopback() && (opts.family == IpFamily::V6 || !opts.localhost_nodeports) {
            tracing::error!(%ip, "NodePorts on loopback addresses are not supported here; skipped");
            continue;
        }
        nat.push_tail(
            n_services,
            format!("-A KUBE-SERVICES -m comment --comment {NODEPORTS_COMMENT} -d {ip} -j KUBE-NODEPORTS\n"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values from spec §3.13 and the corpus README (Go's "%0.10f" of 1/n).
    #[test]
    fn probabilities_are_printed_like_go() {
        let mut r = Renderer::new();
        r.ensure_probabilities(92);
        let p = &r.probabilities;
        assert_eq!(p[2], "0.5000000000");
        assert_eq!(p[3], "0.3333333333");
        assert_eq!(p[4], "0.2500000000");
        assert_eq!(p[6], "0.1666666667");
        assert_eq!(p[7], "0.1428571429");
        assert_eq!(p[92], "0.0108695652");
    }
}
