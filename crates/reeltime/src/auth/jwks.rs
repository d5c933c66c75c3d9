//! A JWKS cache that keeps serving the last good keys while the issuer is
//! down, and refetches on an unknown `kid` without letting bad tokens turn
//! the server into a traffic source against the issuer.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{AuthError, KeySet, VerifyKey};
use crate::metrics::Metrics;

/// How often keys are refreshed in the background.
pub const REFRESH_EVERY: Duration = Duration::from_secs(300);
/// At most one fetch triggered by an unknown `kid` per this period.
pub const MIN_REFETCH_GAP: Duration = Duration::from_secs(30);
/// A JWKS larger than this is refused.
const MAX_JWKS_BYTES: usize = 512 * 1024;

/// Cached keys of one JWKS endpoint.
pub struct JwksCache {
    url: String,
    http: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    /// Held for the whole of a fetch so that only one is in flight; holds
    /// the time of the last fetch an unknown `kid` triggered.
    fetching: Mutex<Option<Instant>>,
    metrics: Arc<Metrics>,
}

impl JwksCache {
    pub fn new(url: String, metrics: Arc<Metrics>) -> anyhow::Result<Arc<JwksCache>> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()?;
        Ok(Arc::new(JwksCache {
            url,
            http,
            keys: RwLock::new(Arc::new(KeySet::default())),
            fetching: Mutex::new(None),
            metrics,
        }))
    }

    /// First fetch, then a refresh every [`REFRESH_EVERY`] until `stop`.
    /// An unreachable endpoint is logged, not fatal.
    pub fn start(self: &Arc<Self>, stop: CancellationToken) {
        let cache = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                {
                    // Scheduled fetches take the lock (one fetch in flight)
                    // but leave the on-demand rate limit alone.
                    let _in_flight = cache.fetching.lock().await;
                    cache.fetch_and_store().await;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(REFRESH_EVERY) => {}
                }
            }
        });
    }

    /// The key for `kid`, refetching once if it is unknown and the last
    /// attempt is old enough.
    pub async fn find(&self, kid: Option<&str>) -> Result<VerifyKey, AuthError> {
        if let Some(key) = self.current().find(kid) {
            return Ok(key.clone());
        }
        let mut last = self.fetching.lock().await;
        // Another task may have fetched while we waited for the lock.
        let keys = self.current();
        if let Some(key) = keys.find(kid) {
            return Ok(key.clone());
        }
        let recently = last.is_some_and(|at| at.elapsed() < MIN_REFETCH_GAP);
        if recently {
            return Err(if keys.is_empty() {
                AuthError::KeysUnavailable
            } else {
                AuthError::UnknownKey
            });
        }
        *last = Some(Instant::now());
        self.fetch_and_store().await;
        let keys = self.current();
        match keys.find(kid) {
            Some(key) => Ok(key.clone()),
            None if keys.is_empty() => Err(AuthError::KeysUnavailable),
            None => Err(AuthError::UnknownKey),
        }
    }

    fn current(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(keys) => Arc::clone(&keys),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    async fn fetch_and_store(&self) {
        match self.fetch().await {
            Ok(set) => {
                self.metrics
                    .jwks_fetch_ok
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(keys = set.len(), url = %self.url, "JWKS fetched");
                let fresh = Arc::new(set);
                match self.keys.write() {
                    Ok(mut keys) => *keys = fresh,
                    Err(poisoned) => *poisoned.into_inner() = fresh,
                }
            }
            Err(err) => {
                self.metrics
                    .jwks_fetch_error
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(url = %self.url, error = %err, "JWKS fetch failed; keeping the last good keys");
            }
        }
    }

    async fn fetch(&self) -> anyhow::Result<KeySet> {
        let response = self.http.get(&self.url).send().await?.error_for_status()?;
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                anyhow::bail!("JWKS larger than {MAX_JWKS_BYTES} bytes");
            }
            body.extend_from_slice(&chunk);
        }
        let document: serde_json::Value = serde_json::from_slice(&body)?;
        KeySet::from_jwks(&document).map_err(anyhow::Error::msg)
    }
}
