//! `explain` on the seeds' 1.9-era dumps (no objects) and on the corpus (with objects).

use kube_proxy_rs::audit::explain::{explain, KnownPorts};
use kube_proxy_rs::audit::parse::Ruleset;
use kube_proxy_rs::config;
use kube_proxy_rs::model::ip::IpFamily;
use kube_proxy_rs::offline::OfflineProxier;
use kube_proxy_rs::source::objects::load_objects;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn seed(name: &str) -> Ruleset {
    Ruleset::parse(&std::fs::read_to_string(root().join("golden/seeds").join(name)).unwrap())
        .unwrap()
}

#[test]
fn seeds_name_nginx_web_1_without_objects() {
    for (file, seps) in [
        (
            "k8s-1.9-nginx-web-1-one-endpoint.save",
            vec![("KUBE-SEP-UWNFTKZFYWNNNTK7", "10.129.1.22:80")],
        ),
        (
            "k8s-1.9-nginx-web-1-three-endpoints.save",
            vec![
                ("KUBE-SEP-BI762VOIAZZWU5S7", "10.129.1.27:80"),
                ("KUBE-SEP-CDQIKEVSTA766BRK", "10.129.1.28:80"),
                ("KUBE-SEP-W5HTO42ZVNHJQWBG", "10.129.3.57:80"),
            ],
        ),
        (
            "k8s-1.9-nginx-web-1-affinity.save",
            vec![("KUBE-SEP-BI762VOIAZZWU5S7", "10.129.1.27:80")],
        ),
    ] {
        let ex = explain(&seed(file), None);
        let svc = ex
            .chains
            .iter()
            .find(|c| c.chain == "KUBE-SVC-SNP24T7IBBNZDJ76")
            .unwrap();
        assert_eq!(
            svc.service_port.as_deref(),
            Some("demo/nginx-web-1 tcp"),
            "{file}"
        );
        // The chain name really is the hash of the old `ns/name:` input, not just a comment.
        assert_eq!(svc.source, "hash", "{file}");
        assert_eq!(svc.hash_form, Some("old (ns/name:)"));
        for (sep, ep) in seps {
            let c = ex.chains.iter().find(|c| c.chain == sep).unwrap();
            assert_eq!(
                c.service_port.as_deref(),
                Some("demo/nginx-web-1 tcp"),
                "{file} {sep}"
            );
            assert_eq!(c.endpoint.as_deref(), Some(ep));
            assert_eq!(c.source, "hash");
        }
        let p = &ex.ports[0];
        assert_eq!(p.service_port, "demo/nginx-web-1 tcp");
        assert!(p.entries.iter().any(|e| e.contains("172.30.132.253")));
    }
    // Old 5-decimal probabilities: 0.33333 then 0.5 is still an even split, no skew.
    let ex = explain(&seed("k8s-1.9-nginx-web-1-three-endpoints.save"), None);
    let shares: Vec<f64> = ex.ports[0].endpoints.iter().map(|e| e.share).collect();
    assert_eq!(shares.len(), 3);
    for s in &shares {
        assert!((s - 1.0 / 3.0).abs() < 1e-4, "{shares:?}");
    }
    assert!(!ex.ports[0].skewed);
    assert_eq!(seed_affinity(), Some(10800));
}

fn seed_affinity() -> Option<u32> {
    explain(&seed("k8s-1.9-nginx-web-1-affinity.save"), None).ports[0].affinity_timeout
}

#[test]
fn skew_is_flagged() {
    let text = std::fs::read_to_string(
        root().join("golden/seeds/k8s-1.9-nginx-web-1-three-endpoints.save"),
    )
    .unwrap()
    .replace("0.50000000000", "0.90000000000");
    let ex = explain(&Ruleset::parse(&text).unwrap(), None);
    assert!(ex.ports[0].skewed);
    let s: Vec<f64> = ex.ports[0].endpoints.iter().map(|e| e.share).collect();
    assert!(
        (s[1] - 0.6).abs() < 1e-3 && (s[2] - 0.0667).abs() < 1e-3,
        "{s:?}"
    );
}

#[test]
fn corpus_chains_all_mapped_with_objects_and_from_comments() {
    for case in [
        "realistic-cluster",
        "large-cluster-mode-1012-endpoints",
        "loadbalancer-source-ranges",
        "itp-local",
    ] {
        let dir = root().join("golden/upstream").join(case);
        let rs =
            Ruleset::parse(&std::fs::read_to_string(dir.join("expected.save")).unwrap()).unwrap();
        let cfg = config::load_config(&dir.join("config.yaml")).unwrap();
        let set = load_objects(dir.join("objects.yaml").to_str().unwrap()).unwrap();
        let model = OfflineProxier::new(cfg, kube_proxy_rs::compat::Compat::v1_30(), IpFamily::V4)
            .build_model(&set, &mut Vec::new());
        let known = KnownPorts::from_model(&model);
        let with = explain(&rs, Some(&known));
        let without = explain(&rs, None);
        assert!(!with.chains.is_empty());
        for (a, b) in with.chains.iter().zip(&without.chains) {
            assert_eq!(a.source, "objects", "{case} {}", a.chain);
            // Comments (or, without comments, the jumping chains) give the same answer.
            assert_eq!(a.service_port, b.service_port, "{case} {}", a.chain);
            assert_ne!(b.source, "unknown");
        }
        // Every endpoint chain of the model is explained with its endpoint.
        for sp in model.services.values().flat_map(|p| p.iter()) {
            for ep in sp.endpoints.iter() {
                if let Some(c) = with.chains.iter().find(|c| c.chain == ep.sep_chain) {
                    assert_eq!(c.endpoint.as_deref(), Some(ep.endpoint.as_str()));
                }
            }
        }
    }
    let dir = root().join("golden/upstream/itp-local");
    let rs = Ruleset::parse(&std::fs::read_to_string(dir.join("expected.save")).unwrap()).unwrap();
    let ex = explain(&rs, None);
    assert!(ex
        .ports
        .iter()
        .any(|p| p.internal_traffic_policy == Some("Local")));
    let dir = root().join("golden/upstream/no-endpoints");
    let rs = Ruleset::parse(&std::fs::read_to_string(dir.join("expected.save")).unwrap()).unwrap();
    let _ = explain(&rs, None);
}

#[test]
fn cli_explain_with_objects() {
    let dir = root().join("golden/upstream/etp-local-with-local-endpoints");
    let out = Command::new(env!("CARGO_BIN_EXE_kube-proxy-rs"))
        .arg("explain")
        .arg(dir.join("expected.save"))
        .arg("--objects")
        .arg(dir.join("objects.yaml"))
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains("externalTrafficPolicy: Local"), "{s}");
    assert!(s.contains("[objects, current hash input]"), "{s}");
}
