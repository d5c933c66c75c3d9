//! The WebSocket gateway: the upgrade handler, one session per connection,
//! the hub that maps users to their connections and the per-connection
//! outbox.
//!
//! It knows the rest of the server only through [`crate::events`]: the
//! buses hand it changes as a [`Deliver`](crate::events::Deliver) (the
//! hub), and it reads starting states from a [`SnapshotSource`]. It never
//! names the bus or the imports service.

mod admission;
mod connect_gate;
mod hub;
mod outbox;
mod sent;
mod session;
mod snapshot_batch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use reeltime_protocol::{Close, MAX_CLIENT_MESSAGE_BYTES};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use admission::{Admission, WaitRefused, Waiting};
pub use connect_gate::{ConnectGate, ConnectSlot};
pub use hub::{Hub, LimitError, Registration, Reservation, SnapshotRead};
pub use outbox::Outbox;
pub use session::read_client_message;
pub use snapshot_batch::{ReadFailed, SnapshotBatcher};

use crate::auth::Verifier;
use crate::events::SnapshotSource;
use crate::metrics::Metrics;
use crate::net::TrustedProxies;
use crate::store::Snapshot;

/// How many bytes of queued messages a socket collects before writing
/// them: a usual batch of progress messages goes out in one `sendto`
/// instead of one each. The buffer only grows this far on sockets that
/// had that much queued at once.
const WRITE_BUFFER_BYTES: usize = 8 * 1024;

/// What tungstenite allocates for reading each socket's frames, kept for
/// the socket's life. Client messages are rare and small (pings, tokens of
/// ~1 KiB); a larger one grows the buffer, and is read this many bytes
/// per `read`.
const READ_BUFFER_BYTES: usize = 256;

/// What every session needs, shared.
pub struct Gateway {
    pub verifier: Arc<Verifier>,
    pub hub: Arc<Hub>,
    /// Caps on sockets still waiting for their token.
    pub admission: Arc<Admission>,
    /// Turns at the database for connects and resyncs, so a reconnect
    /// storm is refused early instead of queueing past the pool's timeout.
    pub connect_gate: ConnectGate,
    /// Whose `X-Forwarded-For` names the client, for the per-address cap.
    pub trusted_proxies: TrustedProxies,
    /// Where a connect's snapshot comes from (the imports service, joined
    /// in `app`): presented per connect from here, read through
    /// `snapshot_reads`.
    pub snapshots: Arc<dyn SnapshotSource>,
    /// The snapshot reads of `snapshots`, many users per query.
    pub snapshot_reads: Arc<SnapshotBatcher>,
    pub metrics: Arc<Metrics>,
    pub allowed_origins: Vec<String>,
    pub auth_timeout: Duration,
    pub heartbeat: Duration,
    /// Short random id of this process, prefixed to connection ids.
    pub node_id: String,
    /// Cancelled on SIGTERM/SIGINT: every session closes with 1001.
    pub shutdown: CancellationToken,
    /// Every session task, so shutdown can wait for their close frames.
    pub sessions: TaskTracker,
}

impl Gateway {
    /// What a socket of `user_id` gets on connect, with fresh media links:
    /// the [`SnapshotSource`]'s read, done once for the connects of that
    /// user that arrive together (see [`Hub::snapshot_read`]), presented
    /// for each.
    pub async fn snapshot(&self, user_id: &str) -> Result<Snapshot, ReadFailed> {
        let read = self
            .hub
            .snapshot_read(user_id)
            .get_or_read(|| self.snapshot_reads.read(user_id))
            .await?;
        Ok(self.snapshots.present(user_id, &read))
    }
}

/// A socket let in: its place in the connection count and, until its
/// token arrives, its place among the waiting sockets.
pub struct Admitted {
    pub reservation: Reservation,
    pub waiting: Option<Waiting>,
}

impl Gateway {
    /// Lets a socket of `client` in, or says why not. A socket that brought
    /// its token in the query is verified at once and does not wait.
    fn admit(&self, client: std::net::IpAddr, has_token: bool) -> Result<Admitted, Close> {
        let waiting = if has_token {
            None
        } else {
            Some(
                self.admission
                    .wait(client)
                    .map_err(|refused| match refused {
                        WaitRefused::Total => Close::TOO_MANY_WAITING,
                        WaitRefused::PerAddress => Close::TOO_MANY_WAITING_FROM_ADDRESS,
                    })?,
            )
        };
        let reservation = self
            .hub
            .reserve()
            .map_err(|_| Close::TOO_MANY_CONNECTIONS)?;
        Ok(Admitted {
            reservation,
            waiting,
        })
    }
}

/// The `?token=` of the upgrade request, the only query parameter we read.
#[derive(Debug, PartialEq)]
enum QueryToken {
    /// None given (or empty): the token comes in the first message.
    Absent,
    One(String),
    /// More than one `token` parameter: refused like any bad token (1008,
    /// after the upgrade), never guessed at.
    Duplicate,
}

impl QueryToken {
    fn parse(query: Option<&str>) -> QueryToken {
        let mut tokens = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .filter(|(name, _)| name == "token")
            .map(|(_, value)| value.into_owned());
        match (tokens.next(), tokens.next()) {
            (None, _) => QueryToken::Absent,
            (Some(_), Some(_)) => QueryToken::Duplicate,
            (Some(token), None) if token.is_empty() => QueryToken::Absent,
            (Some(token), None) => QueryToken::One(token),
        }
    }
}

/// `GET /api/ws/progress`. Every refusal happens after the upgrade, as a
/// close frame: a browser sees a refused handshake only as 1006 and could
/// not tell an auth failure from a network failure.
pub async fn progress_socket(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let origin_refused = !gateway.allowed_origins.is_empty()
        && headers
            .get(axum::http::header::ORIGIN)
            .is_some_and(|origin| {
                let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
                !gateway
                    .allowed_origins
                    .iter()
                    .any(|allowed| allowed == origin)
            });
    let token = QueryToken::parse(query.as_deref());
    // Taken before the upgrade, refused after it, like every refusal.
    let client = gateway.trusted_proxies.client_ip(peer.ip(), &headers);
    let admitted = gateway.admit(client, token != QueryToken::Absent);
    let opening = Box::new(Opening {
        origin_refused,
        token,
        admitted,
        client,
    });
    upgrade
        // Grows as needed; idle sockets then cost less (docs/benchmarks.md).
        .read_buffer_size(READ_BUFFER_BYTES)
        // Messages queued for one socket are fed and then flushed together:
        // up to this many bytes leave in one write (docs/benchmarks.md).
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_frame_size(MAX_CLIENT_MESSAGE_BYTES)
        .on_upgrade(move |socket| {
            // Boxed: every `async` layer a value moves through keeps a slot
            // for it, so the socket inline cost its 368 bytes three times
            // over in each session's task (docs/benchmarks.md).
            let socket = Box::new(socket);
            // A task of its own, holding only the session: axum's upgrade
            // task (with the handshake's state) ends here instead of living
            // as long as the socket around it (docs/benchmarks.md, "Round two").
            let tracker = gateway.sessions.clone();
            tracker.spawn(session::run(socket, gateway, opening));
            std::future::ready(())
        })
}

/// What the upgrade request decided, for the session to act on once the
/// socket is open (every refusal is a close frame, after the upgrade).
pub(crate) struct Opening {
    origin_refused: bool,
    token: QueryToken,
    admitted: Result<Admitted, Close>,
    client: std::net::IpAddr,
}

#[cfg(test)]
mod tests {
    use super::QueryToken;

    #[test]
    fn the_query_token_is_one_value_or_refused() {
        assert_eq!(QueryToken::parse(None), QueryToken::Absent);
        assert_eq!(QueryToken::parse(Some("v=1")), QueryToken::Absent);
        assert_eq!(QueryToken::parse(Some("token=")), QueryToken::Absent);
        assert_eq!(
            QueryToken::parse(Some("token=a.b%2Ec&v=1")),
            QueryToken::One("a.b.c".into())
        );
        assert_eq!(
            QueryToken::parse(Some("token=a&token=b")),
            QueryToken::Duplicate
        );
        assert_eq!(
            QueryToken::parse(Some("token=&token=b")),
            QueryToken::Duplicate
        );
    }
}
