//! The seam between the side that changes imports (`imports`, carried by
//! `bus`) and the side that shows them (`gateway`): the change itself
//! ([`ImportEvent`]), where a bus hands it ([`Deliver`]), and where a
//! socket's starting state comes from ([`SnapshotSource`]).
//!
//! It lives apart so that every dependency points one way: `imports` and
//! `bus` know only these types, never the hub, and the gateway knows only
//! these types, never the imports service. `app` joins the two at start.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use reeltime_protocol::{Import, ServerMessage};

pub use crate::store::BusNote;
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
    /// One store read of the imports and newest tombstones of each of
    /// `user_ids`, in that order. The gateway shares one read between the
    /// connects of a user that arrive together, and reads the users whose
    /// connects arrive together in one query, so this is the raw state,
    /// with nothing that expires.
    async fn read_many(&self, user_ids: &[String]) -> Result<Vec<Snapshot>, StoreError>;

    /// `snapshot` as its owner sees it, with fresh signed media links:
    /// done per connect, so a shared read never hands out old links.
    fn present(&self, user_id: &str, snapshot: &Snapshot) -> Snapshot;
}

/// A note a sweeping bus claimed from a node that stopped renewing it:
/// publish `event`, then clear the note.
#[derive(Debug)]
pub struct Orphan {
    /// The note as claimed: cleared at the version published, or at its
    /// own when there is nothing to publish.
    pub note: BusNote,
    /// The import's stored state as a change to publish (newer than or
    /// equal to what the note stood for); `None` when nothing is left to
    /// tell (the import's rows are gone), and the note is only cleared.
    pub event: Option<Arc<ImportEvent>>,
}

/// Where a bus that cannot publish keeps durable notes of the stored
/// changes it holds, and where a bus that can finds the notes of a node
/// that died holding them (docs/architecture.md, "A held change outlives
/// its node"). Implemented by the imports service over the shared store;
/// a trait here so that the bus, below both, names neither.
#[async_trait]
pub trait HeldNotes: Send + Sync + 'static {
    /// How long a note lasts unless its node renews it; the bus renews
    /// and sweeps every third of it.
    fn lease(&self) -> Duration;
    /// Notes that `node` holds these stored changes unpublished.
    async fn hold(&self, node: &str, notes: &[BusNote]) -> Result<(), StoreError>;
    /// Extends every note `node` holds; returns how many.
    async fn renew(&self, node: &str) -> Result<u64, StoreError>;
    /// The changes in `published` went out: drops their notes at or below
    /// those versions; returns how many.
    async fn clear(&self, published: &[BusNote]) -> Result<u64, StoreError>;
    /// Claims for `node` up to `limit` notes whose lease ran out, each with
    /// its import's stored state ready to publish.
    async fn orphans(&self, node: &str, limit: usize) -> Result<Vec<Orphan>, StoreError>;
}
