//! Users as the tokens name them. A verified token gets-or-creates its user
//! row, but only the first time this process sees that user (or a new
//! email): connects must not each cost a database write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use reeltime_protocol::User;
use tokio::sync::OnceCell;

use crate::store::{Store, StoreError};

/// Remembered users above this count are forgotten all at once; the cost is
/// one upsert per user afterwards, which keeps the cache's memory bounded
/// without bookkeeping.
const MAX_REMEMBERED: usize = 200_000;

/// The email written for a user, once the write is done. Shared by every
/// connect of that user meanwhile: the tabs of a browser connect at the
/// same moment, and one write serves them all (docs/benchmarks.md).
type Written = Arc<OnceCell<Option<String>>>;

pub struct Users {
    store: Arc<dyn Store>,
    /// `sub` to the email last written (or being written).
    known: Mutex<HashMap<String, Written>>,
}

impl Users {
    pub fn new(store: Arc<dyn Store>) -> Users {
        Users {
            store,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// Makes sure the user row exists and carries the token's email.
    pub async fn ensure(&self, sub: &str, email: Option<&str>) -> Result<(), StoreError> {
        let written = self.written(sub);
        let stored = written
            // Read first: a known user's row is not rewritten (an upsert
            // locks the row even when nothing changes, and a reconnect
            // storm brings every tab of a user to some node at once:
            // docs/benchmarks.md, "Reconnect storms").
            .get_or_try_init(|| async { Ok::<_, StoreError>(self.get(sub, email).await?.email) })
            .await?;
        if email.is_none() || stored.as_deref() == email {
            return Ok(());
        }
        // A new email (or another tab's write won with an older one).
        let user = self.store.upsert_user(sub, email).await?;
        if let Ok(mut known) = self.known.lock() {
            known.insert(user.id, Arc::new(OnceCell::new_with(Some(user.email))));
        }
        Ok(())
    }

    fn written(&self, sub: &str) -> Written {
        let Ok(mut known) = self.known.lock() else {
            return Written::default();
        };
        if let Some(written) = known.get(sub) {
            return Arc::clone(written);
        }
        if known.len() >= MAX_REMEMBERED {
            known.clear();
        }
        let written = Written::default();
        known.insert(sub.to_string(), Arc::clone(&written));
        written
    }

    /// The stored user, creating it when missing.
    pub async fn get(&self, sub: &str, email: Option<&str>) -> Result<User, StoreError> {
        match self.store.get_user(sub).await? {
            Some(user) if email.is_none() || user.email.as_deref() == email => Ok(user),
            _ => self.store.upsert_user(sub, email).await,
        }
    }
}
