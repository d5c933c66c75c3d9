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
//!
//! This module holds the trait and what both share; [`local`] and [`s3`]
//! hold one implementation each.

mod local;
mod s3;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};

pub use local::LocalStorage;
pub use s3::{ObjectStorage, UPLOAD_PART_SIZE};

use super::serve::is_safe_component;

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

/// An object storage's bucket as tus uploads use it (`imports::uploads`):
/// plain objects, multipart uploads, and the prefix every key goes under.
#[derive(Clone)]
pub struct Bucket {
    pub objects: Arc<dyn object_store::ObjectStore>,
    pub multipart: Arc<dyn object_store::multipart::MultipartStore>,
    pub prefix: object_store::path::Path,
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The stores' own Debug would print the credentials.
        f.debug_struct("Bucket")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
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

    /// The bucket behind an object storage, where tus uploads keep their
    /// parts so that any node can take any PATCH; `None` for the data dir.
    fn bucket(&self) -> Option<Bucket> {
        None
    }

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

/// A missing file is [`StorageError::NotFound`]; any other failure is I/O.
fn not_found_or_io(err: std::io::Error) -> StorageError {
    if err.kind() == std::io::ErrorKind::NotFound {
        StorageError::NotFound
    } else {
        StorageError::Io(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
