//! Clerk webhooks in (`POST /api/clerk/webhook`): what Clerk tells us about
//! sessions and users, so that a sign-out on one device or a deleted user
//! takes effect at once instead of when the token runs out.
//!
//! Messages are signed by Svix with the endpoint's signing secret
//! (CLERK_WEBHOOK_SIGNING_SECRET): `svix-id`, `svix-timestamp` and
//! `svix-signature` are the Standard Webhooks scheme under other names, so
//! the `standardwebhooks` crate checks them (HMAC-SHA256 over
//! `id.timestamp.body`, constant-time comparison, timestamps within five
//! minutes). Each `svix-id` is acted on once: ids are kept longer than a
//! message's timestamp is accepted, so a replay is recognised or stale.
//!
//! - `session.ended`, `session.removed`, `session.revoked`: the session's
//!   sockets are closed on every node (a bus [`Control`]) and its tokens
//!   refused for [`REVOCATION_LIFETIME`].
//! - `user.deleted`: the user's tokens are refused, their sockets closed,
//!   their imports cancelled and deleted (files too), their rows removed.
//! - `user.updated`: the stored email follows the primary address.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::auth::Revocations;
use crate::auth::revocations::{REVOCATION_LIFETIME, session_subject, user_subject};
use crate::bus::{Bus, BusError};
use crate::events::Control;
use crate::imports::{ImportService, ImportServiceError};
use crate::metrics::Metrics;
use crate::store::{HookStore, StoreError};

/// How long handled `svix-id`s are remembered: twice the five minutes a
/// signed timestamp may be off, so any replay accepted by the timestamp
/// check is still recognised.
const SEEN_FOR: Duration = Duration::from_secs(10 * 60);

/// How often each node reloads the stored revocations, catching up with
/// any it missed on the bus.
const RELOAD_EVERY: Duration = Duration::from_secs(10);

/// Why a Clerk webhook was refused or not handled.
#[derive(Debug, thiserror::Error)]
pub enum ClerkError {
    #[error("missing or malformed svix-id, svix-timestamp or svix-signature header")]
    BadHeaders,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the svix-timestamp is more than 5 minutes off")]
    Stale,
    #[error("the body is not a Clerk event: {0}")]
    BadPayload(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Imports(#[from] ImportServiceError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// What became of a verified message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acted on.
    Handled,
    /// Its `svix-id` was handled before: nothing done again.
    Duplicate,
    /// An event type we do not act on.
    Ignored,
}

impl Outcome {
    /// Short, stable text for the answer and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Handled => "handled",
            Outcome::Duplicate => "duplicate",
            Outcome::Ignored => "ignored",
        }
    }
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    data: serde_json::Value,
}

#[derive(Deserialize)]
struct SessionData {
    id: String,
    #[serde(default)]
    user_id: Option<String>,
}

#[derive(Deserialize)]
struct UserData {
    id: String,
    #[serde(default)]
    primary_email_address_id: Option<String>,
    #[serde(default)]
    email_addresses: Vec<EmailAddress>,
}

#[derive(Deserialize)]
struct EmailAddress {
    id: String,
    email_address: String,
}

/// The receiver of Clerk webhooks.
pub struct ClerkWebhooks {
    verifier: standardwebhooks::Webhook,
    hooks: Arc<dyn HookStore>,
    bus: Arc<dyn Bus>,
    imports: Arc<ImportService>,
    metrics: Arc<Metrics>,
}

impl ClerkWebhooks {
    /// `secret` is CLERK_WEBHOOK_SIGNING_SECRET, already checked by config.
    pub fn new(
        secret: &str,
        hooks: Arc<dyn HookStore>,
        bus: Arc<dyn Bus>,
        imports: Arc<ImportService>,
        metrics: Arc<Metrics>,
    ) -> Result<ClerkWebhooks, ClerkError> {
        crate::webhooks::parse_secret(secret).map_err(|_| ClerkError::BadSignature)?;
        let verifier =
            standardwebhooks::Webhook::new(secret.trim()).map_err(|_| ClerkError::BadSignature)?;
        Ok(ClerkWebhooks {
            verifier,
            hooks,
            bus,
            imports,
            metrics,
        })
    }

    /// Verifies and handles one message.
    pub async fn receive(
        &self,
        headers: &axum::http::HeaderMap,
        body: &[u8],
    ) -> Result<Outcome, ClerkError> {
        let result = self.verify_and_handle(headers, body).await;
        self.metrics.clerk_webhook(match &result {
            Ok(outcome) => outcome.as_str(),
            Err(ClerkError::BadHeaders | ClerkError::BadSignature) => "bad_signature",
            Err(ClerkError::Stale) => "stale",
            Err(ClerkError::BadPayload(_)) => "bad_payload",
            Err(_) => "error",
        });
        result
    }

    async fn verify_and_handle(
        &self,
        headers: &axum::http::HeaderMap,
        body: &[u8],
    ) -> Result<Outcome, ClerkError> {
        let id = self.verify(headers, body)?;
        let event: Event =
            serde_json::from_slice(body).map_err(|err| ClerkError::BadPayload(err.to_string()))?;
        if !self.hooks.first_sight(&id, SEEN_FOR).await? {
            tracing::info!(svix_id = %id, kind = %event.kind, "clerk webhook already handled");
            return Ok(Outcome::Duplicate);
        }
        match self.handle(&event).await {
            Ok(outcome) => {
                tracing::info!(svix_id = %id, kind = %event.kind, outcome = outcome.as_str(), "clerk webhook");
                Ok(outcome)
            }
            Err(err) => {
                // Clerk retries a failed delivery: that retry must act.
                if let Err(forget) = self.hooks.forget_sight(&id).await {
                    tracing::warn!(error = %forget, "could not forget a failed clerk webhook id");
                }
                Err(err)
            }
        }
    }

    /// Checks the Svix headers; returns the message id.
    fn verify(&self, headers: &axum::http::HeaderMap, body: &[u8]) -> Result<String, ClerkError> {
        let mut standard = axum::http::HeaderMap::new();
        for (svix, name) in [
            ("svix-id", "webhook-id"),
            ("svix-timestamp", "webhook-timestamp"),
            ("svix-signature", "webhook-signature"),
        ] {
            let value = headers.get(svix).ok_or(ClerkError::BadHeaders)?;
            standard.insert(name, value.clone());
        }
        let id = headers
            .get("svix-id")
            .and_then(|id| id.to_str().ok())
            .filter(|id| !id.is_empty() && id.len() <= 200)
            .ok_or(ClerkError::BadHeaders)?
            .to_string();
        use standardwebhooks::WebhookError as E;
        match self.verifier.verify(body, &standard) {
            Ok(()) => Ok(id),
            Err(E::TimestampTooOldError | E::FutureTimestampError) => Err(ClerkError::Stale),
            Err(E::MissingHeader(_) | E::InvalidHeader(_) | E::InvalidTimestamp) => {
                Err(ClerkError::BadHeaders)
            }
            Err(_) => Err(ClerkError::BadSignature),
        }
    }

    async fn handle(&self, event: &Event) -> Result<Outcome, ClerkError> {
        match event.kind.as_str() {
            "session.ended" | "session.removed" | "session.revoked" => {
                let session: SessionData = data(event)?;
                self.revoke_session(session).await?;
                Ok(Outcome::Handled)
            }
            "user.deleted" => {
                let user: UserData = data(event)?;
                self.delete_user(&user.id).await?;
                Ok(Outcome::Handled)
            }
            "user.updated" => {
                let user: UserData = data(event)?;
                self.update_email(&user).await?;
                Ok(Outcome::Handled)
            }
            _ => Ok(Outcome::Ignored),
        }
    }

    async fn revoke_session(&self, session: SessionData) -> Result<(), ClerkError> {
        let until =
            Utc::now() + chrono::Duration::from_std(REVOCATION_LIFETIME).unwrap_or_default();
        self.hooks
            .revoke(&session_subject(&session.id), until)
            .await?;
        self.bus
            .broadcast(Control::RevokeSession {
                sid: session.id,
                user_id: session.user_id,
                until_ms: until.timestamp_millis(),
            })
            .await?;
        Ok(())
    }

    /// Refuses the user's tokens and closes their sockets first (so no tab
    /// watches its imports vanish), then cancels and deletes every import
    /// (the usual delete: tombstone, `import.deleted` webhook, files), then
    /// removes the rows.
    async fn delete_user(&self, user_id: &str) -> Result<(), ClerkError> {
        let until =
            Utc::now() + chrono::Duration::from_std(REVOCATION_LIFETIME).unwrap_or_default();
        self.hooks.revoke(&user_subject(user_id), until).await?;
        self.bus
            .broadcast(Control::UserDeleted {
                user_id: user_id.to_string(),
                until_ms: until.timestamp_millis(),
            })
            .await?;
        loop {
            let page = self
                .imports
                .store()
                .list_imports(user_id, 200, None)
                .await?;
            if page.is_empty() {
                break;
            }
            for import in page {
                if !import.status.is_final() {
                    match self.imports.cancel(user_id, &import.id).await {
                        Ok(_)
                        | Err(ImportServiceError::AlreadyFinished | ImportServiceError::NotFound) =>
                            {}
                        Err(err) => return Err(err.into()),
                    }
                }
                match self.imports.delete(user_id, &import.id).await {
                    Ok(()) | Err(ImportServiceError::NotFound) => {}
                    Err(err) => return Err(err.into()),
                }
            }
        }
        self.hooks.delete_user_rows(user_id).await?;
        Ok(())
    }

    async fn update_email(&self, user: &UserData) -> Result<(), ClerkError> {
        let primary = user
            .email_addresses
            .iter()
            .find(|address| Some(&address.id) == user.primary_email_address_id.as_ref())
            .map(|address| address.email_address.as_str());
        let store = self.imports.store();
        if primary.is_some() && store.get_user(&user.id).await?.is_some() {
            store.upsert_user(&user.id, primary).await?;
        }
        Ok(())
    }
}

fn data<T: serde::de::DeserializeOwned>(event: &Event) -> Result<T, ClerkError> {
    serde_json::from_value(event.data.clone())
        .map_err(|err| ClerkError::BadPayload(format!("{}: {err}", event.kind)))
}

/// Loads the stored revocations into `revocations` now and every few
/// seconds until `shutdown`: what a restart keeps, and what a node that
/// missed a bus message learns late rather than never.
pub async fn keep_revocations(
    hooks: Arc<dyn HookStore>,
    revocations: Arc<Revocations>,
    shutdown: CancellationToken,
) {
    loop {
        match hooks.revocations().await {
            Ok(stored) => revocations.merge(stored),
            Err(err) => tracing::warn!(error = %err, "could not load revoked sessions"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RELOAD_EVERY) => {}
        }
    }
}
