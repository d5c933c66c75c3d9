//! `/api/server/imports...`: the app's backend creates imports for its
//! users, reads, cancels and deletes any of them, and reports on the ones
//! its own workers run (external imports). Every handler takes a
//! [`ServerCaller`]; every POST goes through the idempotency layer.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use reeltime_protocol::{Import, ImportPage, ImportStatus};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{ApiError, ServerCaller};
use crate::imports::reports::{CompleteReport, FailReport, ProgressReport, Reported};
use crate::imports::{ImportService, ImportServiceError, NewImport, SourceSpec};
use crate::store::OwnedImport;
use crate::store::server_api::ImportFilter;
use crate::users::Users;

/// Body of `POST /api/server/imports`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerCreateImport {
    /// The user the import is for (the token's `sub`); created if new.
    user_id: String,
    /// `url` (default) or `external`.
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
}

/// Longest user id taken (Clerk's are ~32 characters).
const MAX_USER_ID: usize = 255;

/// Parses a JSON body, answering 400 with what was expected. An empty
/// body reads as `{}`.
fn json_body<T: DeserializeOwned>(body: &Bytes, expected: &str) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|err| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("expected JSON like {expected}: {err}"),
        )
    })
}

/// `POST /api/server/imports` → 201 with the new import; every open tab of
/// the user sees it at once.
pub async fn create(
    State(imports): State<Arc<ImportService>>,
    State(users): State<Arc<Users>>,
    _caller: ServerCaller,
    body: Bytes,
) -> Result<(StatusCode, Json<Import>), ApiError> {
    let request: ServerCreateImport = json_body(
        &body,
        r#"{"user_id":"user_...","url":"https://..."} or {"user_id":"user_...","source":"external"}"#,
    )?;
    let user_id = request.user_id.trim();
    if user_id.is_empty() || user_id.len() > MAX_USER_ID {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("user_id must be 1 to {MAX_USER_ID} bytes"),
        ));
    }
    let source = match (request.source.as_deref(), request.url) {
        (Some("external"), None) => SourceSpec::External,
        (Some("external"), Some(_)) => {
            return Err(ImportServiceError::BadRequest(
                "an external import takes no url: the app's workers do the work".into(),
            )
            .into());
        }
        (None | Some("url"), Some(url)) => SourceSpec::Url(url),
        (None | Some("url"), None) => {
            return Err(ImportServiceError::BadRequest("url is required".into()).into());
        }
        (Some(other), _) => {
            return Err(ImportServiceError::BadRequest(format!(
                "source must be \"url\" or \"external\", got {other:?}"
            ))
            .into());
        }
    };
    users
        .ensure(user_id, None)
        .await
        .map_err(ApiError::internal)?;
    let import = imports
        .create_from_server(
            user_id,
            NewImport {
                title: request.title,
                source,
                metadata: request.metadata,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(import)))
}

/// Filters and paging of `GET /api/server/imports`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    user_id: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
    before: Option<String>,
}

/// `GET /api/server/imports?user_id=&status=&limit=&before=`: newest first,
/// any user's unless `user_id` is given.
pub async fn list(
    State(imports): State<Arc<ImportService>>,
    _caller: ServerCaller,
    Query(query): Query<ListQuery>,
) -> Result<Json<ImportPage>, ApiError> {
    let status = match query.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => Some(ImportStatus::parse(raw).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("unknown status {raw:?}"),
            )
        })?),
    };
    let limit = query.limit.unwrap_or(50).clamp(1, 200);
    let found = imports
        .store()
        .server_api()
        .find_imports(&ImportFilter {
            user_id: query.user_id.as_deref().filter(|id| !id.is_empty()),
            status,
            before: query.before.as_deref().filter(|id| !id.is_empty()),
            limit,
        })
        .await
        .map_err(ApiError::internal)?;
    let page: Vec<Import> = found.iter().map(|owned| imports.present(owned)).collect();
    Ok(Json(super::imports::page_of(page, limit)))
}

/// Any user's import, or 404.
async fn owned(imports: &ImportService, id: &str) -> Result<OwnedImport, ApiError> {
    imports
        .store()
        .get_import(id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ImportServiceError::NotFound.into())
}

/// `GET /api/server/imports/{id}`.
pub async fn get(
    State(imports): State<Arc<ImportService>>,
    _caller: ServerCaller,
    Path(id): Path<String>,
) -> Result<Json<Import>, ApiError> {
    let owned = owned(&imports, &id).await?;
    Ok(Json(imports.present(&owned)))
}

/// `POST /api/server/imports/{id}/cancel`: 409 when already finished. An
/// external import's worker learns of it from its next report (409
/// `import_cancelled`).
pub async fn cancel(
    State(imports): State<Arc<ImportService>>,
    _caller: ServerCaller,
    Path(id): Path<String>,
) -> Result<Json<Import>, ApiError> {
    let owner = owned(&imports, &id).await?.user_id;
    Ok(Json(imports.cancel(&owner, &id).await?))
}

/// `DELETE /api/server/imports/{id}`: a finished import and its files.
pub async fn delete(
    State(imports): State<Arc<ImportService>>,
    _caller: ServerCaller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let owner = owned(&imports, &id).await?.user_id;
    imports.delete(&owner, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/server/imports/{id}/progress`: 200 with the import when the
/// report was stored, 202 when it was merged into the one waiting for the
/// import's turn (stored within 100 ms).
pub async fn progress(
    State(imports): State<Arc<ImportService>>,
    _caller: ServerCaller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let report: ProgressReport = json_body(
        &body,
        r#"{"progress":0.4,"stage":"encoding","bytes_done":1024,"bytes_total":4096}"#,
    )?;
    Ok(match imports.report_progress(&id, report).await? {
        Reported::Stored(import) => (StatusCode::OK, Json(import)).into_response(),
        Reported::Merged(import) => (StatusCode::ACCEPTED, Json(import)).into_response(),
    })
}

/// `POST /api/server/imports/{id}/complete` `{"result"?}`.
pub async fn complete(
    State(imports): State<Arc<ImportService>>,
    _caller: ServerCaller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Import>, ApiError> {
    let report: CompleteReport = json_body(&body, r#"{"result":{"asset_id":"..."}}"#)?;
    Ok(Json(imports.report_complete(&id, report).await?))
}

/// `POST /api/server/imports/{id}/fail` `{"error":{"code","message"}}`.
pub async fn fail(
    State(imports): State<Arc<ImportService>>,
    _caller: ServerCaller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Import>, ApiError> {
    let report: FailReport = json_body(
        &body,
        r#"{"error":{"code":"encode_failed","message":"..."}}"#,
    )?;
    Ok(Json(imports.report_fail(&id, report).await?))
}
