//! `GET /media/{import_id}/{file}`: a user's media over HTTP, with Range
//! (a `<video>` seeks with it), the right content types, streaming from the
//! media storage (the local disk or S3). The rules (safe names, ranges,
//! types) are in `media::serve`; this is their HTTP answer.

use std::io::SeekFrom;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::ApiError;
use crate::media::serve::{ByteRange, content_type_for, is_safe_component, parse_range};
use crate::media::{LinkError, MediaBody, MediaSigner, MediaStorage, StorageError};

/// Read size when streaming a file: large enough for throughput, small
/// enough that many viewers cost little memory.
const CHUNK: usize = 64 * 1024;

/// Finds the owner (user id) of an import, `None` when there is no such
/// import. The server passes a closure over its store, e.g.
/// `Arc::new(move |id| Box::pin(async move { store.owner_of(&id).await }))`.
pub type OwnerLookup = Arc<dyn Fn(String) -> BoxFuture<'static, Option<String>> + Send + Sync>;

/// What [`media_handler`] needs.
#[derive(Clone)]
pub struct MediaState {
    /// Where the files are: `<import_id>/<file>` on disk or in a bucket.
    pub storage: Arc<dyn MediaStorage>,
    pub signer: Arc<MediaSigner>,
    /// The import's owner, checked against the link's signature.
    pub owner_of: OwnerLookup,
}

/// `GET /media/{import_id}/{file}?exp=...&sig=...`.
///
/// 403 for a missing, wrong, tampered or expired signature, for a link
/// minted for another user, and for an import that no longer exists (no
/// hint whether it ever did); 404 when the file is not there; otherwise the
/// file, with Range support, streamed from the storage (a ranged GET when
/// it is S3, so seeking never fetches the whole video).
pub async fn media_handler(
    State(state): State<MediaState>,
    UrlPath((import_id, file)): UrlPath<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if !is_safe_component(&import_id) || !is_safe_component(&file) {
        return not_found();
    }
    let owner = (state.owner_of)(import_id.clone()).await;
    let checked = match &owner {
        Some(owner) => state
            .signer
            .verify(&import_id, &file, owner, query.as_deref()),
        None => Err(LinkError::Invalid),
    };
    if let Err(err) = checked {
        return ApiError::new(StatusCode::FORBIDDEN, err.code(), err.to_string()).into_response();
    }
    // Only a Range request needs the size first (for `-n` suffixes and for
    // 416); a plain request learns it from the open itself.
    let range = match range_header(&headers) {
        None => None,
        Some(value) => {
            let len = match state.storage.size(&import_id, &file).await {
                Ok(len) => len,
                Err(err) => return storage_error(err),
            };
            match parse_range(value, len) {
                ByteRange::Full => None,
                ByteRange::Partial { start, end } => Some((start, end)),
                ByteRange::Unsatisfiable => return unsatisfiable(len),
            }
        }
    };
    match state.storage.open(&import_id, &file, range).await {
        Ok(media) => media_response(Path::new(&file), range.is_some(), media),
        Err(err) => storage_error(err),
    }
}

fn range_header(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
}

fn not_found() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such media file").into_response()
}

/// The HTTP answer to a storage failure. An unreachable object store is a
/// 503 (try again), not a 500: nothing is wrong with the request or with
/// this node.
fn storage_error(err: StorageError) -> Response {
    match err {
        StorageError::NotFound | StorageError::InvalidName => not_found(),
        StorageError::RangeNotSatisfiable { len } => unsatisfiable(len),
        StorageError::Object(err) => {
            tracing::warn!(error = %err, "media storage failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "the media storage is not answering; try again shortly",
            )
            .into_response()
        }
        other => ApiError::internal(other).into_response(),
    }
}

/// Streams a file with `Accept-Ranges: bytes`: 200 with the whole file, 206
/// with `Content-Range` for a satisfiable single range, 416 otherwise. A
/// multi-range or malformed `Range` is ignored (the whole file), as HTTP
/// allows. Never reads the whole file into memory. For a file at a known
/// path; [`media_handler`] goes through the [`MediaStorage`] instead.
pub async fn serve_file(path_on_disk: &Path, headers: &HeaderMap) -> Response {
    let mut file = match tokio::fs::File::open(path_on_disk).await {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return not_found(),
        Err(err) => return ApiError::internal(err).into_response(),
    };
    let len = match file.metadata().await {
        Ok(meta) if meta.is_file() => meta.len(),
        Ok(_) => return not_found(),
        Err(err) => return ApiError::internal(err).into_response(),
    };
    let range = range_header(headers).map_or(ByteRange::Full, |value| parse_range(value, len));
    let (partial, start, count) = match range {
        ByteRange::Full => (false, 0, len),
        ByteRange::Partial { start, end } => (true, start, end - start + 1),
        ByteRange::Unsatisfiable => return unsatisfiable(len),
    };
    if let Err(err) = file.seek(SeekFrom::Start(start)).await {
        return ApiError::internal(err).into_response();
    }
    let media = MediaBody {
        total_len: len,
        start,
        len: count,
        body: ReaderStream::with_capacity(file.take(count), CHUNK).boxed(),
    };
    media_response(path_on_disk, partial, media)
}

/// 200 (whole) or 206 (`partial`) with the body of `media`, typed by the
/// extension of `name`.
fn media_response(name: &Path, partial: bool, media: MediaBody) -> Response {
    let status = if partial {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let MediaBody {
        total_len,
        start,
        len,
        body,
    } = media;
    let mut response = (status, Body::from_stream(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type_for(name)),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    common_headers(headers);
    if partial
        && len > 0
        && let Ok(value) =
            HeaderValue::from_str(&format!("bytes {start}-{}/{total_len}", start + len - 1))
    {
        headers.insert(header::CONTENT_RANGE, value);
    }
    response
}

/// 416 with the size, so the client can ask again.
fn unsatisfiable(len: u64) -> Response {
    let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&format!("bytes */{len}")) {
        headers.insert(header::CONTENT_RANGE, value);
    }
    common_headers(headers);
    response
}

fn common_headers(headers: &mut HeaderMap) {
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // The links are personal: no shared cache may keep the bytes.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(response: Response) -> Vec<u8> {
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec()
    }

    fn range(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[tokio::test]
    async fn serves_whole_files_and_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("video.mp4");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();

        let whole = serve_file(&path, &HeaderMap::new()).await;
        assert_eq!(whole.status(), StatusCode::OK);
        assert_eq!(whole.headers()[header::CONTENT_TYPE], "video/mp4");
        assert_eq!(whole.headers()[header::ACCEPT_RANGES], "bytes");
        assert_eq!(whole.headers()[header::CONTENT_LENGTH], "200000");
        assert_eq!(body_of(whole).await, data);

        let part = serve_file(&path, &range("bytes=100-199")).await;
        assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            part.headers()[header::CONTENT_RANGE],
            "bytes 100-199/200000"
        );
        assert_eq!(part.headers()[header::CONTENT_LENGTH], "100");
        assert_eq!(body_of(part).await, &data[100..200]);

        let tail = serve_file(&path, &range("bytes=-10")).await;
        assert_eq!(
            tail.headers()[header::CONTENT_RANGE],
            "bytes 199990-199999/200000"
        );
        assert_eq!(body_of(tail).await, &data[199_990..]);

        let open = serve_file(&path, &range("bytes=150000-")).await;
        assert_eq!(body_of(open).await, &data[150_000..]);

        let beyond = serve_file(&path, &range("bytes=200000-")).await;
        assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(beyond.headers()[header::CONTENT_RANGE], "bytes */200000");

        let missing = serve_file(&dir.path().join("nope.mp4"), &HeaderMap::new()).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }

    fn state(root: &Path, owner: Option<&'static str>) -> MediaState {
        MediaState {
            storage: Arc::new(crate::media::LocalStorage::new(root.to_path_buf())),
            signer: Arc::new(MediaSigner::from_secret(&[7; 32])),
            owner_of: Arc::new(move |_id| Box::pin(async move { owner.map(String::from) })),
        }
    }

    async fn get(state: &MediaState, link: &str, headers: HeaderMap) -> Response {
        let (path, query) = link.split_once('?').unwrap_or((link, ""));
        let mut parts = path.trim_start_matches("/media/").splitn(2, '/');
        let import_id = parts.next().unwrap_or_default().to_string();
        let file = parts.next().unwrap_or_default().to_string();
        media_handler(
            State(state.clone()),
            UrlPath((import_id, file)),
            RawQuery(Some(query.to_string())),
            headers,
        )
        .await
    }

    #[tokio::test]
    async fn the_handler_checks_the_link_against_the_owner() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("imp1")).unwrap();
        std::fs::write(root.path().join("imp1/poster.jpg"), b"\xFF\xD8jpeg").unwrap();
        let alices = state(root.path(), Some("alice"));
        let ttl = std::time::Duration::from_secs(60);
        let link = alices.signer.sign("imp1", "poster.jpg", "alice", ttl);

        let ok = get(&alices, &link, HeaderMap::new()).await;
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[header::CONTENT_TYPE], "image/jpeg");

        let ranged = get(&alices, &link, range("bytes=0-1")).await;
        assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(body_of(ranged).await, b"\xFF\xD8");

        // The same link when the import belongs to Bob, or is gone.
        let bobs = state(root.path(), Some("bob"));
        assert_eq!(
            get(&bobs, &link, HeaderMap::new()).await.status(),
            StatusCode::FORBIDDEN
        );
        let gone = state(root.path(), None);
        assert_eq!(
            get(&gone, &link, HeaderMap::new()).await.status(),
            StatusCode::FORBIDDEN
        );

        let unsigned = link.split('?').next().unwrap_or_default().to_string();
        let refused = get(&alices, &unsigned, HeaderMap::new()).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        let body: serde_json::Value = serde_json::from_slice(&body_of(refused).await).unwrap();
        assert_eq!(body["error"]["code"], "link_missing");

        let expired = alices.signer.sign_until("imp1", "poster.jpg", "alice", 1);
        let refused = get(&alices, &expired, HeaderMap::new()).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        let body: serde_json::Value = serde_json::from_slice(&body_of(refused).await).unwrap();
        assert_eq!(body["error"]["code"], "link_expired");

        let absent = alices.signer.sign("imp1", "video.mp4", "alice", ttl);
        assert_eq!(
            get(&alices, &absent, HeaderMap::new()).await.status(),
            StatusCode::NOT_FOUND
        );
        let sneaky = alices.signer.sign("imp1", "..", "alice", ttl);
        assert_eq!(
            get(&alices, &sneaky, HeaderMap::new()).await.status(),
            StatusCode::NOT_FOUND
        );
    }
}
