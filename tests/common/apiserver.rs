//! A small Kubernetes API server for tests: the real list/watch protocol over HTTP/1.1 for
//! Services, EndpointSlices and Nodes (JSON lists with resourceVersion, chunked
//! `?watch=true` streams, bookmarks, label/field selectors, paginated lists (`limit` and
//! `continue`), 410 Gone on expired versions), and POST of events.k8s.io/v1 Events (kept for
//! inspection). Lists of a kind can be refused (500) to hold a client before its first sync.
//! Over HTTP, or HTTPS with a [`Pki`] server certificate, optionally requiring a client
//! certificate from the same CA (the common names seen are kept).

#![allow(dead_code)]

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::pki::{common_name, Pki};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Services,
    EndpointSlices,
    Nodes,
}

impl Kind {
    fn of(obj: &Value) -> Kind {
        match obj["kind"].as_str() {
            Some("Service") => Kind::Services,
            Some("EndpointSlice") => Kind::EndpointSlices,
            Some("Node") => Kind::Nodes,
            k => panic!("test API server: unsupported kind {k:?}"),
        }
    }
    fn list_type(self) -> (&'static str, &'static str) {
        match self {
            Kind::Services => ("v1", "ServiceList"),
            Kind::EndpointSlices => ("discovery.k8s.io/v1", "EndpointSliceList"),
            Kind::Nodes => ("v1", "NodeList"),
        }
    }
    fn item_type(self) -> (&'static str, &'static str) {
        match self {
            Kind::Services => ("v1", "Service"),
            Kind::EndpointSlices => ("discovery.k8s.io/v1", "EndpointSlice"),
            Kind::Nodes => ("v1", "Node"),
        }
    }
}

type Key = (Kind, String, String);

struct Event {
    rv: u64,
    kind: Kind,
    old: Option<Value>,
    new: Option<Value>,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<Event>,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    /// Bumped by `expire`: open watches end with a 410 ERROR event.
    epoch: u64,
    stopped: bool,
    lists: HashMap<Kind, usize>,
    watches: HashMap<Kind, usize>,
    /// Kinds whose lists answer 500.
    refused: std::collections::HashSet<Kind>,
    /// (namespace in the URL, body) of every Event created.
    events: Vec<(String, Value)>,
    /// When set, requests without `Authorization: Bearer <token>` get 401.
    token: Option<String>,
    /// Requests refused for a missing or wrong token.
    unauthorized: usize,
    /// `gitVersion` served at /version (None: the default); "" answers 500.
    version: Option<String>,
    /// Common names of the client certificates of accepted TLS connections.
    client_names: Vec<String>,
    /// TLS handshakes that failed (e.g. the client did not trust our CA).
    handshake_failures: usize,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    wake: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn poke(&self) {
        self.wake.send_modify(|v| *v += 1);
    }
}

pub struct ApiServer {
    shared: Shared,
    pub addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

fn meta_key(kind: Kind, obj: &Value) -> Key {
    let m = &obj["metadata"];
    let ns = if kind == Kind::Nodes {
        String::new()
    } else {
        m["namespace"].as_str().unwrap_or("default").to_string()
    };
    (
        kind,
        ns,
        m["name"].as_str().expect("metadata.name").to_string(),
    )
}

/// `a,!b,c=d,e!=f` against metadata.labels.
fn labels_match(sel: &str, obj: &Value) -> bool {
    let labels = &obj["metadata"]["labels"];
    sel.split(',').filter(|t| !t.is_empty()).all(|t| {
        if let Some(k) = t.strip_prefix('!') {
            labels.get(k).is_none()
        } else if let Some((k, v)) = t.split_once("!=") {
            labels.get(k).and_then(Value::as_str) != Some(v)
        } else if let Some((k, v)) = t.split_once('=') {
            let v = v.trim_start_matches('=');
            labels.get(k).and_then(Value::as_str) == Some(v)
        } else {
            labels.get(t).is_some()
        }
    })
}

fn fields_match(sel: &str, obj: &Value) -> bool {
    sel.split(',').filter(|t| !t.is_empty()).all(|t| {
        let (k, v) = t.split_once('=').expect("field selector term");
        let v = v.trim_start_matches('=');
        let got = match k {
            "metadata.name" => obj["metadata"]["name"].as_str(),
            "metadata.namespace" => obj["metadata"]["namespace"].as_str(),
            other => panic!("unsupported field selector {other}"),
        };
        got == Some(v)
    })
}

#[derive(serde::Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase")]
struct Params {
    label_selector: Option<String>,
    field_selector: Option<String>,
    watch: Option<String>,
    resource_version: Option<String>,
    allow_watch_bookmarks: Option<String>,
    limit: Option<usize>,
    #[serde(rename = "continue")]
    continue_token: Option<String>,
}

impl Params {
    fn matches(&self, obj: &Value) -> bool {
        self.label_selector
            .as_deref()
            .is_none_or(|s| labels_match(s, obj))
            && self
                .field_selector
                .as_deref()
                .is_none_or(|s| fields_match(s, obj))
    }
}

fn line(v: &Value) -> axum::body::Bytes {
    let mut s = serde_json::to_vec(v).expect("json");
    s.push(b'\n');
    s.into()
}

/// A list, or one page of it. The continue token is `<resourceVersion>/<last namespace>/<last
/// name>`: later pages carry on after that key and report the first page's version (a
/// real server lists from a snapshot; here an object changed meanwhile arrives again by
/// watch, which clients handle).
fn list(kind: Kind, shared: &Shared, p: &Params) -> Response {
    let mut st = shared.lock();
    let (rv, after) = match p.continue_token.as_deref() {
        Some(t) => {
            let mut it = t.splitn(3, '/');
            let (Some(rv), Some(ns), Some(name)) = (it.next(), it.next(), it.next()) else {
                return (StatusCode::BAD_REQUEST, "bad continue token").into_response();
            };
            (
                rv.to_string(),
                Some((kind, ns.to_string(), name.to_string())),
            )
        }
        None => {
            *st.lists.entry(kind).or_default() += 1;
            (st.rv.to_string(), None)
        }
    };
    let (api_version, list_kind) = kind.list_type();
    let limit = p.limit.filter(|&n| n > 0).unwrap_or(usize::MAX);
    let start = match &after {
        Some(k) => std::ops::Bound::Excluded(k.clone()),
        None => std::ops::Bound::Included((kind, String::new(), String::new())),
    };
    let mut items: Vec<Value> = Vec::new();
    let mut more = false;
    for (_, v) in st
        .objects
        .range((start, std::ops::Bound::Unbounded))
        .take_while(|(k, _)| k.0 == kind)
        .filter(|(_, v)| p.matches(v))
    {
        if items.len() == limit {
            more = true;
            break;
        }
        // Items of a list carry no apiVersion/kind, as a real server sends them.
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("apiVersion");
            o.remove("kind");
        }
        items.push(v);
    }
    let mut metadata = json!({"resourceVersion": rv});
    if let Some(last) = items.last().filter(|_| more) {
        let (_, ns, name) = meta_key(kind, last);
        metadata["continue"] = json!(format!("{rv}/{ns}/{name}"));
    }
    let body = json!({
        "apiVersion": api_version, "kind": list_kind,
        "metadata": metadata,
        "items": items,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn handle(kind: Kind, shared: Shared, p: Params) -> Response {
    let truthy = |o: &Option<String>| o.as_deref() == Some("true") || o.as_deref() == Some("1");
    if !truthy(&p.watch) {
        let mut st = shared.lock();
        if st.refused.contains(&kind) {
            *st.lists.entry(kind).or_default() += 1;
            return (StatusCode::INTERNAL_SERVER_ERROR, "refused by the test").into_response();
        }
        drop(st);
        return list(kind, &shared, &p);
    }
    let since: u64 = p
        .resource_version
        .as_deref()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let bookmarks = truthy(&p.allow_watch_bookmarks);
    let (epoch, gone) = {
        let mut st = shared.lock();
        *st.watches.entry(kind).or_default() += 1;
        (st.epoch, since < st.compacted)
    };
    let rx = shared.wake.subscribe();
    struct Cursor {
        rv: u64,
        sent_bookmark: bool,
        done: bool,
        rx: tokio::sync::watch::Receiver<u64>,
    }
    let gone_event = move |since: u64| {
        line(&json!({"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {since}"), "reason": "Expired", "code": 410
        }}))
    };
    let stream = futures::stream::unfold(
        Cursor {
            rv: since,
            sent_bookmark: !bookmarks,
            done: false,
            rx,
        },
        move |mut c| {
            let shared = shared.clone();
            let p_label = p.label_selector.clone();
            let p_field = p.field_selector.clone();
            async move {
                if c.done {
                    return None;
                }
                if gone {
                    c.done = true;
                    return Some((Ok::<_, std::convert::Infallible>(gone_event(since)), c));
                }
                let params = Params {
                    label_selector: p_label,
                    field_selector: p_field,
                    ..Default::default()
                };
                loop {
                    let mut out = Vec::new();
                    {
                        let st = shared.lock();
                        if st.stopped {
                            return None;
                        }
                        if st.epoch != epoch {
                            c.done = true;
                            return Some((Ok(gone_event(c.rv)), c));
                        }
                        for e in st.history.iter().filter(|e| e.rv > c.rv && e.kind == kind) {
                            let was = e.old.as_ref().is_some_and(|o| params.matches(o));
                            let is = e.new.as_ref().is_some_and(|o| params.matches(o));
                            let (ty, obj) = match (was, is) {
                                (false, true) => ("ADDED", e.new.clone()),
                                (true, true) => ("MODIFIED", e.new.clone()),
                                (true, false) => ("DELETED", e.new.clone().or(e.old.clone())),
                                (false, false) => continue,
                            };
                            out.extend_from_slice(&line(&json!({"type": ty, "object": obj})));
                        }
                        let latest = st.rv;
                        if !c.sent_bookmark {
                            c.sent_bookmark = true;
                            let (av, k) = kind.item_type();
                            out.extend_from_slice(&line(&json!({"type": "BOOKMARK", "object": {
                                "apiVersion": av, "kind": k,
                                "metadata": {"resourceVersion": latest.to_string()}}})));
                        }
                        c.rv = latest;
                    }
                    if !out.is_empty() {
                        return Some((Ok(axum::body::Bytes::from(out)), c));
                    }
                    if c.rx.changed().await.is_err() {
                        return None;
                    }
                }
            }
        },
    );
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn authorize(
    State(s): State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let want = s.lock().token.clone();
    if let Some(t) = want {
        let got = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if got != Some(&format!("Bearer {t}")) {
            s.lock().unauthorized += 1;
            let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401});
            return (
                StatusCode::UNAUTHORIZED,
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response();
        }
    }
    next.run(req).await
}

/// GET /version as the API server answers it (`version.Info`).
fn version_answer(s: &Shared) -> Response {
    let git = s
        .lock()
        .version
        .clone()
        .unwrap_or_else(|| DEFAULT_VERSION.to_string());
    if git.is_empty() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "version unavailable").into_response();
    }
    let mut parts = git.trim_start_matches('v').split('.');
    let major = parts.next().unwrap_or("").to_string();
    let minor = parts.next().unwrap_or("").to_string();
    let body = json!({"major": major, "minor": minor, "gitVersion": git,
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2025-12-01T00:00:00Z", "goVersion": "go1.24.0", "compiler": "gc",
        "platform": "linux/amd64"});
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// What /version says unless [`ApiServer::set_version`] says otherwise.
pub const DEFAULT_VERSION: &str = "v1.35.0";

impl ApiServer {
    /// The `gitVersion` /version reports (`v1.33.2`); "" makes /version answer 500.
    pub fn set_version(&self, git: &str) {
        self.shared.lock().version = Some(git.to_string());
    }

    pub async fn start() -> ApiServer {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// On a given address (the benchmark server, `examples/bench-apiserver.rs`).
    pub async fn start_on(addr: SocketAddr) -> ApiServer {
        Self::serve(Self::new_shared(), addr, None).await
    }

    /// HTTPS with a server certificate from `pki` (for 127.0.0.1); with
    /// `require_client_cert`, connections without a client certificate signed by `pki`
    /// fail their handshake.
    pub async fn start_tls(pki: &Pki, require_client_cert: bool) -> ApiServer {
        let tls = tls_config(pki, require_client_cert);
        Self::serve(
            Self::new_shared(),
            "127.0.0.1:0".parse().unwrap(),
            Some(tls),
        )
        .await
    }

    fn new_shared() -> Shared {
        let (tx, _) = tokio::sync::watch::channel(0u64);
        Shared {
            inner: Arc::new(Mutex::new(Inner::default())),
            wake: Arc::new(tx),
        }
    }

    async fn serve(
        shared: Shared,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> ApiServer {
        shared.lock().stopped = false;
        let route = |kind: Kind| {
            get(move |State(s): State<Shared>, Query(p): Query<Params>| handle(kind, s, p))
        };
        let app = Router::new()
            .route("/api/v1/services", route(Kind::Services))
            .route(
                "/apis/discovery.k8s.io/v1/endpointslices",
                route(Kind::EndpointSlices),
            )
            .route("/api/v1/nodes", route(Kind::Nodes))
            .route(
                "/version",
                get(|State(s): State<Shared>| async move { version_answer(&s) }),
            )
            .route(
                "/apis/events.k8s.io/v1/namespaces/{ns}/events",
                post(
                    |State(s): State<Shared>,
                     axum::extract::Path(ns): axum::extract::Path<String>,
                     body: axum::body::Bytes| async move {
                        let Ok(v) = serde_json::from_slice::<Value>(&body) else {
                            return (StatusCode::BAD_REQUEST, "bad JSON").into_response();
                        };
                        s.lock().events.push((ns, v.clone()));
                        (
                            StatusCode::CREATED,
                            [(header::CONTENT_TYPE, "application/json")],
                            v.to_string(),
                        )
                            .into_response()
                    },
                ),
            )
            .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
            .layer(axum::middleware::from_fn_with_state(
                shared.clone(),
                authorize,
            ))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let stopped = async move {
            let _ = stopped.await;
        };
        let task = match &tls {
            None => tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await;
            }),
            Some(cfg) => {
                let listener = TlsListener {
                    tcp: listener,
                    acceptor: tokio_rustls::TlsAcceptor::from(cfg.clone()),
                    shared: shared.clone(),
                };
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(stopped)
                        .await;
                })
            }
        };
        ApiServer {
            shared,
            addr,
            tls,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Common names of the client certificates presented on accepted connections.
    pub fn client_names(&self) -> Vec<String> {
        self.shared.lock().client_names.clone()
    }

    /// TLS handshakes that failed so far.
    pub fn handshake_failures(&self) -> usize {
        self.shared.lock().handshake_failures
    }

    /// Creates or updates an object (with apiVersion and kind); returns its resourceVersion.
    pub fn apply(&self, mut obj: Value) -> u64 {
        let kind = Kind::of(&obj);
        let key = meta_key(kind, &obj);
        let rv = {
            let mut st = self.shared.lock();
            st.rv += 1;
            let rv = st.rv;
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            if kind != Kind::Nodes && obj["metadata"]["namespace"].is_null() {
                obj["metadata"]["namespace"] = json!("default");
            }
            let old = st.objects.insert(key, obj.clone());
            st.history.push(Event {
                rv,
                kind,
                old,
                new: Some(obj),
            });
            rv
        };
        self.shared.poke();
        rv
    }

    pub fn delete(&self, obj: &Value) {
        let kind = Kind::of(obj);
        let key = meta_key(kind, obj);
        {
            let mut st = self.shared.lock();
            let Some(mut old) = st.objects.remove(&key) else {
                return;
            };
            st.rv += 1;
            let rv = st.rv;
            old["metadata"]["resourceVersion"] = json!(rv.to_string());
            // DELETED carries the object's last state.
            st.history.push(Event {
                rv,
                kind,
                old: Some(old),
                new: None,
            });
        }
        self.shared.poke();
    }

    /// Compacts history: every open watch ends with a 410 Gone ERROR event, and watches
    /// resuming from an older resourceVersion get one too, forcing clients to relist.
    pub fn expire(&self) {
        {
            let mut st = self.shared.lock();
            st.compacted = st.rv + 1;
            st.epoch += 1;
        }
        self.shared.poke();
    }

    /// Lists of `kind` answer 500 while `on`.
    pub fn refuse(&self, kind: Kind, on: bool) {
        let mut st = self.shared.lock();
        if on {
            st.refused.insert(kind);
        } else {
            st.refused.remove(&kind);
        }
    }

    /// Requires `Authorization: Bearer <token>` on every request from now on.
    pub fn require_token(&self, token: &str) {
        self.shared.lock().token = Some(token.to_string());
    }

    /// Requests refused with 401 so far.
    pub fn unauthorized(&self) -> usize {
        self.shared.lock().unauthorized
    }

    /// (namespace, body) of the Events created so far.
    pub fn events(&self) -> Vec<(String, Value)> {
        self.shared.lock().events.clone()
    }

    pub fn lists(&self, kind: Kind) -> usize {
        self.shared.lock().lists.get(&kind).copied().unwrap_or(0)
    }

    pub fn watches(&self, kind: Kind) -> usize {
        self.shared.lock().watches.get(&kind).copied().unwrap_or(0)
    }

    /// Closes the listener and every open watch (the API server "goes away").
    pub async fn stop(&mut self) {
        self.shared.lock().stopped = true;
        self.shared.poke();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// Starts again on the same address with the same objects.
    pub async fn restart(&mut self) {
        let again = Self::serve(self.shared.clone(), self.addr, self.tls.clone()).await;
        *self = again;
    }
}

fn tls_config(pki: &Pki, require_client_cert: bool) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let leaf = pki.server();
    let chain = vec![CertificateDer::from(leaf.cert_der)];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der));
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions");
    let builder = if require_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        let ca = rustls::pki_types::pem::PemObject::from_pem_slice(pki.ca_pem.as_bytes())
            .expect("CA PEM");
        roots.add(ca).expect("CA certificate");
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier");
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .expect("server certificate");
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// Accepts TCP connections and completes their TLS handshake before axum sees them; a
/// failed handshake is counted and the next connection accepted.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Shared,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            let handshake = self.acceptor.accept(tcp);
            match tokio::time::timeout(std::time::Duration::from_secs(10), handshake).await {
                Ok(Ok(tls)) => {
                    let cn = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| common_name(c));
                    if let Some(cn) = cn {
                        self.shared.lock().client_names.push(cn);
                    }
                    return (tls, addr);
                }
                _ => self.shared.lock().handshake_failures += 1,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
