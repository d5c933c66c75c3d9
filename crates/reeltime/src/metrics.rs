//! Counters exported at `GET /metrics` in the Prometheus text format.
//!
//! A handful of atomics is all the server needs; a metrics framework would
//! cost more than it gives here.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Process-wide counters, shared through `Arc`.
#[derive(Default)]
pub struct Metrics {
    pub open_connections: AtomicI64,
    pub messages_sent: AtomicU64,
    pub connections_total: AtomicU64,
    pub slow_client_closes: AtomicU64,
    pub jwks_fetch_ok: AtomicU64,
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
    clerk_webhooks: Mutex<BTreeMap<&'static str, u64>>,
    auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    connection_refusals: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Counts one rejected token or handshake, by its reason.
    pub fn auth_failure(&self, reason: &'static str) {
        count(&self.auth_failures, reason);
    }

    /// Counts one socket closed 1013 at its upgrade, by the cap it hit.
    pub fn connection_refused(&self, reason: &'static str) {
        count(&self.connection_refusals, reason);
    }

    /// Counts one Clerk webhook by what became of it.
    pub fn clerk_webhook(&self, outcome: &'static str) {
        count(&self.clerk_webhooks, outcome);
    }

    /// The webhook lines: this node's deliveries and failures, and the age
    /// of the oldest pending event in the whole outbox (`None`: none).
    pub fn render_webhooks(&self, out: &mut String, oldest_pending_secs: Option<f64>) {
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "reeltime_webhook_deliveries_total",
            "Webhook deliveries answered 2xx by this node.",
            self.webhooks_delivered.load(Ordering::Relaxed),
        );
        counter(
            "reeltime_webhook_attempt_failures_total",
            "Webhook attempts that failed on this node (retried or not).",
            self.webhook_attempts_failed.load(Ordering::Relaxed),
        );
        counter(
            "reeltime_webhook_failures_total",
            "Webhook deliveries given up by this node (410 or retries used up).",
            self.webhooks_failed.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP reeltime_webhook_oldest_pending_seconds Age of the oldest webhook event not yet delivered (0: none).\n# TYPE reeltime_webhook_oldest_pending_seconds gauge\nreeltime_webhook_oldest_pending_seconds {:.3}",
            oldest_pending_secs.unwrap_or(0.0)
        );
        render_by_reason(
            out,
            "reeltime_clerk_webhooks_total",
            "Clerk webhooks received, by outcome.",
            &self.clerk_webhooks,
        );
    }

    /// Renders everything, with the import counts the store reported.
    pub fn render(&self, imports_by_status: &[(String, u64)]) -> String {
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, kind: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        gauge(
            "reeltime_open_connections",
            "Authenticated WebSocket connections open now.",
            "gauge",
            self.open_connections.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            "reeltime_connections_total",
            "Authenticated WebSocket connections accepted since start.",
            "counter",
            self.connections_total.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            "reeltime_messages_sent_total",
            "Messages written to WebSocket clients.",
            "counter",
            self.messages_sent.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            "reeltime_slow_client_closes_total",
            "Connections closed because the client could not keep up.",
            "counter",
            self.slow_client_closes.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            "reeltime_import_changes_stored_total",
            "Import changes written to the store.",
            "counter",
            self.import_changes_stored
                .load(Ordering::Relaxed)
                .to_string(),
        );
        gauge(
            "reeltime_import_writes_total",
            "Database writes that stored them (a write carries a batch).",
            "counter",
            self.import_writes.load(Ordering::Relaxed).to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP reeltime_jwks_fetches_total JWKS fetches by outcome.\n# TYPE reeltime_jwks_fetches_total counter"
        );
        let _ = writeln!(
            out,
            "reeltime_jwks_fetches_total{{outcome=\"ok\"}} {}",
            self.jwks_fetch_ok.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "reeltime_jwks_fetches_total{{outcome=\"error\"}} {}",
            self.jwks_fetch_error.load(Ordering::Relaxed)
        );
        render_by_reason(
            &mut out,
            "reeltime_auth_failures_total",
            "Rejected tokens and handshakes by reason.",
            &self.auth_failures,
        );
        render_by_reason(
            &mut out,
            "reeltime_connections_refused_total",
            "Sockets closed 1013 at their upgrade, by the cap they hit.",
            &self.connection_refusals,
        );
        let _ = writeln!(
            out,
            "# HELP reeltime_imports Imports in the store by status.\n# TYPE reeltime_imports gauge"
        );
        for (status, count) in imports_by_status {
            let _ = writeln!(out, "reeltime_imports{{status=\"{status}\"}} {count}");
        }
        out
    }
}

fn count(map: &Mutex<BTreeMap<&'static str, u64>>, reason: &'static str) {
    if let Ok(mut map) = map.lock() {
        *map.entry(reason).or_default() += 1;
    }
}

/// A counter with a `reason` label, one line per reason seen.
fn render_by_reason(
    out: &mut String,
    name: &str,
    help: &str,
    map: &Mutex<BTreeMap<&'static str, u64>>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    if let Ok(map) = map.lock() {
        for (reason, count) in map.iter() {
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {count}");
        }
    }
}
