//! A delete is a change like any other: every tab of the user hears of it
//! at once, a tab that was away hears of it from its next snapshot, and no
//! one else hears anything. One node here; `tests/scaleout.rs` has the same
//! across nodes over Redis.

mod common;

use common::{World, follow_to_final, world};
use reeltime_protocol::{Import, RemovedImport, ServerMessage};
use reeltime_testkit::{Event, WsClient};

/// Reads until the `import_removed` of `id`; returns its version. Changes
/// of `id` read before it must be older.
async fn removal_of(ws: &mut WsClient, id: &str) -> u64 {
    let mut last = 0;
    loop {
        match ws.next().await {
            Event::Message(ServerMessage::ImportRemoved { id: gone, version }) if gone == id => {
                assert!(version > last, "removal at {version} after version {last}");
                return version;
            }
            Event::Message(ServerMessage::Import { import }) if import.id == id => {
                last = import.version;
            }
            Event::Message(_) => {}
            other => panic!("socket ended while waiting for the delete of {id}: {other:?}"),
        }
    }
}

/// Proves nothing about `id` is queued on `ws`: a ping's pong arrives
/// after anything queued before it.
async fn hears_nothing_of(ws: &mut WsClient, id: &str) {
    ws.send_json(&serde_json::json!({"type": "ping"})).await;
    loop {
        match ws.message().await {
            ServerMessage::Pong => return,
            ServerMessage::ImportRemoved { id: gone, .. } => {
                assert_ne!(gone, id, "another user heard of the delete")
            }
            ServerMessage::Import { import } => {
                assert_ne!(import.id, id, "another user heard of the import")
            }
            _ => {}
        }
    }
}

/// A completed import of `sub`, followed to its final state on `ws`.
async fn completed(w: &World, ws: &mut WsClient, sub: &str, name: &str) -> Import {
    let created = w
        .api
        .create_ok(&w.token(sub), &w.content.video_url(name, 4000))
        .await;
    follow_to_final(ws, &created.id)
        .await
        .pop()
        .expect("a final state")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_reaches_every_tab_and_a_tab_that_was_away_learns_it_on_reconnect() {
    let w = world(&[]).await;
    let token = w.token("alice");
    let (mut tab1, _) = w.socket("alice").await;
    let (mut tab2, _) = w.socket("alice").await;
    let (mut away, _) = w.socket("alice").await;
    let (mut bob, _) = w.socket("bob").await;
    let done = completed(&w, &mut tab1, "alice", "gone").await;
    let kept = completed(&w, &mut tab1, "alice", "kept").await;
    for tab in [&mut tab2, &mut away] {
        follow_to_final(tab, &done.id).await;
        follow_to_final(tab, &kept.id).await;
    }
    away.drop_connection();

    let (status, body) = w
        .api
        .delete(&token, &format!("/api/imports/{}", done.id))
        .await;
    assert_eq!(status, 204, "{body}");

    // Every open tab hears of it, with a version after the import's last.
    let removed = removal_of(&mut tab1, &done.id).await;
    assert_eq!(removed, done.version + 1);
    assert_eq!(removal_of(&mut tab2, &done.id).await, removed);
    hears_nothing_of(&mut bob, &done.id).await;

    // Gone from REST, as before.
    let path = format!("/api/imports/{}", done.id);
    assert_eq!(w.api.get(&token, &path).await.0, 404);
    assert_eq!(w.api.delete(&token, &path).await.0, 404, "deleted once");
    let (status, list) = w.api.get(&token, "/api/imports").await;
    assert_eq!(status, 200);
    let listed: Vec<&str> = list["imports"]
        .as_array()
        .expect("imports")
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(
        listed,
        [kept.id.as_str()],
        "lists never show a deleted import"
    );

    // The tab that was away: its snapshot says the import was deleted, not
    // merely that it is not among the recent ones.
    let mut back = WsClient::connect_query(&w.server.ws(), &token).await;
    assert!(matches!(back.message().await, ServerMessage::Ready { .. }));
    match back.message().await {
        ServerMessage::Snapshot { imports, removed } => {
            let ids: Vec<&str> = imports.iter().map(|i| i.id.as_str()).collect();
            assert_eq!(ids, [kept.id.as_str()]);
            assert_eq!(
                removed,
                [RemovedImport {
                    id: done.id.clone(),
                    version: done.version + 1,
                }]
            );
        }
        other => panic!("expected the snapshot, got {other:?}"),
    }
    // Another user's snapshot holds none of it.
    let mut bobs = WsClient::connect_query(&w.server.ws(), &w.token("bob")).await;
    bobs.message().await;
    match bobs.message().await {
        ServerMessage::Snapshot { imports, removed } => {
            assert!(imports.is_empty() && removed.is_empty(), "{removed:?}");
        }
        other => panic!("expected the snapshot, got {other:?}"),
    }
}
