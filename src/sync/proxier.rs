//! One IP family's proxier: plan → ensure → render → restore through a [`Backend`], with
//! upstream's metrics and failure rules (spec §5.5, §5.6). Blocking; no clock of its own.

use super::conntrack;
use super::{SyncPlan, SyncTracker};
use crate::iptables::Backend;
use crate::model::ip::IpFamily;
use crate::model::ClusterModel;
use crate::rules::table::Out;
use crate::rules::{ProxierOptions, RenderStats, Renderer, SyncRequest};
use crate::server::metrics::{unix_now, Metrics};
use crate::server::service_health;
use std::time::{Duration, Instant};

/// What one sync did.
#[derive(Debug)]
pub struct SyncOutcome {
    pub full: bool,
    pub result: Result<(), String>,
    pub stats: RenderStats,
    /// `conntrack` argument lists to run (only meaningful when `result` is Ok).
    pub conntrack: Vec<Vec<String>>,
    /// Health-check node port servers wanted after this sync.
    pub service_health: service_health::Desired,
    /// Building the rule tables vs. the restore call (which includes writing the payload
    /// into iptables-restore's stdin); the rest of the sync is planning, ensure-rules and
    /// the stale-chain scan.
    pub render_time: Duration,
    pub restore_time: Duration,
    pub total_time: Duration,
    pub payload_bytes: usize,
}

pub struct Proxier {
    family: IpFamily,
    backend: Box<dyn Backend>,
    renderer: Renderer,
    tracker: SyncTracker,
    /// Fixed at the first sync: upstream reads node IPs and podCIDRs only at start-up.
    options: Option<ProxierOptions>,
}

impl Proxier {
    pub fn new(backend: Box<dyn Backend>, sync_period: Duration) -> Proxier {
        Proxier {
            family: backend.family(),
            backend,
            renderer: Renderer::new(),
            tracker: SyncTracker::new(sync_period),
            options: None,
        }
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

    /// Canary gone or operator request: the next sync rewrites everything.
    pub fn force_full(&mut self) {
        self.tracker.force_full();
    }

    pub fn sync(
        &mut self,
        model: ClusterModel,
        options: impl FnOnce(&ClusterModel) -> ProxierOptions,
        now: Duration,
        metrics: &Metrics,
    ) -> SyncOutcome {
        let started = Instant::now();
        let opts = self.options.get_or_insert_with(|| options(&model));
        let plan: SyncPlan = self.tracker.plan(&model, now);
        let conntrack = conntrack::stale_entries(self.tracker.last_model(), &model, self.family);
        let mut stats = RenderStats::default();
        let mut restore_time = Duration::ZERO;
        let mut render_time = Duration::ZERO;
        let mut payload_bytes = 0;
        // Planning and the stale-entry diff are our own work too: they count as render.
        let planning = started.elapsed();
        let result = (|| {
            if plan.full {
                self.backend
                    .ensure_jump_rules()
                    .map_err(|e| format!("ensuring jump rules: {e}"))?;
            }
            let existing = if plan.scan_stale_chains {
                match self.backend.nat_chains() {
                    Ok(c) => {
                        self.tracker.stale_scan_done(now + started.elapsed());
                        Some(c)
                    }
                    Err(e) => {
                        tracing::error!(family = ?self.family, error = %e,
                            "Failed to list nat chains, skipping stale chain deletion");
                        None
                    }
                }
            } else {
                None
            };
            let req = SyncRequest {
                partial: (!plan.full).then_some(&plan.changed),
                existing_nat_chains: existing.as_ref(),
            };
            let render_started = Instant::now();
            stats = self.renderer.render_tables(&model, opts, req);
            render_time = planning + render_started.elapsed();
            drop(existing);
            // Streamed into iptables-restore: a full payload is never held whole.
            let restore_started = Instant::now();
            let renderer = &mut self.renderer;
            let (mut counted, mut bytes) = (stats.clone(), 0);
            let r = self.backend.restore_from(&mut |out: &mut dyn Out| {
                let mut counting = Counting { out, bytes: 0 };
                counted = stats.clone();
                renderer.write_payload(&mut counting, &mut counted);
                bytes = counting.bytes;
            });
            restore_time = restore_started.elapsed();
            if bytes == 0 {
                // The backend failed before asking for the payload: count it anyway.
                self.renderer.write_payload(&mut Discard, &mut counted);
            }
            stats = counted;
            payload_bytes = bytes;
            // Rule counts are known once written; set whether or not the restore worked.
            let filter = stats.filter_rules as i64;
            let nat_written = stats.nat_rules as i64 - stats.deleted_chains as i64;
            metrics
                .iptables_total
                .with_label_values(&["filter"])
                .set(filter);
            metrics
                .iptables_total
                .with_label_values(&["nat"])
                .set(nat_written + stats.nat_rules_skipped as i64);
            metrics
                .iptables_last
                .with_label_values(&["filter"])
                .set(filter);
            metrics
                .iptables_last
                .with_label_values(&["nat"])
                .set(nat_written);
            r.map_err(|e| {
                metrics.restore_failures.inc();
                format!("iptables-restore: {e}")
            })
        })();
        let total = started.elapsed();
        self.renderer.release_buffers();
        let elapsed = total.as_secs_f64();
        metrics.sync_duration.observe(elapsed);
        if plan.full {
            metrics.full_sync_duration.observe(elapsed);
        } else {
            metrics.partial_sync_duration.observe(elapsed);
        }
        let service_health = match &result {
            Ok(()) => {
                metrics.last_timestamp.set(unix_now());
                metrics
                    .no_local_endpoints
                    .with_label_values(&["internal"])
                    .set(stats.no_local_endpoints_internal as i64);
                metrics
                    .no_local_endpoints
                    .with_label_values(&["external"])
                    .set(stats.no_local_endpoints_external as i64);
                service_health::desired(&model)
            }
            Err(e) => {
                if !plan.full {
                    metrics.partial_restore_failures.inc();
                }
                tracing::error!(family = ?self.family, error = %e, "Failed to sync proxy rules; next sync is full");
                Default::default()
            }
        };
        self.tracker.finish(model, result.is_ok());
        SyncOutcome {
            full: plan.full,
            result,
            stats,
            conntrack,
            service_health,
            render_time,
            total_time: total,
            restore_time,
            payload_bytes,
        }
    }
}

/// Counts what passes through to the restore.
struct Counting<'a> {
    out: &'a mut dyn Out,
    bytes: usize,
}

impl Out for Counting<'_> {
    fn push_str(&mut self, s: &str) {
        self.bytes += s.len();
        self.out.push_str(s);
    }
}

/// Counts without keeping.
struct Discard;

impl Out for Discard {
    fn push_str(&mut self, _: &str) {}
}
