//! The WebSocket gateway: the upgrade handler, one session per connection,
//! the hub that maps users to their connections and the per-connection
//! outbox.

mod hub;
mod outbox;
mod session;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{WebSocketUpgrade, close_code};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use reeltime_protocol::{Import, MAX_CLIENT_MESSAGE_BYTES};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use hub::{Hub, LimitError, Registration, SnapshotRead};
pub use outbox::Outbox;
pub use session::read_client_message;

use crate::auth::Verifier;
use crate::imports::Imports;
use crate::metrics::Metrics;
use crate::store::StoreError;
use crate::users::Users;

/// How many bytes of queued messages a socket collects before writing
/// them: a usual batch of progress messages goes out in one `sendto`
/// instead of one each. The buffer only grows this far on sockets that
/// had that much queued at once.
const WRITE_BUFFER_BYTES: usize = 8 * 1024;

/// What every session needs, shared.
pub struct Gateway {
    pub verifier: Arc<Verifier>,
    pub users: Arc<Users>,
    pub hub: Arc<Hub>,
    pub imports: Arc<Imports>,
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
    /// the store's snapshot, read once for the connects of that user that
    /// arrive together (see [`Hub::snapshot_read`]).
    pub async fn snapshot(&self, user_id: &str) -> Result<Vec<Import>, StoreError> {
        let imports = self
            .hub
            .snapshot_read(user_id)
            .get_or_read(|| self.imports.store().snapshot(user_id))
            .await?;
        Ok(self.imports.present_all(user_id, imports.iter().cloned()))
    }
}

/// `?token=` on the upgrade request; the only query parameter we read.
#[derive(Deserialize)]
pub struct ProgressQuery {
    token: Option<String>,
}

/// `GET /api/ws/progress`. Every refusal happens after the upgrade, as a
/// close frame: a browser sees a refused handshake only as 1006 and could
/// not tell an auth failure from a network failure.
pub async fn progress_socket(
    State(gateway): State<Arc<Gateway>>,
    Query(query): Query<ProgressQuery>,
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
    let token = query.token.filter(|token| !token.is_empty());
    let tracker = gateway.sessions.clone();
    upgrade
        // Grows as needed; idle sockets then cost ~4 KiB less (docs/benchmarks.md).
        .read_buffer_size(512)
        // Messages queued for one socket are fed and then flushed together:
        // up to this many bytes leave in one write (docs/benchmarks.md).
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_frame_size(MAX_CLIENT_MESSAGE_BYTES)
        .on_upgrade(move |socket| {
            // Boxed: every `async` layer a value moves through keeps a slot
            // for it, so the socket inline cost its 368 bytes three times
            // over in each session's task (docs/benchmarks.md).
            let mut socket = Box::new(socket);
            tracker.track_future(async move {
                if gateway.shutdown.is_cancelled() {
                    let _ = socket
                        .send(close_message(close_code::AWAY, "server shutting down"))
                        .await;
                    return;
                }
                if origin_refused {
                    gateway.metrics.auth_failure("origin not allowed");
                    let _ = socket
                        .send(close_message(close_code::POLICY, "origin not allowed"))
                        .await;
                    return;
                }
                session::run(socket, gateway, token).await
            })
        })
}

fn close_message(code: u16, reason: &'static str) -> axum::extract::ws::Message {
    axum::extract::ws::Message::Close(Some(axum::extract::ws::CloseFrame {
        code,
        reason: axum::extract::ws::Utf8Bytes::from_static(reason),
    }))
}
