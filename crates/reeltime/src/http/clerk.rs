//! `POST /api/clerk/webhook`: Clerk's session and user events, verified
//! with the Svix signature (see `crate::clerk`). Present only when
//! CLERK_WEBHOOK_SIGNING_SECRET is set.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::ApiError;
use crate::clerk::{ClerkError, ClerkWebhooks};

/// 200 `{"outcome":"handled"|"duplicate"|"ignored"}`; 400 for a bad or
/// stale signature or a body that is not a Clerk event; 500 (Clerk
/// retries) when acting failed.
pub async fn clerk_webhook(
    State(clerk): State<Arc<ClerkWebhooks>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    match clerk.receive(&headers, &body).await {
        Ok(outcome) => Ok(Json(json!({ "outcome": outcome.as_str() }))),
        Err(err @ (ClerkError::BadHeaders | ClerkError::BadSignature)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_signature",
            err.to_string(),
        )),
        Err(err @ ClerkError::Stale) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "stale_timestamp",
            err.to_string(),
        )),
        Err(err @ ClerkError::BadPayload(_)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            err.to_string(),
        )),
        Err(err) => Err(ApiError::internal(err)),
    }
}
