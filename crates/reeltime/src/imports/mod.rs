//! Imports: the service behind the REST API (in `http::imports`), the job
//! runner and the sources (a URL download, a synthetic load-test import;
//! [`source`]).
//!
//! Every change to an import goes through [`ImportService::commit`] (a delete
//! through its twin [`ImportService::commit_removal`]): a compare-and-set write on
//! `version` in the store, then one publish on the bus. That single path is what keeps versions strictly increasing and
//! sockets in step with the database, whoever made the change.
//!
//! Except progress: a running job publishes its ticks from memory
//! ([`ImportService::publish_tick`]) and stores them later
//! ([`ImportService::persist`]); versions stay strictly increasing across
//! crashes because they are handed out in blocks ([`VERSION_BLOCK`],
//! [`ImportService::commit_over_ticks`]; docs/architecture.md, "Progress
//! off the durable path").

pub mod fetch;
pub mod guard;
mod held_notes;
pub mod limits;
mod line;
pub mod reports;
mod runner;
mod snapshots;
pub mod sniff;
pub mod source;
pub mod uploads;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use reeltime_protocol::{Import, ImportError, ImportStatus};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use held_notes::StoreNotes;
pub use runner::{JobSettings, MediaWork, Runner};
pub use source::{NewImport, SourceSpec, Sources};

use crate::bus::Bus;
use crate::events::ImportEvent;
use crate::media::MediaSigner;
use crate::media::storage::MediaStorage;
use crate::metrics::Metrics;
use crate::store::{GroupCommit, OwnedImport, Store, StoreError, TOMBSTONE_RETENTION};

/// Attempts an import gets across restarts before failing `interrupted`.
pub const MAX_ATTEMPTS: u32 = 3;

/// Largest `metadata` an import carries, serialized: it travels in every
/// change of the import to every tab, so it stays small.
pub const MAX_METADATA_BYTES: usize = 4096;

/// Failures of import operations, each with the HTTP answer it deserves.
#[derive(Debug, thiserror::Error)]
pub enum ImportServiceError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    UrlNotAllowed(String),
    #[error("you have {max} imports that have not finished; wait for one to finish, or cancel one")]
    TooManyActive { max: u64 },
    #[error("too many new imports; try again in {} s", limits::retry_after_secs(*retry_after))]
    RateLimited { retry_after: Duration },
    #[error("import not found")]
    NotFound,
    #[error("import already finished")]
    AlreadyFinished,
    #[error("import is still running")]
    StillRunning,
    #[error("{0}")]
    InvalidMetadata(String),
    /// A report about an import that a node runs, not the app's workers.
    #[error("this import is not an external one; only the app's workers' imports take reports")]
    NotExternal,
    /// A report that would move progress back within an attempt.
    #[error("{0}")]
    ProgressBackwards(String),
    /// A final import (completed, failed, cancelled) takes no reports.
    #[error("the import is already {0}")]
    Finished(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not serialize an import: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// The import operations shared by the API and the runner.
pub struct ImportService {
    store: Arc<dyn Store>,
    /// Where every change is written: batched with the changes made at the
    /// same time by other jobs.
    commits: GroupCommit,
    bus: Arc<dyn Bus>,
    /// What a new import is checked by, and what runs it.
    sources: Arc<Sources>,
    limits: limits::ImportLimits,
    creation_rate: limits::CreationRate,
    downloads_dir: PathBuf,
    /// Wakes this node's runner: new work may be waiting in the store.
    work: Notify,
    /// Cancellation handles of running jobs, by import id.
    running: Mutex<HashMap<String, CancellationToken>>,
    links: MediaLinks,
    /// Where finished media lives: the data dir, or S3-compatible storage.
    storage: Arc<dyn MediaStorage>,
    /// The reports of external imports waiting for their turn to be
    /// stored ([`reports`]).
    reports: reports::Pending,
    /// The node's metrics: the runner's lease renewals and waiting lines.
    metrics: Arc<Metrics>,
}

/// What a new import must pass: its source's own checks and the user's
/// limits.
pub struct ImportRules {
    pub sources: Arc<Sources>,
    pub limits: limits::ImportLimits,
}

/// Signs the media links of completed imports each time they are shown.
pub struct MediaLinks {
    pub signer: Arc<MediaSigner>,
    pub ttl: Duration,
}

impl ImportService {
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        rules: ImportRules,
        downloads_dir: PathBuf,
        links: MediaLinks,
        storage: Arc<dyn MediaStorage>,
        metrics: Arc<Metrics>,
    ) -> Arc<ImportService> {
        let ImportRules { sources, limits } = rules;
        Arc::new(ImportService {
            commits: GroupCommit::start(Arc::clone(&store), Arc::clone(&metrics)),
            store,
            bus,
            sources,
            creation_rate: limits::CreationRate::new(limits.rate_per_min, limits.rate_burst),
            limits,
            downloads_dir,
            work: Notify::new(),
            running: Mutex::new(HashMap::new()),
            links,
            storage,
            reports: reports::Pending::default(),
            metrics,
        })
    }

    /// The node's metrics, for the runner.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The per-user limits this node enforces.
    pub fn limits(&self) -> &limits::ImportLimits {
        &self.limits
    }

    /// The registry of import sources.
    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The import as its owner sees it: with fresh signed links to its
    /// video and poster once it has them.
    pub fn present(&self, owned: &OwnedImport) -> Import {
        self.sign_links(&owned.user_id, owned.import.clone())
    }

    /// Presents a list of `user_id`'s imports.
    pub fn present_all(
        &self,
        user_id: &str,
        imports: impl IntoIterator<Item = Import>,
    ) -> Vec<Import> {
        imports
            .into_iter()
            .map(|import| self.sign_links(user_id, import))
            .collect()
    }

    fn sign_links(&self, user_id: &str, mut import: Import) -> Import {
        if let Some(serde_json::Value::Object(result)) = import.result.as_mut() {
            for (file_key, url_key) in [
                ("video_file", "video_url"),
                ("thumbnail_file", "thumbnail_url"),
            ] {
                if let Some(file) = result.get(file_key).and_then(|f| f.as_str()) {
                    let url = self
                        .links
                        .signer
                        .sign(&import.id, file, user_id, self.links.ttl);
                    result.insert(url_key.to_string(), serde_json::Value::String(url));
                }
            }
        }
        import
    }

    /// Where finished media is kept and served from.
    pub fn storage(&self) -> &Arc<dyn MediaStorage> {
        &self.storage
    }

    /// Where an import's files live while it is worked on.
    pub fn dir_of(&self, import_id: &str) -> PathBuf {
        self.downloads_dir.join(import_id)
    }

    /// Checks the new import with its source's rules, stores it as
    /// `queued`, tells the user's sockets, and queues the job. The user's
    /// creation rate is checked first (before a URL's name lookup, which
    /// costs), and the cap on unfinished imports as the import is stored.
    pub async fn create(
        &self,
        user_id: &str,
        new: NewImport,
    ) -> Result<Import, ImportServiceError> {
        check_metadata(new.metadata.as_ref())?;
        self.creation_rate
            .take(user_id)
            .map_err(|retry_after| ImportServiceError::RateLimited { retry_after })?;
        self.store_new(user_id, new).await
    }

    /// [`ImportService::create`] for the app's backend (`POST
    /// /api/server/imports`): the per-user creation rate is for browsers
    /// and is not applied to the app's own authenticated backend; every
    /// other check is. An external import also skips the cap of
    /// unfinished imports (it costs the nodes nothing but its row).
    pub async fn create_from_server(
        &self,
        user_id: &str,
        new: NewImport,
    ) -> Result<Import, ImportServiceError> {
        check_metadata(new.metadata.as_ref())?;
        self.store_new(user_id, new).await
    }

    async fn store_new(&self, user_id: &str, new: NewImport) -> Result<Import, ImportServiceError> {
        let runs_on_nodes = self
            .sources
            .get(new.source.kind())
            .map_err(|unknown| ImportServiceError::BadRequest(unknown.to_string()))?
            .runs_on_nodes();
        let owned = self.new_import(user_id, new).await?;
        let max = self.limits.max_active_per_user;
        if !runs_on_nodes {
            self.store.insert_import(&owned).await?;
        } else if !self.store.insert_import_within(&owned, max).await? {
            return Err(ImportServiceError::TooManyActive { max });
        }
        self.publish(&owned).await?;
        if runs_on_nodes {
            self.work_arrived();
        }
        Ok(self.present(&owned))
    }

    /// A new `queued` import of `user_id`, checked by its source, not yet
    /// stored: what every kind of creation starts from.
    async fn new_import(
        &self,
        user_id: &str,
        new: NewImport,
    ) -> Result<OwnedImport, ImportServiceError> {
        let accepted = self.sources.accept(&new.source).await?;
        let title = new
            .title
            .as_deref()
            .map(str::trim)
            .filter(|title| !title.is_empty())
            .map(|title| title.chars().take(200).collect())
            .unwrap_or(accepted.default_title);
        let now = Utc::now();
        let import = Import {
            id: uuid::Uuid::now_v7().to_string(),
            status: ImportStatus::Queued,
            stage: None,
            progress: Some(0.0),
            bytes_done: 0,
            bytes_total: None,
            version: 1,
            attempt: 1,
            source: accepted.source,
            source_url: accepted.source_url,
            file_name: accepted.file_name,
            title,
            error: None,
            result: None,
            metadata: new.metadata,
            queue_position: None,
            created_at: now,
            updated_at: now,
        };
        Ok(OwnedImport::new(user_id, import))
    }

    /// The import if `user_id` owns it. Another user's import is "not
    /// found", never "forbidden": its existence is not theirs to learn.
    pub async fn get_owned(
        &self,
        user_id: &str,
        id: &str,
    ) -> Result<OwnedImport, ImportServiceError> {
        match self.store.get_import(id).await? {
            Some(owned) if owned.user_id == user_id => Ok(owned),
            _ => Err(ImportServiceError::NotFound),
        }
    }

    /// Cancels a queued or running import; the runner stops and cleans up.
    pub async fn cancel(&self, user_id: &str, id: &str) -> Result<Import, ImportServiceError> {
        loop {
            let owned = self.get_owned(user_id, id).await?;
            if owned.import.status.is_final() {
                return Err(ImportServiceError::AlreadyFinished);
            }
            let mut next = owned.clone();
            next.import.status = ImportStatus::Cancelled;
            next.import.stage = None;
            next.import.queue_position = None;
            // The job may have published progress above the stored
            // version: the cancel goes above all of it.
            if self
                .commit_over_ticks(&mut next, owned.stored_version)
                .await?
            {
                // An upload's bytes were handed to the sweeper by the
                // commit (write_and_publish).
                self.stop_job(id);
                return Ok(self.present(&next));
            }
            // The job moved on in between: read again and retry.
        }
    }

    /// Deletes a finished import and its files. The delete is a change like
    /// any other: a tombstone is written compare-and-set on `version` and
    /// published (see [`ImportService::commit_removal`]), so every socket of the
    /// user learns of it.
    pub async fn delete(&self, user_id: &str, id: &str) -> Result<(), ImportServiceError> {
        loop {
            let owned = self.get_owned(user_id, id).await?;
            if !owned.import.status.is_final() {
                return Err(ImportServiceError::StillRunning);
            }
            if self.commit_removal(&owned).await? {
                break;
            }
            // Changed in between (another tab deleted it, or a late write):
            // read again; a tombstone reads as not found.
        }
        match self.store.purge_tombstones(TOMBSTONE_RETENTION).await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "expired tombstones purged"),
            Err(err) => tracing::warn!(error = %err, "could not purge expired tombstones"),
        }
        if let Err(err) = self.storage.delete_import(id).await {
            tracing::warn!(import_id = id, error = %err, "could not remove stored media");
        }
        let dir = self.dir_of(id);
        if let Err(err) = tokio::fs::remove_dir_all(&dir).await
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(import_id = id, error = %err, "could not remove import files");
        }
        Ok(())
    }

    /// [`ImportService::commit`] for a delete: replaces `owned` by its tombstone
    /// if the stored version is still the one read, then publishes
    /// `import_removed` at the tombstone's version. Returns false when
    /// someone else changed the import first.
    async fn commit_removal(&self, owned: &OwnedImport) -> Result<bool, ImportServiceError> {
        let expected = owned.import.version;
        if !self
            .store
            .remove_import(&owned.user_id, &owned.import.id, expected)
            .await?
        {
            return Ok(false);
        }
        let event = ImportEvent::removed(&owned.user_id, &owned.import.id, expected + 1)?;
        self.send(event).await;
        Ok(true)
    }

    /// Writes `owned` if the stored version is still `expected`, one
    /// version above the last this copy published, then publishes it.
    /// Returns false when someone else changed the import first (the
    /// caller re-reads).
    ///
    /// For a change by whoever holds the newest state: a copy just read
    /// from the store, or the job running the import (whose copy is ahead
    /// of the store by the progress it published from memory). Anyone else
    /// changing a running import uses [`ImportService::commit_over_ticks`].
    pub async fn commit(
        &self,
        owned: &mut OwnedImport,
        expected: u64,
    ) -> Result<bool, ImportServiceError> {
        let version = owned.import.version.max(expected) + 1;
        self.write_and_publish(owned, expected, version).await
    }

    /// [`ImportService::commit`] for a change made beside the job that
    /// runs the import, or after it (a cancel, a resume by another node or
    /// after a crash): that job may have published progress from memory
    /// with versions up to the end of the stored version's block, so this
    /// change takes the first version of the next block, above all of them.
    pub async fn commit_over_ticks(
        &self,
        owned: &mut OwnedImport,
        expected: u64,
    ) -> Result<bool, ImportServiceError> {
        let version = next_block(expected).max(owned.import.version + 1);
        self.write_and_publish(owned, expected, version).await
    }

    async fn write_and_publish(
        &self,
        owned: &mut OwnedImport,
        expected: u64,
        version: u64,
    ) -> Result<bool, ImportServiceError> {
        owned.import.version = version;
        owned.import.updated_at = Utc::now().max(owned.import.updated_at);
        if !self.commits.update_import(owned, expected).await? {
            return Ok(false);
        }
        owned.stored_version = version;
        owned.unstored_since = None;
        self.publish(owned).await?;
        if owned.import.status.is_final()
            && owned.import.source == reeltime_protocol::ImportSource::Upload
        {
            // Its uploaded bytes are no longer needed: the sweeper frees
            // them (a PATCH in flight lets go of them when it sees the
            // end). With S3 they stayed in the bucket until now, so that
            // any node could take them again (uploads::keep_for_runner).
            if let Err(err) = self.store.expire_upload(&owned.import.id).await {
                // The sweeper's own recheck frees them later.
                tracing::warn!(import_id = %owned.import.id, error = %err, "could not expire an upload");
            }
        }
        Ok(true)
    }

    /// Publishes a progress-only change of a running import from memory,
    /// one version up, without writing it: the job stores it later
    /// ([`ImportService::persist`]). A tick that would reach the end of the
    /// stored version's block is stored first (a plain commit), so that
    /// nothing published ever lies beyond the block of what is stored.
    /// Returns false when that write found the import changed.
    pub async fn publish_tick(&self, owned: &mut OwnedImport) -> Result<bool, ImportServiceError> {
        let version = owned.import.version + 1;
        if version >= next_block(owned.stored_version) {
            return self.commit(owned, owned.stored_version).await;
        }
        owned.import.version = version;
        owned.import.updated_at = Utc::now().max(owned.import.updated_at);
        owned
            .unstored_since
            .get_or_insert_with(std::time::Instant::now);
        self.publish(owned).await?;
        Ok(true)
    }

    /// Writes the state a running job last published, if the store is
    /// behind it (compare-and-set on the stored version), then publishes it
    /// again. Most sockets have that version and their connection's filter
    /// drops the copy; the one it is for connected after the last tick and
    /// got a snapshot read from the store, which was behind. Without it, a
    /// download that stalls right after a tick would show that socket the
    /// old progress until the next change, which can be 30 s away. Returns
    /// false when someone else changed the import first: the job has lost
    /// it (cancelled, or taken over by another node).
    pub async fn persist(&self, owned: &mut OwnedImport) -> Result<bool, ImportServiceError> {
        if owned.import.version == owned.stored_version {
            owned.unstored_since = None;
            return Ok(true);
        }
        if !self
            .commits
            .update_import(owned, owned.stored_version)
            .await?
        {
            return Ok(false);
        }
        owned.stored_version = owned.import.version;
        owned.unstored_since = None;
        self.publish(owned).await?;
        Ok(true)
    }

    async fn publish(&self, owned: &OwnedImport) -> Result<(), ImportServiceError> {
        let event = ImportEvent::new(&owned.user_id, &self.present(owned))?;
        if owned.import.version == owned.stored_version {
            self.send(event).await;
        } else if let Err(err) = self.bus.publish_unstored(event).await {
            // A tick from memory: the next one, or the next status change,
            // replaces it.
            tracing::warn!(error = %err, "publish failed");
        }
        Ok(())
    }

    async fn send(&self, event: Arc<ImportEvent>) {
        if let Err(err) = self.bus.publish(event).await {
            // The state is stored: sockets catch up from the next snapshot.
            tracing::warn!(error = %err, "publish failed");
        }
    }

    /// Tells this node's runner to look for work now rather than at its
    /// next poll.
    pub fn work_arrived(&self) {
        self.work.notify_one();
    }

    /// Resolves when [`ImportService::work_arrived`] was called.
    pub async fn wait_for_work(&self) {
        self.work.notified().await
    }

    /// Ids of the jobs running on this node.
    pub fn running_ids(&self) -> Vec<String> {
        self.running
            .lock()
            .map(|running| running.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn register_job(&self, id: &str, token: CancellationToken) {
        if let Ok(mut running) = self.running.lock() {
            running.insert(id.to_string(), token);
        }
    }

    fn forget_job(&self, id: &str) {
        if let Ok(mut running) = self.running.lock() {
            running.remove(id);
        }
    }

    /// Stops the job of `id` on this node, if it runs here.
    pub fn stop_job(&self, id: &str) {
        if let Some(token) = self.running.lock().ok().and_then(|r| r.get(id).cloned()) {
            token.cancel();
        }
    }
}

/// Versions are handed out in blocks of this many. The job running an
/// import publishes progress from memory with versions above the stored
/// one but below the end of its block; every other writer jumps to the next
/// block ([`ImportService::commit_over_ticks`]). A thousand keeps versions
/// readable and makes a forced write (a tick reaching the block's end)
/// rare: one per 100 s of ticks at ten a second.
pub const VERSION_BLOCK: u64 = 1000;

/// The first version of the block after the one `version` is in.
pub fn next_block(version: u64) -> u64 {
    (version / VERSION_BLOCK + 1) * VERSION_BLOCK
}

/// Refuses `metadata` that is not a JSON object of at most
/// [`MAX_METADATA_BYTES`] serialized.
pub fn check_metadata(metadata: Option<&serde_json::Value>) -> Result<(), ImportServiceError> {
    let Some(metadata) = metadata else {
        return Ok(());
    };
    if !metadata.is_object() {
        return Err(ImportServiceError::InvalidMetadata(
            "metadata must be a JSON object".into(),
        ));
    }
    let size = serde_json::to_string(metadata)?.len();
    if size > MAX_METADATA_BYTES {
        return Err(ImportServiceError::InvalidMetadata(format!(
            "metadata is {size} bytes serialized; at most {MAX_METADATA_BYTES} are allowed"
        )));
    }
    Ok(())
}

/// Marks an import failed with a code and a sentence for people.
pub fn fail(import: &mut Import, code: &str, message: impl Into<String>) {
    import.status = ImportStatus::Failed;
    import.stage = None;
    import.queue_position = None;
    import.error = Some(ImportError {
        code: code.to_string(),
        message: message.into(),
    });
}
