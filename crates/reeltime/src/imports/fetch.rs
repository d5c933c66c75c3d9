//! Downloads an import's source over HTTP(S) into the data dir, reporting
//! byte progress, behind the [`guard`](super::guard).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use url::Url;

use super::guard::{Blocked, GuardedResolver, Policy};
use super::sniff;
use super::source::Reporter;

/// Redirects followed before giving up.
pub const MAX_REDIRECTS: usize = 5;

/// Bytes so far, and the total when the server said it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Progress {
    pub done: u64,
    pub total: Option<u64>,
}

/// A finished download.
#[derive(Debug, Clone)]
pub struct Downloaded {
    pub bytes: u64,
    pub container: &'static str,
    pub content_type: Option<String>,
    /// Where the last redirect led.
    pub final_url: Url,
}

/// How slow a download may be before it gives its slot up: a sender
/// trickling a byte every few seconds would otherwise hold it for ever
/// (docs/security.md).
#[derive(Debug, Clone)]
pub struct DownloadPace {
    /// Least bytes per minute, measured over each `window` of the body.
    pub min_bytes_per_min: u64,
    pub window: Duration,
    /// The whole download, from the first request to the last byte.
    pub deadline: Duration,
}

impl DownloadPace {
    /// Bytes the body must bring in each window.
    fn per_window(&self) -> u64 {
        let bytes = u128::from(self.min_bytes_per_min) * self.window.as_millis() / 60_000;
        u64::try_from(bytes).unwrap_or(u64::MAX)
    }
}

/// Why a download failed; `code` is what the import's `error.code` says.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    NotAllowed(String),
    #[error("the file is larger than the {max} bytes allowed")]
    TooLarge { max: u64 },
    #[error("the file does not fit in your storage quota ({left} bytes left)")]
    QuotaExceeded { left: u64 },
    #[error("{0}")]
    TooSlow(String),
    #[error("the file is not a video (its first bytes match no video container)")]
    NotAVideo,
    #[error("the server answered HTTP {0}")]
    Status(u16),
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    #[error("download failed: {0}")]
    Network(String),
    #[error("could not write the file: {0}")]
    Io(#[from] std::io::Error),
}

impl FetchError {
    pub fn code(&self) -> &'static str {
        match self {
            FetchError::NotAllowed(_) => "url_not_allowed",
            FetchError::TooLarge { .. } => "too_large",
            FetchError::QuotaExceeded { .. } => "quota_exceeded",
            FetchError::TooSlow(_) => "download_too_slow",
            FetchError::NotAVideo => "not_a_video",
            FetchError::Io(_) => "storage_error",
            FetchError::Status(_) | FetchError::TooManyRedirects | FetchError::Network(_) => {
                "download_failed"
            }
        }
    }
}

/// The HTTP client for imports, built once.
pub struct Fetcher {
    client: reqwest::Client,
    policy: Arc<Policy>,
    max_bytes: u64,
    pace: DownloadPace,
}

impl Fetcher {
    /// `node` is this node's id: it goes in the User-Agent
    /// (`reeltime/<version> (node <id>)`), so the server an import is
    /// fetched from can tell which node of a cluster fetched it.
    pub fn new(
        policy: Arc<Policy>,
        max_bytes: u64,
        pace: DownloadPace,
        node: &str,
    ) -> anyhow::Result<Fetcher> {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: Arc::clone(&policy),
            }))
            // A proxy from the environment would connect for us and bypass
            // the address checks.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(30))
            .user_agent(format!(
                "reeltime/{} (node {node})",
                env!("CARGO_PKG_VERSION")
            ))
            .build()?;
        Ok(Fetcher {
            client,
            policy,
            max_bytes,
            pace,
        })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Streams `url` into `dest`, following at most [`MAX_REDIRECTS`]
    /// redirects, each one checked again. `quota_left` is what the user's
    /// storage quota still allows (`None`: no quota). The whole download
    /// must end within the pace's deadline.
    pub async fn download(
        &self,
        url: &Url,
        dest: &Path,
        progress: &Reporter,
        quota_left: Option<u64>,
    ) -> Result<Downloaded, FetchError> {
        let deadline = self.pace.deadline;
        tokio::time::timeout(
            deadline,
            self.download_in_time(url, dest, progress, quota_left),
        )
        .await
        .unwrap_or_else(|_| {
            Err(FetchError::TooSlow(format!(
                "the download did not finish within {} s",
                deadline.as_secs()
            )))
        })
    }

    async fn download_in_time(
        &self,
        url: &Url,
        dest: &Path,
        progress: &Reporter,
        quota_left: Option<u64>,
    ) -> Result<Downloaded, FetchError> {
        let mut current = url.clone();
        let mut redirects = 0;
        let response = loop {
            self.policy
                .check_url(&current)
                .map_err(|Blocked(why)| FetchError::NotAllowed(why))?;
            let response = self
                .client
                .get(current.clone())
                .send()
                .await
                .map_err(network_error)?;
            if !response.status().is_redirection() {
                break response;
            }
            redirects += 1;
            if redirects > MAX_REDIRECTS {
                return Err(FetchError::TooManyRedirects);
            }
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|value| value.to_str().ok())
                .ok_or(FetchError::Status(response.status().as_u16()))?;
            current = current
                .join(location)
                .map_err(|_| FetchError::Network("bad redirect location".into()))?;
        };
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let total = response.content_length();
        let over = |bytes: u64| -> Option<FetchError> {
            if bytes > self.max_bytes {
                Some(FetchError::TooLarge {
                    max: self.max_bytes,
                })
            } else {
                quota_left
                    .filter(|left| bytes > *left)
                    .map(|left| FetchError::QuotaExceeded { left })
            }
        };
        if let Some(err) = total.and_then(over) {
            return Err(err);
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        progress.report(0, total);

        let mut file =
            tokio::io::BufWriter::with_capacity(256 * 1024, tokio::fs::File::create(dest).await?);
        let mut head: Vec<u8> = Vec::with_capacity(sniff::SNIFF_BYTES);
        let mut container = None;
        let mut done: u64 = 0;
        let mut body = response.bytes_stream();
        let mut window = RateWindow::start(&self.pace, done);
        loop {
            let chunk = match tokio::time::timeout_at(window.ends, body.next()).await {
                Ok(Some(chunk)) => chunk.map_err(network_error)?,
                Ok(None) => break,
                Err(_) => {
                    window = window.next(&self.pace, done)?;
                    continue;
                }
            };
            done += chunk.len() as u64;
            if let Some(err) = over(done) {
                return Err(err);
            }
            if container.is_none() {
                let wanted = sniff::SNIFF_BYTES - head.len();
                head.extend_from_slice(&chunk[..chunk.len().min(wanted)]);
                if head.len() >= sniff::SNIFF_BYTES {
                    container = Some(sniff::container(&head).ok_or(FetchError::NotAVideo)?);
                }
            }
            file.write_all(&chunk).await?;
            progress.report(done, total);
            if Instant::now() >= window.ends {
                window = window.next(&self.pace, done)?;
            }
        }
        let container = match container {
            Some(container) => container,
            None => sniff::container(&head).ok_or(FetchError::NotAVideo)?,
        };
        file.flush().await?;
        file.get_ref().sync_all().await?;
        Ok(Downloaded {
            bytes: done,
            container,
            content_type,
            final_url: current,
        })
    }
}

/// One window of the body over which the minimum rate is measured.
struct RateWindow {
    ends: Instant,
    /// Bytes done when it began.
    from: u64,
}

impl RateWindow {
    fn start(pace: &DownloadPace, done: u64) -> RateWindow {
        RateWindow {
            ends: Instant::now() + pace.window,
            from: done,
        }
    }

    /// Closes this window (failing when too little came in it) and opens
    /// the next.
    fn next(self, pace: &DownloadPace, done: u64) -> Result<RateWindow, FetchError> {
        let got = done - self.from;
        if got < pace.per_window() {
            return Err(FetchError::TooSlow(format!(
                "the server sent {got} bytes in {} s, less than the {} bytes a minute required",
                pace.window.as_secs(),
                pace.min_bytes_per_min
            )));
        }
        Ok(RateWindow::start(pace, done))
    }
}

/// Finds our guard's refusal inside reqwest's error chain, so it is
/// reported as `url_not_allowed` rather than as a network failure.
fn network_error(err: reqwest::Error) -> FetchError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(cause) = source {
        if let Some(Blocked(why)) = cause.downcast_ref::<Blocked>() {
            return FetchError::NotAllowed(why.clone());
        }
        source = cause.source();
    }
    if err.is_timeout() {
        FetchError::Network("the server took too long to answer".into())
    } else if err.is_connect() {
        FetchError::Network("could not connect to the server".into())
    } else {
        FetchError::Network("the connection failed".into())
    }
}
