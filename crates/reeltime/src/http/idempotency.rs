//! `Idempotency-Key` on the server API's POSTs: a retry with the same key
//! and the same request gets the first answer again (with
//! `Idempotent-Replayed: true`); the same key with another request is 422;
//! a retry while the first still runs is 409. Answers are kept per server
//! key for 24 hours (`store::server_api::IDEMPOTENCY_TTL`).
//!
//! The key's row is inserted before the request runs, so two concurrent
//! duplicates, on one node or two, never both run. A request that fails on
//! the server's side (5xx) gives its key back, so the retry runs again; a
//! node that dies mid-request leaves a row that is taken over after a
//! minute. The header is optional: a POST without it runs as sent.

use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use super::server_auth::{ServerApi, ServerCaller};
use crate::store::server_api::IdempotencyBegin;

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// Set on an answer replayed from a first request.
pub const REPLAYED: &str = "idempotent-replayed";
/// Largest body a server POST takes: its JSON is a few KiB at most
/// (metadata is capped at 4 KiB).
const MAX_BODY: usize = 64 * 1024;
/// Longest Idempotency-Key (a UUID is 36).
const MAX_KEY: usize = 255;

/// The idempotency layer of `/api/server/*` (POSTs only); also where the
/// server key is checked first, so a bad key never touches the table.
pub async fn idempotent(
    State(api): State<ServerApi>,
    caller: ServerCaller,
    mut request: Request,
    next: Next,
) -> Response {
    request.extensions_mut().insert(caller.clone());
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(key) = request.headers().get(HEADER) else {
        return next.run(request).await;
    };
    let key = match key.to_str() {
        Ok(key) if !key.trim().is_empty() && key.len() <= MAX_KEY => key.trim().to_string(),
        _ => {
            return bad_request(format!(
                "Idempotency-Key must be 1 to {MAX_KEY} visible ASCII characters"
            ));
        }
    };
    purge_now_and_then(&api);
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("a server API request body is at most {MAX_BODY} bytes"),
            )
            .into_response();
        }
    };
    let target = parts.uri.path_and_query().map_or_else(
        || parts.uri.path().to_string(),
        |pq| pq.as_str().to_string(),
    );
    let hash = request_hash(parts.method.as_str(), &target, &body);
    let store = api.store.server_api();
    match store.begin_idempotent(&caller.key_id, &key, &hash).await {
        Err(err) => ApiError::internal(err).into_response(),
        Ok(IdempotencyBegin::Existing { request_hash, .. }) if request_hash != hash => {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used with another request; use a new key for a new request",
            )
            .into_response()
        }
        Ok(IdempotencyBegin::Existing { answer: None, .. }) => ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_key_in_use",
            "a request with this Idempotency-Key is still running; retry shortly",
        )
        .into_response(),
        Ok(IdempotencyBegin::Existing {
            answer: Some((status, body)),
            ..
        }) => replay(status, body),
        Ok(IdempotencyBegin::Started) => {
            let response = next
                .run(Request::from_parts(parts, Body::from(body)))
                .await;
            let (mut parts, body) = response.into_parts();
            let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
                if let Err(err) = store.abandon_idempotent(&caller.key_id, &key).await {
                    tracing::warn!(error = %err, "could not give an idempotency key back");
                }
                return ApiError::internal("could not read a response body").into_response();
            };
            let kept = if parts.status.is_server_error() {
                store.abandon_idempotent(&caller.key_id, &key).await
            } else {
                let text = String::from_utf8_lossy(&body);
                store
                    .finish_idempotent(&caller.key_id, &key, parts.status.as_u16(), &text)
                    .await
            };
            if let Err(err) = kept {
                tracing::warn!(error = %err, "could not store an idempotency answer");
            }
            parts
                .headers
                .insert(REPLAYED, HeaderValue::from_static("false"));
            Response::from_parts(parts, Body::from(body))
        }
    }
}

fn bad_request(message: String) -> Response {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message).into_response()
}

/// The stored first answer, as it was.
fn replay(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = (status, Bytes::from(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

/// Hex SHA-256 of what makes two requests the same one.
fn request_hash(method: &str, target: &str, body: &[u8]) -> String {
    crate::auth::server_keys::sha256_hex(&[
        method.as_bytes(),
        b"\n",
        target.as_bytes(),
        b"\n",
        body,
    ])
}

/// Drops expired answers, at most once a minute per node, off the request.
fn purge_now_and_then(api: &ServerApi) {
    let now = chrono::Utc::now().timestamp();
    let last = api.purged_at.load(Ordering::Relaxed);
    if now - last < 60
        || api
            .purged_at
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    let store = std::sync::Arc::clone(&api.store);
    tokio::spawn(async move {
        match store.server_api().purge_idempotency().await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "expired idempotency answers purged"),
            Err(err) => tracing::warn!(error = %err, "could not purge idempotency answers"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::request_hash;

    #[test]
    fn the_hash_covers_method_target_and_body() {
        let base = request_hash("POST", "/api/server/imports", b"{}");
        assert_eq!(base, request_hash("POST", "/api/server/imports", b"{}"));
        assert_ne!(base, request_hash("POST", "/api/server/imports", b"{ }"));
        assert_ne!(
            base,
            request_hash("POST", "/api/server/imports/x/cancel", b"{}")
        );
        assert_ne!(base, request_hash("PUT", "/api/server/imports", b"{}"));
    }
}
