//! Imports from an HTTP(S) URL: the guarded download of
//! [`fetch`](crate::imports::fetch), checked against the
//! [`guard`](crate::imports::guard) at creation and at every connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use url::Url;

use super::{Accepted, Fetched, Output, Resume, Source, SourceError, SourceJob, SourceSpec, kind};
use crate::imports::ImportServiceError;
use crate::imports::fetch::{FetchError, Fetcher};
use crate::imports::guard::Policy;
use crate::imports::runner::files;

/// Downloads the URL a user gave into the import's directory.
pub struct UrlSource {
    policy: Arc<Policy>,
    fetcher: Fetcher,
}

impl UrlSource {
    pub fn new(policy: Arc<Policy>, fetcher: Fetcher) -> UrlSource {
        UrlSource { policy, fetcher }
    }
}

#[async_trait]
impl Source for UrlSource {
    fn kind(&self) -> &'static str {
        kind::URL
    }

    /// The guard's checks that can be made before anything is stored: the
    /// URL itself, then its addresses. A failed lookup is not fatal here
    /// (the download reports it).
    async fn accept(&self, spec: &SourceSpec) -> Result<Accepted, ImportServiceError> {
        let url = spec.url()?;
        self.policy
            .check_url(&url)
            .map_err(|blocked| ImportServiceError::UrlNotAllowed(blocked.0))?;
        if let Some(url::Host::Domain(host)) = url.host() {
            let port = url.port_or_known_default().unwrap_or(80);
            let lookup = tokio::net::lookup_host((host, port));
            if let Ok(Ok(addrs)) = tokio::time::timeout(Duration::from_secs(3), lookup).await {
                let addrs: Vec<SocketAddr> = addrs.collect();
                self.policy
                    .check_resolved(&host.to_ascii_lowercase(), &addrs)
                    .map_err(|blocked| ImportServiceError::UrlNotAllowed(blocked.0))?;
            }
        }
        Ok(Accepted::url(&url, title_from_url(&url)))
    }

    fn output(&self) -> Output {
        Output::File
    }

    /// The URL can be fetched again from any node.
    fn resume(&self) -> Resume {
        Resume::FromScratch
    }

    async fn fetch(&self, job: SourceJob) -> Result<Fetched, SourceError> {
        tokio::fs::create_dir_all(&job.dir)
            .await
            .map_err(FetchError::Io)?;
        let Ok(url) = Url::parse(job.import.source_url.as_deref().unwrap_or_default()) else {
            return Err(FetchError::NotAllowed("the stored URL is invalid".into()).into());
        };
        if job.quota_left == Some(0) {
            return Err(FetchError::QuotaExceeded { left: 0 }.into());
        }
        let part = files::part_file(&job.dir);
        let downloaded = self
            .fetcher
            .download(&url, &part, &job.progress, job.quota_left)
            .await?;
        let source = files::source_file(&job.dir, downloaded.container);
        if let Err(err) = tokio::fs::rename(&part, &source).await {
            return Err(SourceError::new(
                "storage_error",
                format!("could not keep the file: {err}"),
            ));
        }
        Ok(Fetched::File {
            bytes: downloaded.bytes,
            container: downloaded.container,
            content_type: downloaded.content_type,
        })
    }
}

fn title_from_url(url: &Url) -> String {
    url.path_segments()
        .and_then(|mut segments| segments.next_back())
        .filter(|last| !last.is_empty())
        .map(|last| percent_decode(last).chars().take(200).collect())
        .unwrap_or_else(|| url.host_str().unwrap_or("video").to_string())
}

fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_else(|| text.to_string())
}
