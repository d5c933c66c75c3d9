//! [`HookStore`] on SQLite: times are unix milliseconds, writes take the
//! store's write lock like every other write.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::hooks::{Attempt, Delivery, DeliveryState, HookStore, attempt_columns};
use super::sqlite::{from_millis, millis};
use super::{SqliteStore, StoreError};

const DELIVERY_COLUMNS: &str = "seq, id, import_id, user_id, event_type, data, occurred_at, state, \
     attempts, next_attempt_at, last_status, last_error, delivered_at";

/// The outbox triggers (see `migrations/sqlite/0006_webhooks.sql`),
/// created at start when webhooks are on. A progress write keeps the
/// status, so the second trigger's WHEN is false for it: with webhooks on,
/// that comparison is all a progress write pays (~5 µs on SQLite,
/// docs/benchmarks.md); with them off, nothing.
const OUTBOX_TRIGGERS: &str = "
CREATE TRIGGER IF NOT EXISTS webhook_import_created AFTER INSERT ON imports
BEGIN
    INSERT INTO webhook_deliveries
        (id, import_id, user_id, event_type, data, occurred_at, next_attempt_at)
    VALUES ('msg_' || lower(hex(randomblob(16))), NEW.id, NEW.user_id, 'import.created',
            NEW.data,
            CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
            CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;
CREATE TRIGGER IF NOT EXISTS webhook_import_changed AFTER UPDATE OF status ON imports
WHEN OLD.status IS NOT NEW.status
BEGIN
    INSERT INTO webhook_deliveries
        (id, import_id, user_id, event_type, data, occurred_at, next_attempt_at)
    SELECT 'msg_' || lower(hex(randomblob(16))), NEW.id, NEW.user_id, 'import.status_changed',
           NEW.data,
           CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
           CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
    WHERE NEW.status <> 'deleted';
    INSERT INTO webhook_deliveries
        (id, import_id, user_id, event_type, data, occurred_at, next_attempt_at)
    SELECT 'msg_' || lower(hex(randomblob(16))), NEW.id, NEW.user_id, 'import.' || NEW.status,
           NEW.data,
           CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
           CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
    WHERE NEW.status IN ('completed', 'failed', 'cancelled');
    -- A delete: the import as it was, at the version of the delete.
    INSERT INTO webhook_deliveries
        (id, import_id, user_id, event_type, data, occurred_at, next_attempt_at)
    SELECT 'msg_' || lower(hex(randomblob(16))), NEW.id, NEW.user_id, 'import.deleted',
           json_set(OLD.data, '$.version', NEW.version),
           CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
           CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
    WHERE NEW.status = 'deleted';
END;
";

const DROP_OUTBOX_TRIGGERS: &str = "
DROP TRIGGER IF EXISTS webhook_import_created;
DROP TRIGGER IF EXISTS webhook_import_changed;
";

fn delivery(row: &SqliteRow) -> Result<Delivery, StoreError> {
    let state: String = row.try_get("state")?;
    let attempts: i64 = row.try_get("attempts")?;
    let last_status: Option<i64> = row.try_get("last_status")?;
    let delivered_at: Option<i64> = row.try_get("delivered_at")?;
    Ok(Delivery {
        seq: row.try_get("seq")?,
        id: row.try_get("id")?,
        import_id: row.try_get("import_id")?,
        user_id: row.try_get("user_id")?,
        event_type: row.try_get("event_type")?,
        data: row.try_get("data")?,
        occurred_at: from_millis(row.try_get("occurred_at")?),
        state: DeliveryState::parse(&state),
        attempts: u32::try_from(attempts).unwrap_or(0),
        next_attempt_at: from_millis(row.try_get("next_attempt_at")?),
        last_status: last_status.and_then(|status| u16::try_from(status).ok()),
        last_error: row.try_get("last_error")?,
        delivered_at: delivered_at.map(from_millis),
    })
}

fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 2)
}

#[async_trait]
impl HookStore for SqliteStore {
    /// Creates or drops the outbox triggers: SQLite has one node, so the
    /// schema can follow its setting.
    async fn set_webhooks_enabled(&self, on: bool) -> Result<(), StoreError> {
        let _writing = self.writes.lock().await;
        let sql = if on {
            OUTBOX_TRIGGERS
        } else {
            DROP_OUTBOX_TRIGGERS
        };
        sqlx::raw_sql(sql).execute(&self.pool).await?;
        Ok(())
    }

    async fn claim_deliveries(
        &self,
        node: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Delivery>, StoreError> {
        let _writing = self.writes.lock().await;
        let now = millis(Utc::now());
        let rows = sqlx::query(&format!(
            "UPDATE webhook_deliveries SET lease_owner = ?1, lease_until = ?2
             WHERE seq IN (SELECT d.seq FROM webhook_deliveries AS d
                           WHERE d.state = 'pending' AND d.next_attempt_at <= ?3
                             AND (d.lease_until IS NULL OR d.lease_until < ?3)
                             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries AS earlier
                                             WHERE earlier.import_id = d.import_id
                                               AND earlier.state = 'pending'
                                               AND earlier.seq < d.seq)
                           ORDER BY d.seq LIMIT ?4)
             RETURNING {DELIVERY_COLUMNS}"
        ))
        .bind(node)
        .bind(now + duration_ms(lease))
        .bind(now)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = rows.iter().map(delivery).collect::<Result<Vec<_>, _>>()?;
        claimed.sort_by_key(|delivery| delivery.seq);
        Ok(claimed)
    }

    async fn finish_attempt(
        &self,
        node: &str,
        seq: i64,
        attempt: &Attempt,
    ) -> Result<bool, StoreError> {
        let (state, next_at, status, error) = attempt_columns(attempt);
        let now = millis(Utc::now());
        let _writing = self.writes.lock().await;
        let done = sqlx::query(
            "UPDATE webhook_deliveries
             SET state = ?1, attempts = attempts + 1,
                 next_attempt_at = COALESCE(?2, next_attempt_at),
                 last_status = ?3, last_error = ?4,
                 delivered_at = CASE WHEN ?1 = 'delivered' THEN ?5 ELSE delivered_at END,
                 lease_owner = NULL, lease_until = NULL
             WHERE seq = ?6 AND lease_owner = ?7",
        )
        .bind(state.as_str())
        .bind(next_at.map(millis))
        .bind(status)
        .bind(error)
        .bind(now)
        .bind(seq)
        .bind(node)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_deliveries(
        &self,
        state: DeliveryState,
        limit: i64,
        before: Option<i64>,
    ) -> Result<Vec<Delivery>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
             WHERE state = ?1 AND (?2 IS NULL OR seq < ?2)
             ORDER BY seq DESC LIMIT ?3"
        ))
        .bind(state.as_str())
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery).collect()
    }

    async fn retry_delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        let _writing = self.writes.lock().await;
        let row = sqlx::query(&format!(
            "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = ?1
             WHERE id = ?2 AND state <> 'delivered'
             RETURNING {DELIVERY_COLUMNS}"
        ))
        .bind(millis(Utc::now()))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(delivery).transpose()
    }

    async fn oldest_pending(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let oldest: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(occurred_at) FROM webhook_deliveries WHERE state = 'pending'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(oldest.map(from_millis))
    }

    async fn purge_deliveries(
        &self,
        delivered: Duration,
        failed: Duration,
    ) -> Result<u64, StoreError> {
        let now = millis(Utc::now());
        let _writing = self.writes.lock().await;
        let done = sqlx::query(
            "DELETE FROM webhook_deliveries
             WHERE (state = 'delivered' AND delivered_at <= ?1)
                OR (state = 'failed' AND occurred_at <= ?2)",
        )
        .bind(now - duration_ms(delivered))
        .bind(now - duration_ms(failed))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn release_delivery_leases(&self, node: Option<&str>) -> Result<(), StoreError> {
        let _writing = self.writes.lock().await;
        sqlx::query(
            "UPDATE webhook_deliveries SET lease_owner = NULL, lease_until = NULL
             WHERE lease_owner IS NOT NULL AND (?1 IS NULL OR lease_owner = ?1)",
        )
        .bind(node)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn first_sight(&self, id: &str, keep: Duration) -> Result<bool, StoreError> {
        let now = millis(Utc::now());
        let _writing = self.writes.lock().await;
        sqlx::query("DELETE FROM clerk_webhook_ids WHERE seen_at < ?1")
            .bind(now - duration_ms(keep))
            .execute(&self.pool)
            .await?;
        let done = sqlx::query(
            "INSERT INTO clerk_webhook_ids (id, seen_at) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn forget_sight(&self, id: &str) -> Result<(), StoreError> {
        let _writing = self.writes.lock().await;
        sqlx::query("DELETE FROM clerk_webhook_ids WHERE id = ?1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn revoke(&self, subject: &str, until: DateTime<Utc>) -> Result<(), StoreError> {
        let _writing = self.writes.lock().await;
        sqlx::query(
            "INSERT INTO auth_revocations (subject, until) VALUES (?1, ?2)
             ON CONFLICT (subject) DO UPDATE SET until = MAX(until, excluded.until)",
        )
        .bind(subject)
        .bind(millis(until))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn revocations(&self) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        let now = millis(Utc::now());
        {
            let _writing = self.writes.lock().await;
            sqlx::query("DELETE FROM auth_revocations WHERE until <= ?1")
                .bind(now)
                .execute(&self.pool)
                .await?;
        }
        let rows = sqlx::query("SELECT subject, until FROM auth_revocations")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("subject")?, from_millis(row.try_get("until")?))))
            .collect()
    }

    async fn delete_user_rows(&self, user_id: &str) -> Result<(), StoreError> {
        let _writing = self.writes.lock().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM imports WHERE user_id = ?1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM users WHERE id = ?1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
