//! The seam between the side that changes imports (`imports`, carried by
//! `bus`) and the side that shows them (`gateway`): the change itself
//! ([`ImportEvent`]), where a bus hands it ([`Deliver`]), and where a
//! socket's starting state comes from ([`SnapshotSource`]).
//!
//! It lives apart so that every dependency points one way: `imports` and
//! `bus` know only these types, never the hub, and the gateway knows only
//! these types, never the imports service. `app` joins the two at start.

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use reeltime_protocol::{Import, ServerMessage};

use crate::store::{Snapshot, StoreError};

/// One change, serialized once and shared by every socket that gets it.
#[derive(Debug)]
pub struct ImportEvent {
    pub user_id: String,
    pub import_id: String,
    pub version: u64,
    pub is_final: bool,
    /// The whole `{"type":"import",...}` (or `import_removed`) message,
    /// ready to write.
    pub payload: Utf8Bytes,
    /// When the change was published, in unix microseconds: the start of
    /// the delivery lag a session observes when it writes the frame
    /// (`reeltime_delivery_lag_seconds`). Wall clock rather than `Instant`
    /// because it crosses nodes in the Redis header; on one host (or with
    /// NTP) the clocks agree to well under a millisecond.
    pub published_us: u64,
}

impl ImportEvent {
    pub fn new(user_id: &str, import: &Import) -> Result<Arc<ImportEvent>, serde_json::Error> {
        let message = ServerMessage::Import {
            import: Box::new(import.clone()),
        };
        Ok(Arc::new(ImportEvent {
            user_id: user_id.to_string(),
            import_id: import.id.clone(),
            version: import.version,
            is_final: import.status.is_final(),
            payload: Utf8Bytes::from(serde_json::to_string(&message)?),
            published_us: crate::metrics::unix_micros(),
        }))
    }

    /// The delete of import `id`: its last change, at `version` (see
    /// [`ServerMessage::ImportRemoved`]). Final, so no queue coalesces it
    /// away, and carried like any other change, so it reaches every socket
    /// of the user on every node in order with the import's other changes.
    pub fn removed(
        user_id: &str,
        id: &str,
        version: u64,
    ) -> Result<Arc<ImportEvent>, serde_json::Error> {
        let message = ServerMessage::ImportRemoved {
            id: id.to_string(),
            version,
        };
        Ok(Arc::new(ImportEvent {
            user_id: user_id.to_string(),
            import_id: id.to_string(),
            version,
            is_final: true,
            payload: Utf8Bytes::from(serde_json::to_string(&message)?),
            published_us: crate::metrics::unix_micros(),
        }))
    }
}

/// An order for every node rather than a change of one import: carried by
/// the same buses to every node (not only those with the user's sockets).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// A session was signed out, removed or revoked: close its sockets
    /// (1008 `session revoked`) and refuse its tokens until `until_ms`
    /// (unix milliseconds).
    RevokeSession {
        sid: String,
        user_id: Option<String>,
        until_ms: i64,
    },
    /// A user was deleted: close their sockets (1008 `user deleted`) and
    /// refuse their tokens until `until_ms`.
    UserDeleted { user_id: String, until_ms: i64 },
}

/// Where a bus hands the changes that reach this node: the gateway's hub.
/// A trait so that the buses hold "something that takes events", not the
/// hub, and the layer below never calls the layer above by name.
pub trait Deliver: Send + Sync + 'static {
    /// Queues `event` on every connection of its user on this node; drops
    /// it when the user has none here.
    fn deliver(&self, event: &Arc<ImportEvent>);

    /// Asks every connection on this node for a fresh snapshot, because
    /// changes may have been missed (the Redis subscription was lost and
    /// came back); returns how many were asked, for the log.
    fn resync_all(&self) -> usize;

    /// Carries out `control` on this node (every node gets each one).
    fn control(&self, control: &Control);
}

/// Where a socket's starting state comes from: the store's snapshot of a
/// user, and how it is shown to its owner. Implemented by the imports
/// service, which owns the store and the media links; the gateway holds
/// only this, so it never reaches into the service that makes changes.
#[async_trait]
pub trait SnapshotSource: Send + Sync + 'static {
    /// One store read of `user_id`'s imports and newest tombstones. The
    /// gateway shares one read between the connects of a user that arrive
    /// together, so this is the raw state, with nothing that expires.
    async fn read(&self, user_id: &str) -> Result<Snapshot, StoreError>;

    /// `snapshot` as its owner sees it, with fresh signed media links:
    /// done per connect, so a shared read never hands out old links.
    fn present(&self, user_id: &str, snapshot: &Snapshot) -> Snapshot;
}
