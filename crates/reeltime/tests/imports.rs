//! The imports API and pipeline against the real server: real downloads
//! over HTTP, progress on real sockets, restarts of the real process.

mod common;

use std::collections::{HashMap, HashSet};

use common::{
    World, assert_monotonic, follow_to_final, in_snapshot_or_next, wait_for, wait_until, world,
    world_with,
};
use reeltime_protocol::{Import, ImportStatus, ServerMessage};
use reeltime_testkit::{Event, WsClient, mp4_like};

const MIB: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_runs_to_completion_with_ordered_progress_on_the_socket() {
    let w = world(&[]).await;
    let (mut ws, snapshot) = w.socket("alice").await;
    assert!(snapshot.is_empty());
    let url = w
        .content
        .url(&format!("/video/paced?size={}&pace_ms=2", 2 * MIB));
    let created = w.api.create_ok(&w.token("alice"), &url).await;
    assert_eq!(created.status, ImportStatus::Queued);
    assert_eq!(created.version, 1);
    assert_eq!(created.attempt, 1);
    assert_eq!(created.source_url.as_deref(), Some(url.as_str()));
    assert_eq!(created.title, "paced");

    let started = std::time::Instant::now();
    let states = follow_to_final(&mut ws, &created.id).await;
    let elapsed = started.elapsed().as_secs_f64();
    let last = states.last().expect("final state");
    assert_eq!(last.status, ImportStatus::Completed);
    assert_eq!(last.progress, Some(1.0));
    assert_eq!(last.bytes_done, 2 * MIB as u64);
    assert_eq!(last.bytes_total, Some(2 * MIB as u64));
    assert_eq!(last.result.as_ref().unwrap()["size_bytes"], 2 * MIB);
    assert_eq!(last.result.as_ref().unwrap()["container"], "mp4");
    assert!(states.iter().any(|s| s.status == ImportStatus::Downloading));
    assert!(
        states
            .iter()
            .any(|s| s.progress.is_some_and(|p| p > 0.0 && p < 1.0)),
        "intermediate progress was sent"
    );
    // At most 10 progress messages a second per import, plus the status
    // changes (queued→downloading, →completed) that go out at once.
    let progress_only = states
        .iter()
        .filter(|s| s.status == ImportStatus::Downloading)
        .count();
    assert!(
        progress_only as f64 <= elapsed * 10.0 + 2.0,
        "{progress_only} downloading messages in {elapsed:.2}s"
    );

    // REST agrees with the socket, and the file is on disk.
    let (status, body) = w
        .api
        .get(&w.token("alice"), &format!("/api/imports/{}", created.id))
        .await;
    assert_eq!(status, 200);
    let rest: Import = serde_json::from_value(body).unwrap();
    assert_eq!(rest, *last);
    let dir = w.server.import_dir(&created.id);
    assert_eq!(
        std::fs::metadata(dir.join("source.mp4")).unwrap().len(),
        2 * MIB as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_lists_pages_and_hides_other_users_imports() {
    let w = world(&[]).await;
    let alice = w.token("alice");
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(
            w.api
                .create_ok(&alice, &w.content.video_url(&format!("v{n}"), 1000))
                .await
                .id,
        );
    }
    let (status, page) = w.api.get(&alice, "/api/imports?limit=2").await;
    assert_eq!(status, 200);
    let first: Vec<&str> = page["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(first, [ids[2].as_str(), ids[1].as_str()], "newest first");
    let cursor = page["next_cursor"].as_str().expect("a next page");
    let (_, page2) = w
        .api
        .get(&alice, &format!("/api/imports?limit=2&before={cursor}"))
        .await;
    let second: Vec<&str> = page2["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(second, [ids[0].as_str()]);
    assert!(page2["next_cursor"].is_null());

    let bob = w.token("bob");
    let (status, body) = w.api.get(&bob, &format!("/api/imports/{}", ids[0])).await;
    assert_eq!(
        status, 404,
        "another user's import is not found, never forbidden"
    );
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = w
        .api
        .post(&bob, &format!("/api/imports/{}/cancel", ids[0]))
        .await;
    assert_eq!(status, 404);
    let (status, _) = w
        .api
        .delete(&bob, &format!("/api/imports/{}", ids[0]))
        .await;
    assert_eq!(status, 404);
    let (_, bobs) = w.api.get(&bob, "/api/imports").await;
    assert_eq!(bobs["imports"].as_array().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() {
    let w = world(&[]).await;
    let token = w.token("alice");
    let response = w
        .api
        .http
        .post(format!("{}/api/imports", w.api.base))
        .bearer_auth(&token)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
    for url in [
        "",
        "not a url",
        "ftp://example.com/a.mp4",
        "file:///etc/passwd",
    ] {
        let (status, body) = w.api.create_import(&token, url).await;
        assert_eq!(status, 400, "{url:?}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let (status, body) = w.api.get(&token, "/api/imports/does-not-exist").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _) = w.api.get("", "/api/imports").await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_users_with_many_tabs_see_only_their_own_imports() {
    let w = world(&[("REELTIME_DOWNLOAD_CONCURRENCY", "8")]).await;
    let users = ["alice", "bob", "carol", "dave"];
    let mut sockets = Vec::new();
    for user in users {
        for _ in 0..3 {
            sockets.push((user, w.socket(user).await.0));
        }
    }
    // Every user starts two imports at the same time.
    let mut owned: HashMap<&str, HashSet<String>> = HashMap::new();
    let creates = users.iter().flat_map(|user| {
        let w = &w;
        (0..2).map(move |n| async move {
            let url = w
                .content
                .url(&format!("/video/{user}{n}?size={}&pace_ms=1", MIB / 2));
            (*user, w.api.create_ok(&w.token(user), &url).await.id)
        })
    });
    for (user, id) in futures_util::future::join_all(creates).await {
        owned.entry(user).or_default().insert(id);
    }
    // Each socket must see the final state of each of its user's imports
    // and nothing else.
    let checks = sockets.into_iter().map(|(user, mut ws)| {
        let mine = owned[user].clone();
        async move {
            let mut finished = HashSet::new();
            let mut states: HashMap<String, Vec<Import>> = HashMap::new();
            while finished.len() < mine.len() {
                match ws.next().await {
                    Event::Message(ServerMessage::Import { import }) => {
                        assert!(
                            mine.contains(&import.id),
                            "{user} received another user's import {}",
                            import.id
                        );
                        if import.status.is_final() {
                            finished.insert(import.id.clone());
                        }
                        states.entry(import.id.clone()).or_default().push(*import);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            for history in states.values() {
                assert_monotonic(history);
                assert_eq!(history.last().unwrap().status, ImportStatus::Completed);
            }
        }
    });
    futures_util::future::join_all(checks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_leaves_the_import_running_and_a_new_socket_catches_up() {
    let w = world(&[]).await;
    w.content.hold("held");
    let (mut tab1, _) = w.socket("alice").await;
    let (mut tab2, _) = w.socket("alice").await;
    let created = w
        .api
        .create_ok(&w.token("alice"), &w.content.video_url("held", MIB))
        .await;
    // Both tabs see it start.
    for tab in [&mut tab1, &mut tab2] {
        wait_for(tab, &created.id, |i| i.status == ImportStatus::Downloading).await;
    }
    // Log out: every socket closes normally.
    tab1.close().await;
    tab2.close().await;
    w.content.release("held");
    // Signing in again: the snapshot, or the next live change, shows it completed.
    let (mut again, snapshot) = w.socket("alice").await;
    let in_snapshot = snapshot
        .iter()
        .find(|i| i.id == created.id)
        .expect("import in snapshot");
    if in_snapshot.status != ImportStatus::Completed {
        let done = wait_for(&mut again, &created.id, |i| i.status.is_final()).await;
        assert!(done.version > in_snapshot.version);
        assert_eq!(done.status, ImportStatus::Completed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_reconnects_and_loses_nothing() {
    let w = world(&[]).await;
    w.content.hold("net");
    let (mut ws, _) = w.socket("alice").await;
    let created = w
        .api
        .create_ok(
            &w.token("alice"),
            &w.content.url(&format!("/video/net?size={}&pace_ms=1", MIB)),
        )
        .await;
    let seen = wait_for(&mut ws, &created.id, |i| {
        i.status == ImportStatus::Downloading
    })
    .await;
    ws.drop_connection(); // no close frame: the network went away
    w.content.release("net");
    let (mut back, snapshot) = w.socket("alice").await;
    let latest = snapshot
        .iter()
        .find(|i| i.id == created.id)
        .expect("in snapshot")
        .clone();
    assert!(
        latest.version >= seen.version,
        "snapshot is never older than what we saw"
    );
    let final_state = if latest.status.is_final() {
        latest
    } else {
        let rest = follow_to_final(&mut back, &created.id).await;
        assert!(
            rest.first().unwrap().version > latest.version,
            "live messages continue after the snapshot"
        );
        rest.last().unwrap().clone()
    };
    assert_eq!(final_state.status, ImportStatus::Completed);
    assert_eq!(final_state.progress, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_download_and_removes_partial_files() {
    let w = world(&[]).await;
    w.content.hold("cancel-me");
    let token = w.token("alice");
    let (mut ws, _) = w.socket("alice").await;
    let url = w.content.url(&format!(
        "/video/cancel-me?size={}&hold_after=65536",
        4 * MIB
    ));
    let created = w.api.create_ok(&token, &url).await;
    wait_for(&mut ws, &created.id, |i| i.bytes_done > 0).await;
    let (status, body) = w
        .api
        .post(&token, &format!("/api/imports/{}/cancel", created.id))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "cancelled");
    let cancelled = wait_for(&mut ws, &created.id, |i| i.status.is_final()).await;
    assert_eq!(cancelled.status, ImportStatus::Cancelled);
    let (status, body) = w
        .api
        .post(&token, &format!("/api/imports/{}/cancel", created.id))
        .await;
    assert_eq!(status, 409, "{body}");
    let dir = w.server.import_dir(&created.id);
    wait_until(|| !dir.exists()).await;
    // Nothing more is said about it after the final state.
    w.content.release("cancel-me");
    let (status, _) = w
        .api
        .delete(&token, &format!("/api/imports/{}", created.id))
        .await;
    assert_eq!(status, 204);
    let (status, _) = w
        .api
        .get(&token, &format!("/api/imports/{}", created.id))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_download_resumes_with_the_next_attempt() {
    let mut w = world(&[]).await;
    w.content.hold("restart");
    let (mut ws, _) = w.socket("alice").await;
    let created = w
        .api
        .create_ok(&w.token("alice"), &w.content.video_url("restart", MIB))
        .await;
    wait_for(&mut ws, &created.id, |i| {
        i.status == ImportStatus::Downloading
    })
    .await;

    assert_eq!(w.server.stop().await, Some(0), "clean exit on SIGTERM");
    let (code, _) = ws.closed().await;
    assert_eq!(code, 1001, "sockets are told the server is going away");
    w.server.restart().await;
    w.content.release("restart");
    let (mut ws, snapshot) = w.socket("alice").await;
    // The claim loop resumes it right after start: from the snapshot, or
    // as the next change.
    let resumed = in_snapshot_or_next(&mut ws, &snapshot, &created.id, |i| i.attempt == 2).await;
    let done = if resumed.status.is_final() {
        resumed.clone()
    } else {
        follow_to_final(&mut ws, &created.id).await.pop().unwrap()
    };
    assert_eq!(done.status, ImportStatus::Completed);
    assert_eq!(done.attempt, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_interrupted_three_times_fails_instead_of_hanging() {
    let mut w = world(&[]).await;
    w.content.hold("crashy");
    let (mut ws, _) = w.socket("alice").await;
    let created = w
        .api
        .create_ok(&w.token("alice"), &w.content.video_url("crashy", MIB))
        .await;
    wait_for(&mut ws, &created.id, |i| {
        i.status == ImportStatus::Downloading
    })
    .await;
    for attempt in 2..=3 {
        w.server.kill().await;
        w.server.restart().await;
        let (mut again, snapshot) = w.socket("alice").await;
        in_snapshot_or_next(&mut again, &snapshot, &created.id, |i| {
            i.status == ImportStatus::Downloading && i.attempt == attempt
        })
        .await;
    }
    w.server.kill().await;
    w.server.restart().await;
    // The claim loop settles it right after start: from the snapshot, or
    // as the next change. It must fail, not start a fourth attempt.
    let (mut last, snapshot) = w.socket("alice").await;
    let failed =
        in_snapshot_or_next(&mut last, &snapshot, &created.id, |i| i.status.is_final()).await;
    assert_eq!(failed.status, ImportStatus::Failed);
    assert_eq!(failed.attempt, 3);
    assert_eq!(failed.error.as_ref().unwrap().code, "interrupted");
    w.content.release("crashy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_destinations_are_refused_at_creation() {
    let w = world_with(vec![]).await; // REELTIME_IMPORT_ALLOW_PRIVATE off; nothing is downloaded
    let token = w.token("alice");
    let port = w.content.addr.port();
    for url in [
        format!("http://127.0.0.1:{port}/video/a"),
        format!("http://localhost:{port}/video/a"),
        "http://[::1]/a.mp4".to_string(),
        "http://[::ffff:127.0.0.1]/a.mp4".to_string(),
        "http://169.254.169.254/latest/meta-data".to_string(),
        "http://10.1.2.3/a.mp4".to_string(),
        "http://192.168.0.1/a.mp4".to_string(),
        "http://100.64.0.1/a.mp4".to_string(),
        "http://0.0.0.0/a.mp4".to_string(),
        "http://2130706433/a.mp4".to_string(),
    ] {
        let (status, body) = w.api.create_import(&token, &url).await;
        assert_eq!(status, 400, "{url} must be refused: {body}");
        assert_eq!(body["error"]["code"], "url_not_allowed", "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_to_private_addresses_fail_the_import() {
    // Only 127.0.0.1 is excepted: it plays the public host that redirects.
    let w = world_with(common::pairs(&[
        ("REELTIME_IMPORT_ALLOW_HOSTS", "127.0.0.1"),
        ("REELTIME_MEDIA_PROCESSING", "off"),
    ]))
    .await;
    let token = w.token("alice");
    let (mut ws, _) = w.socket("alice").await;
    let port = w.content.addr.port();
    let ok = w
        .api
        .create_ok(&token, &w.content.video_url("fine", 1000))
        .await;
    assert_eq!(
        follow_to_final(&mut ws, &ok.id).await.pop().unwrap().status,
        ImportStatus::Completed
    );
    for target in [
        format!("http://localhost:{port}/video/a?size=1000"),
        format!("http://127.0.0.2:{port}/video/a?size=1000"),
        format!("http://[::1]:{port}/video/a?size=1000"),
    ] {
        let url = w
            .content
            .url(&format!("/redirect?to={}", urlencode(&target)));
        let created = w.api.create_ok(&token, &url).await;
        let last = follow_to_final(&mut ws, &created.id).await.pop().unwrap();
        assert_eq!(last.status, ImportStatus::Failed, "{target}");
        assert_eq!(
            last.error.as_ref().unwrap().code,
            "url_not_allowed",
            "{target}"
        );
        assert!(!w.server.import_dir(&created.id).exists());
    }
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_that_are_not_videos_too_large_or_missing_fail_with_their_code() {
    let w = world(&[("REELTIME_IMPORT_MAX_BYTES", "256KiB")]).await;
    let token = w.token("alice");
    let (mut ws, _) = w.socket("alice").await;
    let cases = [
        (w.content.url("/html"), "not_a_video"),
        (
            w.content
                .put_file("fake.mp4", "just some text, renamed .mp4".repeat(40)),
            "not_a_video",
        ),
        (w.content.video_url("big", MIB), "too_large"),
        (
            w.content
                .url(&format!("/video/bigchunked?size={MIB}&chunked=true")),
            "too_large",
        ),
        (
            w.content.url("/video/liar?size=1000&claim=5000"),
            "download_failed",
        ),
        (w.content.url("/status/404"), "download_failed"),
        (
            format!("http://127.0.0.1:{}/nothing-listens", free_port()),
            "download_failed",
        ),
    ];
    for (url, code) in cases {
        let created = w.api.create_ok(&token, &url).await;
        let last = follow_to_final(&mut ws, &created.id).await.pop().unwrap();
        assert_eq!(last.status, ImportStatus::Failed, "{url}");
        let error = last.error.expect("error set");
        assert_eq!(error.code, code, "{url}: {}", error.message);
        assert!(!error.message.is_empty());
        assert!(
            !w.server.import_dir(&created.id).exists(),
            "partial file removed for {url}"
        );
    }
    // A video just under the limit still goes through.
    let small = w
        .api
        .create_ok(&token, &w.content.put_file("ok.mp4", mp4_like(200 * 1024)))
        .await;
    assert_eq!(
        follow_to_final(&mut ws, &small.id)
            .await
            .pop()
            .unwrap()
            .status,
        ImportStatus::Completed
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_holds_unfinished_imports_and_the_recent_finished_ones() {
    let w: World = world(&[]).await;
    let token = w.token("alice");
    let (mut ws, _) = w.socket("alice").await;
    let done = w
        .api
        .create_ok(&token, &w.content.video_url("s1", 1000))
        .await;
    follow_to_final(&mut ws, &done.id).await;
    w.content.hold("s2");
    let running = w
        .api
        .create_ok(&token, &w.content.video_url("s2", 1000))
        .await;
    let (_, snapshot) = w.socket("alice").await;
    let ids: Vec<&str> = snapshot.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, [running.id.as_str(), done.id.as_str()]);
    let (_, other) = w.socket("bob").await;
    assert!(other.is_empty());
    w.content.release("s2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_messages_match_rest_objects_field_for_field() {
    let w = world(&[]).await;
    let (mut ws, _) = w.socket("alice").await;
    let created = w
        .api
        .create_ok(&w.token("alice"), &w.content.video_url("shape", 1000))
        .await;
    let first = ws.message().await;
    let ServerMessage::Import { import } = first else {
        panic!("expected import, got {first:?}")
    };
    assert_eq!(
        *import, created,
        "the queued state goes to sockets as created"
    );
    let raw = serde_json::to_value(&*import).unwrap();
    for field in [
        "id",
        "status",
        "progress",
        "bytes_done",
        "bytes_total",
        "version",
        "attempt",
        "source_url",
        "title",
        "error",
        "result",
        "created_at",
        "updated_at",
    ] {
        assert!(raw.get(field).is_some(), "field {field} present");
    }
    let created_at = raw["created_at"].as_str().unwrap();
    assert!(
        created_at.ends_with('Z') && created_at.len() == "2026-01-01T00:00:00.000Z".len(),
        "{created_at}"
    );
    let _ = WsClient::close(ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_imports_exist_only_when_switched_on() {
    let off = world(&[]).await;
    let (status, body) = off
        .api
        .create_import(&off.token("alice"), "synthetic:?duration_ms=500&steps=5")
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("url_not_allowed"))
    );

    let on = world(&[("REELTIME_SYNTHETIC_IMPORTS", "1")]).await;
    let token = on.token("alice");
    let (mut ws, _) = on.socket("alice").await;
    let (status, _) = on.api.create_import(&token, "synthetic:?steps=0").await;
    assert_eq!(status, 400);
    let created = on
        .api
        .create_ok(&token, "synthetic:?duration_ms=500&steps=5")
        .await;
    let states = follow_to_final(&mut ws, &created.id).await;
    let progress: Vec<f64> = states
        .iter()
        .filter(|s| s.status != ImportStatus::Queued)
        .filter_map(|s| s.progress)
        .collect();
    assert_eq!(progress, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
    assert_eq!(states.last().unwrap().status, ImportStatus::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_imports_say_where_they_stand_in_line() {
    let w = world(&[("REELTIME_DOWNLOAD_CONCURRENCY", "1")]).await;
    let token = w.token("alice");
    let (mut ws, _) = w.socket("alice").await;
    w.content.hold("first");
    let first = w
        .api
        .create_ok(&token, &w.content.video_url("first", 1000))
        .await;
    wait_for(&mut ws, &first.id, |i| {
        i.status == ImportStatus::Downloading
    })
    .await;
    let second = w
        .api
        .create_ok(&token, &w.content.video_url("second", 1000))
        .await;
    let third = w
        .api
        .create_ok(&token, &w.content.video_url("third", 1000))
        .await;
    wait_for(&mut ws, &second.id, |i| i.queue_position == Some(1)).await;
    wait_for(&mut ws, &third.id, |i| i.queue_position == Some(2)).await;
    let (_, listed) = w
        .api
        .get(&token, &format!("/api/imports/{}", third.id))
        .await;
    assert_eq!(listed["queue_position"], 2);
    // The first one finishing moves the line up.
    w.content.release("first");
    let moved = wait_for(&mut ws, &third.id, |i| i.queue_position == Some(1)).await;
    assert_eq!(moved.status, ImportStatus::Queued);
    for id in [&second.id, &third.id] {
        let done = follow_to_final(&mut ws, id).await.pop().unwrap();
        assert_eq!(done.status, ImportStatus::Completed);
        assert_eq!(done.queue_position, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_five_redirects_are_followed() {
    let w = world(&[]).await;
    let token = w.token("alice");
    let (mut ws, _) = w.socket("alice").await;
    let chain = |hops: usize| {
        let mut url = w.content.video_url("end", 1000);
        for _ in 0..hops {
            url = w.content.url(&format!("/redirect?to={}", urlencode(&url)));
        }
        url
    };
    let five = w.api.create_ok(&token, &chain(5)).await;
    let done = follow_to_final(&mut ws, &five.id).await.pop().unwrap();
    assert_eq!(done.status, ImportStatus::Completed, "{:?}", done.error);
    let six = w.api.create_ok(&token, &chain(6)).await;
    let failed = follow_to_final(&mut ws, &six.id).await.pop().unwrap();
    assert_eq!(failed.status, ImportStatus::Failed);
    let error = failed.error.unwrap();
    assert_eq!(error.code, "download_failed");
    assert!(error.message.contains("redirects"), "{}", error.message);
}
