//! Where an import's bytes come from. A [`Source`] says how a new import of
//! its kind is checked, how its bytes are produced (or, for a synthetic
//! import, only its progress), and whether an interrupted import can start
//! again; the runner (`imports::runner`) does everything else the same way
//! for every source: the waiting lines, the leases, the throttled commits,
//! the media stages, the results and the clean-up.
//!
//! Adding a source is one new file here and one line in
//! [`Sources::standard`]; nothing in the runner's loop changes
//! (docs/architecture.md, "Adding an import source").

pub mod external;
pub mod synthetic;
pub mod upload;
pub mod url;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use reeltime_protocol::{Import, ImportSource};
use tokio::sync::watch;

use super::ImportServiceError;
use super::fetch::{FetchError, Fetcher, Progress};
use super::guard::Policy;

/// The kind names a stored import is run by.
pub mod kind {
    /// An HTTP(S) download ([`super::url::UrlSource`]).
    pub const URL: &str = "url";
    /// A load-test import that only reports progress
    /// ([`super::synthetic::SyntheticSource`]).
    pub const SYNTHETIC: &str = "synthetic";
    /// A browser upload over tus (`/api/uploads`).
    pub const UPLOAD: &str = "upload";
    /// An import the app's own workers run and report on.
    pub const EXTERNAL: &str = "external";
}

/// What a user asks to import: a URL (`POST /api/imports`) or a file the
/// browser uploads (`POST /api/uploads`).
#[derive(Debug, Clone)]
pub enum SourceSpec {
    /// The `url` of `POST /api/imports`, as sent.
    Url(String),
    /// `"source":"external"` on `POST /api/server/imports`: the app's own
    /// workers do the work and report it ([`external::ExternalSource`]).
    External,
    /// A tus upload: the `filename` of its `Upload-Metadata` (may be
    /// empty) and its `Upload-Length`.
    Upload { file_name: String, length: u64 },
}

impl SourceSpec {
    /// The kind of source that checks and later runs this spec.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::Url(raw) => kind_of_url(raw),
            SourceSpec::External => kind::EXTERNAL,
            SourceSpec::Upload { .. } => kind::UPLOAD,
        }
    }

    /// The URL-shaped spec's URL, after the checks every URL gets; a
    /// source that is given another shape refuses it (so a new variant
    /// does not touch the existing sources).
    pub fn url(&self) -> Result<::url::Url, ImportServiceError> {
        match self {
            SourceSpec::Url(raw) => parse_url(raw),
            SourceSpec::External => Err(ImportServiceError::BadRequest(
                "an external import has no url".into(),
            )),
            SourceSpec::Upload { .. } => Err(ImportServiceError::BadRequest(
                "an upload has no URL".into(),
            )),
        }
    }
}

/// A new import as the caller describes it (see [`super::ImportService::create`]).
#[derive(Debug, Clone)]
pub struct NewImport {
    pub title: Option<String>,
    pub source: SourceSpec,
    /// The app's JSON object linking the import to its records (at most
    /// [`MAX_METADATA_BYTES`](super::MAX_METADATA_BYTES) serialized).
    pub metadata: Option<serde_json::Value>,
}

/// A spec its source accepted: what is stored in the new import.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The import's `source` on the wire.
    pub source: ImportSource,
    /// The import's `source_url` (URL imports only).
    pub source_url: Option<String>,
    /// The import's `file_name` (uploads only).
    pub file_name: Option<String>,
    /// The title when the caller gave none.
    pub default_title: String,
}

impl Accepted {
    /// What a URL-shaped source stores.
    pub fn url(url: &::url::Url, default_title: String) -> Accepted {
        Accepted {
            source: ImportSource::Url,
            source_url: Some(url.to_string()),
            file_name: None,
            default_title,
        }
    }
}

/// What a source can do for an import that was interrupted (a restart, a
/// crash, a node that died and another that took its lease over). An
/// import whose source had produced its file and was in the media stages
/// resumes there, whatever its source, as long as the file is still in its
/// directory; this says what happens otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Start over: the bytes can be had again, from any node (a URL is
    /// downloaded again; a synthetic import replays its plan).
    FromScratch,
    /// The bytes cannot be had again (e.g. an upload whose part lived only
    /// on the node that died): the import fails `interrupted` with this
    /// sentence, which tells the user what to do.
    NotPossible(&'static str),
}

/// What a source's work leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// A file in the import's directory: the media stages follow, and the
    /// source's progress is the first share of the progress bar.
    File,
    /// Nothing to store: the source's progress is the whole bar and its
    /// result completes the import.
    ProgressOnly,
}

/// How a source's work ended well.
#[derive(Debug, Clone)]
pub enum Fetched {
    /// `source.<container>` is in the import's directory
    /// ([`Output::File`]).
    File {
        bytes: u64,
        container: &'static str,
        content_type: Option<String>,
    },
    /// The import is complete with this `result` ([`Output::ProgressOnly`]).
    Finished {
        bytes: u64,
        result: serde_json::Value,
    },
}

/// Why a source's work failed: `code` becomes the import's `error.code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    pub code: &'static str,
    pub message: String,
}

impl SourceError {
    pub fn new(code: &'static str, message: impl Into<String>) -> SourceError {
        SourceError {
            code,
            message: message.into(),
        }
    }
}

impl From<FetchError> for SourceError {
    fn from(err: FetchError) -> Self {
        SourceError::new(err.code(), err.to_string())
    }
}

/// One run of a source for one import, handed over by the runner.
pub struct SourceJob {
    /// The import as it stood when the work began.
    pub import: Import,
    /// The import's own directory: where [`Output::File`] sources write
    /// `source.part`, then `source.<container>`.
    pub dir: PathBuf,
    /// What the user's storage quota still allows (`None`: no quota, or an
    /// [`Output::ProgressOnly`] source).
    pub quota_left: Option<u64>,
    pub progress: Reporter,
}

/// A source's voice: what it reports is published by the runner at most
/// every [`PROGRESS_EVERY`](super::runner::PROGRESS_EVERY), the latest value
/// winning, so a source reports as often as it likes.
pub struct Reporter {
    reports: watch::Sender<Report>,
    published: watch::Receiver<u64>,
}

/// One report, numbered so that [`Reporter::published`] can tell when it
/// was written.
#[derive(Debug, Clone, Copy, Default)]
pub struct Report {
    pub seq: u64,
    pub progress: Progress,
}

/// The runner's ends of a [`Reporter`]: the reports to publish, and where
/// to say what was published.
pub struct ReportReceiver {
    pub reports: watch::Receiver<Report>,
    pub published: watch::Sender<u64>,
}

impl Reporter {
    pub fn new() -> (Reporter, ReportReceiver) {
        let (reports_tx, reports_rx) = watch::channel(Report::default());
        let (published_tx, published_rx) = watch::channel(0);
        (
            Reporter {
                reports: reports_tx,
                published: published_rx,
            },
            ReportReceiver {
                reports: reports_rx,
                published: published_tx,
            },
        )
    }

    /// Bytes done so far, and the total when known.
    pub fn report(&self, done: u64, total: Option<u64>) {
        self.reports.send_modify(|report| {
            report.seq += 1;
            report.progress = Progress { done, total };
        });
    }

    /// Resolves when the last report was sent to the sockets (or the job is
    /// stopping). For a source whose every step must reach the user.
    pub async fn published(&self) {
        let wanted = self.reports.borrow().seq;
        let mut published = self.published.clone();
        let _ = published.wait_for(|seq| *seq >= wanted).await;
    }
}

/// One way of producing an import's bytes. Implementations hold what they
/// need (an HTTP client, a setting); the runner holds them in [`Sources`].
#[async_trait]
pub trait Source: Send + Sync {
    /// The kind name imports of this source are stored under ([`kind`]).
    fn kind(&self) -> &'static str;

    /// Checks a new import's spec with this source's own rules, before
    /// anything is stored.
    async fn accept(&self, spec: &SourceSpec) -> Result<Accepted, ImportServiceError>;

    /// Whether the work waits its turn in this node's download line. Every
    /// job counts against the download slots when the runner claims work,
    /// whatever this says.
    fn waits_in_download_line(&self) -> bool {
        true
    }

    fn output(&self) -> Output;

    /// Whether a node runs imports of this source. An import the app's own
    /// workers run ([`external::ExternalSource`]) says no: it is stored
    /// apart (the `external` column), so no node ever claims it, and its
    /// changes come from the server API's reports.
    fn runs_on_nodes(&self) -> bool {
        true
    }

    /// `bytes_total` as the work starts, when the source knows it then.
    fn bytes_total(&self, _import: &Import) -> Option<u64> {
        None
    }

    /// What an interrupted import of this source does.
    fn resume(&self) -> Resume;

    /// Produces the import's bytes (or only its progress), reporting
    /// through `job.progress`. Dropped when the job stops (cancel,
    /// shutdown, a lost lease): it must leave nothing running.
    async fn fetch(&self, job: SourceJob) -> Result<Fetched, SourceError>;
}

/// A stored import whose kind this server has no source for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this server has no import source \"{0}\"")]
pub struct UnknownSource(pub String);

/// The registry: each import kind and the source that runs it.
pub struct Sources {
    sources: Vec<Arc<dyn Source>>,
}

impl Sources {
    pub fn new(sources: Vec<Arc<dyn Source>>) -> Sources {
        Sources { sources }
    }

    /// This server's sources: the one place a new source is registered.
    pub fn standard(
        policy: Arc<Policy>,
        fetcher: Fetcher,
        uploads: Arc<dyn super::uploads::bytes::UploadBytes>,
    ) -> Sources {
        let synthetic_allowed = policy.allow_synthetic;
        Sources::new(vec![
            Arc::new(url::UrlSource::new(policy, fetcher)),
            Arc::new(synthetic::SyntheticSource::new(synthetic_allowed)),
            Arc::new(external::ExternalSource),
            Arc::new(upload::UploadSource::new(uploads)),
        ])
    }

    pub fn get(&self, kind: &str) -> Result<&Arc<dyn Source>, UnknownSource> {
        self.sources
            .iter()
            .find(|source| source.kind() == kind)
            .ok_or_else(|| UnknownSource(kind.to_string()))
    }

    /// The source that runs a stored import.
    pub fn for_import(&self, import: &Import) -> Result<&Arc<dyn Source>, UnknownSource> {
        self.get(kind_of(import))
    }

    /// Checks a new import's spec with its source's rules.
    pub async fn accept(&self, spec: &SourceSpec) -> Result<Accepted, ImportServiceError> {
        let source = self
            .get(spec.kind())
            .map_err(|unknown| ImportServiceError::BadRequest(unknown.to_string()))?;
        source.accept(spec).await
    }
}

/// A stored import's kind: its `source`, and for a URL import the scheme
/// (a `synthetic:` URL is a load-test import).
pub fn kind_of(import: &Import) -> &'static str {
    match import.source {
        ImportSource::Url => kind_of_url(import.source_url.as_deref().unwrap_or_default()),
        ImportSource::Upload => kind::UPLOAD,
        ImportSource::External => kind::EXTERNAL,
    }
}

fn kind_of_url(raw: &str) -> &'static str {
    match ::url::Url::parse(raw.trim()) {
        Ok(url) if url.scheme() == synthetic::SCHEME => kind::SYNTHETIC,
        _ => kind::URL,
    }
}

/// The checks every URL-shaped spec gets: present, not huge, parseable.
fn parse_url(raw: &str) -> Result<::url::Url, ImportServiceError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(ImportServiceError::BadRequest("url is required".into()));
    }
    if raw.len() > 2048 {
        return Err(ImportServiceError::BadRequest(
            "url is longer than 2048 characters".into(),
        ));
    }
    ::url::Url::parse(raw)
        .map_err(|err| ImportServiceError::BadRequest(format!("url is not a valid URL: {err}")))
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use reeltime_protocol::ImportStatus;

    use super::*;
    use crate::imports::fetch::DownloadPace;

    fn stored(source_url: &str) -> Import {
        Import {
            id: "id".into(),
            status: ImportStatus::Queued,
            stage: None,
            progress: None,
            bytes_done: 0,
            bytes_total: None,
            version: 1,
            attempt: 1,
            source: ImportSource::Url,
            source_url: Some(source_url.into()),
            file_name: None,
            metadata: None,
            title: "t".into(),
            error: None,
            result: None,
            queue_position: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn url_source() -> Arc<dyn Source> {
        let policy = Arc::new(Policy::default());
        let pace = DownloadPace {
            min_bytes_per_min: 1,
            window: std::time::Duration::from_secs(60),
            deadline: std::time::Duration::from_secs(60),
        };
        let fetcher = Fetcher::new(Arc::clone(&policy), 1 << 20, pace, "test").unwrap();
        Arc::new(url::UrlSource::new(policy, fetcher))
    }

    #[test]
    fn a_stored_import_finds_the_source_of_its_kind() {
        let sources = Sources::new(vec![
            url_source(),
            Arc::new(synthetic::SyntheticSource::new(false)),
        ]);
        let http = sources
            .for_import(&stored("https://example.com/a.mp4"))
            .unwrap();
        assert_eq!((http.kind(), http.output()), (kind::URL, Output::File));
        let load = sources.for_import(&stored("synthetic:?steps=5")).unwrap();
        assert_eq!(
            (load.kind(), load.output(), load.resume()),
            (kind::SYNTHETIC, Output::ProgressOnly, Resume::FromScratch)
        );
    }

    #[test]
    fn an_unknown_kind_is_a_clear_error() {
        let sources = Sources::new(vec![url_source()]);
        let missing = sources.for_import(&stored("synthetic:?steps=5"));
        let err = missing.map(|s| s.kind()).unwrap_err();
        assert_eq!(err, UnknownSource("synthetic".into()));
        assert_eq!(
            err.to_string(),
            "this server has no import source \"synthetic\""
        );
        assert!(sources.get("upload").is_err());
    }

    #[tokio::test]
    async fn a_spec_is_checked_by_its_own_source() {
        let sources = Sources::new(vec![
            url_source(),
            Arc::new(synthetic::SyntheticSource::new(true)),
        ]);
        let accepted = sources
            .accept(&SourceSpec::Url("synthetic:?steps=5".into()))
            .await
            .unwrap();
        assert_eq!(accepted.source_url.as_deref(), Some("synthetic:?steps=5"));
        let bad = sources
            .accept(&SourceSpec::Url("synthetic:?steps=0".into()))
            .await;
        assert!(
            matches!(bad, Err(ImportServiceError::BadRequest(_))),
            "{bad:?}"
        );
        let blocked = sources
            .accept(&SourceSpec::Url("http://127.0.0.1/a.mp4".into()))
            .await;
        assert!(
            matches!(blocked, Err(ImportServiceError::UrlNotAllowed(_))),
            "{blocked:?}"
        );
    }

    #[tokio::test]
    async fn published_waits_for_the_runner_to_send_the_last_report() {
        let (reporter, receiver) = Reporter::new();
        reporter.report(1, Some(2));
        let seq = receiver.reports.borrow().seq;
        let waiting = tokio::spawn(async move { reporter.published().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        receiver.published.send_replace(seq);
        waiting.await.unwrap();
    }
}
