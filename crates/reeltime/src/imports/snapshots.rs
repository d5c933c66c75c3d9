//! The imports service as the gateway's [`SnapshotSource`]: the store's
//! snapshot of a user, shown with fresh media links like every other view
//! of an import.

use async_trait::async_trait;

use super::ImportService;
use crate::events::SnapshotSource;
use crate::store::{Snapshot, StoreError};

#[async_trait]
impl SnapshotSource for ImportService {
    async fn read_many(&self, user_ids: &[String]) -> Result<Vec<Snapshot>, StoreError> {
        self.store().snapshots(user_ids).await
    }

    fn present(&self, user_id: &str, snapshot: &Snapshot) -> Snapshot {
        Snapshot {
            imports: self.present_all(user_id, snapshot.imports.iter().cloned()),
            removed: snapshot.removed.clone(),
        }
    }
}
