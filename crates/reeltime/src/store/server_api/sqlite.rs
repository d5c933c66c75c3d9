//! [`ServerApiStore`] on SQLite: times in unix milliseconds, writes under
//! the store's write lock like every other write.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{
    ApiKeyRecord, IDEMPOTENCY_ABANDONED, IDEMPOTENCY_TTL, IdempotencyBegin, ImportFilter,
    ServerApiStore, millis,
};
use crate::store::{OwnedImport, SqliteStore, StoreError, rows};

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn time(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single())
}

fn decode_key(row: &SqliteRow) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        secret_hash: row.try_get("secret_hash")?,
        created_at: time(row.try_get("created_at")?).unwrap_or_default(),
        last_used_at: time(row.try_get("last_used_at")?),
        revoked_at: time(row.try_get("revoked_at")?),
    })
}

const KEY_COLUMNS: &str = "id, name, secret_hash, created_at, last_used_at, revoked_at";

#[async_trait]
impl ServerApiStore for SqliteStore {
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<bool, StoreError> {
        let _writing = self.writes.lock().await;
        let done = sqlx::query(
            "INSERT INTO api_keys (id, name, secret_hash, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO NOTHING",
        )
        .bind(&key.id)
        .bind(&key.name)
        .bind(&key.secret_hash)
        .bind(key.created_at.timestamp_millis())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_key).collect()
    }

    async fn revoke_api_key(&self, name: &str) -> Result<bool, StoreError> {
        let _writing = self.writes.lock().await;
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = ?1 WHERE name = ?2 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn live_api_key(&self, secret_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_hash = ?1 AND revoked_at IS NULL"
        ))
        .bind(secret_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode_key).transpose()
    }

    async fn touch_api_key(&self, id: &str, gap: Duration) -> Result<(), StoreError> {
        let now = now_ms();
        let _writing = self.writes.lock().await;
        sqlx::query(
            "UPDATE api_keys SET last_used_at = ?1
             WHERE id = ?2 AND (last_used_at IS NULL OR last_used_at < ?3)",
        )
        .bind(now)
        .bind(id)
        .bind(now - millis(gap))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn begin_idempotent(
        &self,
        api_key_id: &str,
        key: &str,
        request_hash: &str,
    ) -> Result<IdempotencyBegin, StoreError> {
        let now = now_ms();
        let _writing = self.writes.lock().await;
        let done = sqlx::query(
            "INSERT INTO idempotency_keys (api_key_id, key, request_hash, created_at)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (api_key_id, key) DO UPDATE SET
                 request_hash = excluded.request_hash, status = NULL, response = NULL,
                 created_at = excluded.created_at
             WHERE idempotency_keys.created_at < ?5
                OR (idempotency_keys.status IS NULL AND idempotency_keys.created_at < ?6)",
        )
        .bind(api_key_id)
        .bind(key)
        .bind(request_hash)
        .bind(now)
        .bind(now - millis(IDEMPOTENCY_TTL))
        .bind(now - millis(IDEMPOTENCY_ABANDONED))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(IdempotencyBegin::Started);
        }
        let row = sqlx::query(
            "SELECT request_hash, status, response FROM idempotency_keys
             WHERE api_key_id = ?1 AND key = ?2",
        )
        .bind(api_key_id)
        .bind(key)
        .fetch_one(&self.pool)
        .await?;
        existing(
            row.try_get("request_hash")?,
            row.try_get("status")?,
            row.try_get("response")?,
        )
    }

    async fn finish_idempotent(
        &self,
        api_key_id: &str,
        key: &str,
        status: u16,
        response: &str,
    ) -> Result<(), StoreError> {
        let _writing = self.writes.lock().await;
        sqlx::query(
            "UPDATE idempotency_keys SET status = ?1, response = ?2
             WHERE api_key_id = ?3 AND key = ?4",
        )
        .bind(i64::from(status))
        .bind(response)
        .bind(api_key_id)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn abandon_idempotent(&self, api_key_id: &str, key: &str) -> Result<(), StoreError> {
        let _writing = self.writes.lock().await;
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE api_key_id = ?1 AND key = ?2 AND status IS NULL",
        )
        .bind(api_key_id)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn purge_idempotency(&self) -> Result<u64, StoreError> {
        let _writing = self.writes.lock().await;
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < ?1")
            .bind(now_ms() - millis(IDEMPOTENCY_TTL))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn find_imports(
        &self,
        filter: &ImportFilter<'_>,
    ) -> Result<Vec<OwnedImport>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_id, data FROM imports
             WHERE deleted_at IS NULL
               AND (?1 IS NULL OR user_id = ?1)
               AND (?2 IS NULL OR status = ?2)
               AND (?3 IS NULL OR id < ?3)
             ORDER BY id DESC LIMIT ?4",
        )
        .bind(filter.user_id)
        .bind(filter.status.map(|status| status.as_str()))
        .bind(filter.before)
        .bind(filter.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::owned).collect()
    }
}

/// The answer of [`ServerApiStore::begin_idempotent`] for a row found.
pub(super) fn existing(
    request_hash: String,
    status: Option<i64>,
    response: Option<String>,
) -> Result<IdempotencyBegin, StoreError> {
    let answer = match (status, response) {
        (Some(status), Some(response)) => Some((u16::try_from(status).unwrap_or(500), response)),
        _ => None,
    };
    Ok(IdempotencyBegin::Existing {
        request_hash,
        answer,
    })
}
