//! Runs import jobs server-side, whatever the sockets do: a job belongs to
//! the server, not to the browser tab that started it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reeltime_protocol::ImportStatus;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

use super::fetch::{Downloaded, FetchError, Fetcher, Progress};
use super::{Imports, MAX_ATTEMPTS, fail};
use crate::store::OwnedImport;

/// Progress reaches sockets at most this often per import; status changes
/// and final states go out at once.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Takes queued imports and runs them, a bounded number at a time.
pub struct Runner {
    imports: Arc<Imports>,
    fetcher: Fetcher,
    concurrency: usize,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// How a job's work ended.
enum Outcome {
    Done(Downloaded),
    Failed(FetchError),
    /// Cancelled by the user or stopped by shutdown: nothing more to write.
    Stopped,
}

impl Runner {
    pub fn new(
        imports: Arc<Imports>,
        fetcher: Fetcher,
        concurrency: usize,
        shutdown: CancellationToken,
    ) -> Arc<Runner> {
        Arc::new(Runner {
            imports,
            fetcher,
            concurrency: concurrency.max(1),
            shutdown,
            tasks: TaskTracker::new(),
        })
    }

    /// Requeues what a crash or shutdown left unfinished (attempt + 1), and
    /// fails what has had [`MAX_ATTEMPTS`] already. Nothing stays
    /// `downloading` forever.
    pub async fn resume_unfinished(&self) -> anyhow::Result<()> {
        for mut owned in self.imports.store().unfinished_imports().await? {
            let id = owned.import.id.clone();
            let expected = owned.import.version;
            if owned.import.status == ImportStatus::Queued {
                self.imports.enqueue(&id);
                continue;
            }
            remove_dir(&self.imports.dir_of(&id)).await;
            if owned.import.attempt >= MAX_ATTEMPTS {
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
            import.status = ImportStatus::Queued;
            import.stage = None;
            import.progress = Some(0.0);
            import.bytes_done = 0;
            import.bytes_total = None;
            if self.imports.commit(&mut owned, expected).await? {
                tracing::info!(import_id = %id, attempt = owned.import.attempt, "resuming import");
                self.imports.enqueue(&id);
            }
        }
        Ok(())
    }

    /// The job loop; returns when shutdown begins.
    pub async fn run(self: Arc<Self>, mut jobs: mpsc::UnboundedReceiver<String>) {
        let slots = Arc::new(Semaphore::new(self.concurrency));
        loop {
            let id = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                id = jobs.recv() => match id {
                    Some(id) => id,
                    None => break,
                },
            };
            let slot = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                slot = Arc::clone(&slots).acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
            };
            let runner = Arc::clone(&self);
            self.tasks.spawn(async move {
                runner.run_job(&id).await;
                drop(slot);
            });
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
            Ok(Some(owned)) if owned.import.status == ImportStatus::Queued => owned,
            Ok(_) => return,
            Err(err) => {
                tracing::error!(import_id = id, error = %err, "could not load import");
                return;
            }
        };
        let stop = self.shutdown.child_token();
        self.imports.register_job(id, stop.clone());
        let result = if owned.import.source_url.starts_with("synthetic:") {
            super::synthetic::run(&self.imports, owned, &stop).await
        } else {
            self.download(owned, &stop).await
        };
        if let Err(err) = result {
            tracing::error!(import_id = id, error = %err, "import job failed to save its state");
        }
        self.imports.forget_job(id);
    }

    async fn download(
        &self,
        mut owned: OwnedImport,
        stop: &CancellationToken,
    ) -> Result<(), super::ImportsError> {
        let id = owned.import.id.clone();
        let expected = owned.import.version;
        owned.import.status = ImportStatus::Downloading;
        owned.import.stage = Some("downloading".into());
        owned.import.progress = Some(0.0);
        owned.import.queue_position = None;
        if !self.imports.commit(&mut owned, expected).await? {
            return Ok(()); // cancelled before it started
        }

        let dir = self.imports.dir_of(&id);
        let part = dir.join("source.part");
        let outcome = match (
            tokio::fs::create_dir_all(&dir).await,
            Url::parse(&owned.import.source_url),
        ) {
            (Err(err), _) => Outcome::Failed(FetchError::Io(err)),
            (_, Err(_)) => {
                Outcome::Failed(FetchError::NotAllowed("the stored URL is invalid".into()))
            }
            (Ok(()), Ok(url)) => {
                self.download_with_progress(&mut owned, &url, &part, stop)
                    .await?
            }
        };

        match outcome {
            Outcome::Stopped => {
                // A user cancel already stored `cancelled`; a shutdown leaves
                // the saved state for the next start to resume.
                remove_dir(&dir).await;
            }
            Outcome::Failed(err) => {
                remove_dir(&dir).await;
                tracing::info!(import_id = %id, code = err.code(), error = %err, "import failed");
                let expected = owned.import.version;
                fail(&mut owned.import, err.code(), err.to_string());
                self.imports.commit(&mut owned, expected).await?;
            }
            Outcome::Done(downloaded) => {
                let source = dir.join(format!("source.{}", downloaded.container));
                if let Err(err) = tokio::fs::rename(&part, &source).await {
                    remove_dir(&dir).await;
                    let expected = owned.import.version;
                    fail(
                        &mut owned.import,
                        "storage_error",
                        format!("could not keep the file: {err}"),
                    );
                    self.imports.commit(&mut owned, expected).await?;
                    return Ok(());
                }
                let expected = owned.import.version;
                let import = &mut owned.import;
                import.status = ImportStatus::Completed;
                import.stage = None;
                import.progress = Some(1.0);
                import.bytes_done = downloaded.bytes;
                import.bytes_total = Some(downloaded.bytes);
                import.result = Some(json!({
                    "size_bytes": downloaded.bytes,
                    "container": downloaded.container,
                    "content_type": downloaded.content_type,
                    "media_processing": "skipped",
                }));
                if !self.imports.commit(&mut owned, expected).await? {
                    remove_dir(&dir).await; // cancelled at the last moment
                }
            }
        }
        Ok(())
    }

    /// Runs the download while committing its progress at most every
    /// [`PROGRESS_EVERY`]. Stops at once on cancel or shutdown.
    async fn download_with_progress(
        &self,
        owned: &mut OwnedImport,
        url: &Url,
        part: &Path,
        stop: &CancellationToken,
    ) -> Result<Outcome, super::ImportsError> {
        let (progress_tx, mut progress_rx) = watch::channel(Progress::default());
        let download = self.fetcher.download(url, part, &progress_tx);
        tokio::pin!(download);
        let mut pending = false;
        let mut next_commit = Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(Outcome::Stopped),
                result = &mut download => {
                    return Ok(match result {
                        Ok(done) => Outcome::Done(done),
                        Err(err) => Outcome::Failed(err),
                    });
                }
                changed = progress_rx.changed(), if !pending => {
                    pending = changed.is_ok();
                }
                _ = sleep_until(next_commit), if pending => {
                    pending = false;
                    let progress = *progress_rx.borrow_and_update();
                    let expected = owned.import.version;
                    let import = &mut owned.import;
                    import.bytes_done = progress.done;
                    import.bytes_total = progress.total;
                    import.progress = progress
                        .total
                        .filter(|total| *total > 0)
                        .map(|total| (progress.done as f64 / total as f64).min(1.0));
                    if !self.imports.commit(owned, expected).await? {
                        return Ok(Outcome::Stopped); // cancelled meanwhile
                    }
                    next_commit = Instant::now() + PROGRESS_EVERY;
                }
            }
        }
    }
}

async fn remove_dir(dir: &Path) {
    if let Err(err) = tokio::fs::remove_dir_all(dir).await
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %err, "could not remove import files");
    }
}
