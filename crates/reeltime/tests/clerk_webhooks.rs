//! Clerk webhooks in, against the real server: messages signed the Svix
//! way by the test kit with a test secret (good, tampered, stale,
//! replayed), a signed-out session closing exactly its sockets on two
//! nodes over the Redis bus and refusing its later tokens, and a deleted
//! user losing sockets, tokens, imports and files.

mod common;

use std::time::{Duration, Instant};

use common::{expect_close, pairs, shared_nodes, world_with};
use reeltime_protocol::ServerMessage;
use reeltime_testkit::{Event, SvixSigner, TestIssuer, WAIT, WebhookReceiver, WsClient, now};
use serde_json::{Value, json};

/// A token of `sub` in Clerk session `sid`.
fn session_token(issuer: &TestIssuer, sub: &str, sid: &str) -> String {
    issuer.token_with(sub, |claims| claims["sid"] = json!(sid))
}

/// Posts `body` to `/api/clerk/webhook` of `base` with `headers`.
async fn post(base: &str, headers: &[(String, String)], body: &[u8]) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/api/clerk/webhook"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Posts a correctly signed Clerk event.
async fn send(base: &str, signer: &SvixSigner, id: &str, event: &Value) -> (u16, Value) {
    let body = event.to_string();
    post(
        base,
        &signer.headers(id, now(), body.as_bytes()),
        body.as_bytes(),
    )
    .await
}

fn session_ended(sid: &str, user: &str) -> Value {
    json!({"object": "event", "type": "session.ended",
           "data": {"object": "session", "id": sid, "user_id": user, "status": "ended"}})
}

/// The socket is still served: a ping gets its pong.
async fn assert_alive(ws: &mut WsClient) {
    ws.send_json(&json!({"type": "ping"})).await;
    match ws.next_within(WAIT).await {
        Some(Event::Message(ServerMessage::Pong)) => {}
        other => panic!("expected a pong from a live socket, got {other:?}"),
    }
}

/// The socket is closed 1008 with `reason` within a second (after any
/// changes queued before it).
async fn assert_closed_within_a_second(ws: &mut WsClient, reason: &str, since: Instant) {
    loop {
        match ws.next_within(Duration::from_secs(5)).await {
            Some(Event::Closed { code, reason: got }) => {
                assert_eq!((code, got.as_str()), (1008, reason));
                break;
            }
            Some(Event::Message(
                ServerMessage::Import { .. } | ServerMessage::ImportRemoved { .. },
            )) => continue,
            other => panic!("expected a 1008 close, got {other:?}"),
        }
    }
    assert!(
        since.elapsed() < Duration::from_secs(1),
        "closed after {:?}",
        since.elapsed()
    );
}

/// A connect with `token` is refused 1008 `reason` before `ready`.
async fn assert_refused(ws_url: &str, token: &str, reason: &str) {
    let mut ws = WsClient::connect_query(ws_url, token).await;
    assert_eq!(ws.closed().await, (1008, reason.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_are_checked_and_each_message_acts_once() {
    let signer = SvixSigner::new();
    let world = world_with(pairs(&[
        ("REELTIME_IMPORT_ALLOW_PRIVATE", "1"),
        ("REELTIME_MEDIA_PROCESSING", "off"),
        ("CLERK_WEBHOOK_SIGNING_SECRET", &signer.secret),
    ]))
    .await;
    let base = world.server.http();
    let event = session_ended("sess_a", "alice");
    let body = event.to_string();

    // Tampered: signed, then changed.
    let mut headers = signer.headers("msg_1", now(), body.as_bytes());
    let tampered = body.replace("sess_a", "sess_b");
    assert_eq!(post(&base, &headers, tampered.as_bytes()).await.0, 400);
    // Signed with another secret.
    let other = SvixSigner::new();
    let (status, answer) = post(
        &base,
        &other.headers("msg_1", now(), body.as_bytes()),
        body.as_bytes(),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("bad_signature"))
    );
    // Stale: more than 5 minutes old, or ahead.
    for skew in [-400, 400] {
        let stale = signer.headers("msg_1", now() + skew, body.as_bytes());
        let (status, answer) = post(&base, &stale, body.as_bytes()).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some("stale_timestamp"))
        );
    }
    // Missing headers.
    headers.retain(|(name, _)| name != "svix-signature");
    assert_eq!(post(&base, &headers, body.as_bytes()).await.0, 400);

    // None of those acted: a token of sess_a still connects.
    let alice_a = session_token(&world.issuer, "alice", "sess_a");
    let (mut a, _, _) = WsClient::open(&world.server.ws(), &alice_a).await;
    let (mut b, _, _) = WsClient::open(
        &world.server.ws(),
        &session_token(&world.issuer, "alice", "sess_b"),
    )
    .await;

    // The good one acts: sess_a's socket closes, sess_b's stays.
    let sent = Instant::now();
    let (status, answer) = send(&base, &signer, "msg_1", &event).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("handled")));
    assert_closed_within_a_second(&mut a, "session revoked", sent).await;
    assert_alive(&mut b).await;
    // Later tokens of sess_a are refused, on the socket and on REST.
    assert_refused(&world.server.ws(), &alice_a, "session revoked").await;
    let (status, _) = world.api.get(&alice_a, "/api/me").await;
    assert_eq!(status, 401);
    // An in-band refresh with a token of the revoked session is refused too.
    b.send_json(&json!({"type": "auth", "token": alice_a}))
        .await;
    assert_eq!(expect_close(&mut b).await, (1008, "session revoked".into()));

    // Replayed (same svix-id, freshly signed): 200, not acted on again.
    let (status, answer) = send(&base, &signer, "msg_1", &event).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("duplicate"))
    );
    assert_eq!(
        world
            .server
            .log()
            .matches("clerk webhook already handled")
            .count(),
        1
    );
    assert_eq!(
        world
            .server
            .log()
            .matches("session revoked; its sockets on this node closed")
            .count(),
        1,
        "acted on once"
    );

    // user.updated: the stored email follows the primary address.
    let token = world.token("carol");
    let (status, _) = world.api.get(&token, "/api/me").await;
    assert_eq!(status, 200);
    let updated = json!({"type": "user.updated", "data": {
        "id": "carol", "primary_email_address_id": "idn_2",
        "email_addresses": [
            {"id": "idn_1", "email_address": "old@example.com"},
            {"id": "idn_2", "email_address": "carol@example.com"}]}});
    assert_eq!(send(&base, &signer, "msg_2", &updated).await.0, 200);
    let (_, me) = world.api.get(&token, "/api/me").await;
    assert_eq!(me["email"], "carol@example.com");

    // Other events are answered and ignored.
    let (status, answer) = send(
        &base,
        &signer,
        "msg_3",
        &json!({"type": "email.created", "data": {}}),
    )
    .await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("ignored")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_user_loses_sockets_tokens_imports_and_files() {
    let signer = SvixSigner::new();
    let receiver = WebhookReceiver::start().await;
    let mut env = pairs(&[
        ("REELTIME_IMPORT_ALLOW_PRIVATE", "1"),
        ("REELTIME_MEDIA_PROCESSING", "off"),
        ("CLERK_WEBHOOK_SIGNING_SECRET", &signer.secret),
    ]);
    env.extend(receiver.env());
    let world = world_with(env).await;
    let token = world.token("bob");
    let (mut ws, _) = world.socket("bob").await;
    let done = world
        .api
        .create_ok(&token, &world.content.video_url("done.mp4", 32 << 10))
        .await;
    common::follow_to_final(&mut ws, &done.id).await;
    world.content.hold("held.mp4");
    let running = world
        .api
        .create_ok(&token, &world.content.video_url("held.mp4", 32 << 10))
        .await;
    let (mut other, _) = world.socket("dave").await;

    let sent = Instant::now();
    let (status, _) = send(
        &world.server.http(),
        &signer,
        "msg_del",
        &json!({"type": "user.deleted", "data": {"id": "bob", "deleted": true, "object": "user"}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_closed_within_a_second(&mut ws, "user deleted", sent).await;
    assert_alive(&mut other).await;
    assert_refused(&world.server.ws(), &token, "user deleted").await;

    // The running import was cancelled, both were deleted (webhooks say so).
    let received = receiver
        .wait_until(WAIT, |r| {
            [&done.id, &running.id].iter().all(|id| {
                r.iter()
                    .any(|e| e.import_id() == id.as_str() && e.event_type() == "import.deleted")
            })
        })
        .await;
    assert!(
        received
            .iter()
            .any(|e| e.import_id() == running.id && e.event_type() == "import.cancelled")
    );
    world.content.release("held.mp4");
    assert!(!world.server.import_dir(&done.id).exists(), "files removed");
    assert!(
        !world.server.import_dir(&running.id).exists(),
        "files removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_session_closes_on_every_node_and_spares_the_others() {
    let signer = SvixSigner::new();
    let issuer = TestIssuer::start().await;
    let mut env = issuer.env();
    env.extend(pairs(&[("CLERK_WEBHOOK_SIGNING_SECRET", &signer.secret)]));
    let cluster = shared_nodes(2, env).await;
    let nodes = &cluster.nodes;
    let laptop = session_token(&issuer, "alice", "sess_laptop");
    let phone = session_token(&issuer, "alice", "sess_phone");
    let (mut laptop0, _, _) = WsClient::open(&nodes[0].ws(), &laptop).await;
    let (mut laptop1, _, _) = WsClient::open(&nodes[1].ws(), &laptop).await;
    let (mut phone1, _, _) = WsClient::open(&nodes[1].ws(), &phone).await;

    // Signed out on the laptop; the webhook reaches node 0 only.
    let sent = Instant::now();
    let (status, _) = send(
        &nodes[0].http(),
        &signer,
        "msg_out",
        &session_ended("sess_laptop", "alice"),
    )
    .await;
    assert_eq!(status, 200);
    assert_closed_within_a_second(&mut laptop0, "session revoked", sent).await;
    assert_closed_within_a_second(&mut laptop1, "session revoked", sent).await;
    assert_alive(&mut phone1).await;
    for node in nodes {
        assert_refused(&node.ws(), &laptop, "session revoked").await;
    }
    // The phone's session still connects anywhere.
    let (mut phone0, _, _) = WsClient::open(&nodes[0].ws(), &phone).await;
    assert_alive(&mut phone0).await;
}
