//! Runs import jobs server-side, whatever the sockets do: a job belongs to
//! the server, not to the browser tab that started it.
//!
//! A job is one task that goes through two lines: it waits for a download
//! slot, downloads, then waits for a processing slot and does the media
//! work. Each line is FIFO and tells waiting imports their place
//! (`queue_position`).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reeltime_protocol::{Import, ImportStatus};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

use super::fetch::{Downloaded, FetchError, Fetcher, Progress};
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

/// One FIFO line of waiting imports with the slots they wait for.
struct Line {
    slots: Arc<Semaphore>,
    waiting: Mutex<Vec<String>>,
}

impl Line {
    fn new(slots: usize) -> Line {
        Line {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            waiting: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        match self.waiting.lock() {
            Ok(waiting) => waiting,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// Takes queued imports and runs them.
pub struct Runner {
    imports: Arc<Imports>,
    fetcher: Fetcher,
    media: Option<MediaWork>,
    downloads: Line,
    processing: Line,
    shutdown: CancellationToken,
    tasks: TaskTracker,
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
        download_slots: usize,
        process_slots: usize,
        shutdown: CancellationToken,
    ) -> Arc<Runner> {
        Arc::new(Runner {
            imports,
            fetcher,
            media,
            downloads: Line::new(download_slots),
            processing: Line::new(process_slots),
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

    /// Requeues what a crash or shutdown left unfinished (attempt + 1), and
    /// fails what has had [`MAX_ATTEMPTS`] already. Nothing stays running
    /// forever. An import stopped while processing keeps its download.
    pub async fn resume_unfinished(&self) -> anyhow::Result<()> {
        for mut owned in self.imports.store().unfinished_imports().await? {
            let id = owned.import.id.clone();
            let expected = owned.import.version;
            if owned.import.status == ImportStatus::Queued {
                self.imports.enqueue(&id);
                continue;
            }
            let dir = self.imports.dir_of(&id);
            if owned.import.attempt >= MAX_ATTEMPTS {
                remove_dir(&dir).await;
                fail(
                    &mut owned.import,
                    "interrupted",
                    format!(
                        "the import was interrupted {MAX_ATTEMPTS} times by server restarts; start it again"
                    ),
                );
                self.imports.commit(&mut owned, expected).await?;
                continue;
            }
            let import = &mut owned.import;
            import.attempt += 1;
            let source = find_source(&dir).await;
            if import.status == ImportStatus::Processing && source.is_some() {
                remove_outputs(&dir).await;
                import.stage = Some(stage::WAITING_FOR_PROCESSING.into());
                import.progress = Some(self.download_share());
            } else {
                remove_dir(&dir).await;
                import.status = ImportStatus::Queued;
                import.stage = None;
                import.progress = Some(0.0);
                import.bytes_done = 0;
                import.bytes_total = None;
            }
            if self.imports.commit(&mut owned, expected).await? {
                tracing::info!(import_id = %id, attempt = owned.import.attempt, "resuming import");
                self.imports.enqueue(&id);
            }
        }
        Ok(())
    }

    /// Takes ids off the queue until shutdown; each becomes a job task.
    pub async fn run(self: Arc<Self>, mut jobs: mpsc::UnboundedReceiver<String>) {
        loop {
            let id = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                id = jobs.recv() => match id {
                    Some(id) => id,
                    None => break,
                },
            };
            let runner = Arc::clone(&self);
            self.tasks.spawn(async move { runner.run_job(&id).await });
        }
        self.tasks.close();
    }

    /// Waits for running jobs to save their state after shutdown began.
    pub async fn wait_stopped(&self, grace: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(grace, self.tasks.wait()).await.is_ok()
    }

    async fn run_job(&self, id: &str) {
        let owned = match self.imports.store().get_import(id).await {
            Ok(Some(owned)) => owned,
            Ok(None) => return,
            Err(err) => {
                tracing::error!(import_id = id, error = %err, "could not load import");
                return;
            }
        };
        let stop = self.shutdown.child_token();
        self.imports.register_job(id, stop.clone());
        let result = match owned.import.status {
            ImportStatus::Queued if owned.import.source_url.starts_with("synthetic:") => {
                super::synthetic::run(&self.imports, owned, &stop).await
            }
            ImportStatus::Queued => self.download_then_process(owned, &stop).await,
            ImportStatus::Processing => self.process(owned, &stop).await,
            _ => Ok(()),
        };
        if let Err(err) = result {
            tracing::error!(import_id = id, error = %err, "import job failed to save its state");
        }
        self.imports.forget_job(id);
    }

    async fn download_then_process(
        &self,
        owned: OwnedImport,
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
        let (progress_tx, progress_rx) = watch::channel(Progress::default());
        let part = dir.join("source.part");
        let share = self.download_share();
        let download = self.fetcher.download(&url, &part, &progress_tx);
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
        self.complete(owned, &dir, result).await
    }

    /// Waits for a slot in `line`, telling the import its place meanwhile.
    /// Returns `None` when the job should not go on (cancelled, stopped,
    /// changed by someone else).
    async fn wait_in_line(
        &self,
        line: &Line,
        owned: OwnedImport,
        stop: &CancellationToken,
    ) -> Result<Option<(OwnedImport, OwnedSemaphorePermit)>, ImportsError> {
        let id = owned.import.id.clone();
        let slots = Arc::clone(&line.slots);
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                let position = {
                    let mut waiting = line.lock();
                    waiting.push(id.clone());
                    waiting.len()
                };
                self.set_queue_position(&id, Some(position as u64)).await;
                let acquired = tokio::select! {
                    _ = stop.cancelled() => None,
                    slot = slots.acquire_owned() => slot.ok(),
                };
                self.leave_line(line, &id).await;
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

    /// Removes `id` from the line and tells the ones behind it they moved up.
    async fn leave_line(&self, line: &Line, id: &str) {
        let behind: Vec<(String, u64)> = {
            let mut waiting = line.lock();
            let Some(index) = waiting.iter().position(|other| other == id) else {
                return;
            };
            waiting.remove(index);
            waiting
                .iter()
                .enumerate()
                .skip(index)
                .map(|(at, other)| (other.clone(), at as u64 + 1))
                .collect()
        };
        for (other, position) in behind {
            self.set_queue_position(&other, Some(position)).await;
        }
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
                // A user cancel already stored `cancelled` (remove its files);
                // a shutdown leaves the state for the next start to resume.
                if !self.shutdown.is_cancelled() {
                    remove_dir(dir).await;
                } else if owned.import.status == ImportStatus::Downloading {
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

    async fn complete(
        &self,
        mut owned: OwnedImport,
        dir: &Path,
        result: serde_json::Value,
    ) -> Result<(), ImportsError> {
        let expected = owned.import.version;
        let import = &mut owned.import;
        import.status = ImportStatus::Completed;
        import.stage = None;
        import.queue_position = None;
        import.progress = Some(1.0);
        import.result = Some(result);
        if !self.imports.commit(&mut owned, expected).await? {
            remove_dir(dir).await; // cancelled at the last moment
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
