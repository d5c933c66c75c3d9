//! Where an upload's bytes go while they come in: a file in the import's
//! directory ([`LocalBytes`], one node), or the bucket's multipart upload
//! ([`super::s3::BucketBytes`], any node). The PATCH loop in
//! [`super::Uploads`] is the same for both: it hands each chunk of the body
//! to an [`UploadWriter`] and saves the offset of what the writer says is
//! stored.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::media::storage::StorageError;

/// The file an upload's bytes are written to on local storage.
pub const UPLOAD_FILE: &str = "upload.bin";

/// How much of a PATCH body is gathered before one write to disk: one
/// blocking-pool hop per MiB rather than per socket read (~16 KiB).
const WRITE_BUFFER: usize = 1024 * 1024;

/// What an upload's storage keeps between PATCHes (saved with the offset,
/// in the store's `state`): the S3 multipart upload and its parts, and how
/// many bytes wait in the incomplete-part object. Empty for local files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredParts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multipart: Option<String>,
    /// ETags of the parts uploaded, in order (part n is `etags[n - 1]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub etags: Vec<String>,
    /// Bytes in the incomplete-part object (fewer than S3's 5 MiB minimum).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pending: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One PATCH's writer, holding the upload (the store's hold) while it lives.
#[async_trait]
pub trait UploadWriter: Send {
    /// Takes the next chunk of the body.
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError>;
    /// Bytes of this PATCH stored so far: what the offset may count if the
    /// request ended now.
    fn stored(&self) -> u64;
    /// The parts to save with [`UploadWriter::stored`].
    fn parts(&self) -> StoredParts;
    /// Whether a write is still under way (its bytes not yet counted).
    fn busy(&self) -> bool {
        false
    }
    /// Waits for the write under way, then counts it; safe to drop midway.
    async fn settle(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
    /// Stores whatever it still holds; `last` when these are the upload's
    /// final bytes. Afterwards `stored` counts every byte written.
    async fn finish(&mut self, last: bool) -> Result<(), StorageError>;
}

/// An upload's storage.
#[async_trait]
pub trait UploadBytes: Send + Sync {
    /// True when the bytes live off this node (any node can take a PATCH,
    /// and an interrupted import can fetch them again).
    fn is_remote(&self) -> bool;

    /// A writer that appends at `offset`; bytes past `offset` from an
    /// interrupted PATCH whose offset was never saved are dropped.
    async fn open(
        &self,
        id: &str,
        offset: u64,
        parts: &StoredParts,
    ) -> Result<Box<dyn UploadWriter>, StorageError>;

    /// Joins the parts into the whole file, once the last byte is stored.
    async fn complete(&self, id: &str, parts: &StoredParts) -> Result<(), StorageError>;

    /// The size of the whole file if its parts were already joined, by a
    /// completion whose write of the import failed afterwards (the store
    /// away): a PATCH resent after that finds the parts gone, and the file
    /// whole. `None` when it is not, and always on a node's disk (where a
    /// resent PATCH simply writes its bytes again).
    async fn joined(&self, _id: &str) -> Option<u64> {
        None
    }

    /// Frees everything the upload stored (cancel, expiry, refusal, or the
    /// import's final state). Returns false when something could not be
    /// removed (logged), so the caller keeps its record and tries again.
    async fn discard(&self, id: &str, parts: &StoredParts) -> bool;

    /// Puts the completed file at `dest` (the import's `source.part`);
    /// returns its size. On a node's disk the file is moved (the disk goes
    /// with the node, so a copy would outlive nothing); in the bucket it is
    /// copied, and the object stays until the import's final state is
    /// stored, so that another node can take it again if this one dies
    /// (the uploads sweeper deletes it then).
    async fn take(&self, id: &str, dest: &Path) -> Result<u64, StorageError>;
}

/// Uploads as files in the import directories of this node's data dir.
pub struct LocalBytes {
    root: PathBuf,
}

impl LocalBytes {
    pub fn new(root: PathBuf) -> Arc<LocalBytes> {
        Arc::new(LocalBytes { root })
    }

    fn file(&self, id: &str) -> PathBuf {
        self.root.join(id).join(UPLOAD_FILE)
    }
}

#[async_trait]
impl UploadBytes for LocalBytes {
    fn is_remote(&self) -> bool {
        false
    }

    async fn open(
        &self,
        id: &str,
        offset: u64,
        _parts: &StoredParts,
    ) -> Result<Box<dyn UploadWriter>, StorageError> {
        let path = self.file(id);
        let file = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            // What an interrupted PATCH wrote past the saved offset goes.
            file.set_len(offset)?;
            Ok(file)
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(Box::new(LocalWriter {
            file: Arc::new(file),
            at: offset,
            stored: 0,
            buffer: BytesMut::with_capacity(WRITE_BUFFER),
            in_flight: None,
        }))
    }

    async fn complete(&self, _id: &str, _parts: &StoredParts) -> Result<(), StorageError> {
        Ok(())
    }

    async fn discard(&self, id: &str, _parts: &StoredParts) -> bool {
        let dir = self.root.join(id);
        if let Err(err) = tokio::fs::remove_dir_all(&dir).await
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(import_id = id, error = %err, "could not remove an upload's bytes");
            return false;
        }
        true
    }

    async fn take(&self, id: &str, dest: &Path) -> Result<u64, StorageError> {
        let from = self.file(id);
        tokio::fs::rename(&from, dest).await?;
        Ok(tokio::fs::metadata(dest).await?.len())
    }
}

/// Appends to the upload's file with positioned writes, a MiB at a time,
/// one write in flight while the next MiB is read from the socket.
struct LocalWriter {
    file: Arc<std::fs::File>,
    /// Where the next write lands.
    at: u64,
    stored: u64,
    buffer: BytesMut,
    /// The write on the blocking pool, and its length.
    in_flight: Option<(tokio::task::JoinHandle<std::io::Result<()>>, u64)>,
}

impl LocalWriter {
    /// Starts writing the buffer (after the write before it is done).
    async fn flush(&mut self) -> Result<(), StorageError> {
        self.settle().await?;
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = self.buffer.split().freeze();
        self.buffer.reserve(WRITE_BUFFER);
        let len = chunk.len() as u64;
        let file = Arc::clone(&self.file);
        let at = self.at;
        self.at += len;
        let write = tokio::task::spawn_blocking(move || file.write_all_at(&chunk, at));
        self.in_flight = Some((write, len));
        Ok(())
    }
}

#[async_trait]
impl UploadWriter for LocalWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        self.buffer.extend_from_slice(&chunk);
        if self.buffer.len() >= WRITE_BUFFER {
            self.flush().await?;
        }
        Ok(())
    }

    fn stored(&self) -> u64 {
        self.stored
    }

    fn parts(&self) -> StoredParts {
        StoredParts::default()
    }

    fn busy(&self) -> bool {
        self.in_flight.is_some()
    }

    async fn settle(&mut self) -> Result<(), StorageError> {
        if let Some((write, len)) = &mut self.in_flight {
            // Awaited through `&mut`: dropped midway, the write stays ours.
            let written = write.await;
            let len = *len;
            self.in_flight = None;
            written.map_err(std::io::Error::other)??;
            self.stored += len;
        }
        Ok(())
    }

    async fn finish(&mut self, _last: bool) -> Result<(), StorageError> {
        self.flush().await?;
        self.settle().await
    }
}
