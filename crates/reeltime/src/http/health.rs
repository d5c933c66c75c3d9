//! What tells an operator about the node: `/healthz` (the process answers),
//! `/readyz` (the database and the bus answer too, plus what this node runs with) and
//! `/metrics` (Prometheus text). `/readyz` and `/metrics` move to the admin
//! listener when REELTIME_ADMIN_LISTEN is set.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::time::timeout;

use crate::bus::Bus;
use crate::gateway::{Admission, Hub};
use crate::metrics::{CONTENT_TYPE, Metrics, Scrape};
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
    /// The bus between nodes: `/readyz` asks it whether it is connected.
    pub bus: Arc<dyn Bus>,
}

/// `GET /healthz`: the process is up and answering.
pub async fn healthz() -> &'static str {
    "ok"
}

/// How long a readiness check waits for the database or the bus: a
/// load balancer's probe must get an answer, not a hang.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /readyz`: 200 when the database and the bus answer, 503 when one
/// does not. The body says which: `"checks": {"database": "ok", "bus":
/// "redis: ..."}` (docs/deploy.md).
pub async fn ready(State(health): State<Health>) -> Response {
    let (database, bus) = checks(&health).await;
    let ready = database.is_ok() && bus.is_ok();
    let text = |check: &Result<(), String>| match check {
        Ok(()) => "ok".to_string(),
        Err(err) => err.clone(),
    };
    let body = json!({
        "ready": ready,
        "status": if ready { "ready" } else { "unavailable" },
        "checks": {"database": text(&database), "bus": text(&bus)},
        "media_processing": health.media_processing,
        "media_sandbox": health.media_sandbox,
        "connections": health.hub.connection_count(),
        "waiting_for_token": health.admission.waiting(),
    });
    if ready {
        Json(body).into_response()
    } else {
        tracing::warn!(database = %text(&database), bus = %text(&bus), "not ready");
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

/// The database's and the bus's answers, each within [`CHECK_TIMEOUT`]
/// (asked at once): what `/readyz` shows and `reeltime_ready` counts.
async fn checks(health: &Health) -> (Result<(), String>, Result<(), String>) {
    let (database, bus) = tokio::join!(
        timeout(CHECK_TIMEOUT, health.store.ping()),
        timeout(CHECK_TIMEOUT, health.bus.check()),
    );
    let database = match database {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
    };
    let bus = match bus {
        Ok(answer) => answer,
        Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
    };
    (database, bus)
}

/// `GET /metrics`: the node's metrics in the Prometheus text format.
pub async fn metrics(State(health): State<Health>) -> Response {
    let (counts, oldest, (database, bus)) = tokio::join!(
        health.store.count_by_status(),
        health.hooks.oldest_pending(),
        checks(&health),
    );
    let scrape = Scrape {
        imports_by_status: counts.unwrap_or_default(),
        oldest_pending_webhook: oldest
            .ok()
            .flatten()
            .map(|at| (chrono::Utc::now() - at).to_std().unwrap_or_default()),
        waiting_for_token: health.admission.waiting(),
        tokio_tasks: tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        ready: vec![("database", database.is_ok()), ("bus", bus.is_ok())],
    };
    let text = health.metrics.render(&scrape);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}
