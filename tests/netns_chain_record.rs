//! In network namespaces, with iptables-legacy and iptables-nft:
//! * stale chains computed from the proxier's own record (no listing between syncs) leave
//!   the kernel exactly as the listing-based path does, and as the corpus' `step-N.save`;
//! * a restart on a node whose rules are right restores nothing (counters and an
//!   established connection through a ClusterIP untouched), and on a node whose rules
//!   partly differ restores only the differing chains, leaving what a full restore would.

mod common;
use common::*;
use common::{golden_case as case, read_text as read};
use kube_proxy_rs::compat::Compat;
use kube_proxy_rs::config;
use kube_proxy_rs::iptables::{Backend, BackendError, CliBackend, Mode, Toolset};
use kube_proxy_rs::model::ip::IpFamily;
use kube_proxy_rs::model::ClusterModel;
use kube_proxy_rs::offline::OfflineProxier;
use kube_proxy_rs::rules::jumps::JUMP_RULES;
use kube_proxy_rs::rules::names::ChainKey;
use kube_proxy_rs::rules::ProxierOptions;
use kube_proxy_rs::server::metrics::Metrics;
use kube_proxy_rs::source::objects::load_objects;
use kube_proxy_rs::sync::proxier::Proxier;
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the real backend was asked to do.
#[derive(Default)]
struct Log {
    restores: Vec<String>,
    listings: usize,
    /// Jump rules checked with their own `-N` / `-C` execs (not shown by a listing).
    jumps_checked: usize,
}

/// The real CLI backend, logging restores and listings.
struct Logged {
    inner: CliBackend,
    log: Arc<Mutex<Log>>,
}

impl Backend for Logged {
    fn family(&self) -> IpFamily {
        self.inner.family()
    }
    fn ensure_jump_rules(&mut self) -> Result<(), BackendError> {
        self.ensure_missing_jump_rules(&[])
    }
    fn ensure_missing_jump_rules(&mut self, present: &[bool]) -> Result<(), BackendError> {
        let shown = present.iter().filter(|p| **p).count();
        self.log.lock().unwrap().jumps_checked += JUMP_RULES.len() - shown;
        self.inner.ensure_missing_jump_rules(present)
    }
    fn restore(&mut self, payload: &str) -> Result<(), BackendError> {
        self.log.lock().unwrap().restores.push(payload.to_string());
        self.inner.restore(payload)
    }
    fn nat_chains(&mut self) -> Result<HashSet<ChainKey>, BackendError> {
        self.log.lock().unwrap().listings += 1;
        self.inner.nat_chains()
    }
    fn live_tables(&mut self) -> Result<Option<String>, BackendError> {
        self.log.lock().unwrap().listings += 1;
        self.inner.live_tables()
    }
}

fn mode_of(name: &str) -> Mode {
    match name {
        "legacy" => Mode::Legacy,
        _ => Mode::Nft,
    }
}

/// Syncs `steps` (model, whether the proxier is fresh, i.e. restarted) in `ns`; a fresh
/// proxier per `true`. `upstream`: list before every deletion, full restore at start.
fn run_syncs(
    ns: &Netns,
    mode: &str,
    opts: ProxierOptions,
    steps: Vec<(ClusterModel, bool)>,
    upstream: bool,
) -> Log {
    run_syncs_failing(ns, mode, opts, steps, upstream, 0)
}

/// [`run_syncs`] where each restarted proxier's first `failing` listings fail.
fn run_syncs_failing(
    ns: &Netns,
    mode: &str,
    opts: ProxierOptions,
    steps: Vec<(ClusterModel, bool)>,
    upstream: bool,
    failing: usize,
) -> Log {
    let log = Arc::new(Mutex::new(Log::default()));
    let l = log.clone();
    let m = mode_of(mode);
    ns.enter(move || {
        let mut p: Option<Proxier> = None;
        for (i, (model, fresh)) in steps.into_iter().enumerate() {
            if fresh || p.is_none() {
                let tools = Toolset::probe(IpFamily::V4, m).expect("iptables installed");
                let b = Logged {
                    inner: CliBackend::new(tools),
                    log: l.clone(),
                };
                p = Some(
                    Proxier::new(Box::new(b), Duration::from_secs(30), Compat::v1_30())
                        .with_upstream_listing(upstream)
                        .with_failing_listings(if i > 0 { failing } else { 0 }),
                );
            }
            let o = opts.clone();
            let out = p.as_mut().unwrap().sync(
                model,
                move |_| o,
                Duration::from_secs(i as u64),
                &Metrics::new(),
            );
            out.result.expect("sync succeeds");
        }
    });
    Arc::try_unwrap(log)
        .ok()
        .expect("one owner")
        .into_inner()
        .unwrap()
}

/// The golden steps' models and the proxier options of their first step.
fn golden_models(dir: &Path) -> (ProxierOptions, Vec<ClusterModel>) {
    let cfg = config::load_config(&dir.join("config.yaml")).unwrap();
    let mut off = OfflineProxier::new(cfg, Compat::v1_30(), IpFamily::V4);
    let steps = read(&dir.join("steps.txt")).lines().count();
    let mut models = Vec::new();
    for step in 1..=steps {
        let p = dir.join(format!("step-{step}/objects.yaml"));
        let set = load_objects(p.to_str().unwrap()).unwrap();
        models.push(off.next_model(&set, &mut Vec::new()));
    }
    (off.options_for(&models[0]), models)
}

fn record_matches_listing(mode: &str) {
    if !can_run() {
        return;
    }
    for name in [
        "steps-service-deleted",
        "steps-endpoint-not-ready",
        "steps-scale-down",
    ] {
        let dir = case(name);
        let (opts, models) = golden_models(&dir);
        for n in 1..=models.len() {
            // The first n steps, in one proxier each side, in fresh namespaces.
            let (ours, theirs) = ns_pair("cr");
            let steps: Vec<_> = models[..n].iter().map(|m| (m.clone(), false)).collect();
            let a = run_syncs(&ours, mode, opts.clone(), steps.clone(), false);
            let b = run_syncs(&theirs, mode, opts.clone(), steps, true);
            assert_eq!(a.listings, 1, "{name}: we list only at start");
            assert_eq!(b.listings, n, "{name}: listing-based lists every sync");
            assert_eq!(
                a.restores, b.restores,
                "{name} steps 1..={n}: same payloads"
            );
            let save = ours.save(mode);
            assert_eq!(
                save,
                theirs.save(mode),
                "{name} step {n}: same kernel state"
            );
            assert_eq!(
                canonical(&save),
                canonical(&read(&dir.join(format!("step-{n}.save")))),
                "{name} step {n}: the corpus' kernel state"
            );
        }
    }
}

#[test]
fn stale_chains_from_the_record_leave_the_listing_state_legacy() {
    record_matches_listing("legacy");
}

#[test]
fn stale_chains_from_the_record_leave_the_listing_state_nft() {
    record_matches_listing("nft");
}

/// `iptables-save -c` without comment lines: rules with their counters.
fn save_counters(ns: &Netns, mode: &str) -> String {
    ns.exec_ok(&[&format!("iptables-{mode}-save"), "-c"])
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn restart_keeps_connections(mode: &str) {
    if !can_run() {
        return;
    }
    let topo = Topology::new(2);
    let svc = Svc {
        name: "web",
        cluster_ip: "10.96.0.10",
        endpoints: Some(vec![(0, true), (1, true)]),
        ..Svc::default()
    };
    let objects = format!("{NODE_YAML}{}", svc.yaml());
    let (cfg_path, obj_path) = topo.write_inputs(&objects);
    let cfg = config::load_config(&cfg_path).unwrap();
    let off = OfflineProxier::new(cfg, Compat::v1_30(), IpFamily::V4);
    let set = load_objects(obj_path.to_str().unwrap()).unwrap();
    let model = off.build_model(&set, &mut Vec::new());
    let opts = off.options_for(&model);

    let first = run_syncs(
        &topo.node,
        mode,
        opts.clone(),
        vec![(model.clone(), true)],
        false,
    );
    assert_eq!(
        first.restores.len(),
        1,
        "a fresh node gets the full payload"
    );
    let full_state = topo.node.save(mode);
    let mut conn = connect_from(&topo.client, None, sock("10.96.0.10", 80), IO_TIMEOUT).unwrap();
    let server = conn.ask().unwrap().server;
    let counters = save_counters(&topo.node, mode);
    assert!(
        counters
            .lines()
            .any(|l| l.starts_with("[1:") && l.contains("KUBE-SEP-")),
        "the connection was counted: {counters}"
    );

    // Restart on a node whose rules are right: nothing restored, nothing reset.
    let again = run_syncs(
        &topo.node,
        mode,
        opts.clone(),
        vec![(model.clone(), true)],
        false,
    );
    assert_eq!(again.restores, Vec::<String>::new(), "no restore");
    assert_eq!(again.listings, 1);
    assert_eq!(
        first.jumps_checked,
        JUMP_RULES.len(),
        "a fresh node checks all"
    );
    assert_eq!(again.jumps_checked, 0, "the listing showed every jump rule");
    assert_eq!(
        save_counters(&topo.node, mode),
        counters,
        "counters untouched"
    );
    assert_eq!(
        conn.ask().unwrap().server,
        server,
        "established connection survives"
    );

    // Restart on a node with one chain tampered with and a stale chain: only those.
    let ipt = format!("iptables-{mode}");
    topo.node.exec_ok(&[
        &ipt,
        "-t",
        "nat",
        "-I",
        "KUBE-SERVICES",
        "-d",
        "10.96.0.99/32",
        "-j",
        "RETURN",
    ]);
    topo.node
        .exec_ok(&[&ipt, "-t", "nat", "-N", "KUBE-SEP-STALE0000000000"]);
    // And a jump rule gone: the listing shows it missing, so it is put back.
    topo.node.exec_ok(&[
        &ipt,
        "-t",
        "nat",
        "-D",
        "PREROUTING",
        "-m",
        "comment",
        "--comment",
        "kubernetes service portals",
        "-j",
        "KUBE-SERVICES",
    ]);
    let fix = run_syncs(
        &topo.node,
        mode,
        opts.clone(),
        vec![(model.clone(), true)],
        false,
    );
    assert_eq!(fix.restores.len(), 1);
    assert_eq!(fix.jumps_checked, 1, "only the missing jump rule");
    let p = &fix.restores[0];
    let decls: Vec<&str> = p.lines().filter(|l| l.starts_with(':')).collect();
    assert_eq!(
        decls,
        [
            ":KUBE-SERVICES - [0:0]",
            ":KUBE-SEP-STALE0000000000 - [0:0]"
        ],
        "{p}"
    );
    assert!(
        p.starts_with("*nat\n") && p.ends_with("-X KUBE-SEP-STALE0000000000\nCOMMIT\n"),
        "{p}"
    );
    assert_eq!(
        topo.node.save(mode),
        full_state,
        "what the full restore left"
    );
    // The SEP chains were not rewritten: their counters stand.
    let sep_counters = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.contains("-A KUBE-SEP-"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        sep_counters(&save_counters(&topo.node, mode)),
        sep_counters(&counters)
    );
    assert_eq!(
        conn.ask().unwrap().server,
        server,
        "established connection survives"
    );
    // New connections still work through the rules.
    assert!(tcp_once(&topo.client, None, sock("10.96.0.10", 80)).is_ok());
}

#[test]
fn restart_without_rewrites_keeps_connections_legacy() {
    restart_keeps_connections("legacy");
}

#[test]
fn restart_without_rewrites_keeps_connections_nft() {
    restart_keeps_connections("nft");
}

/// Corpus cases: restart on each case's state restores nothing; and a restart with the
/// objects of a later step restores only differing chains, leaving the full restore's state.
fn restart_on_corpus_states(mode: &str) {
    if !can_run() {
        return;
    }
    for name in [
        "clusterip-single-port",
        "nodeport-basic",
        "session-affinity-clientip-default",
        "loadbalancer-source-ranges",
        "realistic-cluster",
    ] {
        let dir = case(name);
        let cfg = config::load_config(&dir.join("config.yaml")).unwrap();
        let off = OfflineProxier::new(cfg, Compat::v1_30(), IpFamily::V4);
        let p = dir.join("objects.yaml");
        let set = load_objects(p.to_str().unwrap()).unwrap();
        let model = off.build_model(&set, &mut Vec::new());
        let opts = off.options_for(&model);
        let (ns, _) = ns_pair("rc");
        let steps = vec![(model.clone(), true), (model, true)];
        let log = run_syncs(&ns, mode, opts, steps, false);
        assert_eq!(
            log.restores.len(),
            1,
            "{name}: the restart restores nothing"
        );
        assert_eq!(log.restores[0], read(&dir.join("expected.rules")), "{name}");
        assert_eq!(
            canonical(&ns.save(mode)),
            canonical(&read(&dir.join("expected.save"))),
            "{name}"
        );
    }
    for name in [
        "steps-scale-up",
        "steps-service-deleted",
        "steps-endpoint-not-ready",
    ] {
        let dir = case(name);
        let (opts, models) = golden_models(&dir);
        let last = models.len();
        let (ours, full) = ns_pair("rs");
        // Step 1 applied, then a restart that finds the last step's objects.
        let a = run_syncs(
            &ours,
            mode,
            opts.clone(),
            vec![(models[0].clone(), true), (models[last - 1].clone(), true)],
            false,
        );
        let b = run_syncs(
            &full,
            mode,
            opts.clone(),
            vec![(models[0].clone(), true), (models[last - 1].clone(), true)],
            true,
        );
        assert_eq!(a.restores.len(), 2, "{name}");
        let (mine, theirs) = (&a.restores[1], &b.restores[1]);
        let decls = |p: &str| p.lines().filter(|l| l.starts_with(':')).count();
        assert!(
            decls(mine) < decls(theirs),
            "{name}: only differing chains\n{mine}"
        );
        assert_eq!(
            ours.save(mode),
            full.save(mode),
            "{name}: the full restore's state"
        );
        assert_eq!(
            canonical(&ours.save(mode)),
            canonical(&read(&dir.join(format!("step-{last}.save")))),
            "{name}"
        );
    }
}

#[test]
fn restart_on_corpus_states_legacy() {
    restart_on_corpus_states("legacy");
}

#[test]
fn restart_on_corpus_states_nft() {
    restart_on_corpus_states("nft");
}

/// A restart whose listing (made while the payload renders) fails: with the listing made
/// again, only differing chains are restored; with both failing, the whole payload is, as
/// upstream's restart writes it. Either way the kernel ends as after a full restore.
fn restart_with_failed_listing(mode: &str) {
    if !can_run() {
        return;
    }
    for (name, failing) in [("steps-service-deleted", 1), ("steps-scale-up", 2)] {
        let dir = case(name);
        let (opts, models) = golden_models(&dir);
        let last = models.len();
        let steps = || vec![(models[0].clone(), true), (models[last - 1].clone(), true)];
        let (ours, full) = ns_pair("rf");
        let a = run_syncs_failing(&ours, mode, opts.clone(), steps(), false, failing);
        let b = run_syncs(&full, mode, opts.clone(), steps(), true);
        assert_eq!(a.restores.len(), 2, "{name}");
        let (mine, theirs) = (&a.restores[1], &b.restores[1]);
        let decls = |p: &str| p.lines().filter(|l| l.starts_with(':')).count();
        if failing == 1 {
            assert!(decls(mine) < decls(theirs), "{name}: only differing chains");
        } else {
            assert_eq!(mine, theirs, "{name}: the full payload");
            assert_eq!(a.listings, 1, "{name}: only the first start listed");
        }
        assert_eq!(
            ours.save(mode),
            full.save(mode),
            "{name}: the full restore's state"
        );
        assert_eq!(
            canonical(&ours.save(mode)),
            canonical(&read(&dir.join(format!("step-{last}.save")))),
            "{name}"
        );
    }
}

#[test]
fn restart_with_failed_listing_legacy() {
    restart_with_failed_listing("legacy");
}

#[test]
fn restart_with_failed_listing_nft() {
    restart_with_failed_listing("nft");
}
