//! One worker's share of a render: a contiguous run of Services.

use super::memo::{Entry, Lookup};
use super::port::PortCtx;
use super::{Mark, SyncRequest};
use crate::model::service::ServicePort;
use crate::model::topology::{Categorized, TopologyGates};
use crate::model::NsName;
use crate::rules::names::ChainKey;
use crate::rules::options::ProxierOptions;
use crate::rules::table::Table;
use std::sync::Arc;

/// Below this many endpoints one thread renders everything (threads would cost more).
pub(super) const PARALLEL_MIN_ENDPOINTS: usize = 4000;

/// What one worker renders for a contiguous run of Services (in canonical order): the
/// shared chains' rules of those Services and their per-service chains.
pub(super) struct Part {
    pub(super) filter: Table,
    pub(super) nat: Table,
    /// Chains of unchanged services in a partial sync: computed (they count for metrics
    /// and the active set) but not written.
    pub(super) skipped: Table,
    /// Rule lines of `skipped`, which is emptied after each Service to stay small.
    pub(super) skipped_lines: usize,
    /// Chains this part wrote, skipped or reused, in Service order (the active set, and
    /// the memo's chain names; a list: sorted once at the end, it costs a fraction of a
    /// hash set's memory).
    pub(super) chains: Vec<ChainKey>,
    /// One per Service of the run, in order.
    pub(super) marks: Vec<Mark>,
    pub(super) no_local_internal: usize,
    pub(super) no_local_external: usize,
    /// Services copied from the memo.
    pub(super) reused: usize,
}

impl Part {
    pub(super) fn new() -> Part {
        Part {
            filter: Table::new("filter"),
            nat: Table::new("nat"),
            skipped: Table::new("nat"),
            skipped_lines: 0,
            chains: Vec::new(),
            marks: Vec::new(),
            no_local_internal: 0,
            no_local_external: 0,
            reused: 0,
        }
    }

    /// Clears the part and declares the shared chains in the slot order of [`Shared::PART`].
    pub(super) fn reset(&mut self) {
        self.filter.clear();
        self.nat.clear();
        self.skipped.clear();
        self.skipped_lines = 0;
        self.chains.clear();
        self.marks.clear();
        self.no_local_internal = 0;
        self.no_local_external = 0;
        self.reused = 0;
        for c in [
            "KUBE-SERVICES",
            "KUBE-EXTERNAL-SERVICES",
            "KUBE-NODEPORTS",
            "KUBE-PROXY-FIREWALL",
        ] {
            self.filter.declare(c);
        }
        for c in ["KUBE-SERVICES", "KUBE-NODEPORTS"] {
            self.nat.declare(c);
        }
    }

    /// Where the next Service's text starts, and the counts so far.
    pub(super) fn mark_now(&self) -> Mark {
        Mark {
            shared: [
                self.filter.named_buf(0).len() as u32,
                self.filter.named_buf(1).len() as u32,
                self.filter.named_buf(2).len() as u32,
                self.filter.named_buf(3).len() as u32,
                self.nat.named_buf(0).len() as u32,
                self.nat.named_buf(1).len() as u32,
            ],
            ranges: self.nat.range_count() as u32,
            chains: self.chains.len() as u32,
            lines: (self.nat.arena_lines() + self.skipped_lines) as u32,
            no_local: [self.no_local_internal as u32, self.no_local_external as u32],
        }
    }

    /// `memo`: the last render's, when its inputs are this render's (partial syncs only):
    /// Services not to be written that it holds are copied from it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn render(
        &mut self,
        services: &[(&NsName, &Arc<Vec<ServicePort>>)],
        opts: &ProxierOptions,
        req: SyncRequest,
        zone: Option<&str>,
        large: bool,
        probabilities: &[String],
        memo: Option<&Lookup>,
    ) {
        self.reset();
        let gates = TopologyGates {
            topology_aware_hints: opts.topology_aware_hints,
            service_traffic_distribution: opts.service_traffic_distribution,
            rule: opts.compat.topology,
        };
        if req.partial.is_none() {
            let endpoints: usize = services
                .iter()
                .flat_map(|(_, p)| p.iter())
                .map(|sp| sp.endpoints.len())
                .sum();
            self.nat
                .arena_reserve(endpoints * 512 + services.len() * 1024);
        }
        let mut scratch = Categorized::default();
        self.marks.reserve(services.len());
        for (svc_name, ports) in services {
            self.marks.push(self.mark_now());
            let write_chains = req
                .partial
                .is_none_or(|changed| changed.contains(*svc_name));
            if !write_chains {
                if let Some((memo, e)) = memo.and_then(|m| Some((m, m.get(ports)?))) {
                    self.reuse(memo, e);
                    continue;
                }
            }
            let start = self.nat.arena_len();
            for sp in ports.iter() {
                let reuse = std::mem::take(&mut scratch);
                let ctx = PortCtx::new(sp, zone, gates, opts, large, reuse);
                if ctx.has_any && !ctx.has_internal {
                    self.no_local_internal += 1;
                }
                if ctx.has_any && !ctx.has_external {
                    self.no_local_external += 1;
                }
                ctx.write_shared(&mut self.filter, &mut self.nat, &Shared::PART);
                let target = if write_chains {
                    &mut self.nat
                } else {
                    &mut self.skipped
                };
                ctx.write_chains(probabilities, target, &mut self.chains);
                if !write_chains {
                    self.skipped_lines += self.skipped.count_lines_from(0);
                    self.skipped.clear();
                }
                scratch = ctx.categorized;
            }
            // Counted once per Service, while its text is still in cache.
            self.nat.count_lines_from(start);
        }
    }

    /// An unchanged Service from the memo: its shared-chain text, counts and chain names.
    fn reuse(&mut self, memo: &Lookup, e: &Entry) {
        let text = |slot: usize| {
            let [s, e] = e.shared[slot];
            memo.memo.shared[slot]
                .get(s as usize..e as usize)
                .unwrap_or_default()
        };
        for slot in 0..4 {
            self.filter.buf(slot).push_str(text(slot));
        }
        for slot in 0..2 {
            self.nat.buf(slot).push_str(text(4 + slot));
        }
        let [s, end] = e.chains;
        self.chains
            .extend_from_slice(&memo.memo.chains[e.part as usize][s as usize..end as usize]);
        self.skipped_lines += e.nat_lines as usize;
        self.no_local_internal += e.no_local[0] as usize;
        self.no_local_external += e.no_local[1] as usize;
        self.reused += 1;
    }
}

/// Slots of the shared chains in a part's tables.
pub(super) struct Shared {
    pub(super) f_services: usize,
    pub(super) f_external: usize,
    pub(super) f_nodeports: usize,
    pub(super) f_firewall: usize,
    pub(super) n_services: usize,
    pub(super) n_nodeports: usize,
}

impl Shared {
    /// The declaration order of [`Part::reset`].
    pub(super) const PART: Shared = Shared {
        f_services: 0,
        f_external: 1,
        f_nodeports: 2,
        f_firewall: 3,
        n_services: 0,
        n_nodeports: 1,
    };
}
