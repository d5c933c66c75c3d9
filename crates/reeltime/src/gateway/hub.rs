//! Which sockets belong to which user on this node. The hub is the only
//! place a change meets a socket, so "only that user's imports" is enforced
//! here and nowhere else has to think about it.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::Outbox;
use crate::bus::ImportEvent;

/// Shards keep concurrent connects and deliveries of different users from
/// contending on one lock.
const SHARDS: usize = 64;

type Shard = HashMap<String, Vec<(u64, Arc<Outbox>)>>;

/// User to connections, for this node.
pub struct Hub {
    shards: Vec<Mutex<Shard>>,
    total: AtomicUsize,
    next_id: AtomicU64,
    max_per_user: usize,
    max_total: Option<usize>,
}

/// Why a connection could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("too many connections for this user")]
    PerUser,
    #[error("too many connections")]
    Total,
}

/// A live registration; dropping it removes the connection from the hub.
pub struct Registration {
    hub: Arc<Hub>,
    user_id: String,
    id: u64,
}

impl Registration {
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unregister(&self.user_id, self.id);
    }
}

impl Hub {
    pub fn new(max_per_user: usize, max_total: Option<usize>) -> Arc<Hub> {
        Arc::new(Hub {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            total: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            max_per_user,
            max_total,
        })
    }

    fn shard(&self, user_id: &str) -> MutexGuard<'_, Shard> {
        let mut hasher = DefaultHasher::new();
        user_id.hash(&mut hasher);
        let index = (hasher.finish() as usize) % SHARDS;
        match self.shards[index].lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Adds a connection of `user_id`, enforcing both connection limits.
    pub fn register(
        self: &Arc<Self>,
        user_id: &str,
        outbox: Arc<Outbox>,
    ) -> Result<Registration, LimitError> {
        let mut shard = self.shard(user_id);
        let connections = shard.entry(user_id.to_string()).or_default();
        if connections.len() >= self.max_per_user {
            return Err(LimitError::PerUser);
        }
        let reserved = self.total.fetch_add(1, Ordering::SeqCst);
        if self.max_total.is_some_and(|max| reserved >= max) {
            self.total.fetch_sub(1, Ordering::SeqCst);
            if connections.is_empty() {
                shard.remove(user_id);
            }
            return Err(LimitError::Total);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        connections.push((id, outbox));
        Ok(Registration {
            hub: Arc::clone(self),
            user_id: user_id.to_string(),
            id,
        })
    }

    fn unregister(&self, user_id: &str, id: u64) {
        let mut shard = self.shard(user_id);
        if let Some(connections) = shard.get_mut(user_id) {
            let before = connections.len();
            connections.retain(|(other, _)| *other != id);
            if connections.len() < before {
                self.total.fetch_sub(1, Ordering::SeqCst);
            }
            if connections.is_empty() {
                shard.remove(user_id);
            }
        }
    }

    /// Queues `event` on every connection of its user on this node.
    pub fn deliver(&self, event: &Arc<ImportEvent>) {
        let shard = self.shard(&event.user_id);
        if let Some(connections) = shard.get(&event.user_id) {
            for (_, outbox) in connections {
                outbox.push(event);
            }
        }
    }

    /// Asks every connection on this node for a fresh snapshot (see
    /// [`Outbox::request_resync`]); returns how many were asked. The Redis
    /// bus calls this after it resubscribed, since whatever was published
    /// while it was cut off never arrived here.
    pub fn resync_all(&self) -> usize {
        let mut asked = 0;
        for shard in &self.shards {
            let shard = match shard.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            for (_, outbox) in shard.values().flatten() {
                outbox.request_resync();
                asked += 1;
            }
        }
        asked
    }

    /// Connections open on this node.
    pub fn connection_count(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    /// Users with at least one connection on this node (for bus subscriptions).
    pub fn user_count(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().map(|s| s.len()).unwrap_or(0))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::ws::Utf8Bytes;

    fn event(user: &str) -> Arc<ImportEvent> {
        Arc::new(ImportEvent {
            user_id: user.into(),
            import_id: "i".into(),
            version: 1,
            is_final: false,
            payload: Utf8Bytes::from_static("{}"),
        })
    }

    #[test]
    fn delivers_only_to_the_owner() {
        let hub = Hub::new(4, None);
        let alice = Outbox::new();
        let bob = Outbox::new();
        let _a = hub.register("alice", Arc::clone(&alice)).unwrap();
        let _b = hub.register("bob", Arc::clone(&bob)).unwrap();
        hub.deliver(&event("alice"));
        assert_eq!(alice.len(), 1);
        assert_eq!(bob.len(), 0);
    }

    #[test]
    fn resync_reaches_every_connection() {
        let hub = Hub::new(4, None);
        let outboxes: Vec<_> = (0..3).map(|_| Outbox::new()).collect();
        let _a = hub.register("alice", Arc::clone(&outboxes[0])).unwrap();
        let _b = hub.register("alice", Arc::clone(&outboxes[1])).unwrap();
        let _c = hub.register("bob", Arc::clone(&outboxes[2])).unwrap();
        assert_eq!(hub.resync_all(), 3);
        assert_eq!(hub.resync_all(), 3);
        for outbox in &outboxes {
            assert!(outbox.take_resync(), "asked, once however often requested");
            assert!(!outbox.take_resync());
        }
    }

    #[test]
    fn limits_and_unregister_on_drop() {
        let hub = Hub::new(2, Some(3));
        let a1 = hub.register("alice", Outbox::new()).unwrap();
        let _a2 = hub.register("alice", Outbox::new()).unwrap();
        assert_eq!(
            hub.register("alice", Outbox::new()).err(),
            Some(LimitError::PerUser)
        );
        let _b1 = hub.register("bob", Outbox::new()).unwrap();
        assert_eq!(
            hub.register("carol", Outbox::new()).err(),
            Some(LimitError::Total)
        );
        assert_eq!(hub.user_count(), 2, "a refused user leaves no entry");
        drop(a1);
        assert_eq!(hub.connection_count(), 2);
        assert!(hub.register("carol", Outbox::new()).is_ok());
    }
}
