//! `Authorization: Bearer` for the REST API, through the same verifier as
//! the WebSocket.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::{ApiError, AppState};
use crate::auth::AuthError;

/// The verified caller of a REST request.
pub struct Caller {
    pub user_id: String,
    pub email: Option<String>,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then_some(token.trim())
            })
            .ok_or(AuthError::Missing);
        let claims = match token {
            Ok(token) => state.verifier.verify(token).await,
            Err(err) => Err(err),
        };
        let claims = claims.inspect_err(|err| state.metrics.auth_failure(err.reason()))?;
        state
            .users
            .ensure(&claims.sub, claims.email.as_deref())
            .await
            .map_err(ApiError::internal)?;
        Ok(Caller {
            user_id: claims.sub,
            email: claims.email,
        })
    }
}
