//! Imports the app's own workers run ("external"): Reeltime stores them,
//! versions every change and delivers it to the user's tabs on every node,
//! but never runs them. The worker reports through the server API
//! (`POST /api/server/imports/{id}/progress|complete|fail`), which goes
//! through [`ImportService`](crate::imports::ImportService)'s write path
//! like every other change (`imports::external`).
//!
//! How a node keeps its hands off: the import is stored with the store's
//! `external` flag (from its `source`), which every claim and waiting-line
//! query leaves out, so the runner never sees it; [`Source::fetch`] is
//! there only to fail loudly if that ever broke.

use async_trait::async_trait;
use reeltime_protocol::ImportSource;

use super::{Accepted, Fetched, Output, Resume, Source, SourceError, SourceJob, SourceSpec, kind};
use crate::imports::ImportServiceError;

/// The registry's entry for external imports.
pub struct ExternalSource;

#[async_trait]
impl Source for ExternalSource {
    fn kind(&self) -> &'static str {
        kind::EXTERNAL
    }

    async fn accept(&self, spec: &SourceSpec) -> Result<Accepted, ImportServiceError> {
        match spec {
            SourceSpec::External => Ok(Accepted {
                source: ImportSource::External,
                source_url: None,
                file_name: None,
                default_title: "import".into(),
            }),
            SourceSpec::Url(_) => Err(ImportServiceError::BadRequest(
                "an external import takes no url".into(),
            )),
        }
    }

    fn runs_on_nodes(&self) -> bool {
        false
    }

    fn waits_in_download_line(&self) -> bool {
        false
    }

    fn output(&self) -> Output {
        Output::ProgressOnly
    }

    /// Nothing of it runs on a node, so nothing is interrupted by one.
    fn resume(&self) -> Resume {
        Resume::NotPossible("an external import is run by the app's own workers")
    }

    async fn fetch(&self, _job: SourceJob) -> Result<Fetched, SourceError> {
        Err(SourceError::new(
            "not_run_here",
            "an external import is run by the app's own workers, never by a node",
        ))
    }
}
