//! [`ObjectStorage`]: finished media in an S3-compatible bucket shared by
//! every node.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::buffered::BufWriter;
use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, Attributes, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt,
    RetryConfig,
};
use tokio::io::AsyncWriteExt;

use super::{Bucket, MediaBody, MediaStorage, StorageError, check_names, not_found_or_io};
use crate::media::serve::{content_type_for, is_safe_component};

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

/// Files in an S3-compatible bucket, `<prefix>/<import_id>/<file>`: every
/// node reads and writes the same objects, so any node serves any import.
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    /// The same bucket's multipart uploads, for tus uploads whose parts
    /// arrive on any node (`imports::uploads`); `None` for a store that has
    /// none.
    multipart: Option<Arc<dyn MultipartStore>>,
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
        let store = Arc::new(store);
        Ok(ObjectStorage {
            multipart: Some(Arc::clone(&store) as Arc<dyn MultipartStore>),
            store,
            prefix,
            url: url.to_string(),
        })
    }

    /// A storage over any [`ObjectStore`] (another backend, or tests).
    pub fn with_store(store: Arc<dyn ObjectStore>, prefix: &str) -> ObjectStorage {
        ObjectStorage {
            store,
            multipart: None,
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

    fn bucket(&self) -> Option<Bucket> {
        Some(Bucket {
            objects: Arc::clone(&self.store),
            multipart: self.multipart.clone()?,
            prefix: self.prefix.clone(),
        })
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
