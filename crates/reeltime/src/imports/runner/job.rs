//! The stages of one job: where a claimed import starts (or resumes), its
//! source's work with throttled progress, then the media stages or its
//! completion. The same for every source: what differs is asked of the
//! [`Source`].

use std::future::Future;
use std::sync::Arc;

use reeltime_protocol::{Import, ImportStatus};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::files::{self, find_source, remove_dir, remove_outputs};
use super::{DownloadPhase, PROGRESS_EVERY, Runner, stage};
use crate::imports::source::{Fetched, Output, Reporter, Resume, Source, SourceJob};
use crate::imports::{ImportServiceError, MAX_ATTEMPTS, fail};
use crate::media::MediaError;
use crate::store::OwnedImport;

/// How a stage ended.
pub(super) enum Outcome<T> {
    Done(T),
    Failed(&'static str, String),
    /// Cancelled by the user or stopped by shutdown: nothing more to write.
    Stopped,
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
    /// Starts a claimed import where it stands. One found downloading or
    /// processing was interrupted (a crash, a restart, a node that died):
    /// it gets attempt + 1, or fails `interrupted` after [`MAX_ATTEMPTS`];
    /// it resumes its media stages if its file is still there, else as its
    /// source's [`Resume`] says.
    pub(super) async fn start(
        &self,
        mut owned: OwnedImport,
        phase: DownloadPhase,
        stop: &CancellationToken,
    ) -> Result<(), ImportServiceError> {
        let id = owned.import.id.clone();
        let source = match self.imports.sources().for_import(&owned.import) {
            Ok(source) => Arc::clone(source),
            Err(unknown) => {
                let expected = owned.stored_version;
                tracing::error!(import_id = %id, error = %unknown, "import of an unknown source");
                fail(&mut owned.import, "unknown_source", unknown.to_string());
                self.imports.commit_over_ticks(&mut owned, expected).await?;
                return Ok(());
            }
        };
        if owned.import.status != ImportStatus::Queued {
            let dir = self.imports.dir_of(&id);
            let expected = owned.stored_version;
            if owned.import.attempt >= MAX_ATTEMPTS {
                remove_dir(&dir).await;
                fail(
                    &mut owned.import,
                    "interrupted",
                    format!(
                        "the import was interrupted {MAX_ATTEMPTS} times (server restarts or failures); start it again"
                    ),
                );
                self.imports.commit_over_ticks(&mut owned, expected).await?;
                return Ok(());
            }
            let import = &mut owned.import;
            import.attempt += 1;
            import.queue_position = None;
            let file = find_source(&dir).await;
            if import.status == ImportStatus::Processing
                && file.is_some()
                && source.output() == Output::File
            {
                remove_outputs(&dir).await;
                import.stage = Some(stage::WAITING_FOR_PROCESSING.into());
                import.progress = Some(self.download_share());
                tracing::info!(import_id = %id, attempt = import.attempt, "resuming processing");
                if !self.imports.commit_over_ticks(&mut owned, expected).await? {
                    return Ok(());
                }
                drop(phase);
                return self.process(owned, stop).await;
            }
            remove_dir(&dir).await;
            if let Resume::NotPossible(why) = source.resume() {
                fail(import, "interrupted", why);
                self.imports.commit_over_ticks(&mut owned, expected).await?;
                return Ok(());
            }
            import.status = ImportStatus::Queued;
            import.stage = None;
            import.progress = Some(0.0);
            import.bytes_done = 0;
            import.bytes_total = None;
            tracing::info!(import_id = %id, attempt = import.attempt, "resuming import");
            if !self.imports.commit_over_ticks(&mut owned, expected).await? {
                return Ok(());
            }
        }
        self.fetch_then_process(source.as_ref(), owned, phase, stop)
            .await
    }

    /// The source's work (in a download slot if it takes one), then the
    /// media stages for a file, or completion for a progress-only source.
    async fn fetch_then_process(
        &self,
        source: &dyn Source,
        owned: OwnedImport,
        phase: DownloadPhase,
        stop: &CancellationToken,
    ) -> Result<(), ImportServiceError> {
        let (mut owned, slot) = if source.waits_in_download_line() {
            match self.wait_in_line(&self.downloads, owned, stop).await? {
                Some((owned, slot)) => (owned, Some(slot)),
                None => return Ok(()),
            }
        } else {
            (owned, None)
        };
        let id = owned.import.id.clone();
        let expected = owned.stored_version;
        owned.import.status = ImportStatus::Downloading;
        owned.import.stage = Some(stage::DOWNLOADING.into());
        // 0 for a new or restarted import; an upload's bar stays where its
        // stored bytes took it.
        owned.import.progress = Some(owned.import.progress.unwrap_or(0.0));
        owned.import.queue_position = None;
        owned.import.bytes_total = source.bytes_total(&owned.import);
        if !self.imports.commit(&mut owned, expected).await? {
            return Ok(()); // cancelled before it started
        }

        let dir = self.imports.dir_of(&id);
        let output = source.output();
        let quota_left = match output {
            Output::File => self.quota_left(&owned.user_id).await?,
            Output::ProgressOnly => None,
        };
        let share = match output {
            Output::File => self.download_share(),
            Output::ProgressOnly => 1.0,
        };
        let (reporter, reports) = Reporter::new();
        let work = source.fetch(SourceJob {
            import: owned.import.clone(),
            dir: dir.clone(),
            quota_left,
            progress: reporter,
        });
        let outcome = self
            .track(
                &mut owned,
                stop,
                work,
                reports.reports,
                |import, report| {
                    let progress = report.progress;
                    import.bytes_done = progress.done;
                    import.bytes_total = progress.total;
                    import.progress = progress
                        .total
                        .filter(|total| *total > 0)
                        .map(|total| share * (progress.done as f64 / total as f64).min(1.0));
                },
                |report| {
                    reports.published.send_replace(report.seq);
                },
            )
            .await?;
        drop(slot);
        drop(phase);
        let fetched = match outcome {
            Outcome::Done(Ok(fetched)) => fetched,
            Outcome::Done(Err(err)) => {
                let outcome: Outcome<()> = Outcome::Failed(err.code, err.message);
                return self.finish_stage(owned, &dir, outcome).await;
            }
            other => return self.finish_stage(owned, &dir, map_unit(other)).await,
        };
        let (bytes, container, content_type) = match fetched {
            Fetched::Finished { bytes, result } => {
                return self.finish_unstored(owned, bytes, result).await;
            }
            Fetched::File {
                bytes,
                container,
                content_type,
            } => (bytes, container, content_type),
        };
        owned.import.bytes_done = bytes;
        owned.import.bytes_total = Some(bytes);
        if self.media.is_none() {
            let result = json!({
                "size_bytes": bytes,
                "container": container,
                "content_type": content_type,
                "media_processing": "skipped",
            });
            return self.complete(owned, &dir, result).await;
        }
        let expected = owned.stored_version;
        owned.import.status = ImportStatus::Processing;
        owned.import.stage = Some(stage::WAITING_FOR_PROCESSING.into());
        owned.import.progress = Some(self.download_share());
        if !self.imports.commit(&mut owned, expected).await? {
            files::remove_dir(&dir).await;
            return Ok(());
        }
        self.process(owned, stop).await
    }

    /// Completes an import whose source stored nothing (the quota is not
    /// asked: there are no bytes to keep).
    async fn finish_unstored(
        &self,
        mut owned: OwnedImport,
        bytes: u64,
        result: serde_json::Value,
    ) -> Result<(), ImportServiceError> {
        let expected = owned.stored_version;
        let import = &mut owned.import;
        import.status = ImportStatus::Completed;
        import.stage = None;
        import.queue_position = None;
        import.bytes_done = bytes;
        import.progress = Some(1.0);
        import.result = Some(result);
        // A lost race means the user cancelled it: nothing to clean.
        self.imports.commit(&mut owned, expected).await?;
        Ok(())
    }

    /// Moves to a new stage within the status: a progress-only change,
    /// published like a tick (stored when due, or at the next status
    /// change). Returns false when the import was found changed by
    /// someone else (cancelled, or taken over).
    pub(super) async fn set_stage(
        &self,
        owned: &mut OwnedImport,
        name: &str,
        progress: f64,
    ) -> Result<bool, ImportServiceError> {
        owned.import.stage = Some(name.to_string());
        owned.import.queue_position = None;
        let current = owned.import.progress.unwrap_or(0.0);
        owned.import.progress = Some(current.max(progress));
        if !self.tick(owned).await? {
            return Ok(false);
        }
        match owned.unstored_since {
            Some(since) if since.elapsed() >= self.progress_persist => {
                self.imports.persist(owned).await
            }
            _ => Ok(true),
        }
    }

    /// Publishes a progress-only change: from memory (stored within
    /// `REELTIME_PROGRESS_PERSIST_SECS`), or stored first when that is 0.
    async fn tick(&self, owned: &mut OwnedImport) -> Result<bool, ImportServiceError> {
        if self.progress_persist.is_zero() {
            let expected = owned.stored_version;
            self.imports.commit(owned, expected).await
        } else {
            self.imports.publish_tick(owned).await
        }
    }

    /// Runs `work` while publishing what `progress` reports, through
    /// `apply`, at most once per [`PROGRESS_EVERY`] (counted from the start
    /// of each publish, so a slow one does not slow a steady reporter
    /// down); `published` hears each value once it is sent. The store
    /// catches up at most once per `REELTIME_PROGRESS_PERSIST_SECS`. Stops
    /// at once on cancel or shutdown, or when a write finds the import
    /// changed (cancelled, or taken over by another node).
    pub(super) async fn track<T, P: Copy>(
        &self,
        owned: &mut OwnedImport,
        stop: &CancellationToken,
        work: impl Future<Output = T>,
        mut progress: watch::Receiver<P>,
        apply: impl Fn(&mut Import, P),
        published: impl Fn(P),
    ) -> Result<Outcome<T>, ImportServiceError> {
        tokio::pin!(work);
        let mut pending = false;
        let mut next_tick = Instant::now();
        loop {
            let persist_due = owned
                .unstored_since
                .map(|since| Instant::from_std(since) + self.progress_persist);
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(Outcome::Stopped),
                result = &mut work => return Ok(Outcome::Done(result)),
                changed = progress.changed(), if !pending => {
                    pending = changed.is_ok();
                }
                _ = sleep_until(persist_due.unwrap_or(next_tick)), if persist_due.is_some() => {
                    if !self.imports.persist(owned).await? {
                        return Ok(Outcome::Stopped);
                    }
                }
                _ = sleep_until(next_tick), if pending => {
                    pending = false;
                    let started = Instant::now();
                    let value = *progress.borrow_and_update();
                    let before = owned.import.progress;
                    apply(&mut owned.import, value);
                    if let (Some(was), Some(now)) = (before, owned.import.progress) {
                        owned.import.progress = Some(now.max(was));
                    }
                    if !self.tick(owned).await? {
                        return Ok(Outcome::Stopped);
                    }
                    published(value);
                    next_tick = started + PROGRESS_EVERY;
                }
            }
        }
    }
}

pub(super) fn map_unit<T>(outcome: Outcome<T>) -> Outcome<()> {
    match outcome {
        Outcome::Done(_) => Outcome::Done(()),
        Outcome::Failed(code, message) => Outcome::Failed(code, message),
        Outcome::Stopped => Outcome::Stopped,
    }
}
