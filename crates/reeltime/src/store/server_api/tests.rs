//! The server API's part of the store contract (run by `store::tests`
//! against SQLite and PostgreSQL): keys, idempotency rows, the cross-user
//! listing, and external imports kept out of claims, lines and the cap.

use std::time::Duration;

use chrono::Utc;
use reeltime_protocol::{ImportSource, ImportStatus};

use super::{ApiKeyRecord, IdempotencyBegin, ImportFilter};
use crate::store::tests::import;
use crate::store::{OwnedImport, Store};

pub(crate) async fn contract(store: &dyn Store) {
    keys(store).await;
    idempotency(store).await;
    external_imports(store).await;
}

async fn keys(store: &dyn Store) {
    let api = store.server_api();
    let key = |id: &str, name: &str, hash: &str| ApiKeyRecord {
        id: id.into(),
        name: name.into(),
        secret_hash: hash.into(),
        created_at: Utc::now(),
        last_used_at: None,
        revoked_at: None,
    };
    assert!(
        api.insert_api_key(&key("k1", "backend", "h1"))
            .await
            .unwrap()
    );
    assert!(
        !api.insert_api_key(&key("k2", "backend", "h2"))
            .await
            .unwrap(),
        "name taken"
    );
    assert!(
        !api.insert_api_key(&key("k3", "other", "h1")).await.unwrap(),
        "hash taken"
    );
    assert_eq!(api.live_api_key("h1").await.unwrap().unwrap().id, "k1");
    api.touch_api_key("k1", Duration::from_secs(60))
        .await
        .unwrap();
    let used = api.live_api_key("h1").await.unwrap().unwrap().last_used_at;
    assert!(used.is_some());
    api.touch_api_key("k1", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        api.live_api_key("h1").await.unwrap().unwrap().last_used_at,
        used
    );
    assert!(api.revoke_api_key("backend").await.unwrap());
    assert!(api.live_api_key("h1").await.unwrap().is_none());
    assert!(!api.revoke_api_key("backend").await.unwrap());
    assert!(
        api.insert_api_key(&key("k4", "backend", "h4"))
            .await
            .unwrap(),
        "name free again"
    );
    let listed = api.list_api_keys().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed[0].revoked_at.is_some() && listed[1].revoked_at.is_none());
}

async fn idempotency(store: &dyn Store) {
    let api = store.server_api();
    assert_eq!(
        api.begin_idempotent("k1", "a", "hash").await.unwrap(),
        IdempotencyBegin::Started
    );
    let running = api.begin_idempotent("k1", "a", "hash").await.unwrap();
    assert_eq!(
        running,
        IdempotencyBegin::Existing {
            request_hash: "hash".into(),
            answer: None
        }
    );
    // Another server key has its own keys.
    assert_eq!(
        api.begin_idempotent("k2", "a", "other").await.unwrap(),
        IdempotencyBegin::Started
    );
    api.finish_idempotent("k1", "a", 201, "{\"id\":1}")
        .await
        .unwrap();
    let done = api.begin_idempotent("k1", "a", "different").await.unwrap();
    assert_eq!(
        done,
        IdempotencyBegin::Existing {
            request_hash: "hash".into(),
            answer: Some((201, "{\"id\":1}".into()))
        }
    );
    api.abandon_idempotent("k2", "a").await.unwrap();
    assert_eq!(
        api.begin_idempotent("k2", "a", "again").await.unwrap(),
        IdempotencyBegin::Started
    );
    assert_eq!(
        api.purge_idempotency().await.unwrap(),
        0,
        "nothing is a day old"
    );
}

async fn external_imports(store: &dyn Store) {
    let external = |id: &str| {
        let mut owned = OwnedImport::new("xena", import(id, ImportStatus::Queued, 1));
        owned.import.source = ImportSource::External;
        owned.import.source_url = None;
        owned
    };
    store.insert_import(&external("e1")).await.unwrap();
    store.insert_import(&external("e2")).await.unwrap();
    // The cap counts only what nodes run: two external imports leave room.
    let url = OwnedImport::new("xena", import("u1", ImportStatus::Queued, 1));
    assert!(store.insert_import_within(&url, 1).await.unwrap());
    let waiting: Vec<String> = store
        .waiting_imports(10)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.import.id)
        .collect();
    assert_eq!(waiting, vec!["u1".to_string()]);
    let claimed: Vec<String> = store
        .claim_imports("node", 10, Duration::from_secs(30))
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.import.id)
        .collect();
    assert_eq!(
        claimed,
        vec!["u1".to_string()],
        "no node claims an external import"
    );

    let api = store.server_api();
    let all = api
        .find_imports(&ImportFilter {
            user_id: Some("xena"),
            limit: 10,
            ..ImportFilter::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = all.iter().map(|o| o.import.id.as_str()).collect();
    assert_eq!(ids, vec!["u1", "e2", "e1"]);
    let page = api
        .find_imports(&ImportFilter {
            user_id: Some("xena"),
            status: Some(ImportStatus::Queued),
            before: Some("u1"),
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(page[0].import.id, "e2");
    let none = api
        .find_imports(&ImportFilter {
            status: Some(ImportStatus::Failed),
            limit: 10,
            ..ImportFilter::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
}
