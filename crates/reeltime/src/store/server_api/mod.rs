//! What the server API (the app's backend, `/api/server/*`) keeps beside
//! the imports: its keys, the first answers to requests sent with an
//! `Idempotency-Key`, and a listing of imports across users.
//!
//! A trait of its own rather than more methods on [`Store`](super::Store),
//! so the import store's contract stays about imports; both stores
//! implement it on the same pool ([`Store::server_api`](super::Store::server_api)).

mod postgres;
mod sqlite;
#[cfg(test)]
pub(crate) mod tests;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reeltime_protocol::ImportStatus;

use super::{OwnedImport, StoreError};

/// A stored server API key. The secret itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Stable id: what idempotency answers are scoped by.
    pub id: String,
    /// The operator's name for it (`reeltime keys create --name`).
    pub name: String,
    /// Hex SHA-256 of the secret.
    pub secret_hash: String,
    pub created_at: DateTime<Utc>,
    /// Updated at most once a minute (see `auth::server_keys`).
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What [`ServerApiStore::begin_idempotent`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// The row is this request's now: run it, then finish or abandon.
    Started,
    /// A request with this key came first: `answer` is its stored status
    /// and JSON body, or `None` while it still runs.
    Existing {
        request_hash: String,
        answer: Option<(u16, String)>,
    },
}

/// How long an Idempotency-Key's answer is kept: a retry within this time
/// gets the first answer, after it the key is new again.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

/// A request that holds its Idempotency-Key row this long without
/// answering is taken to have died with its node; a retry runs it again.
pub const IDEMPOTENCY_ABANDONED: Duration = Duration::from_secs(60);

/// The server API's listing filter; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct ImportFilter<'a> {
    pub user_id: Option<&'a str>,
    pub status: Option<ImportStatus>,
    /// Strictly older than this import id (the page cursor).
    pub before: Option<&'a str>,
    pub limit: i64,
}

#[async_trait]
pub trait ServerApiStore: Send + Sync {
    /// Stores a new key; false when a key that is not revoked has that name.
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<bool, StoreError>;
    /// Every key, revoked ones too, oldest first.
    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;
    /// Revokes the live key named `name`; false when there is none.
    async fn revoke_api_key(&self, name: &str) -> Result<bool, StoreError>;
    /// The key whose secret hashes to `secret_hash`, unless revoked.
    async fn live_api_key(&self, secret_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
    /// Sets `last_used_at` to now, unless it is already less than `gap`
    /// old (a conditional write: keys used often cost no write each time).
    async fn touch_api_key(&self, id: &str, gap: Duration) -> Result<(), StoreError>;

    /// Takes `(api_key_id, key)` for a request hashing to `request_hash`:
    /// inserted first, so that of two concurrent duplicates on any nodes
    /// exactly one gets [`IdempotencyBegin::Started`]. A row older than
    /// [`IDEMPOTENCY_TTL`], or still unanswered after
    /// [`IDEMPOTENCY_ABANDONED`], is taken over.
    async fn begin_idempotent(
        &self,
        api_key_id: &str,
        key: &str,
        request_hash: &str,
    ) -> Result<IdempotencyBegin, StoreError>;
    /// Stores the answer of a started request.
    async fn finish_idempotent(
        &self,
        api_key_id: &str,
        key: &str,
        status: u16,
        response: &str,
    ) -> Result<(), StoreError>;
    /// Forgets a started request that failed on the server's side, so that
    /// a retry runs it again.
    async fn abandon_idempotent(&self, api_key_id: &str, key: &str) -> Result<(), StoreError>;
    /// Drops rows older than [`IDEMPOTENCY_TTL`]; returns how many.
    async fn purge_idempotency(&self) -> Result<u64, StoreError>;

    /// Imports of any user, newest first, never tombstones.
    async fn find_imports(&self, filter: &ImportFilter<'_>)
    -> Result<Vec<OwnedImport>, StoreError>;
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 2)
}
