//! The accept loop shared by every HTTP server: a cap on open connections, a deadline on
//! request headers (which also closes idle keep-alive connections) and on a connection's
//! whole life, so that no client can hold descriptors the sync loop needs. At the cap the
//! oldest connection with no request in flight makes room for the new one, so a flood of
//! idle clients cannot lock out kubelet's probe for the length of the header timeout.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

/// Descriptors kept out of every server's reach: iptables-restore pipes, the objects file,
/// API connections, the runtime's own.
pub const RESERVED_FDS: u64 = 256;
/// Pools sharing the open-files limit: healthz, metrics, and all health-check node ports.
pub const POOLS: u64 = 3;
/// How long a new connection waits for an evicted one's slot.
const EVICTION_WAIT: Duration = Duration::from_secs(1);
/// No server needs more, whatever the limit.
pub const MAX_CONNECTIONS: usize = 512;
/// Request headers must arrive within this; it also ends a keep-alive connection idle as long.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection is closed after this, whatever it is doing (a client that never reads
/// its answer).
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(60);

/// How one pool of connections is bounded.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub max_connection_age: Duration,
}

impl Limits {
    /// Limits for a process allowed `open_files` descriptors: the pools together stay
    /// [`RESERVED_FDS`] below it.
    pub fn for_open_files(open_files: u64) -> Limits {
        let share = open_files.saturating_sub(RESERVED_FDS) / POOLS;
        Limits {
            max_connections: (share as usize).clamp(16, MAX_CONNECTIONS),
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_connection_age: MAX_CONNECTION_AGE,
        }
    }
}

/// A bounded set of connections, shared by the servers of one pool.
#[derive(Clone, Debug)]
pub struct Pool {
    limits: Limits,
    slots: Arc<Semaphore>,
    /// Open connections by age (accept order), for eviction at the cap.
    open: Arc<Mutex<BTreeMap<u64, Arc<Connection>>>>,
    next_id: Arc<AtomicU64>,
    /// Last "over the limit" warning, seconds since `epoch`, so the log is not flooded.
    last_warned: Arc<AtomicU64>,
    epoch: Instant,
}

/// What the pool knows of one open connection.
#[derive(Debug, Default)]
struct Connection {
    /// A request is being answered: never evicted then.
    busy: AtomicBool,
    evict: Notify,
}

impl Pool {
    pub fn new(limits: Limits) -> Pool {
        Pool {
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            open: Arc::default(),
            next_id: Arc::default(),
            last_warned: Arc::new(AtomicU64::new(u64::MAX)),
            epoch: Instant::now(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Asks the oldest connection with no request in flight to close; false when every
    /// connection is busy.
    fn evict_oldest_idle(&self) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let Some(id) = open
            .iter()
            .find(|(_, c)| !c.busy.load(Ordering::Relaxed))
            .map(|(id, _)| *id)
        else {
            return false;
        };
        // Out of the map at once, so the next eviction picks another; notify_one keeps the
        // wake-up if the task is not waiting yet.
        if let Some(c) = open.remove(&id) {
            c.evict.notify_one();
        }
        true
    }

    /// A slot for a new connection, evicting an idle one at the cap.
    async fn slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Some(p);
        }
        if !self.evict_oldest_idle() {
            return None;
        }
        // The evicted task drops its permit as soon as it runs.
        tokio::time::timeout(EVICTION_WAIT, self.slots.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }

    fn register(&self) -> (u64, Arc<Connection>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Connection::default());
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.insert(id, conn.clone());
        (id, conn)
    }

    fn unregister(&self, id: u64) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.remove(&id);
    }

    fn warn_full(&self, addr: SocketAddr) {
        let now = self.epoch.elapsed().as_secs();
        let last = self.last_warned.load(Ordering::Relaxed);
        if last == u64::MAX || now >= last + 10 {
            self.last_warned.store(now, Ordering::Relaxed);
            tracing::warn!(%addr, max = self.limits.max_connections,
                "HTTP server at its connection limit; closing new connections");
        }
    }
}

/// Serves `router` on `listener` until the task is aborted. At the pool's limit the oldest
/// idle connection is closed for a new one; when every connection is answering a request,
/// the new one is accepted and closed at once, so the backlog never holds clients waiting.
pub fn spawn(listener: TcpListener, router: Router, pool: Pool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(accept_loop(listener, router, pool))
}

/// The loop of [`spawn`], for a task that has more to do first.
pub async fn accept_loop(listener: TcpListener, router: Router, pool: Pool) {
    let addr = listener.local_addr().ok();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and the like: wait for descriptors instead of spinning.
                tracing::warn!(?addr, error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(permit) = pool.slot().await else {
            if let Some(a) = addr {
                pool.warn_full(a);
            }
            drop(stream);
            continue;
        };
        let (id, state) = pool.register();
        let marker = state.clone();
        let service = TowerToHyperService::new(router.clone().layer(axum::middleware::from_fn(
            move |req, next: axum::middleware::Next| {
                let marker = marker.clone();
                async move {
                    marker.busy.store(true, Ordering::Relaxed);
                    let response = next.run(req).await;
                    marker.busy.store(false, Ordering::Relaxed);
                    response
                }
            },
        )));
        let pool = pool.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(pool.limits.header_read_timeout)
                .serve_connection(TokioIo::new(stream), service);
            // Dropping the connection closes the socket.
            tokio::select! {
                _ = tokio::time::timeout(pool.limits.max_connection_age, conn) => {}
                _ = state.evict.notified() => {}
            }
            pool.unregister(id);
        });
    }
}

/// Binds `addr` and serves `router` on it; returns the bound address.
pub async fn bind_and_spawn(
    addr: SocketAddr,
    router: Router,
    pool: Pool,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    Ok((bound, spawn(listener, router, pool)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_stay_below_the_open_files_limit() {
        // Go's default after raising: far more than any server needs.
        assert_eq!(
            Limits::for_open_files(1 << 20).max_connections,
            MAX_CONNECTIONS
        );
        // A hard limit of 1024 (cannot be raised): three pools and the reserve fit.
        let l = Limits::for_open_files(1024);
        assert_eq!(l.max_connections, 256);
        assert!(l.max_connections as u64 * POOLS + RESERVED_FDS <= 1024);
        assert_eq!(Limits::for_open_files(100).max_connections, 16);
    }

    fn pool_of(max: usize) -> Pool {
        Pool::new(Limits {
            max_connections: max,
            header_read_timeout: Duration::from_secs(30),
            max_connection_age: Duration::from_secs(60),
        })
    }

    async fn get_healthz(addr: SocketAddr) -> std::io::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    /// At the cap, idle connections (no request yet) give way to a client with a request.
    #[tokio::test]
    async fn idle_connections_make_room_for_a_request_at_the_cap() {
        let router = Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = spawn(listener, router, pool_of(2));
        let mut idle = Vec::new();
        for _ in 0..4 {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        for _ in 0..3 {
            let answer = get_healthz(addr).await.unwrap();
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            assert!(answer.ends_with("ok"), "{answer}");
        }
        task.abort();
    }

    /// A connection answering a request is never evicted: with every slot busy the new
    /// client is refused instead.
    #[tokio::test]
    async fn busy_connections_are_not_evicted() {
        let entered = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let (e, r) = (entered.clone(), release.clone());
        let router = Router::new().route(
            "/slow",
            axum::routing::get(move || {
                let (e, r) = (e.clone(), r.clone());
                async move {
                    e.notify_one();
                    r.notified().await;
                    "slow done"
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = spawn(listener, router, pool_of(1));
        let slow = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        });
        entered.notified().await;
        // The busy slot holds: a second client is closed without an answer.
        let refused = get_healthz(addr).await.unwrap_or_default();
        assert_eq!(refused, "", "a busy connection was evicted");
        release.notify_one();
        let out = slow.await.unwrap();
        assert!(out.ends_with("slow done"), "{out}");
        task.abort();
    }
}
