//! [`LocalStorage`]: finished media on this node's own disk.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures_util::stream::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::{MediaBody, MediaStorage, StorageError, check_names, clip, not_found_or_io};
use crate::media::serve::{is_safe_component, resolve_media_path};

/// Read size when streaming from disk: large enough for throughput, small
/// enough that many viewers cost little memory.
const CHUNK: usize = 64 * 1024;

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
