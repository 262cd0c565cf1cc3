//! Golden tests: every case of the upstream corpora (golden/upstream from upstream
//! v1.30.3, golden/upstream-v1.35 from v1.35; copied verbatim, never regenerated here)
//! must render byte for byte under the matching `--emulated-version`.

use kube_proxy_rs::compat::Compat;
use kube_proxy_rs::config;
use kube_proxy_rs::model::ip::IpFamily;
use kube_proxy_rs::offline::render_syncs;
use kube_proxy_rs::rules::jumps;
use kube_proxy_rs::source::objects::{load_objects, ObjectSet};
use std::path::{Path, PathBuf};

/// Corpus directories and the release each was produced by.
const V1_30: &str = "golden/upstream";
const V1_35: &str = "golden/upstream-v1.35";

fn case_dir(corpus: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(corpus)
        .join(name)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn objects(p: &Path) -> ObjectSet {
    load_objects(p.to_str().unwrap()).unwrap_or_else(|e| panic!("{e}"))
}

fn render(dir: &Path, compat: Compat, sets: &[ObjectSet], family: IpFamily) -> String {
    let cfg = config::load_config(&dir.join("config.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let mut warnings = Vec::new();
    render_syncs(
        kube_proxy_rs::offline::OfflineProxier::new(cfg, compat, family),
        sets,
        &mut warnings,
    )
}

/// Fails with a unified diff of the two texts.
fn assert_same(what: &str, want: &str, got: &str) {
    if want != got {
        let diff = similar::TextDiff::from_lines(want, got);
        panic!(
            "{what}: output differs from golden\n{}",
            diff.unified_diff()
                .context_radius(2)
                .header("expected", "got")
        );
    }
}

/// Splits multi-sync output into (kind, payload) blocks.
fn split_syncs(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("# sync ") {
            let kind = rest.split_whitespace().nth(1).unwrap_or("").to_string();
            out.push((kind, String::new()));
        } else if let Some(last) = out.last_mut() {
            last.1.push_str(line);
        }
    }
    out
}

fn check_case(corpus: &str, compat: Compat, name: &str) {
    let dir = case_dir(corpus, name);
    let name = &format!("{corpus} {name}");
    let set = objects(&dir.join("objects.yaml"));
    let sets = std::slice::from_ref(&set);
    assert_same(
        &format!("{name} render"),
        &read(&dir.join("expected.rules")),
        &render(&dir, compat, sets, IpFamily::V4),
    );
    if dir.join("expected-ipv6.rules").exists() {
        assert_same(
            &format!("{name} ipv6"),
            &read(&dir.join("expected-ipv6.rules")),
            &render(&dir, compat, sets, IpFamily::V6),
        );
    }
    for ensure in ["expected.ensure", "expected-ipv6.ensure"] {
        if dir.join(ensure).exists() {
            assert_same(
                &format!("{name} {ensure}"),
                &read(&dir.join(ensure)),
                &jumps::ensure_text(),
            );
        }
    }
    let steps_file = dir.join("steps.txt");
    if steps_file.exists() {
        let steps: Vec<(String, String)> = read(&steps_file)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let mut it = l.split_whitespace();
                (
                    it.next().unwrap().to_string(),
                    it.next().unwrap().to_string(),
                )
            })
            .collect();
        let sets: Vec<ObjectSet> = steps
            .iter()
            .map(|(step, _)| objects(&dir.join(step).join("objects.yaml")))
            .collect();
        let got = split_syncs(&render(&dir, compat, &sets, IpFamily::V4));
        assert_eq!(got.len(), steps.len(), "{name}: one sync per step");
        for ((step, kind), (got_kind, got_payload)) in steps.iter().zip(&got) {
            assert_eq!(kind, got_kind, "{name} {step}: full/partial");
            assert_same(
                &format!("{name} {step}"),
                &read(&dir.join(format!("{step}.rules"))),
                got_payload,
            );
        }
    }
}

macro_rules! golden {
    ($($fn_name:ident => $case:literal,)+) => {
        mod v1_30 {
            use super::*;
            $(
                #[test]
                fn $fn_name() {
                    check_case(V1_30, Compat::v1_30(), $case);
                }
            )+
        }
        mod v1_35 {
            use super::*;
            $(
                #[test]
                fn $fn_name() {
                    check_case(V1_35, Compat::v1_35(), $case);
                }
            )+
        }
        const CASES: &[&str] = &[$($case),+];
    };
}

golden! {
    clusterip_multiport_named => "clusterip-multiport-named",
    clusterip_single_port => "clusterip-single-port",
    conntrack_tcp_be_liberal => "conntrack-tcp-be-liberal",
    detect_local_nodecidr => "detect-local-nodecidr",
    dual_stack => "dual-stack",
    endpoint_conditions => "endpoint-conditions",
    endpoint_counts_1_2_3_5 => "endpoint-counts-1-2-3-5",
    etp_local_no_local_endpoints => "etp-local-no-local-endpoints",
    etp_local_with_local_endpoints => "etp-local-with-local-endpoints",
    external_ips => "external-ips",
    hairpin_single_local_endpoint => "hairpin-single-local-endpoint",
    headless_externalname_ignored => "headless-externalname-ignored",
    itp_local => "itp-local",
    large_cluster_mode_1012_endpoints => "large-cluster-mode-1012-endpoints",
    loadbalancer_ingress => "loadbalancer-ingress",
    loadbalancer_ipmode_proxy => "loadbalancer-ipmode-proxy",
    loadbalancer_source_ranges => "loadbalancer-source-ranges",
    local_vs_remote_endpoints => "local-vs-remote-endpoints",
    localhost_nodeports_disabled => "localhost-nodeports-disabled",
    masquerade_all => "masquerade-all",
    masquerade_bit_custom => "masquerade-bit-custom",
    no_cluster_cidr => "no-cluster-cidr",
    no_endpoints => "no-endpoints",
    nodeport_addresses_cidrs => "nodeport-addresses-cidrs",
    nodeport_addresses_no_localhost => "nodeport-addresses-no-localhost",
    nodeport_basic => "nodeport-basic",
    protocols_udp_sctp => "protocols-udp-sctp",
    realistic_cluster => "realistic-cluster",
    realistic_cluster_clustercidr => "realistic-cluster-clustercidr",
    session_affinity_clientip_custom_timeout => "session-affinity-clientip-custom-timeout",
    session_affinity_clientip_default => "session-affinity-clientip-default",
    steps_endpoint_not_ready => "steps-endpoint-not-ready",
    steps_no_change_resync => "steps-no-change-resync",
    steps_node_zone_change_full_resync => "steps-node-zone-change-full-resync",
    steps_scale_down => "steps-scale-down",
    steps_scale_up => "steps-scale-up",
    steps_service_deleted => "steps-service-deleted",
    topology_hints => "topology-hints",
    traffic_distribution_feature_gate => "traffic-distribution-feature-gate",
}

/// A corpus case added without a test here would silently not run.
#[test]
fn every_corpus_case_has_a_test() {
    for corpus in [V1_30, V1_35] {
        let mut on_disk: Vec<String> =
            std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(corpus))
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
        on_disk.sort();
        let mut listed: Vec<String> = CASES.iter().map(|s| s.to_string()).collect();
        listed.sort();
        assert_eq!(on_disk, listed, "{corpus}");
    }
}

/// Each corpus says which release produced it; the tests above emulate that one.
#[test]
fn corpus_versions_match_the_emulated_ones() {
    for (corpus, compat) in [(V1_30, Compat::v1_30()), (V1_35, Compat::v1_35())] {
        let v = read(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(corpus)
                .join("VERSION"),
        );
        assert_eq!(v.trim(), compat.version.as_str(), "{corpus}");
    }
}
