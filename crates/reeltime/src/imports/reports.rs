//! Reports from the app's own workers about their external imports
//! (`POST /api/server/imports/{id}/progress|complete|fail`), written
//! through [`ImportService::commit`]: stored compare-and-set on `version`,
//! then published, so every tab on every node sees them like any change.
//!
//! At most one change per [`STORE_EVERY`] is stored per import (ten a
//! second). A progress report that comes sooner is never refused: it is
//! merged into the one waiting (the latest value of each field wins) and
//! stored when the import's turn comes, by a task of the node that got it.
//! The turn is counted from the stored `updated_at`, so it holds across
//! nodes: two nodes racing both read the same last write, one wins the
//! compare-and-set and the other waits its turn. A status change (the
//! first report moves `queued` to `processing`), a completion and a
//! failure are stored at once.
//!
//! A merged report that is waiting when its node stops is lost; the
//! worker's next report carries the newer state anyway.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use reeltime_protocol::{Import, ImportError, ImportStatus};
use serde::Deserialize;

use super::source::{kind, kind_of};
use super::{ImportService, ImportServiceError};
use crate::store::OwnedImport;

/// At most one stored change per import per this long (ten a second).
pub const STORE_EVERY: Duration = Duration::from_millis(100);

/// Longest `stage` a worker may report.
const MAX_STAGE_CHARS: usize = 64;
/// Largest `result` of a completion, serialized.
const MAX_RESULT_BYTES: usize = 16 * 1024;
/// Keys of `result` that name the server's own media files: never taken
/// from a worker (the server signs links for them).
const RESERVED_RESULT_KEYS: [&str; 4] =
    ["video_file", "thumbnail_file", "video_url", "thumbnail_url"];

/// Body of `POST /api/server/imports/{id}/progress`; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressReport {
    /// 0.0 to 1.0 over the whole import; never lower than the last.
    pub progress: Option<f64>,
    /// The worker's own step name, shown by the UI.
    pub stage: Option<String>,
    /// Never lower than the last.
    pub bytes_done: Option<u64>,
    pub bytes_total: Option<u64>,
}

/// Body of `POST /api/server/imports/{id}/fail`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailReport {
    pub error: ImportError,
}

/// Body of `POST /api/server/imports/{id}/complete`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteReport {
    #[serde(default)]
    pub result: Option<serde_json::Value>,
}

/// What became of a report.
#[derive(Debug, Clone)]
pub enum Reported {
    /// Stored and published: the import as written.
    Stored(Import),
    /// Merged into the report waiting for the import's turn (within
    /// [`STORE_EVERY`]): the import as stored, with the report applied.
    Merged(Import),
}

impl ProgressReport {
    fn check(&self) -> Result<(), ImportServiceError> {
        let bad = |message: String| Err(ImportServiceError::BadRequest(message));
        if let Some(progress) = self.progress
            && !(progress.is_finite() && (0.0..=1.0).contains(&progress))
        {
            return bad(format!("progress must be between 0 and 1, got {progress}"));
        }
        if let Some(stage) = &self.stage
            && (stage.trim().is_empty() || stage.chars().count() > MAX_STAGE_CHARS)
        {
            return bad(format!("stage must be 1 to {MAX_STAGE_CHARS} characters"));
        }
        if let (Some(done), Some(total)) = (self.bytes_done, self.bytes_total)
            && done > total
        {
            return bad(format!(
                "bytes_done ({done}) is more than bytes_total ({total})"
            ));
        }
        Ok(())
    }

    /// `newer` on top of `self`: each field the newer report has wins.
    fn merge(self, newer: ProgressReport) -> ProgressReport {
        ProgressReport {
            progress: newer.progress.or(self.progress),
            stage: newer.stage.or(self.stage),
            bytes_done: newer.bytes_done.or(self.bytes_done),
            bytes_total: newer.bytes_total.or(self.bytes_total),
        }
    }

    /// Refuses a report that moves `import` back (409).
    fn check_forward(&self, import: &Import) -> Result<(), ImportServiceError> {
        if let (Some(new), Some(old)) = (self.progress, import.progress)
            && new < old
        {
            return Err(ImportServiceError::ProgressBackwards(format!(
                "progress {new} is lower than the import's {old}; progress never goes back within an attempt"
            )));
        }
        if let Some(new) = self.bytes_done
            && new < import.bytes_done
        {
            return Err(ImportServiceError::ProgressBackwards(format!(
                "bytes_done {new} is lower than the import's {}",
                import.bytes_done
            )));
        }
        Ok(())
    }

    /// Applies the report; progress and bytes never move back (a value
    /// another node stored meanwhile may be ahead of a merged report).
    fn apply(&self, import: &mut Import) {
        if import.status == ImportStatus::Queued {
            import.status = ImportStatus::Processing;
        }
        import.queue_position = None;
        if let Some(progress) = self.progress {
            import.progress = Some(import.progress.map_or(progress, |was| was.max(progress)));
        }
        if let Some(stage) = &self.stage {
            import.stage = Some(stage.trim().to_string());
        }
        if let Some(done) = self.bytes_done {
            import.bytes_done = import.bytes_done.max(done);
        }
        if let Some(total) = self.bytes_total {
            import.bytes_total = Some(total);
        }
    }
}

/// Reports waiting for their import's turn, on this node.
#[derive(Default)]
pub struct Pending {
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
}

/// One import's waiting report; its lock keeps this node's reports of one
/// import in order.
#[derive(Default)]
struct Slot {
    report: Option<ProgressReport>,
    /// A task will store `report` when the import's turn comes.
    flush_scheduled: bool,
}

impl Pending {
    fn slot(&self, id: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        match self.slots.lock() {
            Ok(mut slots) => Arc::clone(slots.entry(id.to_string()).or_default()),
            Err(_) => Arc::default(),
        }
    }

    /// Forgets `id`'s slot when nothing waits in it and nobody else holds it.
    fn release(&self, id: &str, slot: Arc<tokio::sync::Mutex<Slot>>) {
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        let idle = slot
            .try_lock()
            .is_ok_and(|held| held.report.is_none() && !held.flush_scheduled);
        // The map's reference and ours: no other request is using it.
        if idle && Arc::strong_count(&slot) == 2 {
            slots.remove(id);
        }
    }
}

/// How long until `import` may take its next stored change.
fn turn_in(import: &Import) -> Duration {
    let since = (Utc::now() - import.updated_at)
        .to_std()
        .unwrap_or(Duration::ZERO);
    STORE_EVERY.saturating_sub(since)
}

impl ImportService {
    /// Reads an import reports may be made about: an external one that is
    /// not final.
    async fn reportable(&self, id: &str) -> Result<OwnedImport, ImportServiceError> {
        let owned = self
            .store
            .get_import(id)
            .await?
            .ok_or(ImportServiceError::NotFound)?;
        if kind_of(&owned.import) != kind::EXTERNAL {
            return Err(ImportServiceError::NotExternal);
        }
        if owned.import.status.is_final() {
            return Err(ImportServiceError::Finished(owned.import.status.as_str()));
        }
        Ok(owned)
    }

    /// A worker's progress report: stored now if the import's turn has
    /// come (or it changes the status), else merged into the waiting one.
    pub async fn report_progress(
        self: &Arc<Self>,
        id: &str,
        report: ProgressReport,
    ) -> Result<Reported, ImportServiceError> {
        report.check()?;
        let slot = self.reports.slot(id);
        let outcome = {
            let mut held = slot.lock().await;
            self.progress_locked(id, &mut held, report).await
        };
        self.reports.release(id, slot);
        outcome
    }

    async fn progress_locked(
        self: &Arc<Self>,
        id: &str,
        held: &mut Slot,
        report: ProgressReport,
    ) -> Result<Reported, ImportServiceError> {
        loop {
            let owned = match self.reportable(id).await {
                Ok(owned) => owned,
                Err(err) => {
                    held.report = None;
                    return Err(err);
                }
            };
            // Checked against what is stored with what waits on top.
            let mut shown = owned.clone();
            if let Some(waiting) = &held.report {
                waiting.apply(&mut shown.import);
            }
            report.check_forward(&shown.import)?;
            report.apply(&mut shown.import);
            let merged = held
                .report
                .clone()
                .unwrap_or_default()
                .merge(report.clone());
            let turn = turn_in(&owned.import);
            if owned.import.status == ImportStatus::Queued || turn.is_zero() {
                let mut next = owned.clone();
                merged.apply(&mut next.import);
                if self.commit(&mut next, owned.import.version).await? {
                    held.report = None;
                    return Ok(Reported::Stored(self.present(&next)));
                }
                continue; // changed in between: read again
            }
            held.report = Some(merged);
            if !held.flush_scheduled {
                held.flush_scheduled = true;
                let service = Arc::clone(self);
                let id = id.to_string();
                tokio::spawn(async move { service.store_waiting(id, turn).await });
            }
            return Ok(Reported::Merged(self.present(&shown)));
        }
    }

    /// Stores `id`'s waiting report when its turn comes.
    async fn store_waiting(self: Arc<Self>, id: String, mut wait: Duration) {
        loop {
            tokio::time::sleep(wait).await;
            let slot = self.reports.slot(&id);
            let again = {
                let mut held = slot.lock().await;
                let outcome = self.store_waiting_locked(&id, &mut held).await;
                let again = match outcome {
                    Ok(again) => again,
                    Err(err) => {
                        tracing::warn!(import_id = %id, error = %err, "could not store a merged report");
                        held.report = None;
                        None
                    }
                };
                if again.is_none() {
                    held.flush_scheduled = false;
                }
                again
            };
            self.reports.release(&id, slot);
            match again {
                Some(next) => wait = next,
                None => return,
            }
        }
    }

    /// Stores the waiting report if the turn has come; returns how long
    /// to wait when another write took the turn first.
    async fn store_waiting_locked(
        &self,
        id: &str,
        held: &mut Slot,
    ) -> Result<Option<Duration>, ImportServiceError> {
        loop {
            let Some(report) = held.report.clone() else {
                return Ok(None);
            };
            let owned = match self.reportable(id).await {
                Ok(owned) => owned,
                // Finished, deleted or cancelled meanwhile: nothing to store.
                Err(ImportServiceError::Store(err)) => return Err(err.into()),
                Err(_) => {
                    held.report = None;
                    return Ok(None);
                }
            };
            let turn = turn_in(&owned.import);
            if !turn.is_zero() {
                return Ok(Some(turn));
            }
            let mut next = owned.clone();
            report.apply(&mut next.import);
            if self.commit(&mut next, owned.import.version).await? {
                held.report = None;
                return Ok(None);
            }
        }
    }

    /// A worker's completion: stored at once, whatever waits.
    pub async fn report_complete(
        &self,
        id: &str,
        report: CompleteReport,
    ) -> Result<Import, ImportServiceError> {
        if let Some(result) = &report.result {
            check_result(result)?;
        }
        self.finish_external(id, |import| {
            import.status = ImportStatus::Completed;
            import.progress = Some(1.0);
            if let Some(total) = import.bytes_total {
                import.bytes_done = import.bytes_done.max(total);
            }
            import.result = report.result.clone();
        })
        .await
    }

    /// A worker's failure: stored at once, whatever waits.
    pub async fn report_fail(
        &self,
        id: &str,
        report: FailReport,
    ) -> Result<Import, ImportServiceError> {
        let ImportError { code, message } = report.error;
        let code_ok = !code.is_empty()
            && code.len() <= 64
            && code
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !code_ok {
            return Err(ImportServiceError::BadRequest(
                "error.code must be 1 to 64 letters, digits, '_', '-' or '.'".into(),
            ));
        }
        if message.trim().is_empty() || message.chars().count() > 1000 {
            return Err(ImportServiceError::BadRequest(
                "error.message must be 1 to 1000 characters".into(),
            ));
        }
        self.finish_external(id, |import| {
            super::fail(import, &code, message.clone());
        })
        .await
    }

    /// Writes a final state through the slot's lock (so no merged report
    /// of this node is stored after it), retrying on a lost race.
    async fn finish_external(
        &self,
        id: &str,
        finish: impl Fn(&mut Import),
    ) -> Result<Import, ImportServiceError> {
        let slot = self.reports.slot(id);
        let outcome = {
            let mut held = slot.lock().await;
            held.report = None;
            loop {
                let owned = match self.reportable(id).await {
                    Ok(owned) => owned,
                    Err(err) => break Err(err),
                };
                let mut next = owned.clone();
                finish(&mut next.import);
                next.import.stage = None;
                next.import.queue_position = None;
                match self.commit(&mut next, owned.import.version).await {
                    Ok(true) => break Ok(self.present(&next)),
                    Ok(false) => continue,
                    Err(err) => break Err(err),
                }
            }
        };
        self.reports.release(id, slot);
        outcome
    }
}

/// A completion's `result`: an object, small, naming no server file.
fn check_result(result: &serde_json::Value) -> Result<(), ImportServiceError> {
    let Some(object) = result.as_object() else {
        return Err(ImportServiceError::BadRequest(
            "result must be a JSON object".into(),
        ));
    };
    if let Some(key) = RESERVED_RESULT_KEYS
        .iter()
        .find(|key| object.contains_key(**key))
    {
        return Err(ImportServiceError::BadRequest(format!(
            "result.{key} is the server's own; use another name"
        )));
    }
    let size = serde_json::to_string(result)?.len();
    if size > MAX_RESULT_BYTES {
        return Err(ImportServiceError::BadRequest(format!(
            "result is {size} bytes serialized; at most {MAX_RESULT_BYTES} are allowed"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(progress: Option<f64>, stage: Option<&str>) -> ProgressReport {
        ProgressReport {
            progress,
            stage: stage.map(str::to_string),
            ..ProgressReport::default()
        }
    }

    #[test]
    fn the_latest_value_of_each_field_wins() {
        let merged = report(Some(0.2), Some("fetching")).merge(report(Some(0.3), None));
        assert_eq!(merged, report(Some(0.3), Some("fetching")));
    }

    #[test]
    fn bad_reports_are_refused_with_a_reason() {
        assert!(report(Some(1.5), None).check().is_err());
        assert!(report(Some(f64::NAN), None).check().is_err());
        assert!(report(None, Some(" ")).check().is_err());
        let over = ProgressReport {
            bytes_done: Some(5),
            bytes_total: Some(4),
            ..ProgressReport::default()
        };
        assert!(over.check().is_err());
        assert!(report(Some(0.5), Some("encoding")).check().is_ok());
    }

    #[test]
    fn a_result_may_not_name_server_files() {
        assert!(check_result(&serde_json::json!({"video_file": "x"})).is_err());
        assert!(check_result(&serde_json::json!([1])).is_err());
        assert!(check_result(&serde_json::json!({"asset_id": 7})).is_ok());
    }
}
