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
