//! Sessions and users whose tokens are refused although they verify: a
//! session signed out (or removed, or revoked) in Clerk, a user deleted.
//! Clerk's session tokens stay valid until their `exp` (a minute by
//! default) whatever happens to the session; this set closes that gap.
//!
//! Checked on every verification, so it is memory, not a query: each node
//! loads the stored revocations at start, adds those announced on the bus
//! as they come, and reloads now and then (a node cut off from the bus
//! catches up). Entries end when tokens of them can no longer be valid.

use std::collections::HashMap;
use std::sync::RwLock;

use chrono::{DateTime, Utc};

/// How long a revocation is kept: longer than any session token lives
/// (Clerk's default is 60 s; its dashboard allows longer lifetimes, and
/// this covers a day). One small row per signed-out session.
pub const REVOCATION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The subject a session is revoked under.
pub fn session_subject(sid: &str) -> String {
    format!("sid:{sid}")
}

/// The subject a deleted user is revoked under.
pub fn user_subject(user_id: &str) -> String {
    format!("sub:{user_id}")
}

/// The revoked subjects this node knows, each until when.
#[derive(Default)]
pub struct Revocations {
    until: RwLock<HashMap<String, DateTime<Utc>>>,
}

impl Revocations {
    /// Refuses `subject` until `until` (a later end wins).
    pub fn insert(&self, subject: String, until: DateTime<Utc>) {
        let mut map = match self.until.write() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        let entry = map.entry(subject).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Adds everything stored (the store drops what ended), and forgets
    /// what ended here.
    pub fn merge(&self, stored: Vec<(String, DateTime<Utc>)>) {
        let now = Utc::now();
        {
            let mut map = match self.until.write() {
                Ok(map) => map,
                Err(poisoned) => poisoned.into_inner(),
            };
            map.retain(|_, until| *until > now);
        }
        for (subject, until) in stored {
            self.insert(subject, until);
        }
    }

    /// Whether `subject` is refused now.
    pub fn is_revoked(&self, subject: &str) -> bool {
        let map = match self.until.read() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.get(subject).is_some_and(|until| *until > Utc::now())
    }

    /// Whether nothing is revoked (the usual case: verification skips the
    /// lookups).
    pub fn is_empty(&self) -> bool {
        self.until.read().map(|map| map.is_empty()).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocations_end_and_merge() {
        let revocations = Revocations::default();
        assert!(revocations.is_empty());
        let later = Utc::now() + chrono::Duration::minutes(5);
        revocations.insert(session_subject("sess_1"), later);
        revocations.insert(
            session_subject("sess_2"),
            Utc::now() - chrono::Duration::seconds(1),
        );
        assert!(revocations.is_revoked("sid:sess_1"));
        assert!(!revocations.is_revoked("sid:sess_2"), "ended");
        assert!(!revocations.is_revoked("sid:sess_3"));
        revocations.merge(vec![(user_subject("user_9"), later)]);
        assert!(revocations.is_revoked("sub:user_9"));
        assert!(
            revocations.is_revoked("sid:sess_1"),
            "merge keeps what it had"
        );
    }
}
