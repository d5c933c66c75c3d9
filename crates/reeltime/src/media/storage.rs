//! Where finished media lives: the node's own disk, or S3-compatible object
//! storage shared by every node.
//!
//! One node downloads and processes an import in its local import
//! directory; with several nodes behind a load balancer, the request for
//! the video can land on any of them. [`MediaStorage`] is what lets every
//! node serve every import: [`LocalStorage`] keeps today's layout
//! (`<data dir>/imports/<import_id>/<file>`, one node), [`ObjectStorage`]
//! keeps `<prefix>/<import_id>/<file>` in a bucket (`REELTIME_MEDIA_URL=
//! s3://bucket/prefix`).
//!
//! Both refuse the same names ([`is_safe_component`]): an import id or a
//! file name is one plain path segment, so no request can reach outside an
//! import's own files, on disk or in the bucket.

use std::fmt;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, Attributes, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt,
    RetryConfig,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use super::serve::{content_type_for, is_safe_component, resolve_media_path};

/// Read size when streaming from disk: large enough for throughput, small
/// enough that many viewers cost little memory.
const CHUNK: usize = 64 * 1024;

/// Size of one part of a multipart upload, and the most a single upload
/// holds in memory per part. Files up to this size go up in one `PUT`.
/// S3 wants parts of at least 5 MiB (except the last).
pub const UPLOAD_PART_SIZE: usize = 8 * 1024 * 1024;

/// Parts of one file in flight at once: bounds an upload's memory to
/// about this many parts, while still overlapping requests.
const UPLOAD_CONCURRENCY: usize = 2;

/// How long a connection to the object store may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the object store may stay silent while we wait for bytes.
/// There is deliberately no timeout on a whole request: a viewer on a slow
/// link streams a large video for longer than any fixed limit.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Retries of a failed request, and the time they may take together. Fewer
/// than the crate's default (10 over up to 3 minutes): a viewer waiting for
/// a video is better told at once that the storage is down, and a failed
/// upload fails the import, which can be retried.
const MAX_RETRIES: usize = 4;
const RETRY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The import id or file name is not one plain path segment.
    #[error("not a valid media file name")]
    InvalidName,
    /// No such file (or import).
    #[error("no such media file")]
    NotFound,
    /// The range starts at or past the end of the file (or ends before it
    /// starts); `len` is the file's size, for `Content-Range: bytes */len`.
    #[error("the range is outside the file ({len} bytes)")]
    RangeNotSatisfiable { len: u64 },
    /// A local file could not be read or written.
    #[error("media storage: {0}")]
    Io(#[from] std::io::Error),
    /// The object store failed or could not be reached.
    #[error("object storage: {0}")]
    Object(object_store::Error),
    /// `REELTIME_MEDIA_URL` or the S3 settings are unusable.
    #[error("bad setting {setting}: {message}")]
    Config {
        setting: &'static str,
        message: String,
    },
}

impl From<object_store::Error> for StorageError {
    fn from(err: object_store::Error) -> StorageError {
        match err {
            object_store::Error::NotFound { .. } => StorageError::NotFound,
            other => StorageError::Object(other),
        }
    }
}

/// An opened media file: its size and the requested bytes as a stream.
pub struct MediaBody {
    /// Size of the whole file.
    pub total_len: u64,
    /// Offset of the first byte in `body`.
    pub start: u64,
    /// Number of bytes in `body`.
    pub len: u64,
    /// The bytes, read as the consumer asks for them (never all in memory).
    pub body: BoxStream<'static, std::io::Result<Bytes>>,
}

impl fmt::Debug for MediaBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaBody")
            .field("total_len", &self.total_len)
            .field("start", &self.start)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl MediaBody {
    /// Reads the whole body into memory (tests and small files only).
    pub async fn bytes(self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(usize::try_from(self.len).unwrap_or(0));
        let mut body = self.body;
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }
}

/// Where the finished files of imports are kept and served from.
///
/// Names are `import_id` (a UUID) and `file_name` (the server's own, like
/// `video.mp4` or `poster.jpg`); anything that is not one plain path
/// segment is refused with [`StorageError::InvalidName`].
#[async_trait]
pub trait MediaStorage: Send + Sync + fmt::Debug {
    /// True when files live off this node: after [`MediaStorage::put_file`]
    /// the local copies can (and should) be removed.
    fn is_remote(&self) -> bool;

    /// Stores the finished file at `local_path` as `<import_id>/<file_name>`.
    /// Streams it: a multi-gigabyte video is never held in memory. Local
    /// storage does nothing when the file is already in place.
    async fn put_file(
        &self,
        import_id: &str,
        file_name: &str,
        local_path: &Path,
    ) -> Result<(), StorageError>;

    /// Opens a file for serving, whole (`None`) or bytes `first..=last`
    /// (`Some((first, last))`, as in an HTTP `Range`; a `last` past the end
    /// is cut to the end). A `first` at or past the end is
    /// [`StorageError::RangeNotSatisfiable`].
    async fn open(
        &self,
        import_id: &str,
        file_name: &str,
        range: Option<(u64, u64)>,
    ) -> Result<MediaBody, StorageError>;

    /// Size of a file in bytes.
    async fn size(&self, import_id: &str, file_name: &str) -> Result<u64, StorageError>;

    /// Removes every file of an import. Nothing there is not an error.
    async fn delete_import(&self, import_id: &str) -> Result<(), StorageError>;
}

/// Builds the storage the settings ask for: [`ObjectStorage`] when
/// `media_url` (`REELTIME_MEDIA_URL`) is set, reading the AWS settings from
/// the environment, else [`LocalStorage`] at `local_root`.
pub fn from_settings(
    media_url: Option<&str>,
    endpoint: Option<&str>,
    local_root: PathBuf,
) -> Result<Arc<dyn MediaStorage>, StorageError> {
    Ok(match media_url {
        Some(url) => Arc::new(ObjectStorage::from_env(url, endpoint)?),
        None => Arc::new(LocalStorage::new(local_root)),
    })
}

/// Puts the finished `files` of an import from `local_dir` into `storage`;
/// when the storage is remote, then removes those local copies (and the
/// directory, if that leaves it empty). Call it before marking the import
/// completed, so that its links work the moment a client sees them.
///
/// On failure nothing local is removed (a retry can upload again); some
/// files may already be in the storage: [`MediaStorage::delete_import`]
/// cleans them up.
pub async fn publish_import(
    storage: &dyn MediaStorage,
    import_id: &str,
    local_dir: &Path,
    files: &[&str],
) -> Result<(), StorageError> {
    for file in files {
        storage
            .put_file(import_id, file, &local_dir.join(file))
            .await?;
    }
    if storage.is_remote() {
        for file in files {
            let path = local_dir.join(file);
            if let Err(err) = tokio::fs::remove_file(&path).await
                && err.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %err, "could not remove an uploaded file");
            }
        }
        // Only succeeds when empty: anything else there is not ours to drop.
        let _ = tokio::fs::remove_dir(local_dir).await;
    }
    Ok(())
}

/// `(start, len)` of `range` in a file of `total` bytes.
fn clip(range: Option<(u64, u64)>, total: u64) -> Result<(u64, u64), StorageError> {
    match range {
        None => Ok((0, total)),
        Some((first, last)) if first > last || first >= total => {
            Err(StorageError::RangeNotSatisfiable { len: total })
        }
        Some((first, last)) => Ok((first, last.min(total - 1) - first + 1)),
    }
}

fn check_names(import_id: &str, file_name: &str) -> Result<(), StorageError> {
    if is_safe_component(import_id) && is_safe_component(file_name) {
        Ok(())
    } else {
        Err(StorageError::InvalidName)
    }
}

/// Files on this node's disk: `<root>/<import_id>/<file>`, where the runner
/// already writes them. The default; one node only.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// Storage under `root` (the server uses `<data dir>/imports`).
    pub fn new(root: PathBuf) -> LocalStorage {
        LocalStorage { root }
    }

    /// The directory holding the imports.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file's real path, when it is a regular file inside the root
    /// (symlinks out of it are refused, see [`resolve_media_path`]).
    async fn resolve(&self, import_id: &str, file_name: &str) -> Result<PathBuf, StorageError> {
        check_names(import_id, file_name)?;
        let root = self.root.clone();
        let (import_id, file_name) = (import_id.to_string(), file_name.to_string());
        tokio::task::spawn_blocking(move || resolve_media_path(&root, &import_id, &file_name))
            .await
            .map_err(std::io::Error::other)?
            .ok_or(StorageError::NotFound)
    }
}

#[async_trait]
impl MediaStorage for LocalStorage {
    fn is_remote(&self) -> bool {
        false
    }

    async fn put_file(
        &self,
        import_id: &str,
        file_name: &str,
        local_path: &Path,
    ) -> Result<(), StorageError> {
        check_names(import_id, file_name)?;
        let dir = self.root.join(import_id);
        let target = dir.join(file_name);
        let source = tokio::fs::canonicalize(local_path)
            .await
            .map_err(not_found_or_io)?;
        if tokio::fs::canonicalize(&target)
            .await
            .is_ok_and(|existing| existing == source)
        {
            return Ok(()); // the runner wrote it in place: the usual case
        }
        tokio::fs::create_dir_all(&dir).await?;
        // Copy under a hidden name (never served), then rename into place,
        // so a reader never sees half a file.
        let partial = dir.join(format!(".{file_name}.part"));
        if let Err(err) = tokio::fs::copy(&source, &partial).await {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(err.into());
        }
        tokio::fs::rename(&partial, &target).await?;
        Ok(())
    }

    async fn open(
        &self,
        import_id: &str,
        file_name: &str,
        range: Option<(u64, u64)>,
    ) -> Result<MediaBody, StorageError> {
        let path = self.resolve(import_id, file_name).await?;
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(not_found_or_io)?;
        let total_len = file.metadata().await?.len();
        let (start, len) = clip(range, total_len)?;
        file.seek(SeekFrom::Start(start)).await?;
        Ok(MediaBody {
            total_len,
            start,
            len,
            body: ReaderStream::with_capacity(file.take(len), CHUNK).boxed(),
        })
    }

    async fn size(&self, import_id: &str, file_name: &str) -> Result<u64, StorageError> {
        let path = self.resolve(import_id, file_name).await?;
        Ok(tokio::fs::metadata(&path)
            .await
            .map_err(not_found_or_io)?
            .len())
    }

    async fn delete_import(&self, import_id: &str) -> Result<(), StorageError> {
        if !is_safe_component(import_id) {
            return Err(StorageError::InvalidName);
        }
        // A symlink in place of the directory is removed, not followed.
        match tokio::fs::remove_dir_all(self.root.join(import_id)).await {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err.into()),
            _ => Ok(()),
        }
    }
}

fn not_found_or_io(err: std::io::Error) -> StorageError {
    if err.kind() == std::io::ErrorKind::NotFound {
        StorageError::NotFound
    } else {
        StorageError::Io(err)
    }
}

/// Files in an S3-compatible bucket, `<prefix>/<import_id>/<file>`: every
/// node reads and writes the same objects, so any node serves any import.
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// `s3://bucket/prefix`, for logs (never the credentials).
    url: String,
}

impl fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The store's own Debug would print the credentials.
        f.debug_struct("ObjectStorage")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Environment variables naming the endpoint, strongest first; the
/// builder's own handling of them is bypassed so that one precedence
/// order holds and `allow_http` can follow the chosen one.
const ENDPOINT_VARIABLES: [&str; 3] = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"];

impl ObjectStorage {
    /// `url` is `s3://bucket` or `s3://bucket/prefix`; credentials and
    /// region come from the usual `AWS_*` environment variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
    /// `AWS_REGION` or `AWS_DEFAULT_REGION`, ...). `endpoint`
    /// (`REELTIME_S3_ENDPOINT`) overrides `AWS_ENDPOINT_URL` for other
    /// S3-compatible servers (MinIO, Ceph, R2, moto); plain `http://` is
    /// allowed when the endpoint says so.
    pub fn from_env(url: &str, endpoint: Option<&str>) -> Result<ObjectStorage, StorageError> {
        ObjectStorage::new(url, endpoint, std::env::vars())
    }

    /// As [`ObjectStorage::from_env`], with the `AWS_*` variables taken
    /// from `env` instead of the process environment (tests, or settings
    /// from elsewhere). Variables that are not `AWS_*` are ignored.
    pub fn new(
        url: &str,
        endpoint: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<ObjectStorage, StorageError> {
        let bad_url = |message: String| StorageError::Config {
            setting: "REELTIME_MEDIA_URL",
            message,
        };
        let (bucket, prefix) = parse_media_url(url).map_err(bad_url)?;

        let env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(key, value)| key.starts_with("AWS_") && !value.trim().is_empty())
            .collect();
        let endpoint = endpoint
            .map(str::trim)
            .filter(|endpoint| !endpoint.is_empty())
            .map(String::from)
            .or_else(|| {
                ENDPOINT_VARIABLES.iter().find_map(|name| {
                    env.iter()
                        .find(|(key, _)| key == name)
                        .map(|(_, value)| value.trim().to_string())
                })
            });

        // Client options first: `with_client_options` replaces them whole,
        // and the `AWS_*` settings below may refine them.
        let mut builder = AmazonS3Builder::new()
            .with_client_options(
                ClientOptions::new()
                    .with_timeout_disabled()
                    .with_connect_timeout(CONNECT_TIMEOUT)
                    .with_read_timeout(READ_TIMEOUT),
            )
            .with_retry(RetryConfig {
                max_retries: MAX_RETRIES,
                retry_timeout: RETRY_TIMEOUT,
                ..RetryConfig::default()
            });
        for (key, value) in &env {
            if ENDPOINT_VARIABLES.contains(&key.as_str()) {
                continue;
            }
            if let Ok(config) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                builder = builder.with_config(config, value);
            }
        }
        if let Some(endpoint) = &endpoint {
            let parsed = url::Url::parse(endpoint).map_err(|err| StorageError::Config {
                setting: "REELTIME_S3_ENDPOINT",
                message: format!("{endpoint:?} is not a URL: {err}"),
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(StorageError::Config {
                    setting: "REELTIME_S3_ENDPOINT",
                    message: format!("{endpoint:?} must be http:// or https://"),
                });
            }
            builder = builder.with_endpoint(endpoint.trim_end_matches('/'));
            if parsed.scheme() == "http" {
                builder = builder.with_allow_http(true);
            }
        }
        let store = builder
            .with_bucket_name(&bucket)
            .build()
            .map_err(|err| bad_url(err.to_string()))?;
        Ok(ObjectStorage {
            store: Arc::new(store),
            prefix,
            url: url.to_string(),
        })
    }

    /// A storage over any [`ObjectStore`] (another backend, or tests).
    pub fn with_store(store: Arc<dyn ObjectStore>, prefix: &str) -> ObjectStorage {
        ObjectStorage {
            store,
            prefix: ObjectPath::from(prefix),
            url: format!("object store, prefix {prefix:?}"),
        }
    }

    /// `s3://bucket/prefix` as configured.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn location(&self, import_id: &str, file_name: &str) -> Result<ObjectPath, StorageError> {
        check_names(import_id, file_name)?;
        Ok(self.prefix.clone().join(import_id).join(file_name))
    }

    /// Why a ranged GET failed: past the end, or something else.
    async fn explain_range_failure(
        &self,
        location: &ObjectPath,
        first: u64,
        last: u64,
        err: object_store::Error,
    ) -> StorageError {
        match self.store.head(location).await {
            Ok(meta) if first > last || first >= meta.size => {
                StorageError::RangeNotSatisfiable { len: meta.size }
            }
            Ok(_) => err.into(),
            Err(head_err) => head_err.into(),
        }
    }
}

/// `(bucket, prefix)` of `s3://bucket/prefix`.
fn parse_media_url(raw: &str) -> Result<(String, ObjectPath), String> {
    let url = url::Url::parse(raw.trim())
        .map_err(|err| format!("{raw:?} is not a URL like s3://bucket/prefix: {err}"))?;
    if url.scheme() != "s3" {
        return Err(format!(
            "{raw:?}: only s3://bucket/prefix is supported (any S3-compatible server, with REELTIME_S3_ENDPOINT)"
        ));
    }
    let bucket = url.host_str().unwrap_or_default().to_string();
    if bucket.is_empty() {
        return Err(format!("{raw:?} names no bucket: use s3://bucket/prefix"));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(format!(
            "{raw:?}: no credentials, query or fragment in the URL (credentials go in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        ));
    }
    let mut prefix = ObjectPath::default();
    for segment in url.path().split('/').filter(|segment| !segment.is_empty()) {
        if !is_safe_component(segment) {
            return Err(format!(
                "{raw:?}: prefix segment {segment:?} must be letters, digits, '-', '_' or '.'"
            ));
        }
        prefix = prefix.join(segment);
    }
    Ok((bucket, prefix))
}

#[async_trait]
impl MediaStorage for ObjectStorage {
    fn is_remote(&self) -> bool {
        true
    }

    async fn put_file(
        &self,
        import_id: &str,
        file_name: &str,
        local_path: &Path,
    ) -> Result<(), StorageError> {
        let location = self.location(import_id, file_name)?;
        let mut file = tokio::fs::File::open(local_path)
            .await
            .map_err(not_found_or_io)?;
        // One PUT up to a part's size, a multipart upload beyond it; the
        // content type lets anything else that reads the bucket serve it.
        let content_type = content_type_for(Path::new(file_name));
        let mut writer =
            BufWriter::with_capacity(Arc::clone(&self.store), location, UPLOAD_PART_SIZE)
                .with_max_concurrency(UPLOAD_CONCURRENCY)
                .with_attributes(Attributes::from_iter([(
                    Attribute::ContentType,
                    content_type,
                )]));
        let written = match tokio::io::copy(&mut file, &mut writer).await {
            Ok(_) => writer.shutdown().await,
            Err(err) => Err(err),
        };
        if let Err(err) = written {
            // Drops the parts already sent: an unfinished multipart upload
            // costs storage until it is aborted.
            if let Err(abort) = writer.abort().await {
                tracing::warn!(error = %abort, "could not abort a failed upload");
            }
            return Err(err.into());
        }
        Ok(())
    }

    async fn open(
        &self,
        import_id: &str,
        file_name: &str,
        range: Option<(u64, u64)>,
    ) -> Result<MediaBody, StorageError> {
        let location = self.location(import_id, file_name)?;
        let get_range = match range {
            None => None,
            Some((first, last)) if first > last => {
                let len = self.store.head(&location).await?.size;
                return Err(StorageError::RangeNotSatisfiable { len });
            }
            Some((first, u64::MAX)) => Some(GetRange::Offset(first)),
            Some((first, last)) => Some(GetRange::Bounded(first..last + 1)),
        };
        let options = GetOptions {
            range: get_range,
            ..GetOptions::default()
        };
        let result = match self.store.get_opts(&location, options).await {
            Ok(result) => result,
            Err(err @ object_store::Error::NotFound { .. }) => return Err(err.into()),
            Err(err) => {
                return Err(match range {
                    Some((first, last)) => {
                        self.explain_range_failure(&location, first, last, err)
                            .await
                    }
                    None => err.into(),
                });
            }
        };
        let total_len = result.meta.size;
        let start = result.range.start;
        let len = result.range.end.saturating_sub(start);
        Ok(MediaBody {
            total_len,
            start,
            len,
            body: result.into_stream().map_err(std::io::Error::other).boxed(),
        })
    }

    async fn size(&self, import_id: &str, file_name: &str) -> Result<u64, StorageError> {
        let location = self.location(import_id, file_name)?;
        Ok(self.store.head(&location).await?.size)
    }

    async fn delete_import(&self, import_id: &str) -> Result<(), StorageError> {
        if !is_safe_component(import_id) {
            return Err(StorageError::InvalidName);
        }
        // Listing is by whole segments: `<id>/` never matches `<id>0/...`.
        let dir = self.prefix.clone().join(import_id);
        let locations = self
            .store
            .list(Some(&dir))
            .map_ok(|meta| meta.location)
            .boxed();
        let mut deleted = self.store.delete_stream(locations);
        while let Some(outcome) = deleted.next().await {
            match outcome {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_urls() {
        let (bucket, prefix) = parse_media_url("s3://media/reeltime/prod").unwrap();
        assert_eq!(bucket, "media");
        assert_eq!(prefix.as_ref(), "reeltime/prod");
        let (bucket, prefix) = parse_media_url("s3://media").unwrap();
        assert_eq!(bucket, "media");
        assert_eq!(prefix.as_ref(), "");
        let (_, prefix) = parse_media_url("s3://media/a//b/").unwrap();
        assert_eq!(prefix.as_ref(), "a/b");
        // URL parsing resolves dot segments before they can mean anything.
        let (_, prefix) = parse_media_url("s3://media/a/../b").unwrap();
        assert_eq!(prefix.as_ref(), "b");
        for bad in [
            "http://media/x",
            "s3:///x",
            "s3://media/a%2Fb",
            "s3://media/.hidden/x",
            "s3://media/x?versionId=1",
            "s3://key:secret@media/x",
            "media/x",
        ] {
            assert!(parse_media_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges_are_clipped_to_the_file() {
        assert_eq!(clip(None, 10).unwrap(), (0, 10));
        assert_eq!(clip(Some((0, 9)), 10).unwrap(), (0, 10));
        assert_eq!(clip(Some((5, 100)), 10).unwrap(), (5, 5));
        assert_eq!(clip(Some((9, u64::MAX)), 10).unwrap(), (9, 1));
        for bad in [(10, 10), (11, 20), (5, 4)] {
            assert!(matches!(
                clip(Some(bad), 10),
                Err(StorageError::RangeNotSatisfiable { len: 10 })
            ));
        }
        assert!(matches!(
            clip(Some((0, 0)), 0),
            Err(StorageError::RangeNotSatisfiable { len: 0 })
        ));
    }

    #[test]
    fn settings_are_checked_without_network() {
        let env = || {
            vec![
                ("AWS_ACCESS_KEY_ID".to_string(), "test".to_string()),
                ("AWS_SECRET_ACCESS_KEY".to_string(), "secret".to_string()),
                ("AWS_REGION".to_string(), "eu-west-1".to_string()),
            ]
        };
        let storage =
            ObjectStorage::new("s3://media/pre", Some("http://127.0.0.1:9"), env()).unwrap();
        assert!(storage.is_remote());
        let shown = format!("{storage:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert_eq!(
            storage.location("imp", "video.mp4").unwrap().as_ref(),
            "pre/imp/video.mp4"
        );
        assert!(matches!(
            storage.location("..", "video.mp4"),
            Err(StorageError::InvalidName)
        ));
        let err = ObjectStorage::new("s3://media", Some("ftp://host"), env()).unwrap_err();
        assert!(err.to_string().contains("REELTIME_S3_ENDPOINT"), "{err}");
        let err = ObjectStorage::new("file:///tmp", None, env()).unwrap_err();
        assert!(err.to_string().contains("REELTIME_MEDIA_URL"), "{err}");
    }
}
