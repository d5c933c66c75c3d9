//! `Authorization: Bearer rt_sk_...` for the server API (`/api/server/*`):
//! the app's backend, authenticated by a key from `reeltime keys create`.
//! A user's session token is refused here (401), as a server key is on the
//! user endpoints (`http::auth`) and on the socket (1008, as any token the
//! verifier cannot read).

use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;

use super::ApiError;
use super::auth::bearer_token;
use crate::auth::{AuthError, SECRET_PREFIX, ServerKeyError, ServerKeys};
use crate::metrics::Metrics;
use crate::store::Store;

/// What the server API needs besides the import service: its keys, the
/// store of idempotency answers, and when this node last purged them.
#[derive(Clone)]
pub struct ServerApi {
    pub keys: Arc<ServerKeys>,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    /// Unix seconds of this node's last purge of expired idempotency
    /// answers (at most one a minute).
    pub purged_at: Arc<AtomicI64>,
}

/// The app's backend, verified by its server API key. Handlers of
/// `/api/server/*` take it to be reachable by the backend only.
#[derive(Debug, Clone)]
pub struct ServerCaller {
    /// The key's id: idempotency answers are kept per key.
    pub key_id: String,
    /// The operator's name for the key, for logs (never the secret).
    pub key_name: String,
}

impl<S> FromRequestParts<S> for ServerCaller
where
    ServerApi: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<ServerCaller, ApiError> {
        // Verified once per request: the idempotency layer runs first.
        if let Some(caller) = parts.extensions.get::<ServerCaller>() {
            return Ok(caller.clone());
        }
        let api = ServerApi::from_ref(state);
        let unauthorized = |message: &str| {
            api.metrics.auth_failure(AuthError::Malformed.reason());
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
        };
        let Some(token) = bearer_token(parts) else {
            return Err(unauthorized(
                "missing server API key (Authorization: Bearer rt_sk_...)",
            ));
        };
        if !token.starts_with(SECRET_PREFIX) {
            return Err(unauthorized(
                "this endpoint takes a server API key (Authorization: Bearer rt_sk_...), not a user's session token",
            ));
        }
        let key = match api.keys.verify(token).await {
            Ok(key) => key,
            Err(ServerKeyError::Store(err)) => return Err(ApiError::internal(err)),
            Err(_) => return Err(unauthorized("unknown or revoked server API key")),
        };
        let caller = ServerCaller {
            key_id: key.id,
            key_name: key.name,
        };
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}
