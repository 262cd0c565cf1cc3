//! The node agent: sources → store → sync loop (one thread, blocking netfilter calls) →
//! backends; HTTP servers and sources on the tokio runtime.

pub mod fds;
pub mod flags;
pub mod host;
pub mod lock;
pub mod memory;
pub mod pod_cidr;
pub mod sysctls;

use crate::config::KubeProxyConfiguration;
use crate::iptables::{Backend, CANARY_TABLES};
use crate::model::ip::IpFamily;
use crate::resolve;
use crate::server::health::{ProxyHealth, Stamp};
use crate::server::listen::{Limits, Pool};
use crate::server::metrics::{unix_now, Metrics};
use crate::server::service_health::{Desired, ServiceHealthServers};
use crate::server::{self, SharedHealth};
use crate::source::store::{Change, SourceEvent, Store};
use crate::sync::canary::{CanaryAction, CanaryMonitor, SETTLE_POLL, SETTLE_TIMEOUT};
use crate::sync::conntrack::Conntrack;
use crate::sync::conntrack_reconcile;
use crate::sync::latency::{self, TriggerTimes};
use crate::sync::proxier::ConntrackWork;
use crate::sync::proxier::Proxier;
use crate::sync::runner::{Runner, Step};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where objects come from.
#[derive(Clone, Debug)]
pub enum SourceSpec {
    /// The API server: kubeconfig, or `--master`, or in-cluster when both are empty.
    Api {
        kubeconfig: Option<PathBuf>,
        master: Option<String>,
    },
    /// A static objects file, polled for changes.
    File { path: PathBuf, poll: Duration },
}

/// Which host facts the rules are rendered for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostMode {
    /// This machine's interfaces and sysctls.
    Detect,
    /// The golden corpus' fake host (tests comparing against golden payloads).
    Offline,
}

#[derive(Clone, Debug)]
pub struct DaemonOptions {
    pub config: KubeProxyConfiguration,
    /// The emulated release.
    pub compat: crate::compat::Compat,
    pub source: SourceSpec,
    pub host: HostMode,
    /// `--iptables-minimal-restore`: partial syncs write only changed chains.
    pub minimal_restore: bool,
}

enum Msg {
    Source(SourceEvent),
    Shutdown,
}

/// A running daemon.
pub struct DaemonHandle {
    tx: Sender<Msg>,
    thread: Option<std::thread::JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub healthz_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    fatal: tokio::sync::oneshot::Receiver<pod_cidr::NodeChanged>,
}

impl DaemonHandle {
    /// Resolves when the daemon must exit (status 1, so that it is restarted): this
    /// Node's podCIDRs changed under detectLocalMode NodeCIDR, or (newer releases, S4)
    /// its IPs changed or it was deleted.
    pub async fn fatal(&mut self) -> anyhow::Error {
        match (&mut self.fatal).await {
            Ok(e) => e.into(),
            // The sync loop ended without a fatal error: nothing to report, ever.
            Err(_) => std::future::pending().await,
        }
    }

    /// Stops sources and the sync loop. The rules stay in place, as upstream leaves them.
    pub async fn shutdown(mut self) {
        let _ = self.tx.send(Msg::Shutdown);
        for t in &self.tasks {
            t.abort();
        }
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

fn bind_addr(what: &str, s: &str) -> anyhow::Result<Option<SocketAddr>> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .with_context(|| format!("{what} {s:?} is not host:port"))
}

/// Starts the daemon on the current tokio runtime: one proxier per backend (one per IP
/// family).
pub async fn start(
    mut opts: DaemonOptions,
    backends: Vec<Box<dyn Backend>>,
    conntrack: Box<dyn Conntrack>,
) -> anyhow::Result<DaemonHandle> {
    anyhow::ensure!(!backends.is_empty(), "no netfilter backend");
    memory::tune_allocator();
    if opts.config.hostname_override.trim().is_empty() {
        opts.config.hostname_override = host::hostname()?;
    }
    let cfg = opts.config.clone();
    let node_name = resolve::node_name(&cfg);
    if pod_cidr::node_cidr_mode(&cfg) {
        pod_cidr::wait_for_pod_cidrs(&opts.source, &node_name, pod_cidr::WAIT).await?;
    }
    let metrics = Arc::new(Metrics::for_compat(&opts.compat));
    if opts.compat.nfacct_rules && opts.host == HostMode::Detect {
        metrics.register_nfacct();
    }
    let start = Instant::now();
    let health: SharedHealth = Arc::new(Mutex::new(
        ProxyHealth::new(2 * cfg.iptables.sync_period, start).for_release(&opts.compat),
    ));
    let mut tasks = Vec::new();

    // Each server pool is capped so that together they leave descriptors for the sync loop.
    let limits = Limits::for_open_files(fds::raise_open_files_limit());
    let hard_fail = cfg.bind_address_hard_fail;
    let mut healthz_addr = None;
    if let Some(a) = bind_addr("healthzBindAddress", &cfg.healthz_bind_address)? {
        let router = server::healthz_router(health.clone(), metrics.clone());
        let (bound, task) =
            server::serve("healthz", a, router, Pool::new(limits.clone()), hard_fail)
                .await
                .with_context(|| format!("healthz server on {a}"))?;
        healthz_addr = Some(bound);
        tasks.push(task);
    }
    let mut metrics_addr = None;
    if let Some(a) = bind_addr("metricsBindAddress", &cfg.metrics_bind_address)? {
        let router = server::metrics_router(metrics.clone(), "iptables");
        let (bound, task) =
            server::serve("metrics", a, router, Pool::new(limits.clone()), hard_fail)
                .await
                .with_context(|| format!("metrics server on {a}"))?;
        metrics_addr = Some(bound);
        tasks.push(task);
    }

    let (tx, rx) = std::sync::mpsc::channel::<Msg>();
    let (src_tx, src_rx) = std::sync::mpsc::channel::<SourceEvent>();
    // Forward source events into the loop's channel (which also carries Shutdown).
    {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("source-forward".into())
            .spawn(move || {
                while let Ok(ev) = src_rx.recv() {
                    if tx.send(Msg::Source(ev)).is_err() {
                        return;
                    }
                }
            })
            .context("spawning thread")?;
    }
    match &opts.source {
        SourceSpec::Api { kubeconfig, master } => {
            let client =
                crate::source::api::client(kubeconfig.as_deref(), master.as_deref()).await?;
            tasks.extend(crate::source::api::spawn(
                client.clone(),
                &node_name,
                src_tx,
            ));
            // Upstream's "birth cry", after its informers start.
            tasks.push(tokio::spawn(crate::source::events::starting(
                client,
                node_name.clone(),
            )));
        }
        SourceSpec::File { path, poll } => {
            tasks.push(tokio::spawn(crate::source::file::run(
                path.clone(),
                *poll,
                src_tx,
            )));
        }
    }

    // Health-check node port servers live on the runtime; the loop sends what it wants.
    let (hc_tx, mut hc_rx) = tokio::sync::mpsc::unbounded_channel::<Desired>();
    let hc_listen = host::health_check_ips(&cfg, opts.host);
    let hc_health = health.clone();
    tasks.push(tokio::spawn(async move {
        let mut servers = ServiceHealthServers::new(hc_health, hc_listen, Pool::new(limits));
        while let Some(want) = hc_rx.recv().await {
            servers.sync(&want).await;
        }
    }));

    let now = Duration::ZERO;
    let proxiers: Vec<Proxier> = backends
        .into_iter()
        .map(|b| {
            Proxier::new(b, cfg.iptables.sync_period, opts.compat)
                .with_minimal_restore(opts.minimal_restore)
        })
        .collect();
    {
        let mut h = health.lock().unwrap_or_else(|e| e.into_inner());
        for p in &proxiers {
            h.updated(p.family(), Stamp::now());
        }
    }
    for p in &proxiers {
        metrics
            .last_queued_timestamp
            .of(p.family(), &[])
            .set(unix_now());
    }
    let families: Vec<IpFamily> = proxiers.iter().map(Proxier::family).collect();
    let trigger_times = TriggerTimes::new(std::time::SystemTime::now(), &families);
    let (pod_cidrs, fatal) =
        pod_cidr::PodCidrWatch::new(&cfg, &node_name, opts.compat.exit_on_node_change);
    let canaries = proxiers
        .iter()
        .map(|_| CanaryMonitor::new(cfg.iptables.sync_period, now))
        .collect();
    let mut store = Store::new(
        proxiers
            .iter()
            .map(|p| resolve::model_options(&cfg, &opts.compat, p.family()))
            .collect(),
    );
    store.set_invalid_counter(metrics.invalid_object_fields.clone());
    let sync_loop = SyncLoop {
        runners: proxiers
            .iter()
            .map(|_| Runner::for_rule(opts.compat.runner, cfg.iptables.min_sync_period, now))
            .collect(),
        hc_wanted: proxiers.iter().map(|_| Desired::new()).collect(),
        cfg,
        compat: opts.compat,
        host: opts.host,
        proxiers,
        canaries,
        store,
        metrics: metrics.clone(),
        health,
        hc_tx,
        conntrack,
        initialized: false,
        start,
        pending_services: 0,
        pending_slices: 0,
        trigger_times,
        pod_cidrs,
        waiting_logged: Default::default(),
    };
    let thread = std::thread::Builder::new()
        .name("sync".into())
        .spawn(move || sync_loop.run(rx))
        .context("spawning the sync thread")?;
    Ok(DaemonHandle {
        tx,
        thread: Some(thread),
        tasks,
        healthz_addr,
        metrics_addr,
        metrics,
        fatal,
    })
}

struct SyncLoop {
    cfg: KubeProxyConfiguration,
    compat: crate::compat::Compat,
    host: HostMode,
    proxiers: Vec<Proxier>,
    canaries: Vec<CanaryMonitor>,
    /// One rate limiter per proxier: each family syncs on its own changes, as upstream's
    /// dual-stack meta-proxier runs two independent proxiers.
    runners: Vec<Runner>,
    /// Health-check node ports each family's last successful sync wants.
    hc_wanted: Vec<Desired>,
    store: Store,
    metrics: Arc<Metrics>,
    health: SharedHealth,
    hc_tx: tokio::sync::mpsc::UnboundedSender<Desired>,
    conntrack: Box<dyn Conntrack>,
    initialized: bool,
    start: Instant,
    pending_services: i64,
    pending_slices: i64,
    trigger_times: TriggerTimes,
    pod_cidrs: pod_cidr::PodCidrWatch,
    waiting_logged: crate::logging::OnChange<()>,
}

/// Far enough to mean "no deadline".
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

impl SyncLoop {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn run(mut self, rx: Receiver<Msg>) {
        loop {
            let now = self.now();
            let mut until = self.canaries_step(now);
            // Mid-list the store holds part old, part new objects: wait for the end.
            if self.initialized && !self.store.in_list() {
                let mut ran = false;
                for i in 0..self.runners.len() {
                    // Each family on the clock as it is now: the other may have just synced.
                    let now = self.now();
                    match self.runners[i].step(now) {
                        Step::Run => {
                            self.sync_one(i, now);
                            ran = true;
                        }
                        Step::SleepUntil(t) => until = until.min(t),
                    }
                }
                if ran {
                    continue;
                }
            }
            let timeout = until.saturating_sub(self.now());
            match rx.recv_timeout(timeout) {
                Ok(Msg::Shutdown) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Msg::Source(ev)) => {
                    let mut changed = self.on_event(ev);
                    loop {
                        match rx.try_recv() {
                            Ok(Msg::Source(ev)) => changed |= self.on_event(ev),
                            Ok(Msg::Shutdown) => return,
                            Err(_) => break,
                        }
                    }
                    self.after_events(changed);
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    fn on_event(&mut self, ev: SourceEvent) -> u8 {
        // A whole list in one piece goes through as a streamed one.
        let ev = match ev {
            SourceEvent::Slices(Change::Replace(items)) => {
                return self.on_list(items, SourceEvent::Slices);
            }
            SourceEvent::Services(Change::Replace(items)) => {
                return self.on_list(items, SourceEvent::Services);
            }
            SourceEvent::Nodes(Change::Replace(items)) => {
                return self.on_list(items, SourceEvent::Nodes);
            }
            ev => ev,
        };
        let is_node = matches!(ev, SourceEvent::Nodes(_));
        let (mut trigger, mut gone) = (None, None);
        match &ev {
            SourceEvent::Slices(Change::Apply(s) | Change::Listed(s)) => {
                trigger = self.trigger_times.trigger(s);
            }
            SourceEvent::Slices(Change::Delete(s)) => gone = latency::deleted(s),
            SourceEvent::Nodes(c) => self.pod_cidrs.observe(c),
            _ => {}
        }
        let a = self.store.apply(ev);
        if let Some(t) = trigger {
            // Only a change of that family's rules counts (upstream: changeNeeded).
            let i = self.proxiers.iter().position(|p| p.family() == t.family);
            if i.is_some_and(|i| a.family_changed(i)) {
                self.trigger_times.add(t);
            }
        }
        if let Some((family, service)) = gone {
            self.trigger_times.forget(family, &service);
        }
        self.metrics
            .service_changes_total
            .inc_by(a.service_events as u64);
        self.metrics
            .endpoint_changes_total
            .inc_by(a.slice_events as u64);
        self.pending_services += a.services_changed as i64;
        self.pending_slices += a.slices_changed as i64;
        if is_node && a.any() {
            self.health
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .sync_node(self.store.node());
        }
        a.families
    }

    fn on_list<K>(&mut self, items: Vec<K>, wrap: fn(Change<K>) -> SourceEvent) -> u8 {
        let mut changed = self.on_event(wrap(Change::ListStart));
        for o in items {
            changed |= self.on_event(wrap(Change::Listed(Box::new(o))));
        }
        changed | self.on_event(wrap(Change::ListDone))
    }

    /// `changed`: bit i set when proxier i's model changed.
    fn after_events(&mut self, changed: u8) {
        if !self.initialized {
            if !self.store.all_synced() || self.store.in_list() {
                // Upstream logs this from one of its two "synced" callbacks; we come here
                // on every event before the first sync, so it is logged once.
                if self.waiting_logged.changed(()) {
                    tracing::info!("Not syncing iptables until Services and Endpoints have been received from master");
                }
                return;
            }
            self.initialized = true;
            for i in 0..self.proxiers.len() {
                let now = self.now();
                self.runners[i].ran_directly(now);
                self.sync_one(i, now);
            }
            return;
        }
        if changed == 0 {
            return;
        }
        self.metrics
            .service_changes_pending
            .set(self.pending_services);
        self.metrics
            .endpoint_changes_pending
            .set(self.pending_slices);
        for i in 0..self.proxiers.len() {
            if changed & (1 << i) != 0 {
                self.metrics
                    .last_queued_timestamp
                    .of(self.proxiers[i].family(), &[])
                    .set(unix_now());
                self.runners[i].request();
                self.health
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .queued_update(self.proxiers[i].family(), Stamp::now());
            }
        }
    }

    /// Syncs proxier `i` (one IP family).
    fn sync_one(&mut self, i: usize, now: Duration) {
        {
            let family = self.proxiers[i].family();
            let model = self.store.model(i);
            let trigger_times = self.trigger_times.take(family);
            let (cfg, compat, mode) = (&self.cfg, &self.compat, self.host);
            let random_fully = self.proxiers[i].backend().supports_random_fully();
            let outcome = self.proxiers[i].sync(
                model,
                |m| {
                    let facts = host::facts(mode, m.node.as_ref(), cfg, random_fully);
                    resolve::proxier_options(cfg, compat, m.node.as_ref(), &facts, family)
                },
                now,
                &self.metrics,
            );
            let ended = self.now();
            self.runners[i].finished(
                now,
                ended,
                outcome.result.is_ok(),
                self.cfg.iptables.sync_period,
            );
            match outcome.result {
                Ok(()) => {
                    // A labeled series exists once observed, as upstream's.
                    if !trigger_times.is_empty() {
                        latency::observe(
                            &trigger_times,
                            std::time::SystemTime::now(),
                            &self.metrics.network_programming.of(family, &[]),
                        );
                    }
                    // Our breakdown of upstream's "SyncProxyRules complete" (same level).
                    tracing::debug!(
                        ?family,
                        full = outcome.full,
                        nat_rules = outcome.stats.nat_rules,
                        payload_bytes = outcome.payload_bytes,
                        render_ms = outcome.render_time.as_millis() as u64,
                        restore_ms = outcome.restore_time.as_millis() as u64,
                        total_ms = outcome.total_time.as_millis() as u64,
                        "Synced proxy rules"
                    );
                    self.health
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .updated(family, Stamp::now());
                    self.clean_conntrack(family, &outcome.conntrack);
                    self.hc_wanted[i] = outcome.service_health;
                    let mut want = Desired::new();
                    for (k, v) in self.hc_wanted.iter().flatten() {
                        want.entry(k.clone()).or_insert(*v);
                    }
                    let _ = self.hc_tx.send(want);
                }
                Err(_) => {
                    tracing::info!(
                        ipFamily = family.api_name(),
                        retryingTime =
                            crate::config::format_duration(self.cfg.iptables.sync_period),
                        "Sync failed"
                    );
                }
            }
        }
        self.pending_services = 0;
        self.pending_slices = 0;
        self.metrics.service_changes_pending.set(0);
        self.metrics.endpoint_changes_pending.set(0);
        memory::release_free_memory();
    }

    /// S5: deletes the stale UDP entries the sync asked for (spec §6.7, §8.3).
    fn clean_conntrack(&mut self, family: IpFamily, work: &ConntrackWork) {
        match work {
            ConntrackWork::Commands(commands) => {
                for args in commands {
                    if let Err(e) = self.conntrack.run(args) {
                        tracing::error!(error = %e, "Failed to clear stale conntrack entries");
                    }
                }
            }
            ConntrackWork::Reconcile(targets) => {
                let started = Instant::now();
                let done = conntrack_reconcile::reconcile(self.conntrack.as_mut(), targets, family);
                let took = started.elapsed();
                for e in &done.errors {
                    tracing::error!(ipFamily = family.api_name(), error = %e,
                        "Failed to clear stale conntrack entries");
                }
                if let Some(m) = &self.metrics.conntrack_reconciler {
                    m.observe(family, took.as_secs_f64(), done.deleted);
                }
                tracing::debug!(
                    ipFamily = family.api_name(),
                    entriesDeleted = done.deleted,
                    took = crate::config::format_duration(took),
                    "Finished reconciling conntrack entries"
                );
            }
            ConntrackWork::Skip => {}
        }
    }

    /// Runs due canary work; returns when it is next due.
    fn canaries_step(&mut self, now: Duration) -> Duration {
        let mut next = FOREVER;
        let mut flushed = Vec::new();
        for i in 0..self.proxiers.len() {
            match self.canaries[i].next_action(now) {
                CanaryAction::Wait(t) => next = next.min(t),
                CanaryAction::Create => {
                    let b = self.proxiers[i].backend_mut();
                    let ok = CANARY_TABLES.iter().all(|t| match b.create_canary(t) {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::error!(table = t, error = %e, "Failed to create canary chain");
                            false
                        }
                    });
                    self.canaries[i].created(ok, now);
                    next = next.min(now);
                }
                CanaryAction::Check => {
                    let b = self.proxiers[i].backend_mut();
                    // A failed check (e.g. lock contention) counts as "still there".
                    let exists = b.canary_exists("mangle").unwrap_or(true);
                    if !exists {
                        settle(b);
                        tracing::info!("iptables canary removed, forcing a full sync");
                        self.proxiers[i].force_full();
                        flushed.push(i);
                    }
                    self.canaries[i].checked(exists, now);
                    next = next.min(now);
                }
            }
        }
        if self.initialized {
            for i in flushed {
                // Force-sync bypasses the rate limiter, as upstream's monitor does.
                let now = self.now();
                self.runners[i].ran_directly(now);
                self.sync_one(i, now);
            }
        }
        next
    }
}

/// After the mangle canary vanished, waits (up to 5 s) for nat and filter to follow.
fn settle(b: &mut dyn Backend) {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let gone = ["nat", "filter"]
            .iter()
            .all(|t| !b.canary_exists(t).unwrap_or(true));
        if gone {
            return;
        }
        if Instant::now() >= deadline {
            tracing::warn!("Inconsistent iptables state detected");
            return;
        }
        std::thread::sleep(SETTLE_POLL);
    }
}
