//! `/api/server/webhooks/deliveries`: what became of the webhooks, for the
//! app's backend (server API key): list them by status, and send a pending
//! or failed one again now, with the same `webhook-id`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ApiError, ServerCaller};
use crate::store::HookStore;
use crate::store::hooks::{Delivery, DeliveryState};
use crate::webhooks::Webhooks;

/// The outbox, and this node's worker when webhooks are on.
#[derive(Clone)]
pub struct WebhookDeliveries {
    pub hooks: Arc<dyn HookStore>,
    /// `None` when REELTIME_WEBHOOK_URL is unset.
    pub worker: Option<Arc<Webhooks>>,
}

/// One delivery as the API shows it.
#[derive(Debug, Serialize)]
pub struct DeliveryView {
    /// The `webhook-id`.
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub import_id: String,
    pub user_id: String,
    pub status: DeliveryState,
    pub attempts: u32,
    /// When the event happened (the body's `timestamp`).
    pub created_at: DateTime<Utc>,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The receiver's last HTTP status, if it answered.
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

impl From<Delivery> for DeliveryView {
    fn from(delivery: Delivery) -> DeliveryView {
        DeliveryView {
            next_attempt_at: (delivery.state == DeliveryState::Pending)
                .then_some(delivery.next_attempt_at),
            id: delivery.id,
            event_type: delivery.event_type,
            import_id: delivery.import_id,
            user_id: delivery.user_id,
            status: delivery.state,
            attempts: delivery.attempts,
            created_at: delivery.occurred_at,
            last_status: delivery.last_status,
            last_error: delivery.last_error,
            delivered_at: delivery.delivered_at,
        }
    }
}

/// A page of deliveries, newest first.
#[derive(Debug, Serialize)]
pub struct DeliveryPage {
    pub deliveries: Vec<DeliveryView>,
    /// Pass as `before` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// Query of the list.
#[derive(Deserialize)]
pub struct DeliveryQuery {
    status: Option<String>,
    limit: Option<i64>,
    before: Option<String>,
}

/// `GET /api/server/webhooks/deliveries?status=failed|pending|delivered&limit=&before=`.
pub async fn list(
    State(deliveries): State<WebhookDeliveries>,
    _caller: ServerCaller,
    Query(query): Query<DeliveryQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
    let bad = |message: &str| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message);
    let state = match query.status.as_deref() {
        Some("pending") => DeliveryState::Pending,
        Some("delivered") => DeliveryState::Delivered,
        Some("failed") => DeliveryState::Failed,
        _ => return Err(bad("status must be pending, delivered or failed")),
    };
    let before = match query.before.as_deref() {
        None | Some("") => None,
        Some(cursor) => Some(
            cursor
                .parse::<i64>()
                .map_err(|_| bad("before must be a next_cursor of this list"))?,
        ),
    };
    let limit = query.limit.unwrap_or(50).clamp(1, 200);
    let rows = deliveries
        .hooks
        .list_deliveries(state, limit, before)
        .await
        .map_err(ApiError::internal)?;
    let next_cursor = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|delivery| delivery.seq.to_string()))
        .flatten();
    Ok(Json(DeliveryPage {
        deliveries: rows.into_iter().map(DeliveryView::from).collect(),
        next_cursor,
    }))
}

/// `POST /api/server/webhooks/deliveries/{id}/retry` → 202 with the
/// delivery, due now; 404 when there is no pending or failed delivery of
/// that id; 409 when webhooks are off on this node.
pub async fn retry(
    State(deliveries): State<WebhookDeliveries>,
    _caller: ServerCaller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<DeliveryView>), ApiError> {
    let Some(worker) = &deliveries.worker else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "webhooks_off",
            "webhooks are not configured on this node (REELTIME_WEBHOOK_URL)",
        ));
    };
    let delivery = deliveries
        .hooks
        .retry_delivery(&id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no pending or failed delivery with this id",
            )
        })?;
    worker.wake();
    Ok((StatusCode::ACCEPTED, Json(delivery.into())))
}
