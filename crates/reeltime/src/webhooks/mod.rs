//! Webhooks out: every import event (created, status changed, completed,
//! failed, cancelled, deleted) POSTed to the app's backend, signed per the
//! Standard Webhooks specification, at least once, in order per import.
//!
//! The events are written by the database itself, in the transaction of
//! the change (a transactional outbox: triggers of
//! `migrations/*/0006_webhooks.sql`), so a change is never stored without
//! its event nor an event without its change, whichever code path wrote
//! it. Each node runs a [`worker`] that claims due deliveries under a
//! lease (as runners claim imports), sends them, and records the outcome;
//! a node that dies mid-delivery leaves a lease that runs out, and another
//! node (or the same one restarted) sends the event again with the same
//! `webhook-id`.

mod worker;

use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};

pub use worker::{Presenter, WebhookError, Webhooks, WorkerParts};

/// The signing key's prefix in the Standard Webhooks and Svix formats.
pub const SECRET_PREFIX: &str = "whsec_";

/// Delay before each retry: after the first failed attempt 5 s, then 5 min,
/// ... about a day in all; after the eighth attempt the delivery is failed.
pub const RETRY_SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// Where webhooks go and how they are signed (REELTIME_WEBHOOK_*).
#[derive(Clone)]
pub struct WebhookSettings {
    pub url: url::Url,
    /// `whsec_` + base64, checked by [`parse_secret`].
    pub secret: String,
    /// Multiplies [`RETRY_SCHEDULE`] (1 in production; tests shorten it).
    pub retry_scale: f64,
}

impl std::fmt::Debug for WebhookSettings {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("url", &self.url.as_str())
            .field("retry_scale", &self.retry_scale)
            .finish_non_exhaustive()
    }
}

/// Checks a signing secret: `whsec_` then standard base64 of 24 to 64
/// bytes, the form the Standard Webhooks libraries and Clerk use. Returns
/// the key bytes. The message never contains the secret.
pub fn parse_secret(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .trim()
        .strip_prefix(SECRET_PREFIX)
        .ok_or_else(|| format!("expected {SECRET_PREFIX} followed by base64"))?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| format!("the part after {SECRET_PREFIX} is not base64"))?;
    if !(24..=64).contains(&key.len()) {
        return Err(format!("the key is {} bytes; expected 24 to 64", key.len()));
    }
    Ok(key)
}

/// When to try again after `attempts` failed attempts, or `None` when the
/// schedule is used up. `jitter` in [0, 1) spreads retries ±20 % so that
/// the deliveries of an outage do not all come back at the same second.
pub fn next_attempt(
    attempts: u32,
    scale: f64,
    jitter: f64,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let index = usize::try_from(attempts.checked_sub(1)?).ok()?;
    let base = RETRY_SCHEDULE.get(index)?;
    let factor = scale * (0.8 + 0.4 * jitter.clamp(0.0, 1.0));
    let delay = base.mul_f64(factor.max(0.0));
    Some(now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_whsec_base64_of_a_real_key() {
        let good = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode([7u8; 32])
        );
        assert_eq!(parse_secret(&good).unwrap(), vec![7u8; 32]);
        assert!(parse_secret("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").is_err());
        assert!(parse_secret("whsec_not base64!").is_err());
        assert!(
            parse_secret("whsec_c2hvcnQ=").is_err(),
            "5 bytes is too short"
        );
        let err = parse_secret("whsec_!!").unwrap_err();
        assert!(!err.contains("!!"), "the message never repeats the secret");
    }

    #[test]
    fn the_schedule_runs_about_a_day_then_stops() {
        let now = Utc::now();
        let first = next_attempt(1, 1.0, 0.5, now).unwrap();
        assert_eq!((first - now).num_seconds(), 5);
        let total: Duration = RETRY_SCHEDULE.iter().sum();
        assert!(total > Duration::from_secs(20 * 3600) && total < Duration::from_secs(36 * 3600));
        assert!(next_attempt(7, 1.0, 0.5, now).is_some());
        assert!(
            next_attempt(8, 1.0, 0.5, now).is_none(),
            "8 attempts in all"
        );
        assert!(next_attempt(0, 1.0, 0.5, now).is_none());
        let low = next_attempt(2, 1.0, 0.0, now).unwrap() - now;
        let high = next_attempt(2, 1.0, 0.999, now).unwrap() - now;
        assert!(
            low.num_seconds() == 240 && high.num_seconds() >= 359,
            "±20 % jitter"
        );
        let scaled = next_attempt(2, 0.001, 0.5, now).unwrap() - now;
        assert_eq!(scaled.num_milliseconds(), 300);
    }
}
