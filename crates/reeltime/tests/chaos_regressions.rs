//! Bugs the chaos campaign (`scripts/chaos`, docs/reliability.md) found,
//! each reproduced on its own with the real server over a real PostgreSQL,
//! the fault applied through the test kit's TCP proxy.

mod common;

use std::time::{Duration, Instant};

use common::binary;
use reeltime_testkit::{
    Api, ContentServer, LinkMode, Postgres, ServerProcess, TcpProxy, TestIssuer, WAIT,
};

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
