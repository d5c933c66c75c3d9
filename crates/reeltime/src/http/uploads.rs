//! `/api/uploads`: the tus 1.0.0 protocol (core, creation,
//! creation-with-upload, termination, expiration) over
//! [`Uploads`](crate::imports::uploads::Uploads). Every request but
//! `OPTIONS` carries the same bearer token as the REST API; errors have the
//! REST API's body. docs/protocol.md, "Uploads", is the contract.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{DateTime, Utc};

use super::{ApiError, Caller};
use crate::imports::uploads::{NewUpload, UploadError, UploadStatus, Uploads};

/// The only version spoken.
const TUS_VERSION: &str = "1.0.0";
/// The extensions `OPTIONS` announces.
const TUS_EXTENSIONS: &str = "creation,creation-with-upload,termination,expiration";
/// The body type of a PATCH (and of a creation with upload).
const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");

/// Where an upload lives: its import's id under `/api/uploads/`.
fn location(id: &str) -> String {
    format!("/api/uploads/{id}")
}

/// `OPTIONS /api/uploads` (and `/api/uploads/{id}`): tus discovery, no
/// token needed.
pub async fn options(State(uploads): State<Arc<Uploads>>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
    headers.insert("tus-version", HeaderValue::from_static(TUS_VERSION));
    headers.insert("tus-extension", HeaderValue::from_static(TUS_EXTENSIONS));
    headers.insert(
        "tus-max-size",
        HeaderValue::from(uploads.settings().max_bytes),
    );
    (StatusCode::NO_CONTENT, headers).into_response()
}

/// `POST /api/uploads`: creates the import (`uploading`) and its upload;
/// with an `application/offset+octet-stream` body, stores it too.
pub async fn create(
    State(uploads): State<Arc<Uploads>>,
    headers: HeaderMap,
    caller: Caller,
    body: Body,
) -> Response {
    if let Err(refused) = check_version(&headers) {
        return refused;
    }
    let new = match new_upload(&headers) {
        Ok(new) => new,
        Err(err) => return tus_error(err),
    };
    let import = match uploads.create(&caller.user_id, new).await {
        Ok(import) => import,
        Err(err) => return upload_error(err),
    };
    let mut answer = tus_headers(None);
    if let Ok(value) = HeaderValue::from_str(&location(&import.id)) {
        answer.insert(header::LOCATION, value);
    }
    if content_type(&headers) == Some(OFFSET_OCTET_STREAM) {
        let declared = content_length(&headers);
        let stream = body.into_data_stream();
        let status = uploads
            .append(&caller.user_id, &import.id, 0, declared, stream)
            .await;
        match status {
            Ok(status) => add_status(&mut answer, &status),
            // A creation stands even when its first bytes were cut off:
            // the client resumes from the offset HEAD gives.
            Err(UploadError::Conflict { offset, .. }) => {
                answer.insert(UPLOAD_OFFSET, HeaderValue::from(offset));
            }
            Err(err) => {
                let mut refused = upload_error(err);
                refused.headers_mut().extend(answer);
                return refused;
            }
        }
    } else if let Ok(status) = uploads.status(&caller.user_id, &import.id).await {
        add_status(&mut answer, &status);
    }
    (StatusCode::CREATED, answer).into_response()
}

/// `HEAD /api/uploads/{id}`: the offset the server has, from the store.
pub async fn head(
    State(uploads): State<Arc<Uploads>>,
    headers: HeaderMap,
    caller: Caller,
    Path(id): Path<String>,
) -> Response {
    if let Err(refused) = check_version(&headers) {
        return refused;
    }
    match uploads.status(&caller.user_id, &id).await {
        Ok(status) => {
            let mut answer = tus_headers(Some(&status));
            answer.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            answer.insert(UPLOAD_LENGTH, HeaderValue::from(status.length));
            (StatusCode::OK, answer).into_response()
        }
        Err(err) => upload_error(err),
    }
}

/// `PATCH /api/uploads/{id}`: appends the body at `Upload-Offset`.
pub async fn patch(
    State(uploads): State<Arc<Uploads>>,
    headers: HeaderMap,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    if let Err(refused) = check_version(&headers) {
        return refused;
    }
    if content_type(&headers) != Some(OFFSET_OCTET_STREAM) {
        return tus_error(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("a PATCH body must be Content-Type: {OFFSET_OCTET_STREAM}"),
        ));
    }
    let Some(offset) = number(&headers, &UPLOAD_OFFSET) else {
        return tus_error(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Upload-Offset must be a non-negative integer",
        ));
    };
    let declared = content_length(&headers);
    let stream = body.into_data_stream();
    match uploads
        .append(&caller.user_id, &id, offset, declared, stream)
        .await
    {
        Ok(status) => (StatusCode::NO_CONTENT, tus_headers(Some(&status))).into_response(),
        Err(err) => upload_error(err),
    }
}

/// `DELETE /api/uploads/{id}`: tus termination; the import ends
/// `cancelled` and its bytes are removed.
pub async fn terminate(
    State(uploads): State<Arc<Uploads>>,
    headers: HeaderMap,
    caller: Caller,
    Path(id): Path<String>,
) -> Response {
    if let Err(refused) = check_version(&headers) {
        return refused;
    }
    match uploads.terminate(&caller.user_id, &id).await {
        Ok(()) => (StatusCode::NO_CONTENT, tus_headers(None)).into_response(),
        Err(err) => upload_error(err),
    }
}

/// 412 with the version spoken unless the request speaks it.
#[allow(clippy::result_large_err)]
fn check_version(headers: &HeaderMap) -> Result<(), Response> {
    let given = headers.get(&TUS_RESUMABLE).and_then(|v| v.to_str().ok());
    if given == Some(TUS_VERSION) {
        return Ok(());
    }
    let mut refused = tus_error(ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        "unsupported_version",
        format!("this server speaks tus {TUS_VERSION} (Tus-Resumable: {TUS_VERSION})"),
    ));
    refused
        .headers_mut()
        .insert("tus-version", HeaderValue::from_static(TUS_VERSION));
    Err(refused)
}

/// The new upload a creation's headers describe.
fn new_upload(headers: &HeaderMap) -> Result<NewUpload, ApiError> {
    if headers.contains_key("upload-defer-length") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Upload-Defer-Length is not supported: send Upload-Length",
        ));
    }
    let Some(length) = number(headers, &UPLOAD_LENGTH) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Upload-Length is required (a non-negative integer)",
        ));
    };
    let metadata = match headers.get(&UPLOAD_METADATA) {
        Some(value) => parse_metadata(value.to_str().unwrap_or("\u{0}"))?,
        None => Vec::new(),
    };
    let get = |key: &str| {
        metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, value)| value.clone())
    };
    Ok(NewUpload {
        length,
        file_name: get("filename"),
        file_type: get("filetype"),
        title: get("title"),
    })
}

/// `Upload-Metadata`: `key base64,key base64,...`; a key may have no value.
fn parse_metadata(raw: &str) -> Result<Vec<(String, String)>, ApiError> {
    let bad = |why: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("Upload-Metadata: {why}"),
        )
    };
    let mut pairs = Vec::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut parts = pair.splitn(2, ' ');
        let key = parts.next().unwrap_or_default();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_graphic()) {
            return Err(bad(format!("{key:?} is not a key")));
        }
        let value = match parts.next().map(str::trim) {
            Some(encoded) if !encoded.is_empty() => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|_| bad(format!("the value of {key} is not base64")))?;
                String::from_utf8(decoded)
                    .map_err(|_| bad(format!("the value of {key} is not UTF-8")))?
            }
            _ => String::new(),
        };
        pairs.push((key.to_string(), value));
    }
    Ok(pairs)
}

fn number(headers: &HeaderMap, name: &HeaderName) -> Option<u64> {
    let raw = headers.get(name)?.to_str().ok()?.trim();
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    number(headers, &header::CONTENT_LENGTH)
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_TYPE)?
        .to_str()
        .ok()
        .map(|value| value.split(';').next().unwrap_or_default().trim())
}

/// `Tus-Resumable`, and where the upload stands when there is one.
fn tus_headers(status: Option<&UploadStatus>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
    if let Some(status) = status {
        add_status(&mut headers, status);
    }
    headers
}

fn add_status(headers: &mut HeaderMap, status: &UploadStatus) {
    headers.insert(UPLOAD_OFFSET, HeaderValue::from(status.offset));
    if let Some(expires) = status.expires_at
        && let Ok(value) = HeaderValue::from_str(&http_date(expires))
    {
        headers.insert(UPLOAD_EXPIRES, value);
    }
}

/// RFC 9110's date format, as `Upload-Expires` wants.
fn http_date(at: DateTime<Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// An error answer with `Tus-Resumable`, as tus wants on every response.
fn tus_error(err: ApiError) -> Response {
    let mut response = err.into_response();
    response
        .headers_mut()
        .insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
    response
}

fn upload_error(err: UploadError) -> Response {
    let message = err.to_string();
    let conflict_offset = match &err {
        UploadError::Conflict { offset, .. } => Some(*offset),
        _ => None,
    };
    let api = match err {
        UploadError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
        UploadError::Conflict { .. } => {
            ApiError::new(StatusCode::CONFLICT, "offset_mismatch", message)
        }
        UploadError::TooLarge(_) => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
        }
        UploadError::TooManyUploads { .. } => {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_uploads", message)
        }
        UploadError::NotAVideo => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "not_a_video", message)
        }
        UploadError::Storage => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage_error", message)
        }
        UploadError::Import(err) => ApiError::from(err),
    };
    let mut response = tus_error(api);
    if let Some(offset) = conflict_offset {
        response
            .headers_mut()
            .insert(UPLOAD_OFFSET, HeaderValue::from(offset));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_pairs_are_decoded() {
        let pairs = parse_metadata("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential")
            .unwrap();
        assert_eq!(
            pairs,
            vec![
                ("filename".into(), "world_domination_plan.pdf".into()),
                ("is_confidential".into(), String::new())
            ]
        );
        assert!(parse_metadata("filename !!!").is_err());
    }

    #[test]
    fn expiry_is_an_http_date() {
        let at = DateTime::parse_from_rfc3339("2014-06-25T16:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(http_date(at), "Wed, 25 Jun 2014 16:00:00 GMT");
    }
}
