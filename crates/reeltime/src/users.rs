//! Users as the tokens name them. A verified token gets-or-creates its user
//! row, but only the first time this process sees that user (or a new
//! email): connects must not each cost a database write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use reeltime_protocol::User;

use crate::store::{Store, StoreError};

/// Remembered users above this count are forgotten all at once; the cost is
/// one upsert per user afterwards, which keeps the cache's memory bounded
/// without bookkeeping.
const MAX_REMEMBERED: usize = 200_000;

pub struct Users {
    store: Arc<dyn Store>,
    /// `sub` to the email last written.
    known: Mutex<HashMap<String, Option<String>>>,
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
        let already = self
            .known
            .lock()
            .map(|known| {
                known
                    .get(sub)
                    .is_some_and(|stored| email.is_none() || stored.as_deref() == email)
            })
            .unwrap_or(false);
        if already {
            return Ok(());
        }
        let user = self.store.upsert_user(sub, email).await?;
        if let Ok(mut known) = self.known.lock() {
            if known.len() >= MAX_REMEMBERED {
                known.clear();
            }
            known.insert(user.id, user.email);
        }
        Ok(())
    }

    /// The stored user, creating it when missing.
    pub async fn get(&self, sub: &str, email: Option<&str>) -> Result<User, StoreError> {
        match self.store.get_user(sub).await? {
            Some(user) if email.is_none() || user.email.as_deref() == email => Ok(user),
            _ => self.store.upsert_user(sub, email).await,
        }
    }
}
