//! Carries import changes from whoever made them to every node that holds a
//! socket of that user. The in-process bus is enough for one machine; the
//! Redis bus (`REELTIME_REDIS_URL`) carries them between several.

mod local;
pub mod redis;

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use reeltime_protocol::{Import, ServerMessage};

pub use self::redis::RedisBus;
pub use local::LocalBus;

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
        }))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("bus unavailable: {0}")]
    Unavailable(String),
}

/// Publishes changes to every node's hub.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    async fn publish(&self, event: Arc<ImportEvent>) -> Result<(), BusError>;
}
