//! Stale-chain deletion from the proxier's own record of the kernel's chains, with a
//! recording backend: steady-state syncs list nothing, and every payload (so every `-X`,
//! on the same syncs) is the one the listing-based path writes — the corpus' for the
//! golden steps, and upstream-style listing's in large-cluster mode.

mod common;
use common::{golden_case as case, read_text as read};
use kube_proxy_rs::compat::Compat;
use kube_proxy_rs::config;
use kube_proxy_rs::iptables::recording::RecordingBackend;
use kube_proxy_rs::model::ip::IpFamily;
use kube_proxy_rs::model::ClusterModel;
use kube_proxy_rs::offline::OfflineProxier;
use kube_proxy_rs::server::metrics::Metrics;
use kube_proxy_rs::source::objects::{load_objects, ObjectSet};
use kube_proxy_rs::sync::proxier::Proxier;
use std::path::Path;
use std::time::Duration;

fn objects(p: &Path) -> ObjectSet {
    load_objects(p.to_str().unwrap()).unwrap()
}

fn offline(dir: &Path) -> OfflineProxier {
    let cfg = config::load_config(&dir.join("config.yaml")).unwrap();
    OfflineProxier::new(cfg, Compat::v1_30(), IpFamily::V4)
}

fn proxier(backend: &RecordingBackend, upstream_listing: bool) -> Proxier {
    Proxier::new(
        Box::new(backend.clone()),
        Duration::from_secs(30),
        Compat::v1_30(),
    )
    .with_upstream_listing(upstream_listing)
}

fn sync(p: &mut Proxier, off: &OfflineProxier, model: ClusterModel, at: u64) {
    let out = p.sync(
        model,
        |m| off.options_for(m),
        Duration::from_secs(at),
        &Metrics::new(),
    );
    out.result.expect("sync succeeds");
}

#[test]
fn golden_steps_list_only_at_start_and_match_the_corpus() {
    for name in [
        "steps-service-deleted",
        "steps-scale-down",
        "steps-scale-up",
        "steps-endpoint-not-ready",
        "steps-node-zone-change-full-resync",
    ] {
        let dir = case(name);
        let backend = RecordingBackend::new(IpFamily::V4);
        let mut p = proxier(&backend, false);
        let mut off = offline(&dir);
        let steps = read(&dir.join("steps.txt")).lines().count();
        for step in 1..=steps {
            let set = objects(&dir.join(format!("step-{step}/objects.yaml")));
            let model = off.next_model(&set, &mut Vec::new());
            sync(&mut p, &off, model, step as u64);
            assert_eq!(
                backend.last_payload().unwrap(),
                read(&dir.join(format!("step-{step}.rules"))),
                "{name} step {step}"
            );
        }
        assert_eq!(backend.listings(), 1, "{name}: only the first sync lists");
    }
}

/// `large-cluster-mode-1012-endpoints`, and the same with five endpoints fewer (still
/// above the 1000-endpoint threshold): five stale SEP chains.
fn large_sets() -> (ObjectSet, ObjectSet) {
    let dir = case("large-cluster-mode-1012-endpoints");
    let all = objects(&dir.join("objects.yaml"));
    let mut fewer = objects(&dir.join("objects.yaml"));
    let eps = fewer.endpoint_slices[0].0.endpoints.as_mut().unwrap();
    eps.truncate(eps.len() - 5);
    (all, fewer)
}

#[test]
fn large_cluster_mode_deletes_on_the_same_syncs_as_listing() {
    let dir = case("large-cluster-mode-1012-endpoints");
    let (all, fewer) = large_sets();
    let ours = RecordingBackend::new(IpFamily::V4);
    let theirs = RecordingBackend::new(IpFamily::V4);
    let mut p = proxier(&ours, false);
    let mut q = proxier(&theirs, true);
    let mut off_p = offline(&dir);
    let mut off_q = offline(&dir);
    // (objects, time): start; endpoints go (no scan due: their chains stay); a resync;
    // a sync period after the first scan (deletion); endpoints back; gone again (not due).
    let steps = [
        (&all, 0),
        (&fewer, 5),
        (&fewer, 20),
        (&fewer, 31),
        (&all, 40),
        (&fewer, 45),
        (&fewer, 62),
    ];
    let mut deletions = Vec::new();
    for (i, (set, at)) in steps.iter().enumerate() {
        let m = off_p.next_model(set, &mut Vec::new());
        sync(&mut p, &off_p, m, *at);
        let m = off_q.next_model(set, &mut Vec::new());
        sync(&mut q, &off_q, m, *at);
        let payload = ours.last_payload().unwrap();
        assert_eq!(payload, theirs.last_payload().unwrap(), "sync {i} at {at}s");
        deletions.push(payload.lines().filter(|l| l.starts_with("-X ")).count());
        assert_eq!(ours.tables(), theirs.tables(), "sync {i}");
    }
    // The check above could pass vacuously if neither deleted anything.
    assert_eq!(deletions[1], 0, "not due yet");
    assert!(deletions[3] > 0, "due at 31 s: {deletions:?}");
    assert_eq!(deletions[5], 0, "due again only after 61 s");
    assert!(deletions[6] > 0, "{deletions:?}");
    assert_eq!(ours.listings(), 1, "we list only at start");
    assert_eq!(theirs.listings(), 3, "listing-based: at 0, 31 and 62 s");
}

#[test]
fn failed_restores_and_flushed_tables_list_again() {
    let dir = case("steps-service-deleted");
    let backend = RecordingBackend::new(IpFamily::V4);
    let mut p = proxier(&backend, false);
    let mut off = offline(&dir);
    let set = |n: usize| objects(&dir.join(format!("step-{n}/objects.yaml")));
    let m = off.next_model(&set(1), &mut Vec::new());
    sync(&mut p, &off, m, 0);
    backend.fail_next_restore("boom");
    let m = off.next_model(&set(2), &mut Vec::new());
    let out = p.sync(
        m.clone(),
        |m| off.options_for(m),
        Duration::from_secs(1),
        &Metrics::new(),
    );
    assert!(out.result.is_err());
    assert_eq!(backend.listings(), 1, "the failed sync used the record");
    sync(&mut p, &off, m, 2);
    assert_eq!(backend.listings(), 2, "the retry lists");
    let m = off.next_model(&set(3), &mut Vec::new());
    sync(&mut p, &off, m, 3);
    assert_eq!(backend.listings(), 2);
    // A flushed table: someone else changed the chains.
    backend.flush_table("nat");
    p.force_full();
    let m = off.next_model(&set(3), &mut Vec::new());
    sync(&mut p, &off, m, 4);
    assert_eq!(backend.listings(), 3, "after the canary's report");
    let mut want = RecordingBackend::new(IpFamily::V4);
    kube_proxy_rs::iptables::Backend::ensure_jump_rules(&mut want).unwrap();
    let full = kube_proxy_rs::offline::render_syncs(offline(&dir), &[set(3)], &mut Vec::new());
    kube_proxy_rs::iptables::Backend::restore(&mut want, &full).unwrap();
    assert_eq!(backend.tables()["nat"], want.tables()["nat"]);
}
