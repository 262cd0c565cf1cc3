//! One IP family's proxier: plan → ensure → render → restore through a [`Backend`], with
//! upstream's metrics and failure rules (spec §5.5, §5.6). Blocking; no clock of its own.

use super::chain_record::ChainRecord;
use super::conntrack;
use super::conntrack_reconcile::{self, UdpTargets};
use super::fault;
use super::live_jumps;
use super::minimal::{ChainContents, Minimal};
use super::restart_diff;
use super::{SyncPlan, SyncTracker};
use crate::compat::ConntrackRule;
use crate::iptables::command::chains_in_save;
use crate::iptables::{Backend, BackendError};
use crate::model::ip::IpFamily;
use crate::model::service::ServicePort;
use crate::model::{ClusterModel, NsName};
use crate::rules::names::{ChainKey, ChainKind};
use crate::rules::table::Out;
use crate::rules::{ProxierOptions, RenderStats, Renderer, SyncRequest};
use crate::server::metrics::{unix_now, Metrics};
use crate::server::service_health;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one sync did.
#[derive(Debug)]
pub struct SyncOutcome {
    pub full: bool,
    pub result: Result<(), String>,
    pub stats: RenderStats,
    /// Stale conntrack entries to delete (only meaningful when `result` is Ok).
    pub conntrack: ConntrackWork,
    /// Health-check node port servers wanted after this sync.
    pub service_health: service_health::Desired,
    /// Building the rule tables vs. the restore call (which includes writing the payload
    /// into iptables-restore's stdin); the rest of the sync is planning, ensure-rules and
    /// the stale-chain scan.
    pub render_time: Duration,
    pub restore_time: Duration,
    /// Wall time of listing the kernel's tables (at a start it overlaps the render).
    pub list_time: Duration,
    pub total_time: Duration,
    pub payload_bytes: usize,
}

/// S5: the stale-UDP-entry cleanup after a successful sync, by the emulated release.
#[derive(Debug)]
pub enum ConntrackWork {
    /// v1.30: these `conntrack` argument lists, one per change (spec §6.7).
    Commands(Vec<Vec<String>>),
    /// Newer: a UDP slice changed: list the family's entries and delete those the
    /// targets call stale (spec §8.3 S5).
    Reconcile(UdpTargets),
    /// Newer, no UDP slice changed: nothing to do.
    Skip,
}

pub struct Proxier {
    family: IpFamily,
    backend: Box<dyn Backend>,
    renderer: Renderer,
    tracker: SyncTracker,
    /// Fixed at the first sync: upstream reads node IPs and podCIDRs only at start-up.
    options: Option<ProxierOptions>,
    /// Services whose rules iptables-restore rejected, with the rejected version: held
    /// back (as last applied) until their ports or endpoints change.
    quarantine: BTreeMap<NsName, Arc<Vec<ServicePort>>>,
    /// The nat chains the kernel holds, from our own payloads since the last listing.
    chains: ChainRecord,
    /// No sync has succeeded yet: the first full one restores only what differs.
    starting: bool,
    /// Upstream's way (bench comparison, [`ENV_UPSTREAM_LISTING`]): list before every
    /// stale-chain deletion and restore everything at start.
    upstream_listing: bool,
    /// `--iptables-minimal-restore`: what our chains hold, to cut partial payloads down to
    /// the chains that changed. `None`: off (upstream's payloads).
    minimal: Option<ChainContents>,
    /// Test hook: this many of the next listings made beside a render fail.
    failing_listings: usize,
}

/// Set (non-empty) to make the daemon list the nat table before every stale-chain deletion
/// and restore the whole payload at start, as upstream does: for benchmarks comparing the
/// two, never needed otherwise.
pub const ENV_UPSTREAM_LISTING: &str = "KUBE_PROXY_RS_BENCH_UPSTREAM_LISTING";

impl Proxier {
    pub fn new(
        backend: Box<dyn Backend>,
        sync_period: Duration,
        compat: crate::compat::Compat,
    ) -> Proxier {
        Proxier {
            family: backend.family(),
            backend,
            renderer: Renderer::new(),
            tracker: SyncTracker::new(sync_period, compat),
            options: None,
            quarantine: BTreeMap::new(),
            chains: ChainRecord::default(),
            starting: true,
            upstream_listing: std::env::var_os(ENV_UPSTREAM_LISTING).is_some_and(|v| !v.is_empty()),
            minimal: None,
            failing_listings: 0,
        }
    }

    /// Test hook: the next `n` listings made while rendering (at a start) fail, as a
    /// lock timeout or a killed `iptables-save` would.
    #[doc(hidden)]
    pub fn with_failing_listings(mut self, n: usize) -> Proxier {
        self.failing_listings = n;
        self
    }

    /// `--iptables-minimal-restore`: partial syncs write only the chains whose rules
    /// changed since the last successful sync (full syncs stay upstream's).
    pub fn with_minimal_restore(mut self, on: bool) -> Proxier {
        self.minimal = on.then(ChainContents::default);
        self
    }

    /// Upstream's listing before every stale-chain deletion and full restore at start
    /// (what [`ENV_UPSTREAM_LISTING`] sets): for comparisons in tests and benchmarks.
    pub fn with_upstream_listing(mut self, on: bool) -> Proxier {
        self.upstream_listing = on;
        self
    }

    pub fn family(&self) -> IpFamily {
        self.family
    }

    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    pub fn backend_mut(&mut self) -> &mut dyn Backend {
        self.backend.as_mut()
    }

    pub fn options(&self) -> Option<&ProxierOptions> {
        self.options.as_ref()
    }

    /// Canary gone or operator request: the next sync rewrites everything, and lists the
    /// kernel's chains again (someone else changed them).
    pub fn force_full(&mut self) {
        self.tracker.force_full();
        self.chains.forget();
        if let Some(c) = self.minimal.as_mut() {
            c.forget();
        }
    }

    /// Services whose last rejected version is being held back.
    pub fn quarantined(&self) -> impl Iterator<Item = &NsName> {
        self.quarantine.keys()
    }

    pub fn sync(
        &mut self,
        model: ClusterModel,
        options: impl FnOnce(&ClusterModel) -> ProxierOptions,
        now: Duration,
        metrics: &Metrics,
    ) -> SyncOutcome {
        let started = Instant::now();
        tracing::debug!(ipFamily = self.family.api_name(), "Syncing iptables rules");
        let mut model = model;
        fault::corrupt_from_env(&mut model);
        // A held-back Service is retried once it changes (or is deleted).
        self.quarantine.retain(|k, bad| {
            model
                .services
                .get(k)
                .is_some_and(|v| Arc::ptr_eq(v, bad) || v == bad)
        });
        let mut aside: HashSet<NsName> = self.quarantine.keys().cloned().collect();
        for k in &aside {
            hold_back(&self.tracker, &mut model, k);
        }
        let opts = self.options.get_or_insert_with(|| options(&model));
        let mut plan: SyncPlan = self.tracker.plan(&model, now);
        let mut stats = RenderStats::default();
        let mut restore_time = Duration::ZERO;
        let mut render_time = started.elapsed();
        let mut payload_bytes = 0;
        let mut result = Ok(());
        // A start on a node with rules lists the tables before ensuring the jump rules:
        // the listing shows which are there, and those cost no exec each.
        let compare_live = plan.full && self.starting && !self.upstream_listing;
        // The nfacct objects decide the options the render reads: ensured before it.
        if plan.full && opts.compat.nfacct_rules {
            if let Some(ok) = self.backend.ensure_nfacct() {
                opts.nfacct = ok;
            }
        }
        let mut listed_first = None;
        let mut list_time = Duration::ZERO;
        // Rendered while the listing runs, without the kernel's chains (known only after).
        let mut prerendered: Option<(RenderStats, String)> = None;
        if compare_live && plan.scan_stale_chains && self.chains.known().is_none() {
            let fail = take_fault(&mut self.failing_listings);
            let renderer = &mut self.renderer;
            let prerender = || {
                let req = SyncRequest {
                    partial: None,
                    existing_nat_chains: None,
                };
                let t = Instant::now();
                let mut stats = renderer.render_tables(&model, opts, req);
                let mut full = String::with_capacity(renderer.approx_payload_len());
                renderer.write_payload(&mut full, &mut stats);
                (stats, full, t.elapsed())
            };
            let (listed, took, rendered) = overlapped(self.backend.as_mut(), fail, prerender);
            // On an error the listing below runs again, and reports it.
            listed_first = listed.ok();
            list_time += took;
            if let Some((stats, full, t)) = rendered {
                render_time += t;
                prerendered = Some((stats, full));
            }
        }
        if plan.full {
            let present = match &listed_first {
                Some((_, Some(text))) => live_jumps::present(text),
                _ => Vec::new(),
            };
            if let Err(e) = self.backend.ensure_missing_jump_rules(&present) {
                result = Err(format!("ensuring jump rules: {e}"));
            }
        }
        // Stale chains come from our record of the kernel's chains; the table is listed
        // only when the record is unknown (start, failed restore, flushed table).
        let mut live: Option<String> = None;
        if result.is_ok() && plan.scan_stale_chains {
            if self.upstream_listing {
                self.chains.forget();
            }
            if self.chains.known().is_none() {
                let listed = match listed_first.take() {
                    Some(l) => Ok(l),
                    None => {
                        let t = Instant::now();
                        let l = match take_fault(&mut self.failing_listings) {
                            true => Err(injected_listing_failure()),
                            false => list_chains(self.backend.as_mut(), compare_live),
                        };
                        list_time += t.elapsed();
                        l
                    }
                };
                match listed {
                    Ok((chains, text)) => {
                        self.chains.listed(chains);
                        live = text;
                    }
                    Err(e) => {
                        tracing::error!(family = ?self.family, error = %e,
                            "Failed to list nat chains, skipping stale chain deletion");
                    }
                }
            }
            if self.chains.known().is_some() {
                self.tracker.stale_scan_done(now + started.elapsed());
            }
        }
        let existing = if plan.scan_stale_chains {
            self.chains.known()
        } else {
            None
        };
        let mut done = false;
        if let (Ok(()), Some(live)) = (&result, live.as_deref()) {
            let req = SyncRequest {
                partial: None,
                existing_nat_chains: existing,
            };
            // The render made during the listing is this one unless a listed chain is stale.
            let reuse = prerendered
                .take()
                .filter(|_| existing.is_some_and(|e| !self.renderer.would_delete_stale(e)));
            let full = match reuse {
                Some((s, full)) => {
                    stats = s;
                    full
                }
                None => {
                    let render_started = Instant::now();
                    stats = self.renderer.render_tables(&model, opts, req);
                    let mut full = String::with_capacity(self.renderer.approx_payload_len());
                    self.renderer.write_payload(&mut full, &mut stats);
                    render_time += render_started.elapsed();
                    full
                }
            };
            let restore_started = Instant::now();
            match restart_diff::differing_payload(&full, live) {
                Ok(d) if d.kept_rules > 0 => {
                    let r = match &d.payload {
                        Some(p) => self.backend.restore(p),
                        None => Ok(()),
                    };
                    payload_bytes = d.payload.as_ref().map_or(0, String::len);
                    match r {
                        Ok(()) => {
                            tracing::info!(
                                ipFamily = self.family.api_name(),
                                unchanged = d.unchanged_chains,
                                rewritten = d.rewritten_chains,
                                deleted = d.deleted_chains,
                                "Kernel rules were listed: restored only the chains that differ"
                            );
                            set_rule_counts(metrics, self.family, &stats);
                            if let Some(c) = self.minimal.as_mut() {
                                c.full_applied(&full);
                            }
                            done = true;
                        }
                        Err(e) => {
                            metrics.restore_failures.of(self.family, &[]).inc();
                            tracing::error!(family = ?self.family, error = %e,
                                "Restoring the differing chains failed; restoring everything");
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(family = ?self.family, error = %e,
                        "Could not compare the kernel's rules; restoring everything");
                }
            }
            restore_time += restore_started.elapsed();
        }
        let mut set_aside = 0;
        // Minimal mode: the full payload as written (to record), the cut-down partial one.
        let mut captured: Option<String> = None;
        let mut cut: Option<Minimal> = None;
        while result.is_ok() && !done {
            let req = SyncRequest {
                partial: (!plan.full).then_some(&plan.changed),
                existing_nat_chains: existing,
            };
            let render_started = Instant::now();
            stats = self.renderer.render_tables(&model, opts, req);
            render_time += render_started.elapsed();
            // Streamed into iptables-restore: a full payload is never held whole (but see the copy below).
            let restore_started = Instant::now();
            let renderer = &mut self.renderer;
            let (mut counted, mut bytes, mut asked) = (stats.clone(), 0, false);
            let contents = self.minimal.as_ref().filter(|c| !plan.full && c.is_known());
            let r = if let Some(contents) = contents {
                let mut partial = String::new();
                renderer.write_payload(&mut partial, &mut counted);
                asked = true;
                let m = contents.minimal(&partial).expect("record known");
                bytes = m.payload.len();
                let r = match m.payload.is_empty() {
                    true => Ok(()),
                    false => self.backend.restore(&m.payload),
                };
                let r = r.map_err(|e| to_partial_line(e, &m.origin));
                cut = Some(m);
                r
            } else {
                // Minimal mode keeps a copy of a full payload (tens of MB at 10,000
                // Services) to record what each chain holds; the default mode holds none.
                let mut copy = (self.minimal.is_some() && plan.full).then(String::new);
                let r = self.backend.restore_from(&mut |out: &mut dyn Out| {
                    if let Some(c) = copy.as_mut() {
                        c.clear();
                    }
                    let mut counting = Counting {
                        out,
                        bytes: 0,
                        copy: copy.as_mut(),
                    };
                    counted = stats.clone();
                    renderer.write_payload(&mut counting, &mut counted);
                    bytes = counting.bytes;
                    asked = true;
                });
                captured = copy;
                r
            };
            restore_time += restore_started.elapsed();
            if !asked {
                // The backend failed before asking for the payload: count it anyway.
                self.renderer.write_payload(&mut Discard, &mut counted);
            }
            stats = counted;
            payload_bytes = bytes;
            // Upstream's line, logged just before its restore; ours streams, so just after.
            tracing::debug!(
                ipFamily = self.family.api_name(),
                numServices = stats.service_ports,
                numEndpoints = stats.endpoints,
                numFilterChains = stats.filter_chains,
                numFilterRules = stats.filter_rules,
                numNATChains = stats.nat_chains,
                numNATRules = stats.nat_rules,
                "Reloading service iptables data"
            );
            set_rule_counts(metrics, self.family, &stats);
            let Err(e) = r else { break };
            metrics.restore_failures.of(self.family, &[]).inc();
            // The outcome is unknown: the rest of this sync writes upstream's payload.
            if let Some(c) = self.minimal.as_mut() {
                c.forget();
            }
            // One Service's rules rejected: hold that Service back and apply the rest.
            let culprit = match &e {
                BackendError::RestoreLine { line, .. } if set_aside < MAX_QUARANTINED_PER_SYNC => {
                    self.renderer.line_owner(&model, *line)
                }
                _ => None,
            }
            .filter(|(k, _)| !aside.contains(*k))
            .map(|(k, text)| (k.clone(), text));
            let Some((k, text)) = culprit else {
                result = Err(format!("iptables-restore: {e}"));
                break;
            };
            let held = match self.tracker.applied_model() {
                Some(m) if m.services.contains_key(&k) => "kept as last applied",
                _ => "left out (never applied)",
            };
            tracing::error!(family = ?self.family, service = %k, line = %text, error = %e,
                "iptables-restore rejected this Service's rules: the Service is {held} until it changes; applying everything else");
            self.quarantine
                .insert(k.clone(), model.services[&k].clone());
            hold_back(&self.tracker, &mut model, &k);
            aside.insert(k);
            set_aside += 1;
            plan.changed = self.tracker.plan(&model, now).changed;
        }
        match &result {
            Ok(()) => {
                self.starting = false;
                self.chains.applied(self.renderer.written_nat_chains());
            }
            Err(_) => self.chains.forget(),
        }
        let refill = record_contents(&mut self.minimal, result.is_ok(), plan.full, captured, cut);
        metrics
            .quarantined_services
            .with_label_values(&[self.family.api_name()])
            .set(self.quarantine.len() as i64);
        let conntrack = match opts.compat.conntrack_cleanup {
            ConntrackRule::PerChange => ConntrackWork::Commands(conntrack::stale_entries(
                self.tracker.last_model(),
                &model,
                self.family,
            )),
            ConntrackRule::Reconcile
                if conntrack_reconcile::cleanup_required(self.tracker.last_model(), &model) =>
            {
                ConntrackWork::Reconcile(UdpTargets::of(&model))
            }
            ConntrackRule::Reconcile => ConntrackWork::Skip,
        };
        let total = started.elapsed();
        self.renderer.release_buffers();
        let elapsed = total.as_secs_f64();
        let f = self.family;
        metrics.sync_duration.of(f, &[]).observe(elapsed);
        if plan.full {
            metrics.full_sync_duration.of(f, &[]).observe(elapsed);
        } else {
            metrics.partial_sync_duration.of(f, &[]).observe(elapsed);
        }
        let service_health = match &result {
            Ok(()) => {
                metrics.last_timestamp.of(f, &[]).set(unix_now());
                metrics
                    .no_local_endpoints
                    .of(f, &["internal"])
                    .set(stats.no_local_endpoints_internal as i64);
                metrics
                    .no_local_endpoints
                    .of(f, &["external"])
                    .set(stats.no_local_endpoints_external as i64);
                service_health::desired(&model)
            }
            Err(e) => {
                if !plan.full {
                    metrics.partial_restore_failures.of(f, &[]).inc();
                }
                tracing::error!(family = ?self.family, error = %e, "Failed to sync proxy rules; next sync is full");
                Default::default()
            }
        };
        self.tracker
            .finish(model, result.is_ok(), now + started.elapsed());
        if refill {
            // A partial sync after a failed minimal restore: rebuild the record next time.
            self.tracker.force_full();
        }
        tracing::debug!(
            ipFamily = self.family.api_name(),
            elapsed = crate::config::format_duration(started.elapsed()),
            "SyncProxyRules complete"
        );
        SyncOutcome {
            full: plan.full,
            result,
            stats,
            conntrack,
            service_health,
            render_time,
            total_time: total,
            restore_time,
            list_time,
            payload_bytes,
        }
    }
}

/// Counts down a test hook: whether this listing fails.
fn take_fault(left: &mut usize) -> bool {
    let fail = *left > 0;
    *left = left.saturating_sub(1);
    fail
}

fn injected_listing_failure() -> BackendError {
    BackendError::Command {
        command: "iptables-save".into(),
        message: "injected failure (test hook)".into(),
    }
}

/// Lists the tables (on a thread, the tools being other processes) while `render` runs
/// here; the listing's result and wall time, and the render's (`None` when no thread could
/// be had: the caller then renders after the listing, as without the overlap).
#[allow(clippy::type_complexity)]
fn overlapped<R: Send>(
    backend: &mut dyn Backend,
    inject_failure: bool,
    render: impl FnOnce() -> R,
) -> (
    Result<(HashSet<ChainKey>, Option<String>), BackendError>,
    Duration,
    Option<R>,
) {
    let list = move |backend: &mut dyn Backend| {
        let t = Instant::now();
        let l = match inject_failure {
            true => Err(injected_listing_failure()),
            false => list_chains(backend, true),
        };
        (l, t.elapsed())
    };
    let spawned = std::thread::scope(|s| {
        let b = &mut *backend;
        match std::thread::Builder::new().spawn_scoped(s, move || list(b)) {
            Ok(h) => {
                let r = render();
                let (l, took) = h.join().expect("listing does not panic");
                Ok((l, took, Some(r)))
            }
            Err(_) => Err(render),
        }
    });
    spawned.unwrap_or_else(|_| {
        let (l, took) = list(backend);
        (l, took, None)
    })
}

/// Minimal mode: updates the record of chain contents after a sync; true when the
/// record is unknown after a successful partial sync (the next sync must be full).
fn record_contents(
    minimal: &mut Option<ChainContents>,
    ok: bool,
    full: bool,
    captured: Option<String>,
    cut: Option<Minimal>,
) -> bool {
    let Some(c) = minimal.as_mut() else {
        return false;
    };
    match (ok, full) {
        (false, _) => c.forget(),
        (true, true) => {
            if let Some(p) = captured {
                c.full_applied(&p);
            }
        }
        (true, false) => {
            if let Some(m) = cut {
                c.applied(m);
            }
        }
    }
    ok && !c.is_known()
}

/// A restore error at line `n` of a cut-down payload, as line `origin[n - 1]` of the
/// partial payload it came from (what [`Renderer::line_owner`] knows).
fn to_partial_line(e: BackendError, origin: &[usize]) -> BackendError {
    match e {
        BackendError::RestoreLine {
            line,
            message,
            context,
        } => BackendError::RestoreLine {
            line: line
                .checked_sub(1)
                .and_then(|i| origin.get(i))
                .copied()
                .unwrap_or(line),
            message,
            context,
        },
        e => e,
    }
}

/// Lists the nat table's chains; with `rules` also the filter and nat rules (for
/// restoring only what differs), when the backend can.
fn list_chains(
    backend: &mut dyn Backend,
    rules: bool,
) -> Result<(HashSet<ChainKey>, Option<String>), BackendError> {
    if rules {
        if let Some(text) = backend.live_tables()? {
            let nat = text.find("*nat\n").map_or("", |i| &text[i..]);
            let chains: HashSet<ChainKey> =
                chains_in_save(nat).filter_map(ChainKey::named).collect();
            // A node without any service chain (fresh) has nothing worth comparing.
            let worth = chains.iter().any(|k| ChainKind::is_owned(k.as_str()));
            return Ok((chains, worth.then_some(text)));
        }
    }
    Ok((backend.nat_chains()?, None))
}

/// At most this many Services are held back in one sync; past that the sync fails as
/// upstream's does (more is wrong than single objects).
pub const MAX_QUARANTINED_PER_SYNC: usize = 10;

/// Puts Service `k` of `model` back to its last applied version (dropping it if it was
/// never applied), so that its chains and jump rules stay as the kernel has them.
fn hold_back(tracker: &SyncTracker, model: &mut ClusterModel, k: &NsName) {
    match tracker.applied_model().and_then(|m| m.services.get(k)) {
        Some(v) => {
            model.services.insert(k.clone(), v.clone());
        }
        None => {
            model.services.remove(k);
        }
    }
}

/// Rule counts are known once written; set whether or not the restore worked.
fn set_rule_counts(metrics: &Metrics, family: IpFamily, stats: &RenderStats) {
    let filter = stats.filter_rules as i64;
    let nat_written = stats.nat_rules as i64 - stats.deleted_chains as i64;
    metrics.iptables_total.of(family, &["filter"]).set(filter);
    metrics
        .iptables_total
        .of(family, &["nat"])
        .set(nat_written + stats.nat_rules_skipped as i64);
    metrics.iptables_last.of(family, &["filter"]).set(filter);
    metrics.iptables_last.of(family, &["nat"]).set(nat_written);
}

/// Counts what passes through to the restore.
struct Counting<'a> {
    out: &'a mut dyn Out,
    bytes: usize,
    /// Minimal mode, full sync: a copy, to record what each chain now holds.
    copy: Option<&'a mut String>,
}

impl Out for Counting<'_> {
    fn push_str(&mut self, s: &str) {
        self.bytes += s.len();
        if let Some(c) = self.copy.as_mut() {
            c.push_str(s);
        }
        self.out.push_str(s);
    }
}

/// Counts without keeping.
struct Discard;

impl Out for Discard {
    fn push_str(&mut self, _: &str) {}
}
