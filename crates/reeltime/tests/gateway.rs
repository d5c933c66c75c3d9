//! The progress socket's life: refresh, expiry, heartbeats, bad input,
//! limits and shutdown, against the real server process.

mod common;

use std::time::Duration;

use common::{expect_close, world};
use reeltime_protocol::ServerMessage;
use reeltime_testkit::{Event, WsClient, now};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_carries_the_session_facts() {
    let w = world(&[("REELTIME_HEARTBEAT_SECS", "7")]).await;
    let token = w.issuer.token("alice", 120);
    let (_ws, ready, snapshot) = WsClient::open(&w.server.ws(), &token).await;
    let ServerMessage::Ready {
        user_id,
        connection_id,
        expires_at,
        heartbeat_ms,
        protocol,
    } = ready
    else {
        unreachable!()
    };
    assert_eq!(user_id, "alice");
    assert!(!connection_id.is_empty());
    assert!((expires_at - (now() + 120)).abs() <= 2);
    assert_eq!(heartbeat_ms, 7000);
    assert_eq!(protocol, 1);
    assert!(snapshot.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_band_refresh_keeps_the_socket_past_the_first_expiry() {
    let w = world(&[("REELTIME_CLOCK_SKEW_SECS", "0")]).await;
    let short = w.issuer.token("alice", 3);
    let (mut ws, _, _) = WsClient::open(&w.server.ws(), &short).await;
    let fresh = w.issuer.token("alice", 120);
    ws.send_json(&serde_json::json!({"type": "auth", "token": fresh}))
        .await;
    match ws.message().await {
        ServerMessage::AuthOk { expires_at } => assert!(expires_at >= now() + 100),
        other => panic!("expected auth_ok, got {other:?}"),
    }
    // Well past the first token's expiry, the socket is still open and answers.
    let past_first_expiry = Duration::from_secs(5);
    assert!(
        ws.next_within(past_first_expiry).await.is_none(),
        "nothing, in particular no 4001, arrives"
    );
    ws.send_json(&serde_json::json!({"type": "ping"})).await;
    assert_eq!(ws.message().await, ServerMessage::Pong);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_closes_with_4001() {
    let w = world(&[("REELTIME_CLOCK_SKEW_SECS", "1")]).await;
    let token = w.issuer.token("alice", 2);
    let (mut ws, _, _) = WsClient::open(&w.server.ws(), &token).await;
    let started = now();
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!((code, reason.as_str()), (4001, "token expired"));
    assert!(now() - started >= 2, "not before exp + skew");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshing_as_someone_else_or_with_a_bad_token_closes_1008() {
    let w = world(&[]).await;
    let (mut ws, _) = w.socket("alice").await;
    ws.send_json(&serde_json::json!({"type": "auth", "token": w.token("mallory")}))
        .await;
    assert_eq!(expect_close(&mut ws).await, (1008, "user changed".into()));

    let (mut ws, _) = w.socket("alice").await;
    let forged = w.issuer.rogue.sign(&w.issuer.claims("alice", 60));
    ws.send_json(&serde_json::json!({"type": "auth", "token": forged}))
        .await;
    assert_eq!(expect_close(&mut ws).await, (1008, "bad signature".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_errors_then_closes() {
    let w = world(&[]).await;
    let (mut ws, _) = w.socket("alice").await;
    ws.send_text("this is not json").await;
    assert_error(&mut ws, "bad_json").await;
    ws.send_text(r#"{"type":"subscribe","channel":"bob"}"#)
        .await;
    assert_error(&mut ws, "unknown_type").await;
    ws.send_text("[1,2,3]").await;
    assert_error(&mut ws, "bad_message").await;
    // Still open after errors.
    ws.send_json(&serde_json::json!({"type": "ping"})).await;
    assert_eq!(ws.message().await, ServerMessage::Pong);
    // More than 10 bad messages in a minute: closed.
    for _ in 0..8 {
        ws.send_text("nope").await;
    }
    for _ in 0..7 {
        assert_error(&mut ws, "bad_json").await;
    }
    assert_eq!(
        expect_close(&mut ws).await,
        (1008, "too many bad messages".into())
    );

    let (mut ws, _) = w.socket("alice").await;
    ws.send_binary(vec![1, 2, 3]).await;
    assert_eq!(expect_close(&mut ws).await.0, 1003);

    let (mut ws, _) = w.socket("alice").await;
    ws.send_raw_text(vec![b'{', 0xFF, 0xFE, b'}']).await;
    assert_eq!(expect_close(&mut ws).await, (1007, "invalid utf-8".into()));

    let (mut ws, _) = w.socket("alice").await;
    ws.send_text(&format!(
        r#"{{"type":"ping","pad":"{}"}}"#,
        "x".repeat(17 * 1024)
    ))
    .await;
    assert_eq!(expect_close(&mut ws).await.0, 1009);

    // The server is unharmed and other sockets work.
    let (mut ok, _) = w.socket("alice").await;
    ok.send_json(&serde_json::json!({"type": "ping"})).await;
    assert_eq!(ok.message().await, ServerMessage::Pong);
}

async fn assert_error(ws: &mut WsClient, expected: &str) {
    match ws.message().await {
        ServerMessage::Error { code, message } => {
            assert_eq!(code, expected);
            assert!(!message.is_empty());
        }
        other => panic!("expected error {expected}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_close_1013() {
    let w = world(&[
        ("REELTIME_MAX_CONNECTIONS_PER_USER", "2"),
        ("REELTIME_MAX_CONNECTIONS", "3"),
    ])
    .await;
    let (_a1, _) = w.socket("alice").await;
    let (_a2, _) = w.socket("alice").await;
    let mut a3 = WsClient::connect_query(&w.server.ws(), &w.token("alice")).await;
    assert_eq!(
        expect_close(&mut a3).await,
        (1013, "too many connections".into())
    );
    let (_b1, _) = w.socket("bob").await;
    let mut c1 = WsClient::connect_query(&w.server.ws(), &w.token("carol")).await;
    assert_eq!(
        expect_close(&mut c1).await,
        (1013, "too many connections".into())
    );
    // A slot frees when a socket closes.
    _a1.close().await;
    let mut retry = None;
    for _ in 0..100 {
        let mut c = WsClient::connect_query(&w.server.ws(), &w.token("carol")).await;
        match c.next().await {
            Event::Message(ServerMessage::Ready { .. }) => {
                retry = Some(c);
                break;
            }
            Event::Closed { code: 1013, .. } => tokio::task::yield_now().await,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(retry.is_some(), "a freed slot is reusable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_pings_and_drops_a_silent_peer() {
    let w = world(&[("REELTIME_HEARTBEAT_SECS", "1")]).await;
    // A client that answers pings (tungstenite does, while it reads) stays.
    let (mut live, _) = w.socket("alice").await;
    // A client that never reads never answers pings.
    let (silent, _) = w.socket("bob").await;
    let metrics = format!("{}/metrics", w.server.http());
    let deadline = tokio::time::Instant::now() + reeltime_testkit::WAIT;
    loop {
        // Reading keeps `live` answering pings while we watch the gauge.
        assert!(live.next_within(Duration::from_millis(200)).await.is_none());
        let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
        if text.contains("reeltime_open_connections 1\n") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "silent peer not dropped:\n{text}"
        );
    }
    drop(silent);
    live.send_json(&serde_json::json!({"type": "ping"})).await;
    assert_eq!(live.message().await, ServerMessage::Pong);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_every_socket_with_1001_and_exits() {
    let mut w = world(&[("REELTIME_SHUTDOWN_GRACE_SECS", "5")]).await;
    let mut sockets = Vec::new();
    for user in ["alice", "alice", "bob"] {
        sockets.push(w.socket(user).await.0);
    }
    let started = std::time::Instant::now();
    assert_eq!(w.server.stop().await, Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(5 + 5),
        "exits within the grace period"
    );
    for mut ws in sockets {
        assert_eq!(ws.closed().await, (1001, "server shutting down".into()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_close_is_answered_so_the_browser_sees_a_clean_1000() {
    let w = world(&[]).await;
    let (ws, _) = w.socket("alice").await;
    assert_eq!(ws.close_and_read_reply().await, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_slows_nobody_and_is_dropped() {
    // Each synthetic import takes a download slot: make room for all 200.
    let w = world(&[
        ("REELTIME_SYNTHETIC_IMPORTS", "1"),
        ("REELTIME_DOWNLOAD_CONCURRENCY", "1000"),
    ])
    .await;
    let token = w.token("alice");
    let (mut fast, _) = w.socket("alice").await;
    let mut slow = WsClient::connect_with_small_buffer(&w.server.ws(), &token).await;
    assert!(matches!(slow.message().await, ServerMessage::Ready { .. }));
    // From here on `slow` never reads. Flood alice with changes: 200
    // imports making 10 changes a second each for 20 s.
    let mut ids = std::collections::HashSet::new();
    for _ in 0..200 {
        let created = w
            .api
            .create_ok(&token, "synthetic:?duration_ms=20000&steps=200")
            .await;
        ids.insert(created.id);
    }
    // The reading socket gets every import to its final state on time...
    let mut finished = std::collections::HashSet::new();
    while finished.len() < ids.len() {
        if let Event::Message(ServerMessage::Import { import }) = fast.next().await
            && import.status.is_final()
        {
            finished.insert(import.id);
        }
    }
    // ...and the stalled one was closed as too slow.
    let metrics = format!("{}/metrics", w.server.http());
    let deadline = tokio::time::Instant::now() + reeltime_testkit::WAIT;
    loop {
        let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
        if text.contains("reeltime_slow_client_closes_total 1\n") {
            assert!(text.contains("reeltime_open_connections 1\n"), "{text}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slow client not dropped:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(slow);
}

/// Two `?token=` values are refused the way every token problem is: 1008
/// after the upgrade, not an HTTP error the browser cannot read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_query_token_closes_with_1008() {
    let w = world(&[]).await;
    let alice = w.issuer.token("alice", 120);
    let bob = w.issuer.token("bob", 120);
    let url = format!("{}?token={alice}&token={bob}", w.server.ws());
    let mut ws = WsClient::connect_raw(&url, None).await;
    assert_eq!(
        expect_close(&mut ws).await,
        (1008, "duplicate token".into())
    );
}

/// Invalid UTF-8 in a text frame gets a close frame (1007), before and
/// after authentication.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_closes_with_1007_before_authentication() {
    let w = world(&[]).await;
    let mut ws = WsClient::connect_raw(&w.server.ws(), None).await;
    ws.send_raw_text(b"{\"type\":\"auth\",\"token\":\"\xC3\x28\"}".to_vec())
        .await;
    assert_eq!(expect_close(&mut ws).await, (1007, "invalid utf-8".into()));
}
