//! [`HookStore`] on PostgreSQL: times from the database's clock (as for
//! job leases, so node clocks need not agree), claims with `FOR UPDATE SKIP
//! LOCKED` so each delivery goes to one node.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::hooks::{Attempt, Delivery, DeliveryState, HookStore, attempt_columns};
use super::{PostgresStore, StoreError};

const DELIVERY_COLUMNS: &str = "seq, id, import_id, user_id, event_type, data::text AS data, \
     occurred_at, state, attempts, next_attempt_at, last_status, last_error, delivered_at";

fn delivery(row: &PgRow) -> Result<Delivery, StoreError> {
    let state: String = row.try_get("state")?;
    let attempts: i32 = row.try_get("attempts")?;
    let last_status: Option<i32> = row.try_get("last_status")?;
    Ok(Delivery {
        seq: row.try_get("seq")?,
        id: row.try_get("id")?,
        import_id: row.try_get("import_id")?,
        user_id: row.try_get("user_id")?,
        event_type: row.try_get("event_type")?,
        data: row.try_get("data")?,
        occurred_at: row.try_get("occurred_at")?,
        state: DeliveryState::parse(&state),
        attempts: u32::try_from(attempts).unwrap_or(0),
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_status: last_status.and_then(|status| u16::try_from(status).ok()),
        last_error: row.try_get("last_error")?,
        delivered_at: row.try_get("delivered_at")?,
    })
}

#[async_trait]
impl HookStore for PostgresStore {
    async fn set_webhooks_enabled(&self, on: bool) -> Result<(), StoreError> {
        if on != self.webhooks {
            tracing::warn!(
                "webhook events follow the setting this node connected with; reopen the store to change it"
            );
        }
        Ok(())
    }

    async fn claim_deliveries(
        &self,
        node: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Delivery>, StoreError> {
        let rows = sqlx::query(&format!(
            "UPDATE webhook_deliveries
             SET lease_owner = $1, lease_until = now() + make_interval(secs => $2)
             WHERE seq IN (SELECT d.seq FROM webhook_deliveries AS d
                           WHERE d.state = 'pending' AND d.next_attempt_at <= now()
                             AND (d.lease_until IS NULL OR d.lease_until < now())
                             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries AS earlier
                                             WHERE earlier.import_id = d.import_id
                                               AND earlier.state = 'pending'
                                               AND earlier.seq < d.seq)
                           ORDER BY d.seq LIMIT $3 FOR UPDATE SKIP LOCKED)
             RETURNING {DELIVERY_COLUMNS}"
        ))
        .bind(node)
        .bind(lease.as_secs_f64())
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
        let done = sqlx::query(
            "UPDATE webhook_deliveries
             SET state = $1, attempts = attempts + 1,
                 next_attempt_at = COALESCE($2, next_attempt_at),
                 last_status = $3, last_error = $4,
                 delivered_at = CASE WHEN $1 = 'delivered' THEN now() ELSE delivered_at END,
                 lease_owner = NULL, lease_until = NULL
             WHERE seq = $5 AND lease_owner = $6",
        )
        .bind(state.as_str())
        .bind(next_at)
        .bind(status)
        .bind(error)
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
             WHERE state = $1 AND ($2::bigint IS NULL OR seq < $2)
             ORDER BY seq DESC LIMIT $3"
        ))
        .bind(state.as_str())
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery).collect()
    }

    async fn retry_delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        let row = sqlx::query(&format!(
            "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = now()
             WHERE id = $1 AND state <> 'delivered'
             RETURNING {DELIVERY_COLUMNS}"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(delivery).transpose()
    }

    async fn oldest_pending(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(occurred_at) FROM webhook_deliveries WHERE state = 'pending'",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    async fn purge_deliveries(
        &self,
        delivered: Duration,
        failed: Duration,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM webhook_deliveries
             WHERE (state = 'delivered' AND delivered_at <= now() - make_interval(secs => $1))
                OR (state = 'failed' AND occurred_at <= now() - make_interval(secs => $2))",
        )
        .bind(delivered.as_secs_f64())
        .bind(failed.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn release_delivery_leases(&self, node: Option<&str>) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_deliveries SET lease_owner = NULL, lease_until = NULL
             WHERE lease_owner IS NOT NULL AND ($1::text IS NULL OR lease_owner = $1)",
        )
        .bind(node)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn first_sight(&self, id: &str, keep: Duration) -> Result<bool, StoreError> {
        sqlx::query(
            "DELETE FROM clerk_webhook_ids WHERE seen_at < now() - make_interval(secs => $1)",
        )
        .bind(keep.as_secs_f64())
        .execute(&self.pool)
        .await?;
        let done = sqlx::query(
            "INSERT INTO clerk_webhook_ids (id, seen_at) VALUES ($1, now())
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn forget_sight(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM clerk_webhook_ids WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn revoke(&self, subject: &str, until: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO auth_revocations (subject, until) VALUES ($1, $2)
             ON CONFLICT (subject) DO UPDATE
             SET until = GREATEST(auth_revocations.until, EXCLUDED.until)",
        )
        .bind(subject)
        .bind(until)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn revocations(&self) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        sqlx::query("DELETE FROM auth_revocations WHERE until <= now()")
            .execute(&self.pool)
            .await?;
        let rows = sqlx::query("SELECT subject, until FROM auth_revocations")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("subject")?, row.try_get("until")?)))
            .collect()
    }

    async fn delete_user_rows(&self, user_id: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM imports WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
