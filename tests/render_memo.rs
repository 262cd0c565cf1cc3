//! Partial syncs copy unchanged Services from the renderer's memo of the last render
//! instead of rendering them again. The oracle: a fresh renderer (no memo, recomputes
//! everything — the path the corpus checks) given the same model and request must write
//! the same payload, stats and chain record, after every kind of change.

use kube_proxy_rs::compat::Compat;
use kube_proxy_rs::config;
use kube_proxy_rs::model::cache::ModelCache;
use kube_proxy_rs::model::ip::IpFamily;
use kube_proxy_rs::model::node::NodeInfo;
use kube_proxy_rs::model::{service_key, slice_key, ClusterModel, NsName};
use kube_proxy_rs::resolve::{self, HostFacts};
use kube_proxy_rs::rules::names::ChainKey;
use kube_proxy_rs::rules::{ProxierOptions, Renderer, SyncRequest};
use kube_proxy_rs::source::objects::parse_objects;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;

#[derive(Clone)]
struct Svc {
    ty: &'static str,
    local: bool,
    port: u16,
    affinity: bool,
    /// (address index, on this node, ready)
    endpoints: Vec<(u32, bool, bool)>,
}

#[derive(Clone)]
struct State {
    services: BTreeMap<u32, Svc>,
    zone: &'static str,
}

fn svc(i: u32, n: u32) -> Svc {
    Svc {
        ty: ["ClusterIP", "NodePort", "LoadBalancer"][(i % 3) as usize],
        local: i % 5 == 1 && !i.is_multiple_of(3),
        port: 80,
        affinity: i.is_multiple_of(4),
        endpoints: (0..n).map(|j| (j, j % 3 == 2, j % 5 != 4)).collect(),
    }
}

impl State {
    fn yaml(&self) -> String {
        let mut y = format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: node-a, labels: {{topology.kubernetes.io/zone: {}}}}}\nstatus: {{addresses: [{{type: InternalIP, address: 192.168.0.10}}]}}\n",
            self.zone
        );
        for (&i, s) in &self.services {
            let _ = write!(
                y,
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: ns{}}}\nspec:\n  type: {}\n  clusterIP: 10.96.{}.{}\n  externalTrafficPolicy: {}\n  healthCheckNodePort: {}\n  sessionAffinity: {}\n  externalIPs: [{}]\n  ports:\n  - {{name: p, port: {}, nodePort: {}}}\n  - {{name: q, port: 53, protocol: UDP, nodePort: {}}}\n",
                i % 3,
                s.ty,
                i / 250,
                i % 250 + 1,
                if s.local { "Local" } else { "Cluster" },
                32000 + i,
                if s.affinity { "ClientIP" } else { "None" },
                if i % 7 == 0 { format!("198.51.100.{}", i % 250) } else { String::new() },
                s.port,
                30000 + i,
                31000 + i,
            );
            if s.ty == "LoadBalancer" {
                let _ = write!(
                    y,
                    "  loadBalancerSourceRanges: [10.0.0.0/8]\nstatus: {{loadBalancer: {{ingress: [{{ip: 203.0.{}.{}}}]}}}}\n",
                    i / 250,
                    i % 250 + 1
                );
            }
            let _ = write!(
                y,
                "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: s{i}-x, namespace: ns{}, labels: {{kubernetes.io/service-name: s{i}}}}}\naddressType: IPv4\nendpoints:\n",
                i % 3
            );
            for &(j, here, ready) in &s.endpoints {
                let _ = write!(
                    y,
                    "- addresses: [10.{}.{}.{}]\n  nodeName: node-{}\n  conditions: {{ready: {ready}, serving: true, terminating: {}}}\n",
                    1 + i / 250,
                    i % 250,
                    j + 1,
                    if here { "a" } else { "b" },
                    !ready
                );
            }
            y.push_str("ports: [{name: p, port: 8080}, {name: q, port: 5353, protocol: UDP}]\n");
        }
        y
    }
}

/// A ModelCache fed as the daemon's store feeds it, so that unchanged Services keep
/// their shared ports from one model to the next (what the memo recognises).
struct Store {
    cache: ModelCache,
    present: HashSet<NsName>,
    slices: HashSet<String>,
}

impl Store {
    fn model(&mut self, state: &State) -> ClusterModel {
        let objects = parse_objects(&state.yaml(), "generated").unwrap();
        let mut warn = Vec::new();
        let mut now = HashSet::new();
        for (s, _) in &objects.services {
            let k = service_key(s);
            self.cache.apply_service(&k, Some(s), &mut warn);
            now.insert(k);
        }
        for gone in self.present.difference(&now) {
            self.cache.apply_service(gone, None, &mut warn);
        }
        let mut slices = HashSet::new();
        for (sl, _) in &objects.endpoint_slices {
            let k = slice_key(sl);
            self.cache.apply_slice(&k, Some(sl), &mut warn);
            slices.insert(k);
        }
        for gone in self.slices.difference(&slices) {
            self.cache.apply_slice(gone, None, &mut warn);
        }
        let node = &objects.nodes[0].0;
        self.cache.set_node(Some(NodeInfo::read(node, &mut warn)));
        assert!(warn.is_empty(), "{warn:?}");
        self.present = now;
        self.slices = slices;
        self.cache.model()
    }
}

fn options(model: &ClusterModel, masquerade_all: bool) -> ProxierOptions {
    let cfg = config::parse_config(
        &format!("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nhostnameOverride: node-a\nclusterCIDR: 10.0.0.0/8\niptables: {{masqueradeAll: {masquerade_all}}}\n"),
        "test",
    )
    .unwrap();
    let host = HostFacts::offline(model.node.as_ref(), &cfg);
    resolve::proxier_options(
        &cfg,
        &Compat::v1_30(),
        model.node.as_ref(),
        &host,
        IpFamily::V4,
    )
}

/// One sync: what changes before it, and how it is asked for.
struct Step {
    what: &'static str,
    change: fn(&mut State),
    full: bool,
    /// The changed set is left empty (a caller that misses a change): the memo must
    /// still notice the Service's new ports.
    hide_changes: bool,
    masquerade_all: bool,
    release_buffers: bool,
    /// Whether Services must have been copied from the memo (false: it must be unused).
    expect_reuse: bool,
}

const fn step(what: &'static str, change: fn(&mut State), expect_reuse: bool) -> Step {
    Step {
        what,
        change,
        full: false,
        hide_changes: false,
        masquerade_all: false,
        release_buffers: false,
        expect_reuse,
    }
}

fn steps() -> Vec<Step> {
    vec![
        Step {
            full: true,
            ..step("first full sync", |_| {}, false)
        },
        step(
            "Service added",
            |s| {
                s.services.insert(500, svc(500, 4));
            },
            true,
        ),
        step(
            "Service removed",
            |s| {
                s.services.remove(&5);
            },
            true,
        ),
        step(
            "endpoint changed",
            |s| {
                s.services.get_mut(&7).unwrap().endpoints[0].0 = 200;
            },
            true,
        ),
        step(
            "endpoint became unready",
            |s| {
                s.services.get_mut(&8).unwrap().endpoints[0].2 = false;
            },
            true,
        ),
        step(
            "port changed",
            |s| {
                s.services.get_mut(&9).unwrap().port = 81;
            },
            true,
        ),
        step(
            "eTP changed",
            |s| {
                let v = s.services.get_mut(&10).unwrap();
                v.local = !v.local;
            },
            true,
        ),
        step(
            "affinity and type changed",
            |s| {
                let v = s.services.get_mut(&11).unwrap();
                v.affinity = !v.affinity;
                v.ty = "LoadBalancer";
            },
            true,
        ),
        step("nothing changed", |_| {}, true),
        step(
            "large-cluster mode on (and two workers)",
            |s| {
                s.services.insert(900, svc(900, 240));
                s.services.insert(901, svc(901, 240));
                s.services.insert(902, svc(902, 240));
                s.services.insert(903, svc(903, 240));
                s.services.insert(904, svc(904, 240));
                s.services.insert(905, svc(905, 240));
                s.services.insert(906, svc(906, 240));
                s.services.insert(907, svc(907, 240));
                s.services.insert(908, svc(908, 240));
                s.services.insert(909, svc(909, 240));
            },
            false,
        ),
        step(
            "endpoint changed in large-cluster mode",
            |s| {
                s.services.get_mut(&13).unwrap().endpoints[1].0 = 201;
            },
            true,
        ),
        Step {
            release_buffers: true,
            ..step(
                "after release_buffers",
                |s| {
                    s.services.get_mut(&14).unwrap().endpoints.pop();
                },
                true,
            )
        },
        Step {
            hide_changes: true,
            ..step(
                "change missing from the changed set",
                |s| {
                    s.services.get_mut(&15).unwrap().endpoints[0].0 = 202;
                },
                true,
            )
        },
        step(
            "large-cluster mode off",
            |s| {
                for i in 900..910 {
                    s.services.remove(&i);
                }
            },
            false,
        ),
        step(
            "endpoint changed again",
            |s| {
                s.services.get_mut(&16).unwrap().endpoints[0].0 = 203;
            },
            true,
        ),
        Step {
            masquerade_all: true,
            ..step("options changed", |_| {}, false)
        },
        Step {
            masquerade_all: true,
            ..step(
                "options kept",
                |s| {
                    s.services.get_mut(&17).unwrap().endpoints.clear();
                },
                true,
            )
        },
        step(
            "options changed back, zone changed",
            |s| s.zone = "z2",
            false,
        ),
        Step {
            full: true,
            ..step(
                "full sync",
                |s| {
                    s.services.insert(501, svc(501, 3));
                },
                false,
            )
        },
        step(
            "Service removed after a full sync",
            |s| {
                s.services.remove(&501);
            },
            true,
        ),
    ]
}

fn written(r: &Renderer) -> Vec<(ChainKey, bool)> {
    r.written_nat_chains().collect()
}

#[test]
fn partial_syncs_from_the_memo_equal_full_recomputation() {
    let mut state = State {
        services: (0..120).map(|i| (i, svc(i, 1 + i % 6))).collect(),
        zone: "z1",
    };
    let cfg = config::parse_config(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nhostnameOverride: node-a\n",
        "test",
    )
    .unwrap();
    let mopts = resolve::model_options(&cfg, &Compat::v1_30(), IpFamily::V4);
    let mut store = Store {
        cache: ModelCache::new(mopts),
        present: HashSet::new(),
        slices: HashSet::new(),
    };
    let mut memo = Renderer::new().with_max_workers(2);
    let mut prev: Option<ClusterModel> = None;
    // Stale-chain deletion on: existing chains are the last payload's plus a stray one.
    let mut existing: HashSet<ChainKey> = HashSet::new();
    let (mut saw_large, mut saw_no_local) = (false, false);
    for (n, st) in steps().into_iter().enumerate() {
        (st.change)(&mut state);
        let model = store.model(&state);
        let opts = options(&model, st.masquerade_all);
        let changed: HashSet<NsName> = match &prev {
            Some(p) if !st.hide_changes => model.changed_services(p),
            _ => HashSet::new(),
        };
        if st.hide_changes {
            let p = prev.as_ref().unwrap();
            assert!(
                !model.changed_services(p).is_empty(),
                "{}: a real change",
                st.what
            );
        }
        existing.insert(ChainKey::named("KUBE-SEP-STALESTALESTALE1").unwrap());
        for scan in [false, true] {
            let req = SyncRequest {
                partial: (!st.full).then_some(&changed),
                existing_nat_chains: scan.then_some(&existing),
            };
            if st.release_buffers {
                memo.release_buffers();
            }
            let got = memo.render(&model, &opts, req);
            let reused = memo.reused_services();
            let mut fresh = Renderer::new().with_max_workers(1);
            let want = fresh.render(&model, &opts, req);
            let what = format!("step {n} ({}), stale scan {scan}", st.what);
            assert!(got.payload == want.payload, "{what}: payload differs");
            assert_eq!(got.stats, want.stats, "{what}: stats differ");
            assert_eq!(
                written(&memo),
                written(&fresh),
                "{what}: chain record differs"
            );
            // The second render of a step always finds the first one's memo.
            if st.expect_reuse || (scan && !st.full) {
                assert!(
                    reused + changed.len() + 1 >= model.services.len() && reused > 0,
                    "{what}: {reused} of {} Services reused",
                    model.services.len()
                );
            } else {
                assert_eq!(reused, 0, "{what}: memo used");
            }
            saw_large |= want.stats.large_cluster_mode;
            saw_no_local |= want.stats.no_local_endpoints_external > 0;
            if !st.full {
                assert!(want.stats.nat_rules_skipped > 0, "{what}");
            }
        }
        existing = written(&memo)
            .into_iter()
            .filter(|(_, deleted)| !deleted)
            .map(|(k, _)| k)
            .collect();
        prev = Some(model);
    }
    assert!(saw_large && saw_no_local);
}
