//! Serving HTTP/1 on a listener with the limits `axum::serve` has no knobs
//! for: a header-read timeout, an idle timeout, a cap on the request head,
//! a cap on connections held at once, and an accept loop that outlives
//! EMFILE. hyper does the protocol and the timeouts; what is written here
//! is the accept loop and the per-connection task around hyper's
//! connection, as `axum::serve` itself does. hyper-util's `auto` builder
//! and its `GracefulShutdown` were not used: `auto` waits for the first
//! bytes with no timeout before hyper's header timer starts (a socket that
//! sends nothing would be held forever), and `GracefulShutdown` does not
//! take hyper's upgradeable HTTP/1 connection.

mod budget;
mod client_addr;
mod tracked;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

pub use budget::{ADMIN_CONNECTIONS, Budget, BudgetInputs, FILE_RESERVE};
pub use client_addr::{BadProxy, TrustedProxies, limit_key};
use tracked::{Activity, Tracked};

/// Largest request head (request line and headers) hyper buffers before
/// answering 431: twice what browsers send with generous cookies, a fraction
/// of hyper's ~400 KiB default.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;
/// The most one read from a connection may buffer: a body (an upload's
/// PATCH) arrives in reads this large instead of head-sized ones, a
/// quarter of the syscalls and wake-ups at 8 MiB PATCHes
/// (docs/benchmarks.md, *Uploads*). hyper grows the buffer only while reads
/// fill it, and reads only as fast as the handler takes the body, so an
/// idle or slow connection keeps a small one; heads stay capped by
/// [`MAX_HEAD_BYTES`].
pub const MAX_READ_BUF_BYTES: usize = 256 * 1024;
/// Most header fields in one request (hyper answers 431 beyond).
pub const MAX_HEADERS: usize = 64;
/// How long the accept loop pauses after running out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// A repeating accept problem is logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Time to send a request head; also how long a kept-alive connection
    /// may wait for its next request (hyper starts the timer when it goes
    /// idle).
    pub header_timeout: Duration,
    /// No byte either way for this long closes the connection: a stalled
    /// body or a response nobody reads. Not after a WebSocket upgrade.
    pub idle_timeout: Duration,
    /// Connections held at once; the loop stops accepting beyond it.
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `shutdown`, then closes idle
/// connections, lets requests in flight finish, and returns when every
/// connection is gone. Handlers see the peer as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_READ_BUF_BYTES)
        .max_headers(MAX_HEADERS);
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    let mut full = RateLimitedLog::default();
    let mut failing = RateLimitedLog::default();
    loop {
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if let Some(suppressed) = full.due() {
                    tracing::warn!(
                        max = limits.max_connections,
                        times_since_last_log = suppressed,
                        "connection cap reached: not accepting until a connection closes"
                    );
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    permit = Arc::clone(&permits).acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                }
            }
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) if is_connection_error(&err) => continue,
            Err(err) => {
                // EMFILE, ENFILE, ENOBUFS, ENOMEM: nothing to do but wait
                // for descriptors to come back. Spinning would burn a core.
                if let Some(suppressed) = failing.due() {
                    tracing::warn!(
                        error = %err,
                        times_since_last_log = suppressed,
                        "accept failed; backing off"
                    );
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let activity = Activity::new();
        let io = TokioIo::new(Tracked::new(stream, Arc::clone(&activity), permit));
        let service = with_peer(router.clone(), peer);
        let builder = Arc::clone(&builder);
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let connection = builder.serve_connection(io, service).with_upgrades();
            tokio::pin!(connection);
            let mut closing = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(err) = result {
                            tracing::debug!(error = %err, "http connection ended");
                        }
                        break;
                    }
                    _ = shutdown.cancelled(), if !closing => {
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    _ = activity.idle_for(limits.idle_timeout) => {
                        tracing::debug!("closing an idle http connection");
                        break;
                    }
                }
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// The router as a hyper service that hands handlers the peer address.
fn with_peer(
    router: Router,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().call(request)
    })
}

/// Errors of one connection that went away before we took it; the next
/// accept is fine.
fn is_connection_error(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Says when a repeating condition should be logged again: the first time,
/// then at most once per [`LOG_EVERY`], with how often it happened between.
#[derive(Default)]
struct RateLimitedLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    fn due(&mut self) -> Option<u64> {
        self.due_at(Instant::now())
    }

    fn due_at(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|last| now < last + LOG_EVERY) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeating_problem_is_logged_once_per_interval() {
        let start = Instant::now();
        let mut log = RateLimitedLog::default();
        assert_eq!(log.due_at(start), Some(0));
        for _ in 0..50 {
            assert_eq!(log.due_at(start + Duration::from_secs(1)), None);
        }
        assert_eq!(log.due_at(start + LOG_EVERY), Some(50));
        assert_eq!(log.due_at(start + LOG_EVERY), None);
    }
}
