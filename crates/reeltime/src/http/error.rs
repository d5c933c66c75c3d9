//! The one error shape of the REST API: `{"error":{"code","message"}}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use reeltime_protocol::{ApiErrorBody, ApiErrorDetail};

use crate::auth::AuthError;
use crate::imports::ImportServiceError;

/// An error answer: status, stable code and a sentence.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn internal(err: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %err, "request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "something went wrong on the server",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let body = ApiErrorBody {
            error: ApiErrorDetail {
                code: self.code.to_string(),
                message: self.message.clone(),
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if unauthorized {
            let challenge = format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                self.message
            );
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
        }
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", err.reason())
    }
}

impl From<ImportServiceError> for ApiError {
    fn from(err: ImportServiceError) -> ApiError {
        match err {
            ImportServiceError::BadRequest(message) => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
            }
            ImportServiceError::UrlNotAllowed(message) => {
                ApiError::new(StatusCode::BAD_REQUEST, "url_not_allowed", message)
            }
            ImportServiceError::TooManyActive { .. } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_imports",
                err.to_string(),
            ),
            ImportServiceError::RateLimited { retry_after } => ApiError {
                retry_after: Some(crate::imports::limits::retry_after_secs(retry_after)),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    err.to_string(),
                )
            },
            ImportServiceError::NotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", "import not found")
            }
            ImportServiceError::AlreadyFinished => ApiError::new(
                StatusCode::CONFLICT,
                "already_finished",
                "the import has already finished",
            ),
            ImportServiceError::StillRunning => ApiError::new(
                StatusCode::CONFLICT,
                "still_running",
                "the import is still running; cancel it first",
            ),
            ImportServiceError::InvalidMetadata(message) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_metadata", message)
            }
            ImportServiceError::NotExternal => {
                ApiError::new(StatusCode::CONFLICT, "not_external", err.to_string())
            }
            ImportServiceError::ProgressBackwards(message) => {
                ApiError::new(StatusCode::CONFLICT, "progress_backwards", message)
            }
            // The worker learns of a cancel from this answer's code.
            ImportServiceError::Finished(status) => ApiError::new(
                StatusCode::CONFLICT,
                if status == "cancelled" {
                    "import_cancelled"
                } else {
                    "already_finished"
                },
                err.to_string(),
            ),
            other => ApiError::internal(other),
        }
    }
}
