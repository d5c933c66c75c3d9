//! The store's contract, written once and run against every implementation:
//! the embedded SQLite store and PostgreSQL (a real throwaway cluster from
//! the test kit). A behaviour that differs between the two is a bug in one
//! of them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use reeltime_protocol::{Import, ImportStatus, RemovedImport};

use super::{
    GroupCommit, ImportWrite, OwnedImport, PostgresStore, SNAPSHOT_REMOVED, SqliteStore, Store,
    TOMBSTONE_RETENTION,
};

/// An import with made-up fields; also used by other modules' tests.
pub(crate) fn import(id: &str, status: ImportStatus, version: u64) -> Import {
    Import {
        id: id.into(),
        status,
        stage: None,
        progress: None,
        bytes_done: 0,
        bytes_total: None,
        version,
        attempt: 1,
        source: reeltime_protocol::ImportSource::Url,
        source_url: Some("https://example.com/a.mp4".into()),
        file_name: None,
        metadata: None,
        title: "a".into(),
        error: None,
        result: None,
        queue_position: None,
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

fn owned(user: &str, id: &str, status: ImportStatus, version: u64) -> OwnedImport {
    OwnedImport::new(user, import(id, status, version))
}

async fn compare_and_set_refuses_a_stale_version(store: &dyn Store) {
    let mut owned = owned("alice", "01", ImportStatus::Queued, 1);
    store.insert_import(&owned).await.unwrap();
    owned.import.version = 2;
    owned.import.status = ImportStatus::Downloading;
    assert!(store.update_import(&owned, 1).await.unwrap());
    owned.import.version = 3;
    assert!(
        !store.update_import(&owned, 1).await.unwrap(),
        "stale write must fail"
    );
    let other_user = OwnedImport::new("mallory", owned.import.clone());
    assert!(!store.update_import(&other_user, 2).await.unwrap());
    let back = store.get_import("01").await.unwrap().unwrap();
    assert_eq!(back.import.version, 2);
    assert_eq!(back.import.status, ImportStatus::Downloading);
    assert_eq!(back.user_id, "alice");
}

/// Many writers racing from the same version: exactly one wins.
async fn racing_writers_have_one_winner(store: Arc<dyn Store>) {
    store
        .insert_import(&owned("alice", "race", ImportStatus::Queued, 1))
        .await
        .unwrap();
    let mut writers = Vec::new();
    for n in 0..8u64 {
        let store = Arc::clone(&store);
        writers.push(tokio::spawn(async move {
            let mut next = owned("alice", "race", ImportStatus::Downloading, 2);
            next.import.bytes_done = n;
            store.update_import(&next, 1).await.unwrap()
        }));
    }
    let mut wins = 0;
    for writer in writers {
        if writer.await.unwrap() {
            wins += 1;
        }
    }
    assert_eq!(wins, 1, "exactly one compare-and-set from version 1 wins");
    let back = store.get_import("race").await.unwrap().unwrap();
    assert_eq!(back.import.version, 2);
}

/// A batch writes exactly the changes whose expected version and owner
/// match, and says which, in order.
async fn batched_writes_compare_and_set_each(store: &dyn Store) {
    for id in ["b1", "b2", "b3"] {
        store
            .insert_import(&owned("alice", id, ImportStatus::Queued, 1))
            .await
            .unwrap();
    }
    let mut first = owned("alice", "b1", ImportStatus::Completed, 2);
    first.import.progress = Some(1.0);
    let writes = [
        ImportWrite {
            owned: first,
            expected_version: 1,
        },
        // stale: b2 is at version 1
        ImportWrite {
            owned: owned("alice", "b2", ImportStatus::Downloading, 6),
            expected_version: 5,
        },
        // not the owner
        ImportWrite {
            owned: owned("mallory", "b3", ImportStatus::Downloading, 2),
            expected_version: 1,
        },
        // no such import
        ImportWrite {
            owned: owned("alice", "nope", ImportStatus::Downloading, 2),
            expected_version: 1,
        },
    ];
    assert_eq!(
        store.update_imports(&writes).await.unwrap(),
        [true, false, false, false]
    );
    let b1 = store.get_import("b1").await.unwrap().unwrap();
    assert_eq!(b1.import.version, 2);
    assert_eq!(b1.import.status, ImportStatus::Completed);
    assert_eq!(b1.import.progress, Some(1.0));
    assert!(
        store
            .snapshot("alice")
            .await
            .unwrap()
            .imports
            .iter()
            .any(|i| i.id == "b1" && i.status == ImportStatus::Completed),
        "the finished flag is written with the status"
    );
    for id in ["b2", "b3"] {
        let untouched = store.get_import(id).await.unwrap().unwrap();
        assert_eq!(untouched.import.version, 1, "{id}");
        assert_eq!(untouched.user_id, "alice");
    }
    assert_eq!(store.update_imports(&[]).await.unwrap(), Vec::<bool>::new());
}

/// Through the group commit: many imports changing at once, each change
/// awaited before the next, all land in order; racing writers of one
/// import still have exactly one winner.
async fn group_commit_keeps_order_and_one_winner(store: Arc<dyn Store>) {
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let commits = Arc::new(GroupCommit::start(Arc::clone(&store), Arc::clone(&metrics)));
    let mut jobs = Vec::new();
    for n in 0..40 {
        let store = Arc::clone(&store);
        let commits = Arc::clone(&commits);
        jobs.push(tokio::spawn(async move {
            let id = format!("g{n:02}");
            let mut next = owned("alice", &id, ImportStatus::Queued, 1);
            store.insert_import(&next).await.unwrap();
            for version in 2..=20 {
                next.import.version = version;
                next.import.bytes_done = version;
                assert!(commits.update_import(&next, version - 1).await.unwrap());
            }
        }));
    }
    for job in jobs {
        job.await.unwrap();
    }
    for n in 0..40 {
        let back = store
            .get_import(&format!("g{n:02}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back.import.version, 20);
        assert_eq!(back.import.bytes_done, 20);
    }
    let stored = metrics.import_changes_stored.load(Ordering::Relaxed);
    let writes = metrics.import_writes.load(Ordering::Relaxed);
    assert_eq!(stored, 40 * 19);
    assert!(
        writes < stored,
        "40 jobs at once share writes: {writes} writes for {stored} changes"
    );
    let mut racers = Vec::new();
    for n in 0..8u64 {
        let commits = Arc::clone(&commits);
        racers.push(tokio::spawn(async move {
            let mut next = owned("alice", "g00", ImportStatus::Downloading, 21);
            next.import.bytes_done = 100 + n;
            commits.update_import(&next, 20).await.unwrap()
        }));
    }
    let mut wins = 0;
    for racer in racers {
        wins += usize::from(racer.await.unwrap());
    }
    assert_eq!(wins, 1, "exactly one compare-and-set from version 20 wins");
}

async fn snapshot_has_unfinished_and_recent_finished_only(store: &dyn Store) {
    for n in 0..60 {
        let status = if n == 5 {
            ImportStatus::Downloading
        } else {
            ImportStatus::Completed
        };
        store
            .insert_import(&owned("alice", &format!("{n:03}"), status, 1))
            .await
            .unwrap();
    }
    store
        .insert_import(&owned("bob", "999", ImportStatus::Queued, 1))
        .await
        .unwrap();
    let snapshot = store.snapshot("alice").await.unwrap().imports;
    assert_eq!(snapshot.len(), 51);
    assert!(
        snapshot.iter().any(|i| i.id == "005"),
        "old unfinished import kept"
    );
    assert!(
        !snapshot.iter().any(|i| i.id == "999"),
        "other users never included"
    );
    assert!(
        !snapshot.iter().any(|i| i.id == "000"),
        "oldest finished dropped"
    );
    let ids: Vec<&str> = snapshot.iter().map(|i| i.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted, "snapshot is newest first");

    let page = store.list_imports("alice", 10, Some("050")).await.unwrap();
    assert_eq!(page.first().map(|i| i.id.as_str()), Some("049"));
    assert_eq!(page.len(), 10);
    let first = store.list_imports("alice", 3, None).await.unwrap();
    let first: Vec<&str> = first.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(first, ["059", "058", "057"], "list is newest first");
}

/// Ids are UUIDv7 text with hyphens: ordering must be by bytes, whatever
/// the database's collation makes of the hyphens.
async fn uuid_ids_order_by_creation(store: &dyn Store) {
    let mut ids: Vec<String> = (0..20).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    for id in &ids {
        store
            .insert_import(&owned("carol", id, ImportStatus::Completed, 1))
            .await
            .unwrap();
    }
    ids.reverse();
    let listed: Vec<String> = store
        .list_imports("carol", 100, None)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(listed, ids);
    let after: Vec<String> = store
        .list_imports("carol", 100, Some(&ids[4]))
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(after, ids[5..]);
}

async fn users_unfinished_counts_and_delete(store: &dyn Store) {
    let created = store.upsert_user("dave", None).await.unwrap();
    assert_eq!(created.email, None);
    let updated = store
        .upsert_user("dave", Some("dave@example.com"))
        .await
        .unwrap();
    assert_eq!(updated.email.as_deref(), Some("dave@example.com"));
    assert_eq!(
        updated.created_at.timestamp_millis(),
        created.created_at.timestamp_millis(),
        "created_at never moves"
    );
    let kept = store.upsert_user("dave", None).await.unwrap();
    assert_eq!(
        kept.email.as_deref(),
        Some("dave@example.com"),
        "a token without email keeps the known one"
    );
    assert_eq!(
        store.get_user("dave").await.unwrap().and_then(|u| u.email),
        Some("dave@example.com".to_string())
    );
    assert!(store.get_user("nobody").await.unwrap().is_none());

    store
        .insert_import(&owned("dave", "a", ImportStatus::Queued, 1))
        .await
        .unwrap();
    store
        .insert_import(&owned("erin", "b", ImportStatus::Downloading, 1))
        .await
        .unwrap();
    store
        .insert_import(&owned("dave", "c", ImportStatus::Failed, 1))
        .await
        .unwrap();
    let unfinished: Vec<(String, String)> = store
        .unfinished_imports()
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.user_id, o.import.id))
        .collect();
    assert_eq!(
        unfinished,
        [
            ("dave".to_string(), "a".to_string()),
            ("erin".to_string(), "b".to_string())
        ],
        "unfinished, oldest first, with owners"
    );
    let mut counts = store.count_by_status().await.unwrap();
    counts.sort();
    assert_eq!(
        counts,
        [
            ("downloading".to_string(), 1),
            ("failed".to_string(), 1),
            ("queued".to_string(), 1)
        ]
    );
    assert!(store.remove_import("dave", "c", 1).await.unwrap());
    assert!(!store.remove_import("dave", "c", 1).await.unwrap());
    assert!(store.get_import("c").await.unwrap().is_none());
}

/// Stores `owned` as completed with `result`, as a job would.
async fn complete(store: &dyn Store, mut owned: OwnedImport, result: serde_json::Value) {
    let version = owned.import.version;
    owned.import.version += 1;
    owned.import.status = ImportStatus::Completed;
    owned.import.result = Some(result);
    assert!(store.update_import(&owned, version).await.unwrap());
}

fn ids(imports: &[OwnedImport]) -> Vec<&str> {
    imports.iter().map(|o| o.import.id.as_str()).collect()
}

/// Alice's backlog of five, one of them already held by a node, does not
/// keep Bob and Carol waiting: the line and the claims go by turns.
async fn claims_and_the_line_serve_users_in_turn(store: &dyn Store) {
    let lease = std::time::Duration::from_secs(30);
    for id in ["a1", "a2", "a3", "a4", "a5"] {
        store
            .insert_import(&owned("alice", id, ImportStatus::Queued, 1))
            .await
            .unwrap();
    }
    let first = store.claim_imports("n1", 1, lease).await.unwrap();
    assert_eq!(ids(&first), ["a1"]);
    for (user, id) in [("bob", "b1"), ("bob", "b2"), ("carol", "c1")] {
        store
            .insert_import(&owned(user, id, ImportStatus::Queued, 1))
            .await
            .unwrap();
    }
    // Turns: a1 (held) 0, a2 1, a3 2 ...; b1 0, b2 1; c1 0.
    let line = store.waiting_imports(100).await.unwrap();
    assert_eq!(ids(&line), ["b1", "c1", "a2", "b2", "a3", "a4", "a5"]);
    assert_eq!(ids(&store.waiting_imports(2).await.unwrap()), ["b1", "c1"]);
    // The claims take the line from its head, whichever node asks.
    let second = store.claim_imports("n2", 3, lease).await.unwrap();
    let mut expected = vec!["a2", "b1", "c1"];
    expected.sort();
    assert_eq!(ids(&second), expected, "returned oldest first");
    let line = store.waiting_imports(100).await.unwrap();
    assert_eq!(ids(&line), ["b2", "a3", "a4", "a5"]);
    // Finished imports no longer count against their user's turns: Alice
    // has none running now, and her next two are in turns 0 and 1.
    for id in ["a1", "a2"] {
        let done = store.get_import(id).await.unwrap().unwrap();
        complete(store, done, serde_json::json!({})).await;
    }
    let line = store.waiting_imports(100).await.unwrap();
    assert_eq!(ids(&line), ["a3", "a4", "b2", "a5"]);
    assert_eq!(
        ids(&store.claim_imports("n1", 1, lease).await.unwrap()),
        ["a3"]
    );
}

/// The cap on unfinished imports holds under racing creates, and finished
/// imports free places; stored bytes count completed results only.
async fn unfinished_cap_and_stored_bytes(store: Arc<dyn Store>) {
    let mut creates = Vec::new();
    for n in 0..12 {
        let store = Arc::clone(&store);
        creates.push(tokio::spawn(async move {
            let id = format!("cap{n:02}");
            store
                .insert_import_within(&owned("alice", &id, ImportStatus::Queued, 1), 5)
                .await
                .unwrap()
        }));
    }
    let mut stored = 0;
    for create in creates {
        stored += usize::from(create.await.unwrap());
    }
    assert_eq!(stored, 5, "exactly the cap, however the creates raced");
    assert!(
        store
            .insert_import_within(&owned("bob", "bob1", ImportStatus::Queued, 1), 5)
            .await
            .unwrap(),
        "another user's cap is their own"
    );
    let held = store
        .unfinished_imports()
        .await
        .unwrap()
        .into_iter()
        .find(|o| o.user_id == "alice")
        .unwrap();
    let result = serde_json::json!({"size_bytes": 1500, "video_file": "x.mp4"});
    complete(&*store, held, result).await;
    assert!(
        store
            .insert_import_within(&owned("alice", "cap99", ImportStatus::Queued, 1), 5)
            .await
            .unwrap(),
        "a finished import frees its place"
    );
    let mut failed = owned("alice", "failed", ImportStatus::Failed, 1);
    failed.import.result = Some(serde_json::json!({"size_bytes": 99}));
    store.insert_import(&failed).await.unwrap();
    let mut other = owned("bob", "bob2", ImportStatus::Completed, 1);
    other.import.result = Some(serde_json::json!({"size_bytes": 7}));
    store.insert_import(&other).await.unwrap();
    assert_eq!(store.stored_bytes("alice").await.unwrap(), 1500);
    assert_eq!(store.stored_bytes("bob").await.unwrap(), 7);
    assert_eq!(store.stored_bytes("nobody").await.unwrap(), 0);
}

/// A delete leaves a tombstone that only a snapshot shows, that nothing
/// writes over, and that the purge drops.
async fn deletes_leave_tombstones(store: &dyn Store) {
    for (id, status) in [
        ("t1", ImportStatus::Completed),
        ("t2", ImportStatus::Failed),
        ("t3", ImportStatus::Queued),
    ] {
        store
            .insert_import(&owned("frank", id, status, 4))
            .await
            .unwrap();
    }
    store
        .insert_import(&owned("grace", "g1", ImportStatus::Completed, 1))
        .await
        .unwrap();
    assert!(
        !store.remove_import("frank", "t1", 3).await.unwrap(),
        "a stale version is refused"
    );
    assert!(
        !store.remove_import("mallory", "t1", 4).await.unwrap(),
        "another user's import is refused"
    );
    assert!(store.remove_import("frank", "t1", 4).await.unwrap());
    assert!(
        !store.remove_import("frank", "t1", 5).await.unwrap(),
        "a tombstone is not removed twice"
    );

    assert!(store.get_import("t1").await.unwrap().is_none());
    let listed: Vec<String> = store
        .list_imports("frank", 10, None)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(listed, ["t3", "t2"], "lists never show tombstones");
    let snapshot = store.snapshot("frank").await.unwrap();
    let ids: Vec<&str> = snapshot.imports.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["t3", "t2"]);
    assert_eq!(
        snapshot.removed,
        [RemovedImport {
            id: "t1".into(),
            version: 5
        }],
        "the tombstone carries the version after the import's last"
    );
    assert!(
        store.snapshot("grace").await.unwrap().removed.is_empty(),
        "tombstones are their owner's only"
    );

    let late = owned("frank", "t1", ImportStatus::Completed, 6);
    assert!(
        !store.update_import(&late, 5).await.unwrap(),
        "a tombstone is never written over, even at its own version"
    );
    let batch = store
        .update_imports(&[ImportWrite {
            owned: late,
            expected_version: 5,
        }])
        .await
        .unwrap();
    assert_eq!(batch, [false], "nor by a batch");
    let mut counts = store.count_by_status().await.unwrap();
    counts.sort();
    assert_eq!(
        counts,
        [
            ("completed".to_string(), 1),
            ("failed".to_string(), 1),
            ("queued".to_string(), 1)
        ],
        "tombstones are not counted"
    );
    let unfinished: Vec<String> = store
        .unfinished_imports()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.import.id)
        .collect();
    assert_eq!(unfinished, ["t3"]);

    assert_eq!(
        store.purge_tombstones(TOMBSTONE_RETENTION).await.unwrap(),
        0,
        "a fresh tombstone is kept"
    );
    assert_eq!(store.snapshot("frank").await.unwrap().removed.len(), 1);
    assert_eq!(
        store.purge_tombstones(Duration::ZERO).await.unwrap(),
        1,
        "an expired one is purged"
    );
    assert!(store.snapshot("frank").await.unwrap().removed.is_empty());
    assert_eq!(
        store.list_imports("frank", 10, None).await.unwrap().len(),
        2,
        "the purge touches tombstones only"
    );
}

/// A snapshot carries at most [`SNAPSHOT_REMOVED`] tombstones, the newest.
async fn snapshot_carries_the_newest_tombstones(store: &dyn Store) {
    let total = SNAPSHOT_REMOVED + 5;
    for n in 0..total {
        let id = format!("{n:04}");
        store
            .insert_import(&owned("heidi", &id, ImportStatus::Completed, 1))
            .await
            .unwrap();
    }
    // Deleted newest id first, so the last deletes are the oldest ids.
    for n in (0..total).rev() {
        let id = format!("{n:04}");
        assert!(store.remove_import("heidi", &id, 1).await.unwrap());
        // Deletes in separate milliseconds, so "newest" is well defined.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let snapshot = store.snapshot("heidi").await.unwrap();
    assert!(snapshot.imports.is_empty());
    assert_eq!(snapshot.removed.len() as i64, SNAPSHOT_REMOVED);
    assert!(
        snapshot.removed.iter().any(|gone| gone.id == "0000"),
        "the latest delete is in"
    );
    assert!(
        !snapshot
            .removed
            .iter()
            .any(|gone| gone.id == format!("{:04}", total - 1)),
        "the earliest delete is left out"
    );
}

/// A batch of snapshots is each user's own snapshot, the limits applied
/// per user (two users above the finished limit), in the order asked,
/// with a user named twice and one who has nothing.
async fn batched_snapshots_are_each_users_own(store: &dyn Store) {
    for (user, count) in [("alice", 60), ("dave", 55)] {
        for n in 0..count {
            let status = if n == 5 {
                ImportStatus::Downloading
            } else {
                ImportStatus::Completed
            };
            let id = format!("{user}-{n:03}");
            store
                .insert_import(&owned(user, &id, status, 1))
                .await
                .unwrap();
        }
        for n in [1, 2] {
            assert!(
                store
                    .remove_import(user, &format!("{user}-{n:03}"), 1)
                    .await
                    .unwrap()
            );
        }
    }
    store
        .insert_import(&owned("bob", "bob-1", ImportStatus::Queued, 1))
        .await
        .unwrap();
    let asked: Vec<String> = ["alice", "bob", "carol", "dave", "alice"]
        .map(String::from)
        .to_vec();
    let batch = store.snapshots(&asked).await.unwrap();
    assert_eq!(batch.len(), asked.len());
    for (user, snapshot) in asked.iter().zip(&batch) {
        assert_eq!(
            snapshot,
            &store.snapshot(user).await.unwrap(),
            "{user}'s snapshot"
        );
    }
    assert_eq!(batch[0].imports.len(), 51, "alice: 50 finished + 1 running");
    assert_eq!(batch[3].imports.len(), 51, "dave: the limit is per user");
    assert_eq!(batch[0].removed.len(), 2);
    assert_eq!(batch[1].imports.len(), 1);
    assert_eq!(batch[2], super::Snapshot::default(), "carol has nothing");
    assert!(store.snapshots(&[]).await.unwrap().is_empty());
}

/// Uploads: both caps counted with the insert, an `uploading` import never
/// claimed, the offset's compare-and-set hold (one winner), saves only by
/// the holder, and the sweeper's hold of expired rows.
async fn uploads_hold_their_offset(store: &dyn Store) {
    use super::{UploadInsert, UploadRow};
    let row = |id: &str, expires_in: i64| UploadRow {
        id: id.into(),
        user_id: "ivan".into(),
        length: 100,
        offset: 0,
        expires_at: Utc::now() + chrono::Duration::seconds(expires_in),
        state: "{}".into(),
    };
    let up = |id: &str| owned("ivan", id, ImportStatus::Uploading, 1);
    assert_eq!(
        store
            .insert_upload(&up("u1"), &row("u1", 60), 10, 2)
            .await
            .unwrap(),
        UploadInsert::Stored
    );
    assert_eq!(
        store
            .insert_upload(&up("u2"), &row("u2", -1), 10, 2)
            .await
            .unwrap(),
        UploadInsert::Stored
    );
    assert_eq!(
        store
            .insert_upload(&up("u3"), &row("u3", 60), 10, 2)
            .await
            .unwrap(),
        UploadInsert::TooManyUploads
    );
    assert_eq!(
        store
            .insert_upload(&up("u3"), &row("u3", 60), 2, 5)
            .await
            .unwrap(),
        UploadInsert::TooManyImports
    );
    assert!(store.get_import("u3").await.unwrap().is_none());
    assert!(store.get_upload("u3").await.unwrap().is_none());
    let claimed = store
        .claim_imports("n1", 10, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(claimed.is_empty(), "an uploading import is never claimed");

    let hold = Duration::from_secs(60);
    assert!(
        store
            .hold_upload("u1", Some(5), "a", hold)
            .await
            .unwrap()
            .is_none(),
        "wrong offset"
    );
    let held = store.hold_upload("u1", Some(0), "a", hold).await.unwrap();
    assert_eq!(held.map(|row| (row.offset, row.length)), Some((0, 100)));
    assert!(
        store
            .hold_upload("u1", Some(0), "b", hold)
            .await
            .unwrap()
            .is_none(),
        "held by a"
    );
    let mut saved = store.get_upload("u1").await.unwrap().unwrap();
    saved.offset = 40;
    saved.state = r#"{"sniffed":true}"#.into();
    assert!(
        !store.save_upload(&saved, "b", None).await.unwrap(),
        "b does not hold it"
    );
    assert!(store.save_upload(&saved, "a", None).await.unwrap());
    let stored = store.get_upload("u1").await.unwrap().unwrap();
    assert_eq!(
        (stored.offset, stored.state.as_str()),
        (40, r#"{"sniffed":true}"#)
    );
    assert!(
        store
            .hold_upload("u1", Some(0), "b", hold)
            .await
            .unwrap()
            .is_none(),
        "the offset moved"
    );
    assert!(
        store
            .hold_upload("u1", Some(40), "b", hold)
            .await
            .unwrap()
            .is_some(),
        "a let go"
    );

    let expired = store
        .hold_expired_uploads("sweeper", hold, 10)
        .await
        .unwrap();
    assert_eq!(
        expired.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["u2"]
    );
    assert!(
        store
            .hold_expired_uploads("other", hold, 10)
            .await
            .unwrap()
            .is_empty()
    );
    store.expire_upload("u1").await.unwrap();
    assert!(
        store
            .hold_expired_uploads("sweeper", hold, 10)
            .await
            .unwrap()
            .is_empty(),
        "u1 is expired but b holds it"
    );
    assert!(store.delete_upload("u2", "sweeper").await.unwrap());
    assert!(store.get_upload("u2").await.unwrap().is_none());
}

/// Every scenario, each on a fresh store from `fresh`.
async fn run_all<F, Fut>(mut fresh: F)
where
    F: FnMut(&'static str) -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Store>>,
{
    compare_and_set_refuses_a_stale_version(&*fresh("cas").await).await;
    racing_writers_have_one_winner(fresh("race").await).await;
    batched_writes_compare_and_set_each(&*fresh("batch").await).await;
    group_commit_keeps_order_and_one_winner(fresh("group").await).await;
    snapshot_has_unfinished_and_recent_finished_only(&*fresh("snapshot").await).await;
    uuid_ids_order_by_creation(&*fresh("order").await).await;
    users_unfinished_counts_and_delete(&*fresh("users").await).await;
    deletes_leave_tombstones(&*fresh("tombstones").await).await;
    snapshot_carries_the_newest_tombstones(&*fresh("tombstone_limit").await).await;
    batched_snapshots_are_each_users_own(&*fresh("snapshot_batch").await).await;
    claims_and_the_line_serve_users_in_turn(&*fresh("turns").await).await;
    unfinished_cap_and_stored_bytes(fresh("cap").await).await;
    super::server_api::tests::contract(&*fresh("server_api").await).await;
    uploads_hold_their_offset(&*fresh("uploads").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run_all(|name| {
        let url = format!("sqlite://{}", root.join(format!("{name}.db")).display());
        async move {
            let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.unwrap());
            store
        }
    })
    .await;
}

/// One throwaway cluster, one database per scenario.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_meets_the_contract() {
    let postgres = reeltime_testkit::Postgres::start().await;
    let postgres = &postgres;
    run_all(|name| async move {
        let url = postgres.create_database(name).await;
        let store: Arc<dyn Store> = Arc::new(PostgresStore::open(&url).await.unwrap());
        store
    })
    .await;
}

#[tokio::test]
async fn open_picks_the_store_by_url() {
    assert!(super::is_postgres_url("postgres://u@h/db"));
    assert!(super::is_postgres_url("postgresql://u@h/db"));
    assert!(!super::is_postgres_url("sqlite://./data/reeltime.db"));
    assert!(matches!(
        super::open("mysql://u@h/db").await,
        Err(super::StoreError::UnsupportedUrl)
    ));
}
