//! Imports of a file the browser uploaded over tus (`imports::uploads`):
//! the bytes are already stored when the runner claims the import (it is
//! never claimed while `uploading`), so this source only hands them over
//! as `source.<container>` in the import's directory: a rename on local
//! storage, a download from the bucket with S3 (the object stays there
//! until the import ends, so another node can take it again; see
//! `imports::uploads`).

use std::sync::Arc;

use async_trait::async_trait;
use reeltime_protocol::{Import, ImportSource};
use tokio::io::AsyncReadExt;

use super::{Accepted, Fetched, Output, Resume, Source, SourceError, SourceJob, SourceSpec, kind};
use crate::imports::ImportServiceError;
use crate::imports::runner::files;
use crate::imports::sniff;
use crate::imports::uploads::bytes::UploadBytes;

/// Longest `filename` kept, in characters.
const MAX_FILE_NAME: usize = 255;

/// Hands a finished upload's bytes to the media stages.
pub struct UploadSource {
    bytes: Arc<dyn UploadBytes>,
}

impl UploadSource {
    pub fn new(bytes: Arc<dyn UploadBytes>) -> UploadSource {
        UploadSource { bytes }
    }
}

#[async_trait]
impl Source for UploadSource {
    fn kind(&self) -> &'static str {
        kind::UPLOAD
    }

    /// The file name is only shown: cut to a sane length, control
    /// characters dropped; the title defaults to it.
    async fn accept(&self, spec: &SourceSpec) -> Result<Accepted, ImportServiceError> {
        let SourceSpec::Upload { file_name, .. } = spec else {
            return Err(ImportServiceError::BadRequest("not an upload".into()));
        };
        let clean: String = file_name
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_FILE_NAME)
            .collect();
        let clean = clean.trim().to_string();
        let file_name = (!clean.is_empty()).then_some(clean);
        Ok(Accepted {
            source: ImportSource::Upload,
            source_url: None,
            default_title: file_name.clone().unwrap_or_else(|| "upload".into()),
            file_name,
        })
    }

    /// No network to wait for: the bytes are in this server's storage.
    fn waits_in_download_line(&self) -> bool {
        false
    }

    fn output(&self) -> Output {
        Output::File
    }

    fn bytes_total(&self, import: &Import) -> Option<u64> {
        import.bytes_total
    }

    /// In the bucket the bytes outlive a node (they stay until the import
    /// ends); in a data dir they were moved into the import's directory,
    /// which an interrupted import loses.
    fn resume(&self) -> Resume {
        if self.bytes.is_remote() {
            Resume::FromScratch
        } else {
            Resume::NotPossible(
                "the server stopped while taking over the uploaded file; upload it again",
            )
        }
    }

    async fn fetch(&self, job: SourceJob) -> Result<Fetched, SourceError> {
        let storage_error = |err: &dyn std::fmt::Display| {
            SourceError::new(
                "storage_error",
                format!("could not keep the uploaded file: {err}"),
            )
        };
        tokio::fs::create_dir_all(&job.dir)
            .await
            .map_err(|err| storage_error(&err))?;
        let part = files::part_file(&job.dir);
        let bytes = self
            .bytes
            .take(&job.import.id, &part)
            .await
            .map_err(|err| storage_error(&err))?;
        job.progress.report(bytes, Some(bytes));
        let mut head = Vec::with_capacity(sniff::SNIFF_BYTES);
        let mut file = tokio::fs::File::open(&part)
            .await
            .map_err(|err| storage_error(&err))?;
        (&mut file)
            .take(sniff::SNIFF_BYTES as u64)
            .read_to_end(&mut head)
            .await
            .map_err(|err| storage_error(&err))?;
        let Some(container) = sniff::container(&head) else {
            return Err(SourceError::new(
                "not_a_video",
                "the file is not a video this server can read",
            ));
        };
        let source = files::source_file(&job.dir, container);
        tokio::fs::rename(&part, &source)
            .await
            .map_err(|err| storage_error(&err))?;
        Ok(Fetched::File {
            bytes,
            container,
            content_type: None,
        })
    }
}
