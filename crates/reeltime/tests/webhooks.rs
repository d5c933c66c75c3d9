//! Webhooks out, end to end: the real server posts signed events to a real
//! receiver in the test kit, which checks each signature with its own
//! Standard Webhooks implementation (aws-lc-rs HMAC, sharing no code with
//! the server's `standardwebhooks` crate). Nothing lost while the receiver
//! is down, order kept per import, the same `webhook-id` on every retry, a
//! 410 final, a kill -9 mid-delivery survived, and two nodes over
//! PostgreSQL sending each event once.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{binary, follow_to_final, pairs, shared_nodes, wait_until_async, world_with};
use reeltime_testkit::{Answer, Received, ServerProcess, TestIssuer, WAIT, WebhookReceiver};

/// Retries in milliseconds instead of minutes (5 ms, 300 ms, 1.8 s, 7.2 s...).
const FAST_RETRIES: (&str, &str) = ("REELTIME_WEBHOOK_RETRY_SCALE", "0.001");

fn base_env(receiver: &WebhookReceiver) -> Vec<(String, String)> {
    let mut env = pairs(&[
        ("REELTIME_IMPORT_ALLOW_PRIVATE", "1"),
        ("REELTIME_MEDIA_PROCESSING", "off"),
        FAST_RETRIES,
    ]);
    env.extend(receiver.env());
    env
}

/// The requests about `import_id` answered 2xx, in arrival order.
fn delivered<'a>(received: &'a [Received], import_id: &str) -> Vec<&'a Received> {
    received
        .iter()
        .filter(|r| r.import_id() == import_id && (200..300).contains(&r.answered))
        .collect()
}

fn has_delivered(received: &[Received], import_id: &str, kind: &str) -> bool {
    delivered(received, import_id)
        .iter()
        .any(|r| r.event_type() == kind)
}

/// Every request verified; the delivered events of `import_id` are the
/// life of an import in order: created, then a status change per new
/// status (never one for a progress tick), each final status followed by
/// its own event; versions never go back; each id delivered once.
fn assert_life_in_order(received: &[Received], import_id: &str, last: &str) {
    assert!(
        received.iter().all(|r| r.signature_ok),
        "every request carries a valid Standard Webhooks signature: {received:#?}"
    );
    let events = delivered(received, import_id);
    let kinds: Vec<&str> = events.iter().map(|r| r.event_type()).collect();
    assert_eq!(kinds.first(), Some(&"import.created"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&last), "{kinds:?}");
    let mut status = String::new();
    let mut version = 0;
    let mut ids = HashSet::new();
    for event in &events {
        assert!(ids.insert(event.id.clone()), "{} delivered twice", event.id);
        assert!(event.version() >= version, "versions went back: {kinds:?}");
        version = event.version();
        let now = event.body["data"]["status"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if event.event_type() == "import.status_changed" {
            assert_ne!(now, status, "a status_changed without a change: {kinds:?}");
        }
        status = now;
        assert!(
            event.body["timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_life_arrives_signed_and_in_order() {
    let receiver = WebhookReceiver::start().await;
    let world = world_with(base_env(&receiver)).await;
    let token = world.token("alice");
    let (mut ws, _) = world.socket("alice").await;
    let import = world
        .api
        .create_ok(&token, &world.content.video_url("life.mp4", 64 << 10))
        .await;
    let states = follow_to_final(&mut ws, &import.id).await;
    assert_eq!(
        format!("{:?}", states.last().map(|i| i.status)),
        "Some(Completed)"
    );
    let received = receiver
        .wait_until(WAIT, |r| has_delivered(r, &import.id, "import.completed"))
        .await;
    assert_life_in_order(&received, &import.id, "import.completed");
    let completed = delivered(&received, &import.id);
    let last = completed.last().expect("delivered");
    assert_eq!(last.body["data"]["id"], import.id.as_str());
    assert!(
        last.user_agent.contains("webhooks"),
        "sent by the worker: {}",
        last.user_agent
    );

    let (status, _) = world
        .api
        .delete(&token, &format!("/api/imports/{}", import.id))
        .await;
    assert_eq!(status, 204);
    let received = receiver
        .wait_until(WAIT, |r| has_delivered(r, &import.id, "import.deleted"))
        .await;
    let deleted = delivered(&received, &import.id)
        .into_iter()
        .find(|r| r.event_type() == "import.deleted")
        .expect("deleted")
        .clone();
    assert_eq!(
        deleted.body["data"]["status"], "completed",
        "the import as it was"
    );
    assert!(
        deleted.version() > last.version(),
        "at the delete's version"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_several_attempts_loses_nothing() {
    let receiver = WebhookReceiver::start().await;
    receiver.answer(Answer::Status(503));
    let world = world_with(base_env(&receiver)).await;
    let token = world.token("alice");
    let import = world
        .api
        .create_ok(&token, &world.content.video_url("down.mp4", 64 << 10))
        .await;
    // Two refused attempts of the first event, with the same id.
    let refused = receiver
        .wait_until(WAIT, |r| {
            r.iter().filter(|r| r.answered == 503).count() >= 2
        })
        .await;
    let first_id = refused[0].id.clone();
    assert_eq!(refused[0].event_type(), "import.created");
    assert_eq!(refused[1].id, first_id, "a retry keeps its webhook-id");
    // Then no receiver at all for at least one more attempt.
    receiver.down();
    let refused_at = world.server.log().len();
    assert!(
        world
            .server
            .wait_for_log("could not connect", WAIT)
            .await
            .is_some(),
        "an attempt found the receiver down; log:\n{}",
        &world.server.log()[refused_at..]
    );
    receiver.answer(Answer::Ok);
    receiver.up().await;

    let received = receiver
        .wait_until(Duration::from_secs(90), |r| {
            has_delivered(r, &import.id, "import.completed")
        })
        .await;
    assert_life_in_order(&received, &import.id, "import.completed");
    let events = delivered(&received, &import.id);
    assert_eq!(
        events[0].id, first_id,
        "the refused event, delivered with its id"
    );
    // Order: nothing of this import arrived before the event ahead of it
    // was delivered.
    let mut done: Vec<&str> = Vec::new();
    for request in received.iter().filter(|r| r.import_id() == import.id) {
        let position = events
            .iter()
            .position(|e| e.id == request.id)
            .expect("delivered later");
        assert_eq!(
            done.len(),
            position,
            "{} ({}) was sent before the events ahead of it were delivered",
            request.id,
            request.event_type()
        );
        if (200..300).contains(&request.answered) {
            done.push(&request.id);
        }
    }
    let metrics = metrics(&world.server).await;
    assert!(
        metric(&metrics, "reeltime_webhook_attempt_failures_total") >= 3.0,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "reeltime_webhook_failures_total"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_fails_that_delivery_for_good_and_the_next_goes() {
    let receiver = WebhookReceiver::start().await;
    receiver.answer_next(1, Answer::Status(410));
    let world = world_with(base_env(&receiver)).await;
    let token = world.token("alice");
    let import = world
        .api
        .create_ok(&token, &world.content.video_url("gone.mp4", 64 << 10))
        .await;
    let received = receiver
        .wait_until(WAIT, |r| has_delivered(r, &import.id, "import.completed"))
        .await;
    let gone = &received[0];
    assert_eq!((gone.event_type(), gone.answered), ("import.created", 410));
    assert_eq!(
        received.iter().filter(|r| r.id == gone.id).count(),
        1,
        "never retried after 410"
    );
    let metrics = metrics(&world.server).await;
    assert_eq!(
        metric(&metrics, "reeltime_webhook_failures_total"),
        1.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_delivery_delivers_after_restart() {
    let receiver = WebhookReceiver::start().await;
    receiver.answer(Answer::Hold);
    let mut world = world_with(base_env(&receiver)).await;
    let token = world.token("alice");
    let import = world
        .api
        .create_ok(&token, &world.content.video_url("kill.mp4", 64 << 10))
        .await;
    let held = receiver.wait_until(WAIT, |r| !r.is_empty()).await;
    let held_id = held[0].id.clone();
    world.server.kill().await;
    receiver.answer(Answer::Ok);
    world.server.restart().await;
    let received = receiver
        .wait_until(WAIT, |r| has_delivered(r, &import.id, "import.completed"))
        .await;
    let again: Vec<&Received> = received.iter().filter(|r| r.id == held_id).collect();
    assert!(again.len() >= 2, "sent again after the restart: {again:#?}");
    assert!(again.iter().any(|r| r.answered == 204), "and delivered");
    assert_life_in_order(&received, &import.id, "import.completed");
    // Nothing left pending once the last outcome is stored (just after
    // the receiver answered).
    wait_until_async(|| async {
        metric(
            &metrics(&world.server).await,
            "reeltime_webhook_oldest_pending_seconds",
        ) == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_send_each_event_once() {
    let receiver = WebhookReceiver::start().await;
    let issuer = TestIssuer::start().await;
    let content = reeltime_testkit::ContentServer::start().await;
    let mut env = issuer.env();
    env.extend(base_env(&receiver));
    let cluster = shared_nodes(2, env).await;
    let nodes = &cluster.nodes;
    let apis: Vec<_> = nodes
        .iter()
        .map(|node| reeltime_testkit::Api::new(&node.http()))
        .collect();
    let token = issuer.token("alice", 600);
    let mut ids = Vec::new();
    for n in 0..4 {
        let import = apis[n % 2]
            .create_ok(&token, &content.video_url(&format!("two{n}.mp4"), 32 << 10))
            .await;
        ids.push(import.id);
    }
    let received = receiver
        .wait_until(Duration::from_secs(90), |r| {
            ids.iter()
                .all(|id| has_delivered(r, id, "import.completed"))
        })
        .await;
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for request in &received {
        *per_id.entry(&request.id).or_default() += 1;
    }
    assert!(
        per_id.values().all(|count| *count == 1),
        "each event sent once, by one node: {per_id:?}"
    );
    for id in &ids {
        assert_life_in_order(&received, id, "import.completed");
    }
    let senders: HashSet<&str> = received.iter().map(|r| r.user_agent.as_str()).collect();
    assert!(!senders.is_empty() && senders.len() <= 2, "{senders:?}");
}

async fn metrics(server: &ServerProcess) -> String {
    reqwest::get(format!("{}/metrics", server.http()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// `reeltime keys create` against `server`'s data dir: a server API key.
async fn server_key(server: &ServerProcess) -> String {
    let mut command = tokio::process::Command::new(binary());
    for (key, _) in std::env::vars() {
        if key.starts_with("REELTIME_") || key.starts_with("CLERK_") {
            command.env_remove(key);
        }
    }
    let output = command
        .env("REELTIME_DATA_DIR", server.data_dir())
        .args(["keys", "create", "--name", "webhooks-test"])
        .output()
        .await
        .expect("run reeltime keys create");
    let secret = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert!(
        secret.starts_with("rt_sk_"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    secret
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deliveries_api_lists_and_retries_a_failed_delivery() {
    let receiver = WebhookReceiver::start().await;
    receiver.answer_next(1, Answer::Status(410));
    let world = world_with(base_env(&receiver)).await;
    let key = server_key(&world.server).await;
    let token = world.token("alice");
    let import = world
        .api
        .create_ok(&token, &world.content.video_url("api.mp4", 32 << 10))
        .await;
    receiver
        .wait_until(WAIT, |r| has_delivered(r, &import.id, "import.completed"))
        .await;
    let gone_id = receiver.received()[0].id.clone();

    let http = reqwest::Client::new();
    let base = format!("{}/api/server/webhooks/deliveries", world.server.http());
    let get = |query: &str, bearer: &str| {
        http.get(format!("{base}?{query}"))
            .bearer_auth(bearer)
            .send()
    };
    let answer = get("status=failed", &key).await.expect("list");
    assert_eq!(answer.status(), 200);
    let failed: serde_json::Value = answer.json().await.expect("json");
    let listed = &failed["deliveries"][0];
    assert_eq!(listed["id"], gone_id.as_str());
    assert_eq!(listed["type"], "import.created");
    assert_eq!(listed["status"], "failed");
    assert_eq!(listed["last_status"], 410);
    assert_eq!(failed["deliveries"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        get("status=failed", &token).await.expect("list").status(),
        401,
        "a user token"
    );
    assert_eq!(get("status=lost", &key).await.expect("list").status(), 400);

    let retry = |id: &str| {
        http.post(format!("{base}/{id}/retry"))
            .bearer_auth(&key)
            .send()
    };
    assert_eq!(retry("msg_unknown").await.expect("retry").status(), 404);
    let answer = retry(&gone_id).await.expect("retry");
    assert_eq!(answer.status(), 202);
    let received = receiver
        .wait_until(WAIT, |r| {
            r.iter().any(|e| e.id == gone_id && e.answered == 204)
        })
        .await;
    assert!(
        received
            .iter()
            .filter(|e| e.id == gone_id)
            .all(|e| e.signature_ok)
    );
    // Recorded as delivered (the retry made it pending, then the attempt
    // delivered it), and no longer failed.
    let list = |query: &'static str| {
        let request = get(query, &key);
        async move {
            request
                .await
                .expect("list")
                .json::<serde_json::Value>()
                .await
                .expect("json")
        }
    };
    wait_until_async(|| async {
        list("status=delivered&limit=200").await["deliveries"]
            .as_array()
            .is_some_and(|all| all.iter().any(|d| d["id"] == gone_id.as_str()))
    })
    .await;
    let failed = list("status=failed").await;
    assert!(
        failed["deliveries"].as_array().is_some_and(Vec::is_empty),
        "{failed}"
    );
    assert_eq!(
        retry(&gone_id).await.expect("retry").status(),
        404,
        "delivered"
    );
}

/// The node id in a webhook User-Agent (`reeltime/<v> (node <id>) webhooks`).
fn node_of(user_agent: &str) -> String {
    user_agent
        .split("(node ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no node in {user_agent}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_node_takes_over_a_delivery_when_its_sender_dies() {
    let receiver = WebhookReceiver::start().await;
    receiver.answer(Answer::Hold);
    let issuer = TestIssuer::start().await;
    let content = reeltime_testkit::ContentServer::start().await;
    let mut env = issuer.env();
    env.extend(base_env(&receiver));
    env.extend(pairs(&[("REELTIME_JOB_LEASE_SECS", "3")]));
    let mut cluster = shared_nodes(2, env).await;
    let api = reeltime_testkit::Api::new(&cluster.nodes[0].http());
    let import = api
        .create_ok(
            &issuer.token("alice", 600),
            &content.video_url("takeover.mp4", 32 << 10),
        )
        .await;
    let held = receiver.wait_until(WAIT, |r| !r.is_empty()).await;
    let sender = node_of(&held[0].user_agent);
    let dead = cluster
        .nodes
        .iter()
        .position(|node| node.log().contains(&format!("node={sender}")))
        .expect("the sending node");
    cluster.nodes[dead].kill().await;
    receiver.answer(Answer::Ok);
    let received = receiver
        .wait_until(WAIT, |r| {
            r.iter().any(|e| e.id == held[0].id && e.answered == 204)
        })
        .await;
    let redelivered = received
        .iter()
        .find(|e| e.id == held[0].id && e.answered == 204)
        .expect("delivered");
    assert_ne!(
        node_of(&redelivered.user_agent),
        sender,
        "sent again by the surviving node, same webhook-id"
    );
    assert_eq!(redelivered.import_id(), import.id);
}
