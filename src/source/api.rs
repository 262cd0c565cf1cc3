//! The Kubernetes API source: list/watch of Services, EndpointSlices and this Node with
//! upstream's selectors. Each stream backs off on its own; a 410 Gone makes the watcher
//! relist, which reaches the store as a `Replace` (identical content changes nothing).

use super::store::{Change, SourceEvent};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Config};
use std::path::Path;
use std::sync::mpsc::Sender;

/// Services and EndpointSlices kube-proxy must not handle (spec §2; upstream's
/// `noProxyName` and `noHeadlessEndpoints` requirements).
pub const LABEL_SELECTOR: &str =
    "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";

/// Client from a kubeconfig, `--master`, or the in-cluster service account (both empty).
pub async fn client(kubeconfig: Option<&Path>, master: Option<&str>) -> anyhow::Result<Client> {
    use anyhow::Context;
    let master_url = master
        .filter(|m| !m.is_empty())
        .map(|m| {
            m.parse::<axum::http::Uri>()
                .with_context(|| format!("--master {m:?}"))
        })
        .transpose()?;
    let mut config = match (kubeconfig, &master_url) {
        (Some(p), _) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .with_context(|| format!("reading kubeconfig {}", p.display()))?;
            Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("kubeconfig {}", p.display()))?
        }
        (None, Some(url)) => Config::new(url.clone()),
        (None, None) => Config::incluster().context("in-cluster configuration")?,
    };
    if let Some(url) = master_url {
        config.cluster_url = url;
    }
    Client::try_from(config).context("creating the API client")
}

async fn watch<K>(
    api: Api<K>,
    cfg: watcher::Config,
    tx: Sender<SourceEvent>,
    wrap: fn(Change<K>) -> SourceEvent,
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let what = std::any::type_name::<K>()
        .rsplit("::")
        .next()
        .unwrap_or("object");
    let stream = watcher::watcher(api, cfg).default_backoff();
    futures::pin_mut!(stream);
    // Lists are streamed: the store never sees a whole list of raw objects at once.
    let mut listed = 0usize;
    let mut listing = false;
    while let Some(ev) = stream.next().await {
        let change = match ev {
            Ok(Event::Init) => {
                listed = 0;
                listing = true;
                Change::ListStart
            }
            Ok(Event::InitApply(o)) => {
                listed += 1;
                Change::Listed(Box::new(o))
            }
            Ok(Event::InitDone) => {
                tracing::debug!(kind = what, count = listed, "list complete");
                listing = false;
                Change::ListDone
            }
            Ok(Event::Apply(o)) => Change::Apply(Box::new(o)),
            Ok(Event::Delete(o)) => Change::Delete(Box::new(o)),
            Err(e) => {
                tracing::warn!(kind = what, error = %e, "watch failed; retrying with backoff");
                // A failed list never completes: release the store's hold on syncs.
                if !std::mem::take(&mut listing) {
                    continue;
                }
                Change::ListAbort
            }
        };
        if tx.send(wrap(change)).is_err() {
            return;
        }
    }
}

/// Starts the three watchers; they run until the daemon's channel closes.
pub fn spawn(
    client: Client,
    node_name: &str,
    tx: Sender<SourceEvent>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let sel = || watcher::Config::default().labels(LABEL_SELECTOR);
    vec![
        tokio::spawn(watch(
            Api::<Service>::all(client.clone()),
            sel(),
            tx.clone(),
            SourceEvent::Services,
        )),
        tokio::spawn(watch(
            Api::<EndpointSlice>::all(client.clone()),
            sel(),
            tx.clone(),
            SourceEvent::Slices,
        )),
        tokio::spawn(watch(
            Api::<Node>::all(client),
            watcher::Config::default().fields(&format!("metadata.name={node_name}")),
            tx,
            SourceEvent::Nodes,
        )),
    ]
}
