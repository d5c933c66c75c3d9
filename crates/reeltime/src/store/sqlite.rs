//! The embedded store: one SQLite file in the data dir, WAL mode.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use reeltime_protocol::{Import, User};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::{
    ImportWrite, OwnedImport, SNAPSHOT_FINISHED, SNAPSHOT_REMOVED, Snapshot, Store, StoreError,
    rows,
};

/// SQLite behind the [`Store`] trait.
pub struct SqliteStore {
    pub(super) pool: SqlitePool,
    /// Held by every write. SQLite lets one writer in at a time; without
    /// this, the pool's connections wait for each other in SQLite's busy
    /// handler, which sleeps 1, 2, 5 ... 100 ms between tries however soon
    /// the lock frees: that was the latency tail (docs/benchmarks.md).
    /// Reads never take it (WAL readers do not block on the writer).
    /// The user upsert of a user's first request does not either (it was a
    /// connect's, until connects stopped writing the user: connects queued
    /// behind import writes held their half-built sessions longer and left
    /// ~0.5 KiB more heap per socket, docs/benchmarks.md); it is rare, and
    /// SQLite's busy handler covers its collisions.
    pub(super) writes: tokio::sync::Mutex<()>,
    checkpoints: tokio::task::AbortHandle,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.checkpoints.abort();
    }
}

/// How often the write-ahead log is copied into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// SQLite's automatic checkpoint runs inside whichever commit crosses 1,000
/// pages of log, and a checkpoint waits for the disk (fsync): that commit,
/// and every change queued behind it, took milliseconds longer. In WAL mode
/// with `synchronous=NORMAL` a commit itself never waits for the disk, so
/// with checkpoints on their own task no change does. A passive checkpoint
/// takes no write lock; the log is restarted from its start by the next
/// write after a complete one, so it stays about a second of writes long.
async fn checkpoint_now_and_then(pool: SqlitePool) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %err, "SQLite checkpoint failed");
        }
    }
}

/// Page cache per pooled connection, in KiB (SQLite's negative form):
/// 512 KiB each, 2 MiB for the pool. SQLite's default (2,000 KiB each) let
/// the node's memory grow with the database for an hour of the soak
/// (docs/reliability.md "Soak"); a page missing from this cache is still in
/// the kernel's, a read away.
const CACHE_SIZE_PRAGMA: &str = "-512";

/// The write-ahead log's file is cut back to this many bytes whenever it
/// starts over. Under a burst of writes the background checkpoints cannot
/// catch up while readers keep using the log, and the file grew to 422 MiB
/// in the 45 s of 4,500 quick imports that seed the soak
/// (docs/reliability.md); without a limit it keeps that size for ever.
const WAL_SIZE_LIMIT_PRAGMA: &str = "67108864";

impl SqliteStore {
    /// Opens (creating if needed) the database and runs migrations.
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            // Checkpoints run in the background (see `checkpoint_now_and_then`).
            .pragma("wal_autocheckpoint", "0")
            .pragma("cache_size", CACHE_SIZE_PRAGMA)
            .pragma("journal_size_limit", WAL_SIZE_LIMIT_PRAGMA);
        // A pinged connection before every query cost ~9% of connect CPU
        // (docs/benchmarks.md); a local file has nothing to test.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let checkpoints = tokio::spawn(checkpoint_now_and_then(pool.clone())).abort_handle();
        Ok(SqliteStore {
            pool,
            writes: tokio::sync::Mutex::new(()),
            checkpoints,
        })
    }
}

impl SqliteStore {
    /// Inserts `owned`; with `max_unfinished`, only while its user has
    /// fewer unfinished imports. Under the write lock, so nothing is
    /// inserted between the count and the insert.
    async fn insert(
        &self,
        owned: &OwnedImport,
        max_unfinished: Option<u64>,
    ) -> Result<bool, StoreError> {
        let _writing = self.writes.lock().await;
        let import = &owned.import;
        let done = sqlx::query(
            "INSERT INTO imports (id, user_id, status, version, finished, data, external)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?8
             WHERE ?7 IS NULL
                OR (SELECT COUNT(*) FROM imports
                    WHERE user_id = ?2 AND finished = 0 AND external = 0) < ?7",
        )
        .bind(&import.id)
        .bind(&owned.user_id)
        .bind(import.status.as_str())
        .bind(i64::try_from(import.version).unwrap_or(i64::MAX))
        .bind(import.status.is_final())
        .bind(serde_json::to_string(import)?)
        .bind(max_unfinished.map(|max| i64::try_from(max).unwrap_or(i64::MAX)))
        .bind(super::is_external(import))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

pub(super) fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

pub(super) fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn decode_user(row: &sqlx::sqlite::SqliteRow) -> Result<User, StoreError> {
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        created_at: from_millis(row.try_get("created_at")?),
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn upsert_user(&self, id: &str, email: Option<&str>) -> Result<User, StoreError> {
        let now = millis(Utc::now());
        let row = sqlx::query(
            "INSERT INTO users (id, email, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT (id) DO UPDATE SET
                email = COALESCE(excluded.email, users.email),
                updated_at = CASE WHEN excluded.email IS NOT users.email AND excluded.email IS NOT NULL
                                  THEN excluded.updated_at ELSE users.updated_at END
             RETURNING id, email, created_at",
        )
        .bind(id)
        .bind(email)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        decode_user(&row)
    }

    async fn get_user(&self, id: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query("SELECT id, email, created_at FROM users WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(decode_user).transpose()
    }

    async fn insert_import(&self, owned: &OwnedImport) -> Result<(), StoreError> {
        self.insert(owned, None).await.map(|_| ())
    }

    async fn insert_import_within(
        &self,
        owned: &OwnedImport,
        max_unfinished: u64,
    ) -> Result<bool, StoreError> {
        self.insert(owned, Some(max_unfinished)).await
    }

    async fn stored_bytes(&self, user_id: &str) -> Result<u64, StoreError> {
        let bytes: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(json_extract(data, '$.result.size_bytes')), 0) FROM imports
             WHERE user_id = ?1 AND status = 'completed'",
        )
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    async fn get_import(&self, id: &str) -> Result<Option<OwnedImport>, StoreError> {
        let row =
            sqlx::query("SELECT user_id, data FROM imports WHERE id = ?1 AND deleted_at IS NULL")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(rows::owned).transpose()
    }

    async fn list_imports(
        &self,
        user_id: &str,
        limit: i64,
        before: Option<&str>,
    ) -> Result<Vec<Import>, StoreError> {
        let rows = sqlx::query(
            "SELECT data FROM imports
             WHERE user_id = ?1 AND deleted_at IS NULL AND (?2 IS NULL OR id < ?2)
             ORDER BY id DESC LIMIT ?3",
        )
        .bind(user_id)
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::import).collect()
    }

    async fn snapshot(&self, user_id: &str) -> Result<Snapshot, StoreError> {
        // Tombstones are finished rows too: the second part leaves them out.
        let rows = sqlx::query(
            "SELECT removed, data FROM (
                 SELECT id, 0 AS removed, data FROM imports WHERE user_id = ?1 AND finished = 0
                 UNION ALL
                 SELECT * FROM (SELECT id, 0, data FROM imports
                                WHERE user_id = ?1 AND finished = 1 AND deleted_at IS NULL
                                ORDER BY id DESC LIMIT ?2)
                 UNION ALL
                 SELECT * FROM (SELECT id, 1, data FROM imports
                                WHERE user_id = ?1 AND deleted_at IS NOT NULL
                                ORDER BY deleted_at DESC LIMIT ?3)
             ) ORDER BY id DESC",
        )
        .bind(user_id)
        .bind(SNAPSHOT_FINISHED)
        .bind(SNAPSHOT_REMOVED)
        .fetch_all(&self.pool)
        .await?;
        rows::snapshot(&rows)
    }

    async fn snapshots(&self, user_ids: &[String]) -> Result<Vec<Snapshot>, StoreError> {
        // `snapshot`'s three parts, for each user of the JSON array; the
        // limits per user are correlated subqueries (SQLite has no LATERAL).
        let rows = sqlx::query(
            "WITH wanted(user_id) AS (SELECT DISTINCT value FROM json_each(?1))
             SELECT user_id, removed, data FROM (
                 SELECT i.user_id, i.id, 0 AS removed, i.data
                 FROM wanted w JOIN imports i ON i.user_id = w.user_id AND i.finished = 0
                 UNION ALL
                 SELECT i.user_id, i.id, 0, i.data
                 FROM wanted w JOIN imports i ON i.id IN (
                     SELECT id FROM imports
                     WHERE user_id = w.user_id AND finished = 1 AND deleted_at IS NULL
                     ORDER BY id DESC LIMIT ?2)
                 UNION ALL
                 SELECT i.user_id, i.id, 1, i.data
                 FROM wanted w JOIN imports i ON i.id IN (
                     SELECT id FROM imports
                     WHERE user_id = w.user_id AND deleted_at IS NOT NULL
                     ORDER BY deleted_at DESC LIMIT ?3)
             ) ORDER BY id DESC",
        )
        .bind(serde_json::to_string(user_ids)?)
        .bind(SNAPSHOT_FINISHED)
        .bind(SNAPSHOT_REMOVED)
        .fetch_all(&self.pool)
        .await?;
        rows::snapshots(user_ids, &rows)
    }

    async fn update_import(
        &self,
        owned: &OwnedImport,
        expected_version: u64,
    ) -> Result<bool, StoreError> {
        let _writing = self.writes.lock().await;
        let import = &owned.import;
        let done = sqlx::query(
            "UPDATE imports SET status = ?1, version = ?2, finished = ?3, data = ?4
             WHERE id = ?5 AND user_id = ?6 AND version = ?7 AND deleted_at IS NULL",
        )
        .bind(import.status.as_str())
        .bind(i64::try_from(import.version).unwrap_or(i64::MAX))
        .bind(import.status.is_final())
        .bind(serde_json::to_string(import)?)
        .bind(&import.id)
        .bind(&owned.user_id)
        .bind(i64::try_from(expected_version).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn update_imports(&self, writes: &[ImportWrite]) -> Result<Vec<bool>, StoreError> {
        let mut batch = Vec::with_capacity(writes.len());
        for write in writes {
            let import = &write.owned.import;
            batch.push(serde_json::json!({
                "id": import.id,
                "user_id": write.owned.user_id,
                "expected": write.expected_version,
                "version": import.version,
                "status": import.status.as_str(),
                "finished": i64::from(import.status.is_final()),
                "data": serde_json::to_string(import)?,
            }));
        }
        let _writing = self.writes.lock().await;
        let rows = sqlx::query(
            "UPDATE imports SET status = json_extract(w.value, '$.status'),
                                version = json_extract(w.value, '$.version'),
                                finished = json_extract(w.value, '$.finished'),
                                data = json_extract(w.value, '$.data')
             FROM json_each(?1) AS w
             WHERE imports.id = json_extract(w.value, '$.id')
               AND imports.user_id = json_extract(w.value, '$.user_id')
               AND imports.version = json_extract(w.value, '$.expected')
               AND imports.deleted_at IS NULL
             RETURNING imports.id",
        )
        .bind(serde_json::Value::Array(batch).to_string())
        .fetch_all(&self.pool)
        .await?;
        let written = rows
            .iter()
            .map(|row| row.try_get::<String, _>("id"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(super::written_in_order(writes, written))
    }

    async fn unfinished_imports(&self) -> Result<Vec<OwnedImport>, StoreError> {
        let rows = sqlx::query("SELECT user_id, data FROM imports WHERE finished = 0 ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::owned).collect()
    }

    async fn remove_import(
        &self,
        user_id: &str,
        id: &str,
        expected_version: u64,
    ) -> Result<bool, StoreError> {
        let version = expected_version.saturating_add(1);
        let data = rows::tombstone_data(id, version)?;
        let _writing = self.writes.lock().await;
        let done = sqlx::query(
            "UPDATE imports SET status = 'deleted', version = ?1, finished = 1, data = ?2,
                                deleted_at = ?3, lease_owner = NULL, lease_until = NULL
             WHERE id = ?4 AND user_id = ?5 AND version = ?6 AND deleted_at IS NULL",
        )
        .bind(i64::try_from(version).unwrap_or(i64::MAX))
        .bind(data)
        .bind(millis(Utc::now()))
        .bind(id)
        .bind(user_id)
        .bind(i64::try_from(expected_version).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn purge_tombstones(&self, age: Duration) -> Result<u64, StoreError> {
        let before = millis(Utc::now()) - i64::try_from(age.as_millis()).unwrap_or(i64::MAX / 2);
        let _writing = self.writes.lock().await;
        let done =
            sqlx::query("DELETE FROM imports WHERE deleted_at IS NOT NULL AND deleted_at <= ?1")
                .bind(before)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }

    async fn count_by_status(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM imports WHERE deleted_at IS NULL GROUP BY status",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::status_count).collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn server_api(&self) -> &dyn super::ServerApiStore {
        self
    }

    fn shared(&self) -> bool {
        false
    }

    async fn claim_imports(
        &self,
        node: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OwnedImport>, StoreError> {
        let _writing = self.writes.lock().await;
        let now = millis(Utc::now());
        let until = now + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
        let rows = sqlx::query(
            "UPDATE imports SET lease_owner = ?1, lease_until = ?2
             WHERE id IN (SELECT id FROM imports AS i
                          WHERE finished = 0 AND external = 0 AND status <> 'uploading'
                            AND (lease_until IS NULL OR lease_until < ?3)
                          ORDER BY (SELECT COUNT(*) FROM imports AS older
                                    WHERE older.user_id = i.user_id AND older.finished = 0
                                      AND older.external = 0 AND older.id < i.id),
                                   id
                          LIMIT ?4)
             RETURNING user_id, data",
        )
        .bind(node)
        .bind(until)
        .bind(now)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = rows
            .iter()
            .map(rows::owned)
            .collect::<Result<Vec<_>, _>>()?;
        claimed.sort_by(|a, b| a.import.id.cmp(&b.import.id));
        Ok(claimed)
    }

    async fn renew_leases(&self, node: &str, lease: Duration) -> Result<Vec<String>, StoreError> {
        let _writing = self.writes.lock().await;
        let until = millis(Utc::now()) + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
        let rows = sqlx::query(
            "UPDATE imports SET lease_until = ?1 WHERE lease_owner = ?2 AND finished = 0 RETURNING id",
        )
        .bind(until)
        .bind(node)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| Ok(row.try_get("id")?)).collect()
    }

    async fn release_lease(&self, node: &str, id: &str) -> Result<(), StoreError> {
        let _writing = self.writes.lock().await;
        sqlx::query(
            "UPDATE imports SET lease_owner = NULL, lease_until = NULL WHERE id = ?1 AND lease_owner = ?2",
        )
        .bind(id)
        .bind(node)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn release_leases(&self, node: Option<&str>) -> Result<(), StoreError> {
        let _writing = self.writes.lock().await;
        sqlx::query(
            "UPDATE imports SET lease_owner = NULL, lease_until = NULL
             WHERE lease_owner IS NOT NULL AND (?1 IS NULL OR lease_owner = ?1)",
        )
        .bind(node)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn waiting_imports(&self, limit: i64) -> Result<Vec<OwnedImport>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_id, data FROM imports AS i
             WHERE finished = 0 AND external = 0 AND status = 'queued'
               AND (lease_until IS NULL OR lease_until < ?1)
             ORDER BY (SELECT COUNT(*) FROM imports AS older
                       WHERE older.user_id = i.user_id AND older.finished = 0
                         AND older.external = 0 AND older.id < i.id),
                      id
             LIMIT ?2",
        )
        .bind(millis(Utc::now()))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::owned).collect()
    }
}

// The store's contract tests (run against SQLite and PostgreSQL) are in
// `store/tests.rs`.
