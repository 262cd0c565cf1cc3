//! A proxier without a kernel: renders the syncs a real one would perform for a sequence
//! of object sets, simulating only the nat chain list that stale-chain deletion reads.

use crate::compat::Compat;
use crate::config::KubeProxyConfiguration;
use crate::model::cache::ModelCache;
use crate::model::ip::IpFamily;
use crate::model::node::NodeInfo;
use crate::model::{service_key, slice_key, ClusterModel, ModelOptions, NsName, Warnings};
use crate::resolve::{self, HostFacts};
use crate::rules::names::ChainKey;
use crate::rules::table::Out;
use crate::rules::{ProxierOptions, RenderOutput, Renderer, SyncRequest};
use crate::source::objects::ObjectSet;
use crate::sync::{SyncPlan, SyncTracker};
use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

pub struct OfflineProxier {
    cfg: KubeProxyConfiguration,
    compat: Compat,
    /// The simulated node has the nfacct objects.
    nfacct: bool,
    family: IpFamily,
    renderer: Renderer,
    tracker: SyncTracker,
    /// Fixed at the first sync, as upstream reads node IPs and podCIDRs only at start-up.
    options: Option<ProxierOptions>,
    kernel_nat_chains: HashSet<ChainKey>,
    syncs: u32,
    /// Objects of the previous step, fed as events into one cache (see `next_model`).
    cache: Option<ModelCache>,
    services: BTreeSet<NsName>,
    slices: BTreeSet<String>,
}

/// One rendered sync.
pub struct OfflineSync {
    pub plan: SyncPlan,
    pub output: RenderOutput,
}

impl OfflineProxier {
    pub fn new(cfg: KubeProxyConfiguration, compat: Compat, family: IpFamily) -> OfflineProxier {
        let period = cfg.iptables.sync_period;
        OfflineProxier {
            cfg,
            compat,
            nfacct: true,
            family,
            renderer: Renderer::new(),
            tracker: SyncTracker::new(period, compat),
            options: None,
            kernel_nat_chains: HashSet::new(),
            syncs: 0,
            cache: None,
            services: BTreeSet::new(),
            slices: BTreeSet::new(),
        }
    }

    /// Whether the simulated node has the nfacct objects (default yes, as the corpus').
    pub fn with_nfacct(mut self, nfacct: bool) -> OfflineProxier {
        self.nfacct = nfacct;
        self
    }

    pub fn build_model(&self, objects: &ObjectSet, warn: &mut Warnings) -> ClusterModel {
        ClusterModel::from_objects(objects, &self.model_options(), warn)
    }

    /// How this proxier reads objects (for building its models elsewhere, e.g. streamed).
    pub fn model_options(&self) -> ModelOptions {
        resolve::model_options(&self.cfg, &self.compat, self.family)
    }

    /// The model after the step from the previous object set to `objects`, delivered as
    /// upstream's informers would (adds, updates, deletes): the change trackers see each
    /// step's differences, e.g. a slice change that leaves the endpoints identical.
    pub fn next_model(&mut self, objects: &ObjectSet, warn: &mut Warnings) -> ClusterModel {
        let mopts = self.model_options();
        let node_name = mopts.node_name.clone();
        let cache = self.cache.get_or_insert_with(|| ModelCache::new(mopts));
        let mut services = BTreeSet::new();
        for (s, _) in &objects.services {
            let k = service_key(s);
            cache.apply_service(&k, Some(s), warn);
            services.insert(k);
        }
        for k in self.services.difference(&services) {
            cache.apply_service(k, None, warn);
        }
        self.services = services;
        let mut slices = BTreeSet::new();
        for (s, _) in &objects.endpoint_slices {
            let k = slice_key(s);
            cache.apply_slice(&k, Some(s), warn);
            slices.insert(k);
        }
        for k in self.slices.difference(&slices) {
            cache.apply_slice(k, None, warn);
        }
        self.slices = slices;
        let node = objects
            .nodes
            .iter()
            .find(|(n, _)| n.metadata.name.as_deref() == Some(node_name.as_str()))
            .map(|(n, _)| NodeInfo::read(n, warn));
        cache.set_node(node);
        cache.model()
    }

    pub fn options_for(&self, model: &ClusterModel) -> ProxierOptions {
        let host = HostFacts {
            nfacct: self.nfacct,
            ..HostFacts::offline(model.node.as_ref(), &self.cfg)
        };
        resolve::proxier_options(
            &self.cfg,
            &self.compat,
            model.node.as_ref(),
            &host,
            self.family,
        )
    }

    /// Renders the sync a proxier would run after receiving `model`, then applies it to
    /// the simulated kernel chain list.
    pub fn sync(&mut self, model: ClusterModel) -> OfflineSync {
        let plan = self.plan(&model);
        let opts = self.options.as_ref().expect("set by plan");
        let output = self
            .renderer
            .render(&model, opts, request(&plan, &self.kernel_nat_chains));
        apply_nat_chains(&mut self.kernel_nat_chains, &output.payload);
        self.tracker.finish(model, true, Duration::ZERO);
        self.syncs += 1;
        OfflineSync { plan, output }
    }

    /// The proxier's last sync: like [`OfflineProxier::sync`], but the payload goes
    /// straight to `out` (never held whole) and the simulated kernel is not updated.
    pub fn last_sync_to<O: Out + ?Sized>(mut self, model: ClusterModel, out: &mut O) -> SyncPlan {
        let plan = self.plan(&model);
        let opts = self.options.as_ref().expect("set by plan");
        let req = request(&plan, &self.kernel_nat_chains);
        let mut stats = self.renderer.render_tables(&model, opts, req);
        self.renderer.write_payload(out, &mut stats);
        plan
    }

    fn plan(&mut self, model: &ClusterModel) -> SyncPlan {
        if self.options.is_none() {
            self.options = Some(self.options_for(model));
        }
        // All steps happen within one sync period (the corpus' model of time).
        let now = Duration::ZERO;
        let plan = self.tracker.plan(model, now);
        if plan.scan_stale_chains {
            self.tracker.stale_scan_done(now);
        }
        plan
    }
}

fn request<'a>(plan: &'a SyncPlan, kernel_nat_chains: &'a HashSet<ChainKey>) -> SyncRequest<'a> {
    SyncRequest {
        partial: (!plan.full).then_some(&plan.changed),
        existing_nat_chains: plan.scan_stale_chains.then_some(kernel_nat_chains),
    }
}

/// Declared chains exist afterwards; `-X` removes them (what iptables-restore does).
fn apply_nat_chains(chains: &mut HashSet<ChainKey>, payload: &str) {
    let Some(start) = payload.find("*nat\n") else {
        return;
    };
    for line in payload[start..].lines() {
        if let Some(rest) = line.strip_prefix(':') {
            if let Some(k) = rest.split(' ').next().and_then(ChainKey::named) {
                chains.insert(k);
            }
        } else if let Some(name) = line.strip_prefix("-X ") {
            if let Some(k) = ChainKey::named(name) {
                chains.remove(&k);
            }
        }
    }
}

/// The `render` command's output for these object sets: one payload, or with several sets
/// one `# sync N full|partial` block per set.
pub fn render_syncs(proxier: OfflineProxier, sets: &[ObjectSet], warn: &mut Warnings) -> String {
    let mut proxier = proxier;
    let mut out = String::new();
    let multi = sets.len() > 1;
    for (i, set) in sets.iter().enumerate() {
        let model = proxier.next_model(set, warn);
        let sync = proxier.sync(model);
        if multi {
            let kind = if sync.plan.full { "full" } else { "partial" };
            out.push_str(&format!("# sync {} {kind}\n", i + 1));
        }
        out.push_str(&sync.output.payload);
    }
    out
}

/// The `render` command's output for one object set whose model was built beforehand
/// (streamed from the file): one full sync, written to `out` as it is produced. Several
/// sets go through [`render_syncs`], whose steps the change trackers must see.
pub fn render_model_to<O: Out + ?Sized>(proxier: OfflineProxier, model: ClusterModel, out: &mut O) {
    proxier.last_sync_to(model, out);
}
