//! Runs import jobs server-side, whatever the sockets do: a job belongs to
//! the server, not to the browser tab that started it.
//!
//! A job is one task that goes through two lines: it waits for a download
//! slot, downloads, then waits for a processing slot and does the media
//! work. Each line serves users in turn ([`Line`]) and tells waiting
//! imports their place (`queue_position`).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reeltime_protocol::{Import, ImportStatus};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

use super::fetch::{Downloaded, FetchError, Fetcher, Progress};
use super::line::{Line, Slot};
use super::{Imports, ImportsError, MAX_ATTEMPTS, fail};
use crate::media::{self, MediaError, MediaTools, Probe, TranscodeMode};
use crate::store::OwnedImport;

/// Progress reaches sockets at most this often per import; status changes
/// and final states go out at once.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Share of the progress bar the download takes when media work follows;
/// the rest is processing. Without ffmpeg the download is the whole bar.
const DOWNLOAD_SHARE: f64 = 0.5;
/// Where the transcode starts on the bar (after probe and poster).
const TRANSCODE_FROM: f64 = 0.55;

/// Stage names a UI can show.
pub mod stage {
    pub const DOWNLOADING: &str = "downloading";
    pub const WAITING_FOR_PROCESSING: &str = "waiting_for_processing";
    pub const PROBING: &str = "probing";
    pub const POSTER: &str = "making_poster";
    pub const TRANSCODING: &str = "transcoding";
}

/// Media processing settings, present when ffmpeg was found.
pub struct MediaWork {
    pub tools: MediaTools,
    pub mode: TranscodeMode,
    pub stall_timeout: Duration,
}

/// How this node takes part in running jobs.
pub struct JobSettings {
    /// This node's id, written as the owner of the leases it holds.
    pub node: String,
    /// How long a claimed import stays this node's without a renewal.
    pub lease: Duration,
    pub download_slots: usize,
    pub process_slots: usize,
    /// Media longer than this fails `too_long` after the probe.
    pub max_duration: Duration,
}

/// How often the runner looks for work it was not woken for (imports
/// created on other nodes, leases that ran out).
const POLL_EVERY: Duration = Duration::from_secs(1);
/// Waiting imports told their place in line, at most.
const POSITIONS_SHOWN: i64 = 1000;

/// Claims imports from the store and runs them.
pub struct Runner {
    imports: Arc<Imports>,
    fetcher: Fetcher,
    media: Option<MediaWork>,
    node: String,
    lease: Duration,
    download_slots: usize,
    downloads: Arc<Line>,
    processing: Arc<Line>,
    max_duration: Duration,
    /// Held from the last quota check of a completing import to its
    /// commit, so that two of one user's imports completing on this node
    /// cannot both fit in the same remaining bytes.
    quota_gate: tokio::sync::Mutex<()>,
    /// Claimed jobs that have not finished their download phase: what
    /// limits how many more this node claims.
    download_phase: Arc<std::sync::atomic::AtomicUsize>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// Held by a job until it leaves the download phase.
struct DownloadPhase(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for DownloadPhase {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How a stage ended.
enum Outcome<T> {
    Done(T),
    Failed(&'static str, String),
    /// Cancelled by the user or stopped by shutdown: nothing more to write.
    Stopped,
}

impl From<FetchError> for Outcome<Downloaded> {
    fn from(err: FetchError) -> Self {
        Outcome::Failed(err.code(), err.to_string())
    }
}

impl<T> From<MediaError> for Outcome<T> {
    fn from(err: MediaError) -> Self {
        if err.is_cancelled() {
            Outcome::Stopped
        } else {
            Outcome::Failed(err.code(), err.message)
        }
    }
}

impl Runner {
    pub fn new(
        imports: Arc<Imports>,
        fetcher: Fetcher,
        media: Option<MediaWork>,
        jobs: JobSettings,
        shutdown: CancellationToken,
    ) -> Arc<Runner> {
        Arc::new(Runner {
            imports,
            fetcher,
            media,
            node: jobs.node,
            lease: jobs.lease,
            download_slots: jobs.download_slots.max(1),
            downloads: Line::new(jobs.download_slots),
            processing: Line::new(jobs.process_slots),
            max_duration: jobs.max_duration,
            quota_gate: tokio::sync::Mutex::new(()),
            download_phase: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            shutdown,
            tasks: TaskTracker::new(),
        })
    }

    /// Whether imports get media processing (ffmpeg found).
    pub fn media_processing(&self) -> bool {
        self.media.is_some()
    }

    fn download_share(&self) -> f64 {
        if self.media.is_some() {
            DOWNLOAD_SHARE
        } else {
            1.0
        }
    }

    /// The job loop: claim what this node has room for, renew its leases,
    /// and look again when woken or every [`POLL_EVERY`]. Returns when
    /// shutdown begins. A store only this node can use (SQLite) first takes
    /// back the leases a crashed run left behind.
    pub async fn run(self: Arc<Self>) {
        if !self.imports.store().shared()
            && let Err(err) = self.imports.store().release_leases(None).await
        {
            tracing::error!(error = %err, "could not reset job leases");
        }
        let mut renew = tokio::time::interval(self.lease / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.claim_round().await;
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = self.imports.wait_for_work() => {}
                _ = tokio::time::sleep(POLL_EVERY) => {}
                _ = renew.tick() => self.renew_leases().await,
            }
        }
        self.tasks.close();
    }

    /// Claims as many imports as there are free download slots, starts a
    /// job for each, and tells the rest of the line their place.
    async fn claim_round(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        let busy = self.download_phase.load(Ordering::SeqCst);
        let room = self.download_slots.saturating_sub(busy);
        if room > 0 {
            let claimed = self
                .imports
                .store()
                .claim_imports(&self.node, room, self.lease)
                .await;
            match claimed {
                Ok(claimed) => {
                    let running = self.imports.running_ids();
                    for owned in claimed {
                        // This node's own lease ran out (the node was
                        // paused, or the database was out of reach, for
                        // longer than the lease) and no other node took the
                        // import: the claim renewed the lease, and the job
                        // still runs here. A second job beside it would
                        // download again into the same directory.
                        if running.contains(&owned.import.id) {
                            continue;
                        }
                        self.download_phase.fetch_add(1, Ordering::SeqCst);
                        let phase = DownloadPhase(Arc::clone(&self.download_phase));
                        let runner = Arc::clone(self);
                        self.tasks
                            .spawn(async move { runner.run_job(owned, phase).await });
                    }
                }
                Err(err) => tracing::error!(error = %err, "could not claim imports"),
            }
        }
        self.refresh_queue_positions().await;
    }

    /// Extends this node's leases; a job whose lease was lost (it ran out
    /// and another node claimed the import) is stopped, so no import runs
    /// on two nodes for longer than it takes to notice.
    async fn renew_leases(&self) {
        match self
            .imports
            .store()
            .renew_leases(&self.node, self.lease)
            .await
        {
            Ok(held) => {
                for id in self.imports.running_ids() {
                    if !held.contains(&id) {
                        tracing::warn!(import_id = %id, "lease lost; stopping the job here");
                        self.imports.stop_job(&id);
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "could not renew job leases"),
        }
    }

    /// Gives each waiting import its place in the line (1 = next).
    async fn refresh_queue_positions(&self) {
        let waiting = match self.imports.store().waiting_imports(POSITIONS_SHOWN).await {
            Ok(waiting) => waiting,
            Err(err) => {
                tracing::warn!(error = %err, "could not read the waiting line");
                return;
            }
        };
        for (index, mut owned) in waiting.into_iter().enumerate() {
            let position = Some(index as u64 + 1);
            if owned.import.queue_position == position {
                continue;
            }
            let expected = owned.import.version;
            owned.import.queue_position = position;
            // A lost race means someone else moved it on: nothing to do.
            if let Err(err) = self.imports.commit(&mut owned, expected).await {
                tracing::warn!(error = %err, "could not update a queue position");
            }
        }
    }

    /// Waits for running jobs to save their state after shutdown began.
    pub async fn wait_stopped(&self, grace: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(grace, self.tasks.wait()).await.is_ok()
    }

    async fn run_job(&self, owned: OwnedImport, phase: DownloadPhase) {
        let id = owned.import.id.clone();
        let stop = self.shutdown.child_token();
        self.imports.register_job(&id, stop.clone());
        let result = self.start(owned, phase, &stop).await;
        if let Err(err) = result {
            tracing::error!(import_id = %id, error = %err, "import job failed to save its state");
        }
        self.imports.forget_job(&id);
        // Hand the import back at once (drain, or done): another node, or
        // this one after a restart, may take it without waiting for the
        // lease to run out.
        if let Err(err) = self.imports.store().release_lease(&self.node, &id).await {
            tracing::warn!(import_id = %id, error = %err, "could not release lease");
        }
        self.imports.work_arrived();
    }

    /// Starts a claimed import where it stands. One found downloading or
    /// processing was interrupted (a crash, a restart, a node that died):
    /// it gets attempt + 1, or fails `interrupted` after [`MAX_ATTEMPTS`].
    async fn start(
        &self,
        mut owned: OwnedImport,
        phase: DownloadPhase,
        stop: &CancellationToken,
    ) -> Result<(), ImportsError> {
        let id = owned.import.id.clone();
        let synthetic = owned.import.source_url.starts_with("synthetic:");
        if owned.import.status != ImportStatus::Queued {
            let dir = self.imports.dir_of(&id);
            let expected = owned.import.version;
            if owned.import.attempt >= MAX_ATTEMPTS {
                remove_dir(&dir).await;
                fail(
                    &mut owned.import,
                    "interrupted",
                    format!(
                        "the import was interrupted {MAX_ATTEMPTS} times (server restarts or failures); start it again"
                    ),
                );
                self.imports.commit(&mut owned, expected).await?;
                return Ok(());
            }
            let import = &mut owned.import;
            import.attempt += 1;
            import.queue_position = None;
            let source = find_source(&dir).await;
            if import.status == ImportStatus::Processing && source.is_some() && !synthetic {
                remove_outputs(&dir).await;
                import.stage = Some(stage::WAITING_FOR_PROCESSING.into());
                import.progress = Some(self.download_share());
                tracing::info!(import_id = %id, attempt = import.attempt, "resuming processing");
                if !self.imports.commit(&mut owned, expected).await? {
                    return Ok(());
                }
                drop(phase);
                return self.process(owned, stop).await;
            }
            remove_dir(&dir).await;
            import.status = ImportStatus::Queued;
            import.stage = None;
            import.progress = Some(0.0);
            import.bytes_done = 0;
            import.bytes_total = None;
            tracing::info!(import_id = %id, attempt = import.attempt, "resuming import");
            if !self.imports.commit(&mut owned, expected).await? {
                return Ok(());
            }
        }
        if synthetic {
            let _phase = phase;
            return super::synthetic::run(&self.imports, owned, stop).await;
        }
        self.download_then_process(owned, phase, stop).await
    }

    async fn download_then_process(
        &self,
        owned: OwnedImport,
        phase: DownloadPhase,
        stop: &CancellationToken,
    ) -> Result<(), ImportsError> {
        let Some((mut owned, slot)) = self.wait_in_line(&self.downloads, owned, stop).await? else {
            return Ok(());
        };
        let id = owned.import.id.clone();
        let expected = owned.import.version;
        owned.import.status = ImportStatus::Downloading;
        owned.import.stage = Some(stage::DOWNLOADING.into());
        owned.import.progress = Some(0.0);
        owned.import.queue_position = None;
        if !self.imports.commit(&mut owned, expected).await? {
            return Ok(()); // cancelled before it started
        }

        let dir = self.imports.dir_of(&id);
        let outcome = self.download(&mut owned, &dir, stop).await?;
        drop(slot);
        drop(phase);
        let downloaded = match outcome {
            Outcome::Done(downloaded) => downloaded,
            other => return self.finish_stage(owned, &dir, other).await,
        };
        let source = dir.join(format!("source.{}", downloaded.container));
        if let Err(err) = tokio::fs::rename(dir.join("source.part"), &source).await {
            let outcome: Outcome<()> =
                Outcome::Failed("storage_error", format!("could not keep the file: {err}"));
            return self.finish_stage(owned, &dir, outcome).await;
        }
        owned.import.bytes_done = downloaded.bytes;
        owned.import.bytes_total = Some(downloaded.bytes);
        if self.media.is_none() {
            let result = json!({
                "size_bytes": downloaded.bytes,
                "container": downloaded.container,
                "content_type": downloaded.content_type,
                "media_processing": "skipped",
            });
            return self.complete(owned, &dir, result).await;
        }
        let expected = owned.import.version;
        owned.import.status = ImportStatus::Processing;
        owned.import.stage = Some(stage::WAITING_FOR_PROCESSING.into());
        owned.import.progress = Some(DOWNLOAD_SHARE);
        if !self.imports.commit(&mut owned, expected).await? {
            remove_dir(&dir).await;
            return Ok(());
        }
        self.process(owned, stop).await
    }

    async fn download(
        &self,
        owned: &mut OwnedImport,
        dir: &Path,
        stop: &CancellationToken,
    ) -> Result<Outcome<Downloaded>, ImportsError> {
        if let Err(err) = tokio::fs::create_dir_all(dir).await {
            return Ok(FetchError::Io(err).into());
        }
        let Ok(url) = Url::parse(&owned.import.source_url) else {
            return Ok(FetchError::NotAllowed("the stored URL is invalid".into()).into());
        };
        let quota_left = match self.quota_left(&owned.user_id).await? {
            Some(0) => return Ok(FetchError::QuotaExceeded { left: 0 }.into()),
            left => left,
        };
        let (progress_tx, progress_rx) = watch::channel(Progress::default());
        let part = dir.join("source.part");
        let share = self.download_share();
        let download = self.fetcher.download(&url, &part, &progress_tx, quota_left);
        let outcome = self
            .track(owned, stop, download, progress_rx, |import, progress| {
                import.bytes_done = progress.done;
                import.bytes_total = progress.total;
                import.progress = progress
                    .total
                    .filter(|total| *total > 0)
                    .map(|total| share * (progress.done as f64 / total as f64).min(1.0));
            })
            .await?;
        Ok(match outcome {
            Outcome::Done(Ok(downloaded)) => Outcome::Done(downloaded),
            Outcome::Done(Err(err)) => err.into(),
            Outcome::Failed(code, message) => Outcome::Failed(code, message),
            Outcome::Stopped => Outcome::Stopped,
        })
    }

    /// Probe, poster, and the web-ready copy when needed.
    async fn process(
        &self,
        owned: OwnedImport,
        stop: &CancellationToken,
    ) -> Result<(), ImportsError> {
        let Some(media) = &self.media else {
            return Ok(());
        };
        let dir = self.imports.dir_of(&owned.import.id);
        let Some(source) = find_source(&dir).await else {
            let outcome: Outcome<()> =
                Outcome::Failed("storage_error", "the downloaded file is missing".into());
            return self.finish_stage(owned, &dir, outcome).await;
        };
        let Some((mut owned, _slot)) = self.wait_in_line(&self.processing, owned, stop).await?
        else {
            return Ok(());
        };

        if !self
            .set_stage(&mut owned, stage::PROBING, DOWNLOAD_SHARE)
            .await?
        {
            return Ok(());
        }
        let probe = match media::probe(&media.tools, &source).await {
            Ok(probe) => probe,
            Err(err) => {
                return self
                    .finish_stage(owned, &dir, Outcome::<()>::from(err))
                    .await;
            }
        };
        if probe.duration_secs > self.max_duration.as_secs_f64() {
            let outcome: Outcome<()> = Outcome::Failed(
                "too_long",
                format!(
                    "the video is {:.0} s long; at most {} s are accepted",
                    probe.duration_secs,
                    self.max_duration.as_secs()
                ),
            );
            return self.finish_stage(owned, &dir, outcome).await;
        }

        if !self
            .set_stage(&mut owned, stage::POSTER, DOWNLOAD_SHARE + 0.02)
            .await?
        {
            return Ok(());
        }
        let poster = dir.join("poster.jpg");
        if let Err(err) = media::poster(
            &media.tools,
            &source,
            &poster,
            &probe,
            stop,
            media.stall_timeout,
        )
        .await
        {
            return self
                .finish_stage(owned, &dir, Outcome::<()>::from(err))
                .await;
        }

        let transcoded = media::needs_transcode(media.mode, &probe);
        let video = if transcoded {
            if !self
                .set_stage(&mut owned, stage::TRANSCODING, TRANSCODE_FROM)
                .await?
            {
                return Ok(());
            }
            let output = dir.join("video.mp4");
            let (progress_tx, progress_rx) = watch::channel(0.0_f64);
            let work = media::transcode(
                &media.tools,
                &source,
                &output,
                &probe,
                &progress_tx,
                stop,
                media.stall_timeout,
            );
            let outcome = self
                .track(&mut owned, stop, work, progress_rx, |import, fraction| {
                    import.progress = Some(
                        TRANSCODE_FROM + (1.0 - TRANSCODE_FROM) * fraction.clamp(0.0, 1.0) * 0.999,
                    );
                })
                .await?;
            match outcome {
                Outcome::Done(Ok(())) => {
                    remove_file(&source).await;
                    output
                }
                Outcome::Done(Err(err)) => {
                    return self
                        .finish_stage(owned, &dir, Outcome::<()>::from(err))
                        .await;
                }
                other => return self.finish_stage(owned, &dir, map_unit(other)).await,
            }
        } else {
            source
        };
        // Describe what is served: after a transcode, that is the new file.
        let served = if transcoded {
            match media::probe(&media.tools, &video).await {
                Ok(probe) => probe,
                Err(err) => {
                    return self
                        .finish_stage(owned, &dir, Outcome::<()>::from(err))
                        .await;
                }
            }
        } else {
            probe
        };
        let result = media_result(&served, &video, transcoded);
        // Checked before the upload too: no bytes are stored for nothing.
        if let Some(outcome) = self.over_quota(&owned.user_id, &result).await? {
            return self.finish_stage(owned, &dir, outcome).await;
        }
        // Put the files where they are served from before anyone gets a link.
        let storage = self.imports.storage();
        let files = result_files(&result);
        let files: Vec<&str> = files.iter().map(String::as_str).collect();
        if let Err(err) =
            media::storage::publish_import(storage.as_ref(), &owned.import.id, &dir, &files).await
        {
            let _ = storage.delete_import(&owned.import.id).await;
            let outcome: Outcome<()> =
                Outcome::Failed("storage_error", format!("could not store the video: {err}"));
            return self.finish_stage(owned, &dir, outcome).await;
        }
        self.complete(owned, &dir, result).await
    }

    /// Waits for a slot in `line`, telling the import its place meanwhile.
    /// Returns `None` when the job should not go on (cancelled, stopped,
    /// changed by someone else).
    async fn wait_in_line(
        &self,
        line: &Arc<Line>,
        owned: OwnedImport,
        stop: &CancellationToken,
    ) -> Result<Option<(OwnedImport, Slot)>, ImportsError> {
        let id = owned.import.id.clone();
        let slot = match line.join(&id, &owned.user_id) {
            Ok(slot) => slot,
            Err(ticket) => {
                self.show_positions(line).await;
                // Dropping the ticket (stop) leaves the line.
                let acquired = tokio::select! {
                    _ = stop.cancelled() => None,
                    slot = ticket.granted() => Some(slot),
                };
                // Whoever was behind moved up.
                self.show_positions(line).await;
                match acquired {
                    Some(slot) => slot,
                    None => return Ok(None),
                }
            }
        };
        // Re-read: the import may have been cancelled while it waited.
        match self.imports.store().get_import(&id).await? {
            Some(fresh) if !fresh.import.status.is_final() && !stop.is_cancelled() => {
                Ok(Some((fresh, slot)))
            }
            _ => Ok(None),
        }
    }

    /// Writes the places in `line` that changed. One writer at a time,
    /// each reading the line's latest order: the last write is never stale.
    async fn show_positions(&self, line: &Line) {
        let _writing = line.publishing.lock().await;
        for (id, position) in line.positions() {
            self.set_queue_position(&id, Some(position)).await;
        }
    }

    /// What `user_id`'s storage quota still allows, `None` without a quota.
    async fn quota_left(&self, user_id: &str) -> Result<Option<u64>, ImportsError> {
        let Some(quota) = self.imports.limits().quota_bytes else {
            return Ok(None);
        };
        let used = self.imports.store().stored_bytes(user_id).await?;
        Ok(Some(quota.saturating_sub(used)))
    }

    /// `quota_exceeded` when keeping `result`'s video would take the user
    /// past their quota.
    async fn over_quota(
        &self,
        user_id: &str,
        result: &serde_json::Value,
    ) -> Result<Option<Outcome<()>>, ImportsError> {
        let Some(left) = self.quota_left(user_id).await? else {
            return Ok(None);
        };
        let size = result["size_bytes"].as_u64().unwrap_or(0);
        if size <= left {
            return Ok(None);
        }
        Ok(Some(Outcome::Failed(
            "quota_exceeded",
            format!("the video takes {size} bytes; your storage quota has {left} bytes left"),
        )))
    }

    async fn set_queue_position(&self, id: &str, position: Option<u64>) {
        for _ in 0..3 {
            let Ok(Some(mut owned)) = self.imports.store().get_import(id).await else {
                return;
            };
            if owned.import.status.is_final() || owned.import.queue_position == position {
                return;
            }
            let expected = owned.import.version;
            owned.import.queue_position = position;
            match self.imports.commit(&mut owned, expected).await {
                Ok(true) => return,
                Ok(false) => continue,
                Err(err) => {
                    tracing::warn!(import_id = id, error = %err, "could not update queue position");
                    return;
                }
            }
        }
    }

    /// Commits a new stage at once (a status-like change, not throttled).
    async fn set_stage(
        &self,
        owned: &mut OwnedImport,
        name: &str,
        progress: f64,
    ) -> Result<bool, ImportsError> {
        let expected = owned.import.version;
        owned.import.stage = Some(name.to_string());
        owned.import.queue_position = None;
        let current = owned.import.progress.unwrap_or(0.0);
        owned.import.progress = Some(current.max(progress));
        self.imports.commit(owned, expected).await
    }

    /// Runs `work` while committing what `progress` reports, at most every
    /// [`PROGRESS_EVERY`], through `apply`. Stops at once on cancel or
    /// shutdown, or when a commit finds the import changed (cancelled).
    async fn track<T, P: Copy>(
        &self,
        owned: &mut OwnedImport,
        stop: &CancellationToken,
        work: impl Future<Output = T>,
        mut progress: watch::Receiver<P>,
        apply: impl Fn(&mut Import, P),
    ) -> Result<Outcome<T>, ImportsError> {
        tokio::pin!(work);
        let mut pending = false;
        let mut next_commit = Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(Outcome::Stopped),
                result = &mut work => return Ok(Outcome::Done(result)),
                changed = progress.changed(), if !pending => {
                    pending = changed.is_ok();
                }
                _ = sleep_until(next_commit), if pending => {
                    pending = false;
                    let value = *progress.borrow_and_update();
                    let expected = owned.import.version;
                    let before = owned.import.progress;
                    apply(&mut owned.import, value);
                    if let (Some(was), Some(now)) = (before, owned.import.progress) {
                        owned.import.progress = Some(now.max(was));
                    }
                    if !self.imports.commit(owned, expected).await? {
                        return Ok(Outcome::Stopped);
                    }
                    next_commit = Instant::now() + PROGRESS_EVERY;
                }
            }
        }
    }

    /// Writes what a failed or stopped stage means, and cleans up.
    async fn finish_stage<T>(
        &self,
        mut owned: OwnedImport,
        dir: &Path,
        outcome: Outcome<T>,
    ) -> Result<(), ImportsError> {
        match outcome {
            Outcome::Done(_) => Ok(()),
            Outcome::Stopped => {
                // A user's cancel stored `cancelled`: its files go. Anything
                // else (shutdown, drain, a lost lease) leaves the saved state
                // and files for whoever resumes it.
                let cancelled = matches!(
                    self.imports.store().get_import(&owned.import.id).await,
                    Ok(Some(fresh)) if fresh.import.status.is_final()
                );
                if cancelled {
                    remove_dir(dir).await;
                } else {
                    remove_file(&dir.join("source.part")).await;
                }
                Ok(())
            }
            Outcome::Failed(code, message) => {
                remove_dir(dir).await;
                tracing::info!(import_id = %owned.import.id, code, error = %message, "import failed");
                let expected = owned.import.version;
                fail(&mut owned.import, code, message);
                self.imports.commit(&mut owned, expected).await?;
                Ok(())
            }
        }
    }

    /// Marks the import completed, after a last quota check (held with
    /// the commit, so this node's completions of one user cannot both fit
    /// in the same remaining bytes).
    async fn complete(
        &self,
        mut owned: OwnedImport,
        dir: &Path,
        result: serde_json::Value,
    ) -> Result<(), ImportsError> {
        let _quota_gate = match self.imports.limits().quota_bytes {
            Some(_) => Some(self.quota_gate.lock().await),
            None => None,
        };
        if let Some(outcome) = self.over_quota(&owned.user_id, &result).await? {
            let _ = self.imports.storage().delete_import(&owned.import.id).await;
            return self.finish_stage(owned, dir, outcome).await;
        }
        let expected = owned.import.version;
        let import = &mut owned.import;
        import.status = ImportStatus::Completed;
        import.stage = None;
        import.queue_position = None;
        import.progress = Some(1.0);
        import.result = Some(result);
        if !self.imports.commit(&mut owned, expected).await? {
            // Cancelled at the last moment.
            remove_dir(dir).await;
            let _ = self.imports.storage().delete_import(&owned.import.id).await;
        }
        Ok(())
    }
}

fn map_unit<T>(outcome: Outcome<T>) -> Outcome<()> {
    match outcome {
        Outcome::Done(_) => Outcome::Done(()),
        Outcome::Failed(code, message) => Outcome::Failed(code, message),
        Outcome::Stopped => Outcome::Stopped,
    }
}

/// The `result` of a processed import, describing the file that is served.
/// File names, not URLs: links are signed when the import is shown, so
/// they never go stale in the store.
fn media_result(served: &Probe, video: &Path, transcoded: bool) -> serde_json::Value {
    let file_name = |path: &Path| {
        path.file_name()
            .map(|name| name.to_string_lossy().into_owned())
    };
    json!({
        "duration_secs": served.duration_secs,
        "width": served.width,
        "height": served.height,
        "container": served.container,
        "video_codec": served.video_codec,
        "audio_codec": served.audio_codec,
        "size_bytes": served.size_bytes,
        "transcoded": transcoded,
        "video_file": file_name(video),
        "thumbnail_file": "poster.jpg",
    })
}

/// The file names a processed import's `result` refers to.
fn result_files(result: &serde_json::Value) -> Vec<String> {
    ["video_file", "thumbnail_file"]
        .iter()
        .filter_map(|key| result[key].as_str().map(str::to_string))
        .collect()
}

/// The downloaded source in an import's directory, if it is complete.
async fn find_source(dir: &Path) -> Option<PathBuf> {
    let mut entries = tokio::fs::read_dir(dir).await.ok()?;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("source.") && name != "source.part" {
            return Some(entry.path());
        }
    }
    None
}

/// Removes what processing makes, keeping the download.
async fn remove_outputs(dir: &Path) {
    remove_file(&dir.join("video.mp4")).await;
    remove_file(&dir.join("poster.jpg")).await;
}

async fn remove_file(path: &Path) {
    if let Err(err) = tokio::fs::remove_file(path).await
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %err, "could not remove file");
    }
}

async fn remove_dir(dir: &Path) {
    if let Err(err) = tokio::fs::remove_dir_all(dir).await
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %err, "could not remove import files");
    }
}
