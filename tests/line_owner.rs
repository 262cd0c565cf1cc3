//! Every line of a rendered payload traces back to the Service that wrote it (what the
//! daemon uses to hold back a Service whose rules iptables-restore rejects), also when
//! several workers render parts of a large cluster.

use kube_proxy_rs::config;
use kube_proxy_rs::model::ip::IpFamily;
use kube_proxy_rs::model::ClusterModel;
use kube_proxy_rs::resolve::{self, HostFacts};
use kube_proxy_rs::rules::{Renderer, SyncRequest};
use kube_proxy_rs::source::objects::load_objects;
use std::path::Path;
use std::process::Command;

/// The Service `ns/name` a line's comment names, if any.
fn commented_service(line: &str) -> Option<&str> {
    let rest = line.split("--comment ").nth(1)?;
    let comment = match rest.strip_prefix('"') {
        Some(q) => q.split('"').next()?,
        None => rest.split(' ').next()?,
    };
    // "ns/name:port what", "masquerade traffic for ns/name:port external destinations"
    let word = comment.split(' ').find(|w| w.contains('/'))?;
    Some(word.split(':').next().unwrap())
}

#[test]
fn every_service_line_has_its_owner() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // 400 Services x 10 endpoints: at the threshold where rendering goes parallel.
    let dir = root.join(format!("target/line-owner-{}", std::process::id()));
    let ok = Command::new("python3")
        .arg(root.join("hack/gen-cluster.py"))
        .args(["400", "10"])
        .arg(&dir)
        .status()
        .expect("python3 runs hack/gen-cluster.py")
        .success();
    assert!(ok);
    let cfg = config::load_config(&dir.join("config.yaml")).unwrap();
    let objects = load_objects(dir.join("objects.yaml").to_str().unwrap()).unwrap();
    let model = ClusterModel::from_objects(
        &objects,
        &resolve::model_options(&cfg, &kube_proxy_rs::compat::Compat::v1_30(), IpFamily::V4),
        &mut Vec::new(),
    );
    let host = HostFacts::offline(model.node.as_ref(), &cfg);
    let opts = resolve::proxier_options(
        &cfg,
        &kube_proxy_rs::compat::Compat::v1_30(),
        model.node.as_ref(),
        &host,
        IpFamily::V4,
    );
    let mut r = Renderer::new().with_max_workers(4);
    let payload = r.render(&model, &opts, SyncRequest::FULL).payload;
    let (mut owned, mut checked) = (0, 0);
    let mut chain_owner = std::collections::HashMap::new();
    // Each look-up writes the payload again (a cold path): sample the lines.
    for (i, line) in payload.lines().enumerate().step_by(3) {
        let got = r.line_owner(&model, i + 1);
        if let Some((_, text)) = &got {
            assert_eq!(text, line);
        }
        let got = got.map(|(k, _)| k.as_str().to_string());
        if let Some(want) = commented_service(line) {
            // Large-cluster mode drops SEP/dispatch comments; those lines are checked
            // through their chain's owner below.
            assert_eq!(got.as_deref(), Some(want), "line {}: {line}", i + 1);
            checked += 1;
        }
        if let Some(chain) = line
            .strip_prefix("-A KUBE-S")
            .filter(|c| c.starts_with("EP-") || c.starts_with("VC-"))
        {
            let chain = chain.split(' ').next().unwrap();
            if let Some(o) = &got {
                let prev = chain_owner.insert(chain.to_string(), o.clone());
                assert!(prev.is_none_or(|p| &p == o), "{line}");
            }
        }
        if line.starts_with("-A KUBE-POSTROUTING") || line.starts_with("-A KUBE-MARK-MASQ") {
            assert_eq!(got, None, "fixed rules belong to no Service: {line}");
        }
        owned += got.is_some() as usize;
    }
    assert!(checked > 300, "{checked}");
    assert!(owned > checked, "{owned} {checked}");
    // Each Service's chains: declared and written by it alone.
    let mut declared = 0;
    for (i, line) in payload.lines().enumerate() {
        if declared == 300 {
            break;
        }
        let Some(rest) = line.strip_prefix(":KUBE-SEP-") else {
            continue;
        };
        let chain = format!("EP-{}", rest.split(' ').next().unwrap());
        // Only chains whose rules were sampled above have a known owner.
        if let Some(want) = chain_owner.get(&chain) {
            let got = r
                .line_owner(&model, i + 1)
                .map(|(k, _)| k.as_str().to_string());
            assert_eq!(got.as_ref(), Some(want), "{line}");
            declared += 1;
        }
    }
    assert_eq!(declared, 300);
    let _ = std::fs::remove_dir_all(&dir);
}
