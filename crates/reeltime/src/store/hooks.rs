//! What webhooks, out and in, keep in the database beside the imports: the
//! outbox of events to deliver (written by triggers in the transaction of
//! each import change, see `migrations/*/0006_webhooks.sql`), the Clerk
//! message ids already handled, and the revoked sessions and users.
//!
//! A trait of its own rather than more methods on [`super::Store`]: the
//! import store is the hot path and every branch touches it; these are
//! rare calls with their own tables. Both stores implement both traits.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Waiting for its next attempt (or in flight under a lease).
    Pending,
    /// A 2xx was received.
    Delivered,
    /// Given up: a 410, or every retry of the schedule failed.
    Failed,
}

impl DeliveryState {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    /// The state a stored text names (anything unknown reads as pending,
    /// so that a row is never lost to a typo).
    pub fn parse(text: &str) -> DeliveryState {
        match text {
            "delivered" => DeliveryState::Delivered,
            "failed" => DeliveryState::Failed,
            _ => DeliveryState::Pending,
        }
    }
}

/// One event in the outbox and how its delivery went so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Order of writing; events of one import are delivered in this order.
    pub seq: i64,
    /// The `webhook-id`, the same on every attempt.
    pub id: String,
    pub import_id: String,
    pub user_id: String,
    /// `import.created`, `import.status_changed`, ...
    pub event_type: String,
    /// The import object at the event, as JSON text.
    pub data: String,
    pub occurred_at: DateTime<Utc>,
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// A 2xx.
    Delivered { status: u16 },
    /// Failed; try again at `at`.
    Retry {
        at: DateTime<Utc>,
        status: Option<u16>,
        error: String,
    },
    /// Failed for good (a 410, or the schedule is used up).
    Failed { status: Option<u16>, error: String },
}

#[async_trait]
pub trait HookStore: Send + Sync + 'static {
    /// Turns the writing of events on or off for this node (SQLite: the
    /// switch table; PostgreSQL: fixed by the connection setting chosen at
    /// open, so this only checks it agrees).
    async fn set_webhooks_enabled(&self, on: bool) -> Result<(), StoreError>;
    /// Claims for `node`, for `lease`, up to `limit` due deliveries, each
    /// the oldest pending event of its import (so one import's events go
    /// out one at a time, in order), oldest first. Each goes to exactly one
    /// claimer.
    async fn claim_deliveries(
        &self,
        node: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// Records the attempt on `seq` that `node` made under its lease and
    /// gives the lease back; false when the lease was lost meanwhile.
    async fn finish_attempt(
        &self,
        node: &str,
        seq: i64,
        attempt: &Attempt,
    ) -> Result<bool, StoreError>;
    /// Deliveries in `state`, newest first, strictly older than `before`
    /// (a `seq`).
    async fn list_deliveries(
        &self,
        state: DeliveryState,
        limit: i64,
        before: Option<i64>,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// Makes a pending or failed delivery due now (same id); returns it, or
    /// `None` when there is no such delivery or it was delivered.
    async fn retry_delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError>;
    /// When the oldest pending event happened, if any is pending.
    async fn oldest_pending(&self) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// Drops delivered deliveries that were delivered more than `delivered`
    /// ago and failed ones that happened more than `failed` ago; returns
    /// how many.
    async fn purge_deliveries(
        &self,
        delivered: Duration,
        failed: Duration,
    ) -> Result<u64, StoreError>;
    /// Gives back the delivery leases of `node` (None: of every node).
    async fn release_delivery_leases(&self, node: Option<&str>) -> Result<(), StoreError>;

    /// Records a Clerk message id; true the first time it is seen. Ids seen
    /// more than `keep` ago are forgotten on the way.
    async fn first_sight(&self, id: &str, keep: Duration) -> Result<bool, StoreError>;
    /// Forgets a message id (its handling failed: the retry must act).
    async fn forget_sight(&self, id: &str) -> Result<(), StoreError>;
    /// Refuses tokens of `subject` (`sid:...` or `sub:...`) until `until`.
    async fn revoke(&self, subject: &str, until: DateTime<Utc>) -> Result<(), StoreError>;
    /// Every revocation still in force (and drops the others).
    async fn revocations(&self) -> Result<Vec<(String, DateTime<Utc>)>, StoreError>;
    /// Removes every row of user `user_id`: imports (tombstones too) and
    /// the user.
    async fn delete_user_rows(&self, user_id: &str) -> Result<(), StoreError>;
}

/// Shortens an error text to what the deliveries API shows.
pub(super) fn clip(error: &str) -> String {
    error.chars().take(500).collect()
}

/// The state, status and error columns an attempt writes.
pub(super) fn attempt_columns(
    attempt: &Attempt,
) -> (
    DeliveryState,
    Option<DateTime<Utc>>,
    Option<i32>,
    Option<String>,
) {
    match attempt {
        Attempt::Delivered { status } => (
            DeliveryState::Delivered,
            None,
            Some(i32::from(*status)),
            None,
        ),
        Attempt::Retry { at, status, error } => (
            DeliveryState::Pending,
            Some(*at),
            status.map(i32::from),
            Some(clip(error)),
        ),
        Attempt::Failed { status, error } => (
            DeliveryState::Failed,
            None,
            status.map(i32::from),
            Some(clip(error)),
        ),
    }
}
