//! The web page, built from `web/` and embedded at compile time.

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

pub fn routes() -> Router<AppState> {
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
