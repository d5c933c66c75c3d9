//! Durable state: users and imports. The trait is the seam where the
//! embedded SQLite store and a PostgreSQL store are interchangeable.
//!
//! # Turn order
//!
//! The order in which waiting imports get a node, shared by
//! [`Store::claim_imports`] and [`Store::waiting_imports`] so that
//! `queue_position` is the order of the claims. An import's turn is how
//! many unfinished imports its user has that are older (0 for the oldest):
//! the n-th unfinished import of every user is served before anyone's
//! (n+1)-th, oldest first within a turn. A user with 300 imports waiting,
//! or with every slot busy, goes behind every user with fewer in flight:
//! round-robin by user, counted over what runs as well as what waits. In
//! SQL, `ORDER BY (SELECT COUNT(*) ... older unfinished of the same user),
//! id`: a correlated count per candidate on the `(user_id, finished, id)`
//! index, cheap when few imports wait (the usual case), unlike a window
//! over every unfinished import, which cost ~40 ms per claim at 10,000
//! unfinished imports (measured on SQLite; the count: ~3.5 ms with 10
//! waiting).

pub mod bus_notes;
mod group_commit;
pub mod hooks;
#[cfg(test)]
mod hooks_tests;
mod postgres;
mod postgres_hooks;
mod rows;
pub mod server_api;
mod sqlite;
mod sqlite_hooks;
#[cfg(test)]
pub(crate) mod tests;
mod uploads;

use std::sync::Arc;

use std::time::Duration;

use async_trait::async_trait;
use reeltime_protocol::{Import, RemovedImport, User};

pub use bus_notes::{BusNote, BusNoteStore, NotedState, StoredNote};
pub use group_commit::GroupCommit;
pub use hooks::HookStore;
pub use postgres::PostgresStore;
pub use server_api::ServerApiStore;
pub use sqlite::SqliteStore;
pub use uploads::{UploadInsert, UploadRow, UploadStore};

/// Opens the store `url` names: `sqlite:` (the embedded default) or
/// `postgres://`/`postgresql://` (shared by several nodes). The caller only
/// ever sees the trait, so nothing above this line knows which it got.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if is_postgres_url(url) {
        Ok(Arc::new(PostgresStore::open(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl)
    }
}

/// The two faces of one opened database: the import store and the
/// webhook tables beside it.
pub struct Opened {
    pub store: Arc<dyn Store>,
    pub hooks: Arc<dyn HookStore>,
}

/// [`open`], also saying whether this node writes webhook events (only
/// when a webhook URL is configured; see `migrations/*/0006_webhooks.sql`).
pub async fn open_with(url: &str, webhooks: bool) -> Result<Opened, StoreError> {
    if is_postgres_url(url) {
        let store = Arc::new(PostgresStore::open_with(url, webhooks).await?);
        Ok(Opened {
            store: Arc::clone(&store) as Arc<dyn Store>,
            hooks: store,
        })
    } else if url.starts_with("sqlite:") {
        let store = Arc::new(SqliteStore::open(url).await?);
        store.set_webhooks_enabled(webhooks).await?;
        Ok(Opened {
            store: Arc::clone(&store) as Arc<dyn Store>,
            hooks: store,
        })
    } else {
        Err(StoreError::UnsupportedUrl)
    }
}

/// True for the URL schemes [`PostgresStore`] accepts.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Whether `import` is run by the app's own workers (`source` external):
/// stored in the `external` column, which keeps it out of every claim and
/// waiting line and out of the user's cap of unfinished imports.
pub(crate) fn is_external(import: &Import) -> bool {
    import.source == reeltime_protocol::ImportSource::External
}

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
    #[error("unsupported database URL: expected sqlite:, postgres:// or postgresql://")]
    UnsupportedUrl,
    #[error("the store's writer has stopped")]
    WriterStopped,
}

/// An import with the user who owns it; ownership is never part of the
/// wire object, but every lookup must know it.
#[derive(Debug, Clone)]
pub struct OwnedImport {
    pub user_id: String,
    pub import: Import,
    /// The version the store holds, as far as this copy knows. Equal to
    /// `import.version` except in the copy of the job running the import,
    /// which publishes progress from memory and stores it later
    /// (docs/architecture.md, "Progress off the durable path"): every
    /// compare-and-set write compares against this.
    pub stored_version: u64,
    /// When this copy got ahead of the store (its first progress not yet
    /// written): the next write is due `REELTIME_PROGRESS_PERSIST_SECS`
    /// after it. `None` when the store has it all.
    pub unstored_since: Option<std::time::Instant>,
}

impl OwnedImport {
    /// `import` of `user_id`, as the store holds it.
    pub fn new(user_id: impl Into<String>, import: Import) -> OwnedImport {
        OwnedImport {
            user_id: user_id.into(),
            stored_version: import.version,
            unstored_since: None,
            import,
        }
    }
}

/// One compare-and-set write of a batch: store `owned` if the stored
/// version is still `expected_version`.
#[derive(Debug, Clone)]
pub struct ImportWrite {
    pub owned: OwnedImport,
    pub expected_version: u64,
}

/// Which of `writes` were written, in order, from the ids a batch update
/// returned.
fn written_in_order(writes: &[ImportWrite], written_ids: Vec<String>) -> Vec<bool> {
    let written: std::collections::HashSet<String> = written_ids.into_iter().collect();
    writes
        .iter()
        .map(|write| written.contains(&write.owned.import.id))
        .collect()
}

/// How many finished imports a snapshot carries besides the unfinished ones.
pub const SNAPSHOT_FINISHED: i64 = 50;

/// How many tombstones (the newest deletes) a snapshot carries. A tab that
/// was away while more of its user's imports than this were deleted keeps
/// the older ones until it reloads; 200 entries are ~10 KiB on the wire.
pub const SNAPSHOT_REMOVED: i64 = 200;

/// How long a tombstone is kept. A tab can only learn of a delete from a
/// snapshot while the tombstone lasts, so this is how long a tab may be
/// away (a laptop closed over a holiday) and still drop a row deleted
/// meanwhile. A tombstone is a few dozen bytes; 30 days of them cost
/// little, and are several times the 7 days a Clerk session lives by
/// default, after which the user signs in again anyway.
pub const TOMBSTONE_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// What a socket is sent on connect: see [`Store::snapshot`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub imports: Vec<Import>,
    /// Tombstones of the user's newest deletes, at most [`SNAPSHOT_REMOVED`].
    pub removed: Vec<RemovedImport>,
}

#[async_trait]
pub trait Store: UploadStore + Send + Sync + 'static {
    /// Creates the user on first sight, updates the email when it changed.
    async fn upsert_user(&self, id: &str, email: Option<&str>) -> Result<User, StoreError>;
    async fn get_user(&self, id: &str) -> Result<Option<User>, StoreError>;

    async fn insert_import(&self, owned: &OwnedImport) -> Result<(), StoreError>;
    /// Stores `owned` only while its user has fewer than `max_unfinished`
    /// unfinished imports, counting and inserting as one step, so that two
    /// creates racing on any nodes cannot both take the last place.
    /// Returns whether it was stored.
    async fn insert_import_within(
        &self,
        owned: &OwnedImport,
        max_unfinished: u64,
    ) -> Result<bool, StoreError>;
    /// Bytes `user_id` keeps: the `result.size_bytes` of their completed
    /// imports (the served video; posters are not counted).
    async fn stored_bytes(&self, user_id: &str) -> Result<u64, StoreError>;
    /// The import, unless it does not exist or was deleted (a tombstone is
    /// never an import to anyone but a snapshot).
    async fn get_import(&self, id: &str) -> Result<Option<OwnedImport>, StoreError>;
    /// The user's imports, newest first, strictly older than `before` (an
    /// id). Never tombstones.
    async fn list_imports(
        &self,
        user_id: &str,
        limit: i64,
        before: Option<&str>,
    ) -> Result<Vec<Import>, StoreError>;
    /// Unfinished imports plus the [`SNAPSHOT_FINISHED`] newest finished
    /// ones, newest first, and the tombstones of the [`SNAPSHOT_REMOVED`]
    /// newest deletes: one query, as connects are the hot path.
    async fn snapshot(&self, user_id: &str) -> Result<Snapshot, StoreError>;
    /// [`Store::snapshot`] of each of `user_ids`, in that order, in one
    /// query: the connects of a node read their snapshots in batches, as a
    /// query's hand-off costs more than its work (docs/benchmarks.md,
    /// "Connect without the user's row").
    async fn snapshots(&self, user_ids: &[String]) -> Result<Vec<Snapshot>, StoreError>;
    /// Writes `import` only if the stored version is still `expected_version`
    /// (compare-and-set); returns whether it was written. This is what keeps
    /// versions strictly increasing when a job and a cancel race.
    async fn update_import(
        &self,
        owned: &OwnedImport,
        expected_version: u64,
    ) -> Result<bool, StoreError>;
    /// [`Store::update_import`] for many imports in one statement; returns
    /// whether each was written, in order. At most one write per import id
    /// (the caller orders the writes of one import). One round trip instead
    /// of one per change is what lets progress of thousands of imports a
    /// second reach the database (docs/benchmarks.md).
    async fn update_imports(&self, writes: &[ImportWrite]) -> Result<Vec<bool>, StoreError>;
    /// Every unfinished import, oldest first, for resuming after a restart.
    async fn unfinished_imports(&self) -> Result<Vec<OwnedImport>, StoreError>;
    /// Replaces `user_id`'s import `id` by its tombstone if the stored
    /// version is still `expected_version` (compare-and-set, like
    /// [`Store::update_import`]); the tombstone's version is one more.
    /// Returns whether it was written. The caller checks that the import
    /// is finished. A tombstone is never written over again: updates leave
    /// it alone, so a late write of a job cannot bring the import back.
    async fn remove_import(
        &self,
        user_id: &str,
        id: &str,
        expected_version: u64,
    ) -> Result<bool, StoreError>;
    /// Drops the tombstones of deletes more than `age` ago; returns how many.
    async fn purge_tombstones(&self, age: Duration) -> Result<u64, StoreError>;
    /// Imports per status (tombstones are not imports and not counted).
    async fn count_by_status(&self) -> Result<Vec<(String, u64)>, StoreError>;
    /// One trivial query: whether the database answers (`/readyz`, every
    /// few seconds from a balancer; counting would read a whole index).
    async fn ping(&self) -> Result<(), StoreError>;

    /// The server API's keys, idempotency answers and cross-user listing,
    /// on the same database (see [`server_api`]).
    fn server_api(&self) -> &dyn ServerApiStore;

    /// Whether several nodes may share this store. A store only one node
    /// can use (SQLite) lets that node take back every lease at start.
    fn shared(&self) -> bool;
    /// Where a node notes the changes it stored but could not publish
    /// ([`bus_notes`]), so that another node publishes them if it dies
    /// first. `None` for a store only one node uses (SQLite): no other
    /// node has sockets to tell.
    fn bus_notes(&self) -> Option<&dyn BusNoteStore> {
        None
    }
    /// Claims for `node`, for `lease`, up to `limit` unfinished imports that
    /// no node holds or whose lease ran out, in turn order (see the module docs);
    /// returned oldest first (the runner claims no more than it has free
    /// download slots, so they all start at once). Each import goes to exactly one claimer.
    async fn claim_imports(
        &self,
        node: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OwnedImport>, StoreError>;
    /// Extends every lease `node` holds on unfinished imports; returns the
    /// ids it still holds (a lease that ran out and was claimed elsewhere is
    /// lost).
    async fn renew_leases(&self, node: &str, lease: Duration) -> Result<Vec<String>, StoreError>;
    /// Gives `node`'s lease on `id` back at once.
    async fn release_lease(&self, node: &str, id: &str) -> Result<(), StoreError>;
    /// Gives back every lease of `node` (None: of every node), so that other
    /// nodes claim those imports now rather than when the leases run out.
    async fn release_leases(&self, node: Option<&str>) -> Result<(), StoreError>;
    /// Queued imports no node holds, in turn order (see the module docs): the
    /// waiting line, in the order [`Store::claim_imports`] takes it.
    async fn waiting_imports(&self, limit: i64) -> Result<Vec<OwnedImport>, StoreError>;
}
