//! HTTP servers: proxy health (/healthz, /livez), metrics (/metrics, /healthz, /proxyMode)
//! and the per-service health-check node ports (spec §6.5, §6.6).

pub mod health;
pub mod metrics;
pub mod service_health;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use health::{ProxyHealth, Stamp};
use metrics::Metrics;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

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

/// Binds `addr` and serves `router` until the runtime stops; returns the bound address.
pub async fn serve(addr: SocketAddr, router: Router) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(%bound, error = %e, "HTTP server stopped");
        }
    });
    Ok(bound)
}
