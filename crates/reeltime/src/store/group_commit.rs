//! Group commit for import changes: every change still waits until it is
//! stored (so nothing is published that a restart could take back), but the
//! changes that arrive while one write is in flight go to the database
//! together, in one statement, as the next write.
//!
//! One round trip per change cost ~200 µs of CPU and, with several
//! connections taking turns at SQLite's write lock, sleeps of up to 100 ms
//! (docs/benchmarks.md). With a single writer the cost per change falls as
//! load rises, and at low load a change waits for at most one write ahead of
//! it.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot};

use super::{ImportWrite, OwnedImport, Store, StoreError};
use crate::metrics::Metrics;

/// Most changes written in one statement.
const MAX_BATCH: usize = 512;

/// A change waiting for its batch, and where its outcome goes.
struct Pending {
    write: ImportWrite,
    outcome: oneshot::Sender<Result<bool, StoreError>>,
}

/// The writer of import changes; cheap to share.
pub struct GroupCommit {
    queue: mpsc::UnboundedSender<Pending>,
}

impl GroupCommit {
    /// Starts the writer task. It runs until the last `GroupCommit` is gone.
    /// It counts changes and writes in `metrics`.
    pub fn start(store: Arc<dyn Store>, metrics: Arc<Metrics>) -> GroupCommit {
        let (queue, incoming) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(store, metrics, incoming));
        GroupCommit { queue }
    }

    /// [`Store::update_import`], written together with whatever other
    /// changes are waiting.
    pub async fn update_import(
        &self,
        owned: &OwnedImport,
        expected_version: u64,
    ) -> Result<bool, StoreError> {
        let (outcome, result) = oneshot::channel();
        let pending = Pending {
            write: ImportWrite {
                owned: owned.clone(),
                expected_version,
            },
            outcome,
        };
        self.queue
            .send(pending)
            .map_err(|_| StoreError::WriterStopped)?;
        result.await.map_err(|_| StoreError::WriterStopped)?
    }
}

async fn write_batches(
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    mut incoming: mpsc::UnboundedReceiver<Pending>,
) {
    // Changes held back because their import already had one in the batch:
    // they go first next time, so the changes of one import keep their order.
    let mut held: VecDeque<Pending> = VecDeque::new();
    loop {
        if held.is_empty() {
            match incoming.recv().await {
                Some(pending) => held.push_back(pending),
                None => return,
            }
        }
        while held.len() < MAX_BATCH {
            match incoming.try_recv() {
                Ok(pending) => held.push_back(pending),
                Err(_) => break,
            }
        }
        let batch = take_batch(&mut held);
        let changes = batch.len() as u64;
        let started = std::time::Instant::now();
        let writes = write_batch(store.as_ref(), batch).await;
        (metrics.group_commit_write_seconds).observe(started.elapsed().as_secs_f64());
        metrics.group_commit_batch_size.observe(changes as f64);
        metrics
            .import_changes_stored
            .fetch_add(changes, Ordering::Relaxed);
        metrics.import_writes.fetch_add(writes, Ordering::Relaxed);
    }
}

/// Up to [`MAX_BATCH`] changes, at most one per import, oldest first.
fn take_batch(held: &mut VecDeque<Pending>) -> Vec<Pending> {
    let mut batch = Vec::new();
    let mut ids = HashSet::new();
    let mut later = VecDeque::new();
    while let Some(pending) = held.pop_front() {
        if batch.len() < MAX_BATCH && ids.insert(pending.write.owned.import.id.clone()) {
            batch.push(pending);
        } else {
            later.push_back(pending);
        }
    }
    *held = later;
    batch
}

/// Writes `batch`; returns how many database writes that took.
async fn write_batch(store: &dyn Store, batch: Vec<Pending>) -> u64 {
    let (writes, outcomes): (Vec<ImportWrite>, Vec<_>) =
        batch.into_iter().map(|p| (p.write, p.outcome)).unzip();
    let written = if writes.len() == 1 {
        None
    } else {
        match store.update_imports(&writes).await {
            Ok(written) => Some(written),
            Err(err) => {
                tracing::warn!(error = %err, changes = writes.len(), "batched write failed; writing one by one");
                None
            }
        }
    };
    match written {
        Some(written) => {
            for (outcome, written) in outcomes.into_iter().zip(written) {
                let _ = outcome.send(Ok(written));
            }
            1
        }
        // A single change, or a failed batch: one by one, so that each
        // caller gets its own outcome and error.
        None => {
            for (write, outcome) in writes.iter().zip(outcomes) {
                let result = store
                    .update_import(&write.owned, write.expected_version)
                    .await;
                let _ = outcome.send(result);
            }
            writes.len() as u64
        }
    }
}
