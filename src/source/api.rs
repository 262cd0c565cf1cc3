//! The Kubernetes API source: list/watch of Services, EndpointSlices and this Node with
//! upstream's selectors. Each stream retries on its own (`retry`: patient with a server
//! that answers errors, brisk with one that is unreachable); a 410 Gone relists at once,
//! which reaches the store as a streamed list (identical content changes nothing).

use super::retry::{Failure, Retry};
use super::store::{Change, SourceEvent};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
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

/// The API server's `/version`: (major, minor, gitVersion).
pub async fn server_version(client: &Client) -> anyhow::Result<(String, String, String)> {
    let v = client.apiserver_version().await?;
    Ok((v.major, v.minor, v.git_version))
}

/// This Node as the API server has it now (`None`: not there or not reachable).
pub async fn node_once(client: Client, name: &str) -> Option<Node> {
    match Api::<Node>::all(client).get_opt(name).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(node = name, error = %e, "cannot read this Node at start-up");
            None
        }
    }
}

/// Whether `ev` shows the server answered. kube's watcher yields `Init` before it sends
/// the list request, so a fresh watcher against a dead server would otherwise reset the
/// backoff on every try and retry twice a second forever.
fn answered<K>(ev: &Event<K>) -> bool {
    !matches!(ev, Event::Init)
}

/// How a watch stream's error counts for the retry delay.
fn classify(e: &watcher::Error) -> Failure {
    let client = |e: &kube::Error| match e {
        kube::Error::Api(s) if s.code == 410 => Failure::Gone,
        kube::Error::Api(_) => Failure::Answered,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => {
            Failure::Unreachable
        }
        _ => Failure::Answered,
    };
    match e {
        watcher::Error::WatchError(s) if s.code == 410 => Failure::Gone,
        watcher::Error::WatchError(_) | watcher::Error::NoResourceVersion => Failure::Answered,
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => client(e),
    }
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
    let mut retry = Retry::default();
    // Lists are streamed: the store never sees a whole list of raw objects at once.
    let mut listed = 0usize;
    let mut listing = false;
    loop {
        // A fresh watcher lists first: after a Gone it must not resume the old version
        // (kube's watcher keeps it when the watch *request* is refused with 410).
        let stream = watcher::watcher(api.clone(), cfg.clone());
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            let change = match ev {
                Ok(ev) => {
                    if answered(&ev) {
                        retry.succeeded();
                    }
                    match ev {
                        Event::Init => {
                            listed = 0;
                            listing = true;
                            Change::ListStart
                        }
                        Event::InitApply(o) => {
                            listed += 1;
                            Change::Listed(Box::new(o))
                        }
                        Event::InitDone => {
                            tracing::debug!(kind = what, count = listed, "list complete");
                            listing = false;
                            Change::ListDone
                        }
                        Event::Apply(o) => Change::Apply(Box::new(o)),
                        Event::Delete(o) => Change::Delete(Box::new(o)),
                    }
                }
                Err(e) => {
                    let failure = classify(&e);
                    let delay = retry.failed(failure, super::retry::jitter());
                    let error = crate::logging::error_chain(&e);
                    tracing::warn!(
                        kind = what,
                        error,
                        ?failure,
                        ?delay,
                        "watch failed; retrying"
                    );
                    // A failed list never completes: release the store's hold on syncs.
                    if std::mem::take(&mut listing) && tx.send(wrap(Change::ListAbort)).is_err() {
                        return;
                    }
                    tokio::time::sleep(delay).await;
                    if failure == Failure::Gone {
                        break;
                    }
                    continue;
                }
            };
            if tx.send(wrap(change)).is_err() {
                return;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;
    use std::time::Duration;

    #[test]
    fn only_events_from_the_server_reset_the_backoff() {
        // `Init` comes before the list request: a dead server must not reset the backoff.
        assert!(!answered::<Service>(&Event::Init));
        assert!(answered::<Service>(&Event::InitApply(Service::default())));
        assert!(answered::<Service>(&Event::InitDone));
        assert!(answered::<Service>(&Event::Apply(Service::default())));
        assert!(answered::<Service>(&Event::Delete(Service::default())));
        // What that means for a dead server: the delays grow to the cap, not stay at 0.8 s.
        let mut r = Retry::default();
        let mut last = Duration::ZERO;
        let tries: [Event<Service>; 4] = [Event::Init, Event::Init, Event::Init, Event::Init];
        for ev in tries {
            if answered(&ev) {
                r.succeeded();
            }
            last = r.failed(Failure::Unreachable, 0.999);
        }
        assert!(last > Duration::from_secs(3), "{last:?}");
    }
}
