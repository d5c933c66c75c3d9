//! Token verification end to end: the real `reeltime` binary on a free port,
//! a test issuer serving a real JWKS over HTTP, and real WebSocket and HTTP
//! clients. Every rejection is checked by its exact close code and reason
//! (WebSocket) or its 401 answer (REST).

mod common;

use common::{binary, expect_close, pairs};
use reeltime_protocol::{PROTOCOL_VERSION, ServerMessage};
use reeltime_testkit::{Api, ServerProcess, SigningKey, TestIssuer, WAIT, WsClient, now};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// Shared helpers (on top of `common`)
// ---------------------------------------------------------------------------

const APP: &str = "https://app.example.com";
const EVIL: &str = "https://evil.example";
/// The server's default heartbeat (REELTIME_HEARTBEAT_SECS = 25).
const DEFAULT_HEARTBEAT_MS: u64 = 25_000;

/// Starts a server pointed at `issuer` (plus `extra` settings) and waits
/// until its first JWKS fetch at start has finished, successfully or not,
/// so that `issuer.fetches()` is stable from here on.
async fn start_with(issuer: &TestIssuer, extra: &[(&str, &str)]) -> ServerProcess {
    let mut env = issuer.env();
    env.extend(pairs(extra));
    let server = ServerProcess::start(binary(), &env).await;
    server
        .wait_for_log("JWKS fetch", WAIT)
        .await
        .unwrap_or_else(|| panic!("no JWKS fetch at start; log:\n{}", server.log()));
    server
}

/// A fresh issuer and a server verifying its tokens.
async fn setup(extra: &[(&str, &str)]) -> (TestIssuer, ServerProcess) {
    let issuer = TestIssuer::start().await;
    let server = start_with(&issuer, extra).await;
    (issuer, server)
}

/// Claims for `sub` (60 s life) changed by `edit`, signed with the
/// published key; returns the token and its `exp`.
fn mint(issuer: &TestIssuer, sub: &str, edit: impl FnOnce(&mut Value)) -> (String, i64) {
    let mut claims = issuer.claims(sub, 60);
    edit(&mut claims);
    let exp = claims["exp"].as_i64().expect("exp in claims");
    (issuer.key.sign(&claims), exp)
}

/// A good token for `sub` and its `exp`.
fn good(issuer: &TestIssuer, sub: &str) -> (String, i64) {
    mint(issuer, sub, |_| {})
}

/// A claims edit putting `exp` `secs_ago` seconds in the past.
fn expired_by(secs_ago: i64) -> impl FnOnce(&mut Value) {
    move |claims| claims["exp"] = json!(now() - secs_ago)
}

/// Sets one claim.
fn set(name: &'static str, value: Value) -> impl FnOnce(&mut Value) {
    move |claims| claims[name] = value
}

/// Reads `ready` (checking every field we know) and then `snapshot`.
async fn assert_ready(client: &mut WsClient, sub: &str, exp: i64) {
    match client.message().await {
        ServerMessage::Ready {
            user_id,
            connection_id,
            expires_at,
            heartbeat_ms,
            protocol,
        } => {
            assert_eq!(user_id, sub);
            assert!(!connection_id.is_empty(), "empty connection_id");
            assert_eq!(expires_at, exp);
            assert_eq!(heartbeat_ms, DEFAULT_HEARTBEAT_MS);
            assert_eq!(protocol, PROTOCOL_VERSION);
            assert_eq!(protocol, 1);
        }
        other => panic!("expected ready, got {other:?}"),
    }
    match client.message().await {
        ServerMessage::Snapshot { .. } => {}
        other => panic!("expected snapshot, got {other:?}"),
    }
}

/// Opens with `?token=` and expects to be let in.
async fn assert_accepted(server: &ServerProcess, token: &str, sub: &str, exp: i64) -> WsClient {
    let mut client = WsClient::connect_query(&server.ws(), token).await;
    assert_ready(&mut client, sub, exp).await;
    client
}

/// Asserts the socket is closed at once with 1008 and `reason`.
async fn assert_policy_close(client: &mut WsClient, reason: &str) {
    assert_eq!(expect_close(client).await, (1008, reason.to_string()));
}

/// Opens with `?token=` and expects an upgrade followed by 1008 `reason`.
async fn assert_refused(server: &ServerProcess, token: &str, reason: &str) {
    let mut client = WsClient::connect_query(&server.ws(), token).await;
    assert_policy_close(&mut client, reason).await;
}

/// One rejection case: a fresh issuer and server with `extra` settings, one
/// token made by `make`, one expected reason.
async fn rejects(extra: &[(&str, &str)], make: impl FnOnce(&TestIssuer) -> String, reason: &str) {
    let (issuer, server) = setup(extra).await;
    assert_refused(&server, &make(&issuer), reason).await;
}

/// One acceptance case: like [`rejects`] but the token must open the socket.
async fn accepts(extra: &[(&str, &str)], make: impl FnOnce(&TestIssuer) -> (String, i64)) {
    let (issuer, server) = setup(extra).await;
    let (token, exp) = make(&issuer);
    assert_accepted(&server, &token, "alice", exp).await;
}

/// Opens through an `Origin` header (or none) with a good token in the query.
async fn connect_from(
    issuer: &TestIssuer,
    server: &ServerProcess,
    origin: Option<&str>,
) -> (WsClient, i64) {
    let (token, exp) = good(issuer, "alice");
    let url = format!("{}?token={token}", server.ws());
    (WsClient::connect_raw(&url, origin).await, exp)
}

async fn send_auth(client: &mut WsClient, token: &str) {
    client
        .send_json(&json!({"type": "auth", "token": token}))
        .await;
}

/// A REST answer: status, `WWW-Authenticate` and the JSON body.
struct Answer {
    status: u16,
    challenge: Option<String>,
    body: Value,
}

async fn answer(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .map(|value| value.to_str().expect("ascii header").to_string());
    let bytes = response.bytes().await.expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        challenge,
        body,
    }
}

/// `GET /api/me`, with `Authorization: Bearer <token>` when given.
async fn get_me(server: &ServerProcess, token: Option<&str>) -> Answer {
    let api = Api::new(&server.http());
    let mut request = api.http.get(format!("{}/api/me", api.base));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    answer(request).await
}

/// A 401 with a Bearer challenge and the error body naming `reason`.
fn assert_unauthorized(answer: &Answer, reason: &str) {
    assert_eq!(answer.status, 401, "body: {}", answer.body);
    let challenge = answer.challenge.as_deref().expect("WWW-Authenticate");
    assert!(challenge.starts_with("Bearer"), "challenge: {challenge}");
    assert_eq!(answer.body["error"]["code"], "unauthorized");
    assert_eq!(answer.body["error"]["message"], reason);
}

/// `GET path` without a token; returns status and body text.
async fn get_text(server: &ServerProcess, path: &str) -> (u16, String) {
    let api = Api::new(&server.http());
    let response = api
        .http
        .get(format!("{}{path}", api.base))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// `POST /dev/token` with a raw body.
async fn dev_token(server: &ServerProcess, body: &str) -> Answer {
    let api = Api::new(&server.http());
    answer(
        api.http
            .post(format!("{}/dev/token", api.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string()),
    )
    .await
}

fn assert_bad_request(answer: &Answer) {
    assert_eq!(answer.status, 400, "body: {}", answer.body);
    assert_eq!(answer.body["error"]["code"], "bad_request");
    assert!(answer.body["error"]["message"].is_string());
}

// ---------------------------------------------------------------------------
// Accepted tokens
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_in_query_opens_the_socket() {
    accepts(&[], |issuer| good(issuer, "alice")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_in_first_message_opens_the_socket() {
    let (issuer, server) = setup(&[]).await;
    let (token, exp) = good(&issuer, "alice");
    let mut client = WsClient::connect_first_message(&server.ws(), &token).await;
    assert_ready(&mut client, "alice", exp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exp_just_past_is_within_the_clock_skew() {
    // 2 s past `exp` is inside the default 5 s REELTIME_CLOCK_SKEW_SECS.
    accepts(&[], |issuer| mint(issuer, "alice", expired_by(2))).await;
}

// ---------------------------------------------------------------------------
// Rejected tokens: upgrade, then 1008 with the reason
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_token_is_refused() {
    rejects(&[], |_| "garbage".into(), "malformed token").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signature_is_refused() {
    rejects(
        &[],
        |issuer| issuer.rogue.sign(&issuer.claims("alice", 60)),
        "bad signature",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_is_refused() {
    rejects(
        &[],
        |issuer| issuer.key.sign_as(Some("k9"), &issuer.claims("alice", 60)),
        "unknown key",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_refused() {
    rejects(
        &[],
        |issuer| mint(issuer, "alice", expired_by(60)).0,
        "token expired",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonwebtoken_default_60s_leeway_is_not_in_force() {
    // 30 s past `exp` would pass with jsonwebtoken's default 60 s leeway;
    // with the 5 s skew it must not.
    rejects(
        &[],
        |issuer| mint(issuer, "alice", expired_by(30)).0,
        "token expired",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbf_in_the_future_is_refused() {
    rejects(
        &[],
        |issuer| mint(issuer, "alice", set("nbf", json!(now() + 60))).0,
        "token not yet valid",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_issuer_is_refused() {
    rejects(
        &[],
        |issuer| mint(issuer, "alice", set("iss", json!("https://other.example"))).0,
        "wrong issuer",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_sub_is_refused() {
    rejects(
        &[],
        |issuer| {
            mint(issuer, "alice", |claims| {
                claims.as_object_mut().expect("object").remove("sub");
            })
            .0
        },
        "missing claim",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alg_none_is_refused() {
    rejects(
        &[],
        |issuer| issuer.alg_none_token("alice"),
        "algorithm not allowed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_signed_with_the_public_key_is_refused() {
    rejects(
        &[],
        |issuer| issuer.hs256_with_public_key("alice"),
        "algorithm not allowed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_token_is_refused() {
    // No `?token=`, and the first message is not `auth`.
    let (_issuer, server) = setup(&[]).await;
    let mut client = WsClient::connect_raw(&server.ws(), None).await;
    client.send_json(&json!({"type": "ping"})).await;
    assert_policy_close(&mut client, "missing token").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_hits_the_auth_timeout() {
    let (_issuer, server) = setup(&[("REELTIME_AUTH_TIMEOUT_SECS", "1")]).await;
    let mut client = WsClient::connect_raw(&server.ws(), None).await;
    assert_policy_close(&mut client, "auth timeout").await;
}

// ---------------------------------------------------------------------------
// Authorized parties (`azp`)
// ---------------------------------------------------------------------------

const PARTIES: (&str, &str) = ("REELTIME_AUTHORIZED_PARTIES", APP);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_azp_is_accepted() {
    accepts(&[PARTIES], |issuer| {
        mint(issuer, "alice", set("azp", json!(APP)))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlisted_azp_is_refused() {
    rejects(
        &[PARTIES],
        |issuer| mint(issuer, "alice", set("azp", json!(EVIL))).0,
        "azp not allowed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_azp_is_refused_when_parties_are_set() {
    rejects(
        &[PARTIES],
        |issuer| good(issuer, "alice").0,
        "azp not allowed",
    )
    .await;
}

// ---------------------------------------------------------------------------
// Allowed origins
// ---------------------------------------------------------------------------

const ORIGINS: (&str, &str) = ("REELTIME_ALLOWED_ORIGINS", APP);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origin_is_refused() {
    let (issuer, server) = setup(&[ORIGINS]).await;
    let (mut client, _) = connect_from(&issuer, &server, Some(EVIL)).await;
    assert_policy_close(&mut client, "origin not allowed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_origin_is_accepted() {
    let (issuer, server) = setup(&[ORIGINS]).await;
    let (mut client, exp) = connect_from(&issuer, &server, Some(APP)).await;
    assert_ready(&mut client, "alice", exp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_without_origin_is_accepted() {
    // Non-browser clients send no Origin header at all.
    let (issuer, server) = setup(&[ORIGINS]).await;
    let (mut client, exp) = connect_from(&issuer, &server, None).await;
    assert_ready(&mut client, "alice", exp).await;
}

// ---------------------------------------------------------------------------
// JWKS cache
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_key_is_fetched_once_and_unknown_kids_are_rate_limited() {
    let (issuer, server) = setup(&[]).await;
    let at_start = issuer.fetches();
    assert_eq!(at_start, 1, "one fetch at start");

    let k2 = SigningKey::generate("k2");
    issuer.publish(&k2);
    let claims = issuer.claims("alice", 60);
    let exp = claims["exp"].as_i64().expect("exp");
    assert_accepted(&server, &k2.sign(&claims), "alice", exp).await;
    assert_eq!(
        issuer.fetches(),
        at_start + 1,
        "k2 costs exactly one refetch"
    );
    let refetched = std::time::Instant::now();

    let k9 = issuer.key.sign_as(Some("k9"), &issuer.claims("alice", 60));
    assert_refused(&server, &k9, "unknown key").await;
    assert_refused(&server, &k9, "unknown key").await;
    assert_eq!(
        issuer.fetches(),
        at_start + 1,
        "unknown kids within 30 s of the last refetch must not fetch again \
         ({:?} since that refetch)",
        refetched.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_down_at_start_is_not_fatal() {
    let issuer = TestIssuer::start().await;
    issuer.set_available(false);
    let server = start_with(&issuer, &[]).await;
    let (status, _) = get_text(&server, "/readyz").await;
    assert_eq!(status, 200, "started and ready with the JWKS down");

    let at_start = issuer.fetches();
    assert_refused(&server, &good(&issuer, "alice").0, "keys unavailable").await;
    assert_eq!(
        issuer.fetches(),
        at_start + 1,
        "the first refused token triggers exactly one refetch"
    );

    // Once the endpoint is back, a token works again after the 30 s
    // unknown-kid rate limit (MIN_REFETCH_GAP) has passed, or at the next
    // 5-minute background refresh. Waiting 30 s here would only test a
    // timer, so this test stops at: the server started, and the refused
    // token cost exactly one fetch (no fetch storm against a down issuer).
    issuer.set_available(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_good_keys_keep_serving_while_jwks_is_down() {
    let (issuer, server) = setup(&[]).await;
    let (token, exp) = good(&issuer, "alice");
    assert_accepted(&server, &token, "alice", exp).await;

    issuer.set_available(false);
    // An unknown kid makes the server refetch; that fetch fails (503)...
    let before = issuer.fetches();
    let k9 = issuer.key.sign_as(Some("k9"), &issuer.claims("alice", 60));
    assert_refused(&server, &k9, "unknown key").await;
    assert_eq!(issuer.fetches(), before + 1, "one failed refetch");
    server
        .wait_for_log("JWKS fetch failed", WAIT)
        .await
        .expect("the failed fetch is logged");

    // ...and the keys fetched before still verify new tokens.
    let (token, exp) = good(&issuer, "alice");
    assert_accepted(&server, &token, "alice", exp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clerk_jwt_key_verifies_without_network() {
    let issuer = TestIssuer::start().await;
    let env = pairs(&[
        ("CLERK_JWT_KEY", &issuer.key.public_pem),
        ("REELTIME_ISSUER", &issuer.issuer),
    ]);
    let server = ServerProcess::start(binary(), &env).await;
    let (token, exp) = good(&issuer, "alice");
    assert_accepted(&server, &token, "alice", exp).await;
    let rogue = issuer.rogue.sign(&issuer.claims("alice", 60));
    assert_refused(&server, &rogue, "bad signature").await;
    assert_eq!(issuer.fetches(), 0, "no JWKS fetch with CLERK_JWT_KEY");
}

// ---------------------------------------------------------------------------
// Development issuer
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_issuer_mints_tokens_that_open_the_socket() {
    let server = ServerProcess::start(binary(), &[]).await;
    let minted = dev_token(&server, r#"{"sub":"alice","ttl_secs":60}"#).await;
    assert_eq!(minted.status, 200, "body: {}", minted.body);
    let token = minted.body["token"].as_str().expect("token").to_string();
    let exp = minted.body["expires_at"].as_i64().expect("expires_at");
    let expected = now() + 60;
    assert!(
        (expected - 5..=expected + 1).contains(&exp),
        "expires_at {exp} not about now + 60 ({expected})"
    );
    assert_accepted(&server, &token, "alice", exp).await;

    let (status, jwks) = get_text(&server, "/dev/jwks.json").await;
    assert_eq!(status, 200);
    let jwks: Value = serde_json::from_str(&jwks).expect("JWKS is JSON");
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "RSA");
    assert!(key["kid"].as_str().is_some_and(|kid| !kid.is_empty()));
    assert!(key["n"].is_string() && key["e"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_token_refuses_bad_input() {
    let server = ServerProcess::start(binary(), &[]).await;
    for body in [
        r#"{"sub":"","ttl_secs":60}"#,
        r#"{"sub":"alice","ttl_secs":0}"#,
        "sub=alice",
    ] {
        assert_bad_request(&dev_token(&server, body).await);
    }
}

/// DNS rebinding: a page on another name that resolves to 127.0.0.1 sends
/// its own `Host`; the development issuer must not mint tokens for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_issuer_answers_only_loopback_hosts() {
    let server = ServerProcess::start(binary(), &[]).await;
    let api = Api::new(&server.http());
    let port = server.http().rsplit(':').next().expect("port").to_string();
    for (host, allowed) in [
        (format!("evil.example:{port}"), false),
        ("rebind.attacker.test".to_string(), false),
        (format!("localhost:{port}"), true),
        (format!("127.0.0.1:{port}"), true),
    ] {
        for path in ["/dev/token", "/dev/jwks.json"] {
            let request = if path == "/dev/token" {
                api.http
                    .post(format!("{}{path}", api.base))
                    .body(r#"{"sub":"alice"}"#)
            } else {
                api.http.get(format!("{}{path}", api.base))
            };
            let answer = answer(request.header(reqwest::header::HOST, host.as_str())).await;
            if allowed {
                assert_eq!(
                    answer.status, 200,
                    "{path} with Host {host}: {}",
                    answer.body
                );
            } else {
                assert_eq!(
                    answer.status, 403,
                    "{path} with Host {host}: {}",
                    answer.body
                );
                assert_eq!(answer.body["error"]["code"], "forbidden");
                assert!(answer.body.get("token").is_none());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_routes_do_not_exist_with_a_key_source() {
    let (_issuer, server) = setup(&[]).await;
    let minted = dev_token(&server, r#"{"sub":"alice","ttl_secs":60}"#).await;
    assert_eq!(minted.status, 404, "body: {}", minted.body);
    assert!(minted.body.get("token").is_none());
    let (status, _) = get_text(&server, "/dev/jwks.json").await;
    assert_eq!(status, 404);
}

// ---------------------------------------------------------------------------
// REST
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn me_returns_the_user_behind_the_token() {
    let (issuer, server) = setup(&[]).await;
    let (token, _) = mint(&issuer, "alice", set("email", json!("alice@example.com")));
    let me = get_me(&server, Some(&token)).await;
    assert_eq!(me.status, 200, "body: {}", me.body);
    assert_eq!(me.body["id"], "alice");
    assert_eq!(me.body["email"], "alice@example.com");
    assert!(me.body["created_at"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_without_a_token_gets_401() {
    let (_issuer, server) = setup(&[]).await;
    assert_unauthorized(&get_me(&server, None).await, "missing token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_with_an_expired_token_gets_401() {
    let (issuer, server) = setup(&[]).await;
    let (token, _) = mint(&issuer, "alice", expired_by(60));
    assert_unauthorized(&get_me(&server, Some(&token)).await, "token expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_with_a_bad_signature_gets_401() {
    let (issuer, server) = setup(&[]).await;
    let rogue = issuer.rogue.sign(&issuer.claims("alice", 60));
    assert_unauthorized(&get_me(&server, Some(&rogue)).await, "bad signature");
}

// ---------------------------------------------------------------------------
// In-band refresh
// ---------------------------------------------------------------------------

/// A server, and a socket open as alice, ready to be sent a refresh.
async fn open_alice() -> (TestIssuer, ServerProcess, WsClient) {
    let (issuer, server) = setup(&[]).await;
    let (token, exp) = good(&issuer, "alice");
    let client = assert_accepted(&server, &token, "alice", exp).await;
    (issuer, server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_with_the_same_user_extends_the_session() {
    let (issuer, _server, mut client) = open_alice().await;
    let fresh = issuer.claims("alice", 120);
    let exp = fresh["exp"].as_i64().expect("exp");
    send_auth(&mut client, &issuer.key.sign(&fresh)).await;
    assert_eq!(
        client.message().await,
        ServerMessage::AuthOk { expires_at: exp }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_with_another_user_closes() {
    let (issuer, _server, mut client) = open_alice().await;
    send_auth(&mut client, &good(&issuer, "bob").0).await;
    assert_policy_close(&mut client, "user changed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_with_an_expired_token_closes() {
    let (issuer, _server, mut client) = open_alice().await;
    send_auth(&mut client, &mint(&issuer, "alice", expired_by(60)).0).await;
    assert_policy_close(&mut client, "token expired").await;
}

// ---------------------------------------------------------------------------
// Logs, settings, metrics
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_the_log() {
    let (issuer, server) = setup(&[]).await;
    let (query, exp) = good(&issuer, "alice");
    let (first, _) = good(&issuer, "alice");
    let (refresh, _) = good(&issuer, "alice");
    let (rest, _) = good(&issuer, "alice");
    let rogue = issuer.rogue.sign(&issuer.claims("alice", 60));
    let (expired, _) = mint(&issuer, "alice", expired_by(60));

    let mut client = assert_accepted(&server, &query, "alice", exp).await;
    send_auth(&mut client, &refresh).await;
    assert!(matches!(
        client.message().await,
        ServerMessage::AuthOk { .. }
    ));
    let mut second = WsClient::connect_first_message(&server.ws(), &first).await;
    assert!(matches!(
        second.message().await,
        ServerMessage::Ready { .. }
    ));
    assert_refused(&server, &rogue, "bad signature").await;
    assert_refused(&server, &expired, "token expired").await;
    assert_eq!(get_me(&server, Some(&rest)).await.status, 200);
    assert_unauthorized(&get_me(&server, Some(&rogue)).await, "bad signature");

    // Every line above was logged before its answer went out; this marker
    // request is logged after them all.
    let (status, _) = get_text(&server, "/healthz?marker=last").await;
    assert_eq!(status, 200);
    server
        .wait_for_log("marker=last", WAIT)
        .await
        .expect("marker request logged");

    let log = server.log();
    assert!(
        log.contains("token=REDACTED"),
        "the ?token= request is logged, redacted; log:\n{log}"
    );
    for token in [&query, &first, &refresh, &rest, &rogue, &expired] {
        let signature = token.rsplit('.').next().expect("signature part");
        assert!(
            !log.contains(token.as_str()) && !log.contains(signature),
            "a token reached the log:\n{log}"
        );
    }
}

/// Starts the binary with `setting=value` and expects it to refuse to
/// start, naming the setting on stderr.
async fn assert_start_refused(setting: &str, value: &str) {
    let data = tempfile::tempdir().expect("temp dir");
    let mut command = std::process::Command::new(binary());
    for (key, _) in std::env::vars() {
        if key.starts_with("REELTIME_") || key.starts_with("CLERK_") {
            command.env_remove(key);
        }
    }
    let child = command
        .env("REELTIME_LISTEN", "127.0.0.1:0")
        .env("REELTIME_DATA_DIR", data.path())
        .env(setting, value)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn reeltime");
    let pid = child.id();
    let waited = tokio::time::timeout(
        WAIT,
        tokio::task::spawn_blocking(|| child.wait_with_output()),
    )
    .await;
    let Ok(output) = waited else {
        // It started instead of refusing: stop the process we spawned.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        panic!("reeltime started with {setting}={value:?}");
    };
    let output = output.expect("join").expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "exit status {:?}", output.status);
    assert!(
        stderr.contains(setting),
        "the message names the setting: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_setting_stops_start_up_naming_it() {
    assert_start_refused("REELTIME_CLOCK_SKEW_SECS", "abc").await;
}

/// An empty key setting must not fall back to the development issuer,
/// which mints tokens for anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_key_setting_stops_start_up_instead_of_failing_open() {
    assert_start_refused("CLERK_PUBLISHABLE_KEY", "").await;
    assert_start_refused("REELTIME_JWKS_URL", " ").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failures_are_counted_by_reason() {
    let (issuer, server) = setup(&[]).await;
    let rogue = issuer.rogue.sign(&issuer.claims("alice", 60));
    assert_refused(&server, &rogue, "bad signature").await;
    let (status, metrics) = get_text(&server, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics
            .lines()
            .any(|line| line == r#"reeltime_auth_failures_total{reason="bad signature"} 1"#),
        "metrics:\n{metrics}"
    );
}
