//! Durable state: users and imports. The trait is the seam where the
//! embedded SQLite store and a PostgreSQL store are interchangeable.

mod sqlite;

use async_trait::async_trait;
use reeltime_protocol::{Import, User};

pub use sqlite::SqliteStore;

/// Storage failures. Callers answer 500/1011 and log; the details stay in
/// the log, not in responses.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored import is not valid JSON: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// An import with the user who owns it; ownership is never part of the
/// wire object, but every lookup must know it.
#[derive(Debug, Clone)]
pub struct OwnedImport {
    pub user_id: String,
    pub import: Import,
}

/// How many finished imports a snapshot carries besides the unfinished ones.
pub const SNAPSHOT_FINISHED: i64 = 50;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates the user on first sight, updates the email when it changed.
    async fn upsert_user(&self, id: &str, email: Option<&str>) -> Result<User, StoreError>;
    async fn get_user(&self, id: &str) -> Result<Option<User>, StoreError>;

    async fn insert_import(&self, owned: &OwnedImport) -> Result<(), StoreError>;
    async fn get_import(&self, id: &str) -> Result<Option<OwnedImport>, StoreError>;
    /// The user's imports, newest first, strictly older than `before` (an id).
    async fn list_imports(
        &self,
        user_id: &str,
        limit: i64,
        before: Option<&str>,
    ) -> Result<Vec<Import>, StoreError>;
    /// Unfinished imports plus the [`SNAPSHOT_FINISHED`] newest finished ones.
    async fn snapshot(&self, user_id: &str) -> Result<Vec<Import>, StoreError>;
    /// Writes `import` only if the stored version is still `expected_version`
    /// (compare-and-set); returns whether it was written. This is what keeps
    /// versions strictly increasing when a job and a cancel race.
    async fn update_import(
        &self,
        owned: &OwnedImport,
        expected_version: u64,
    ) -> Result<bool, StoreError>;
    /// Every unfinished import, oldest first, for resuming after a restart.
    async fn unfinished_imports(&self) -> Result<Vec<OwnedImport>, StoreError>;
    async fn delete_import(&self, id: &str) -> Result<bool, StoreError>;
    async fn count_by_status(&self) -> Result<Vec<(String, u64)>, StoreError>;
}
