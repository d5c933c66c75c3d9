//! Runs import jobs server-side, whatever the sockets do: a job belongs to
//! the server, not to the browser tab that started it.
//!
//! A job is one task that goes through two lines: it waits for a download
//! slot (if its source takes one), runs its [`Source`](super::source::Source),
//! then waits for a processing slot and does the media work. Each line
//! serves users in turn ([`Line`]) and tells waiting imports their place
//! (`queue_position`).
//!
//! By concern: this file claims imports and keeps their leases;
//! [`job`] walks one import through its stages (and resumes it);
//! [`media`] is the probe, poster and transcode stage; [`waiting`] tells
//! waiting imports their place; [`files`] writes results and cleans up.
//! Nothing here knows one source from another.

mod job;
mod media;
mod waiting;

pub(crate) mod files;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ImportService;
use super::line::Line;
use crate::media::{MediaTools, TranscodeMode};
use crate::store::OwnedImport;

/// Progress reaches sockets at most this often per import; status changes
/// and final states go out at once. Progress is sent from memory and stored
/// later (`REELTIME_PROGRESS_PERSIST_SECS`).
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
    /// `REELTIME_PROGRESS_PERSIST_SECS`: how far the stored progress of a
    /// running import may fall behind what its sockets were sent.
    pub progress_persist: Duration,
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
    imports: Arc<ImportService>,
    media: Option<MediaWork>,
    node: String,
    lease: Duration,
    progress_persist: Duration,
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

impl Runner {
    pub fn new(
        imports: Arc<ImportService>,
        media: Option<MediaWork>,
        jobs: JobSettings,
        shutdown: CancellationToken,
    ) -> Arc<Runner> {
        Arc::new(Runner {
            imports,
            media,
            node: jobs.node,
            lease: jobs.lease,
            progress_persist: jobs.progress_persist,
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

    /// Share of the progress bar a source's bytes take (an upload's too).
    pub fn download_share(&self) -> f64 {
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
                        // Registered before the task runs, so the next
                        // lease renewal knows the claim has a job here.
                        let stop = self.shutdown.child_token();
                        self.imports.register_job(&owned.import.id, stop.clone());
                        let runner = Arc::clone(self);
                        self.tasks
                            .spawn(async move { runner.run_job(owned, phase, stop).await });
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
        let started = std::time::Instant::now();
        let renewed = self
            .imports
            .store()
            .renew_leases(&self.node, self.lease)
            .await;
        let metrics = self.imports.metrics();
        metrics.lease_renewal(started.elapsed(), renewed.is_ok());
        match renewed {
            Ok(held) => {
                let running = self.imports.running_ids();
                for id in &running {
                    if !held.contains(id) {
                        tracing::warn!(import_id = %id, "lease lost; stopping the job here");
                        metrics.leases_lost.inc();
                        self.imports.stop_job(id);
                    }
                }
                // A lease this node holds with no job here: the job ended
                // but could not hand it back (the database was out of
                // reach). Renewing it would keep the import from every
                // node for ever; hand it back so that it is claimed again.
                for id in held.iter().filter(|id| !running.contains(id)) {
                    tracing::warn!(import_id = %id, "a lease with no job here; handing it back");
                    if let Err(err) = self.imports.store().release_lease(&self.node, id).await {
                        tracing::warn!(import_id = %id, error = %err, "could not release lease");
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "could not renew job leases"),
        }
    }

    /// Waits for running jobs to save their state after shutdown began.
    pub async fn wait_stopped(&self, grace: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(grace, self.tasks.wait()).await.is_ok()
    }

    async fn run_job(&self, owned: OwnedImport, phase: DownloadPhase, stop: CancellationToken) {
        let id = owned.import.id.clone();
        // Every line the job logs carries its import and user (JSON logs:
        // under `span`).
        let span = tracing::info_span!("job", import_id = %id, user_id = %owned.user_id);
        tracing::debug!(parent: &span, "import job started");
        let result = tracing::Instrument::instrument(self.start(owned, phase, &stop), span).await;
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
}
