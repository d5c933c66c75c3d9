//! Uploads in the bucket, so that any node can take any PATCH: the bytes go
//! to an S3 multipart upload of `<prefix>/<import_id>/upload.bin`, in parts
//! of [`PART_SIZE`]. S3 refuses parts under 5 MiB (but the last), and a
//! PATCH may end anywhere, so what is left at the end of a PATCH is kept as
//! the incomplete-part object `<prefix>/<import_id>/upload.pending.<start>`
//! and put in front of the next PATCH's bytes, as tusd's S3 store does. The
//! parts' ETags and the pending size are saved with the offset in the
//! shared store.
//!
//! `<start>` is the offset of the object's first byte in the file. A PATCH
//! that put a part, then its tail, and died (or could not save its offset)
//! before answering, used to overwrite the one incomplete-part object with
//! bytes from further on, which the next PATCH took as the saved ones: the
//! file went wrong silently. Keyed by its start, such an object lands beside
//! the saved one; at the same start its bytes are the file's bytes from
//! there whoever wrote them (a longer one is cut to the saved size; a
//! shorter one is refused rather than joined). The leftovers go with the
//! upload (`complete`, `discard`).

use std::path::Path;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use object_store::multipart::PartId;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use tokio::io::AsyncWriteExt;

use super::bytes::{StoredParts, UPLOAD_FILE, UploadBytes, UploadWriter};
use crate::media::storage::{Bucket, StorageError};

/// Size of one part: S3's 5 MiB minimum and a little more, so a PATCH of
/// tus-js-client's usual chunk makes one part; the most a PATCH holds in
/// memory is one part plus a socket read.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// S3's smallest part but the last.
const MIN_PART: usize = 5 * 1024 * 1024;
/// The incomplete-part objects' name, before `.<start>`; alone, the name
/// older versions used (read when a row saved by one is continued).
const PENDING_FILE: &str = "upload.pending";

/// Uploads as multipart uploads in the media bucket.
pub struct BucketBytes {
    bucket: Bucket,
}

impl BucketBytes {
    pub fn new(bucket: Bucket) -> BucketBytes {
        BucketBytes { bucket }
    }

    fn key(&self, id: &str, file: &str) -> ObjectPath {
        self.bucket.prefix.clone().join(id).join(file)
    }

    /// Removes every incomplete-part object of upload `id` (the saved one
    /// and any a dead PATCH left); false when one could not be.
    async fn remove_pending(&self, id: &str) -> bool {
        let dir = self.bucket.prefix.clone().join(id);
        let mut gone = true;
        let mut listed = self.bucket.objects.list(Some(&dir));
        let mut keys = Vec::new();
        while let Some(meta) = listed.next().await {
            match meta {
                Ok(meta) => {
                    if meta
                        .location
                        .filename()
                        .is_some_and(|name| name.starts_with(PENDING_FILE))
                    {
                        keys.push(meta.location);
                    }
                }
                Err(err) => {
                    tracing::warn!(import_id = id, error = %err, "could not list an upload's objects");
                    gone = false;
                    break;
                }
            }
        }
        for key in keys {
            match self.bucket.objects.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(err) => {
                    tracing::warn!(import_id = id, error = %err, "could not remove an upload's bytes");
                    gone = false;
                }
            }
        }
        gone
    }
}

/// The incomplete-part object whose first byte is at `start` in the file.
fn pending_file(start: u64) -> String {
    format!("{PENDING_FILE}.{start}")
}

#[async_trait]
impl UploadBytes for BucketBytes {
    fn is_remote(&self) -> bool {
        true
    }

    async fn open(
        &self,
        id: &str,
        offset: u64,
        parts: &StoredParts,
    ) -> Result<Box<dyn UploadWriter>, StorageError> {
        let mut buffer = BytesMut::with_capacity(PART_SIZE + 64 * 1024);
        let start = offset.saturating_sub(parts.pending);
        if parts.pending > 0 {
            let keyed = self.key(id, &pending_file(start));
            let pending = match self.bucket.objects.get(&keyed).await {
                Ok(found) => found.bytes().await?,
                // Saved by an older version, under the one name.
                Err(object_store::Error::NotFound { .. }) => {
                    self.bucket
                        .objects
                        .get(&self.key(id, PENDING_FILE))
                        .await?
                        .bytes()
                        .await?
                }
                Err(err) => return Err(err.into()),
            };
            // Only the saved size counts: a longer object was written by a
            // PATCH whose offset was never saved.
            let keep = usize::try_from(parts.pending).unwrap_or(usize::MAX);
            if pending.len() < keep {
                return Err(StorageError::Io(std::io::Error::other(format!(
                    "the incomplete part has {} bytes, {keep} were saved",
                    pending.len()
                ))));
            }
            buffer.extend_from_slice(&pending[..keep]);
        }
        let pending = buffer.len() as u64;
        Ok(Box::new(BucketWriter {
            bucket: self.bucket.clone(),
            target: self.key(id, UPLOAD_FILE),
            dir: self.bucket.prefix.clone().join(id),
            start,
            parts: parts.clone(),
            buffer,
            carried: pending,
            stored: 0,
        }))
    }

    async fn complete(&self, id: &str, parts: &StoredParts) -> Result<(), StorageError> {
        let Some(multipart) = &parts.multipart else {
            // An empty file never got a part: an empty object then.
            self.bucket
                .objects
                .put(&self.key(id, UPLOAD_FILE), PutPayload::new())
                .await?;
            return Ok(());
        };
        let ids = parts
            .etags
            .iter()
            .map(|etag| PartId {
                content_id: etag.clone(),
            })
            .collect();
        self.bucket
            .multipart
            .complete_multipart(&self.key(id, UPLOAD_FILE), multipart, ids)
            .await?;
        // Left over if this fails: `discard` tries again when the import ends.
        self.remove_pending(id).await;
        Ok(())
    }

    async fn joined(&self, id: &str) -> Option<u64> {
        let meta = self.bucket.objects.head(&self.key(id, UPLOAD_FILE)).await;
        meta.ok().map(|meta| meta.size)
    }

    async fn discard(&self, id: &str, parts: &StoredParts) -> bool {
        let mut gone = true;
        if let Some(multipart) = &parts.multipart {
            match self
                .bucket
                .multipart
                .abort_multipart(&self.key(id, UPLOAD_FILE), multipart)
                .await
            {
                // Already completed or aborted: no parts are left.
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(err) => {
                    tracing::warn!(import_id = id, error = %err, "could not abort an upload's parts");
                    gone = false;
                }
            }
        }
        gone &= self.remove_pending(id).await;
        match self.bucket.objects.delete(&self.key(id, UPLOAD_FILE)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(err) => {
                tracing::warn!(import_id = id, error = %err, "could not remove an upload's bytes");
                gone = false;
            }
        }
        gone
    }

    /// A copy: the object stays until the import's final state is stored
    /// (docs/reliability.md, *Chaos*, bug 2).
    async fn take(&self, id: &str, dest: &Path) -> Result<u64, StorageError> {
        let key = self.key(id, UPLOAD_FILE);
        let mut stream = self.bucket.objects.get(&key).await?.into_stream();
        let mut file = tokio::fs::File::create(dest).await?;
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        Ok(size)
    }
}

/// One PATCH into the multipart upload.
struct BucketWriter {
    bucket: Bucket,
    target: ObjectPath,
    /// `<prefix>/<import_id>`, where the incomplete-part objects go.
    dir: ObjectPath,
    /// Offset in the file of `buffer`'s first byte.
    start: u64,
    parts: StoredParts,
    /// The incomplete part: carried over from the last PATCH, then this
    /// PATCH's bytes until a part is full.
    buffer: BytesMut,
    /// Bytes at the front of `buffer` that an earlier PATCH stored.
    carried: u64,
    /// Bytes of this PATCH in uploaded parts (or the pending object).
    stored: u64,
}

impl BucketWriter {
    async fn put_part(&mut self, data: Bytes) -> Result<(), StorageError> {
        let multipart = match &self.parts.multipart {
            Some(id) => id.clone(),
            None => {
                let id = self.bucket.multipart.create_multipart(&self.target).await?;
                self.parts.multipart = Some(id.clone());
                id
            }
        };
        let index = self.parts.etags.len();
        let len = data.len() as u64;
        let part = self
            .bucket
            .multipart
            .put_part(&self.target, &multipart, index, PutPayload::from(data))
            .await?;
        self.parts.etags.push(part.content_id);
        self.start += len;
        // The carried bytes were counted by the PATCH that stored them.
        self.stored += len - self.carried;
        self.carried = 0;
        self.parts.pending = 0;
        Ok(())
    }
}

#[async_trait]
impl UploadWriter for BucketWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        self.buffer.extend_from_slice(&chunk);
        if self.buffer.len() >= PART_SIZE {
            let part = self.buffer.split_to(PART_SIZE).freeze();
            self.put_part(part).await?;
        }
        Ok(())
    }

    fn stored(&self) -> u64 {
        self.stored
    }

    fn parts(&self) -> StoredParts {
        self.parts.clone()
    }

    async fn finish(&mut self, last: bool) -> Result<(), StorageError> {
        let rest = self.buffer.split().freeze();
        if rest.is_empty() {
            return Ok(());
        }
        if last || rest.len() >= MIN_PART {
            return self.put_part(rest).await;
        }
        let len = rest.len() as u64;
        let key = self.dir.clone().join(pending_file(self.start).as_str());
        self.bucket
            .objects
            .put(&key, PutPayload::from(rest))
            .await?;
        self.stored += len - self.carried;
        self.carried = 0;
        self.parts.pending = len;
        Ok(())
    }
}
