//! The accept loop shared by every HTTP server: a cap on open connections, a deadline on
//! request headers (which also closes idle keep-alive connections) and on a connection's
//! whole life, so that no client can hold descriptors the sync loop needs.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Descriptors kept out of every server's reach: iptables-restore pipes, the objects file,
/// API connections, the runtime's own.
pub const RESERVED_FDS: u64 = 256;
/// Pools sharing the open-files limit: healthz, metrics, and all health-check node ports.
pub const POOLS: u64 = 3;
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
    /// Last "over the limit" warning, seconds since `epoch`, so the log is not flooded.
    last_warned: Arc<AtomicU64>,
    epoch: Instant,
}

impl Pool {
    pub fn new(limits: Limits) -> Pool {
        Pool {
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            last_warned: Arc::new(AtomicU64::new(u64::MAX)),
            epoch: Instant::now(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
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

/// Serves `router` on `listener` until the task is aborted. Over the pool's limit a new
/// connection is accepted and closed at once, so the backlog never holds clients waiting.
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
        let Ok(permit) = pool.slots.clone().try_acquire_owned() else {
            if let Some(a) = addr {
                pool.warn_full(a);
            }
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let limits = pool.limits.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(stream), service);
            // Dropping the connection closes the socket.
            let _ = tokio::time::timeout(limits.max_connection_age, conn).await;
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
}
