//! detectLocalMode NodeCIDR (spec §6.1 step 5, §6.4): start-up waits (at most 5 min) for
//! this Node's podCIDRs, and a later change of them is fatal: the rules were built from
//! the old ones, and upstream exits (status 1) so that it restarts with the new ones.

use super::SourceSpec;
use crate::config::KubeProxyConfiguration;
use crate::model::node::NodeInfo;
use crate::source::store::Change;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long start-up waits for the podCIDR allocation.
pub const WAIT: Duration = Duration::from_secs(300);

pub fn node_cidr_mode(cfg: &KubeProxyConfiguration) -> bool {
    cfg.detect_local_mode == "NodeCIDR"
}

#[derive(Debug, thiserror::Error)]
#[error(
    "Node {node}: podCIDRs changed from {before:?} to {after:?} while using detectLocalMode \
     NodeCIDR; exiting so that the restart picks them up"
)]
pub struct PodCidrsChanged {
    pub node: String,
    pub before: Vec<String>,
    pub after: Vec<String>,
}

/// A change of this Node the daemon exits on (status 1, to be restarted).
#[derive(Debug, thiserror::Error)]
pub enum NodeChanged {
    #[error(transparent)]
    PodCidrs(#[from] PodCidrsChanged),
    /// S4 (newer releases): the rules were built from the old IPs.
    #[error("Node {node}: IPs changed from {before:?} to {after:?}; exiting so that the restart picks them up")]
    Ips {
        node: String,
        before: Vec<std::net::IpAddr>,
        after: Vec<std::net::IpAddr>,
    },
    /// S4 (newer releases).
    #[error("Node {node} was deleted; exiting so that the restart waits for it")]
    Deleted { node: String },
}

/// Follows this Node's podCIDRs from source events (NodeCIDR mode only) and, where the
/// release does ([`crate::compat::Compat::exit_on_node_change`]), its IPs and deletion.
#[derive(Debug)]
pub struct PodCidrWatch {
    node_name: String,
    enabled: bool,
    /// The podCIDRs the rules use: the first non-empty list seen.
    known: Vec<String>,
    exit_on_node_change: bool,
    /// The node IPs of the first sighting.
    ips: Option<Vec<std::net::IpAddr>>,
    fatal: Option<oneshot::Sender<NodeChanged>>,
}

impl PodCidrWatch {
    /// The receiver gets the change that makes the process exit.
    pub fn new(
        cfg: &KubeProxyConfiguration,
        node_name: &str,
        exit_on_node_change: bool,
    ) -> (PodCidrWatch, oneshot::Receiver<NodeChanged>) {
        let (tx, rx) = oneshot::channel();
        let w = PodCidrWatch {
            node_name: node_name.to_string(),
            enabled: node_cidr_mode(cfg),
            known: Vec::new(),
            exit_on_node_change,
            ips: None,
            fatal: Some(tx),
        };
        (w, rx)
    }

    fn exit(&mut self, e: NodeChanged) {
        tracing::error!("{e}");
        if let Some(tx) = self.fatal.take() {
            let _ = tx.send(e);
        }
    }

    /// Notes a Node event (before it reaches the store); reports a change once.
    pub fn observe(&mut self, change: &Change<Node>) {
        let ours = |n: &&Node| n.metadata.name.as_deref() == Some(self.node_name.as_str());
        let node = match change {
            Change::Apply(n) | Change::Listed(n) => Some(&**n).filter(ours),
            Change::Replace(items) => items.iter().find(ours),
            Change::Delete(n) => {
                if self.exit_on_node_change && ours(&&**n) {
                    let node = self.node_name.clone();
                    self.exit(NodeChanged::Deleted { node });
                }
                // A deleted Node changes no podCIDRs.
                None
            }
            Change::ListStart | Change::ListDone | Change::ListAbort => None,
        };
        let Some(node) = node else { return };
        let info = NodeInfo::from_node(node);
        if self.exit_on_node_change {
            match &self.ips {
                None => self.ips = Some(info.ips.clone()),
                Some(before) if *before != info.ips => {
                    let e = NodeChanged::Ips {
                        node: self.node_name.clone(),
                        before: before.clone(),
                        after: info.ips.clone(),
                    };
                    self.exit(e);
                }
                Some(_) => {}
            }
        }
        if !self.enabled {
            return;
        }
        let now = info.pod_cidrs;
        if self.known.is_empty() {
            self.known = now;
        } else if now != self.known {
            let e = PodCidrsChanged {
                node: self.node_name.clone(),
                before: self.known.clone(),
                after: now,
            };
            self.exit(e.into());
        }
    }
}

fn timed_out() -> anyhow::Error {
    anyhow::anyhow!(
        "timeout waiting for PodCIDR allocation to configure detect-local-mode NodeCIDR"
    )
}

/// Waits until this Node has podCIDRs; an error after `limit`.
pub async fn wait_for_pod_cidrs(
    source: &SourceSpec,
    node_name: &str,
    limit: Duration,
) -> anyhow::Result<Vec<String>> {
    tracing::info!(
        node = node_name,
        "Watching for node, awaiting podCIDR allocation"
    );
    let found = match source {
        SourceSpec::Api { kubeconfig, master } => {
            let client =
                crate::source::api::client(kubeconfig.as_deref(), master.as_deref()).await?;
            tokio::time::timeout(limit, from_api(client, node_name)).await
        }
        SourceSpec::File { path, poll } => {
            tokio::time::timeout(limit, from_file(path, *poll, node_name)).await
        }
    };
    let cidrs = found.map_err(|_| timed_out())??;
    tracing::info!(node = node_name, pod_cidrs = ?cidrs, "NodeInfo");
    Ok(cidrs)
}

async fn from_api(client: kube::Client, node_name: &str) -> anyhow::Result<Vec<String>> {
    use kube::runtime::{watcher, WatchStreamExt};
    let api = kube::Api::<Node>::all(client);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={node_name}"));
    let stream = watcher::watcher(api, cfg)
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(node) => {
                let cidrs = NodeInfo::from_node(&node).pod_cidrs;
                if !cidrs.is_empty() {
                    return Ok(cidrs);
                }
            }
            Err(e) => tracing::debug!(error = %e, "watching the Node; retrying"),
        }
    }
    Err(anyhow::anyhow!("the Node watch ended"))
}

async fn from_file(
    path: &std::path::Path,
    poll: Duration,
    node_name: &str,
) -> anyhow::Result<Vec<String>> {
    loop {
        let path_text = path.to_string_lossy();
        // A broken or missing file is retried, as the file source does.
        if let Ok(set) = crate::source::objects::load_objects(&path_text) {
            let cidrs = set
                .nodes
                .iter()
                .map(|(n, _)| NodeInfo::from_node(n))
                .find(|n| n.name == node_name)
                .map(|n| n.pod_cidrs)
                .unwrap_or_default();
            if !cidrs.is_empty() {
                return Ok(cidrs);
            }
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidrs: &[&str]) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"podCIDRs": cidrs}
        }))
        .unwrap()
    }

    fn node_cidr() -> KubeProxyConfiguration {
        KubeProxyConfiguration {
            detect_local_mode: "NodeCIDR".into(),
            ..Default::default()
        }
    }

    fn apply(n: Node) -> Change<Node> {
        Change::Apply(Box::new(n))
    }

    #[test]
    fn a_change_of_our_pod_cidrs_is_fatal_once() {
        let (mut w, mut rx) = PodCidrWatch::new(&node_cidr(), "node-a", false);
        w.observe(&Change::Replace(vec![
            node("node-b", &[]),
            node("node-a", &["10.244.1.0/24"]),
        ]));
        w.observe(&apply(node("node-a", &["10.244.1.0/24"])));
        w.observe(&apply(node("node-b", &["10.244.9.0/24"])));
        w.observe(&Change::Delete(Box::new(node("node-a", &[]))));
        assert!(rx.try_recv().is_err(), "nothing fatal yet");
        w.observe(&apply(node("node-a", &["10.244.2.0/24"])));
        let NodeChanged::PodCidrs(e) = rx.try_recv().expect("fatal") else {
            panic!("not a podCIDR change")
        };
        assert_eq!(e.before, ["10.244.1.0/24"]);
        assert_eq!(e.after, ["10.244.2.0/24"]);
        assert!(e.to_string().contains("node-a"), "{e}");
    }

    #[test]
    fn empty_at_first_adopts_the_first_allocation() {
        let (mut w, mut rx) = PodCidrWatch::new(&node_cidr(), "node-a", false);
        w.observe(&apply(node("node-a", &[])));
        w.observe(&apply(node("node-a", &["10.244.1.0/24"])));
        assert!(rx.try_recv().is_err());
        // Losing them later is a change too.
        w.observe(&apply(node("node-a", &[])));
        let NodeChanged::PodCidrs(e) = rx.try_recv().expect("fatal") else {
            panic!("not a podCIDR change")
        };
        assert_eq!(e.after, Vec::<String>::new());
    }

    #[test]
    fn other_modes_ignore_pod_cidrs() {
        let cfg = KubeProxyConfiguration::default();
        assert!(!node_cidr_mode(&cfg));
        let (mut w, mut rx) = PodCidrWatch::new(&cfg, "node-a", false);
        w.observe(&apply(node("node-a", &["10.244.1.0/24"])));
        w.observe(&apply(node("node-a", &["10.244.2.0/24"])));
        assert!(rx.try_recv().is_err());
    }

    fn node_ips(name: &str, ips: &[&str]) -> Node {
        let addrs: Vec<_> = ips
            .iter()
            .map(|ip| serde_json::json!({"type": "InternalIP", "address": ip}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"x": "1"}},
            "status": {"addresses": addrs}
        }))
        .unwrap()
    }

    /// S4: 1.35 exits when the Node's IPs change or it is deleted; 1.30 does neither.
    #[test]
    fn newer_releases_exit_on_node_ip_change_and_deletion() {
        let cfg = KubeProxyConfiguration::default();
        for exit in [false, true] {
            let (mut w, mut rx) = PodCidrWatch::new(&cfg, "node-a", exit);
            w.observe(&apply(node_ips("node-a", &["192.168.0.10"])));
            let mut relabelled = node_ips("node-a", &["192.168.0.10"]);
            relabelled.metadata.labels = None;
            w.observe(&apply(relabelled));
            w.observe(&apply(node_ips("node-b", &["192.168.0.99"])));
            w.observe(&Change::Delete(Box::new(node_ips("node-b", &[]))));
            assert!(
                rx.try_recv().is_err(),
                "labels and other nodes are no reason"
            );
            w.observe(&apply(node_ips("node-a", &["192.168.0.11"])));
            match rx.try_recv() {
                Ok(NodeChanged::Ips { before, after, .. }) => {
                    assert!(exit);
                    assert_eq!(
                        before,
                        ["192.168.0.10".parse::<std::net::IpAddr>().unwrap()]
                    );
                    assert_eq!(after, ["192.168.0.11".parse::<std::net::IpAddr>().unwrap()]);
                }
                Ok(e) => panic!("{e}"),
                Err(_) => assert!(!exit),
            }
            let (mut w, mut rx) = PodCidrWatch::new(&cfg, "node-a", exit);
            w.observe(&apply(node_ips("node-a", &["192.168.0.10"])));
            w.observe(&Change::Delete(Box::new(node_ips("node-a", &[]))));
            let got = rx.try_recv();
            assert_eq!(got.is_ok(), exit);
            if let Ok(e) = got {
                assert!(e.to_string().contains("node-a was deleted"), "{e}");
            }
        }
    }

    fn node_yaml(cidrs: &str) -> String {
        format!("apiVersion: v1\nkind: Node\nmetadata: {{name: node-a}}\nspec: {{podCIDRs: [{cidrs}]}}\n")
    }

    #[tokio::test]
    async fn start_up_waits_for_the_allocation() {
        let path = std::env::temp_dir().join(format!("kprs-podcidr-{}.yaml", std::process::id()));
        std::fs::write(&path, node_yaml("")).unwrap();
        let source = SourceSpec::File {
            path: path.clone(),
            poll: Duration::from_millis(20),
        };
        let e = wait_for_pod_cidrs(&source, "node-a", Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("timeout waiting for PodCIDR"), "{e}");
        let writer = {
            let path = path.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                std::fs::write(&path, node_yaml("10.244.3.0/24")).unwrap();
            })
        };
        let cidrs = wait_for_pod_cidrs(&source, "node-a", Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(cidrs, ["10.244.3.0/24"]);
        writer.await.unwrap();
        let _ = std::fs::remove_file(&path);
    }
}
