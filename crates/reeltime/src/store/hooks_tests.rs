//! The webhook tables' contract, run against SQLite and PostgreSQL: the
//! outbox triggers write the right events in the transaction of each
//! change (and none for progress, none when off), claims keep each
//! import's order and give each delivery to one claimer, outcomes need the
//! lease, and the Clerk tables remember and forget.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use reeltime_protocol::ImportStatus;

use super::hooks::{Attempt, DeliveryState};
use super::tests::import;
use super::{HookStore, ImportWrite, Opened, OwnedImport, Store};

const LEASE: Duration = Duration::from_secs(30);

fn owned(user: &str, id: &str, status: ImportStatus, version: u64) -> OwnedImport {
    OwnedImport::new(user, import(id, status, version))
}

/// Writes `status` (and a progress) as the next version of `owned`.
async fn change(store: &dyn Store, owned: &mut OwnedImport, status: ImportStatus, batched: bool) {
    let expected = owned.import.version;
    owned.import.version += 1;
    owned.import.status = status;
    owned.import.progress = Some(owned.import.version as f64 / 100.0);
    let written = if batched {
        let writes = [ImportWrite {
            owned: owned.clone(),
            expected_version: expected,
        }];
        // A batch of one goes through the batched statement too.
        store.update_imports(&writes).await.unwrap()[0]
    } else {
        store.update_import(owned, expected).await.unwrap()
    };
    assert!(written);
}

async fn pending_types(hooks: &dyn HookStore, import_id: &str) -> Vec<(String, u64)> {
    let mut all = hooks
        .list_deliveries(DeliveryState::Pending, 200, None)
        .await
        .unwrap();
    all.reverse();
    all.into_iter()
        .filter(|d| d.import_id == import_id)
        .map(|d| {
            let data: serde_json::Value = serde_json::from_str(&d.data).unwrap();
            (d.event_type, data["version"].as_u64().unwrap())
        })
        .collect()
}

async fn triggers_write_one_event_per_status_change(store: &dyn Store, hooks: &dyn HookStore) {
    let mut a = owned("alice", "w1", ImportStatus::Queued, 1);
    store.insert_import(&a).await.unwrap();
    change(store, &mut a, ImportStatus::Downloading, true).await;
    for _ in 0..5 {
        change(store, &mut a, ImportStatus::Downloading, true).await; // progress
    }
    change(store, &mut a, ImportStatus::Downloading, false).await; // progress
    change(store, &mut a, ImportStatus::Completed, false).await;
    assert!(
        store
            .remove_import("alice", "w1", a.import.version)
            .await
            .unwrap()
    );
    let events = pending_types(hooks, "w1").await;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "import.created",
            "import.status_changed",
            "import.status_changed",
            "import.completed",
            "import.deleted"
        ]
    );
    let versions: Vec<u64> = events.iter().map(|(_, v)| *v).collect();
    assert_eq!(versions, [1, 2, 9, 9, 10], "each at its change's version");
    // A write that loses its compare-and-set writes no event either.
    let mut stale = owned("alice", "w2", ImportStatus::Queued, 1);
    store.insert_import(&stale).await.unwrap();
    stale.import.version = 3;
    stale.import.status = ImportStatus::Failed;
    assert!(!store.update_import(&stale, 2).await.unwrap());
    assert_eq!(pending_types(hooks, "w2").await.len(), 1, "only created");
}

async fn claims_keep_order_and_need_the_lease(store: &dyn Store, hooks: &dyn HookStore) {
    // Two imports with two events each: a claim gets the first of each.
    for id in ["c1", "c2"] {
        let mut o = owned("bob", id, ImportStatus::Queued, 1);
        store.insert_import(&o).await.unwrap();
        change(store, &mut o, ImportStatus::Downloading, false).await;
    }
    let first = hooks.claim_deliveries("n1", 10, LEASE).await.unwrap();
    let claimed: Vec<(&str, &str)> = first
        .iter()
        .map(|d| (d.import_id.as_str(), d.event_type.as_str()))
        .collect();
    assert_eq!(
        claimed,
        [("c1", "import.created"), ("c2", "import.created")]
    );
    assert!(
        hooks
            .claim_deliveries("n2", 10, LEASE)
            .await
            .unwrap()
            .is_empty(),
        "leased, and the next ones wait for them"
    );
    // Only the lease holder records an outcome.
    let done = Attempt::Delivered { status: 204 };
    assert!(
        !hooks
            .finish_attempt("n2", first[0].seq, &done)
            .await
            .unwrap()
    );
    assert!(
        hooks
            .finish_attempt("n1", first[0].seq, &done)
            .await
            .unwrap()
    );
    let retry = Attempt::Retry {
        at: Utc::now() + chrono::Duration::hours(1),
        status: Some(503),
        error: "the receiver answered 503".into(),
    };
    assert!(
        hooks
            .finish_attempt("n1", first[1].seq, &retry)
            .await
            .unwrap()
    );
    // c1's next event is due; c2's waits behind its retrying first event.
    let next = hooks.claim_deliveries("n2", 10, LEASE).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(
        (next[0].import_id.as_str(), next[0].event_type.as_str()),
        ("c1", "import.status_changed")
    );
    assert!(
        hooks
            .finish_attempt("n2", next[0].seq, &done)
            .await
            .unwrap()
    );
    // A retry asked for makes it due at once, same id.
    let again = hooks.retry_delivery(&first[1].id).await.unwrap().unwrap();
    assert_eq!(again.attempts, 1);
    assert_eq!(again.last_status, Some(503));
    let due = hooks.claim_deliveries("n3", 10, LEASE).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, first[1].id);
    // A node that stops gives its leases back.
    hooks.release_delivery_leases(Some("n3")).await.unwrap();
    let back = hooks.claim_deliveries("n4", 10, LEASE).await.unwrap();
    assert_eq!(back.len(), 1, "released");
    let failed = Attempt::Failed {
        status: Some(410),
        error: "gone".into(),
    };
    assert!(
        hooks
            .finish_attempt("n4", back[0].seq, &failed)
            .await
            .unwrap()
    );
    assert!(
        hooks.retry_delivery(&first[0].id).await.unwrap().is_none(),
        "delivered"
    );
    let failed = hooks
        .list_deliveries(DeliveryState::Failed, 10, None)
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].attempts, 2, "a released lease is no attempt");
    // c2's second event goes once the first failed for good.
    let after = hooks.claim_deliveries("n4", 10, LEASE).await.unwrap();
    assert_eq!(
        after
            .iter()
            .map(|d| d.import_id.as_str())
            .collect::<Vec<_>>(),
        ["c2"]
    );
    assert!(hooks.oldest_pending().await.unwrap().is_some());
    // Purging keeps what is recent, drops what is old.
    assert_eq!(
        hooks
            .purge_deliveries(Duration::from_secs(3600), Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    let delivered_before = hooks
        .list_deliveries(DeliveryState::Delivered, 10, None)
        .await
        .unwrap()
        .len();
    assert_eq!(delivered_before, 2);
    assert_eq!(
        hooks
            .purge_deliveries(Duration::ZERO, Duration::ZERO)
            .await
            .unwrap(),
        3,
        "two delivered, one failed"
    );
    assert!(
        hooks.oldest_pending().await.unwrap().is_some(),
        "pending stay"
    );
}

async fn racing_claims_share_nothing(store: &dyn Store, hooks: Arc<dyn HookStore>) {
    for n in 0..40 {
        store
            .insert_import(&owned("carl", &format!("r{n:02}"), ImportStatus::Queued, 1))
            .await
            .unwrap();
    }
    let claims = (0..4).map(|node| {
        let hooks = Arc::clone(&hooks);
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = hooks
                    .claim_deliveries(&format!("node{node}"), 3, LEASE)
                    .await
                    .unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|d| d.id));
            }
        })
    });
    let mut all = Vec::new();
    for claim in claims {
        all.extend(claim.await.unwrap());
    }
    let unique: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 40, "every delivery claimed");
    assert_eq!(unique.len(), 40, "each by one claimer");
}

async fn clerk_tables_remember_and_forget(hooks: &dyn HookStore) {
    let keep = Duration::from_secs(600);
    assert!(hooks.first_sight("msg_1", keep).await.unwrap());
    assert!(!hooks.first_sight("msg_1", keep).await.unwrap());
    hooks.forget_sight("msg_1").await.unwrap();
    assert!(hooks.first_sight("msg_1", keep).await.unwrap());
    let later = Utc::now() + chrono::Duration::minutes(5);
    hooks.revoke("sid:sess_1", later).await.unwrap();
    hooks
        .revoke("sid:sess_2", Utc::now() - chrono::Duration::seconds(1))
        .await
        .unwrap();
    let subjects: Vec<String> = hooks
        .revocations()
        .await
        .unwrap()
        .into_iter()
        .map(|(subject, _)| subject)
        .collect();
    assert_eq!(subjects, ["sid:sess_1"], "ended ones are dropped");
}

async fn off_writes_nothing(store: &dyn Store, hooks: &dyn HookStore) {
    let mut o = owned("dora", "off1", ImportStatus::Queued, 1);
    store.insert_import(&o).await.unwrap();
    change(store, &mut o, ImportStatus::Completed, false).await;
    assert!(pending_types(hooks, "off1").await.is_empty());
}

/// The cost of the triggers on progress: the same batches of progress
/// writes with the outbox on and off, interleaved, best of five rounds
/// each (printed; a progress write only compares two statuses).
async fn progress_batches_cost_alike(on: &dyn Store, off: &dyn Store) -> (Duration, Duration) {
    let mut rows: [Vec<OwnedImport>; 2] = [Vec::new(), Vec::new()];
    for (store, rows) in [on, off].into_iter().zip(rows.iter_mut()) {
        *rows = (0..500)
            .map(|n| owned("erin", &format!("p{n:03}"), ImportStatus::Downloading, 1))
            .collect();
        for row in rows.iter() {
            store.insert_import(row).await.unwrap();
        }
    }
    let mut best = [Duration::MAX, Duration::MAX];
    for _round in 0..5 {
        for (index, store) in [on, off].into_iter().enumerate() {
            let started = Instant::now();
            for _ in 0..4 {
                let writes: Vec<ImportWrite> = rows[index]
                    .iter_mut()
                    .map(|row| {
                        let expected = row.import.version;
                        row.import.version += 1;
                        ImportWrite {
                            owned: row.clone(),
                            expected_version: expected,
                        }
                    })
                    .collect();
                assert!(
                    store
                        .update_imports(&writes)
                        .await
                        .unwrap()
                        .iter()
                        .all(|w| *w)
                );
            }
            best[index] = best[index].min(started.elapsed());
        }
    }
    (best[0], best[1])
}

async fn run_all<F, Fut>(mut fresh: F)
where
    F: FnMut(&'static str, bool) -> Fut,
    Fut: std::future::Future<Output = Opened>,
{
    let Opened { store, hooks } = fresh("events", true).await;
    triggers_write_one_event_per_status_change(&*store, &*hooks).await;
    let Opened { store, hooks } = fresh("claims", true).await;
    claims_keep_order_and_need_the_lease(&*store, &*hooks).await;
    let Opened { store, hooks } = fresh("racing", true).await;
    racing_claims_share_nothing(&*store, hooks).await;
    let Opened { hooks, .. } = fresh("clerk", false).await;
    clerk_tables_remember_and_forget(&*hooks).await;
    let Opened { store, hooks } = fresh("off", false).await;
    off_writes_nothing(&*store, &*hooks).await;
    let on = fresh("cost_on", true).await;
    let off = fresh("cost_off", false).await;
    let (with, without) = progress_batches_cost_alike(&*on.store, &*off.store).await;
    println!(
        "2,000 progress writes in batches of 500 (best of 5): outbox on {with:?}, off {without:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_outbox_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run_all(|name, on| {
        let url = format!("sqlite://{}", root.join(format!("{name}.db")).display());
        async move { super::open_with(&url, on).await.unwrap() }
    })
    .await;
}

/// The triggers' own cost on progress, against a store without them (the
/// schema before 0006): printed, for docs/benchmarks.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_progress_cost_with_and_without_the_triggers() {
    let dir = tempfile::tempdir().unwrap();
    let on = super::open_with(
        &format!("sqlite://{}", dir.path().join("on.db").display()),
        true,
    )
    .await
    .unwrap();
    let none = super::SqliteStore::open(&format!(
        "sqlite://{}",
        dir.path().join("none.db").display()
    ))
    .await
    .unwrap();
    let triggers: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger'")
            .fetch_one(&none.pool)
            .await
            .unwrap();
    assert_eq!(
        triggers, 0,
        "a store opened without webhooks has no triggers"
    );
    let (with, without) = progress_batches_cost_alike(&*on.store, &none).await;
    println!(
        "SQLite, 2,000 progress writes in batches of 500 (best of 5): triggers (outbox on) {with:?}, no triggers {without:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outbox_meets_the_contract() {
    let postgres = reeltime_testkit::Postgres::start().await;
    let postgres = &postgres;
    run_all(|name, on| async move {
        let url = postgres.create_database(name).await;
        super::open_with(&url, on).await.unwrap()
    })
    .await;
}
