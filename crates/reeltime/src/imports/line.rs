//! A waiting line for a fixed number of slots (downloads, media work) that
//! serves users in turn, so that one user's backlog never starves another.
//!
//! The order is the store's turn order (store module docs) applied to this
//! node's slots: a waiting import's turn is the slots its user holds in this
//! line plus how many of the user's imports wait ahead of it; lower turns
//! go first, then whoever came first. The places shown to users
//! ([`Line::positions`]) are computed from that same order, so they are the
//! order in which slots are given, until a newcomer with an earlier turn
//! (another user) is placed ahead.
//!
//! Tokio's semaphore is strictly first come first served, which is exactly
//! the starvation this avoids; the line is small (a node's waiting jobs),
//! so the order is recomputed on each change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// The slots of one kind on this node, and who waits for them.
pub struct Line {
    state: Mutex<State>,
    /// Held while positions are written, so that the last writer always
    /// writes the latest order.
    pub(crate) publishing: tokio::sync::Mutex<()>,
}

struct State {
    free: usize,
    /// Slots held, by user.
    held: HashMap<String, usize>,
    /// In arrival order.
    waiting: Vec<Waiter>,
}

struct Waiter {
    id: String,
    user: String,
    granted: oneshot::Sender<()>,
    /// The position last handed out for display.
    shown: Option<u64>,
}

/// A slot held; given back (to the next in turn) when dropped.
pub struct Slot {
    line: Arc<Line>,
    user: String,
}

/// A place in the line; leaves the line when dropped before its slot came.
pub struct Ticket {
    line: Arc<Line>,
    id: String,
    user: String,
    granted: Option<oneshot::Receiver<()>>,
}

impl Line {
    pub fn new(slots: usize) -> Arc<Line> {
        Arc::new(Line {
            state: Mutex::new(State {
                free: slots.max(1),
                held: HashMap::new(),
                waiting: Vec::new(),
            }),
            publishing: tokio::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// How many wait for a slot now (`reeltime_waiting`).
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }

    /// A slot now if one is free and nobody waits, else a place in line.
    pub fn join(self: &Arc<Self>, id: &str, user: &str) -> Result<Slot, Ticket> {
        let mut state = self.lock();
        if state.free > 0 && state.waiting.is_empty() {
            state.free -= 1;
            *state.held.entry(user.to_string()).or_default() += 1;
            return Ok(Slot {
                line: Arc::clone(self),
                user: user.to_string(),
            });
        }
        let (granted, receiver) = oneshot::channel();
        state.waiting.push(Waiter {
            id: id.to_string(),
            user: user.to_string(),
            granted,
            shown: None,
        });
        Err(Ticket {
            line: Arc::clone(self),
            id: id.to_string(),
            user: user.to_string(),
            granted: Some(receiver),
        })
    }

    /// The places (1 = next) that changed since they were last asked for,
    /// as `(import id, position)`; they count as shown from now on.
    pub fn positions(&self) -> Vec<(String, u64)> {
        let mut state = self.lock();
        let order = state.order();
        let mut changed = Vec::new();
        for (place, index) in order.into_iter().enumerate() {
            let waiter = &mut state.waiting[index];
            let position = Some(place as u64 + 1);
            if waiter.shown != position {
                waiter.shown = position;
                changed.push((waiter.id.clone(), place as u64 + 1));
            }
        }
        changed
    }

    /// Gives `user`'s slot to the next in turn, or frees it.
    fn release(&self, user: &str) {
        let mut state = self.lock();
        if let Some(held) = state.held.get_mut(user) {
            *held -= 1;
            if *held == 0 {
                state.held.remove(user);
            }
        }
        loop {
            let Some(&next) = state.order().first() else {
                state.free += 1;
                return;
            };
            let waiter = state.waiting.remove(next);
            *state.held.entry(waiter.user.clone()).or_default() += 1;
            if waiter.granted.send(()).is_ok() {
                return;
            }
            // Its ticket is being dropped: undo, and try the next one.
            if let Some(held) = state.held.get_mut(&waiter.user) {
                *held -= 1;
                if *held == 0 {
                    state.held.remove(&waiter.user);
                }
            }
        }
    }
}

impl State {
    /// Indexes into `waiting`, in the order slots go to them.
    fn order(&self) -> Vec<usize> {
        let mut ahead: HashMap<&str, usize> = HashMap::new();
        let mut keyed: Vec<(usize, usize)> = self
            .waiting
            .iter()
            .enumerate()
            .map(|(index, waiter)| {
                let mine = ahead.entry(waiter.user.as_str()).or_default();
                let turn = self.held.get(&waiter.user).copied().unwrap_or(0) + *mine;
                *mine += 1;
                (turn, index)
            })
            .collect();
        keyed.sort_unstable();
        keyed.into_iter().map(|(_, index)| index).collect()
    }
}

impl Ticket {
    /// Resolves with the slot when this ticket's turn comes.
    pub async fn granted(mut self) -> Slot {
        if let Some(receiver) = self.granted.as_mut() {
            // The sender lives in the line, which this ticket keeps alive,
            // and is only dropped after a send.
            let _ = receiver.await;
        }
        // From here the ticket is a slot (its drop must not give it back).
        self.granted = None;
        Slot {
            line: Arc::clone(&self.line),
            user: self.user.clone(),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.granted.is_none() {
            return; // turned into a slot
        }
        let mut state = self.line.lock();
        if let Some(index) = state.waiting.iter().position(|w| w.id == self.id) {
            state.waiting.remove(index);
            return;
        }
        drop(state);
        // Granted but never taken up: pass the slot on.
        self.line.release(&self.user);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.line.release(&self.user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Joins and returns the ticket (the line must be full).
    fn wait(line: &Arc<Line>, id: &str, user: &str) -> Ticket {
        match line.join(id, user) {
            Ok(_) => panic!("{id} got a slot at once"),
            Err(ticket) => ticket,
        }
    }

    #[tokio::test]
    async fn users_take_turns_and_positions_tell_the_order() {
        let line = Line::new(2);
        let a1 = line.join("a1", "alice").ok().expect("free slot");
        let a2 = line.join("a2", "alice").ok().expect("free slot");
        let a3 = wait(&line, "a3", "alice");
        let a4 = wait(&line, "a4", "alice");
        let b1 = wait(&line, "b1", "bob");
        let c1 = wait(&line, "c1", "carol");
        let b2 = wait(&line, "b2", "bob");
        let mut shown = line.positions();
        shown.sort_by_key(|(_, position)| *position);
        let order: Vec<&str> = shown.iter().map(|(id, _)| id.as_str()).collect();
        // Alice holds both slots: her waiting imports have turns 2 and 3.
        assert_eq!(order, ["b1", "c1", "b2", "a3", "a4"]);
        assert!(line.positions().is_empty(), "nothing changed since");

        // Alice's first job ends: Bob's turn. Alice now holds one slot,
        // so her next waits in turn 1, ahead of Bob's second (also turn 1,
        // but later); only what moved is reported.
        drop(a1);
        let b1 = b1.granted().await;
        let changed = [("c1", 1), ("a3", 2), ("a4", 4)].map(|(id, p)| (id.to_string(), p));
        assert_eq!(line.positions(), changed);

        // Leaving the line moves those behind up.
        drop(c1);
        let changed = [("a3", 1), ("b2", 2), ("a4", 3)].map(|(id, p)| (id.to_string(), p));
        assert_eq!(line.positions(), changed);

        // A slot granted to a ticket that is dropped before taking it up
        // goes on to the next in turn: Alice's a2 ends, a3 (turn 0) is
        // granted but gone, so a4 (now turn 0) gets it before Bob's b2.
        drop(a2);
        drop(a3);
        let a4 = a4.granted().await;
        assert_eq!(line.positions(), [("b2".to_string(), 1)]);
        drop(b1);
        let b2 = b2.granted().await;
        drop((a4, b2));
        let again = line.join("z", "zed").ok().expect("both slots free");
        let other = line.join("y", "yan").ok().expect("both slots free");
        assert!(line.join("x", "xi").is_err(), "only two slots");
        drop((again, other));
    }
}
