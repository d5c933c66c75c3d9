//! What tells an operator about the node: `/healthz` (the process answers),
//! `/readyz` (the database answers too, plus what this node runs with) and
//! `/metrics` (Prometheus text). `/readyz` and `/metrics` move to the admin
//! listener when REELTIME_ADMIN_LISTEN is set.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::gateway::{Admission, Hub};
use crate::metrics::Metrics;
use crate::store::{HookStore, Store};

/// What the health endpoints read: the store they probe and the counters
/// they show, nothing that could change the node.
#[derive(Clone)]
pub struct Health {
    pub store: Arc<dyn Store>,
    pub hub: Arc<Hub>,
    pub admission: Arc<Admission>,
    pub metrics: Arc<Metrics>,
    /// Whether ffmpeg was found: imports get probed, a poster and a web-ready copy.
    pub media_processing: bool,
    /// What confines each ffmpeg (`"landlock"` or `"unavailable"`); `None`
    /// when media processing is off.
    pub media_sandbox: Option<&'static str>,
    /// The webhook outbox, for the age of its oldest pending event.
    pub hooks: Arc<dyn HookStore>,
}

/// `GET /healthz`: the process is up and answering.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: 200 when the database answers, 503 when it does not.
pub async fn ready(State(health): State<Health>) -> Response {
    match health.store.count_by_status().await {
        Ok(_) => Json(json!({
            "status": "ready",
            "media_processing": health.media_processing,
            "media_sandbox": health.media_sandbox,
            "connections": health.hub.connection_count(),
            "waiting_for_token": health.admission.waiting(),
        }))
        .into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable"})),
            )
                .into_response()
        }
    }
}

/// `GET /metrics`: the node's counters in Prometheus text format.
pub async fn metrics(State(health): State<Health>) -> Response {
    let counts = health.store.count_by_status().await.unwrap_or_default();
    let mut text = health.metrics.render(&counts);
    let oldest = health.hooks.oldest_pending().await.ok().flatten();
    let age = oldest.map(|at| {
        (chrono::Utc::now() - at)
            .to_std()
            .unwrap_or_default()
            .as_secs_f64()
    });
    health.metrics.render_webhooks(&mut text, age);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
