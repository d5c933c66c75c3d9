//! The connects of a node read their snapshots in batches: one store query
//! for the users whose connects asked while the previous query ran, as the
//! group commit does for writes.
//!
//! Why: a snapshot read of a user with little history is cheap for the
//! database and expensive around it. On SQLite most of its ~120 µs of
//! server CPU was the hand-off to sqlx's worker thread and back (channels,
//! futex wake-ups, context switches), about a quarter of a whole connect
//! (docs/benchmarks.md, "Connect without the user's row"). One query for
//! many users pays that once. No timer: a read that finds no query running
//! starts one at once, so a lone connect waits for nothing; reads that
//! arrive while one runs make the next.
//!
//! A read still starts after its connect registered in the hub (it joins a
//! query that starts later), which is what keeps a change made meanwhile
//! from being missed: the change is queued for the socket.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::events::SnapshotSource;
use crate::store::Snapshot;

/// Users per query at most: the query's text and its result stay small,
/// and a large backlog is read in several turns.
const MAX_USERS_PER_READ: usize = 128;

/// Why a batched read gave no snapshot. Shared by every connect of the
/// batch, so the store's error is carried as text.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ReadFailed(String);

type Answer = oneshot::Sender<Result<Snapshot, ReadFailed>>;

/// Reads snapshots from a [`SnapshotSource`], many users per query.
pub struct SnapshotBatcher {
    source: Arc<dyn SnapshotSource>,
    state: Mutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    reads: Vec<(String, Answer)>,
    /// Whether a task is running queries; it runs until no read waits.
    reading: bool,
}

impl SnapshotBatcher {
    pub fn new(source: Arc<dyn SnapshotSource>) -> Arc<SnapshotBatcher> {
        Arc::new(SnapshotBatcher {
            source,
            state: Mutex::default(),
        })
    }

    fn state(&self) -> MutexGuard<'_, Waiting> {
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// `user_id`'s snapshot, from the next query that starts.
    pub async fn read(self: &Arc<Self>, user_id: &str) -> Result<Snapshot, ReadFailed> {
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut state = self.state();
            state.reads.push((user_id.to_string(), answer));
            !std::mem::replace(&mut state.reading, true)
        };
        if start {
            tokio::spawn(Arc::clone(self).run());
        }
        answered
            .await
            .unwrap_or_else(|_| Err(ReadFailed("the snapshot read was dropped".into())))
    }

    /// Runs queries until no read waits.
    async fn run(self: Arc<Self>) {
        // Clears `reading` however this ends (a panic in the source
        // included), failing the reads still waiting rather than leaving
        // them to wait forever.
        let mut unexpected_end = UnexpectedEnd(Some(&self));
        loop {
            let (user_ids, answers): (Vec<String>, Vec<Answer>) = {
                let mut state = self.state();
                if state.reads.is_empty() {
                    state.reading = false;
                    unexpected_end.0 = None;
                    return;
                }
                let take = state.reads.len().min(MAX_USERS_PER_READ);
                state.reads.drain(..take).unzip()
            };
            let failed = match self.source.read_many(&user_ids).await {
                Ok(snapshots) if snapshots.len() == answers.len() => {
                    for (answer, snapshot) in answers.into_iter().zip(snapshots) {
                        let _ = answer.send(Ok(snapshot));
                    }
                    continue;
                }
                Ok(snapshots) => ReadFailed(format!(
                    "the store returned {} snapshots for {} users",
                    snapshots.len(),
                    answers.len()
                )),
                Err(err) => ReadFailed(err.to_string()),
            };
            for answer in answers {
                let _ = answer.send(Err(failed.clone()));
            }
        }
    }
}

/// Armed while [`SnapshotBatcher::run`] runs; disarmed when it stops
/// because no read waits.
struct UnexpectedEnd<'a>(Option<&'a SnapshotBatcher>);

impl Drop for UnexpectedEnd<'_> {
    fn drop(&mut self) {
        if let Some(batcher) = self.0 {
            let mut state = batcher.state();
            state.reading = false;
            // Dropping the answers fails their reads.
            state.reads.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use reeltime_protocol::ImportStatus;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::store::{OwnedImport, SqliteStore, Store, StoreError};

    /// A real SQLite store's snapshots, counting the queries and the users
    /// of each, holding each query until the test lets it go.
    struct Counted {
        store: SqliteStore,
        queries: Mutex<Vec<usize>>,
        go: Semaphore,
        started: AtomicUsize,
    }

    #[async_trait]
    impl SnapshotSource for Counted {
        async fn read_many(&self, user_ids: &[String]) -> Result<Vec<Snapshot>, StoreError> {
            self.started.fetch_add(1, Ordering::SeqCst);
            self.go.acquire().await.expect("open").forget();
            self.queries.lock().unwrap().push(user_ids.len());
            self.store.snapshots(user_ids).await
        }

        fn present(&self, _: &str, snapshot: &Snapshot) -> Snapshot {
            snapshot.clone()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_that_arrive_during_a_query_share_the_next_and_get_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = SqliteStore::open(&url).await.unwrap();
        let users: Vec<String> = (0..20).map(|n| format!("user{n}")).collect();
        for user in &users {
            let import = crate::store::tests::import(&format!("{user}-a"), ImportStatus::Queued, 1);
            store
                .insert_import(&OwnedImport::new(user, import))
                .await
                .unwrap();
        }
        let source = Arc::new(Counted {
            store,
            queries: Mutex::default(),
            go: Semaphore::new(0),
            started: AtomicUsize::new(0),
        });
        let batcher = SnapshotBatcher::new(Arc::clone(&source) as Arc<dyn SnapshotSource>);
        let read = |user: String| {
            let batcher = Arc::clone(&batcher);
            tokio::spawn(async move { (user.clone(), batcher.read(&user).await) })
        };
        // The first read starts a query at once, alone.
        let first = read(users[0].clone());
        while source.started.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // The others arrive while it runs.
        let rest: Vec<_> = users[1..].iter().cloned().map(read).collect();
        while batcher.state().reads.len() < users.len() - 1 {
            tokio::task::yield_now().await;
        }
        source.go.add_permits(2);
        let mut answers = vec![first.await.unwrap()];
        for task in rest {
            answers.push(task.await.unwrap());
        }
        assert_eq!(*source.queries.lock().unwrap(), [1, users.len() - 1]);
        for (user, snapshot) in answers {
            let ids: Vec<String> = snapshot
                .unwrap()
                .imports
                .into_iter()
                .map(|i| i.id)
                .collect();
            assert_eq!(
                ids,
                [format!("{user}-a")],
                "{user} gets its own import only"
            );
        }
        // The reader stops when none waits (it may still be finishing its
        // turn when the answers arrive).
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while batcher.state().reading {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the reader never stopped"
            );
            tokio::task::yield_now().await;
        }
        // And the next read starts a query of its own.
        source.go.add_permits(1);
        let again = batcher.read(&users[3]).await.unwrap();
        assert_eq!(again.imports.len(), 1);
        assert_eq!(source.queries.lock().unwrap().len(), 3);
    }
}
