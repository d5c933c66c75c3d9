//! The delivery worker of one node: claim due deliveries under a lease,
//! POST each, record how it went.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use reeltime_protocol::Import;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{WebhookSettings, next_attempt};
use crate::metrics::Metrics;
use crate::store::hooks::{Attempt, Delivery};
use crate::store::{HookStore, StoreError};

/// How an import is shown to the app: the stored object with fresh signed
/// media links (the imports service's `present`), joined in `app`.
pub type Presenter = Arc<dyn Fn(&str, Import) -> Import + Send + Sync>;

/// How often an idle worker looks for due deliveries. A retry asked for
/// through the API wakes it at once.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// Deliveries claimed at once (each of another import), and sent together.
const BATCH: usize = 16;
/// The longest one request may take, whatever the lease.
const MAX_REQUEST_TIME: Duration = Duration::from_secs(10);
/// How long delivered events stay listed in the deliveries API.
pub const KEEP_DELIVERED: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long failed events stay there (to be looked at and retried).
pub const KEEP_FAILED: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often a node purges what is older than that.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Why the worker could not be built.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("bad webhook secret: {0}")]
    Secret(String),
    #[error("could not build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// This node's webhook sender; cheap to share.
pub struct Webhooks {
    hooks: Arc<dyn HookStore>,
    settings: WebhookSettings,
    signer: standardwebhooks::Webhook,
    client: reqwest::Client,
    node: String,
    lease: Duration,
    metrics: Arc<Metrics>,
    present: Presenter,
    wake: Notify,
}

/// What a running worker needs besides the settings.
pub struct WorkerParts {
    pub hooks: Arc<dyn HookStore>,
    /// This node's id: the lease owner, and in the User-Agent.
    pub node: String,
    /// How long a claim lasts without an outcome (the job lease).
    pub lease: Duration,
    pub metrics: Arc<Metrics>,
    pub present: Presenter,
}

impl Webhooks {
    /// Checks the secret and builds the client. Requests are bounded: a
    /// connect timeout, a total timeout shorter than the lease (so a slow
    /// receiver never sees two nodes send the same delivery at once), no
    /// redirects, no proxy from the environment. Private addresses are
    /// allowed: the URL is the operator's, not a user's.
    pub fn new(
        settings: WebhookSettings,
        parts: WorkerParts,
    ) -> Result<Arc<Webhooks>, WebhookError> {
        super::parse_secret(&settings.secret).map_err(WebhookError::Secret)?;
        let signer = standardwebhooks::Webhook::new(settings.secret.trim())
            .map_err(|_| WebhookError::Secret("not base64".into()))?;
        let request_time = (parts.lease / 2).clamp(Duration::from_secs(1), MAX_REQUEST_TIME);
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(request_time.min(Duration::from_secs(5)))
            .timeout(request_time)
            .user_agent(format!(
                "reeltime/{} (node {}) webhooks",
                env!("CARGO_PKG_VERSION"),
                parts.node
            ))
            .build()?;
        Ok(Arc::new(Webhooks {
            hooks: parts.hooks,
            settings,
            signer,
            client,
            node: parts.node,
            lease: parts.lease,
            metrics: parts.metrics,
            present: parts.present,
            wake: Notify::new(),
        }))
    }

    /// Looks for due deliveries now (a retry was asked for).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Sends deliveries until `shutdown`. Another round follows at once
    /// when one found a full batch.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        tracing::info!(
            host = self.settings.url.host_str().unwrap_or(""),
            "webhooks on (REELTIME_WEBHOOK_URL)"
        );
        let mut purged_at = tokio::time::Instant::now();
        loop {
            if purged_at.elapsed() >= PURGE_EVERY {
                purged_at = tokio::time::Instant::now();
                match self
                    .hooks
                    .purge_deliveries(KEEP_DELIVERED, KEEP_FAILED)
                    .await
                {
                    Ok(0) => {}
                    Ok(purged) => tracing::debug!(purged, "old webhook deliveries purged"),
                    Err(err) => {
                        tracing::warn!(error = %err, "could not purge old webhook deliveries")
                    }
                }
            }
            let sent = match self.round().await {
                Ok(sent) => sent,
                Err(err) => {
                    tracing::warn!(error = %err, "webhooks: could not claim deliveries");
                    0
                }
            };
            if sent == BATCH {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(POLL_EVERY) => {}
            }
        }
    }

    /// One claim and its sends; returns how many were claimed.
    async fn round(&self) -> Result<usize, StoreError> {
        let claimed = self
            .hooks
            .claim_deliveries(&self.node, BATCH, self.lease)
            .await?;
        let count = claimed.len();
        futures_util::stream::iter(claimed)
            .for_each_concurrent(BATCH, |delivery| async move {
                let attempt = self.send(&delivery).await;
                self.record(&delivery, &attempt).await;
            })
            .await;
        Ok(count)
    }

    /// Writes the outcome; a failed write leaves the lease to run out and
    /// the delivery to be sent again (at least once, never lost).
    async fn record(&self, delivery: &Delivery, attempt: &Attempt) {
        match self
            .hooks
            .finish_attempt(&self.node, delivery.seq, attempt)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                webhook_id = %delivery.id,
                "webhooks: lease lost before the outcome was stored; another node sends it again"
            ),
            Err(err) => tracing::warn!(
                webhook_id = %delivery.id,
                error = %err,
                "webhooks: could not store an outcome; the delivery is sent again"
            ),
        }
    }

    /// The body: `{"type","timestamp","data"}`, `data` the import as its
    /// owner sees it (with fresh media links).
    fn body(&self, delivery: &Delivery) -> Result<Vec<u8>, serde_json::Error> {
        let data = match serde_json::from_str::<Import>(&delivery.data) {
            Ok(import) => serde_json::to_value((self.present)(&delivery.user_id, import))?,
            Err(_) => serde_json::from_str::<serde_json::Value>(&delivery.data)?,
        };
        serde_json::to_vec(&serde_json::json!({
            "type": delivery.event_type,
            "timestamp": delivery.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "data": data,
        }))
    }

    /// One signed POST, classified: 2xx delivered, 410 failed for good,
    /// anything else (or no answer) retried on the schedule.
    async fn send(&self, delivery: &Delivery) -> Attempt {
        let attempts = delivery.attempts.saturating_add(1);
        let failed = |status: Option<u16>, error: String| {
            let jitter = f64::from(uuid::Uuid::new_v4().as_u128() as u16) / 65_536.0;
            match next_attempt(attempts, self.settings.retry_scale, jitter, Utc::now()) {
                Some(at) => Attempt::Retry { at, status, error },
                None => Attempt::Failed { status, error },
            }
        };
        let body = match self.body(delivery) {
            Ok(body) => body,
            Err(err) => {
                return Attempt::Failed {
                    status: None,
                    error: format!("stored event is not JSON: {err}"),
                };
            }
        };
        let timestamp = Utc::now().timestamp();
        let signature = match self.signer.sign(&delivery.id, timestamp, &body) {
            Ok(signature) => signature,
            Err(err) => {
                return Attempt::Failed {
                    status: None,
                    error: format!("could not sign: {err}"),
                };
            }
        };
        let answer = self
            .client
            .post(self.settings.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &delivery.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let attempt = match answer {
            Ok(response) if response.status().is_success() => Attempt::Delivered {
                status: response.status().as_u16(),
            },
            Ok(response) if response.status() == reqwest::StatusCode::GONE => Attempt::Failed {
                status: Some(410),
                error: "the receiver answered 410 Gone".into(),
            },
            Ok(response) => {
                let status = response.status().as_u16();
                failed(Some(status), format!("the receiver answered {status}"))
            }
            Err(err) => failed(None, describe(err)),
        };
        self.count(delivery, &attempt);
        attempt
    }

    fn count(&self, delivery: &Delivery, attempt: &Attempt) {
        match attempt {
            Attempt::Delivered { status } => {
                self.metrics
                    .webhooks_delivered
                    .fetch_add(1, Ordering::Relaxed);
                let lag = (chrono::Utc::now() - delivery.occurred_at).to_std();
                (self.metrics.webhook_delivery_lag_seconds)
                    .observe(lag.unwrap_or_default().as_secs_f64());
                tracing::debug!(webhook_id = %delivery.id, event = %delivery.event_type, status, "webhook delivered");
            }
            Attempt::Retry { at, error, .. } => {
                self.metrics
                    .webhook_attempts_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(webhook_id = %delivery.id, event = %delivery.event_type, %error, retry_at = %at, "webhook attempt failed");
            }
            Attempt::Failed { error, .. } => {
                self.metrics
                    .webhook_attempts_failed
                    .fetch_add(1, Ordering::Relaxed);
                self.metrics.webhooks_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(webhook_id = %delivery.id, event = %delivery.event_type, %error, "webhook failed for good");
            }
        }
    }
}

/// A request error in words, without the URL (it may carry a token).
fn describe(err: reqwest::Error) -> String {
    if err.is_timeout() {
        "no answer in time".into()
    } else if err.is_connect() {
        "could not connect".into()
    } else {
        err.without_url().to_string()
    }
}
