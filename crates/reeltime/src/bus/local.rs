//! The in-process bus: one node, so publishing is delivering.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Bus, BusError};
use crate::events::{Control, Deliver, ImportEvent};

/// Hands every change straight to this node's sockets.
pub struct LocalBus {
    local: Arc<dyn Deliver>,
}

impl LocalBus {
    pub fn new(local: Arc<dyn Deliver>) -> LocalBus {
        LocalBus { local }
    }
}

#[async_trait]
impl Bus for LocalBus {
    async fn publish(&self, event: Arc<ImportEvent>) -> Result<(), BusError> {
        self.local.deliver(&event);
        Ok(())
    }

    async fn broadcast(&self, control: Control) -> Result<(), BusError> {
        self.local.control(&control);
        Ok(())
    }
}
