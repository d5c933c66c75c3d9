//! The uploads table: where a tus upload's offset is kept while its bytes
//! come in (docs/protocol.md, "Uploads"). Never in a node's memory: a
//! restart, or another node behind the load balancer, resumes from what is
//! stored here.
//!
//! A PATCH first *holds* the row: a compare-and-set on the offset the
//! client claims and on nobody else holding it. Of two PATCHes racing on
//! two nodes exactly one gets the row; the other answers 409 and writes
//! nothing, so no byte is written twice. The holder saves the new offset
//! (and, with S3, the parts) as its bytes are stored, and lets go at the
//! end. A hold has a deadline, renewed while the PATCH runs, so a node that
//! dies mid-PATCH holds nothing for long. The expiry sweeper holds rows the
//! same way, so one node at a time removes an expired upload.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::postgres::{insert as pg_insert, lock_user_creates};
use super::sqlite::{from_millis, millis};
use super::{OwnedImport, PostgresStore, SqliteStore, StoreError};

/// One upload in progress.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadRow {
    /// The import's id (also the tus upload's id).
    pub id: String,
    pub user_id: String,
    /// `Upload-Length`: the whole file.
    pub length: u64,
    /// `Upload-Offset`: bytes stored so far.
    pub offset: u64,
    /// `Upload-Expires`: when an untouched upload fails `upload_expired`.
    pub expires_at: DateTime<Utc>,
    /// JSON owned by `imports::uploads`: metadata, head bytes, S3 parts.
    pub state: String,
}

/// How an [`UploadStore::insert_upload`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadInsert {
    Stored,
    /// The user has `REELTIME_MAX_ACTIVE_IMPORTS_PER_USER` unfinished imports.
    TooManyImports,
    /// The user has `REELTIME_MAX_UPLOADS_PER_USER` imports `uploading`.
    TooManyUploads,
}

/// The upload operations of a [`super::Store`] (a supertrait, so that both
/// stores keep their upload SQL in this one file).
#[async_trait]
pub trait UploadStore: Send + Sync {
    /// Stores the import (status `uploading`) and its upload row together,
    /// only while the user is under both caps, counted and inserted as one
    /// step like [`super::Store::insert_import_within`].
    async fn insert_upload(
        &self,
        owned: &OwnedImport,
        upload: &UploadRow,
        max_unfinished: u64,
        max_uploading: u64,
    ) -> Result<UploadInsert, StoreError>;

    async fn get_upload(&self, id: &str) -> Result<Option<UploadRow>, StoreError>;

    /// Holds the upload for `holder` for `hold`, if its offset is still
    /// `offset` (`None`: any) and nobody else holds it (or their hold ran
    /// out). Returns the row as held (what the holder works from), or
    /// `None` when it is not `holder`'s.
    async fn hold_upload(
        &self,
        id: &str,
        offset: Option<u64>,
        holder: &str,
        hold: Duration,
    ) -> Result<Option<UploadRow>, StoreError>;

    /// Saves the offset, state and expiry if `holder` still holds the
    /// upload; extends the hold by `hold`, or lets go when `None`.
    async fn save_upload(
        &self,
        upload: &UploadRow,
        holder: &str,
        hold: Option<Duration>,
    ) -> Result<bool, StoreError>;

    /// Removes the row if `holder` holds it.
    async fn delete_upload(&self, id: &str, holder: &str) -> Result<bool, StoreError>;

    /// Makes the upload expired now (a cancel), so the sweeper removes its
    /// bytes even if its PATCH or this node dies first.
    async fn expire_upload(&self, id: &str) -> Result<(), StoreError>;

    /// Holds, for `holder`, up to `limit` expired uploads nobody holds.
    async fn hold_expired_uploads(
        &self,
        holder: &str,
        hold: Duration,
        limit: i64,
    ) -> Result<Vec<UploadRow>, StoreError>;
}

fn param(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn hold_millis(hold: Duration) -> i64 {
    i64::try_from(hold.as_millis()).unwrap_or(i64::MAX / 2)
}

fn decode_sqlite(row: &sqlx::sqlite::SqliteRow) -> Result<UploadRow, StoreError> {
    Ok(UploadRow {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        length: u64::try_from(row.try_get::<i64, _>("length")?).unwrap_or(0),
        offset: u64::try_from(row.try_get::<i64, _>("upload_offset")?).unwrap_or(0),
        expires_at: from_millis(row.try_get("expires_at")?),
        state: row.try_get("state")?,
    })
}

fn decode_postgres(row: &sqlx::postgres::PgRow) -> Result<UploadRow, StoreError> {
    Ok(UploadRow {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        length: u64::try_from(row.try_get::<i64, _>("length")?).unwrap_or(0),
        offset: u64::try_from(row.try_get::<i64, _>("upload_offset")?).unwrap_or(0),
        expires_at: row.try_get("expires_at")?,
        state: row.try_get("state")?,
    })
}

const UPLOAD_COLUMNS: &str = "id, user_id, length, upload_offset, expires_at, state";

#[async_trait]
impl UploadStore for SqliteStore {
    async fn insert_upload(
        &self,
        owned: &OwnedImport,
        upload: &UploadRow,
        max_unfinished: u64,
        max_uploading: u64,
    ) -> Result<UploadInsert, StoreError> {
        let _writing = self.writes.lock().await;
        let import = &owned.import;
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "INSERT INTO imports (id, user_id, status, version, finished, data)
             SELECT ?1, ?2, ?3, ?4, 0, ?5
             WHERE (SELECT COUNT(*) FROM imports WHERE user_id = ?2 AND finished = 0) < ?6
               AND (SELECT COUNT(*) FROM imports WHERE user_id = ?2 AND status = 'uploading') < ?7",
        )
        .bind(&import.id)
        .bind(&owned.user_id)
        .bind(import.status.as_str())
        .bind(param(import.version))
        .bind(serde_json::to_string(import)?)
        .bind(param(max_unfinished))
        .bind(param(max_uploading))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            let uploading: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM imports WHERE user_id = ?1 AND status = 'uploading'",
            )
            .bind(&owned.user_id)
            .fetch_one(&mut *tx)
            .await?;
            return Ok(if uploading >= param(max_uploading) {
                UploadInsert::TooManyUploads
            } else {
                UploadInsert::TooManyImports
            });
        }
        sqlx::query(
            "INSERT INTO uploads (id, user_id, length, upload_offset, expires_at, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(&upload.id)
        .bind(&upload.user_id)
        .bind(param(upload.length))
        .bind(param(upload.offset))
        .bind(millis(upload.expires_at))
        .bind(&upload.state)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(UploadInsert::Stored)
    }

    async fn get_upload(&self, id: &str) -> Result<Option<UploadRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = ?1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode_sqlite).transpose()
    }

    async fn hold_upload(
        &self,
        id: &str,
        offset: Option<u64>,
        holder: &str,
        hold: Duration,
    ) -> Result<Option<UploadRow>, StoreError> {
        let now = millis(Utc::now());
        let _writing = self.writes.lock().await;
        let row = sqlx::query(&format!(
            "UPDATE uploads SET holder = ?1, holder_until = ?2
             WHERE id = ?3 AND (?4 IS NULL OR upload_offset = ?4)
               AND (holder IS NULL OR holder = ?1 OR holder_until < ?5)
             RETURNING {UPLOAD_COLUMNS}"
        ))
        .bind(holder)
        .bind(now + hold_millis(hold))
        .bind(id)
        .bind(offset.map(param))
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode_sqlite).transpose()
    }

    async fn save_upload(
        &self,
        upload: &UploadRow,
        holder: &str,
        hold: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let until = hold.map(|hold| millis(Utc::now()) + hold_millis(hold));
        let _writing = self.writes.lock().await;
        let done = sqlx::query(
            "UPDATE uploads SET upload_offset = ?1, state = ?2, expires_at = ?3,
                                holder = CASE WHEN ?4 IS NULL THEN NULL ELSE holder END,
                                holder_until = ?4
             WHERE id = ?5 AND holder = ?6",
        )
        .bind(param(upload.offset))
        .bind(&upload.state)
        .bind(millis(upload.expires_at))
        .bind(until)
        .bind(&upload.id)
        .bind(holder)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_upload(&self, id: &str, holder: &str) -> Result<bool, StoreError> {
        let _writing = self.writes.lock().await;
        let done = sqlx::query("DELETE FROM uploads WHERE id = ?1 AND holder = ?2")
            .bind(id)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn expire_upload(&self, id: &str) -> Result<(), StoreError> {
        let _writing = self.writes.lock().await;
        sqlx::query("UPDATE uploads SET expires_at = 0 WHERE id = ?1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn hold_expired_uploads(
        &self,
        holder: &str,
        hold: Duration,
        limit: i64,
    ) -> Result<Vec<UploadRow>, StoreError> {
        let now = millis(Utc::now());
        let _writing = self.writes.lock().await;
        let rows = sqlx::query(&format!(
            "UPDATE uploads SET holder = ?1, holder_until = ?2
             WHERE id IN (SELECT id FROM uploads
                          WHERE expires_at < ?3 AND (holder IS NULL OR holder_until < ?3)
                          ORDER BY expires_at LIMIT ?4)
             RETURNING {UPLOAD_COLUMNS}"
        ))
        .bind(holder)
        .bind(now + hold_millis(hold))
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_sqlite).collect()
    }
}

#[async_trait]
impl UploadStore for PostgresStore {
    async fn insert_upload(
        &self,
        owned: &OwnedImport,
        upload: &UploadRow,
        max_unfinished: u64,
        max_uploading: u64,
    ) -> Result<UploadInsert, StoreError> {
        // The same per-user lock as every create: the counts below cannot
        // change between the check and the insert.
        let mut tx = self.pool.begin().await?;
        lock_user_creates(&mut tx, &owned.user_id).await?;
        let uploading: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM imports WHERE user_id = $1 AND status = 'uploading'",
        )
        .bind(&owned.user_id)
        .fetch_one(&mut *tx)
        .await?;
        if uploading >= param(max_uploading) {
            return Ok(UploadInsert::TooManyUploads);
        }
        let done = pg_insert(owned, Some(max_unfinished))?
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Ok(UploadInsert::TooManyImports);
        }
        sqlx::query(
            "INSERT INTO uploads (id, user_id, length, upload_offset, expires_at, state)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&upload.id)
        .bind(&upload.user_id)
        .bind(param(upload.length))
        .bind(param(upload.offset))
        .bind(upload.expires_at)
        .bind(&upload.state)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(UploadInsert::Stored)
    }

    async fn get_upload(&self, id: &str) -> Result<Option<UploadRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode_postgres).transpose()
    }

    async fn hold_upload(
        &self,
        id: &str,
        offset: Option<u64>,
        holder: &str,
        hold: Duration,
    ) -> Result<Option<UploadRow>, StoreError> {
        let row = sqlx::query(&format!(
            "UPDATE uploads SET holder = $1, holder_until = now() + make_interval(secs => $2)
             WHERE id = $3 AND ($4::bigint IS NULL OR upload_offset = $4)
               AND (holder IS NULL OR holder = $1 OR holder_until < now())
             RETURNING {UPLOAD_COLUMNS}"
        ))
        .bind(holder)
        .bind(hold.as_secs_f64())
        .bind(id)
        .bind(offset.map(param))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode_postgres).transpose()
    }

    async fn save_upload(
        &self,
        upload: &UploadRow,
        holder: &str,
        hold: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE uploads SET upload_offset = $1, state = $2, expires_at = $3,
                                holder = CASE WHEN $4::float8 IS NULL THEN NULL ELSE holder END,
                                holder_until = now() + make_interval(secs => $4::float8)
             WHERE id = $5 AND holder = $6",
        )
        .bind(param(upload.offset))
        .bind(&upload.state)
        .bind(upload.expires_at)
        .bind(hold.map(|hold| hold.as_secs_f64()))
        .bind(&upload.id)
        .bind(holder)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_upload(&self, id: &str, holder: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM uploads WHERE id = $1 AND holder = $2")
            .bind(id)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn expire_upload(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE uploads SET expires_at = 'epoch' WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn hold_expired_uploads(
        &self,
        holder: &str,
        hold: Duration,
        limit: i64,
    ) -> Result<Vec<UploadRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "UPDATE uploads SET holder = $1, holder_until = now() + make_interval(secs => $2)
             WHERE id IN (SELECT id FROM uploads
                          WHERE expires_at < now() AND (holder IS NULL OR holder_until < now())
                          ORDER BY expires_at LIMIT $3 FOR UPDATE SKIP LOCKED)
             RETURNING {UPLOAD_COLUMNS}"
        ))
        .bind(holder)
        .bind(hold.as_secs_f64())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_postgres).collect()
    }
}
