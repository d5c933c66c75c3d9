//! The HTTP surface: routes, shared state, and the small endpoints that do
//! not belong to a bigger module (health, metrics, dev issuer, the page).

mod auth;
mod error;
mod web;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRef, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use reeltime_protocol::{DevTokenRequest, DevTokenResponse, User};
use serde_json::json;

pub use auth::Caller;
pub use error::ApiError;

use crate::auth::{DevIssuer, Verifier};
use crate::gateway::Gateway;
use crate::imports::{Imports, api};
use crate::media::{MediaState, samples};
use crate::metrics::Metrics;
use crate::users::Users;

/// Everything handlers need, passed explicitly.
#[derive(Clone)]
pub struct AppState {
    pub gateway: Arc<Gateway>,
    pub imports: Arc<Imports>,
    pub verifier: Arc<Verifier>,
    pub users: Arc<Users>,
    pub metrics: Arc<Metrics>,
    /// Present only when no key source is configured.
    pub dev: Option<Arc<DevIssuer>>,
    pub clerk_publishable_key: Option<String>,
    /// Whether ffmpeg was found: imports get probed, a poster and a web-ready copy.
    pub media_processing: bool,
    /// `http://<listen address>`, for links to the server's own samples.
    pub base_url: String,
}

impl FromRef<AppState> for Arc<Gateway> {
    fn from_ref(state: &AppState) -> Arc<Gateway> {
        Arc::clone(&state.gateway)
    }
}

/// All routes of the server.
pub fn router(state: AppState, media: MediaState) -> Router {
    let mut router = Router::new()
        .route("/api/ws/progress", get(crate::gateway::progress_socket))
        .route("/api/imports", post(api::create).get(api::list))
        .route("/api/imports/{id}", get(api::get).delete(api::delete))
        .route("/api/imports/{id}/cancel", post(api::cancel))
        .route("/api/me", get(me))
        .route("/api/config", get(page_config))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics));
    if state.dev.is_some() {
        let dev_routes = Router::new()
            .route("/dev/token", post(dev_token))
            .route("/dev/jwks.json", get(dev_jwks))
            .layer(middleware::from_fn(loopback_host_only));
        router = router
            .merge(dev_routes)
            .route(samples::ROUTE, get(samples::samples_handler));
    }
    let media_routes = Router::new()
        .route(
            "/media/{import_id}/{file}",
            get(crate::media::media_handler),
        )
        .with_state(media);
    router
        .merge(web::routes())
        .merge(media_routes)
        .fallback(not_found)
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// `GET /api/me`: the user row behind the token.
async fn me(State(state): State<AppState>, caller: Caller) -> Result<Json<User>, ApiError> {
    let user = state
        .users
        .get(&caller.user_id, caller.email.as_deref())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(user))
}

/// `GET /api/config`: what the web page needs to know about this server.
async fn page_config(State(state): State<AppState>) -> Json<serde_json::Value> {
    let samples: Vec<serde_json::Value> = if state.dev.is_some() {
        samples::list()
            .iter()
            .map(|sample| {
                json!({
                    "name": sample.name,
                    "title": sample.title,
                    // Throttled so a person can watch the bar move.
                    "url": format!("{}{}?kbps=2000", state.base_url, sample.path()),
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    Json(json!({
        "dev_issuer": state.dev.is_some(),
        "clerk_publishable_key": state.clerk_publishable_key,
        "media_processing": state.media_processing,
        "samples": samples,
    }))
}

async fn ready(State(state): State<AppState>) -> Response {
    match state.imports.store().count_by_status().await {
        Ok(_) => Json(json!({
            "status": "ready",
            "media_processing": state.media_processing,
            "connections": state.gateway.hub.connection_count(),
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

async fn metrics(State(state): State<AppState>) -> Response {
    let counts = state
        .imports
        .store()
        .count_by_status()
        .await
        .unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&counts),
    )
        .into_response()
}

/// `POST /dev/token`: a development token, as Clerk would mint one.
async fn dev_token(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<DevTokenResponse>, ApiError> {
    let Some(dev) = state.dev.as_ref() else {
        return Err(not_found().await);
    };
    let request: DevTokenRequest = serde_json::from_slice(&body).map_err(|err| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("expected JSON like {{\"sub\":\"alice\",\"ttl_secs\":60}}: {err}"),
        )
    })?;
    let sub = request.sub.trim();
    if sub.is_empty() || sub.len() > 128 || sub.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "sub must be 1 to 128 printable characters",
        ));
    }
    let ttl = request.ttl_secs.unwrap_or(60);
    if !(1..=crate::auth::DEV_MAX_TTL_SECS).contains(&ttl) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!(
                "ttl_secs must be between 1 and {}",
                crate::auth::DEV_MAX_TTL_SECS
            ),
        ));
    }
    let (token, expires_at) = dev
        .mint(sub, ttl, request.email.as_deref())
        .map_err(ApiError::internal)?;
    Ok(Json(DevTokenResponse { token, expires_at }))
}

async fn dev_jwks(State(state): State<AppState>) -> Response {
    match state.dev.as_ref() {
        Some(dev) => Json(dev.jwks().clone()).into_response(),
        None => not_found().await.into_response(),
    }
}

/// The development issuer mints tokens for anyone who asks, so it answers
/// only pages loaded from a loopback name: a DNS-rebinding page on
/// `evil.example` that resolves to 127.0.0.1 sends its own `Host` and is
/// refused.
async fn loopback_host_only(request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| {
            request
                .uri()
                .authority()
                .map(|authority| authority.as_str())
        });
    if host.is_some_and(is_loopback_host) {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the development issuer answers only requests to a loopback host (localhost, 127.0.0.1, [::1])",
        )
        .into_response()
    }
}

/// `localhost`, `*.localhost`, `127.x.y.z` or `[::1]`, with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Logs each request without its secrets: the `token` query parameter and
/// the `sig` of media links are redacted, and headers are never logged.
async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let target = redact_target(request.uri().path(), request.uri().query());
    let response = next.run(request).await;
    tracing::info!(
        %method,
        target = %target,
        status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

/// Query parameters whose values are secrets: a token, or a media link's
/// signature (which opens that media for anyone until it expires).
const SECRET_PARAMETERS: [&str; 2] = ["token", "sig"];

/// `path?query` with the value of every secret parameter replaced.
pub fn redact_target(path: &str, query: Option<&str>) -> String {
    let Some(query) = query else {
        return path.to_string();
    };
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| {
            let key = pair.split_once('=').map_or(pair, |(key, _)| key);
            let decoded: String = url::form_urlencoded::parse(key.as_bytes())
                .map(|(name, _)| name.into_owned())
                .collect();
            if SECRET_PARAMETERS
                .iter()
                .any(|secret| decoded.eq_ignore_ascii_case(secret))
            {
                format!("{key}=REDACTED")
            } else {
                pair.to_string()
            }
        })
        .collect();
    format!("{path}?{}", redacted.join("&"))
}

#[cfg(test)]
mod tests {
    use super::{is_loopback_host, redact_target};

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in [
            "localhost",
            "localhost:8080",
            "app.localhost:3000",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.1.2.3:1",
            "[::1]:8080",
            "[::1]",
            "LOCALHOST.",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.1:8080",
            "[::ffff:7f00:1]:80x",
            "",
            "0.0.0.0:8080",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn media_signatures_never_reach_the_log() {
        assert_eq!(
            redact_target("/media/imp/video.mp4", Some("exp=1700000000&sig=abcDEF")),
            "/media/imp/video.mp4?exp=1700000000&sig=REDACTED"
        );
    }

    #[test]
    fn token_never_reaches_the_log() {
        assert_eq!(
            redact_target("/api/ws/progress", Some("token=eyJhbGc.x.y&v=1")),
            "/api/ws/progress?token=REDACTED&v=1"
        );
        assert_eq!(
            redact_target("/a", Some("TOKEN=s3cret")),
            "/a?TOKEN=REDACTED"
        );
        assert_eq!(redact_target("/a", None), "/a");
        assert_eq!(
            redact_target("/a", Some("%74oken=x")),
            "/a?%74oken=REDACTED"
        );
    }
}
