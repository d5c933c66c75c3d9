//! Results and file clean-up: an import's directory and the names in it,
//! what a failed or stopped stage leaves behind, the storage quota, and
//! the completed import's `result`.

use std::path::{Path, PathBuf};

use reeltime_protocol::ImportStatus;
use serde_json::json;

use super::Runner;
use super::job::Outcome;
use crate::imports::{ImportServiceError, fail};
use crate::media::Probe;
use crate::store::OwnedImport;

/// The file a source writes while it works.
const PART: &str = "source.part";

/// Where a source writes its bytes while it works.
pub(crate) fn part_file(dir: &Path) -> PathBuf {
    dir.join(PART)
}

/// Where a finished source file is kept: its name tells its container, and
/// its presence is what lets an interrupted import resume its media stages.
pub(crate) fn source_file(dir: &Path, container: &str) -> PathBuf {
    dir.join(format!("source.{container}"))
}

impl Runner {
    pub(super) async fn quota_left(
        &self,
        user_id: &str,
    ) -> Result<Option<u64>, ImportServiceError> {
        let Some(quota) = self.imports.limits().quota_bytes else {
            return Ok(None);
        };
        let used = self.imports.store().stored_bytes(user_id).await?;
        Ok(Some(quota.saturating_sub(used)))
    }

    /// `quota_exceeded` when keeping `result`'s video would take the user
    /// past their quota.
    pub(super) async fn over_quota(
        &self,
        user_id: &str,
        result: &serde_json::Value,
    ) -> Result<Option<Outcome<()>>, ImportServiceError> {
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

    pub(super) async fn finish_stage<T>(
        &self,
        mut owned: OwnedImport,
        dir: &Path,
        outcome: Outcome<T>,
    ) -> Result<(), ImportServiceError> {
        match outcome {
            Outcome::Done(_) => Ok(()),
            Outcome::Stopped => {
                // A user's cancel stored `cancelled`: its files go. Anything
                // else (shutdown, drain, a lost lease) leaves the saved state
                // and files for whoever resumes it. The progress sent from
                // memory is stored first; after a cancel or a takeover the
                // compare-and-set simply loses.
                if let Err(err) = self.imports.persist(&mut owned).await {
                    tracing::warn!(import_id = %owned.import.id, error = %err, "could not store the last progress");
                }
                match self.imports.store().get_import(&owned.import.id).await {
                    Ok(Some(fresh)) if fresh.import.status.is_final() => remove_dir(dir).await,
                    Ok(Some(fresh)) => {
                        // A later attempt means another node claimed it: a
                        // write of this job lost to that node's (the lease
                        // renewal may not have noticed yet).
                        if fresh.import.attempt > owned.import.attempt {
                            tracing::warn!(
                                import_id = %owned.import.id,
                                "lease lost; stopping the job here"
                            );
                        }
                        remove_file(&part_file(dir)).await;
                    }
                    _ => remove_file(&part_file(dir)).await,
                }
                Ok(())
            }
            Outcome::Failed(code, message) => {
                remove_dir(dir).await;
                tracing::info!(import_id = %owned.import.id, code, error = %message, "import failed");
                let expected = owned.stored_version;
                fail(&mut owned.import, code, message);
                self.imports.commit(&mut owned, expected).await?;
                Ok(())
            }
        }
    }

    /// Marks the import completed, after a last quota check (held with
    /// the commit, so this node's completions of one user cannot both fit
    /// in the same remaining bytes).
    pub(super) async fn complete(
        &self,
        mut owned: OwnedImport,
        dir: &Path,
        result: serde_json::Value,
    ) -> Result<(), ImportServiceError> {
        let _quota_gate = match self.imports.limits().quota_bytes {
            Some(_) => Some(self.quota_gate.lock().await),
            None => None,
        };
        if let Some(outcome) = self.over_quota(&owned.user_id, &result).await? {
            let _ = self.imports.storage().delete_import(&owned.import.id).await;
            return self.finish_stage(owned, dir, outcome).await;
        }
        let expected = owned.stored_version;
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

/// The `result` of a processed import, describing the file that is served.
/// File names, not URLs: links are signed when the import is shown, so
/// they never go stale in the store.
pub(super) fn media_result(served: &Probe, video: &Path, transcoded: bool) -> serde_json::Value {
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
pub(super) fn result_files(result: &serde_json::Value) -> Vec<String> {
    ["video_file", "thumbnail_file"]
        .iter()
        .filter_map(|key| result[key].as_str().map(str::to_string))
        .collect()
}

/// The downloaded source in an import's directory, if it is complete.
pub(super) async fn find_source(dir: &Path) -> Option<PathBuf> {
    let mut entries = tokio::fs::read_dir(dir).await.ok()?;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("source.") && name != PART {
            return Some(entry.path());
        }
    }
    None
}

/// Removes what processing makes, keeping the download.
pub(super) async fn remove_outputs(dir: &Path) {
    remove_file(&dir.join("video.mp4")).await;
    remove_file(&dir.join("poster.jpg")).await;
}

pub(super) async fn remove_file(path: &Path) {
    if let Err(err) = tokio::fs::remove_file(path).await
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %err, "could not remove file");
    }
}

pub(super) async fn remove_dir(dir: &Path) {
    if let Err(err) = tokio::fs::remove_dir_all(dir).await
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %err, "could not remove import files");
    }
}
