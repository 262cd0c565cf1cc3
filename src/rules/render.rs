//! The renderer: model + options → iptables-restore payload (spec §3), canonical order.

use super::names::{ChainKey, ChainKind};
use super::options::ProxierOptions;
use super::table::{Out, Table};
use crate::model::endpoint::Endpoint;
use crate::model::ip::IpFamily;
use crate::model::service::ServicePort;
use crate::model::topology::{categorize_reusing, Categorized, TopologyGates};
use crate::model::{ClusterModel, NsName};
use std::collections::HashSet;
use std::fmt::Write as _;

mod owner;

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
}

/// Where one Service's text starts in its part: the lengths of the shared-chain buffers
/// (filter KUBE-SERVICES, KUBE-EXTERNAL-SERVICES, KUBE-NODEPORTS, KUBE-PROXY-FIREWALL,
/// nat KUBE-SERVICES, KUBE-NODEPORTS) and the number of nat chain ranges. One small push
/// per Service lets a failing payload line be traced back to its Service.
#[derive(Clone, Copy)]
struct Mark {
    shared: [u32; 6],
    ranges: u32,
}

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
        }
    }
}

/// Below this many endpoints one thread renders everything (threads would cost more).
const PARALLEL_MIN_ENDPOINTS: usize = 4000;

/// What one worker renders for a contiguous run of Services (in canonical order): the
/// shared chains' rules of those Services and their per-service chains.
struct Part {
    filter: Table,
    nat: Table,
    /// Chains of unchanged services in a partial sync: computed (they count for metrics
    /// and the active set) but not written.
    skipped: Table,
    /// Rule lines of `skipped`, which is emptied after each Service to stay small.
    skipped_lines: usize,
    /// Chains this part wrote or skipped (a list: sorted once at the end, it costs a
    /// fraction of a hash set's memory).
    active: Vec<ChainKey>,
    /// One per Service of the run, in order.
    marks: Vec<Mark>,
    no_local_internal: usize,
    no_local_external: usize,
}

impl Part {
    fn new() -> Part {
        Part {
            filter: Table::new("filter"),
            nat: Table::new("nat"),
            skipped: Table::new("nat"),
            skipped_lines: 0,
            active: Vec::new(),
            marks: Vec::new(),
            no_local_internal: 0,
            no_local_external: 0,
        }
    }

    /// Clears the part and declares the shared chains in the slot order of [`Shared::PART`].
    fn reset(&mut self) {
        self.filter.clear();
        self.nat.clear();
        self.skipped.clear();
        self.skipped_lines = 0;
        self.active.clear();
        self.marks.clear();
        self.no_local_internal = 0;
        self.no_local_external = 0;
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

    #[allow(clippy::too_many_arguments)]
    fn render(
        &mut self,
        services: &[(&NsName, &Vec<ServicePort>)],
        opts: &ProxierOptions,
        req: SyncRequest,
        zone: Option<&str>,
        large: bool,
        probabilities: &[String],
    ) {
        self.reset();
        let gates = TopologyGates {
            topology_aware_hints: opts.topology_aware_hints,
            service_traffic_distribution: opts.service_traffic_distribution,
        };
        let endpoints: usize = services
            .iter()
            .flat_map(|(_, p)| p.iter())
            .map(|sp| sp.endpoints.len())
            .sum();
        self.nat
            .arena_reserve(endpoints * 512 + services.len() * 1024);
        let track_active = req.existing_nat_chains.is_some();
        let mut scratch = Categorized::default();
        self.marks.reserve(services.len());
        for (svc_name, ports) in services {
            self.marks.push(Mark {
                shared: [
                    self.filter.named_buf(0).len() as u32,
                    self.filter.named_buf(1).len() as u32,
                    self.filter.named_buf(2).len() as u32,
                    self.filter.named_buf(3).len() as u32,
                    self.nat.named_buf(0).len() as u32,
                    self.nat.named_buf(1).len() as u32,
                ],
                ranges: self.nat.range_count() as u32,
            });
            let write_chains = req
                .partial
                .is_none_or(|changed| changed.contains(*svc_name));
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
                let active = if track_active {
                    Some(&mut self.active)
                } else {
                    None
                };
                ctx.write_chains(probabilities, target, active);
                if !write_chains {
                    self.skipped_lines += self.skipped.rule_lines();
                    self.skipped.clear();
                }
                scratch = ctx.categorized;
            }
        }
    }
}

/// Slots of the shared chains in a part's tables.
struct Shared {
    f_services: usize,
    f_external: usize,
    f_nodeports: usize,
    f_firewall: usize,
    n_services: usize,
    n_nodeports: usize,
}

impl Shared {
    /// The declaration order of [`Part::reset`].
    const PART: Shared = Shared {
        f_services: 0,
        f_external: 1,
        f_nodeports: 2,
        f_firewall: 3,
        n_services: 0,
        n_nodeports: 1,
    };
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
        self.filter = Table::new("filter");
        self.nat = Table::new("nat");
        self.parts = Vec::new();
        self.used_parts = 0;
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
        let services: Vec<(&NsName, &Vec<ServicePort>)> =
            model.services.iter().map(|(k, p)| (k, &**p)).collect();
        let workers = if total_endpoints >= PARALLEL_MIN_ENDPOINTS {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(4)
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
        let runs: Vec<&[(&NsName, &Vec<ServicePort>)]> =
            cuts.windows(2).map(|w| &services[w[0]..w[1]]).collect();
        while self.parts.len() < runs.len() {
            self.parts.push(Part::new());
        }
        let parts = &mut self.parts[..runs.len()];
        let probabilities = &self.probabilities;
        let large = stats.large_cluster_mode;
        if let ([part], [run]) = (&mut *parts, runs.as_slice()) {
            part.render(run, opts, req, zone, large, probabilities);
        } else {
            std::thread::scope(|scope| {
                for (part, run) in parts.iter_mut().zip(&runs) {
                    scope.spawn(move || part.render(run, opts, req, zone, large, probabilities));
                }
            });
        }
        let parts = &self.parts[..runs.len()];

        // Shared chains: each part holds a contiguous run of the canonical order.
        self.part_starts.clear();
        self.part_starts.extend_from_slice(&cuts[..runs.len()]);
        self.part_bases.clear();
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
                .flat_map(|p| p.active.iter().copied())
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
                b.push_str("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n");
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

/// One service port with its endpoint selection and chain names resolved (§3.2).
struct PortCtx<'a> {
    sp: &'a ServicePort,
    opts: &'a ProxierOptions,
    p: &'static str,
    cluster_ip: &'a str,
    port: &'a str,
    categorized: Categorized<'a>,
    has_any: bool,
    has_internal: bool,
    has_external: bool,
    uses_svc: bool,
    uses_svl: bool,
    uses_ext: bool,
    uses_fw: bool,
    svc: &'a str,
    svl: &'a str,
    ext: &'a str,
    fw: &'a str,
    large: bool,
}

impl<'a> PortCtx<'a> {
    fn new(
        sp: &'a ServicePort,
        zone: Option<&str>,
        gates: TopologyGates,
        opts: &'a ProxierOptions,
        large: bool,
        reuse: Categorized<'a>,
    ) -> PortCtx<'a> {
        let c = categorize_reusing(sp, &sp.endpoints, zone, gates, reuse);
        let has_any = c.has_any;
        let has_internal = has_any && !(sp.internal_policy_local && c.local.is_empty());
        let has_external = has_any && !(sp.external_policy_local && c.local.is_empty());
        PortCtx {
            sp,
            opts,
            p: sp.protocol.as_str(),
            cluster_ip: &sp.cluster_ip_text,
            port: &sp.port_text,
            uses_svc: !c.cluster.is_empty() && sp.uses_cluster_endpoints(),
            uses_svl: !c.local.is_empty() && sp.uses_local_endpoints(),
            uses_ext: has_any && sp.externally_accessible(),
            uses_fw: has_any
                && !sp.load_balancer_vips.is_empty()
                && !sp.load_balancer_source_ranges.is_empty(),
            categorized: c,
            has_any,
            has_internal,
            has_external,
            svc: &sp.chains.svc,
            svl: &sp.chains.svl,
            ext: &sp.chains.ext,
            fw: &sp.chains.fw,
            large,
        }
    }

    fn internal_chain(&self) -> &'a str {
        if self.sp.internal_policy_local {
            self.svl
        } else {
            self.svc
        }
    }

    fn external_policy_chain(&self) -> &'a str {
        if self.sp.external_policy_local {
            self.svl
        } else {
            self.svc
        }
    }

    /// ` -m <p> -p <p>`
    fn match_protocol(&self, b: &mut String) {
        b.push_str(" -m ");
        b.push_str(self.p);
        b.push_str(" -p ");
        b.push_str(self.p);
    }

    /// ` -m <p> -p <p> -d <ip> --dport <port>`
    fn match_dest(&self, b: &mut String, ip: &str, port: &str) {
        self.match_protocol(b);
        b.push_str(" -d ");
        b.push_str(ip);
        b.push_str(" --dport ");
        b.push_str(port);
    }

    /// `-A <chain> -m comment --comment "<spn> <what>"`
    fn head(&self, b: &mut String, chain: &str, what: &str) {
        b.push_str("-A ");
        b.push_str(chain);
        b.push_str(" -m comment --comment \"");
        b.push_str(&self.sp.spn);
        b.push(' ');
        b.push_str(what);
        b.push('"');
    }

    /// Comment suffix and target of the filter rule for traffic with nowhere to go.
    fn filter_verdict(&self) -> (&'static str, &'static str) {
        if !self.has_any {
            ("has no endpoints", "REJECT")
        } else {
            ("has no local endpoints", "DROP")
        }
    }

    /// `-A <chain> -m comment --comment "<spn> <what>" -m <p> -p <p> -d <ip> --dport <port> -j <target>`:
    /// the shape of every per-destination rule in the shared chains.
    fn dest_rule(&self, b: &mut String, chain: &str, what: &str, ip: &str, target: &str) {
        self.head(b, chain, what);
        self.match_dest(b, ip, self.port);
        b.push_str(" -j ");
        b.push_str(target);
        b.push('\n');
    }

    /// ` -m <p> -p <p> --dport <port> -j <target>` for NodePort-style rules.
    fn port_jump(&self, b: &mut String, port: &str, target: &str) {
        self.match_protocol(b);
        b.push_str(" --dport ");
        b.push_str(port);
        b.push_str(" -j ");
        b.push_str(target);
        b.push('\n');
    }

    /// Rules in the chains shared by all services (B1–B6): always written.
    fn write_shared(&self, filter: &mut Table, nat: &mut Table, sh: &Shared) {
        let sp = self.sp;
        // Used only where the internal/external traffic has no endpoint to go to.
        let (what, target) = self.filter_verdict();
        // B1 / B1'
        if self.has_internal {
            self.dest_rule(
                nat.buf(sh.n_services),
                "KUBE-SERVICES",
                "cluster IP",
                self.cluster_ip,
                self.internal_chain(),
            );
        } else {
            self.dest_rule(
                filter.buf(sh.f_services),
                "KUBE-SERVICES",
                what,
                self.cluster_ip,
                target,
            );
        }
        // B2 / B2'
        for ip in &sp.external_ips {
            let ip = ip.to_string();
            if self.has_any {
                self.dest_rule(
                    nat.buf(sh.n_services),
                    "KUBE-SERVICES",
                    "external IP",
                    &ip,
                    self.ext,
                );
            }
            if !self.has_external {
                self.dest_rule(
                    filter.buf(sh.f_external),
                    "KUBE-EXTERNAL-SERVICES",
                    what,
                    &ip,
                    target,
                );
            }
        }
        // B3 / B3'
        let lb_chain = if self.uses_fw { self.fw } else { self.ext };
        for ip in &sp.load_balancer_vips {
            let ip = ip.to_string();
            if self.has_any {
                self.dest_rule(
                    nat.buf(sh.n_services),
                    "KUBE-SERVICES",
                    "loadbalancer IP",
                    &ip,
                    lb_chain,
                );
            }
            if self.uses_fw {
                let b = filter.buf(sh.f_firewall);
                b.push_str("-A KUBE-PROXY-FIREWALL -m comment --comment \"");
                b.push_str(&sp.spn);
                b.push_str(" traffic not accepted by ");
                b.push_str(self.fw);
                b.push('"');
                self.match_dest(b, &ip, self.port);
                b.push_str(" -j DROP\n");
            }
        }
        // B4
        if !self.has_external {
            for ip in &sp.load_balancer_vips {
                let ip = ip.to_string();
                self.dest_rule(
                    filter.buf(sh.f_external),
                    "KUBE-EXTERNAL-SERVICES",
                    what,
                    &ip,
                    target,
                );
            }
        }
        // B5 / B5'
        if sp.node_port != 0 {
            let np = sp.node_port.to_string();
            if self.has_any {
                let b = nat.buf(sh.n_nodeports);
                b.push_str("-A KUBE-NODEPORTS -m comment --comment ");
                b.push_str(&sp.spn);
                self.port_jump(b, &np, self.ext);
            }
            if !self.has_external {
                let b = filter.buf(sh.f_external);
                self.head(b, "KUBE-EXTERNAL-SERVICES", what);
                b.push_str(" -m addrtype --dst-type LOCAL");
                self.port_jump(b, &np, target);
            }
        }
        // B6
        if sp.health_check_node_port != 0 {
            let b = filter.buf(sh.f_nodeports);
            self.head(b, "KUBE-NODEPORTS", "health check node port");
            b.push_str(" -m tcp -p tcp --dport ");
            b.push_str(&sp.health_check_node_port.to_string());
            b.push_str(" -j ACCEPT\n");
        }
    }

    /// The per-service chains (B7–B12).
    fn write_chains(
        &self,
        probabilities: &[String],
        nat: &mut Table,
        mut active: Option<&mut Vec<ChainKey>>,
    ) {
        let sp = self.sp;
        let spn = sp.spn.as_str();
        let mut begin = |nat: &mut Table, name: &str| {
            let key = ChainKey::named(name).expect("hashed chain names fit a key");
            if let Some(a) = active.as_deref_mut() {
                a.push(key);
            }
            nat.begin_chain(key);
        };

        // B8: KUBE-EXT-*
        if self.uses_ext {
            begin(nat, self.ext);
            let b = nat.arena();
            let ext = self.ext;
            if !sp.external_policy_local {
                self.ext_rule(b, ext, "masquerade traffic for");
                b.push_str(" -j KUBE-MARK-MASQ\n");
            } else {
                if self.opts.local_detector.is_implemented() {
                    self.ext_rule(b, ext, "pod traffic for");
                    self.opts.local_detector.write_match(b, false);
                    b.push_str(" -j ");
                    b.push_str(self.svc);
                    b.push('\n');
                }
                self.ext_rule(b, ext, "masquerade LOCAL traffic for");
                b.push_str(" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ\n");
                self.ext_rule(b, ext, "route LOCAL traffic for");
                b.push_str(" -m addrtype --src-type LOCAL -j ");
                b.push_str(self.svc);
                b.push('\n');
            }
            if self.has_external {
                b.push_str("-A ");
                b.push_str(ext);
                b.push_str(" -j ");
                b.push_str(self.external_policy_chain());
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
            b.push_str("-A ");
            b.push_str(sep);
            self.sep_comment(b);
            b.push_str(" -s ");
            b.push_str(&ep.ip);
            b.push_str(" -j KUBE-MARK-MASQ\n-A ");
            b.push_str(sep);
            self.sep_comment(b);
            if sp.affinity_timeout.is_some() {
                b.push_str(" -m recent --name ");
                b.push_str(sep);
                b.push_str(" --set");
            }
            self.match_protocol(b);
            b.push_str(" -j DNAT --to-destination ");
            b.push_str(&ep.endpoint);
            b.push('\n');
            nat.finish_chain();
        }
    }

    fn sep_comment(&self, b: &mut String) {
        if !self.large {
            b.push_str(" -m comment --comment ");
            b.push_str(&self.sp.spn);
        }
    }

    fn ext_rule(&self, b: &mut String, ext: &str, what: &str) {
        b.push_str("-A ");
        b.push_str(ext);
        b.push_str(" -m comment --comment \"");
        b.push_str(what);
        b.push(' ');
        b.push_str(&self.sp.spn);
        b.push_str(" external destinations\"");
    }

    /// B7: masquerade off-cluster traffic to the ClusterIP.
    fn write_masq(&self, b: &mut String, chain: &str) {
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
        b.push_str(" -j KUBE-MARK-MASQ\n");
    }

    /// Affinity rules, then the probability ladder (§3.12, §3.13).
    fn write_dispatch(
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
                b.push_str(" -m recent --name ");
                b.push_str(&ep.sep_chain);
                b.push_str(" --rcheck --seconds ");
                b.push_str(&timeout);
                b.push_str(" --reap -j ");
                b.push_str(&ep.sep_chain);
                b.push('\n');
            }
        }
        let n = eps.len();
        for (i, ep) in eps.iter().enumerate() {
            self.dispatch_head(b, chain, ep);
            if i + 1 < n {
                b.push_str(" -m statistic --mode random --probability ");
                b.push_str(&probabilities[n - i]);
            }
            b.push_str(" -j ");
            b.push_str(&ep.sep_chain);
            b.push('\n');
        }
    }

    fn dispatch_head(&self, b: &mut String, chain: &str, ep: &Endpoint) {
        b.push_str("-A ");
        b.push_str(chain);
        if !self.large {
            b.push_str(" -m comment --comment \"");
            b.push_str(&self.sp.spn);
            b.push_str(" -> ");
            b.push_str(&ep.endpoint);
            b.push('"');
        }
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
