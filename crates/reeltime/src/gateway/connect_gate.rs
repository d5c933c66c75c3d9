//! A bound on the connects of this node that are reading the database at
//! once (the snapshot), and on how long a connect waits
//! for its turn.
//!
//! Why: when every client comes back at once (a restart of the fleet, a
//! node's clients moving to the others), the database is the herd's
//! bottleneck. Without a bound every connect queued in the connection
//! pool, the queue grew longer than the pool's 10 s acquire timeout, and
//! nearly every connect ended in 1011 after holding a socket and a place in
//! that queue for 10 s; the import pipeline's own writes timed out in the
//! same queue, and the clients' retries kept it full (docs/benchmarks.md,
//! "Reconnect storms"). With the bound, a connect that gets a slot finds a
//! short queue and completes; one that waits longer than the wait is
//! refused at once with 1013 `server busy`, before it costs the database
//! anything, and its client's backoff spreads the retry.

use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

/// The slots, shared by the node's connects and resyncs.
pub struct ConnectGate {
    slots: Semaphore,
    wait: Duration,
}

/// A connect's turn at the database: dropping it frees the slot.
pub type ConnectSlot<'a> = SemaphorePermit<'a>;

impl ConnectGate {
    /// `slots` connects read at once (at least one); others wait in turn,
    /// at most `wait`.
    pub fn new(slots: usize, wait: Duration) -> ConnectGate {
        ConnectGate {
            slots: Semaphore::new(slots.max(1)),
            wait,
        }
    }

    /// A slot, in arrival order, or `None` when none came free within the
    /// wait.
    pub async fn enter(&self) -> Option<ConnectSlot<'_>> {
        match tokio::time::timeout(self.wait, self.slots.acquire()).await {
            Ok(Ok(slot)) => Some(slot),
            // The semaphore is never closed; a timeout is the busy case.
            Ok(Err(_)) | Err(_) => None,
        }
    }

    /// A slot if one is free now. For work that can be done later instead
    /// (a resync's snapshot), so it never delays a waiting connect.
    pub fn try_enter(&self) -> Option<ConnectSlot<'_>> {
        self.slots.try_acquire().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connect_waits_its_turn_then_is_refused() {
        let gate = std::sync::Arc::new(ConnectGate::new(2, Duration::from_secs(2)));
        let first = gate.enter().await.expect("a free slot");
        let _second = gate.enter().await.expect("a free slot");
        assert!(gate.try_enter().is_none(), "no slot free now");

        // Waits the whole wait, then gives up.
        let started = tokio::time::Instant::now();
        assert!(gate.enter().await.is_none());
        assert_eq!(started.elapsed(), Duration::from_secs(2));

        // A slot freed during the wait goes to the waiter.
        let waiting = std::sync::Arc::clone(&gate);
        let waiter = tokio::spawn(async move { waiting.enter().await.is_some() });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished(), "still waiting for a slot");
        drop(first);
        assert!(waiter.await.expect("the waiter runs"), "the freed slot");
    }

    #[test]
    fn there_is_always_one_slot() {
        let gate = ConnectGate::new(0, Duration::ZERO);
        assert!(gate.try_enter().is_some());
    }
}
