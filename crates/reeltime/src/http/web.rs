//! The web page, built from `web/` and embedded at compile time, and
//! `GET /api/config`, what the page needs to know about this server.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::media::samples;

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// What `GET /api/config` tells the page, fixed at start.
pub struct PageConfig {
    /// Whether the development issuer runs (then the page offers samples).
    pub dev_issuer: bool,
    pub clerk_publishable_key: Option<String>,
    /// Whether ffmpeg was found: imports get probed, a poster and a web-ready copy.
    pub media_processing: bool,
    /// `http://<listen address>`, for links to the server's own samples.
    pub base_url: String,
}

/// The page's files: `/`, `/index.html`, `/assets/...`, `/favicon.svg`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(serve))
        .route("/index.html", get(serve))
        .route("/assets/{*path}", get(serve))
        .route("/favicon.svg", get(serve))
}

async fn serve(request: Request) -> Response {
    let path = match request.uri().path() {
        "/" => "/index.html",
        other => other,
    };
    let Some((_, body)) = ASSETS.iter().find(|(name, _)| *name == path) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let content_type = match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        *body,
    )
        .into_response()
}

/// `GET /api/config`: what the web page needs to know about this server.
pub async fn page_config(State(page): State<Arc<PageConfig>>) -> Json<serde_json::Value> {
    let samples: Vec<serde_json::Value> = if page.dev_issuer {
        samples::list()
            .iter()
            .map(|sample| {
                json!({
                    "name": sample.name,
                    "title": sample.title,
                    // Throttled so a person can watch the bar move.
                    "url": format!("{}{}?kbps=2000", page.base_url, sample.path()),
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    Json(json!({
        "dev_issuer": page.dev_issuer,
        "clerk_publishable_key": page.clerk_publishable_key,
        "media_processing": page.media_processing,
        "samples": samples,
    }))
}
