//! HTTP servers: proxy health (/healthz, /livez), metrics (/metrics, /healthz, /proxyMode)
//! and the per-service health-check node ports (spec §6.5, §6.6).

pub mod health;
pub mod listen;
pub mod metrics;
pub mod nfacct_metrics;
pub mod service_health;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use health::{ProxyHealth, Stamp};
use metrics::Metrics;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub type SharedHealth = Arc<Mutex<ProxyHealth>>;

/// A JSON answer with the headers upstream's health servers always send.
pub(crate) fn json_response(code: u16, body: String) -> Response {
    let mut r = (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body,
    )
        .into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        "X-Content-Type-Options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// The router of `--healthz-bind-address`.
pub fn healthz_router(health: SharedHealth, metrics: Arc<Metrics>) -> Router {
    let (h1, m1) = (health.clone(), metrics.clone());
    Router::new()
        .route(
            "/healthz",
            get(move || async move {
                let v = h1
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .verdict(Stamp::now());
                let (code, body) = v.healthz();
                m1.healthz_total
                    .with_label_values(&[&code.to_string()])
                    .inc();
                json_response(code, body)
            }),
        )
        .route(
            "/livez",
            get(move || async move {
                let v = health
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .verdict(Stamp::now());
                let (code, body) = v.livez();
                metrics
                    .livez_total
                    .with_label_values(&[&code.to_string()])
                    .inc();
                json_response(code, body)
            }),
        )
}

/// The router of `--metrics-bind-address`.
pub fn metrics_router(metrics: Arc<Metrics>, mode: &'static str) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || async move {
                let mut r = metrics.render().into_response();
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/proxyMode", get(move || async move { mode }))
}

/// How often an address that could not be bound is tried again (upstream: 5 s).
pub const BIND_RETRY: Duration = Duration::from_secs(5);

/// Binds `addr` and serves `router` until the returned task is aborted; returns the bound
/// address. When the address cannot be bound: with `hard_fail` an error (the daemon exits,
/// as upstream's bindAddressHardFail), else the error is logged and binding retried every
/// [`BIND_RETRY`] in the background (the configured address is returned).
pub async fn serve(
    what: &'static str,
    addr: SocketAddr,
    router: Router,
    pool: listen::Pool,
    hard_fail: bool,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    match listen::bind_and_spawn(addr, router.clone(), pool.clone()).await {
        Ok(r) => Ok(r),
        Err(e) if hard_fail => Err(e),
        Err(e) => {
            tracing::error!(server = what, %addr, error = %e,
                "server failed to listen; retrying every 5s (bindAddressHardFail is false)");
            let task = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(BIND_RETRY).await;
                    match tokio::net::TcpListener::bind(addr).await {
                        Ok(l) => {
                            tracing::info!(server = what, %addr, "server listening");
                            return listen::accept_loop(l, router, pool).await;
                        }
                        Err(e) => tracing::error!(server = what, %addr, error = %e,
                            "server failed to listen; retrying"),
                    }
                }
            });
            Ok((addr, task))
        }
    }
}
