//! The per-connection send queue. Producers (the hub) never wait on a slow
//! socket: they push here and move on. When a client falls behind, the queue
//! keeps only the latest state of each import instead of growing.

use std::sync::{Arc, Mutex, MutexGuard};

use reeltime_protocol::Close;
use tokio::sync::Notify;

use crate::events::ImportEvent;

/// Above this many queued messages, a new change replaces the queued one of
/// the same import instead of being appended.
const COALESCE_ABOVE: usize = 32;

/// Queue of changes waiting to be written to one socket.
///
/// Every socket has one for its whole life, so it is kept to 128 bytes (a
/// size class of the allocator): one lock over everything but the wake-up,
/// a `Vec` for the queue (it is only appended to and emptied whole), the
/// session id as a boxed `str` (docs/benchmarks.md, "Memory per socket").
#[derive(Default)]
pub struct Outbox {
    state: Mutex<State>,
    ready: Notify,
}

#[derive(Default)]
struct State {
    queue: Vec<Arc<ImportEvent>>,
    /// The session (`sid`) of the token in force, if it names one: what a
    /// revocation closes.
    session: Option<Box<str>>,
    /// Set when the socket must close (its session was revoked, its user
    /// deleted, the node is shutting down): the session sends this close
    /// frame at its next turn.
    closing: Option<Close>,
    /// Set when changes may have been missed (the bus was lost and came
    /// back): the session re-reads and sends the snapshot before anything
    /// else queued.
    resync: bool,
}

impl Outbox {
    pub fn new() -> Arc<Outbox> {
        Arc::new(Outbox::default())
    }

    /// The queue of a socket authenticated with a token of session `sid`.
    pub fn for_session(sid: Option<String>) -> Arc<Outbox> {
        let outbox = Outbox::default();
        outbox.set_session(sid);
        Arc::new(outbox)
    }

    /// The state, even if a thread panicked while holding it: each change
    /// to it is a single assignment or push, never left half done.
    fn state(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Records the session of a refreshed token.
    pub fn set_session(&self, sid: Option<String>) {
        self.state().session = sid.map(String::into_boxed_str);
    }

    /// Whether the token in force belongs to session `sid`.
    pub fn is_session(&self, sid: &str) -> bool {
        self.state().session.as_deref() == Some(sid)
    }

    /// Asks the session to close the socket with `close` at its next turn
    /// (before anything queued). The first close asked for wins.
    pub fn close(&self, close: Close) {
        self.state().closing.get_or_insert(close);
        self.ready.notify_one();
    }

    /// The close asked for, if any.
    pub fn take_close(&self) -> Option<Close> {
        self.state().closing.take()
    }

    /// Queues a change. A final state is never dropped: it is the newest
    /// version of its import, so coalescing can only replace older states
    /// with it, never the other way round.
    pub fn push(&self, event: &Arc<ImportEvent>) {
        {
            let mut state = self.state();
            let queue = &mut state.queue;
            let same_import = if queue.len() >= COALESCE_ABOVE {
                queue
                    .iter_mut()
                    .find(|queued| queued.import_id == event.import_id)
            } else {
                None
            };
            match same_import {
                Some(queued) => {
                    if event.version > queued.version {
                        *queued = Arc::clone(event);
                    }
                }
                None => queue.push(Arc::clone(event)),
            }
        }
        self.ready.notify_one();
    }

    /// Asks the session to send a fresh snapshot at its next flush. Used
    /// when this node may have missed changes (the Redis bus was down): the
    /// store has them, the socket gets them from the snapshot. A flag, not a
    /// queued event, so that any number of requests cost one snapshot.
    pub fn request_resync(&self) {
        self.state().resync = true;
        self.ready.notify_one();
    }

    /// Whether a resync was requested since the last call; clears it.
    pub fn take_resync(&self) -> bool {
        std::mem::take(&mut self.state().resync)
    }

    /// Hands everything queued to `each`, in order, and empties the queue
    /// (keeping its room for the next changes: no allocation per batch).
    pub fn drain_each(&self, mut each: impl FnMut(&ImportEvent)) {
        for event in self.state().queue.drain(..) {
            each(&event);
        }
    }

    /// Takes everything queued, in order.
    pub fn drain(&self) -> Vec<Arc<ImportEvent>> {
        self.state().queue.drain(..).collect()
    }

    /// Resolves when something was pushed since the last wait.
    pub async fn ready(&self) {
        self.ready.notified().await
    }

    pub fn len(&self) -> usize {
        self.state().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::ws::Utf8Bytes;

    fn event(import: &str, version: u64, is_final: bool) -> Arc<ImportEvent> {
        Arc::new(ImportEvent {
            user_id: "u".into(),
            import_id: import.into(),
            version,
            is_final,
            payload: Utf8Bytes::from(format!("{import}:{version}")),
            published_us: 0,
        })
    }

    /// Every socket holds one for its life, in an `Arc` (16 bytes of
    /// counts): at or under 112 bytes it is a 128-byte allocation, not 160.
    #[test]
    fn an_outbox_in_its_arc_fits_128_bytes() {
        let size = std::mem::size_of::<Outbox>();
        assert!(size + 16 <= 128, "Outbox grew to {size} bytes");
    }

    #[test]
    fn the_session_id_is_replaced_on_refresh() {
        let outbox = Outbox::for_session(Some("sess_1".into()));
        assert!(outbox.is_session("sess_1"));
        outbox.set_session(Some("sess_2".into()));
        assert!(!outbox.is_session("sess_1"));
        assert!(outbox.is_session("sess_2"));
        outbox.set_session(None);
        assert!(!outbox.is_session("sess_2"));
    }

    #[test]
    fn keeps_every_change_while_short() {
        let outbox = Outbox::default();
        for version in 1..=5 {
            outbox.push(&event("a", version, false));
        }
        let versions: Vec<u64> = outbox.drain().iter().map(|e| e.version).collect();
        assert_eq!(versions, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn drain_each_hands_over_in_order_and_empties() {
        let outbox = Outbox::default();
        for version in 1..=3 {
            outbox.push(&event("a", version, false));
        }
        let mut seen = Vec::new();
        outbox.drain_each(|event| seen.push(event.version));
        assert_eq!(seen, [1, 2, 3]);
        assert!(outbox.is_empty());
        outbox.drain_each(|_| panic!("nothing left to hand over"));
    }

    #[test]
    fn coalesces_per_import_when_behind_and_keeps_finals() {
        let outbox = Outbox::default();
        for n in 0..COALESCE_ABOVE {
            outbox.push(&event(&format!("other{n}"), 1, false));
        }
        outbox.push(&event("a", 1, false));
        for version in 2..100 {
            outbox.push(&event("a", version, false));
        }
        outbox.push(&event("a", 100, true));
        outbox.push(&event("a", 7, false)); // late, older: ignored
        let drained = outbox.drain();
        let of_a: Vec<_> = drained.iter().filter(|e| e.import_id == "a").collect();
        assert_eq!(of_a.len(), 1);
        assert_eq!(of_a[0].version, 100);
        assert!(of_a[0].is_final);
        assert_eq!(drained.len(), COALESCE_ABOVE + 1);
    }
}
