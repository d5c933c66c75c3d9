//! The imports service's side of the bus's durable notes
//! ([`HeldNotes`]): the notes live in the shared store
//! ([`crate::store::bus_notes`]), and an orphaned note becomes the
//! import's stored state presented as its owner sees it (fresh media
//! links), the same change any commit publishes.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::ImportService;
use crate::events::{BusNote, HeldNotes, ImportEvent, Orphan};
use crate::store::{NotedState, StoreError};

/// [`HeldNotes`] over the imports service's store.
pub struct StoreNotes {
    imports: Arc<ImportService>,
    lease: Duration,
}

impl StoreNotes {
    /// Notes under `lease` (the job lease: a dead node's held changes go
    /// out about when its imports are resumed elsewhere), or `None` when
    /// the store keeps no notes (SQLite: one node, nobody else to tell).
    pub fn new(imports: Arc<ImportService>, lease: Duration) -> Option<Arc<StoreNotes>> {
        imports.store.bus_notes()?;
        Some(Arc::new(StoreNotes { imports, lease }))
    }
}

#[async_trait]
impl HeldNotes for StoreNotes {
    fn lease(&self) -> Duration {
        self.lease
    }

    async fn hold(&self, node: &str, notes: &[BusNote]) -> Result<(), StoreError> {
        match self.imports.store.bus_notes() {
            Some(store) => store.hold_notes(node, notes, self.lease).await,
            None => Ok(()),
        }
    }

    async fn renew(&self, node: &str) -> Result<u64, StoreError> {
        match self.imports.store.bus_notes() {
            Some(store) => store.renew_notes(node, self.lease).await,
            None => Ok(0),
        }
    }

    async fn clear(&self, published: &[BusNote]) -> Result<u64, StoreError> {
        match self.imports.store.bus_notes() {
            Some(store) => store.clear_notes(published).await,
            None => Ok(0),
        }
    }

    async fn orphans(&self, node: &str, limit: usize) -> Result<Vec<Orphan>, StoreError> {
        let Some(store) = self.imports.store.bus_notes() else {
            return Ok(Vec::new());
        };
        let claimed = store.claim_notes(node, limit, self.lease).await?;
        let mut orphans = Vec::with_capacity(claimed.len());
        for stored in claimed {
            let event = match &stored.state {
                NotedState::Import(owned) => {
                    ImportEvent::new(&owned.user_id, &self.imports.present(owned))?
                }
                NotedState::Removed { version } => {
                    ImportEvent::removed(&stored.note.user_id, &stored.note.import_id, *version)?
                }
                NotedState::Gone => {
                    orphans.push(Orphan {
                        note: stored.note,
                        event: None,
                    });
                    continue;
                }
            };
            orphans.push(Orphan {
                note: stored.note,
                event: Some(event),
            });
        }
        Ok(orphans)
    }
}
