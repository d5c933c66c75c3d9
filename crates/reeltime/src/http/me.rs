//! `GET /api/me`: who the token says the caller is.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use reeltime_protocol::User;

use super::{ApiError, Caller};
use crate::users::Users;

/// `GET /api/me`: the user row behind the token.
pub async fn me(State(users): State<Arc<Users>>, caller: Caller) -> Result<Json<User>, ApiError> {
    let user = users
        .get(&caller.user_id, caller.email.as_deref())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(user))
}
