//! Serves media files: HTTP Range (a `<video>` seeks with it), the right
//! content types, streaming from the media storage (the local disk or S3),
//! and never a path outside the media directory.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::links::{LinkError, MediaSigner};
use super::storage::{MediaBody, MediaStorage, StorageError};
use crate::http::ApiError;

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

/// `<media_root>/<import_id>/<file>` when it is a regular file inside the
/// media root, `None` otherwise.
///
/// Both names must be plain (see [`is_safe_component`]): no `..`, no
/// separators, no absolute paths. The result is canonicalized and must
/// still be under the canonical root, so a symlink cannot lead out of it.
/// Blocking (filesystem calls): run it off the async threads.
pub fn resolve_media_path(media_root: &Path, import_id: &str, file: &str) -> Option<PathBuf> {
    if !is_safe_component(import_id) || !is_safe_component(file) {
        return None;
    }
    let root = std::fs::canonicalize(media_root).ok()?;
    let path = std::fs::canonicalize(root.join(import_id).join(file)).ok()?;
    let inside = path.starts_with(&root);
    let is_file = std::fs::metadata(&path).is_ok_and(|meta| meta.is_file());
    (inside && is_file).then_some(path)
}

/// Whether a name can be one path segment under the media root: ASCII
/// letters, digits, `-`, `_` and `.`, not starting with a dot (no `..`, no
/// hidden or partial files), at most 128 bytes. Import ids are UUIDs and
/// file names are the server's own, so nothing real is refused.
pub fn is_safe_component(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
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

/// What a `Range` header asks of a file of a given length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// No usable range: send the whole file (200).
    Full,
    /// Bytes `start..=end`, both inside the file (206).
    Partial { start: u64, end: u64 },
    /// A well-formed range that misses the file entirely (416).
    Unsatisfiable,
}

/// Reads one `bytes=` range: `a-b`, `a-` or `-n` (the last n bytes). An end
/// past the file is cut to the file, as HTTP says.
pub fn parse_range(value: &str, len: u64) -> ByteRange {
    let Some(spec) = strip_prefix_ignore_case(value.trim(), "bytes=") else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Full;
    };
    match (number(first), number(last)) {
        (Some(start), end) if last.is_empty() || end.is_some() => {
            let end = end.unwrap_or(u64::MAX);
            if start > end {
                ByteRange::Full // malformed: ignore it
            } else if start >= len {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Partial {
                    start,
                    end: end.min(len - 1),
                }
            }
        }
        (None, Some(suffix)) if first.is_empty() => {
            if suffix == 0 || len == 0 {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Partial {
                    start: len.saturating_sub(suffix),
                    end: len - 1,
                }
            }
        }
        _ => ByteRange::Full,
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Digits only: `u64::from_str` would also take a `+`.
fn number(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The content type for a media file, by extension.
pub fn content_type_for(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|ext| ext.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    match ext.as_str() {
        "mp4" | "m4v" => "video/mp4",
        "mov" => "video/quicktime",
        "webm" => "video/webm",
        "mkv" => "video/x-matroska",
        "avi" => "video/x-msvideo",
        "ts" | "m2ts" => "video/mp2t",
        "flv" => "video/x-flv",
        "ogv" => "video/ogg",
        "3gp" => "video/3gpp",
        "mpg" | "mpeg" | "m2v" => "video/mpeg",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_ranges() {
        let partial = |start, end| ByteRange::Partial { start, end };
        assert_eq!(parse_range("bytes=0-99", 1000), partial(0, 99));
        assert_eq!(parse_range("bytes=500-", 1000), partial(500, 999));
        assert_eq!(parse_range("bytes=-100", 1000), partial(900, 999));
        assert_eq!(parse_range("bytes=900-5000", 1000), partial(900, 999));
        assert_eq!(parse_range("bytes=-5000", 1000), partial(0, 999));
        assert_eq!(parse_range("Bytes= 10-19", 1000), partial(10, 19));
        assert_eq!(parse_range("bytes=999-999", 1000), partial(999, 999));
    }

    #[test]
    fn unsatisfiable_ranges() {
        assert_eq!(parse_range("bytes=1000-", 1000), ByteRange::Unsatisfiable);
        assert_eq!(
            parse_range("bytes=1000-1001", 1000),
            ByteRange::Unsatisfiable
        );
        assert_eq!(parse_range("bytes=-0", 1000), ByteRange::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), ByteRange::Unsatisfiable);
        assert_eq!(parse_range("bytes=-5", 0), ByteRange::Unsatisfiable);
    }

    #[test]
    fn malformed_or_multiple_ranges_mean_the_whole_file() {
        for value in [
            "bytes=5-1",
            "bytes=0-1,5-9",
            "items=0-1",
            "bytes=",
            "bytes=-",
            "bytes=abc-",
            "bytes=+1-2",
            "bytes=1-2-3",
            "bytes=0x10-",
            "",
        ] {
            assert_eq!(parse_range(value, 1000), ByteRange::Full, "{value:?}");
        }
    }

    #[test]
    fn safe_components() {
        for good in [
            "0190c3d2-7e1f-7cc4-a8b1-5b4c5d6e7f80",
            "video.mp4",
            "poster.jpg",
            "a_b",
        ] {
            assert!(is_safe_component(good), "{good}");
        }
        for bad in [
            "", ".", "..", ".secret", "a/b", "a\\b", "/etc", "a\0b", "a\nb", "a b", "%2e%2e", "é",
        ] {
            assert!(!is_safe_component(bad), "{bad:?}");
        }
        assert!(!is_safe_component(&"a".repeat(129)));
    }

    #[test]
    fn resolves_only_files_inside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.txt"), b"secret").unwrap();
        let root = tempfile::tempdir().unwrap();
        let import = root.path().join("imp1");
        std::fs::create_dir(&import).unwrap();
        std::fs::write(import.join("video.mp4"), b"video").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.txt"), import.join("escape.mp4"))
            .unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("linked")).unwrap();
        std::os::unix::fs::symlink(import.join("video.mp4"), import.join("alias.mp4")).unwrap();

        let resolved = resolve_media_path(root.path(), "imp1", "video.mp4").unwrap();
        assert!(resolved.ends_with("imp1/video.mp4"));
        assert!(
            resolve_media_path(root.path(), "imp1", "alias.mp4").is_some(),
            "inside link"
        );
        assert_eq!(resolve_media_path(root.path(), "imp1", "escape.mp4"), None);
        assert_eq!(
            resolve_media_path(root.path(), "linked", "secret.txt"),
            None
        );
        assert_eq!(resolve_media_path(root.path(), "..", "secret.txt"), None);
        assert_eq!(
            resolve_media_path(root.path(), "imp1", "../imp1/video.mp4"),
            None
        );
        assert_eq!(resolve_media_path(root.path(), "imp1", "/etc/passwd"), None);
        assert_eq!(resolve_media_path(root.path(), "imp1", "missing.mp4"), None);
        assert_eq!(resolve_media_path(root.path(), "imp1", "."), None);
        assert_eq!(
            resolve_media_path(root.path(), "imp1", ""),
            None,
            "a directory"
        );
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type_for(Path::new("a/video.mp4")), "video/mp4");
        assert_eq!(content_type_for(Path::new("poster.JPG")), "image/jpeg");
        assert_eq!(content_type_for(Path::new("x.mov")), "video/quicktime");
        assert_eq!(content_type_for(Path::new("x.webm")), "video/webm");
        assert_eq!(content_type_for(Path::new("x.mkv")), "video/x-matroska");
        assert_eq!(
            content_type_for(Path::new("noext")),
            "application/octet-stream"
        );
    }

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
