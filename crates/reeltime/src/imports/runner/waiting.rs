//! The runner's side of the waiting lines ([`Line`]): taking a place,
//! and telling waiting imports where they stand (`queue_position`).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{POSITIONS_SHOWN, Runner};
use crate::imports::ImportServiceError;
use crate::imports::line::{Line, Slot};
use crate::store::OwnedImport;

impl Runner {
    pub(super) async fn refresh_queue_positions(&self) {
        let waiting = match self.imports.store().waiting_imports(POSITIONS_SHOWN).await {
            Ok(waiting) => waiting,
            Err(err) => {
                tracing::warn!(error = %err, "could not read the waiting line");
                return;
            }
        };
        let metrics = self.imports.metrics();
        metrics.set_waiting("claim", waiting.len());
        metrics.set_waiting("download", self.downloads.waiting());
        metrics.set_waiting("processing", self.processing.waiting());
        for (index, mut owned) in waiting.into_iter().enumerate() {
            let position = Some(index as u64 + 1);
            if owned.import.queue_position == position {
                continue;
            }
            let expected = owned.import.version;
            owned.import.queue_position = position;
            // A lost race means someone else moved it on: nothing to do.
            if let Err(err) = self.imports.commit(&mut owned, expected).await {
                tracing::warn!(error = %err, "could not update a queue position");
            }
        }
    }

    pub(super) async fn wait_in_line(
        &self,
        line: &Arc<Line>,
        owned: OwnedImport,
        stop: &CancellationToken,
    ) -> Result<Option<(OwnedImport, Slot)>, ImportServiceError> {
        let id = owned.import.id.clone();
        let slot = match line.join(&id, &owned.user_id) {
            Ok(slot) => slot,
            Err(ticket) => {
                self.show_positions(line).await;
                // Dropping the ticket (stop) leaves the line.
                let acquired = tokio::select! {
                    _ = stop.cancelled() => None,
                    slot = ticket.granted() => Some(slot),
                };
                // Whoever was behind moved up.
                self.show_positions(line).await;
                match acquired {
                    Some(slot) => slot,
                    None => return Ok(None),
                }
            }
        };
        // Re-read: the import may have been cancelled while it waited.
        match self.imports.store().get_import(&id).await? {
            Some(fresh) if !fresh.import.status.is_final() && !stop.is_cancelled() => {
                Ok(Some((fresh, slot)))
            }
            _ => Ok(None),
        }
    }

    /// Writes the places in `line` that changed. One writer at a time,
    /// each reading the line's latest order: the last write is never stale.
    async fn show_positions(&self, line: &Line) {
        let _writing = line.publishing.lock().await;
        for (id, position) in line.positions() {
            self.set_queue_position(&id, Some(position)).await;
        }
    }

    /// What `user_id`'s storage quota still allows, `None` without a quota.
    async fn set_queue_position(&self, id: &str, position: Option<u64>) {
        for _ in 0..3 {
            let Ok(Some(mut owned)) = self.imports.store().get_import(id).await else {
                return;
            };
            if owned.import.status.is_final() || owned.import.queue_position == position {
                return;
            }
            let expected = owned.import.version;
            owned.import.queue_position = position;
            match self.imports.commit(&mut owned, expected).await {
                Ok(true) => return,
                Ok(false) => continue,
                Err(err) => {
                    tracing::warn!(import_id = id, error = %err, "could not update queue position");
                    return;
                }
            }
        }
    }
}
