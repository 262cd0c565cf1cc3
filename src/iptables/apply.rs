//! One full sync against a real backend: what `kube-proxy-rs apply` does, and the core
//! of every full sync of the daemon.

use super::{Backend, BackendError};
use crate::compat::Compat;
use crate::config::KubeProxyConfiguration;
use crate::model::{ClusterModel, Warnings};
use crate::resolve::{self, HostFacts};
use crate::rules::{RenderStats, Renderer, SyncRequest};
use crate::source::objects::ObjectSet;
use std::time::{Duration, Instant};

/// What a full sync did.
#[derive(Debug)]
pub struct ApplyReport {
    pub stats: RenderStats,
    pub payload_bytes: usize,
    pub ensure_time: Duration,
    pub render_time: Duration,
    pub restore_time: Duration,
}

/// The model of `objects` for the backend's family.
pub fn build_model(
    cfg: &KubeProxyConfiguration,
    compat: &Compat,
    objects: &ObjectSet,
    family: crate::model::ip::IpFamily,
    warn: &mut Warnings,
) -> ClusterModel {
    let mopts = resolve::model_options(cfg, compat, family);
    let mut model = ClusterModel::build(
        objects.services.iter().map(|(s, _)| s),
        objects.endpoint_slices.iter().map(|(s, _)| s),
        objects.nodes.iter().map(|(n, _)| n),
        &mopts,
        warn,
    );
    crate::sync::fault::corrupt_from_env(&mut model);
    model
}

/// Full sync (spec §5.5), all or nothing: render, `iptables-restore --test` the whole
/// payload, and only then ensure the jump rules and restore. Should the real restore still
/// fail (a check only the kernel makes), the filter and nat tables are put back from a
/// snapshot taken just before. `host` comes from the caller because it depends on the
/// node (see [`super::host::real_host_facts`]).
pub fn full_sync(
    cfg: &KubeProxyConfiguration,
    compat: &Compat,
    model: &ClusterModel,
    host: &HostFacts,
    backend: &mut dyn Backend,
) -> Result<ApplyReport, BackendError> {
    let family = backend.family();
    let opts = resolve::proxier_options(cfg, compat, model.node.as_ref(), host, family);
    let existing = match backend.nat_chains() {
        Ok(c) => Some(c),
        Err(e) => {
            // Upstream logs and skips stale-chain deletion when iptables-save fails.
            tracing::warn!(error = %e, "cannot list nat chains; stale chains are kept");
            None
        }
    };
    let t = Instant::now();
    let out = Renderer::new().render(
        model,
        &opts,
        SyncRequest {
            partial: None,
            existing_nat_chains: existing.as_ref(),
        },
    );
    let render_time = t.elapsed();
    backend.test_restore(&out.payload)?;
    let snapshot = backend.snapshot()?;
    let t = Instant::now();
    let ensured = backend.ensure_jump_rules();
    let ensure_time = t.elapsed();
    let t = Instant::now();
    let applied = ensured.and_then(|()| backend.restore(&out.payload));
    if let Err(e) = applied {
        if let Some(snap) = snapshot {
            if let Err(re) = backend.rollback(&snap) {
                tracing::error!(error = %re, "rolling back to the tables before the apply failed");
            }
        }
        return Err(e);
    }
    Ok(ApplyReport {
        stats: out.stats,
        payload_bytes: out.payload.len(),
        ensure_time,
        render_time,
        restore_time: t.elapsed(),
    })
}
