//! Browser uploads over tus 1.0 (docs/protocol.md, "Uploads"): an upload is
//! an import from its creation (status `uploading`), so every tab of the
//! user sees it and its bar; when its last byte is stored it becomes
//! `queued` and the runner takes it through the usual media stages (the
//! [`super::source::upload`] source hands the stored file over).
//!
//! The offset lives in the store ([`crate::store::UploadStore`]), never in
//! memory: a PATCH holds the upload with a compare-and-set on the offset,
//! streams its body to the storage ([`bytes`]: the import's directory, or
//! the bucket's multipart upload with S3), and saves the new offset. The
//! HTTP side (headers, statuses) is `http::uploads`; this module knows
//! nothing of HTTP.
//!
//! With S3 the row outlives the last byte: the uploaded object stays in
//! the bucket until the import's final state is stored (any node can take
//! it again if the one processing it dies), and the row is what says it is
//! there. A final state expires the row (`ImportService::write_and_publish`)
//! and the sweeper deletes the object, then the row; the sweeper also looks
//! at such rows every [`RECHECK_EVERY`], for a node that died in between.

pub mod bytes;
pub mod s3;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};
use reeltime_protocol::{Import, ImportStatus};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::bytes::{StoredParts, UploadBytes};
use super::runner::PROGRESS_EVERY;
use super::source::{NewImport, SourceSpec};
use super::{ImportService, ImportServiceError, fail, sniff};
use crate::store::{OwnedImport, StoreError, UploadInsert, UploadRow};

/// How long a PATCH holds an upload without renewing; a node that dies
/// mid-PATCH blocks the upload for at most this long.
const HOLD: Duration = Duration::from_secs(60);
/// How often a running PATCH renews its hold (and saves its offset).
const RENEW_EVERY: Duration = Duration::from_secs(20);
/// How often the sweeper looks for expired or cancelled uploads.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How often the sweeper looks again at a finished upload whose bytes stay
/// in the bucket while its import runs: the import's final state expires
/// the row at once, this catches a node that died before it could.
const RECHECK_EVERY: Duration = Duration::from_secs(60);

/// The settings uploads follow.
#[derive(Debug, Clone)]
pub struct UploadSettings {
    /// `Tus-Max-Size`: REELTIME_IMPORT_MAX_BYTES.
    pub max_bytes: u64,
    /// REELTIME_MAX_UPLOADS_PER_USER: imports `uploading` at once.
    pub max_per_user: u64,
    /// REELTIME_UPLOAD_EXPIRE_SECS: an upload untouched this long fails.
    pub expire_after: Duration,
    /// Share of the progress bar the upload takes (the media work takes
    /// the rest), as for a URL import's download.
    pub progress_share: f64,
}

/// What went wrong with an upload request; `http::uploads` picks the status.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Not this user's, never existed, or ended (cancelled, failed,
    /// expired): tus says 404 (or 410).
    #[error("upload not found")]
    NotFound,
    /// `Upload-Offset` is not the stored offset, or another PATCH holds the
    /// upload right now.
    #[error("{message}")]
    Conflict { offset: u64, message: String },
    #[error("{0}")]
    TooLarge(String),
    #[error("you have {max} uploads in progress; wait for one to finish, or cancel one")]
    TooManyUploads { max: u64 },
    /// The first bytes are not a video's: the import failed `not_a_video`.
    #[error("the file is not a video this server can read")]
    NotAVideo,
    /// The storage failed: the import failed `storage_error`.
    #[error("the upload could not be stored")]
    Storage,
    #[error(transparent)]
    Import(#[from] ImportServiceError),
}

impl From<StoreError> for UploadError {
    fn from(err: StoreError) -> Self {
        UploadError::Import(ImportServiceError::Store(err))
    }
}

/// The JSON kept in the store's `state` beside the offset.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct UploadState {
    /// `filetype` from `Upload-Metadata`, as the client said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file_type: Option<String>,
    /// The first bytes (up to [`sniff::SNIFF_BYTES`]), base64, until the
    /// sniff has decided.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    head: String,
    /// Whether the sniff has passed.
    #[serde(default)]
    sniffed: bool,
    #[serde(default)]
    parts: StoredParts,
}

impl UploadState {
    fn parse(row: &UploadRow) -> UploadState {
        serde_json::from_str(&row.state).unwrap_or_default()
    }

    fn head(&self) -> Vec<u8> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(&self.head)
            .unwrap_or_default()
    }

    fn set_head(&mut self, head: &[u8]) {
        use base64::Engine;
        self.head = base64::engine::general_purpose::STANDARD.encode(head);
    }
}

/// A new upload as `POST /api/uploads` describes it.
#[derive(Debug, Clone)]
pub struct NewUpload {
    pub length: u64,
    pub file_name: Option<String>,
    pub file_type: Option<String>,
    pub title: Option<String>,
}

/// Where an upload stands, for `HEAD` and the answers of `PATCH`.
#[derive(Debug, Clone)]
pub struct UploadStatus {
    pub id: String,
    pub offset: u64,
    pub length: u64,
    /// `None` once every byte is stored (the upload no longer expires).
    pub expires_at: Option<DateTime<Utc>>,
}

/// The upload operations, over the import service.
pub struct Uploads {
    imports: Arc<ImportService>,
    bytes: Arc<dyn UploadBytes>,
    settings: UploadSettings,
    /// When each upload's progress was last committed on this node, so a
    /// client sending tiny PATCHes still makes at most 10 changes a second.
    last_progress: Arc<Mutex<HashMap<String, Instant>>>,
    /// This node's name as the holder of uploads the sweeper works on.
    sweeper: String,
}

impl Uploads {
    pub fn new(
        imports: Arc<ImportService>,
        bytes: Arc<dyn UploadBytes>,
        settings: UploadSettings,
    ) -> Arc<Uploads> {
        Arc::new(Uploads {
            imports,
            bytes,
            settings,
            last_progress: Arc::new(Mutex::new(HashMap::new())),
            sweeper: format!("sweeper-{}", uuid::Uuid::new_v4().simple()),
        })
    }

    pub fn settings(&self) -> &UploadSettings {
        &self.settings
    }

    /// Creates the import (`uploading`, shown at once on every tab) and
    /// its upload, after the creation rate, the size and both per-user
    /// caps.
    pub async fn create(&self, user_id: &str, new: NewUpload) -> Result<Import, UploadError> {
        let imports = &self.imports;
        imports
            .creation_rate
            .take(user_id)
            .map_err(|retry_after| ImportServiceError::RateLimited { retry_after })?;
        if new.length == 0 {
            return Err(ImportServiceError::BadRequest(
                "Upload-Length is 0: an empty file is not a video".into(),
            )
            .into());
        }
        if new.length > self.settings.max_bytes {
            return Err(UploadError::TooLarge(format!(
                "the file is {} bytes; the most this server accepts is {} bytes",
                new.length, self.settings.max_bytes
            )));
        }
        let spec = NewImport {
            title: new.title,
            source: SourceSpec::Upload {
                file_name: new.file_name.unwrap_or_default(),
                length: new.length,
            },
            metadata: None,
        };
        let mut owned = imports.new_import(user_id, spec).await?;
        let import = &mut owned.import;
        import.status = ImportStatus::Uploading;
        import.bytes_total = Some(new.length);
        let mut state = UploadState {
            file_type: new.file_type,
            ..UploadState::default()
        };
        state.set_head(&[]);
        let row = UploadRow {
            id: import.id.clone(),
            user_id: user_id.to_string(),
            length: new.length,
            offset: 0,
            expires_at: self.expiry(),
            state: serde_json::to_string(&state).map_err(ImportServiceError::from)?,
        };
        let max_active = imports.limits.max_active_per_user;
        let max_uploads = self.settings.max_per_user;
        match imports
            .store
            .insert_upload(&owned, &row, max_active, max_uploads)
            .await?
        {
            UploadInsert::Stored => {}
            UploadInsert::TooManyImports => {
                return Err(ImportServiceError::TooManyActive { max: max_active }.into());
            }
            UploadInsert::TooManyUploads => {
                return Err(UploadError::TooManyUploads { max: max_uploads });
            }
        }
        imports.publish(&owned).await?;
        tracing::info!(import_id = %owned.import.id, length = new.length, "upload created");
        Ok(imports.present(&owned))
    }

    fn expiry(&self) -> DateTime<Utc> {
        let after = chrono::Duration::from_std(self.settings.expire_after)
            .unwrap_or(chrono::Duration::days(1));
        Utc::now() + after
    }

    /// The import, if it is `user_id`'s upload.
    async fn owned_upload(&self, user_id: &str, id: &str) -> Result<OwnedImport, UploadError> {
        let owned = match self.imports.get_owned(user_id, id).await {
            Ok(owned) => owned,
            Err(ImportServiceError::NotFound) => return Err(UploadError::NotFound),
            Err(err) => return Err(err.into()),
        };
        // A completed upload still answers (every byte is in); a cancelled,
        // failed or expired one is gone.
        let ended = matches!(
            owned.import.status,
            ImportStatus::Cancelled | ImportStatus::Failed
        );
        if owned.import.source != reeltime_protocol::ImportSource::Upload || ended {
            return Err(UploadError::NotFound);
        }
        Ok(owned)
    }

    /// The stored offset (`HEAD`): from the store, whichever node asks.
    pub async fn status(&self, user_id: &str, id: &str) -> Result<UploadStatus, UploadError> {
        let owned = self.owned_upload(user_id, id).await?;
        if owned.import.status != ImportStatus::Uploading {
            // Every byte is in: the import went on to its media stages (its
            // row may stay while the bytes do, with S3).
            let length = owned.import.bytes_total.unwrap_or(owned.import.bytes_done);
            return Ok(UploadStatus {
                id: owned.import.id,
                offset: length,
                length,
                expires_at: None,
            });
        }
        match self.imports.store.get_upload(id).await? {
            Some(row) => Ok(UploadStatus {
                id: row.id,
                offset: row.offset,
                length: row.length,
                expires_at: Some(row.expires_at),
            }),
            None => Err(UploadError::NotFound),
        }
    }

    /// Appends `body` at `offset` (a PATCH, or the body of a creation with
    /// upload). Returns the new state; what was stored before an error or a
    /// dropped connection stays stored, and the offset says so.
    pub async fn append<S, E>(
        &self,
        user_id: &str,
        id: &str,
        offset: u64,
        declared_len: Option<u64>,
        body: S,
    ) -> Result<UploadStatus, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let owned = self.owned_upload(user_id, id).await?;
        let all_stored = || {
            let length = owned.import.bytes_total.unwrap_or(0);
            UploadError::Conflict {
                offset: length,
                message: "every byte of this upload is already stored".into(),
            }
        };
        // Past `uploading` the row may still be there (the bytes stay in
        // the bucket until the import ends): never written again.
        if owned.import.status != ImportStatus::Uploading {
            return Err(all_stored());
        }
        // A first look for precise answers; the row as held is what counts.
        let Some(seen) = self.imports.store.get_upload(id).await? else {
            return Err(all_stored());
        };
        if offset != seen.offset {
            return Err(UploadError::Conflict {
                offset: seen.offset,
                message: format!(
                    "Upload-Offset is {offset} but the server has {} bytes",
                    seen.offset
                ),
            });
        }
        if let Some(len) = declared_len
            && offset.saturating_add(len) > seen.length
        {
            return Err(UploadError::TooLarge(format!(
                "{len} bytes at offset {offset} go past Upload-Length {}",
                seen.length
            )));
        }
        let holder = uuid::Uuid::new_v4().simple().to_string();
        let held = self
            .imports
            .store
            .hold_upload(id, Some(offset), &holder, HOLD)
            .await?;
        let Some(mut row) = held else {
            let now_at = self.imports.store.get_upload(id).await?.map(|r| r.offset);
            return Err(UploadError::Conflict {
                offset: now_at.unwrap_or(offset),
                message: "another request is writing this upload, or its offset moved; ask HEAD for the offset".into(),
            });
        };
        let mut state = UploadState::parse(&row);
        let mut patch = Patch {
            uploads: self,
            owned,
            holder: &holder,
            start: offset,
            length: row.length,
        };
        let outcome = patch.stream(&mut state, body).await;
        let owned = patch.owned.clone();
        match outcome {
            Ok(stored) => {
                row.offset = offset + stored;
                if row.offset == row.length {
                    return self.completed(owned, row, state, &holder, false).await;
                }
                row.expires_at = self.expiry();
                row.state = serde_json::to_string(&state).map_err(ImportServiceError::from)?;
                if !self.imports.store.save_upload(&row, &holder, None).await? {
                    return Err(UploadError::Conflict {
                        offset,
                        message: "the upload was taken over by another request".into(),
                    });
                }
                self.report_at_end(owned, row.offset, row.length);
                Ok(UploadStatus {
                    id: row.id,
                    offset: row.offset,
                    length: row.length,
                    expires_at: Some(row.expires_at),
                })
            }
            Err(Ended::Cancelled) => {
                self.drop_upload(id, &holder, &state.parts).await;
                Err(UploadError::NotFound)
            }
            Err(Ended::Refused(code, err)) => {
                self.drop_upload(id, &holder, &state.parts).await;
                let message = err.to_string();
                self.fail_import(owned, code, &message).await?;
                Err(err)
            }
            Err(Ended::TooLong { stored }) => {
                row.offset = offset + stored;
                row.expires_at = self.expiry();
                row.state = serde_json::to_string(&state).map_err(ImportServiceError::from)?;
                self.imports.store.save_upload(&row, &holder, None).await?;
                Err(UploadError::TooLarge(format!(
                    "the body goes past Upload-Length {}",
                    row.length
                )))
            }
            Err(Ended::Joined) => {
                // An earlier PATCH joined every byte, then could not store
                // the import: finish its work (the resent bytes are not
                // needed).
                tracing::info!(import_id = %id, "the upload's parts were already joined");
                row.offset = row.length;
                self.completed(owned, row, state, &holder, true).await
            }
            Err(Ended::Lost) => Err(UploadError::Conflict {
                offset,
                message: "the upload was taken over by another request".into(),
            }),
        }
    }

    /// The last byte is stored: join the parts, then hand the import to
    /// the runner (`queued`), then drop the row, or with S3 keep it as the
    /// record of the object, which stays until the import ends. In that
    /// order: a crash in between leaves a row the sweeper looks at again
    /// (without touching the bytes while the import runs). `joined` when
    /// an earlier completion got as far as joining the parts (so past the
    /// sniff too).
    async fn completed(
        &self,
        owned: OwnedImport,
        row: UploadRow,
        state: UploadState,
        holder: &str,
        joined: bool,
    ) -> Result<UploadStatus, UploadError> {
        if joined {
            return self.queue(owned, row, state, holder).await;
        }
        if !state.sniffed && !sniffed_video(&state.head()) {
            self.drop_upload(&row.id, holder, &state.parts).await;
            self.fail_import(owned, "not_a_video", &UploadError::NotAVideo.to_string())
                .await?;
            return Err(UploadError::NotAVideo);
        }
        if let Err(err) = self.bytes.complete(&row.id, &state.parts).await {
            tracing::error!(import_id = %row.id, error = %err, "could not join an upload's parts");
            self.drop_upload(&row.id, holder, &state.parts).await;
            self.fail_import(owned, "storage_error", &UploadError::Storage.to_string())
                .await?;
            return Err(UploadError::Storage);
        }
        self.queue(owned, row, state, holder).await
    }

    /// Hands a joined upload to the runner: `queued`, then the row kept or
    /// dropped ([`Uploads::keep_for_runner`]).
    async fn queue(
        &self,
        owned: OwnedImport,
        row: UploadRow,
        state: UploadState,
        holder: &str,
    ) -> Result<UploadStatus, UploadError> {
        let mut owned = owned;
        loop {
            let expected = owned.import.version;
            let import = &mut owned.import;
            import.status = ImportStatus::Queued;
            import.bytes_done = row.length;
            import.bytes_total = Some(row.length);
            import.progress = Some(self.settings.progress_share);
            if self.imports.commit(&mut owned, expected).await? {
                break;
            }
            match self.imports.store.get_import(&row.id).await? {
                Some(fresh) if fresh.import.status == ImportStatus::Uploading => owned = fresh,
                _ => {
                    // Cancelled as the last byte came in.
                    self.drop_upload(&row.id, holder, &state.parts).await;
                    return Err(UploadError::NotFound);
                }
            }
        }
        self.forget_progress(&row.id);
        self.imports.work_arrived();
        if let Err(err) = self.keep_for_runner(row.clone(), state, holder).await {
            // The import is queued all the same; the sweeper finds the row
            // when its hold and expiry run out.
            tracing::warn!(import_id = %row.id, error = %err, "could not save a finished upload's row");
        }
        tracing::info!(import_id = %row.id, bytes = row.length, "upload complete");
        Ok(UploadStatus {
            id: row.id,
            offset: row.length,
            length: row.length,
            expires_at: None,
        })
    }

    /// Commits the stored bytes as the import's progress. Returns the
    /// import as written, or `None` when it is no longer uploading
    /// (cancelled). The caller keeps to [`PROGRESS_EVERY`].
    async fn report(
        &self,
        owned: OwnedImport,
        done: u64,
        length: u64,
    ) -> Result<Option<OwnedImport>, UploadError> {
        let id = owned.import.id.clone();
        let written = commit_progress(
            &self.imports,
            owned,
            done,
            length,
            self.settings.progress_share,
        )
        .await?;
        mark(&self.last_progress, &id);
        Ok(written)
    }

    /// The last progress of a PATCH, committed beside the answer (which
    /// does not wait for it: the offset the client needs is saved already):
    /// now if the last commit is old enough, else when it is, so a client
    /// sending tiny PATCHes still makes at most 10 changes a second and the
    /// bar still ends where the bytes are.
    fn report_at_end(&self, owned: OwnedImport, done: u64, length: u64) {
        let at = self.next_progress_at(&owned.import.id);
        let imports = Arc::clone(&self.imports);
        let last = Arc::clone(&self.last_progress);
        let share = self.settings.progress_share;
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let id = owned.import.id.clone();
            let Ok(Some(fresh)) = imports.store.get_import(&id).await else {
                return;
            };
            if fresh.import.status != ImportStatus::Uploading || fresh.import.bytes_done >= done {
                return;
            }
            if let Err(err) = commit_progress(&imports, fresh, done, length, share).await {
                tracing::warn!(import_id = %id, error = %err, "could not commit upload progress");
            }
            mark(&last, &id);
        });
    }

    /// When the next progress of upload `id` may be committed.
    fn next_progress_at(&self, id: &str) -> Instant {
        self.last_progress
            .lock()
            .ok()
            .and_then(|last| last.get(id).copied())
            .map(|at| at + PROGRESS_EVERY)
            .unwrap_or_else(Instant::now)
    }

    fn forget_progress(&self, id: &str) {
        if let Ok(mut last) = self.last_progress.lock() {
            last.remove(id);
        }
    }

    /// Fails the import (unless it already ended) with `code`.
    async fn fail_import(
        &self,
        mut owned: OwnedImport,
        code: &str,
        message: &str,
    ) -> Result<(), UploadError> {
        loop {
            if owned.import.status.is_final() {
                return Ok(());
            }
            let expected = owned.import.version;
            fail(&mut owned.import, code, message);
            if self.imports.commit(&mut owned, expected).await? {
                tracing::info!(import_id = %owned.import.id, code, "upload failed");
                return Ok(());
            }
            match self.imports.store.get_import(&owned.import.id).await? {
                Some(fresh) => owned = fresh,
                None => return Ok(()),
            }
        }
    }

    /// Frees an upload's bytes and its row (the caller holds it). When the
    /// bytes could not all be removed the row stays, expired again in
    /// [`RECHECK_EVERY`], so the sweeper tries again.
    async fn drop_upload(&self, id: &str, holder: &str, parts: &StoredParts) {
        let gone = self.bytes.discard(id, parts).await;
        self.forget_progress(id);
        let outcome = if gone {
            self.imports.store.delete_upload(id, holder).await
        } else {
            match self.imports.store.get_upload(id).await {
                Ok(Some(mut row)) => {
                    row.expires_at = Utc::now() + recheck();
                    self.imports.store.save_upload(&row, holder, None).await
                }
                Ok(None) => Ok(true),
                Err(err) => Err(err),
            }
        };
        if let Err(err) = outcome {
            tracing::warn!(import_id = id, error = %err, "could not remove an upload's row");
        }
    }

    /// Every byte is in and the import is the runner's. On a node's disk
    /// the runner moves the file: the row goes. In the bucket the object
    /// stays until the import ends: the row is kept, marked complete (its
    /// parts joined, nothing left to abort) and looked at again by the
    /// sweeper in [`RECHECK_EVERY`] (sooner when the import ends).
    async fn keep_for_runner(
        &self,
        mut row: UploadRow,
        mut state: UploadState,
        holder: &str,
    ) -> Result<(), StoreError> {
        if !self.bytes.is_remote() {
            self.imports.store.delete_upload(&row.id, holder).await?;
            return Ok(());
        }
        row.offset = row.length;
        row.expires_at = Utc::now() + recheck();
        state.parts = StoredParts::default();
        state.head = String::new();
        row.state = serde_json::to_string(&state)?;
        self.imports.store.save_upload(&row, holder, None).await?;
        Ok(())
    }

    /// tus termination (`DELETE`): the import ends `cancelled` and the
    /// bytes go now, or as soon as a PATCH in flight lets go of them.
    pub async fn terminate(&self, user_id: &str, id: &str) -> Result<(), UploadError> {
        self.owned_upload(user_id, id).await?;
        match self.imports.cancel(user_id, id).await {
            Ok(_) => {}
            Err(ImportServiceError::NotFound | ImportServiceError::AlreadyFinished) => {
                return Err(UploadError::NotFound);
            }
            Err(err) => return Err(err.into()),
        }
        self.sweep_one(id).await;
        Ok(())
    }

    /// Frees the bytes of upload `id` now if nobody holds it.
    async fn sweep_one(&self, id: &str) {
        let holder = format!("{}-{}", self.sweeper, uuid::Uuid::new_v4().simple());
        match self
            .imports
            .store
            .hold_upload(id, None, &holder, HOLD)
            .await
        {
            Ok(Some(row)) => self.sweep_row(row, &holder).await,
            Ok(None) => {} // a PATCH holds it: it sees the cancel and cleans up
            Err(err) => tracing::warn!(import_id = id, error = %err, "could not sweep an upload"),
        }
    }

    /// Runs until `shutdown`: fails expired uploads `upload_expired` and
    /// frees the bytes of expired and cancelled ones. Each row is held
    /// first, so with several nodes one node at a time sweeps it.
    pub async fn sweep(self: Arc<Self>, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let held = self
                .imports
                .store
                .hold_expired_uploads(&self.sweeper, HOLD, 16)
                .await;
            match held {
                Ok(rows) => {
                    for row in rows {
                        self.sweep_row(row, &self.sweeper).await;
                    }
                }
                Err(err) => tracing::warn!(error = %err, "could not look for expired uploads"),
            }
        }
    }

    async fn sweep_row(&self, row: UploadRow, holder: &str) {
        let state = UploadState::parse(&row);
        let import = match self.imports.store.get_import(&row.id).await {
            Ok(import) => import,
            Err(err) => {
                tracing::warn!(import_id = %row.id, error = %err, "could not sweep an upload");
                return;
            }
        };
        match import {
            Some(owned) if owned.import.status == ImportStatus::Uploading => {
                if row.expires_at > Utc::now() {
                    // Not expired after all (a hold taken by `terminate`
                    // on an upload whose cancel lost a race).
                    let _ = self.imports.store.save_upload(&row, holder, None).await;
                    return;
                }
                // Bytes first: when a tab sees `upload_expired`, they are
                // gone. The row goes last, so a failed commit is retried.
                self.bytes.discard(&row.id, &state.parts).await;
                let message = "the upload was not continued in time; upload the file again";
                if let Err(err) = self.fail_import(owned, "upload_expired", message).await {
                    tracing::warn!(import_id = %row.id, error = %err, "could not expire an upload");
                    return;
                }
                tracing::info!(import_id = %row.id, "upload expired");
                self.drop_upload(&row.id, holder, &state.parts).await;
            }
            // Every byte came in and the import went on: its bytes are the
            // runner's until it ends (in the bucket, they stay till then).
            Some(owned) if !owned.import.status.is_final() => {
                if let Err(err) = self.keep_for_runner(row.clone(), state, holder).await {
                    tracing::warn!(import_id = %row.id, error = %err, "could not sweep an upload");
                }
            }
            _ => self.drop_upload(&row.id, holder, &state.parts).await,
        }
    }
}

/// [`RECHECK_EVERY`] as a date offset.
fn recheck() -> chrono::Duration {
    chrono::Duration::from_std(RECHECK_EVERY).unwrap_or(chrono::Duration::minutes(1))
}

fn mark(last: &Mutex<HashMap<String, Instant>>, id: &str) {
    if let Ok(mut last) = last.lock() {
        last.insert(id.to_string(), Instant::now());
    }
}

/// Writes `done` stored bytes into the import through the one write path
/// (compare-and-set, group commit, bus), re-reading on a lost race.
async fn commit_progress(
    imports: &ImportService,
    mut owned: OwnedImport,
    done: u64,
    length: u64,
    share: f64,
) -> Result<Option<OwnedImport>, UploadError> {
    loop {
        if owned.import.bytes_done >= done {
            return Ok(Some(owned));
        }
        let expected = owned.import.version;
        owned.import.bytes_done = done;
        owned.import.progress = Some(if length == 0 {
            share
        } else {
            share * (done as f64 / length as f64).min(1.0)
        });
        if imports.commit(&mut owned, expected).await? {
            return Ok(Some(owned));
        }
        match imports.store.get_import(&owned.import.id).await? {
            Some(fresh) if fresh.import.status == ImportStatus::Uploading => owned = fresh,
            _ => return Ok(None),
        }
    }
}

/// Whether the first bytes are a video's, as a URL import's download is
/// judged.
fn sniffed_video(head: &[u8]) -> bool {
    sniff::container(head).is_some()
}

/// How a PATCH's stream ended other than well.
enum Ended {
    /// The import was cancelled meanwhile.
    Cancelled,
    /// The bytes are refused: the import fails with this code.
    Refused(&'static str, UploadError),
    /// Another request took the upload over (this one's hold ran out).
    Lost,
    /// The storage has the whole file already: an earlier PATCH joined
    /// the parts, then failed to store the import (docs/reliability.md,
    /// *Chaos*, "no such media file").
    Joined,
    /// The body went past `Upload-Length`; `stored` bytes before it were
    /// kept.
    TooLong { stored: u64 },
}

/// One PATCH at work.
struct Patch<'a> {
    uploads: &'a Uploads,
    owned: OwnedImport,
    holder: &'a str,
    start: u64,
    length: u64,
}

impl Patch<'_> {
    /// Streams the body into the storage. Returns the bytes stored; a body
    /// that breaks off (the client went away) still counts what was
    /// stored.
    async fn stream<S, E>(&mut self, state: &mut UploadState, mut body: S) -> Result<u64, Ended>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let uploads = self.uploads;
        let id = self.owned.import.id.clone();
        let mut writer = match uploads.bytes.open(&id, self.start, &state.parts).await {
            Ok(writer) => writer,
            Err(err) => return Err(self.storage_failed(&err).await),
        };
        let mut head = state.head();
        let mut received = 0u64;
        let mut next_renew = Instant::now() + RENEW_EVERY;
        let last_needed = self.length.min(sniff::SNIFF_BYTES as u64) as usize;
        let mut reported = 0u64;
        // One timer, reset after each commit (not one per socket read).
        let timer = tokio::time::sleep_until(uploads.next_progress_at(&id));
        tokio::pin!(timer);
        loop {
            let pending = writer.stored() > reported;
            let busy = writer.busy();
            let chunk = tokio::select! {
                chunk = body.next() => chunk,
                // A write finishing while the body pauses counts at once.
                settled = writer.settle(), if busy => {
                    if let Err(err) = settled {
                        return Err(self.storage_failed(&err).await);
                    }
                    continue;
                }
                // Stored bytes reach the tabs even while the body pauses.
                _ = &mut timer, if pending => {
                    reported = writer.stored();
                    self.progress(reported).await?;
                    timer.as_mut().reset(Instant::now() + PROGRESS_EVERY);
                    continue;
                }
            };
            let Some(chunk) = chunk else {
                break;
            };
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(err) => {
                    tracing::info!(import_id = %id, error = %err, "upload body broke off");
                    break;
                }
            };
            if self.start + received + chunk.len() as u64 > self.length {
                // What came before this chunk is kept; the request is
                // refused without failing the import (the client resumes).
                if let Err(err) = writer.finish(false).await {
                    return Err(self.storage_failed(&err).await);
                }
                state.parts = writer.parts();
                return Err(Ended::TooLong {
                    stored: writer.stored(),
                });
            }
            if !state.sniffed && head.len() < last_needed {
                let take = (last_needed - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
                if head.len() >= last_needed {
                    if !sniffed_video(&head) {
                        return Err(Ended::Refused("not_a_video", UploadError::NotAVideo));
                    }
                    state.sniffed = true;
                }
                state.set_head(&head);
            }
            received += chunk.len() as u64;
            if let Err(err) = writer.write(chunk).await {
                return Err(self.storage_failed(&err).await);
            }
            if writer.stored() > reported && timer.deadline() <= Instant::now() {
                reported = writer.stored();
                self.progress(reported).await?;
                timer.as_mut().reset(Instant::now() + PROGRESS_EVERY);
            }
            if Instant::now() >= next_renew {
                next_renew = Instant::now() + RENEW_EVERY;
                self.save(writer.stored(), writer.parts(), state).await?;
            }
        }
        let last = self.start + received == self.length;
        if let Err(err) = writer.finish(last).await {
            return Err(self.storage_failed(&err).await);
        }
        state.parts = writer.parts();
        Ok(writer.stored())
    }

    /// A storage failure fails the upload, unless the parts it missed were
    /// joined by an earlier PATCH into the whole file ([`Ended::Joined`]).
    async fn storage_failed(&self, err: &crate::media::storage::StorageError) -> Ended {
        let id = &self.owned.import.id;
        if matches!(err, crate::media::storage::StorageError::NotFound)
            && self.uploads.bytes.joined(id).await == Some(self.length)
        {
            return Ended::Joined;
        }
        tracing::error!(import_id = %id, error = %err, "upload storage failed");
        Ended::Refused("storage_error", UploadError::Storage)
    }

    async fn progress(&mut self, stored: u64) -> Result<(), Ended> {
        let done = self.start + stored;
        match self
            .uploads
            .report(self.owned.clone(), done, self.length)
            .await
        {
            Ok(Some(owned)) => {
                self.owned = owned;
                Ok(())
            }
            Ok(None) => Err(Ended::Cancelled),
            Err(err) => {
                tracing::warn!(import_id = %self.owned.import.id, error = %err, "could not commit upload progress");
                Ok(())
            }
        }
    }

    /// Saves the offset stored so far and renews the hold.
    async fn save(
        &self,
        stored: u64,
        parts: StoredParts,
        state: &UploadState,
    ) -> Result<(), Ended> {
        let mut state = state.clone();
        state.parts = parts;
        let row = UploadRow {
            id: self.owned.import.id.clone(),
            user_id: self.owned.user_id.clone(),
            length: self.length,
            offset: self.start + stored,
            expires_at: self.uploads.expiry(),
            state: serde_json::to_string(&state).unwrap_or_default(),
        };
        match self
            .uploads
            .imports
            .store
            .save_upload(&row, self.holder, Some(HOLD))
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(Ended::Lost),
            Err(err) => {
                tracing::warn!(import_id = %row.id, error = %err, "could not renew an upload's hold");
                Ok(())
            }
        }
    }
}
