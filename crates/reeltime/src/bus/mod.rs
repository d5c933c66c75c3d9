//! Carries import changes from whoever made them to every node that holds a
//! socket of that user. The in-process bus is enough for one machine; the
//! Redis bus (`REELTIME_REDIS_URL`) carries them between several.
//!
//! A bus hands what reaches its node to a [`Deliver`](crate::events::Deliver)
//! (the gateway's hub, joined in `app`), never to the hub by name: the bus
//! sits below the gateway and does not know it.

mod local;
pub mod redis;

use std::sync::Arc;

use async_trait::async_trait;

pub use self::redis::RedisBus;
pub use local::LocalBus;

use crate::events::{Control, ImportEvent};

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("bus unavailable: {0}")]
    Unavailable(String),
}

/// Publishes changes to every node's [`Deliver`](crate::events::Deliver).
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Carries a change the store already holds (a status change, a
    /// creation, a delete) to every node's sockets, this node's first.
    async fn publish(&self, event: Arc<ImportEvent>) -> Result<(), BusError>;

    /// [`Bus::publish`] for a change the store does not hold yet (a
    /// progress tick published from memory): a bus that holds changes
    /// during an outage keeps no durable note of it, since nobody could
    /// publish it from the store if this node died.
    async fn publish_unstored(&self, event: Arc<ImportEvent>) -> Result<(), BusError> {
        self.publish(event).await
    }

    /// Hands `control` to every node's [`Deliver`](crate::events::Deliver),
    /// this one's first (at once, whatever the bus's state).
    async fn broadcast(&self, control: Control) -> Result<(), BusError>;

    /// Whether the bus can carry changes to the other nodes now, for
    /// `/readyz`: `Err` says why not (e.g. `redis: connection refused`).
    /// The in-process bus always can.
    async fn check(&self) -> Result<(), String> {
        Ok(())
    }
}
