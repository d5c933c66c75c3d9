//! Shared set-up for the integration tests: a real issuer, a real content
//! server, the real binary.
#![allow(dead_code)]

pub mod media;

use std::path::Path;

use reeltime_protocol::{Import, ServerMessage};
use reeltime_testkit::{Api, ContentServer, Event, ServerProcess, TestIssuer, WsClient};

pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_reeltime"))
}

/// Everything a test talks to.
pub struct World {
    pub issuer: TestIssuer,
    pub content: ContentServer,
    pub server: ServerProcess,
    pub api: Api,
}

/// Issuer + content server + reeltime allowed to import from loopback,
/// downloading only (the bodies here are not real videos; the media tests
/// use real ones), with `extra` settings on top.
pub async fn world(extra: &[(&str, &str)]) -> World {
    let mut env = pairs(&[
        ("REELTIME_IMPORT_ALLOW_PRIVATE", "1"),
        ("REELTIME_MEDIA_PROCESSING", "off"),
    ]);
    env.extend(pairs(extra));
    world_with(env).await
}

/// Like [`world`] but with exactly `env` besides the issuer's settings.
pub async fn world_with(env: Vec<(String, String)>) -> World {
    let issuer = TestIssuer::start().await;
    let content = ContentServer::start().await;
    let mut all = issuer.env();
    all.extend(env);
    let server = ServerProcess::start(binary(), &all).await;
    let api = Api::new(&server.http());
    World {
        issuer,
        content,
        server,
        api,
    }
}

pub fn pairs(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl World {
    pub fn token(&self, sub: &str) -> String {
        self.issuer.token(sub, 600)
    }

    /// A socket for `sub`, past `ready` and `snapshot`.
    pub async fn socket(&self, sub: &str) -> (WsClient, Vec<Import>) {
        let (client, _ready, snapshot) = WsClient::open(&self.server.ws(), &self.token(sub)).await;
        (client, snapshot)
    }
}

/// Reads until import `id` reaches a final state; returns every state seen
/// of it, asserting versions strictly increase and progress never goes
/// backwards within an attempt.
pub async fn follow_to_final(ws: &mut WsClient, id: &str) -> Vec<Import> {
    let seen = ws
        .imports_until(|import| import.id == id && import.status.is_final())
        .await;
    let mine: Vec<Import> = seen.into_iter().filter(|i| i.id == id).collect();
    assert_monotonic(&mine);
    mine
}

pub fn assert_monotonic(states: &[Import]) {
    for pair in states.windows(2) {
        assert!(
            pair[1].version > pair[0].version,
            "versions must strictly increase: {} then {}",
            pair[0].version,
            pair[1].version
        );
        if pair[1].attempt == pair[0].attempt
            && let (Some(a), Some(b)) = (pair[0].progress, pair[1].progress)
        {
            assert!(b >= a, "progress went backwards: {a} then {b}");
        }
    }
}

/// Waits for the next import message about `id` matching `pred`.
pub async fn wait_for(ws: &mut WsClient, id: &str, pred: impl Fn(&Import) -> bool) -> Import {
    let seen = ws.imports_until(|i| i.id == id && pred(i)).await;
    seen.into_iter().last().expect("at least one")
}

/// Next message must be a close; returns (code, reason).
pub async fn expect_close(ws: &mut WsClient) -> (u16, String) {
    match ws.next().await {
        Event::Closed { code, reason } => (code, reason),
        Event::Message(ServerMessage::Import { .. }) => ws.closed().await,
        other => panic!("expected a close, got {other:?}"),
    }
}

/// The import's state in `snapshot` if it already matches `pred`, else the
/// next live message that does.
pub async fn in_snapshot_or_next(
    ws: &mut WsClient,
    snapshot: &[Import],
    id: &str,
    pred: impl Fn(&Import) -> bool,
) -> Import {
    match snapshot.iter().find(|i| i.id == id) {
        Some(found) if pred(found) => found.clone(),
        _ => wait_for(ws, id, pred).await,
    }
}

/// Waits on a condition outside the protocol (files, processes), checking
/// it after each short pause, for at most [`reeltime_testkit::WAIT`].
pub async fn wait_until(condition: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + reeltime_testkit::WAIT;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met in time"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Several nodes over one PostgreSQL and one Redis (both fresh), dropped
/// nodes first.
pub struct SharedNodes {
    pub nodes: Vec<reeltime_testkit::ServerProcess>,
    pub redis: reeltime_testkit::RedisServer,
    pub postgres: reeltime_testkit::Postgres,
}

/// Starts `count` nodes with `env` plus the shared database and Redis,
/// one at a time, each subscribed to the bus before the next.
pub async fn shared_nodes(count: usize, env: Vec<(String, String)>) -> SharedNodes {
    let (postgres, redis) = tokio::join!(
        reeltime_testkit::Postgres::start(),
        reeltime_testkit::RedisServer::start()
    );
    let database = postgres.create_database("reeltime").await;
    let mut all = env;
    all.extend(pairs(&[
        ("REELTIME_DATABASE_URL", &database),
        ("REELTIME_REDIS_URL", &redis.url()),
    ]));
    let mut nodes = Vec::new();
    for _ in 0..count {
        let node = ServerProcess::start(binary(), &all).await;
        assert!(
            node.wait_for_log("redis bus: subscribed", reeltime_testkit::WAIT)
                .await
                .is_some(),
            "node did not subscribe to Redis; log:\n{}",
            node.log()
        );
        nodes.push(node);
    }
    SharedNodes {
        nodes,
        redis,
        postgres,
    }
}

/// [`wait_until`] for a condition that must be asked over the network.
pub async fn wait_until_async<F, Fut>(condition: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + reeltime_testkit::WAIT;
    while !condition().await {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met in time"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
