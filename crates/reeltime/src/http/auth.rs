//! `Authorization: Bearer` for the REST API, through the same verifier as
//! the WebSocket.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::ApiError;
use crate::auth::{AuthError, SECRET_PREFIX, Verifier};
use crate::metrics::Metrics;
use crate::users::Users;

/// What the [`Caller`] extractor needs: the verifier, the users table the
/// caller is recorded in, and the counter of refused tokens.
#[derive(Clone)]
pub struct BearerAuth {
    pub verifier: Arc<Verifier>,
    pub users: Arc<Users>,
    pub metrics: Arc<Metrics>,
}

/// The verified caller of a REST request.
pub struct Caller {
    pub user_id: String,
    pub email: Option<String>,
}

impl<S> FromRequestParts<S> for Caller
where
    BearerAuth: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Caller, ApiError> {
        let auth = BearerAuth::from_ref(state);
        let token = bearer_token(parts).ok_or(AuthError::Missing);
        if let Ok(token) = token
            && token.starts_with(SECRET_PREFIX)
        {
            // Said plainly rather than "malformed token": the app's backend
            // sent its server key where a user's session token belongs.
            auth.metrics.auth_failure(AuthError::Malformed.reason());
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a server API key is not accepted here: user endpoints take the user's session token; the app's backend uses /api/server/*",
            ));
        }
        let claims = match token {
            Ok(token) => auth.verifier.verify(token).await,
            Err(err) => Err(err),
        };
        let claims = claims.inspect_err(|err| auth.metrics.auth_failure(err.reason()))?;
        auth.users
            .ensure(&claims.sub, claims.email.as_deref())
            .await
            .map_err(ApiError::internal)?;
        Ok(Caller {
            user_id: claims.sub,
            email: claims.email,
        })
    }
}

/// The token of an `Authorization: Bearer <token>` header, if any.
pub(super) fn bearer_token(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        })
}
