//! Which sockets belong to which user on this node. The hub is the only
//! place a change meets a socket, so "only that user's imports" is enforced
//! here and nowhere else has to think about it.
//!
//! It also shares snapshot reads between the connects of one user: the
//! tabs of a browser connect at the same moment (and all of them again
//! after a restart), and one store read serves those that arrive while it
//! is under way. Every change of the user passes through the hub's
//! [`Deliver::deliver`],
//! which drops the shared read, so a connect never gets a snapshot older
//! than a change it was not registered for.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::OnceCell;

use reeltime_protocol::Close;

use super::Outbox;
use crate::auth::Revocations;
use crate::auth::revocations::{session_subject, user_subject};
use crate::events::{Control, Deliver, ImportEvent};
use crate::store::Snapshot;

/// Shards keep concurrent connects and deliveries of different users from
/// contending on one lock.
const SHARDS: usize = 64;

/// Keyed by the user id every connection of that user shares (see
/// [`Registration::user_id`]): one copy per user on the node, not one per
/// socket.
type Shard = HashMap<Arc<str>, UserEntry>;

/// One user's connections on this node, and their shared snapshot read.
#[derive(Default)]
struct UserEntry {
    connections: Vec<(u64, Arc<Outbox>)>,
    /// Weak: the read lives only while a connect is reading or sending it,
    /// so an idle user keeps no copy of their imports here.
    snapshot: Weak<SnapshotRead>,
}

/// One store read of a user's snapshot, shared by the connects that ask
/// for it while it is under way and before a change of that user arrives.
/// The first to ask reads; the others wait for its result.
#[derive(Default)]
pub struct SnapshotRead {
    snapshot: OnceCell<Arc<Snapshot>>,
}

impl SnapshotRead {
    /// The snapshot, read by `read` unless someone sharing this read
    /// already did (a failed read is tried again by the next one).
    pub async fn get_or_read<F, Fut, E>(&self, read: F) -> Result<Arc<Snapshot>, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Snapshot, E>>,
    {
        self.snapshot
            .get_or_try_init(|| async { read().await.map(Arc::new) })
            .await
            .cloned()
    }
}

/// User to connections, for this node.
pub struct Hub {
    shards: Vec<Mutex<Shard>>,
    total: AtomicUsize,
    next_id: AtomicU64,
    max_per_user: usize,
    max_total: Option<usize>,
    /// Updated by [`Control`] orders, read by the verifier.
    revocations: Arc<Revocations>,
}

/// Why a connection could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("too many connections for this user")]
    PerUser,
    #[error("too many connections")]
    Total,
}

/// A socket's place in the node's connection count
/// (`REELTIME_MAX_CONNECTIONS`), from its upgrade until it closes: taken
/// before the socket authenticates, so sockets still waiting for their
/// token count too.
pub struct Reservation {
    hub: Arc<Hub>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.hub.total.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A live registration; dropping it removes the connection from the hub
/// and gives back its place in the count.
pub struct Registration {
    reservation: Reservation,
    user_id: Arc<str>,
    id: u64,
}

impl Registration {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The connection's user: the hub's own copy, shared by all of that
    /// user's connections on the node (a session keeps no other).
    pub fn user_id(&self) -> &Arc<str> {
        &self.user_id
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.reservation.hub.unregister(&self.user_id, self.id);
    }
}

impl Hub {
    pub fn new(max_per_user: usize, max_total: Option<usize>) -> Arc<Hub> {
        Hub::with_revocations(max_per_user, max_total, Arc::default())
    }

    /// A hub that records the revocations the bus brings in `revocations`
    /// (the verifier's), besides closing the sockets they concern.
    pub fn with_revocations(
        max_per_user: usize,
        max_total: Option<usize>,
        revocations: Arc<Revocations>,
    ) -> Arc<Hub> {
        Arc::new(Hub {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            total: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            max_per_user,
            max_total,
            revocations,
        })
    }

    /// Asks every connection of `user_id` on this node that `chosen` picks
    /// to close with `close`; returns how many.
    fn close_where(&self, user_id: &str, close: Close, chosen: impl Fn(&Outbox) -> bool) -> usize {
        let shard = self.shard(user_id);
        let Some(entry) = shard.get(user_id) else {
            return 0;
        };
        let mut closed = 0;
        for (_, outbox) in &entry.connections {
            if chosen(outbox) {
                outbox.close(close);
                closed += 1;
            }
        }
        closed
    }

    /// Asks every connection on this node to close with `close`; returns
    /// how many. The node's shutdown: sessions do not each wait on the
    /// shutdown signal, which would make every idle socket's task larger
    /// (docs/benchmarks.md, "Memory per socket"). A connection that
    /// registers after this checks the signal itself (`session::register`).
    pub fn close_all(&self, close: Close) -> usize {
        self.close_anywhere(close, |_| true)
    }

    /// [`Hub::close_where`] over every user (a session whose user is not
    /// known).
    fn close_session_anywhere(&self, sid: &str) -> usize {
        self.close_anywhere(Close::SESSION_REVOKED, |outbox| outbox.is_session(sid))
    }

    /// Asks every connection on this node that `chosen` picks to close
    /// with `close`; returns how many.
    fn close_anywhere(&self, close: Close, chosen: impl Fn(&Outbox) -> bool) -> usize {
        let mut closed = 0;
        for shard in &self.shards {
            let shard = match shard.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            for entry in shard.values() {
                for (_, outbox) in &entry.connections {
                    if chosen(outbox) {
                        outbox.close(close);
                        closed += 1;
                    }
                }
            }
        }
        closed
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

    /// A place in the node's connection count, if one is free.
    pub fn reserve(self: &Arc<Self>) -> Result<Reservation, LimitError> {
        let reserved = self.total.fetch_add(1, Ordering::SeqCst);
        let reservation = Reservation {
            hub: Arc::clone(self),
        };
        if self.max_total.is_some_and(|max| reserved >= max) {
            return Err(LimitError::Total);
        }
        Ok(reservation)
    }

    /// Adds a connection of `user_id` in the place `reservation` holds,
    /// enforcing the per-user limit.
    pub fn register(
        &self,
        reservation: Reservation,
        user_id: &str,
        outbox: Arc<Outbox>,
    ) -> Result<Registration, LimitError> {
        let mut shard = self.shard(user_id);
        let user_id = match shard.get_key_value(user_id) {
            Some((key, _)) => Arc::clone(key),
            None => Arc::from(user_id),
        };
        let entry = shard.entry(Arc::clone(&user_id)).or_default();
        if entry.connections.len() >= self.max_per_user {
            return Err(LimitError::PerUser);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        entry.connections.push((id, outbox));
        Ok(Registration {
            reservation,
            user_id,
            id,
        })
    }

    fn unregister(&self, user_id: &str, id: u64) {
        let mut shard = self.shard(user_id);
        if let Some(entry) = shard.get_mut(user_id) {
            entry.connections.retain(|(other, _)| *other != id);
            if entry.connections.is_empty() {
                shard.remove(user_id);
            }
        }
    }

    /// The snapshot read a connection of `user_id` should use: the one
    /// under way or done for its user, if no change arrived since it
    /// started, else a new one. Call after registering the connection, as
    /// for a store read: a change the shared read missed arrived after it
    /// started, and so after this call, and is queued for the connection.
    pub fn snapshot_read(&self, user_id: &str) -> Arc<SnapshotRead> {
        let mut shard = self.shard(user_id);
        let Some(entry) = shard.get_mut(user_id) else {
            return Arc::default();
        };
        entry.snapshot.upgrade().unwrap_or_else(|| {
            let read = Arc::new(SnapshotRead::default());
            entry.snapshot = Arc::downgrade(&read);
            read
        })
    }

    /// Connections open on this node, those still authenticating included.
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

/// What the buses hand changes to: this node's sockets.
impl Deliver for Hub {
    /// Queues `event` on every connection of its user on this node, and
    /// drops the user's shared snapshot read: a connect after this change
    /// must read again.
    fn deliver(&self, event: &Arc<ImportEvent>) {
        let mut shard = self.shard(&event.user_id);
        if let Some(entry) = shard.get_mut(event.user_id.as_str()) {
            entry.snapshot = Weak::new();
            for (_, outbox) in &entry.connections {
                outbox.push(event);
            }
        }
    }

    /// Asks every connection on this node for a fresh snapshot (see
    /// [`Outbox::request_resync`]); returns how many were asked. The Redis
    /// bus calls this after it resubscribed, since whatever was published
    /// while it was cut off never arrived here.
    fn resync_all(&self) -> usize {
        let mut asked = 0;
        for shard in &self.shards {
            let mut shard = match shard.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            for entry in shard.values_mut() {
                // A shared read may miss the same changes.
                entry.snapshot = Weak::new();
                for (_, outbox) in &entry.connections {
                    outbox.request_resync();
                    asked += 1;
                }
            }
        }
        asked
    }

    /// Records the revocation for the verifier and closes the sockets it
    /// concerns on this node.
    fn control(&self, control: &Control) {
        match control {
            Control::RevokeSession {
                sid,
                user_id,
                until_ms,
            } => {
                self.revocations
                    .insert(session_subject(sid), from_millis(*until_ms));
                let closed = match user_id {
                    Some(user_id) => self.close_where(user_id, Close::SESSION_REVOKED, |outbox| {
                        outbox.is_session(sid)
                    }),
                    None => self.close_session_anywhere(sid),
                };
                tracing::info!(closed, "session revoked; its sockets on this node closed");
            }
            Control::UserDeleted { user_id, until_ms } => {
                self.revocations
                    .insert(user_subject(user_id), from_millis(*until_ms));
                let closed = self.close_where(user_id, Close::USER_DELETED, |_| true);
                tracing::info!(closed, "user deleted; their sockets on this node closed");
            }
        }
    }
}

fn from_millis(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::ws::Utf8Bytes;
    use std::sync::atomic::AtomicUsize;

    fn event(user: &str) -> Arc<ImportEvent> {
        Arc::new(ImportEvent {
            user_id: user.into(),
            import_id: "i".into(),
            version: 1,
            is_final: false,
            payload: Utf8Bytes::from_static("{}"),
            published_us: 0,
        })
    }

    #[test]
    fn delivers_only_to_the_owner() {
        let hub = Hub::new(4, None);
        let alice = Outbox::new();
        let bob = Outbox::new();
        let _a = hub
            .register(hub.reserve().unwrap(), "alice", Arc::clone(&alice))
            .unwrap();
        let _b = hub
            .register(hub.reserve().unwrap(), "bob", Arc::clone(&bob))
            .unwrap();
        hub.deliver(&event("alice"));
        assert_eq!(alice.len(), 1);
        assert_eq!(bob.len(), 0);
    }

    /// Two connections of alice and one of bob, in that order.
    fn alice_twice_and_bob(hub: &Arc<Hub>) -> (Vec<Arc<Outbox>>, Vec<Registration>) {
        let outboxes: Vec<_> = (0..3).map(|_| Outbox::new()).collect();
        let registrations = ["alice", "alice", "bob"]
            .into_iter()
            .zip(&outboxes)
            .map(|(user, outbox)| {
                hub.register(hub.reserve().unwrap(), user, Arc::clone(outbox))
                    .unwrap()
            })
            .collect();
        (outboxes, registrations)
    }

    #[test]
    fn resync_reaches_every_connection() {
        let hub = Hub::new(4, None);
        let (outboxes, _registrations) = alice_twice_and_bob(&hub);
        assert_eq!(hub.resync_all(), 3);
        assert_eq!(hub.resync_all(), 3);
        for outbox in &outboxes {
            assert!(outbox.take_resync(), "asked, once however often requested");
            assert!(!outbox.take_resync());
        }
    }

    #[test]
    fn close_all_reaches_every_connection_and_the_first_close_wins() {
        let hub = Hub::new(4, None);
        let (outboxes, _registrations) = alice_twice_and_bob(&hub);
        outboxes[2].close(Close::USER_DELETED);
        assert_eq!(hub.close_all(Close::SHUTTING_DOWN), 3);
        assert_eq!(outboxes[0].take_close(), Some(Close::SHUTTING_DOWN));
        assert_eq!(outboxes[1].take_close(), Some(Close::SHUTTING_DOWN));
        assert_eq!(outboxes[2].take_close(), Some(Close::USER_DELETED));
    }

    #[test]
    fn connections_of_one_user_share_one_copy_of_its_id() {
        let hub = Hub::new(4, None);
        let a = hub
            .register(hub.reserve().unwrap(), "alice", Outbox::new())
            .unwrap();
        let b = hub
            .register(hub.reserve().unwrap(), "alice", Outbox::new())
            .unwrap();
        assert!(Arc::ptr_eq(a.user_id(), b.user_id()));
        assert_eq!(&**a.user_id(), "alice");
        drop((a, b));
        let c = hub
            .register(hub.reserve().unwrap(), "alice", Outbox::new())
            .unwrap();
        assert_eq!(
            Arc::strong_count(c.user_id()),
            2,
            "the hub's key and this one"
        );
    }

    fn imports(ids: &[&str]) -> Snapshot {
        Snapshot {
            imports: ids
                .iter()
                .map(|id| {
                    crate::store::tests::import(id, reeltime_protocol::ImportStatus::Queued, 1)
                })
                .collect(),
            removed: Vec::new(),
        }
    }

    /// Reads through `hub` for `user`, counting the store reads in `reads`.
    async fn read(hub: &Hub, user: &str, reads: &AtomicUsize, ids: &[&str]) -> Vec<String> {
        let snapshot = hub
            .snapshot_read(user)
            .get_or_read(|| async {
                reads.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                Ok::<_, std::convert::Infallible>(imports(ids))
            })
            .await
            .unwrap();
        snapshot
            .imports
            .iter()
            .map(|import| import.id.clone())
            .collect()
    }

    #[tokio::test]
    async fn a_read_is_shared_only_while_someone_holds_it() {
        let hub = Hub::new(8, None);
        let _tab = hub
            .register(hub.reserve().unwrap(), "alice", Outbox::new())
            .unwrap();
        let reads = AtomicUsize::new(0);
        read(&hub, "alice", &reads, &["a1"]).await;
        read(&hub, "alice", &reads, &["a1"]).await;
        assert_eq!(reads.load(Ordering::SeqCst), 2, "nothing kept once sent");
        let held = hub.snapshot_read("alice");
        assert!(Arc::ptr_eq(&held, &hub.snapshot_read("alice")));
        hub.deliver(&event("alice"));
        assert!(
            !Arc::ptr_eq(&held, &hub.snapshot_read("alice")),
            "a change starts another"
        );
    }

    #[tokio::test]
    async fn connects_together_share_one_read_until_a_change() {
        let hub = Hub::new(8, None);
        let _tabs: Vec<_> = (0..4)
            .map(|_| {
                hub.register(hub.reserve().unwrap(), "alice", Outbox::new())
                    .unwrap()
            })
            .collect();
        let _bob = hub
            .register(hub.reserve().unwrap(), "bob", Outbox::new())
            .unwrap();
        let reads = AtomicUsize::new(0);
        let together =
            futures_util::future::join_all((0..4).map(|_| read(&hub, "alice", &reads, &["a1"])))
                .await;
        assert!(together.iter().all(|ids| ids == &["a1"]));
        assert_eq!(reads.load(Ordering::SeqCst), 1, "one read for four tabs");

        let alices = hub.snapshot_read("alice");
        assert!(
            !Arc::ptr_eq(&alices, &hub.snapshot_read("bob")),
            "never shared across users"
        );
        assert!(Arc::ptr_eq(&alices, &hub.snapshot_read("alice")));
        let delete = ImportEvent::removed("alice", "a1", 2).unwrap();
        hub.deliver(&delete);
        let after_delete = hub.snapshot_read("alice");
        assert!(
            !Arc::ptr_eq(&alices, &after_delete),
            "a delete is a change like any other: it starts another"
        );
        hub.resync_all();
        assert!(
            !Arc::ptr_eq(&after_delete, &hub.snapshot_read("alice")),
            "a resync starts another"
        );
    }

    #[tokio::test]
    async fn a_failed_read_is_tried_again() {
        let hub = Hub::new(8, None);
        let _tab = hub
            .register(hub.reserve().unwrap(), "alice", Outbox::new())
            .unwrap();
        let failed = hub
            .snapshot_read("alice")
            .get_or_read(|| async { Err::<Snapshot, &str>("database away") })
            .await;
        assert_eq!(failed.err(), Some("database away"));
        let reads = AtomicUsize::new(0);
        assert_eq!(read(&hub, "alice", &reads, &["a1"]).await, ["a1"]);
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn limits_and_unregister_on_drop() {
        let hub = Hub::new(2, Some(3));
        let a1 = hub
            .register(hub.reserve().unwrap(), "alice", Outbox::new())
            .unwrap();
        let _a2 = hub
            .register(hub.reserve().unwrap(), "alice", Outbox::new())
            .unwrap();
        assert_eq!(
            hub.register(hub.reserve().unwrap(), "alice", Outbox::new())
                .err(),
            Some(LimitError::PerUser)
        );
        assert_eq!(
            hub.connection_count(),
            2,
            "a refused socket gives its place back"
        );
        let authenticating = hub.reserve().unwrap();
        assert_eq!(
            hub.reserve().err(),
            Some(LimitError::Total),
            "a socket still authenticating counts"
        );
        assert_eq!(hub.connection_count(), 3);
        assert_eq!(hub.user_count(), 1, "a refused user leaves no entry");
        drop(authenticating);
        let _b1 = hub
            .register(hub.reserve().unwrap(), "bob", Outbox::new())
            .unwrap();
        drop(a1);
        assert_eq!(hub.connection_count(), 2);
        assert!(
            hub.register(hub.reserve().unwrap(), "carol", Outbox::new())
                .is_ok()
        );
    }
}
