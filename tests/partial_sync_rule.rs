//! Which Services a partial sync rewrites (issue 10, "Two partial-sync divergences"):
//! upstream's rule (spec §3.1, §5.5) is "service-port info changed" or "any of its
//! EndpointSlices had a pending change", where a slice change is judged on the fields
//! v1.30 keeps (ports, sorted endpoints with defaulted conditions) or, in 1.35, on the
//! whole object (v1.35 corpus README). Random sequences of object sets are rendered
//! offline and the rewritten Services compared with that rule, computed here from the
//! objects alone.

use kube_proxy_rs::compat::Compat;
use kube_proxy_rs::config::parse_config;
use kube_proxy_rs::model::ip::IpFamily;
use kube_proxy_rs::offline::OfflineProxier;
use kube_proxy_rs::source::objects::parse_objects;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

const SERVICES: [&str; 3] = ["a", "b", "c"];

/// One endpoint: address index, conditions spelled out, node name.
#[derive(Clone, Debug)]
struct Ep {
    ip: u8,
    spelled: bool,
    node: u8,
}

/// One slice of a Service: its endpoints (possibly none), listed reversed or not, and
/// an extra label or not.
#[derive(Clone, Debug)]
struct Slice {
    eps: Vec<Ep>,
    reversed: bool,
    label: bool,
}

#[derive(Clone, Debug)]
struct Svc {
    port: i32,
    traffic_distribution: bool,
    /// Slices `<svc>-0`, `<svc>-1` (absent: `None`).
    slices: [Option<Slice>; 2],
}

type Step = BTreeMap<&'static str, Svc>;

fn ep() -> impl Strategy<Value = Ep> {
    (1u8..5, any::<bool>(), 0u8..2).prop_map(|(ip, spelled, node)| Ep { ip, spelled, node })
}

fn slice() -> impl Strategy<Value = Slice> {
    (
        proptest::collection::vec(ep(), 0..3),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(eps, reversed, label)| Slice {
            eps,
            reversed,
            label,
        })
}

fn svc() -> impl Strategy<Value = Svc> {
    (
        prop_oneof![Just(80), Just(81)],
        any::<bool>(),
        proptest::option::of(slice()),
        proptest::option::weighted(0.4, slice()),
    )
        .prop_map(|(port, td, s0, s1)| Svc {
            port,
            traffic_distribution: td,
            slices: [s0, s1],
        })
}

fn step() -> impl Strategy<Value = Step> {
    proptest::collection::vec(proptest::option::weighted(0.85, svc()), 3).prop_map(|v| {
        SERVICES
            .iter()
            .zip(v)
            .filter_map(|(n, s)| s.map(|s| (*n, s)))
            .collect()
    })
}

fn slice_object(svc: &str, i: usize, s: &Slice) -> Value {
    let mut eps: Vec<Value> = s
        .eps
        .iter()
        .map(|e| {
            let mut v = json!({
                "addresses": [format!("10.244.0.{}", e.ip)],
                "nodeName": format!("node-{}", e.node),
            });
            if e.spelled {
                v["conditions"] = json!({"ready": true, "serving": true, "terminating": false});
            }
            v
        })
        .collect();
    if s.reversed {
        eps.reverse();
    }
    let mut labels = json!({"kubernetes.io/service-name": svc});
    if s.label {
        labels["extra"] = json!("x");
    }
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{svc}-{i}"), "namespace": "ns", "labels": labels},
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"name": "p", "port": 8080, "protocol": "TCP"}]
    })
}

fn service_object(name: &str, s: &Svc, idx: usize) -> Value {
    let mut v = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"clusterIP": format!("10.96.0.{}", idx + 1),
            "clusterIPs": [format!("10.96.0.{}", idx + 1)],
            "ports": [{"name": "p", "port": s.port, "protocol": "TCP"}]}
    });
    if s.traffic_distribution {
        v["spec"]["trafficDistribution"] = json!("PreferClose");
    }
    v
}

/// All slice objects of a step, by name.
fn slices_of(step: &Step) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (n, s) in step {
        for (i, sl) in s.slices.iter().enumerate() {
            if let Some(sl) = sl {
                out.insert(format!("{n}-{i}"), slice_object(n, i, sl));
            }
        }
    }
    out
}

fn yaml(step: &Step) -> String {
    let mut docs: Vec<Value> = vec![json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-0"},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.10"}]}})];
    for (i, n) in SERVICES.iter().enumerate() {
        if let Some(s) = step.get(n) {
            docs.push(service_object(n, s, i));
        }
    }
    docs.extend(slices_of(step).into_values());
    docs.iter()
        .map(|d| serde_yaml_ng::to_string(d).unwrap())
        .collect::<Vec<_>>()
        .join("---\n")
}

/// What v1.30 keeps of a slice: endpoints sorted by address with defaulted conditions
/// (spelled-out `true`s equal omitted ones), node names, ports.
fn v130_view(s: &Value) -> Value {
    let mut eps: Vec<(String, String)> = s["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["addresses"][0].as_str().unwrap().to_string(),
                e["nodeName"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    eps.sort();
    json!({"eps": eps, "ports": s["ports"]})
}

/// The rule: Services whose service-port info (here: the port, not trafficDistribution)
/// changed, appeared or went, plus Services with a slice added, deleted or changed as
/// the release compares slices.
fn expected_changed(prev: &Step, next: &Step, whole_object: bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for n in SERVICES {
        match (prev.get(n), next.get(n)) {
            (Some(a), Some(b)) if a.port == b.port => {}
            (None, None) => {}
            _ => {
                out.insert(format!("ns/{n}"));
            }
        }
    }
    let (a, b) = (slices_of(prev), slices_of(next));
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for name in names {
        let changed = match (a.get(name), b.get(name)) {
            (Some(x), Some(y)) if whole_object => x != y,
            (Some(x), Some(y)) => v130_view(x) != v130_view(y),
            _ => true,
        };
        if changed {
            let svc = name.rsplit_once('-').unwrap().0;
            out.insert(format!("ns/{svc}"));
        }
    }
    out
}

/// Services whose KUBE-SVC chain a payload writes (each has endpoints here).
fn written(payload: &str) -> BTreeSet<String> {
    payload
        .lines()
        .filter(|l| l.starts_with("-A KUBE-SVC-"))
        .filter_map(|l| l.split("--comment ").nth(1))
        .filter_map(|c| c.trim_start_matches('"').split(':').next())
        .map(str::to_string)
        .collect()
}

fn has_endpoints(step: &Step, svc: &str) -> bool {
    let n = svc.trim_start_matches("ns/");
    step.get(n)
        .is_some_and(|s| s.slices.iter().flatten().any(|sl| !sl.eps.is_empty()))
}

fn config() -> kube_proxy_rs::config::KubeProxyConfiguration {
    parse_config(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nhostnameOverride: node-0\n",
        "config.yaml",
    )
    .unwrap()
}

fn check(steps: &[Step], compat: Compat) -> Result<(), TestCaseError> {
    let cfg = config();
    let whole = compat.version == kube_proxy_rs::compat::EmulatedVersion::V1_35;
    let mut p = OfflineProxier::new(cfg, compat, IpFamily::V4);
    let mut warn = Vec::new();
    for (i, st) in steps.iter().enumerate() {
        let set = parse_objects(&yaml(st), "objects.yaml").unwrap();
        let model = p.next_model(&set, &mut warn);
        let sync = p.sync(model);
        if i == 0 {
            prop_assert!(sync.plan.full);
            continue;
        }
        prop_assert!(!sync.plan.full);
        let want = expected_changed(&steps[i - 1], st, whole);
        let got: BTreeSet<String> = sync.plan.changed.iter().map(|k| k.to_string()).collect();
        prop_assert_eq!(&got, &want, "step {} of {:?}", i, steps);
        let want_written: BTreeSet<String> = want
            .iter()
            .filter(|s| has_endpoints(st, s))
            .cloned()
            .collect();
        prop_assert_eq!(written(&sync.output.payload), want_written);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn v1_30_partial_syncs_follow_the_change_trackers(
        steps in proptest::collection::vec(step(), 2..5)
    ) {
        check(&steps, Compat::v1_30())?;
    }

    #[test]
    fn v1_35_partial_syncs_follow_the_change_trackers(
        steps in proptest::collection::vec(step(), 2..5)
    ) {
        check(&steps, Compat::v1_35())?;
    }
}

fn one(port: i32, slices: [Option<Slice>; 2]) -> Step {
    BTreeMap::from([(
        "a",
        Svc {
            port,
            traffic_distribution: false,
            slices,
        },
    )])
}

fn real() -> Slice {
    Slice {
        eps: vec![Ep {
            ip: 1,
            spelled: false,
            node: 0,
        }],
        reversed: false,
        label: false,
    }
}

/// The two divergences of the issue, spelled out: an empty slice added beside the real
/// one rewrites the Service (both releases); trafficDistribution alone does not.
#[test]
fn an_empty_slice_beside_the_real_one_rewrites_the_service() {
    let empty = Slice {
        eps: vec![],
        reversed: false,
        label: false,
    };
    let steps = [
        one(80, [Some(real()), None]),
        one(80, [Some(real()), Some(empty)]),
        one(80, [Some(real()), None]),
    ];
    for compat in [Compat::v1_30(), Compat::v1_35()] {
        let cfg = config();
        let mut p = OfflineProxier::new(cfg, compat, IpFamily::V4);
        for (i, st) in steps.iter().enumerate() {
            let set = parse_objects(&yaml(st), "o").unwrap();
            let m = p.next_model(&set, &mut Vec::new());
            let s = p.sync(m);
            if i > 0 {
                assert_eq!(written(&s.output.payload), BTreeSet::from(["ns/a".into()]));
                assert!(
                    s.output.payload.contains("-A KUBE-SEP-"),
                    "{}",
                    s.output.payload
                );
            }
        }
        // trafficDistribution added: no change, nothing written.
        let mut td = one(80, [Some(real()), None]);
        td.get_mut("a").unwrap().traffic_distribution = true;
        let set = parse_objects(&yaml(&td), "o").unwrap();
        let m = p.next_model(&set, &mut Vec::new());
        let s = p.sync(m);
        assert!(s.plan.changed.is_empty(), "{:?}", s.plan.changed);
        assert!(written(&s.output.payload).is_empty());
    }
}

/// 1.35 only: conditions spelled out (same meaning) rewrite the Service.
#[test]
fn spelled_out_conditions_are_a_change_in_1_35_only() {
    let mut spelled = real();
    spelled.eps[0].spelled = true;
    let steps = [
        one(80, [Some(real()), None]),
        one(80, [Some(spelled), None]),
    ];
    for (compat, rewrites) in [(Compat::v1_30(), false), (Compat::v1_35(), true)] {
        let cfg = config();
        let mut p = OfflineProxier::new(cfg, compat, IpFamily::V4);
        let mut last = None;
        for st in &steps {
            let set = parse_objects(&yaml(st), "o").unwrap();
            let m = p.next_model(&set, &mut Vec::new());
            last = Some(p.sync(m));
        }
        let s = last.unwrap();
        assert_eq!(!written(&s.output.payload).is_empty(), rewrites);
    }
}

/// S4: deleting this node's Node forces a full sync in 1.30 (labels cleared), not in
/// 1.35 (the node manager keeps what it knew; the daemon exits instead).
#[test]
fn node_deletion_forces_a_full_sync_in_1_30_only() {
    let st = one(80, [Some(real()), None]);
    for (compat, full) in [(Compat::v1_30(), true), (Compat::v1_35(), false)] {
        let mut p = OfflineProxier::new(config(), compat, IpFamily::V4);
        let mut set = parse_objects(&yaml(&st), "o").unwrap();
        let m = p.next_model(&set, &mut Vec::new());
        assert!(p.sync(m).plan.full);
        set.nodes.clear();
        let m = p.next_model(&set, &mut Vec::new());
        assert_eq!(p.sync(m).plan.full, full, "{:?}", compat.version);
    }
}
