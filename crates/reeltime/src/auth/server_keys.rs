//! Server API keys: the secret the app's backend sends as
//! `Authorization: Bearer rt_sk_...` on `/api/server/*`.
//!
//! A secret is `rt_sk_` + base64url of 32 random bytes, shown once by
//! `reeltime keys create`. The database keeps only its SHA-256: a fast hash
//! is enough for a secret with 256 bits of entropy, since nobody can guess
//! through 2^256 candidates whatever each costs, and a slow hash (bcrypt,
//! Argon2) would only add milliseconds of CPU to every server request. A
//! key is looked up by its hash (an index, on every node), then the hashes
//! are compared in constant time anyway. Keys live in the database, so a
//! revoke is seen by every node at the next request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;

use crate::store::server_api::ApiKeyRecord;
use crate::store::{Store, StoreError};

/// What every server API secret starts with: tells it apart from a
/// user's token at a glance, for people and for secret scanners.
pub const SECRET_PREFIX: &str = "rt_sk_";

/// Random bytes in a secret.
const SECRET_BYTES: usize = 32;

/// `last_used_at` is written at most this often per key: a key used for
/// every request must not cost a database write each time.
pub const LAST_USED_EVERY: Duration = Duration::from_secs(60);

/// Longest key name `reeltime keys create --name` takes.
const MAX_NAME_CHARS: usize = 64;

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerKeyError {
    #[error("a key named {0:?} already exists (revoke it first, or pick another name)")]
    NameTaken(String),
    #[error("a key name is 1 to {MAX_NAME_CHARS} letters, digits, '-', '_' or '.', got {0:?}")]
    BadName(String),
    #[error("no key named {0:?} that is not revoked")]
    NotFound(String),
    #[error("unknown or revoked server API key")]
    Unknown,
    #[error("the system's random generator failed")]
    Random,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A key just made: its record and its secret, which exists nowhere else.
pub struct CreatedKey {
    pub record: ApiKeyRecord,
    pub secret: String,
}

/// Creates, lists, revokes and checks server API keys.
pub struct ServerKeys {
    store: Arc<dyn Store>,
    /// When this node last wrote each key's `last_used_at`.
    touched: Mutex<HashMap<String, Instant>>,
}

impl ServerKeys {
    pub fn new(store: Arc<dyn Store>) -> ServerKeys {
        ServerKeys {
            store,
            touched: Mutex::new(HashMap::new()),
        }
    }

    /// Makes a key named `name` and returns its secret, once.
    pub async fn create(&self, name: &str) -> Result<CreatedKey, ServerKeyError> {
        let name = name.trim();
        let valid = !name.is_empty()
            && name.chars().count() <= MAX_NAME_CHARS
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(ServerKeyError::BadName(name.to_string()));
        }
        let secret = new_secret()?;
        let record = ApiKeyRecord {
            id: uuid::Uuid::now_v7().to_string(),
            name: name.to_string(),
            secret_hash: hash_secret(&secret),
            created_at: Utc::now(),
            last_used_at: None,
            revoked_at: None,
        };
        if !self.store.server_api().insert_api_key(&record).await? {
            return Err(ServerKeyError::NameTaken(name.to_string()));
        }
        Ok(CreatedKey { record, secret })
    }

    /// Every key, revoked ones too.
    pub async fn list(&self) -> Result<Vec<ApiKeyRecord>, ServerKeyError> {
        Ok(self.store.server_api().list_api_keys().await?)
    }

    /// Revokes the key named `name` on every node at once (the next
    /// request with it is refused).
    pub async fn revoke(&self, name: &str) -> Result<(), ServerKeyError> {
        if self.store.server_api().revoke_api_key(name.trim()).await? {
            Ok(())
        } else {
            Err(ServerKeyError::NotFound(name.trim().to_string()))
        }
    }

    /// The live key `secret` belongs to. Never logs the secret.
    pub async fn verify(&self, secret: &str) -> Result<ApiKeyRecord, ServerKeyError> {
        if !secret.starts_with(SECRET_PREFIX) || secret.len() > 256 {
            return Err(ServerKeyError::Unknown);
        }
        let hash = hash_secret(secret);
        let Some(record) = self.store.server_api().live_api_key(&hash).await? else {
            return Err(ServerKeyError::Unknown);
        };
        aws_lc_rs::constant_time::verify_slices_are_equal(
            record.secret_hash.as_bytes(),
            hash.as_bytes(),
        )
        .map_err(|_| ServerKeyError::Unknown)?;
        self.note_use(&record.id).await;
        Ok(record)
    }

    /// Writes `last_used_at` if this node has not in the last
    /// [`LAST_USED_EVERY`] (and the write itself skips a fresh value
    /// written by another node).
    async fn note_use(&self, id: &str) {
        let due = match self.touched.lock() {
            Ok(mut touched) => {
                let now = Instant::now();
                let due = touched
                    .get(id)
                    .is_none_or(|last| now.duration_since(*last) >= LAST_USED_EVERY);
                if due {
                    if touched.len() > 10_000 {
                        touched.clear();
                    }
                    touched.insert(id.to_string(), now);
                }
                due
            }
            Err(_) => false,
        };
        if due
            && let Err(err) = self
                .store
                .server_api()
                .touch_api_key(id, LAST_USED_EVERY)
                .await
        {
            tracing::warn!(error = %err, "could not record a server key's last use");
        }
    }
}

/// `rt_sk_` + base64url (no padding) of [`SECRET_BYTES`] random bytes.
fn new_secret() -> Result<String, ServerKeyError> {
    let mut random = [0u8; SECRET_BYTES];
    aws_lc_rs::rand::fill(&mut random).map_err(|_| ServerKeyError::Random)?;
    Ok(format!("{SECRET_PREFIX}{}", URL_SAFE_NO_PAD.encode(random)))
}

/// Hex SHA-256 of a secret: what the database keeps.
pub fn hash_secret(secret: &str) -> String {
    sha256_hex(&[secret.as_bytes()])
}

/// Hex SHA-256 of `parts` one after the other.
pub fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in parts {
        context.update(part);
    }
    context
        .finish()
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_prefixed_base64url_of_32_random_bytes() {
        let a = new_secret().unwrap();
        let b = new_secret().unwrap();
        assert_ne!(a, b);
        let body = a.strip_prefix(SECRET_PREFIX).unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(body).unwrap().len(), 32);
        assert_eq!(hash_secret(&a).len(), 64);
        assert_ne!(hash_secret(&a), hash_secret(&b));
    }

    #[tokio::test]
    async fn keys_are_created_checked_and_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("k.db").display());
        let store = crate::store::open(&url).await.unwrap();
        let keys = ServerKeys::new(store);
        let created = keys.create("backend").await.unwrap();
        assert!(matches!(
            keys.create("backend").await,
            Err(ServerKeyError::NameTaken(_))
        ));
        assert!(matches!(
            keys.create("bad name").await,
            Err(ServerKeyError::BadName(_))
        ));
        let found = keys.verify(&created.secret).await.unwrap();
        assert_eq!(found.name, "backend");
        let listed = keys.list().await.unwrap();
        assert!(listed[0].last_used_at.is_some(), "{listed:?}");
        assert!(matches!(
            keys.verify("rt_sk_nope").await,
            Err(ServerKeyError::Unknown)
        ));
        keys.revoke("backend").await.unwrap();
        assert!(matches!(
            keys.verify(&created.secret).await,
            Err(ServerKeyError::Unknown)
        ));
        assert!(matches!(
            keys.revoke("backend").await,
            Err(ServerKeyError::NotFound(_))
        ));
        // The name is free again once revoked.
        keys.create("backend").await.unwrap();
        assert_eq!(keys.list().await.unwrap().len(), 2);
    }
}
