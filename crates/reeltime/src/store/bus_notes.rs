//! Notes of changes a node stored but could not publish: the durable half
//! of the Redis bus's outage handling (bus/redis.rs; docs/architecture.md,
//! "A held change outlives its node").
//!
//! A node whose Redis link is down keeps the newest unpublished change of
//! each import in memory and republishes it when Redis answers. If the node
//! dies first, that memory is gone while the change is in the database, and
//! a tab on another node that stays connected would never see it. So while
//! it holds a stored change the node also keeps a row here, one per import,
//! under a lease it renews like a job's. Once the change (or a newer one)
//! went out the row is deleted; when the lease runs out (the holder died or
//! lost the database too), any node with a working bus claims the row,
//! publishes the import's stored state and deletes it.
//!
//! Written only during an outage: a publish that goes out costs nothing
//! here. Only the PostgreSQL store keeps notes; SQLite has one node, whose
//! sockets die with it and read a fresh snapshot when they come back.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;

use super::{OwnedImport, PostgresStore, StoreError, rows};

/// One import whose stored change a node holds unpublished, at `version`
/// (the newest stored version held), or, when clearing, the version a
/// publish reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusNote {
    pub import_id: String,
    /// The import's owner: the channel a sweep publishes on.
    pub user_id: String,
    /// Held: the newest stored version held. Clearing: the version sent.
    pub version: u64,
}

/// What the store holds now of a noted import.
#[derive(Debug, Clone)]
pub enum NotedState {
    /// The import, at its stored version.
    Import(Box<OwnedImport>),
    /// Deleted: its tombstone's version.
    Removed { version: u64 },
    /// No row at all (its user was deleted, or the tombstone purged).
    Gone,
}

/// A note claimed by a sweeping node, with the import's state read after
/// the claim (so at least as new as every change the note stood for).
#[derive(Debug, Clone)]
pub struct StoredNote {
    /// The note as claimed.
    pub note: BusNote,
    /// The import as stored, read after the claim.
    pub state: NotedState,
}

/// The notes table. A trait of its own, reached through
/// [`super::Store::bus_notes`], since only a store shared by several nodes
/// needs it.
#[async_trait]
pub trait BusNoteStore: Send + Sync + 'static {
    /// Notes (upserts) that `node` holds `notes`, for `lease`. A note's
    /// version only goes up, whoever writes it.
    async fn hold_notes(
        &self,
        node: &str,
        notes: &[BusNote],
        lease: Duration,
    ) -> Result<(), StoreError>;
    /// Extends every note `node` holds; returns how many.
    async fn renew_notes(&self, node: &str, lease: Duration) -> Result<u64, StoreError>;
    /// Deletes the notes of the imports in `published` whose version is at
    /// or below the one published (a newer note stays); returns how many.
    async fn clear_notes(&self, published: &[BusNote]) -> Result<u64, StoreError>;
    /// Claims for `node`, for `lease`, up to `limit` notes whose lease ran
    /// out (each goes to one claimer), with each import's stored state.
    async fn claim_notes(
        &self,
        node: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<StoredNote>, StoreError>;
}

fn version_param(version: u64) -> i64 {
    i64::try_from(version).unwrap_or(i64::MAX)
}

fn version_of(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[async_trait]
impl BusNoteStore for PostgresStore {
    async fn hold_notes(
        &self,
        node: &str,
        notes: &[BusNote],
        lease: Duration,
    ) -> Result<(), StoreError> {
        // One row per import in the statement (ON CONFLICT may not touch a
        // row twice): the newest version of each.
        let mut newest: HashMap<&str, &BusNote> = HashMap::new();
        for note in notes {
            let entry = newest.entry(note.import_id.as_str()).or_insert(note);
            if note.version > entry.version {
                *entry = note;
            }
        }
        if newest.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = newest.values().map(|n| n.import_id.as_str()).collect();
        let users: Vec<&str> = newest.values().map(|n| n.user_id.as_str()).collect();
        let versions: Vec<i64> = newest.values().map(|n| version_param(n.version)).collect();
        sqlx::query(
            "INSERT INTO bus_notes (import_id, user_id, version, node, lease_until)
             SELECT id, user_id, version, $4, now() + make_interval(secs => $5)
             FROM unnest($1::text[], $2::text[], $3::bigint[]) AS t(id, user_id, version)
             ON CONFLICT (import_id) DO UPDATE SET
                version = GREATEST(bus_notes.version, EXCLUDED.version),
                node = EXCLUDED.node,
                lease_until = EXCLUDED.lease_until",
        )
        .bind(&ids)
        .bind(&users)
        .bind(&versions)
        .bind(node)
        .bind(lease.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn renew_notes(&self, node: &str, lease: Duration) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE bus_notes SET lease_until = now() + make_interval(secs => $2) WHERE node = $1",
        )
        .bind(node)
        .bind(lease.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn clear_notes(&self, published: &[BusNote]) -> Result<u64, StoreError> {
        if published.is_empty() {
            return Ok(0);
        }
        let ids: Vec<&str> = published.iter().map(|n| n.import_id.as_str()).collect();
        let versions: Vec<i64> = published.iter().map(|n| version_param(n.version)).collect();
        let done = sqlx::query(
            "DELETE FROM bus_notes AS n
             USING unnest($1::text[], $2::bigint[]) AS p(id, version)
             WHERE n.import_id = p.id AND n.version <= p.version",
        )
        .bind(&ids)
        .bind(&versions)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn claim_notes(
        &self,
        node: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<StoredNote>, StoreError> {
        // The common case (no outage anywhere): this finds nothing on the
        // lease index and is the only statement of the sweep.
        let claimed = sqlx::query(
            "UPDATE bus_notes SET node = $1, lease_until = now() + make_interval(secs => $2)
             WHERE import_id IN (SELECT import_id FROM bus_notes WHERE lease_until < now()
                                 ORDER BY lease_until LIMIT $3 FOR UPDATE SKIP LOCKED)
             RETURNING import_id, user_id, version",
        )
        .bind(node)
        .bind(lease.as_secs_f64())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let mut notes = Vec::with_capacity(claimed.len());
        for row in &claimed {
            notes.push(BusNote {
                import_id: row.try_get("import_id")?,
                user_id: row.try_get("user_id")?,
                version: version_of(row.try_get("version")?),
            });
        }
        // Read after the claim committed: every change a claimed note
        // stands for was stored before its note, so this is as new.
        let ids: Vec<&str> = notes.iter().map(|n| n.import_id.as_str()).collect();
        let stored = sqlx::query(
            "SELECT id, user_id, version, deleted_at IS NOT NULL AS removed, data::text AS data
             FROM imports WHERE id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        let mut states: HashMap<String, NotedState> = HashMap::with_capacity(stored.len());
        for row in &stored {
            let id: String = row.try_get("id")?;
            let state = if row.try_get::<bool, _>("removed")? {
                NotedState::Removed {
                    version: version_of(row.try_get("version")?),
                }
            } else {
                NotedState::Import(Box::new(rows::owned(row)?))
            };
            states.insert(id, state);
        }
        Ok(notes
            .into_iter()
            .map(|note| StoredNote {
                state: states.remove(&note.import_id).unwrap_or(NotedState::Gone),
                note,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use reeltime_protocol::ImportStatus;

    use super::*;
    use crate::store::Store;
    use crate::store::tests::import;

    fn note(id: &str, version: u64) -> BusNote {
        BusNote {
            import_id: id.into(),
            user_id: "alice".into(),
            version,
        }
    }

    /// The notes' whole life on a real PostgreSQL: held, renewed, cleared
    /// only by a publish at or above them, and claimed with the stored
    /// state once their lease ran out.
    #[tokio::test]
    async fn notes_are_held_cleared_by_newer_publishes_and_claimed_when_their_lease_runs_out() {
        let postgres = reeltime_testkit::Postgres::start().await;
        let url = postgres.create_database("notes").await;
        let store = PostgresStore::open(&url).await.unwrap();
        let notes = Store::bus_notes(&store).expect("PostgreSQL keeps notes");
        let long = Duration::from_secs(60);

        let mut done = OwnedImport::new("alice", import("i1", ImportStatus::Completed, 7));
        store.insert_import(&done).await.unwrap();
        store
            .insert_import(&OwnedImport::new(
                "alice",
                import("i2", ImportStatus::Queued, 1),
            ))
            .await
            .unwrap();
        assert!(store.remove_import("alice", "i2", 1).await.unwrap());

        // Held by node a: the version only goes up, duplicates are merged.
        notes
            .hold_notes("a", &[note("i1", 5), note("i1", 7), note("i2", 2)], long)
            .await
            .unwrap();
        notes.hold_notes("a", &[note("i1", 6)], long).await.unwrap();
        notes
            .hold_notes("a", &[note("gone", 3)], long)
            .await
            .unwrap();
        assert_eq!(notes.renew_notes("a", long).await.unwrap(), 3);
        assert_eq!(notes.renew_notes("b", long).await.unwrap(), 0);
        // Leased: nobody may sweep them.
        assert!(notes.claim_notes("b", 10, long).await.unwrap().is_empty());

        // A publish below the note leaves it; one at or above clears it.
        assert_eq!(notes.clear_notes(&[note("i1", 6)]).await.unwrap(), 0);
        assert_eq!(notes.clear_notes(&[note("i1", 7)]).await.unwrap(), 1);

        // Node a stops renewing (it died): its lease runs out at once here.
        notes.renew_notes("a", Duration::ZERO).await.unwrap();
        let mut claimed = notes.claim_notes("b", 10, long).await.unwrap();
        claimed.sort_by(|x, y| x.note.import_id.cmp(&y.note.import_id));
        assert_eq!(claimed.len(), 2, "{claimed:?}");
        assert_eq!(claimed[0].note, note("gone", 3));
        assert!(matches!(claimed[0].state, NotedState::Gone));
        assert_eq!(claimed[1].note, note("i2", 2));
        assert!(matches!(
            claimed[1].state,
            NotedState::Removed { version: 2 }
        ));
        // Claimed under b's lease now: no second claimer.
        assert!(notes.claim_notes("c", 10, long).await.unwrap().is_empty());
        assert_eq!(notes.renew_notes("b", long).await.unwrap(), 2);
        assert_eq!(
            notes
                .clear_notes(&[note("gone", 3), note("i2", 2)])
                .await
                .unwrap(),
            2
        );

        // A claimed import comes with its stored state, newer than the note.
        notes.hold_notes("a", &[note("i1", 7)], long).await.unwrap();
        done.import.version = 9;
        assert!(store.update_import(&done, 7).await.unwrap());
        notes.renew_notes("a", Duration::ZERO).await.unwrap();
        let claimed = notes.claim_notes("b", 10, long).await.unwrap();
        assert_eq!(claimed.len(), 1);
        match &claimed[0].state {
            NotedState::Import(owned) => {
                assert_eq!(owned.import.version, 9);
                assert_eq!(owned.user_id, "alice");
            }
            other => panic!("expected the import, got {other:?}"),
        }
        assert_eq!(notes.clear_notes(&[note("i1", 9)]).await.unwrap(), 1);
        assert!(
            notes
                .claim_notes("b", 10, Duration::ZERO)
                .await
                .unwrap()
                .is_empty()
        );

        // What every node pays when no node holds anything: one sweep's
        // claim, finding nothing (`--nocapture` prints it).
        let runs = 200u32;
        let started = std::time::Instant::now();
        for _ in 0..runs {
            assert!(notes.claim_notes("b", 100, long).await.unwrap().is_empty());
        }
        println!(
            "an empty sweep: {:?} per claim over {runs}",
            started.elapsed() / runs
        );
    }
}
