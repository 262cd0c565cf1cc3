//! Health-check node ports of externalTrafficPolicy=Local LoadBalancers (spec §6.5.2): one
//! listener per Service, answering any request with the local endpoint count.

use super::health::Stamp;
use super::SharedHealth;
use crate::model::{ClusterModel, NsName};
use axum::http::HeaderValue;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Service → (healthCheckNodePort, distinct IPs of local ready endpoints).
pub type Desired = BTreeMap<NsName, (u16, usize)>;

/// What the servers should look like after a sync of `model`.
pub fn desired(model: &ClusterModel) -> Desired {
    let mut out = Desired::new();
    for (svc, ports) in &model.services {
        let Some(port) = ports
            .iter()
            .map(|p| p.health_check_node_port)
            .find(|p| *p != 0)
        else {
            continue;
        };
        let mut ips: BTreeSet<&str> = BTreeSet::new();
        for sp in ports.iter() {
            ips.extend(
                sp.endpoints
                    .iter()
                    .filter(|e| e.is_local && e.ready)
                    .map(|e| e.ip.as_str()),
            );
        }
        if let Some(extra) = model.unmatched_endpoints.get(svc) {
            for eps in extra.values() {
                ips.extend(
                    eps.iter()
                        .filter(|e| e.is_local && e.ready)
                        .map(|e| e.ip.as_str()),
                );
            }
        }
        out.insert(svc.clone(), (port, ips.len()));
    }
    out
}

/// The exact body upstream writes (tab-indented, no trailing newline).
pub fn body(svc: &NsName, count: usize, healthy: bool) -> String {
    format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": \"{}\",\n\t\t\"name\": \"{}\"\n\t}},\n\t\"localEndpoints\": {count},\n\t\"serviceProxyHealthy\": {healthy}\n}}",
        svc.namespace(),
        svc.name()
    )
}

struct Running {
    port: u16,
    count: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub struct ServiceHealthServers {
    health: SharedHealth,
    /// `None` = all addresses (nodePortAddresses match-all).
    listen_ips: Option<Vec<IpAddr>>,
    running: HashMap<NsName, Running>,
    /// One connection cap for all of them: many Services must not multiply it.
    pool: super::listen::Pool,
}

impl ServiceHealthServers {
    pub fn new(
        health: SharedHealth,
        listen_ips: Option<Vec<IpAddr>>,
        pool: super::listen::Pool,
    ) -> ServiceHealthServers {
        ServiceHealthServers {
            health,
            listen_ips,
            running: HashMap::new(),
            pool,
        }
    }

    /// Ports currently served, for tests and logs.
    pub fn ports(&self) -> BTreeMap<NsName, u16> {
        self.running
            .iter()
            .map(|(k, r)| (k.clone(), r.port))
            .collect()
    }

    /// Closes servers of removed Services or changed ports, opens new ones (a failure to
    /// listen is logged and retried at the next sync), updates the counts.
    pub async fn sync(&mut self, want: &Desired) {
        self.running
            .retain(|svc, r| want.get(svc).is_some_and(|(p, _)| *p == r.port));
        for (svc, (port, count)) in want {
            if let Some(r) = self.running.get(svc) {
                r.count.store(*count, Ordering::Relaxed);
                continue;
            }
            let count = Arc::new(AtomicUsize::new(*count));
            let ips = self
                .listen_ips
                .clone()
                .unwrap_or_else(|| vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]);
            let mut tasks = Vec::new();
            let mut failed = false;
            for ip in ips {
                let addr = SocketAddr::new(ip, *port);
                match tokio::net::TcpListener::bind(addr).await {
                    Ok(l) => tasks.push(self.spawn(l, svc.clone(), count.clone())),
                    Err(e) => {
                        tracing::warn!(service = %svc, %addr, error = %e,
                            "FailedToStartServiceHealthcheck: failed to start healthcheck");
                        failed = true;
                    }
                }
            }
            if failed {
                for t in tasks {
                    t.abort();
                }
                continue;
            }
            self.running.insert(
                svc.clone(),
                Running {
                    port: *port,
                    count,
                    tasks,
                },
            );
        }
    }

    fn spawn(
        &self,
        listener: tokio::net::TcpListener,
        svc: NsName,
        count: Arc<AtomicUsize>,
    ) -> tokio::task::JoinHandle<()> {
        let health = self.health.clone();
        let handler = move || {
            let (svc, count, health) = (svc.clone(), count.clone(), health.clone());
            async move {
                let n = count.load(Ordering::Relaxed);
                let healthy = health
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_healthy(Stamp::now());
                let code = if n != 0 && healthy { 200 } else { 503 };
                let mut r = super::json_response(code, body(&svc, n, healthy));
                r.headers_mut().insert(
                    "X-Load-Balancing-Endpoint-Weight",
                    HeaderValue::from_str(&n.to_string()).expect("digits"),
                );
                r
            }
        };
        let router = axum::Router::new().fallback(handler);
        super::listen::spawn(listener, router, self.pool.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_upstreams() {
        assert_eq!(
            body(&NsName::new("ns", "lb"), 2, true),
            "{\n\t\"service\": {\n\t\t\"namespace\": \"ns\",\n\t\t\"name\": \"lb\"\n\t},\n\t\"localEndpoints\": 2,\n\t\"serviceProxyHealthy\": true\n}"
        );
    }
}
