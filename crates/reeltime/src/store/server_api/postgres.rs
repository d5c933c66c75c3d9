//! [`ServerApiStore`] on PostgreSQL: times from the database's clock, so
//! the nodes' clocks need not agree on expiry.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{
    ApiKeyRecord, IDEMPOTENCY_ABANDONED, IDEMPOTENCY_TTL, IdempotencyBegin, ImportFilter,
    ServerApiStore,
};
use crate::store::{OwnedImport, PostgresStore, StoreError, rows};

fn decode_key(row: &PgRow) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        secret_hash: row.try_get("secret_hash")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

const KEY_COLUMNS: &str = "id, name, secret_hash, created_at, last_used_at, revoked_at";

#[async_trait]
impl ServerApiStore for PostgresStore {
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO api_keys (id, name, secret_hash, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
        )
        .bind(&key.id)
        .bind(&key.name)
        .bind(&key.secret_hash)
        .bind(key.created_at)
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
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL",
        )
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn live_api_key(&self, secret_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_hash = $1 AND revoked_at IS NULL"
        ))
        .bind(secret_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode_key).transpose()
    }

    async fn touch_api_key(&self, id: &str, gap: Duration) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE api_keys SET last_used_at = now()
             WHERE id = $1
               AND (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => $2))",
        )
        .bind(id)
        .bind(gap.as_secs_f64())
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
        let done = sqlx::query(
            "INSERT INTO idempotency_keys (api_key_id, key, request_hash, created_at)
             VALUES ($1, $2, $3, now())
             ON CONFLICT (api_key_id, key) DO UPDATE SET
                 request_hash = EXCLUDED.request_hash, status = NULL, response = NULL,
                 created_at = EXCLUDED.created_at
             WHERE idempotency_keys.created_at < now() - make_interval(secs => $4)
                OR (idempotency_keys.status IS NULL
                    AND idempotency_keys.created_at < now() - make_interval(secs => $5))",
        )
        .bind(api_key_id)
        .bind(key)
        .bind(request_hash)
        .bind(IDEMPOTENCY_TTL.as_secs_f64())
        .bind(IDEMPOTENCY_ABANDONED.as_secs_f64())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(IdempotencyBegin::Started);
        }
        let row = sqlx::query(
            "SELECT request_hash, status::bigint AS status, response FROM idempotency_keys
             WHERE api_key_id = $1 AND key = $2",
        )
        .bind(api_key_id)
        .bind(key)
        .fetch_one(&self.pool)
        .await?;
        super::sqlite::existing(
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
        sqlx::query(
            "UPDATE idempotency_keys SET status = $1, response = $2
             WHERE api_key_id = $3 AND key = $4",
        )
        .bind(i32::from(status))
        .bind(response)
        .bind(api_key_id)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn abandon_idempotent(&self, api_key_id: &str, key: &str) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE api_key_id = $1 AND key = $2 AND status IS NULL",
        )
        .bind(api_key_id)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn purge_idempotency(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
        )
        .bind(IDEMPOTENCY_TTL.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn find_imports(
        &self,
        filter: &ImportFilter<'_>,
    ) -> Result<Vec<OwnedImport>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_id, data::text AS data FROM imports
             WHERE deleted_at IS NULL
               AND ($1::text IS NULL OR user_id = $1)
               AND ($2::text IS NULL OR status = $2)
               AND ($3::text IS NULL OR id < $3)
             ORDER BY id DESC LIMIT $4",
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
