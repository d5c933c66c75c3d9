//! Bugs the chaos campaign (`scripts/chaos`, docs/reliability.md) found,
//! each reproduced on its own with the real server over a real PostgreSQL,
//! the fault applied through the test kit's TCP proxy.

mod common;

use std::time::{Duration, Instant};

use common::binary;
use reeltime_protocol::{ImportStatus, ServerMessage};
use reeltime_testkit::{
    Api, ContentServer, Event, LinkMode, Postgres, RedisServer, ServerProcess, TcpProxy,
    TestIssuer, WAIT, WsClient,
};
use serde_json::{Value, json};

const KIB: usize = 1 << 10;

/// Found by chaos run seed 7 (PostgreSQL restarted under load): a job
/// whose last write failed ended without handing its lease back, and the
/// node's lease renewal, which renewed every lease the node held, kept the
/// import from every node for ever: it stayed `processing` or
/// `downloading` and nobody resumed it. Now a lease with no job behind it
/// is handed back at the next renewal, and the import is resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_could_not_hand_back_its_lease_is_resumed_once_the_database_is_back() {
    let issuer = TestIssuer::start().await;
    let content = ContentServer::start().await;
    let postgres = Postgres::start().await;
    postgres.create_database("reeltime").await;
    let link = TcpProxy::start(
        format!("127.0.0.1:{}", postgres.port())
            .parse()
            .expect("address"),
    )
    .await
    .expect("proxy");
    let database = format!("postgres://postgres@127.0.0.1:{}/reeltime", link.port());
    let mut env = issuer.env();
    env.extend(common::pairs(&[
        ("REELTIME_IMPORT_ALLOW_PRIVATE", "1"),
        ("REELTIME_MEDIA_PROCESSING", "off"),
        ("REELTIME_JOB_LEASE_SECS", "3"),
        ("REELTIME_DATABASE_URL", &database),
    ]));
    let node = ServerProcess::start(binary(), &env).await;
    let api = Api::new(&node.http());
    let token = issuer.token("alice", 600);

    let hold_after = 64 * KIB;
    content.hold("cut");
    let url = content.url(&format!(
        "/video/cut?size={}&hold_after={hold_after}",
        256 * KIB
    ));
    let created = api.create_ok(&token, &url).await;
    content
        .wait_for_fetches("the download to stall mid-file", WAIT, |fetches| {
            fetches
                .iter()
                .any(|f| f.name == "cut" && f.bytes_sent >= hold_after)
        })
        .await;

    // The database goes out of reach; the download ends meanwhile, and
    // the job can neither store the result nor hand its lease back.
    link.set(LinkMode::Cut);
    content.release("cut");
    assert!(
        node.wait_for_log("could not release lease", WAIT)
            .await
            .is_some(),
        "the job never gave up; log:\n{}",
        node.log()
    );
    link.set(LinkMode::Pass);

    // Back: the import is resumed (a second attempt) and completes.
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = api
            .get(&token, &format!("/api/imports/{}", created.id))
            .await;
        if status == 200 && body["status"] == "completed" {
            assert_eq!(body["attempt"], 2, "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the import was never resumed: {body}; log:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        node.log()
            .contains("a lease with no job here; handing it back"),
        "log:\n{}",
        node.log()
    );
    let fetches = content.fetches_of("cut");
    assert_eq!(fetches.len(), 2, "{fetches:#?}");
    assert!(fetches[1].complete);
}

/// Found by the chaos campaign (44 uploads in 50 runs ended
/// `storage_error: could not keep the uploaded file: no such media file`):
/// with S3, the upload source downloaded the uploaded object into the
/// node's import directory and deleted it from the bucket at once, before
/// the import's progress was stored. When that node then died (or its job
/// failed to save its state), the next attempt, on another node, started
/// from scratch as `Resume::FromScratch` promises ("in the bucket the
/// bytes outlive a node"), and found the object gone: the user's upload
/// was lost. Now the object stays in the bucket until the import's final
/// state is stored, and goes then (imports/uploads/mod.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_survives_the_death_of_the_node_processing_it() {
    use base64::Engine;
    use reeltime_testkit::services::S3Server;
    use reeltime_testkit::{Postgres as Pg, RedisServer};

    let issuer = TestIssuer::start().await;
    let (postgres, redis, s3) = tokio::join!(Pg::start(), RedisServer::start(), S3Server::start());
    let database = postgres.create_database("reeltime").await;
    let mut env = issuer.env();
    env.extend(s3.env());
    env.extend(common::pairs(&[
        ("REELTIME_DATABASE_URL", &database),
        ("REELTIME_REDIS_URL", &redis.url()),
        ("REELTIME_MEDIA_URL", &s3.media_url("media")),
        ("REELTIME_JOB_LEASE_SECS", "3"),
        ("REELTIME_PROCESS_CONCURRENCY", "1"),
        (
            "REELTIME_MEDIA_SECRET",
            "one-secret-shared-by-every-node-0123456789",
        ),
    ]));
    let mut a = ServerProcess::start(binary(), &env).await;
    let token = issuer.token("alice", 600);
    let video = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../samples/sample-needs-transcode.mkv"
    ))
    .expect("sample");
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let metadata = format!(
        "filename {}",
        base64::engine::general_purpose::STANDARD.encode("clip.mkv")
    );
    let created = http
        .post(format!("{}/api/uploads", a.http()))
        .bearer_auth(&token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", video.len())
        .header("Upload-Metadata", metadata)
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    let id = location.rsplit('/').next().expect("id").to_string();
    let patched = http
        .patch(format!("{}{location}", a.http()))
        .bearer_auth(&token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", 0)
        .header("Content-Type", "application/offset+octet-stream")
        .body(video)
        .send()
        .await
        .expect("patch");
    assert_eq!(patched.status(), 204);

    // Node A took the bytes and is processing them: it dies.
    let api_a = Api::new(&a.http());
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, body) = api_a.get(&token, &format!("/api/imports/{id}")).await;
        if body["status"] == "processing" {
            break;
        }
        assert!(
            body["status"] != "completed" && Instant::now() < deadline,
            "never seen processing: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill().await;

    // Node B, with its own data dir, takes the import over and ends it.
    let b = ServerProcess::start(binary(), &env).await;
    let api_b = Api::new(&b.http());
    let deadline = Instant::now() + WAIT * 2;
    let done = loop {
        let (_, body) = api_b.get(&token, &format!("/api/imports/{id}")).await;
        if matches!(body["status"].as_str(), Some("completed" | "failed")) {
            break body;
        }
        assert!(Instant::now() < deadline, "not resumed: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        done["status"],
        "completed",
        "{done}\nlog of B:\n{}",
        b.log()
    );
    assert_eq!(done["attempt"], 2, "{done}");
    // Ended: the uploaded object goes (the video B made stays).
    let upload = format!("media/{id}/upload.bin");
    let deadline = Instant::now() + WAIT;
    loop {
        let keys = s3.keys(&format!("media/{id}/")).await;
        if !keys.contains(&upload) {
            assert!(keys.contains(&format!("media/{id}/video.mp4")), "{keys:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the uploaded object outlived its import: {keys:?}\nlog of B:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `reeltime keys create --name NAME` against `database`: a server API key.
async fn server_key(database: &str, name: &str) -> String {
    let mut command = tokio::process::Command::new(binary());
    for (key, _) in std::env::vars() {
        if key.starts_with("REELTIME_") || key.starts_with("CLERK_") {
            command.env_remove(key);
        }
    }
    let output = command
        .env("REELTIME_DATABASE_URL", database)
        .args(["keys", "create", "--name", name])
        .output()
        .await
        .expect("run reeltime keys");
    let secret = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert!(
        output.status.success() && secret.starts_with("rt_sk_"),
        "keys create failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    secret
}

/// A server API call to `base` with the key as bearer: status and body.
async fn server_call(base: &str, key: &str, path: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::builder()
        .no_proxy()
        .timeout(WAIT)
        .build()
        .expect("client")
        .post(format!("{base}{path}"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// How many notes (bus/redis.rs, store/bus_notes.rs) the store holds for
/// import `id`.
async fn notes_of(pool: &sqlx::PgPool, id: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM bus_notes WHERE import_id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("count notes")
}

/// Two nodes on one PostgreSQL and one Redis, node A reaching Redis
/// through a proxy; a tab of `user_tab` on node B; an external import
/// created through A (seen by the tab), then A's link cut and the import
/// completed through A: stored, held by A, noted in the database.
struct HeldChange {
    _issuer: TestIssuer,
    _postgres: Postgres,
    _redis: RedisServer,
    link: TcpProxy,
    a: ServerProcess,
    b: ServerProcess,
    pool: sqlx::PgPool,
    tab: WsClient,
    id: String,
    /// The stored version of the completed import.
    version: u64,
}

/// The notes' lease (`REELTIME_JOB_LEASE_SECS`) in these tests.
const LEASE_SECS: u64 = 3;

async fn held_change() -> HeldChange {
    let issuer = TestIssuer::start().await;
    let (postgres, redis) = tokio::join!(Postgres::start(), RedisServer::start());
    let database = postgres.create_database("reeltime").await;
    let link = TcpProxy::start(
        format!("127.0.0.1:{}", redis.port())
            .parse()
            .expect("address"),
    )
    .await
    .expect("proxy");
    let lease = LEASE_SECS.to_string();
    let mut env = issuer.env();
    env.extend(common::pairs(&[
        ("REELTIME_DATABASE_URL", &database),
        ("REELTIME_MEDIA_PROCESSING", "off"),
        ("REELTIME_JOB_LEASE_SECS", &lease),
    ]));
    let mut env_a = env.clone();
    env_a.extend(common::pairs(&[(
        "REELTIME_REDIS_URL",
        &format!("redis://127.0.0.1:{}", link.port()),
    )]));
    env.extend(common::pairs(&[("REELTIME_REDIS_URL", &redis.url())]));
    let (a, b) = tokio::join!(
        ServerProcess::start(binary(), &env_a),
        ServerProcess::start(binary(), &env)
    );
    for node in [&a, &b] {
        assert!(
            node.wait_for_log("redis bus: subscribed", WAIT)
                .await
                .is_some(),
            "{}",
            node.log()
        );
    }
    let key = server_key(&database, "worker").await;
    let pool = sqlx::PgPool::connect(&database).await.expect("database");
    let token = issuer.token("user_tab", 600);
    let (mut tab, _, _) = WsClient::open(&b.ws(), &token).await;

    // Created through node A while its link works: the tab on B sees it.
    let (status, created) = server_call(
        &a.http(),
        &key,
        "/api/server/imports",
        &json!({"user_id": "user_tab", "source": "external", "title": "render"}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    tab.imports_until(|import| import.id == id).await;

    // A loses Redis and completes the import: stored, held, noted.
    link.set(LinkMode::Cut);
    let (status, completed) = server_call(
        &a.http(),
        &key,
        &format!("/api/server/imports/{id}/complete"),
        &json!({"result": {"frames": 24}}),
    )
    .await;
    assert_eq!(status, 200, "{completed}");
    assert_eq!(completed["status"], "completed");
    let version = completed["version"].as_u64().expect("version");
    let deadline = Instant::now() + WAIT;
    while notes_of(&pool, &id).await == 0 {
        assert!(
            Instant::now() < deadline,
            "node A never noted the held change; log:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        a.log()
            .contains("publish failed; holding changes until Redis answers"),
        "{}",
        a.log()
    );
    HeldChange {
        _issuer: issuer,
        _postgres: postgres,
        _redis: redis,
        link,
        a,
        b,
        pool,
        tab,
        id,
        version,
    }
}

/// Reads `tab` until the final state of `id` arrives, within `bound`;
/// fails on anything but import changes and pongs (a resync snapshot or a
/// close is not the path under test).
async fn final_state_within(
    tab: &mut WsClient,
    id: &str,
    bound: Duration,
    log: impl Fn() -> String,
) -> reeltime_protocol::Import {
    let started = Instant::now();
    loop {
        let left = bound.saturating_sub(started.elapsed());
        match tab.next_within(left).await {
            Some(Event::Message(ServerMessage::Import { import }))
                if import.id == id && import.status.is_final() =>
            {
                return *import;
            }
            Some(Event::Message(ServerMessage::Import { .. } | ServerMessage::Pong)) => continue,
            Some(other) => panic!(
                "the tab on B got {other:?} instead of the change; log of B:\n{}",
                log()
            ),
            None => panic!(
                "the tab on B never got the final import within {bound:?}; log of B:\n{}",
                log()
            ),
        }
    }
}

/// Found by chaos run 1010 (`client_state_differs`): node 0 completed an
/// external import while its Redis link was cut, held the change in memory
/// to publish it when Redis answered, and was killed first. The database
/// had `completed`, but a tab connected to another node all along kept
/// showing the import's previous state (only a reconnect healed it). Now
/// the holding node notes the held change in the database, and once the
/// note's lease runs out unrenewed, a node with a working bus publishes the
/// import's stored state: the tab gets `completed` without reconnecting.
/// Fails without the fix (the sweep off: the tab never hears of it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_held_by_a_node_cut_from_redis_reaches_other_nodes_after_it_dies() {
    // Kept whole: the services it holds stop when it is dropped.
    let mut held = held_change().await;
    let (id, version) = (held.id.clone(), held.version);

    // A dies holding it. B's tab, connected all along, gets `completed`
    // once A's note runs out (the lease, plus a third for the sweep; the
    // bound leaves room for a loaded machine).
    held.a.kill().await;
    let killed = Instant::now();
    let bound = Duration::from_secs(LEASE_SECS * 4 / 3 + 15);
    let seen = final_state_within(&mut held.tab, &id, bound, || held.b.log()).await;
    println!(
        "B's tab got the held change {:?} after A's kill",
        killed.elapsed()
    );
    assert_eq!(seen.status, ImportStatus::Completed);
    assert_eq!(seen.version, version);
    assert_eq!(seen.result, Some(json!({"frames": 24})));
    assert!(
        held.b
            .wait_for_log(
                "published the stored state of changes a stopped node held",
                WAIT
            )
            .await
            .is_some(),
        "{}",
        held.b.log()
    );
    // The note is gone once published.
    let deadline = Instant::now() + WAIT;
    while notes_of(&held.pool, &id).await != 0 {
        assert!(
            Instant::now() < deadline,
            "the note stayed; log of B:\n{}",
            held.b.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The other end of a note's life: the node that holds the change lives,
/// renews its note past the lease (no other node sweeps it), publishes
/// the change itself once its link is back, and deletes the note.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_change_is_published_by_its_node_once_redis_is_back_and_its_note_cleared() {
    // Kept whole: the services it holds stop when it is dropped.
    let mut held = held_change().await;
    let (id, version) = (held.id.clone(), held.version);

    // Held past twice the lease: A renews the note, so nobody sweeps it.
    assert!(
        held.a
            .wait_for_log("redis bus: held changes noted in the database", WAIT)
            .await
            .is_some(),
        "{}",
        held.a.log()
    );
    let held_since = Instant::now();
    while held_since.elapsed() < Duration::from_secs(LEASE_SECS * 2) {
        assert_eq!(
            notes_of(&held.pool, &id).await,
            1,
            "log of B:\n{}",
            held.b.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !held.b.log().contains("published the stored state"),
        "B swept a note A renews:\n{}",
        held.b.log()
    );

    held.link.set(LinkMode::Pass);
    let seen = final_state_within(&mut held.tab, &id, WAIT, || held.b.log()).await;
    assert_eq!(seen.status, ImportStatus::Completed);
    assert_eq!(seen.version, version);
    assert!(
        held.a
            .wait_for_log("redis bus: publishing again", WAIT)
            .await
            .is_some(),
        "{}",
        held.a.log()
    );
    let deadline = Instant::now() + WAIT;
    while notes_of(&held.pool, &id).await != 0 {
        assert!(
            Instant::now() < deadline,
            "the note stayed; log of A:\n{}",
            held.a.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
