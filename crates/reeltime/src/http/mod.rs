//! The HTTP edge: the routes, the state each handler takes, and the
//! handlers themselves, one module per concern. Domain modules (`imports`,
//! `media`, `auth`, `store`, ...) never import this one; it imports them.
//!
//! Each handler takes only the sub-state it needs (`State<Arc<ImportService>>`,
//! `State<MediaState>`, `State<Health>`, ...); [`AppState`] only bundles
//! them for the router, through axum's [`FromRef`].

mod auth;
mod clerk;
mod cors;
mod dev;
mod error;
mod health;
mod idempotency;
mod imports;
mod log;
mod me;
mod media;
mod samples;
mod server_api;
mod server_auth;
mod uploads;
mod web;
mod webhook_deliveries;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, head, post};

pub use auth::{BearerAuth, Caller};
pub use cors::Cors;
pub use dev::is_loopback_host;
pub use error::ApiError;
pub use health::Health;
pub use log::redact_target;
pub use media::{MediaState, OwnerLookup, serve_file};
pub use server_auth::{ServerApi, ServerCaller};
pub use web::PageConfig;
pub use webhook_deliveries::WebhookDeliveries;

use crate::auth::DevIssuer;
use crate::clerk::ClerkWebhooks;
use crate::gateway::Gateway;
use crate::imports::ImportService;
use crate::imports::uploads::Uploads;
use crate::users::Users;

/// The sub-states of the public listener, for the router: a handler never
/// takes this whole, only the part it names (see the `FromRef` impls).
#[derive(Clone)]
pub struct AppState {
    /// The WebSocket edge (`/api/ws/progress`).
    pub gateway: Arc<Gateway>,
    /// `/api/imports...`.
    pub imports: Arc<ImportService>,
    /// `/api/uploads...` (tus).
    pub uploads: Arc<Uploads>,
    /// The CORS policy of every route (REELTIME_ALLOWED_ORIGINS).
    pub cors: Arc<Cors>,
    /// The `Caller` extractor of every authenticated REST route.
    pub auth: BearerAuth,
    /// The `ServerCaller` extractor and idempotency of `/api/server/*`.
    pub server: ServerApi,
    /// `/api/config`.
    pub page: Arc<PageConfig>,
    /// `/media/...`.
    pub media: MediaState,
    /// `/readyz` and `/metrics` when they are public.
    pub health: Health,
    /// The development issuer: present only when no key source is
    /// configured, and then `/dev/*` and `/samples/*` exist.
    pub dev: Option<Arc<DevIssuer>>,
    /// `/api/clerk/webhook`, present only with CLERK_WEBHOOK_SIGNING_SECRET.
    pub clerk: Option<Arc<ClerkWebhooks>>,
    /// `/api/server/webhooks/deliveries...`.
    pub deliveries: WebhookDeliveries,
}

impl FromRef<AppState> for WebhookDeliveries {
    fn from_ref(state: &AppState) -> WebhookDeliveries {
        state.deliveries.clone()
    }
}

impl FromRef<AppState> for Arc<Gateway> {
    fn from_ref(state: &AppState) -> Arc<Gateway> {
        Arc::clone(&state.gateway)
    }
}

impl FromRef<AppState> for Arc<ImportService> {
    fn from_ref(state: &AppState) -> Arc<ImportService> {
        Arc::clone(&state.imports)
    }
}

impl FromRef<AppState> for Arc<Uploads> {
    fn from_ref(state: &AppState) -> Arc<Uploads> {
        Arc::clone(&state.uploads)
    }
}

impl FromRef<AppState> for BearerAuth {
    fn from_ref(state: &AppState) -> BearerAuth {
        state.auth.clone()
    }
}

impl FromRef<AppState> for ServerApi {
    fn from_ref(state: &AppState) -> ServerApi {
        state.server.clone()
    }
}

impl FromRef<AppState> for Arc<Users> {
    fn from_ref(state: &AppState) -> Arc<Users> {
        Arc::clone(&state.auth.users)
    }
}

impl FromRef<AppState> for Arc<PageConfig> {
    fn from_ref(state: &AppState) -> Arc<PageConfig> {
        Arc::clone(&state.page)
    }
}

impl FromRef<AppState> for MediaState {
    fn from_ref(state: &AppState) -> MediaState {
        state.media.clone()
    }
}

impl FromRef<AppState> for Health {
    fn from_ref(state: &AppState) -> Health {
        state.health.clone()
    }
}

/// Where `/metrics` and `/readyz` are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admin {
    /// On the public listener too (no REELTIME_ADMIN_LISTEN).
    Public,
    /// Only on the admin listener: see [`admin_router`].
    Separate,
}

/// The routes of the public listener.
pub fn router(state: AppState, admin: Admin) -> Router {
    let mut router = Router::new()
        .route("/api/ws/progress", get(crate::gateway::progress_socket))
        .route("/api/imports", post(imports::create).get(imports::list))
        .route(
            "/api/imports/{id}",
            get(imports::get).delete(imports::delete),
        )
        .route("/api/imports/{id}/cancel", post(imports::cancel))
        .merge(server_routes(&state))
        .route(
            "/api/uploads",
            post(uploads::create).options(uploads::options),
        )
        .route(
            "/api/uploads/{id}",
            head(uploads::head)
                .patch(uploads::patch)
                .delete(uploads::terminate)
                .options(uploads::options),
        )
        .route("/api/me", get(me::me))
        .route("/api/config", get(web::page_config))
        .route("/media/{import_id}/{file}", get(media::media_handler))
        .route("/healthz", get(health::healthz));
    if admin == Admin::Public {
        router = router.merge(admin_routes());
    }
    if let Some(dev) = &state.dev {
        let dev_routes = Router::new()
            .route("/dev/token", post(dev::dev_token))
            .route("/dev/jwks.json", get(dev::dev_jwks))
            .layer(middleware::from_fn(dev::loopback_host_only))
            .with_state(Arc::clone(dev));
        router = router
            .merge(dev_routes)
            .route(samples::ROUTE, get(samples::samples_handler));
    }
    let cors = Cors::clone(&state.cors);
    if let Some(clerk) = &state.clerk {
        router = router.merge(
            Router::new()
                .route("/api/clerk/webhook", post(clerk::clerk_webhook))
                .with_state(Arc::clone(clerk)),
        );
    }
    router
        .merge(web::routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(cors, cors::cors))
        .layer(middleware::from_fn(log::log_request))
        .with_state(state)
}

/// `/api/server/*`: the app's backend, with its server key checked and
/// its POSTs made idempotent by one layer in front of every route.
fn server_routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route(
            "/api/server/imports",
            post(server_api::create).get(server_api::list),
        )
        .route(
            "/api/server/imports/{id}",
            get(server_api::get).delete(server_api::delete),
        )
        .route("/api/server/imports/{id}/cancel", post(server_api::cancel))
        .route(
            "/api/server/imports/{id}/progress",
            post(server_api::progress),
        )
        .route(
            "/api/server/imports/{id}/complete",
            post(server_api::complete),
        )
        .route("/api/server/imports/{id}/fail", post(server_api::fail))
        .route(
            "/api/server/webhooks/deliveries",
            get(webhook_deliveries::list),
        )
        .route(
            "/api/server/webhooks/deliveries/{id}/retry",
            post(webhook_deliveries::retry),
        )
        .route_layer(middleware::from_fn_with_state(
            state.server.clone(),
            idempotency::idempotent,
        ))
}

/// The routes of the admin listener (REELTIME_ADMIN_LISTEN): what tells an
/// operator about the node, kept off the public address.
pub fn admin_router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .merge(admin_routes())
        .fallback(not_found)
        .layer(middleware::from_fn(log::log_request))
        .with_state(health)
}

/// `/readyz` and `/metrics`, on whichever listener [`Admin`] says.
fn admin_routes<S>() -> Router<S>
where
    Health: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/readyz", get(health::ready))
        .route("/metrics", get(health::metrics))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}
