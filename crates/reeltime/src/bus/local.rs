//! The in-process bus: one node, so publishing is delivering.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Bus, BusError, ImportEvent};
use crate::gateway::Hub;

/// Hands every change straight to this node's hub.
pub struct LocalBus {
    hub: Arc<Hub>,
}

impl LocalBus {
    pub fn new(hub: Arc<Hub>) -> LocalBus {
        LocalBus { hub }
    }
}

#[async_trait]
impl Bus for LocalBus {
    async fn publish(&self, event: Arc<ImportEvent>) -> Result<(), BusError> {
        self.hub.deliver(&event);
        Ok(())
    }
}
