//! What `GET /metrics` shows, encoded by `prometheus-client` (the official
//! Rust client) in the Prometheus text format 0.0.4.
//!
//! Two kinds of fields. The plain atomics (`open_connections`,
//! `messages_sent`, ...) are bumped on the hottest paths (every frame
//! written) and read once per scrape: a relaxed `fetch_add` is all they
//! cost. Everything else is a `prometheus-client` metric: labelled counters
//! ([`Family`]) and histograms, whose `observe` takes an uncontended
//! `parking_lot` lock and walks a dozen buckets (about 20 ns, see
//! docs/benchmarks.md "Metrics cost").
//!
//! A scrape builds a small [`Registry`] from the current values and clones
//! of the metrics (clones share their state), so the names stay in one
//! place: [`Metrics::render`]. Every name the docs' dashboard and alert
//! rules use is checked against a real server's `/metrics` by a test
//! (`tests/observability.rs`).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// One label and its value: `[("reason", "expired")]`.
type Label = [(&'static str, &'static str); 1];
/// A label whose value is only known at run time (an import status).
type OwnedLabel = [(&'static str, String); 1];

/// The content type of what [`Metrics::render`] returns.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Process-wide metrics, shared through `Arc`.
pub struct Metrics {
    /// Authenticated WebSocket connections open now.
    pub open_connections: AtomicI64,
    /// Text frames written to clients (hot path: one relaxed add per write).
    pub messages_sent: AtomicU64,
    /// Authenticated connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections closed 1013 because the client could not keep up.
    pub slow_client_closes: AtomicU64,
    /// JWKS fetches that worked.
    pub jwks_fetch_ok: AtomicU64,
    /// JWKS fetches that failed.
    pub jwks_fetch_error: AtomicU64,
    /// Import changes stored, and the database writes that stored them:
    /// their ratio is how much the group commit batches.
    pub import_changes_stored: AtomicU64,
    pub import_writes: AtomicU64,
    /// Webhook deliveries answered 2xx.
    pub webhooks_delivered: AtomicU64,
    /// Webhook attempts that failed (each retry counts).
    pub webhook_attempts_failed: AtomicU64,
    /// Webhook deliveries given up (410, or the retry schedule used up).
    pub webhooks_failed: AtomicU64,
    /// Clerk webhooks by outcome (handled, duplicate, ignored, refused).
    clerk_webhooks: Family<Label, Counter>,
    auth_failures: Family<Label, Counter>,
    connection_refusals: Family<Label, Counter>,
    /// Close frames the server sent, by code; `code="none"` counts the
    /// sessions that ended with the peer gone (nothing to send).
    closes: Family<[(&'static str, &'static str); 2], Counter>,
    /// Upgrade to `ready` written (token wait, verification, snapshot read).
    pub connect_seconds: Histogram,
    /// One token's verification (key lookup, maybe a JWKS fetch, signature).
    pub token_verify_seconds: Histogram,
    /// A change published (committed or ticked) to its frame written on a socket.
    pub delivery_lag_seconds: Histogram,
    /// Changes per group-commit batch.
    pub group_commit_batch_size: Histogram,
    /// Time to write one group-commit batch.
    pub group_commit_write_seconds: Histogram,
    /// Lease renewal rounds by outcome (`ok`, `error`).
    lease_renewals: Family<Label, Counter>,
    /// Time of one lease renewal round (one store call).
    pub lease_renewal_seconds: Histogram,
    /// Jobs stopped here because their lease was found lost.
    pub leases_lost: Counter,
    /// Webhook event created to its delivery answered 2xx.
    pub webhook_delivery_lag_seconds: Histogram,
    /// Waiting lines by name: imports not yet claimed (`claim`), claimed
    /// ones waiting for a download slot (`download`) or a processing slot
    /// (`processing`); `token` (sockets waiting for their token) is read at
    /// each scrape.
    waiting: Family<Label, Gauge>,
}

/// Buckets for latencies from 100 µs to about 100 s (x2 steps).
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 21))
}

impl Default for Metrics {
    fn default() -> Metrics {
        let metrics = Metrics::empty();
        // Every label value the protocol defines starts at 0: the series
        // exist before their first event (so `rate()` and the dashboard see
        // them), and a scrape always names every metric.
        use reeltime_protocol::close::{POLICY_VIOLATION, SentBy, TABLE, TRY_AGAIN_LATER};
        for row in TABLE.iter().filter(|row| row.sent_by == SentBy::Server) {
            for reason in row.reasons {
                let labels = [("code", code_label(row.code)), ("reason", reason.text)];
                let _ = metrics.closes.get_or_create(&labels);
                if row.code == POLICY_VIOLATION {
                    let _ = metrics
                        .auth_failures
                        .get_or_create(&[("reason", reason.text)]);
                }
                if row.code == TRY_AGAIN_LATER {
                    let _ = (metrics.connection_refusals).get_or_create(&[("reason", reason.text)]);
                }
            }
        }
        let _ = metrics
            .closes
            .get_or_create(&[("code", "none"), ("reason", "peer gone")]);
        for outcome in ["ok", "error"] {
            let _ = metrics
                .lease_renewals
                .get_or_create(&[("outcome", outcome)]);
        }
        // What crate::clerk counts (its outcomes and its refusals).
        for outcome in [
            "handled",
            "duplicate",
            "ignored",
            "bad_signature",
            "stale",
            "bad_payload",
            "error",
        ] {
            let _ = metrics
                .clerk_webhooks
                .get_or_create(&[("outcome", outcome)]);
        }
        for line in ["claim", "download", "processing", "token"] {
            let _ = metrics.waiting.get_or_create(&[("line", line)]);
        }
        metrics
    }
}

/// Import statuses shown at 0 when the store has none of them.
const IMPORT_STATUSES: [&str; 7] = [
    "uploading",
    "queued",
    "downloading",
    "processing",
    "completed",
    "failed",
    "cancelled",
];

impl Metrics {
    fn empty() -> Metrics {
        Metrics {
            open_connections: AtomicI64::new(0),
            messages_sent: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            slow_client_closes: AtomicU64::new(0),
            jwks_fetch_ok: AtomicU64::new(0),
            jwks_fetch_error: AtomicU64::new(0),
            import_changes_stored: AtomicU64::new(0),
            import_writes: AtomicU64::new(0),
            webhooks_delivered: AtomicU64::new(0),
            webhook_attempts_failed: AtomicU64::new(0),
            webhooks_failed: AtomicU64::new(0),
            clerk_webhooks: Family::default(),
            auth_failures: Family::default(),
            connection_refusals: Family::default(),
            closes: Family::default(),
            connect_seconds: seconds(),
            token_verify_seconds: seconds(),
            delivery_lag_seconds: seconds(),
            group_commit_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            group_commit_write_seconds: seconds(),
            lease_renewals: Family::default(),
            lease_renewal_seconds: seconds(),
            leases_lost: Counter::default(),
            webhook_delivery_lag_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 24)),
            waiting: Family::default(),
        }
    }
}

/// What a scrape reads from outside the metrics (the store, the runtime).
#[derive(Debug, Default)]
pub struct Scrape {
    /// Imports in the store by status.
    pub imports_by_status: Vec<(String, u64)>,
    /// Age of the oldest webhook event not yet delivered (`None`: none).
    pub oldest_pending_webhook: Option<Duration>,
    /// Sockets waiting for their token now.
    pub waiting_for_token: usize,
    /// Tasks alive in the Tokio runtime.
    pub tokio_tasks: usize,
    /// `/readyz`'s checks and whether each passed (`database`, `bus`).
    pub ready: Vec<(&'static str, bool)>,
}

impl Metrics {
    /// Counts one rejected token or handshake, by its reason.
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// Counts one socket closed 1013 at its upgrade, by the cap it hit.
    pub fn connection_refused(&self, reason: &'static str) {
        self.connection_refusals
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// Counts one Clerk webhook by what became of it.
    pub fn clerk_webhook(&self, outcome: &'static str) {
        self.clerk_webhooks
            .get_or_create(&[("outcome", outcome)])
            .inc();
    }

    /// Counts one session's end by the close frame sent (`None`: the peer
    /// was gone, no close frame). Both labels come from the protocol's
    /// static table, so their number is bounded.
    pub fn closed(&self, close: Option<&reeltime_protocol::Close>) {
        let labels = match close {
            Some(close) => [("code", code_label(close.code)), ("reason", close.reason)],
            None => [("code", "none"), ("reason", "peer gone")],
        };
        self.closes.get_or_create(&labels).inc();
    }

    /// Records one lease renewal round: how long it took and whether the
    /// store answered.
    pub fn lease_renewal(&self, took: Duration, ok: bool) {
        self.lease_renewal_seconds.observe(took.as_secs_f64());
        let outcome = if ok { "ok" } else { "error" };
        self.lease_renewals
            .get_or_create(&[("outcome", outcome)])
            .inc();
    }

    /// Sets the length of waiting line `line` (see [`Metrics::waiting`]).
    pub fn set_waiting(&self, line: &'static str, length: usize) {
        self.waiting
            .get_or_create(&[("line", line)])
            .set(i64::try_from(length).unwrap_or(i64::MAX));
    }

    /// Records the delivery lag of changes published at `published_us`
    /// (unix microseconds, see [`crate::events::ImportEvent::published_us`])
    /// whose frames were just written.
    pub fn delivered(&self, published_us: &[u64]) {
        let now = unix_micros();
        for at in published_us {
            self.delivery_lag_seconds
                .observe(now.saturating_sub(*at) as f64 / 1e6);
        }
    }

    /// Renders everything, with what the scrape read from outside.
    pub fn render(&self, scrape: &Scrape) -> String {
        let mut registry = Registry::default();
        let load = |value: &AtomicU64| ConstCounter::new(value.load(Ordering::Relaxed));
        registry.register(
            "reeltime_open_connections",
            "Authenticated WebSocket connections open now",
            ConstGauge::new(self.open_connections.load(Ordering::Relaxed)),
        );
        registry.register(
            "reeltime_connections",
            "Authenticated WebSocket connections accepted since start",
            load(&self.connections_total),
        );
        registry.register(
            "reeltime_messages_sent",
            "Messages written to WebSocket clients",
            load(&self.messages_sent),
        );
        registry.register(
            "reeltime_slow_client_closes",
            "Connections closed because the client could not keep up",
            load(&self.slow_client_closes),
        );
        registry.register(
            "reeltime_import_changes_stored",
            "Import changes written to the store",
            load(&self.import_changes_stored),
        );
        registry.register(
            "reeltime_import_writes",
            "Database writes that stored them (a write carries a batch)",
            load(&self.import_writes),
        );
        let jwks = Family::<Label, Counter>::default();
        jwks.get_or_create(&[("outcome", "ok")])
            .inc_by(self.jwks_fetch_ok.load(Ordering::Relaxed));
        jwks.get_or_create(&[("outcome", "error")])
            .inc_by(self.jwks_fetch_error.load(Ordering::Relaxed));
        registry.register("reeltime_jwks_fetches", "JWKS fetches by outcome", jwks);
        registry.register(
            "reeltime_auth_failures",
            "Rejected tokens and handshakes by reason",
            self.auth_failures.clone(),
        );
        registry.register(
            "reeltime_connections_refused",
            "Sockets closed 1013 before they were ready, by the cap they hit (server busy: no connect slot in time)",
            self.connection_refusals.clone(),
        );
        registry.register(
            "reeltime_closes",
            "Sessions ended, by the close code the server sent (none: the peer was gone)",
            self.closes.clone(),
        );
        let imports = Family::<OwnedLabel, Gauge>::default();
        for status in IMPORT_STATUSES {
            let _ = imports.get_or_create(&[("status", status.to_string())]);
        }
        for (status, count) in &scrape.imports_by_status {
            imports
                .get_or_create(&[("status", status.clone())])
                .set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
        registry.register(
            "reeltime_imports",
            "Imports in the store by status",
            imports,
        );
        registry.register(
            "reeltime_webhook_deliveries",
            "Webhook deliveries answered 2xx by this node",
            load(&self.webhooks_delivered),
        );
        registry.register(
            "reeltime_webhook_attempt_failures",
            "Webhook attempts that failed on this node (retried or not)",
            load(&self.webhook_attempts_failed),
        );
        registry.register(
            "reeltime_webhook_failures",
            "Webhook deliveries given up by this node (410 or retries used up)",
            load(&self.webhooks_failed),
        );
        registry.register(
            "reeltime_webhook_oldest_pending_seconds",
            "Age of the oldest webhook event not yet delivered (0: none)",
            ConstGauge::new(
                scrape
                    .oldest_pending_webhook
                    .map_or(0.0, |age| age.as_secs_f64()),
            ),
        );
        registry.register(
            "reeltime_clerk_webhooks",
            "Clerk webhooks received, by outcome",
            self.clerk_webhooks.clone(),
        );
        registry.register(
            "reeltime_connect_seconds",
            "WebSocket upgrade to ready written (token wait, verification, snapshot)",
            self.connect_seconds.clone(),
        );
        registry.register(
            "reeltime_token_verify_seconds",
            "Time to verify one token (key lookup, JWKS fetch when needed, signature)",
            self.token_verify_seconds.clone(),
        );
        registry.register(
            "reeltime_delivery_lag_seconds",
            "Import change published to its frame written on a socket",
            self.delivery_lag_seconds.clone(),
        );
        registry.register(
            "reeltime_group_commit_batch_size",
            "Import changes per group-commit batch",
            self.group_commit_batch_size.clone(),
        );
        registry.register(
            "reeltime_group_commit_write_seconds",
            "Time to write one group-commit batch",
            self.group_commit_write_seconds.clone(),
        );
        registry.register(
            "reeltime_lease_renewals",
            "Job lease renewal rounds by outcome",
            self.lease_renewals.clone(),
        );
        registry.register(
            "reeltime_lease_renewal_seconds",
            "Time of one job lease renewal round",
            self.lease_renewal_seconds.clone(),
        );
        registry.register(
            "reeltime_leases_lost",
            "Jobs stopped on this node because their lease was lost",
            self.leases_lost.clone(),
        );
        registry.register(
            "reeltime_webhook_delivery_lag_seconds",
            "Webhook event created to its delivery answered 2xx",
            self.webhook_delivery_lag_seconds.clone(),
        );
        self.set_waiting("token", scrape.waiting_for_token);
        registry.register(
            "reeltime_waiting",
            "Waiting line lengths (claim, download, processing, token)",
            self.waiting.clone(),
        );
        let ready = Family::<Label, Gauge>::default();
        for (check, ok) in &scrape.ready {
            ready
                .get_or_create(&[("check", *check)])
                .set(i64::from(*ok));
        }
        registry.register(
            "reeltime_ready",
            "1 when the readiness check passes (database, bus), as /readyz sees it",
            ready,
        );
        registry.register(
            "reeltime_tokio_alive_tasks",
            "Tasks alive in the server's Tokio runtime",
            ConstGauge::new(i64::try_from(scrape.tokio_tasks).unwrap_or(i64::MAX)),
        );
        let mut out = String::new();
        if let Err(err) = prometheus_text::encode(&mut out, &registry) {
            tracing::error!(error = %err, "could not encode the metrics");
        }
        out
    }
}

/// Microseconds since the Unix epoch (0 if the clock is before it): the
/// stamp an event carries across nodes, see
/// [`crate::events::ImportEvent::published_us`].
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        })
}

/// The `code` label of a close: a static string per code the server
/// sends (crates/protocol close.rs), so the label costs no allocation.
fn code_label(code: u16) -> &'static str {
    match code {
        1000 => "1000",
        1001 => "1001",
        1002 => "1002",
        1003 => "1003",
        1007 => "1007",
        1008 => "1008",
        1009 => "1009",
        1011 => "1011",
        1013 => "1013",
        4000 => "4000",
        4001 => "4001",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_old_names_and_adds_histograms() {
        let metrics = Metrics::default();
        metrics.messages_sent.fetch_add(3, Ordering::Relaxed);
        metrics.auth_failure("expired");
        metrics.closed(Some(&reeltime_protocol::Close::TOKEN_EXPIRED));
        metrics.closed(None);
        metrics.delivered(&[unix_micros()]);
        let text = metrics.render(&Scrape {
            imports_by_status: vec![("done".into(), 2)],
            ..Scrape::default()
        });
        for line in [
            "reeltime_messages_sent_total 3",
            "reeltime_auth_failures_total{reason=\"expired\"} 1",
            "reeltime_closes_total{code=\"4001\",reason=\"token expired\"} 1",
            "reeltime_closes_total{code=\"none\",reason=\"peer gone\"} 1",
            "reeltime_imports{status=\"done\"} 2",
            "reeltime_open_connections 0",
            "reeltime_jwks_fetches_total{outcome=\"ok\"} 0",
            "reeltime_delivery_lag_seconds_count 1",
            "# TYPE reeltime_connect_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
