//! `Authorization: Bearer` for the REST API, through the same verifier as
//! the WebSocket.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::ApiError;
use crate::auth::{AuthError, Verifier};
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
