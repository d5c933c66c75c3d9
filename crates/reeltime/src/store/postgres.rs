//! The shared store for several nodes: PostgreSQL, selected by a
//! `postgres://` or `postgresql://` `REELTIME_DATABASE_URL`.
//!
//! Same tables and the same semantics as [`super::SqliteStore`]: the import
//! object is kept whole as JSONB in `data`, beside the few columns queries
//! filter and order on; updates are compare-and-set on `version`. Under
//! PostgreSQL's default READ COMMITTED isolation a concurrent `UPDATE ...
//! WHERE version = $n` waits for the other writer's row lock and then
//! re-checks the condition against the committed row, so exactly one of two
//! racing writers wins, on any node.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reeltime_protocol::{Import, User};
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};

use super::{
    ImportWrite, OwnedImport, SNAPSHOT_FINISHED, SNAPSHOT_REMOVED, Snapshot, Store, StoreError,
    rows,
};

/// Connections per node. Every socket's snapshot and every job's commit
/// borrows one briefly; a few per node keep PostgreSQL's own per-connection
/// memory small when there are many nodes.
const MAX_CONNECTIONS: u32 = 16;

/// How long a query waits for a free connection before failing (and the
/// caller answering 500/1011) instead of piling up behind a stuck database.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// First key of the advisory locks that serialize one user's creates
/// (the second is a hash of the user id); any constant no other lock uses.
const USER_CREATE_LOCKS: i32 = 0x7265_656c; // "reel"

/// PostgreSQL behind the [`Store`] trait.
pub struct PostgresStore {
    pub(super) pool: PgPool,
    /// Whether this node's connections write webhook events (the
    /// `reeltime.webhooks` setting the outbox triggers read).
    pub(super) webhooks: bool,
}

impl PostgresStore {
    /// Connects and runs the migrations under `migrations/postgres`. Several
    /// nodes starting at once is safe: sqlx serializes migrations with an
    /// advisory lock.
    pub async fn open(url: &str) -> Result<PostgresStore, StoreError> {
        PostgresStore::open_with(url, false).await
    }

    /// [`PostgresStore::open`], with webhook events written by this node's
    /// transactions when `webhooks` (REELTIME_WEBHOOK_URL is set): the
    /// setting rides on every connection, so the outbox triggers of
    /// `0006_webhooks.sql` see it in the transaction of each change.
    pub async fn open_with(url: &str, webhooks: bool) -> Result<PostgresStore, StoreError> {
        let mut options = PgConnectOptions::from_str(url)?.application_name("reeltime");
        if webhooks {
            options = options.options([("reeltime.webhooks", "on")]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PostgresStore { pool, webhooks })
    }
}

fn version_param(version: u64) -> i64 {
    i64::try_from(version).unwrap_or(i64::MAX)
}

/// The insert of `owned`; with `max_unfinished`, one that inserts nothing
/// when its user already has that many unfinished imports.
pub(super) fn insert(
    owned: &OwnedImport,
    max_unfinished: Option<u64>,
) -> Result<sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>, StoreError> {
    let import = &owned.import;
    Ok(sqlx::query(
        "INSERT INTO imports (id, user_id, status, version, finished, data, external)
         SELECT $1, $2, $3, $4, $5, $6::jsonb, $8
         WHERE $7::bigint IS NULL
            OR (SELECT COUNT(*) FROM imports
                WHERE user_id = $2 AND NOT finished AND NOT external) < $7",
    )
    .bind(&import.id)
    .bind(&owned.user_id)
    .bind(import.status.as_str())
    .bind(version_param(import.version))
    .bind(import.status.is_final())
    .bind(serde_json::to_string(import)?)
    .bind(max_unfinished.map(|max| i64::try_from(max).unwrap_or(i64::MAX)))
    .bind(super::is_external(import)))
}

/// Serializes `user_id`'s creates on every node until the transaction
/// ends (a transaction-scoped advisory lock per user): under READ COMMITTED
/// two inserts would otherwise both count the same rows against a cap.
pub(super) async fn lock_user_creates(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    user_id: &str,
) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(USER_CREATE_LOCKS)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn decode_user(row: &PgRow) -> Result<User, StoreError> {
    let created_at: DateTime<Utc> = row.try_get("created_at")?;
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        created_at,
    })
}

#[async_trait]
impl Store for PostgresStore {
    async fn upsert_user(&self, id: &str, email: Option<&str>) -> Result<User, StoreError> {
        let row = sqlx::query(
            "INSERT INTO users (id, email, created_at, updated_at) VALUES ($1, $2, $3, $3)
             ON CONFLICT (id) DO UPDATE SET
                email = COALESCE(EXCLUDED.email, users.email),
                updated_at = CASE WHEN EXCLUDED.email IS DISTINCT FROM users.email
                                       AND EXCLUDED.email IS NOT NULL
                                  THEN EXCLUDED.updated_at ELSE users.updated_at END
             RETURNING id, email, created_at",
        )
        .bind(id)
        .bind(email)
        .bind(Utc::now())
        .fetch_one(&self.pool)
        .await?;
        decode_user(&row)
    }

    async fn get_user(&self, id: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query("SELECT id, email, created_at FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(decode_user).transpose()
    }

    async fn insert_import(&self, owned: &OwnedImport) -> Result<(), StoreError> {
        insert(owned, None)?.execute(&self.pool).await?;
        Ok(())
    }

    async fn insert_import_within(
        &self,
        owned: &OwnedImport,
        max_unfinished: u64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        lock_user_creates(&mut tx, &owned.user_id).await?;
        let done = insert(owned, Some(max_unfinished))?
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn stored_bytes(&self, user_id: &str) -> Result<u64, StoreError> {
        let bytes: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM((data->'result'->>'size_bytes')::bigint), 0)::bigint FROM imports
             WHERE user_id = $1 AND status = 'completed'",
        )
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    async fn get_import(&self, id: &str) -> Result<Option<OwnedImport>, StoreError> {
        let row = sqlx::query(
            "SELECT user_id, data::text AS data FROM imports WHERE id = $1 AND deleted_at IS NULL",
        )
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
            "SELECT data::text AS data FROM imports
             WHERE user_id = $1 AND deleted_at IS NULL AND ($2::text IS NULL OR id < $2)
             ORDER BY id DESC LIMIT $3",
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
            "SELECT removed, data::text AS data FROM (
                 (SELECT id, FALSE AS removed, data FROM imports
                  WHERE user_id = $1 AND NOT finished)
                 UNION ALL
                 (SELECT id, FALSE, data FROM imports
                  WHERE user_id = $1 AND finished AND deleted_at IS NULL
                  ORDER BY id DESC LIMIT $2)
                 UNION ALL
                 (SELECT id, TRUE, data FROM imports
                  WHERE user_id = $1 AND deleted_at IS NOT NULL
                  ORDER BY deleted_at DESC LIMIT $3)
             ) AS recent ORDER BY id DESC",
        )
        .bind(user_id)
        .bind(SNAPSHOT_FINISHED)
        .bind(SNAPSHOT_REMOVED)
        .fetch_all(&self.pool)
        .await?;
        rows::snapshot(&rows)
    }

    async fn snapshots(&self, user_ids: &[String]) -> Result<Vec<Snapshot>, StoreError> {
        // `snapshot`'s three parts, for each user of the array.
        let rows = sqlx::query(
            "SELECT w.user_id, recent.removed, recent.data::text AS data
             FROM (SELECT DISTINCT unnest($1::text[]) AS user_id) AS w
             CROSS JOIN LATERAL (
                 (SELECT id, FALSE AS removed, data FROM imports
                  WHERE user_id = w.user_id AND NOT finished)
                 UNION ALL
                 (SELECT id, FALSE, data FROM imports
                  WHERE user_id = w.user_id AND finished AND deleted_at IS NULL
                  ORDER BY id DESC LIMIT $2)
                 UNION ALL
                 (SELECT id, TRUE, data FROM imports
                  WHERE user_id = w.user_id AND deleted_at IS NOT NULL
                  ORDER BY deleted_at DESC LIMIT $3)
             ) AS recent ORDER BY recent.id DESC",
        )
        .bind(user_ids)
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
        let import = &owned.import;
        let done = sqlx::query(
            "UPDATE imports SET status = $1, version = $2, finished = $3, data = $4::jsonb
             WHERE id = $5 AND user_id = $6 AND version = $7 AND deleted_at IS NULL",
        )
        .bind(import.status.as_str())
        .bind(version_param(import.version))
        .bind(import.status.is_final())
        .bind(serde_json::to_string(import)?)
        .bind(&import.id)
        .bind(&owned.user_id)
        .bind(version_param(expected_version))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn update_imports(&self, writes: &[ImportWrite]) -> Result<Vec<bool>, StoreError> {
        let mut ids = Vec::with_capacity(writes.len());
        let mut users = Vec::with_capacity(writes.len());
        let mut expected = Vec::with_capacity(writes.len());
        let mut versions = Vec::with_capacity(writes.len());
        let mut statuses = Vec::with_capacity(writes.len());
        let mut finished = Vec::with_capacity(writes.len());
        let mut data = Vec::with_capacity(writes.len());
        for write in writes {
            let import = &write.owned.import;
            ids.push(import.id.clone());
            users.push(write.owned.user_id.clone());
            expected.push(version_param(write.expected_version));
            versions.push(version_param(import.version));
            statuses.push(import.status.as_str());
            finished.push(import.status.is_final());
            data.push(serde_json::to_string(import)?);
        }
        let rows = sqlx::query(
            "UPDATE imports AS i
             SET status = w.status, version = w.version, finished = w.finished, data = w.data::jsonb
             FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::bool[], $7::text[])
                  AS w(id, user_id, expected, version, status, finished, data)
             WHERE i.id = w.id AND i.user_id = w.user_id AND i.version = w.expected
               AND i.deleted_at IS NULL
             RETURNING i.id",
        )
        .bind(&ids)
        .bind(&users)
        .bind(&expected)
        .bind(&versions)
        .bind(&statuses)
        .bind(&finished)
        .bind(&data)
        .fetch_all(&self.pool)
        .await?;
        let written = rows
            .iter()
            .map(|row| row.try_get::<String, _>("id"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(super::written_in_order(writes, written))
    }

    async fn unfinished_imports(&self) -> Result<Vec<OwnedImport>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_id, data::text AS data FROM imports WHERE NOT finished ORDER BY id",
        )
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
        let done = sqlx::query(
            "UPDATE imports SET status = 'deleted', version = $1, finished = TRUE,
                                data = $2::jsonb, deleted_at = now(),
                                lease_owner = NULL, lease_until = NULL
             WHERE id = $3 AND user_id = $4 AND version = $5 AND deleted_at IS NULL",
        )
        .bind(version_param(version))
        .bind(rows::tombstone_data(id, version)?)
        .bind(id)
        .bind(user_id)
        .bind(version_param(expected_version))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn purge_tombstones(&self, age: Duration) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM imports
             WHERE deleted_at IS NOT NULL AND deleted_at <= now() - make_interval(secs => $1)",
        )
        .bind(age.as_secs_f64())
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
        true
    }

    fn bus_notes(&self) -> Option<&dyn super::BusNoteStore> {
        Some(self)
    }

    async fn claim_imports(
        &self,
        node: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OwnedImport>, StoreError> {
        let rows = sqlx::query(
            "UPDATE imports SET lease_owner = $1, lease_until = now() + make_interval(secs => $2)
             WHERE id IN (SELECT id FROM imports AS i
                          WHERE NOT finished AND NOT external AND status <> 'uploading'
                            AND (lease_until IS NULL OR lease_until < now())
                          ORDER BY (SELECT COUNT(*) FROM imports AS older
                                    WHERE older.user_id = i.user_id AND NOT older.finished
                                      AND NOT older.external AND older.id < i.id),
                                   id
                          LIMIT $3 FOR UPDATE SKIP LOCKED)
             RETURNING user_id, data::text AS data",
        )
        .bind(node)
        .bind(lease.as_secs_f64())
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
        let rows = sqlx::query(
            "UPDATE imports SET lease_until = now() + make_interval(secs => $1)
             WHERE lease_owner = $2 AND NOT finished RETURNING id",
        )
        .bind(lease.as_secs_f64())
        .bind(node)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| Ok(row.try_get("id")?)).collect()
    }

    async fn release_lease(&self, node: &str, id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE imports SET lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(node)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn release_leases(&self, node: Option<&str>) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE imports SET lease_owner = NULL, lease_until = NULL
             WHERE lease_owner IS NOT NULL AND ($1::text IS NULL OR lease_owner = $1)",
        )
        .bind(node)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn waiting_imports(&self, limit: i64) -> Result<Vec<OwnedImport>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_id, data::text AS data FROM imports AS i
             WHERE NOT finished AND NOT external AND status = 'queued'
               AND (lease_until IS NULL OR lease_until < now())
             ORDER BY (SELECT COUNT(*) FROM imports AS older
                       WHERE older.user_id = i.user_id AND NOT older.finished
                         AND NOT older.external AND older.id < i.id),
                      id
             LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::owned).collect()
    }
}
