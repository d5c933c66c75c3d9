//! `/api/imports`: create, list, read, cancel and delete the caller's imports.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use reeltime_protocol::{CreateImport, Import, ImportPage};
use serde::Deserialize;

use super::{ApiError, Caller};
use crate::imports::ImportService;

/// `POST /api/imports` → 201 with the queued import.
pub async fn create(
    State(imports): State<Arc<ImportService>>,
    caller: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<Import>), ApiError> {
    let request: CreateImport = serde_json::from_slice(&body).map_err(|err| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("expected JSON like {{\"url\":\"https://...\",\"title\":\"...\"}}: {err}"),
        )
    })?;
    let import = imports
        .create(
            &caller.user_id,
            crate::imports::NewImport {
                title: request.title,
                source: crate::imports::SourceSpec::Url(request.url),
                metadata: request.metadata,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(import)))
}

/// Paging parameters of `GET /api/imports`.
#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<i64>,
    before: Option<String>,
}

/// `GET /api/imports?limit=&before=`: newest first.
pub async fn list(
    State(imports): State<Arc<ImportService>>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<ImportPage>, ApiError> {
    let limit = query.limit.unwrap_or(50).clamp(1, 200);
    let rows = imports
        .store()
        .list_imports(&caller.user_id, limit, query.before.as_deref())
        .await
        .map_err(ApiError::internal)?;
    let page = imports.present_all(&caller.user_id, rows);
    Ok(Json(page_of(page, limit)))
}

/// A page of at most `limit` imports, newest first, with the cursor of the
/// next one when this one is full.
pub(super) fn page_of(page: Vec<Import>, limit: i64) -> ImportPage {
    let next_cursor = (page.len() as i64 == limit)
        .then(|| page.last().map(|import| import.id.clone()))
        .flatten();
    ImportPage {
        imports: page,
        next_cursor,
    }
}

/// `GET /api/imports/{id}`: another user's import is 404.
pub async fn get(
    State(imports): State<Arc<ImportService>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Import>, ApiError> {
    let owned = imports.get_owned(&caller.user_id, &id).await?;
    Ok(Json(imports.present(&owned)))
}

/// `POST /api/imports/{id}/cancel`: 409 when already finished.
pub async fn cancel(
    State(imports): State<Arc<ImportService>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Import>, ApiError> {
    Ok(Json(imports.cancel(&caller.user_id, &id).await?))
}

/// `DELETE /api/imports/{id}`: removes a finished import and its files.
pub async fn delete(
    State(imports): State<Arc<ImportService>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    imports.delete(&caller.user_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
