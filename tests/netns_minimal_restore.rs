//! `--iptables-minimal-restore`: partial syncs restore only the chains whose rules changed.
//! * With a recording backend: after every golden step the tables equal the default path's,
//!   and a one-endpoint change at 30 Services writes neither KUBE-SERVICES nor the filter
//!   table, only that Service's SVC/SEP chains.
//! * In network namespaces, iptables-legacy and iptables-nft: a sequence of changes leaves
//!   `iptables-save` equal to the default path's and to the corpus' `step-N.save`; an
//!   established connection through a ClusterIP survives, and the counters of unchanged
//!   shared chains stand (the default path resets them).

mod common;
use common::*;
use common::{golden_case as case, read_text as read};
use kube_proxy_rs::compat::Compat;
use kube_proxy_rs::config;
use kube_proxy_rs::iptables::recording::RecordingBackend;
use kube_proxy_rs::iptables::{Backend, BackendError, CliBackend, Mode, Toolset};
use kube_proxy_rs::model::ip::IpFamily;
use kube_proxy_rs::model::ClusterModel;
use kube_proxy_rs::offline::OfflineProxier;
use kube_proxy_rs::rules::names::ChainKey;
use kube_proxy_rs::rules::ProxierOptions;
use kube_proxy_rs::server::metrics::Metrics;
use kube_proxy_rs::source::objects::{load_objects, parse_objects};
use kube_proxy_rs::sync::proxier::Proxier;
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn proxier(b: Box<dyn Backend>, minimal: bool) -> Proxier {
    Proxier::new(b, Duration::from_secs(30), Compat::v1_30()).with_minimal_restore(minimal)
}

fn sync(p: &mut Proxier, opts: &ProxierOptions, model: ClusterModel, at: u64) -> bool {
    let o = opts.clone();
    let out = p.sync(model, move |_| o, Duration::from_secs(at), &Metrics::new());
    out.result.expect("sync succeeds");
    out.full
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

const STEP_CASES: [&str; 4] = [
    "steps-service-deleted",
    "steps-scale-up",
    "steps-scale-down",
    "steps-endpoint-not-ready",
];

#[test]
fn minimal_payloads_leave_the_default_tables_on_golden_steps() {
    for name in STEP_CASES {
        let (opts, models) = golden_models(&case(name));
        let (ours, theirs) = (
            RecordingBackend::new(IpFamily::V4),
            RecordingBackend::new(IpFamily::V4),
        );
        let mut p = proxier(Box::new(ours.clone()), true);
        let mut q = proxier(Box::new(theirs.clone()), false);
        let mut smaller = 0;
        for (i, m) in models.into_iter().enumerate() {
            let full = sync(&mut p, &opts, m.clone(), i as u64);
            sync(&mut q, &opts, m, i as u64);
            let (mine, default) = (ours.payloads(), theirs.payloads());
            let (mine, default) = (mine.last().unwrap(), default.last().unwrap());
            if full {
                assert_eq!(
                    mine,
                    default,
                    "{name} step {}: full syncs are upstream's",
                    i + 1
                );
            } else if mine.len() < default.len() {
                smaller += 1;
            }
            assert_eq!(ours.tables(), theirs.tables(), "{name} step {}", i + 1);
        }
        assert!(smaller > 0, "{name}: some partial payload was cut down");
    }
}

/// `n` ClusterIP Services with one endpoint each; Service 0 has `first` endpoints.
fn many(n: usize, first: usize) -> String {
    let mut y = NODE_YAML.to_string();
    let ips: Vec<String> = (0..n).map(|i| format!("10.96.1.{}", i + 1)).collect();
    let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    for i in 0..n {
        let eps = if i == 0 { first } else { 1 };
        y.push_str(
            &Svc {
                name: &names[i],
                cluster_ip: &ips[i],
                endpoints: Some((0..eps).map(|e| ((i + e) % 4, true)).collect()),
                ..Svc::default()
            }
            .yaml(),
        );
    }
    y
}

#[test]
fn one_endpoint_change_writes_only_that_services_chains() {
    let cfg = config::load_config(&case("steps-scale-up").join("config.yaml")).unwrap();
    let off = OfflineProxier::new(cfg, Compat::v1_30(), IpFamily::V4);
    let model = |first| {
        off.build_model(
            &parse_objects(&many(30, first), "x").unwrap(),
            &mut Vec::new(),
        )
    };
    let (a, b) = (model(1), model(2));
    let opts = off.options_for(&a);
    let mut payloads = Vec::new();
    for minimal in [true, false] {
        let rec = RecordingBackend::new(IpFamily::V4);
        let mut p = proxier(Box::new(rec.clone()), minimal);
        assert!(sync(&mut p, &opts, a.clone(), 0));
        assert!(!sync(&mut p, &opts, b.clone(), 1), "a partial sync");
        payloads.push(rec.last_payload().unwrap());
    }
    let (mine, default) = (&payloads[0], &payloads[1]);
    assert!(default.contains(":KUBE-SERVICES - [0:0]\n"), "{default}");
    assert!(default.starts_with("*filter\n"), "{default}");
    assert!(!mine.contains("KUBE-SERVICES"), "{mine}");
    assert!(!mine.contains("*filter"), "{mine}");
    let decls: Vec<&str> = mine.lines().filter(|l| l.starts_with(':')).collect();
    // s0's SVC chain (now two endpoints) and the new endpoint's SEP chain; s0's first
    // SEP chain is unchanged.
    assert_eq!(decls.len(), 2, "{mine}");
    assert!(
        decls[0].starts_with(":KUBE-SEP-") && decls[1].starts_with(":KUBE-SVC-"),
        "{mine}"
    );
    assert!(mine.contains("default/s0:p -> 10.244.1.11:8080"), "{mine}");
    assert!(
        mine.len() * 4 < default.len(),
        "{} vs {}",
        mine.len(),
        default.len()
    );
}

#[test]
fn a_failed_restore_falls_back_to_the_full_payload() {
    let (opts, models) = golden_models(&case("steps-scale-up"));
    let rec = RecordingBackend::new(IpFamily::V4);
    let mut p = proxier(Box::new(rec.clone()), true);
    sync(&mut p, &opts, models[0].clone(), 0);
    rec.fail_next_restore("boom");
    let o = opts.clone();
    let out = p.sync(
        models[1].clone(),
        move |_| o,
        Duration::from_secs(1),
        &Metrics::new(),
    );
    assert!(out.result.is_err());
    // The retry is upstream's full payload, byte for byte: the default path's retry.
    assert!(
        sync(&mut p, &opts, models[1].clone(), 2),
        "full after a failure"
    );
    let theirs = RecordingBackend::new(IpFamily::V4);
    let mut q = proxier(Box::new(theirs.clone()), false);
    sync(&mut q, &opts, models[0].clone(), 0);
    theirs.fail_next_restore("boom");
    let o = opts.clone();
    assert!(q
        .sync(
            models[1].clone(),
            move |_| o,
            Duration::from_secs(1),
            &Metrics::new()
        )
        .result
        .is_err());
    sync(&mut q, &opts, models[1].clone(), 2);
    assert_eq!(rec.last_payload(), theirs.last_payload());
    // And the record was rebuilt from it: the next partial sync is cut down again.
    sync(&mut p, &opts, models[2].clone(), 3);
    sync(&mut q, &opts, models[2].clone(), 3);
    assert!(rec.last_payload().unwrap().len() < theirs.last_payload().unwrap().len());
    assert_eq!(rec.tables(), theirs.tables());
}

// ---- network namespaces -------------------------------------------------------------

/// The real CLI backend, logging restores.
struct Logged {
    inner: CliBackend,
    restores: Arc<Mutex<Vec<String>>>,
}

impl Backend for Logged {
    fn family(&self) -> IpFamily {
        self.inner.family()
    }
    fn ensure_jump_rules(&mut self) -> Result<(), BackendError> {
        self.inner.ensure_jump_rules()
    }
    fn restore(&mut self, payload: &str) -> Result<(), BackendError> {
        self.restores.lock().unwrap().push(payload.to_string());
        self.inner.restore(payload)
    }
    fn nat_chains(&mut self) -> Result<HashSet<ChainKey>, BackendError> {
        self.inner.nat_chains()
    }
    fn live_tables(&mut self) -> Result<Option<String>, BackendError> {
        self.inner.live_tables()
    }
}

fn mode_of(name: &str) -> Mode {
    match name {
        "legacy" => Mode::Legacy,
        _ => Mode::Nft,
    }
}

/// A proxier on the namespace's real iptables (built inside it), and its restores.
fn cli_proxier(mode: &str, minimal: bool) -> (Proxier, Arc<Mutex<Vec<String>>>) {
    let tools = Toolset::probe(IpFamily::V4, mode_of(mode)).expect("iptables installed");
    let restores = Arc::new(Mutex::new(Vec::new()));
    let b = Logged {
        inner: CliBackend::new(tools),
        restores: restores.clone(),
    };
    (proxier(Box::new(b), minimal), restores)
}

/// Syncs `models` in `ns` with one proxier; returns its restores.
fn run_syncs(
    ns: &Netns,
    mode: &str,
    opts: ProxierOptions,
    models: Vec<ClusterModel>,
    minimal: bool,
) -> Vec<String> {
    let mode = mode.to_string();
    ns.enter(move || {
        let (mut p, restores) = cli_proxier(&mode, minimal);
        for (i, m) in models.into_iter().enumerate() {
            sync(&mut p, &opts, m, i as u64);
        }
        let r = restores.lock().unwrap().clone();
        r
    })
}

/// Endpoint added, NodePort Service added, endpoint removed, Service removed.
fn change_sequence(topo: &Topology) -> (ProxierOptions, Vec<ClusterModel>) {
    let web = |eps: Vec<(usize, bool)>| {
        Svc {
            name: "web",
            cluster_ip: "10.96.0.10",
            endpoints: Some(eps),
            ..Svc::default()
        }
        .yaml()
    };
    let np = Svc {
        name: "np",
        cluster_ip: "10.96.0.20",
        node_port: Some(30080),
        extra_spec: "  type: NodePort\n",
        endpoints: Some(vec![(1, true)]),
        ..Svc::default()
    }
    .yaml();
    let steps = [
        format!("{NODE_YAML}{}", web(vec![(0, true)])),
        format!("{NODE_YAML}{}", web(vec![(0, true), (1, true)])),
        format!("{NODE_YAML}{}{np}", web(vec![(0, true), (1, true)])),
        format!("{NODE_YAML}{}{np}", web(vec![(1, true)])),
        format!("{NODE_YAML}{}", web(vec![(1, true)])),
    ];
    let (cfg_path, _) = topo.write_inputs(&steps[0]);
    let cfg = config::load_config(&cfg_path).unwrap();
    let mut off = OfflineProxier::new(cfg, Compat::v1_30(), IpFamily::V4);
    let models: Vec<ClusterModel> = steps
        .iter()
        .map(|y| off.next_model(&parse_objects(y, "x").unwrap(), &mut Vec::new()))
        .collect();
    (off.options_for(&models[0]), models)
}

fn minimal_equals_default(mode: &str) {
    if !can_run() {
        return;
    }
    // Golden steps: the corpus' kernel state after every step.
    for name in ["steps-service-deleted", "steps-scale-up"] {
        let dir = case(name);
        let (opts, models) = golden_models(&dir);
        for n in 2..=models.len() {
            let (ours, _) = ns_pair("mg");
            run_syncs(&ours, mode, opts.clone(), models[..n].to_vec(), true);
            assert_eq!(
                canonical(&ours.save(mode)),
                canonical(&read(&dir.join(format!("step-{n}.save")))),
                "{name} step {n}"
            );
        }
    }
    // A change sequence on a small topology: the default path's state after each prefix.
    let topo = Topology::new(2);
    let (opts, models) = change_sequence(&topo);
    for n in 2..=models.len() {
        let (ours, theirs) = ns_pair("ms");
        let mine = run_syncs(&ours, mode, opts.clone(), models[..n].to_vec(), true);
        let default = run_syncs(&theirs, mode, opts.clone(), models[..n].to_vec(), false);
        assert_eq!(mine[0], default[0], "the first (full) sync is upstream's");
        let (a, b) = (mine.last().unwrap(), default.last().unwrap());
        assert!(a.len() < b.len(), "step {n}: cut down\n{a}");
        assert_eq!(ours.save(mode), theirs.save(mode), "step {n}");
    }
}

#[test]
fn minimal_restore_leaves_the_default_state_legacy() {
    minimal_equals_default("legacy");
}

#[test]
fn minimal_restore_leaves_the_default_state_nft() {
    minimal_equals_default("nft");
}

/// `iptables-save -c` lines of `chain`'s rules in `table`, with counters.
fn counted_rules(ns: &Netns, mode: &str, table: &str, chain: &str) -> Vec<String> {
    let text = ns.exec_ok(&[&format!("iptables-{mode}-save"), "-c", "-t", table]);
    text.lines()
        .filter(|l| l.contains(&format!("-A {chain} ")))
        .map(str::to_string)
        .collect()
}

fn connection_survives(mode: &str) {
    if !can_run() {
        return;
    }
    let topo = Topology::new(2);
    let objects = |other: Vec<(usize, bool)>| {
        let web = Svc {
            name: "web",
            cluster_ip: "10.96.0.10",
            endpoints: Some(vec![(0, true)]),
            ..Svc::default()
        };
        let other = Svc {
            name: "other",
            cluster_ip: "10.96.0.11",
            endpoints: Some(other),
            ..Svc::default()
        };
        format!("{NODE_YAML}{}{}", web.yaml(), other.yaml())
    };
    let (cfg_path, _) = topo.write_inputs(&objects(vec![(1, true)]));
    let cfg = config::load_config(&cfg_path).unwrap();
    let mut off = OfflineProxier::new(cfg, Compat::v1_30(), IpFamily::V4);
    let mut model = |y: String| off.next_model(&parse_objects(&y, "x").unwrap(), &mut Vec::new());
    let (a, b) = (
        model(objects(vec![(1, true)])),
        model(objects(vec![(0, true), (1, true)])),
    );
    let opts = off.options_for(&a);
    // The proxier goes into the node's namespace for each sync and comes back out.
    let m = mode.to_string();
    let (p, restores) = topo.node.enter(move || cli_proxier(&m, true));
    let o = opts.clone();
    let mut p = topo.node.enter(move || {
        let mut p = p;
        sync(&mut p, &o, a, 0);
        p
    });
    let mut conn = connect_from(&topo.client, None, sock("10.96.0.10", 80), IO_TIMEOUT).unwrap();
    let server = conn.ask().unwrap().server;
    let before = counted_rules(&topo.node, mode, "nat", "KUBE-SERVICES");
    assert!(
        before
            .iter()
            .any(|l| !l.starts_with("[0:0]") && l.contains("default/web:p cluster IP")),
        "the connection was counted: {before:?}"
    );
    // Another Service gains an endpoint: a minimal sync.
    p = topo.node.enter(move || {
        sync(&mut p, &opts, b, 1);
        p
    });
    drop(p);
    let restores = restores.lock().unwrap().clone();
    let last = restores.last().unwrap();
    assert!(last.contains("default/other:p -> "), "{last}");
    assert!(!last.contains("KUBE-SERVICES"), "{last}");
    assert_eq!(
        counted_rules(&topo.node, mode, "nat", "KUBE-SERVICES"),
        before,
        "KUBE-SERVICES was not rewritten: its counters stand"
    );
    assert_eq!(
        conn.ask().unwrap().server,
        server,
        "established connection survives"
    );
    assert!(tcp_once(&topo.client, None, sock("10.96.0.11", 80)).is_ok());
}

#[test]
fn established_connection_survives_a_minimal_sync_legacy() {
    connection_survives("legacy");
}

#[test]
fn established_connection_survives_a_minimal_sync_nft() {
    connection_survives("nft");
}
