//! The app's backend against the real server (issue 13, part 1): server
//! API keys made by the real `reeltime keys` command, user and server
//! credentials refused on each other's endpoints (and on the socket),
//! Idempotency-Key, metadata, and external imports driven through their
//! life by a "worker" (this test) while the user's tabs watch, on one node
//! and on two nodes sharing PostgreSQL and Redis.

mod common;

use std::time::{Duration, Instant};

use common::{assert_monotonic, binary, wait_for};
use reeltime_protocol::{Import, ImportStatus};
use reeltime_testkit::{Api, Postgres, RedisServer, ServerProcess, TestIssuer, WAIT, WsClient};
use serde_json::{Value, json};

/// Runs `reeltime keys ARGS` with the server's database settings; returns
/// (exit code, stdout, stderr).
async fn keys(env: &[(String, String)], args: &[&str]) -> (i32, String, String) {
    let mut command = tokio::process::Command::new(binary());
    for (key, _) in std::env::vars() {
        if key.starts_with("REELTIME_") || key.starts_with("CLERK_") {
            command.env_remove(key);
        }
    }
    let output = command
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .arg("keys")
        .args(args)
        .output()
        .await
        .expect("run reeltime keys");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `reeltime keys create --name NAME`'s secret.
async fn create_key(env: &[(String, String)], name: &str) -> String {
    let (code, stdout, stderr) = keys(env, &["create", "--name", name]).await;
    assert_eq!(code, 0, "keys create failed: {stderr}");
    let secret = stdout.trim().to_string();
    assert!(secret.starts_with("rt_sk_"), "{stdout}");
    secret
}

fn data_dir_env(server: &ServerProcess) -> Vec<(String, String)> {
    vec![(
        "REELTIME_DATA_DIR".to_string(),
        server.data_dir().display().to_string(),
    )]
}

/// A server API client: the key as bearer.
struct Backend {
    http: reqwest::Client,
    base: String,
    key: String,
}

/// An answer: status, `Idempotent-Replayed` header, JSON body.
struct Answer {
    status: u16,
    replayed: Option<String>,
    body: Value,
}

impl Backend {
    fn new(base: &str, key: &str) -> Backend {
        Backend {
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(WAIT)
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .expect("client"),
            base: base.to_string(),
            key: key.to_string(),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let replayed = response
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = response.bytes().await.expect("body");
        Answer {
            status,
            replayed,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    async fn post_with_key(&self, path: &str, body: &Value, key: &str) -> Answer {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("Idempotency-Key", key)
                .json(body),
        )
        .await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// Creates an external import for `user`; returns it.
    async fn external(&self, user: &str, metadata: Value) -> Import {
        let answer = self
            .post(
                "/api/server/imports",
                &json!({"user_id": user, "source": "external", "title": "render", "metadata": metadata}),
            )
            .await;
        assert_eq!(answer.status, 201, "{}", answer.body);
        serde_json::from_value(answer.body).expect("an import")
    }

    async fn report(&self, id: &str, body: Value) -> Answer {
        self.post(&format!("/api/server/imports/{id}/progress"), &body)
            .await
    }
}

fn code(answer: &Answer) -> &str {
    answer.body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn keys_are_made_listed_and_revoked_and_never_mixed_up_with_user_tokens() {
    let world = common::world(&[]).await;
    let env = data_dir_env(&world.server);
    let secret = create_key(&env, "backend").await;
    let (_, listed, _) = keys(&env, &["list"]).await;
    let line = listed
        .lines()
        .find(|line| line.starts_with("backend "))
        .unwrap_or_else(|| panic!("backend not listed: {listed}"));
    assert!(line.contains("never") && line.contains("active"), "{line}");
    // A second live key of that name is refused.
    let (code_again, _, stderr) = keys(&env, &["create", "--name", "backend"]).await;
    assert_ne!(code_again, 0);
    assert!(stderr.contains("already exists"), "{stderr}");

    let backend = Backend::new(&world.server.http(), &secret);
    let listed = backend.get("/api/server/imports").await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let (_, listed, _) = keys(&env, &["list"]).await;
    let line = listed.lines().find(|l| l.starts_with("backend ")).unwrap();
    assert!(!line.contains("never"), "last use recorded: {line}");

    // A user's token on the server API: 401.
    let user_token = world.token("user_alice");
    let (status, body) = world.api.get(&user_token, "/api/server/imports").await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("server API key")
    );
    let (status, _) = world
        .api
        .post(&user_token, "/api/server/imports/x/cancel")
        .await;
    assert_eq!(status, 401);
    let no_auth = Backend::new(&world.server.http(), "");
    assert_eq!(no_auth.get("/api/server/imports").await.status, 401);
    let wrong = Backend::new(
        &world.server.http(),
        "rt_sk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    );
    assert_eq!(wrong.get("/api/server/imports").await.status, 401);

    // The server key on the user endpoints: 401; on the socket: 1008.
    for path in ["/api/imports", "/api/me"] {
        let (status, body) = world.api.get(&secret, path).await;
        assert_eq!(status, 401, "{path}: {body}");
    }
    let (status, _) = world
        .api
        .create_import(&secret, &world.content.video_url("a.mp4", 1024))
        .await;
    assert_eq!(status, 401);
    let mut socket = WsClient::connect_query(&world.server.ws(), &secret).await;
    let (close, reason) = socket.closed().await;
    assert_eq!(close, 1008, "{reason}");
    let mut socket = WsClient::connect_first_message(&world.server.ws(), &secret).await;
    assert_eq!(socket.closed().await.0, 1008);

    // Revoked: refused at the next request.
    let (code_revoke, _, stderr) = keys(&env, &["revoke", "backend"]).await;
    assert_eq!(code_revoke, 0, "{stderr}");
    let refused = backend.get("/api/server/imports").await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    let (_, listed, _) = keys(&env, &["list"]).await;
    assert!(listed.contains("revoked"), "{listed}");
    assert!(
        !world.server.log().contains(&secret),
        "the key reached the log"
    );
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer_and_refuses_another_body() {
    let world = common::world(&[]).await;
    let secret = create_key(&data_dir_env(&world.server), "backend").await;
    let backend = Backend::new(&world.server.http(), &secret);
    let body = json!({"user_id": "user_bob", "source": "external", "metadata": {"job": 1}});
    let first = backend
        .post_with_key("/api/server/imports", &body, "create-job-1")
        .await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.replayed.as_deref(), Some("false"));
    let again = backend
        .post_with_key("/api/server/imports", &body, "create-job-1")
        .await;
    assert_eq!(again.status, 201);
    assert_eq!(again.replayed.as_deref(), Some("true"));
    assert_eq!(again.body, first.body, "the first answer, as it was");
    let other = json!({"user_id": "user_bob", "source": "external", "metadata": {"job": 2}});
    let refused = backend
        .post_with_key("/api/server/imports", &other, "create-job-1")
        .await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert_eq!(code(&refused), "idempotency_key_reused");

    // Concurrent duplicates: exactly one runs.
    let job3 = json!({"user_id": "user_bob", "source": "external", "metadata": {"job": 3}});
    let racing =
        (0..6).map(|_| backend.post_with_key("/api/server/imports", &job3, "create-job-3"));
    let answers = futures_util::future::join_all(racing).await;
    let mut ids = std::collections::HashSet::new();
    for answer in &answers {
        match answer.status {
            201 => {
                ids.insert(answer.body["id"].as_str().unwrap().to_string());
            }
            409 => assert_eq!(code(answer), "idempotency_key_in_use"),
            other => panic!("unexpected {other}: {}", answer.body),
        }
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let listed = backend.get("/api/server/imports?user_id=user_bob").await;
    assert_eq!(
        listed.body["imports"].as_array().unwrap().len(),
        2,
        "one import per key: {}",
        listed.body
    );
    // A report's retry is replayed, not applied twice.
    let id = first.body["id"].as_str().unwrap();
    let path = format!("/api/server/imports/{id}/progress");
    let report = json!({"progress": 0.5});
    let stored = backend.post_with_key(&path, &report, "tick-1").await;
    assert_eq!(stored.status, 200, "{}", stored.body);
    let replay = backend.post_with_key(&path, &report, "tick-1").await;
    assert_eq!(
        (replay.status, replay.replayed.as_deref()),
        (200, Some("true"))
    );
    assert_eq!(replay.body["version"], stored.body["version"]);
}

#[tokio::test]
async fn metadata_travels_on_rest_and_socket_and_is_capped_at_4_kib() {
    let world = common::world(&[]).await;
    let secret = create_key(&data_dir_env(&world.server), "backend").await;
    let backend = Backend::new(&world.server.http(), &secret);
    let (mut tab, _) = world.socket("user_carol").await;
    let token = world.token("user_carol");

    // From the browser.
    let url = world.content.video_url("clip.mp4", 4096);
    let response = world
        .api
        .http
        .post(format!("{}/api/imports", world.server.http()))
        .bearer_auth(&token)
        .json(&json!({"url": url, "metadata": {"album": "summer", "n": 3}}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 201);
    let created: Import = response.json().await.expect("import");
    assert_eq!(created.metadata, Some(json!({"album": "summer", "n": 3})));
    let seen = wait_for(&mut tab, &created.id, |_| true).await;
    assert_eq!(seen.metadata, created.metadata, "on the socket too");
    let (_, fetched) = world
        .api
        .get(&token, &format!("/api/imports/{}", created.id))
        .await;
    assert_eq!(fetched["metadata"], json!({"album": "summer", "n": 3}));

    // From the backend.
    let external = backend
        .external("user_carol", json!({"asset": "a-1"}))
        .await;
    let seen = wait_for(&mut tab, &external.id, |_| true).await;
    assert_eq!(seen.metadata, Some(json!({"asset": "a-1"})));
    let read = backend
        .get(&format!("/api/server/imports/{}", external.id))
        .await;
    assert_eq!(read.body["metadata"], json!({"asset": "a-1"}));

    // 4 KiB serialized is the most; not an object is refused.
    let fits = json!({"k": "x".repeat(4096 - 8)});
    assert_eq!(serde_json::to_string(&fits).unwrap().len(), 4096);
    let ok = backend
        .post(
            "/api/server/imports",
            &json!({"user_id": "user_carol", "source": "external", "metadata": fits}),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    let big = json!({"k": "x".repeat(4096)});
    for body in [
        json!({"user_id": "user_carol", "source": "external", "metadata": big}),
        json!({"user_id": "user_carol", "source": "external", "metadata": [1, 2]}),
    ] {
        let refused = backend.post("/api/server/imports", &body).await;
        assert_eq!(refused.status, 400, "{}", refused.body);
        assert_eq!(code(&refused), "invalid_metadata");
    }
    let response = world
        .api
        .http
        .post(format!("{}/api/imports", world.server.http()))
        .bearer_auth(&token)
        .json(&json!({"url": url, "metadata": {"k": "x".repeat(5000)}}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 400);
}

#[tokio::test]
async fn an_external_import_takes_reports_forward_only_until_it_is_final() {
    let world = common::world(&[]).await;
    let secret = create_key(&data_dir_env(&world.server), "backend").await;
    let backend = Backend::new(&world.server.http(), &secret);
    let (mut tab, _) = world.socket("user_dan").await;

    let import = backend.external("user_dan", json!({"job": "j1"})).await;
    assert_eq!(import.status, ImportStatus::Queued);
    assert_eq!(import.source_url, None);
    let first = backend
        .report(
            &import.id,
            json!({"progress": 0.5, "stage": "encoding", "bytes_done": 10, "bytes_total": 100}),
        )
        .await;
    assert_eq!(
        first.status, 200,
        "a status change is stored at once: {}",
        first.body
    );
    assert_eq!(first.body["status"], "processing");
    assert_eq!(first.body["stage"], "encoding");
    let back = backend.report(&import.id, json!({"progress": 0.3})).await;
    assert_eq!(back.status, 409, "{}", back.body);
    assert_eq!(code(&back), "progress_backwards");
    let bad = backend.report(&import.id, json!({"progress": 2})).await;
    assert_eq!(bad.status, 400);
    let typo = backend.report(&import.id, json!({"progres": 0.9})).await;
    assert_eq!(typo.status, 400, "unknown fields are refused");
    let done = backend
        .post(
            &format!("/api/server/imports/{}/complete", import.id),
            &json!({"result": {"asset_id": "a-9"}}),
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.body["status"], "completed");
    assert_eq!(done.body["result"], json!({"asset_id": "a-9"}));
    let late = backend.report(&import.id, json!({"progress": 0.9})).await;
    assert_eq!((late.status, code(&late)), (409, "already_finished"));
    let late_fail = backend
        .post(
            &format!("/api/server/imports/{}/fail", import.id),
            &json!({"error": {"code": "x", "message": "y"}}),
        )
        .await;
    assert_eq!(late_fail.status, 409);
    let states = common::follow_to_final(&mut tab, &import.id).await;
    assert!(
        states.iter().all(|s| s.status != ImportStatus::Downloading),
        "no node ran it: {states:?}"
    );
    assert_eq!(
        states.last().unwrap().result,
        Some(json!({"asset_id": "a-9"}))
    );

    // Cancelled in the browser: the worker's next report is 409.
    let second = backend.external("user_dan", json!({"job": "j2"})).await;
    assert_eq!(
        backend
            .report(&second.id, json!({"progress": 0.1}))
            .await
            .status,
        200
    );
    let token = world.token("user_dan");
    let (status, _) = world
        .api
        .post(&token, &format!("/api/imports/{}/cancel", second.id))
        .await;
    assert_eq!(status, 200);
    let after = backend.report(&second.id, json!({"progress": 0.2})).await;
    assert_eq!((after.status, code(&after)), (409, "import_cancelled"));

    // A failure is stored with its error; reports on a URL import are refused.
    let third = backend.external("user_dan", Value::Null).await;
    let failed = backend
        .post(
            &format!("/api/server/imports/{}/fail", third.id),
            &json!({"error": {"code": "encode_failed", "message": "the encoder crashed"}}),
        )
        .await;
    assert_eq!(failed.status, 200, "{}", failed.body);
    assert_eq!(failed.body["error"]["code"], "encode_failed");
    let url_import = world
        .api
        .create_ok(&token, &world.content.video_url("v.mp4", 2048))
        .await;
    let refused = backend
        .report(&url_import.id, json!({"progress": 0.5}))
        .await;
    assert_eq!((refused.status, code(&refused)), (409, "not_external"));

    // The listing filters by user and status; delete needs a final import.
    let failed_list = backend
        .get("/api/server/imports?user_id=user_dan&status=failed")
        .await;
    let ids: Vec<&str> = failed_list.body["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![third.id.as_str()]);
    let deleted = backend
        .send(
            backend
                .http
                .delete(format!("{}/api/server/imports/{}", backend.base, third.id)),
        )
        .await;
    assert_eq!(deleted.status, 204);
    assert_eq!(
        backend
            .get(&format!("/api/server/imports/{}", third.id))
            .await
            .status,
        404
    );
}

/// Stored progress changes of one import, as a tab saw them: never two
/// within 100 ms (the stored `updated_at`, to the millisecond).
fn assert_spaced(states: &[Import]) {
    let progress: Vec<&Import> = states
        .iter()
        .filter(|s| s.status == ImportStatus::Processing)
        .collect();
    for pair in progress.windows(2) {
        let gap = pair[1].updated_at - pair[0].updated_at;
        assert!(
            gap.num_milliseconds() >= 99,
            "two stored changes {} ms apart (versions {} and {})",
            gap.num_milliseconds(),
            pair[0].version,
            pair[1].version
        );
    }
}

#[tokio::test]
async fn reports_faster_than_ten_a_second_are_merged_not_refused() {
    let world = common::world(&[]).await;
    let secret = create_key(&data_dir_env(&world.server), "backend").await;
    let backend = Backend::new(&world.server.http(), &secret);
    let (mut tab, _) = world.socket("user_erin").await;
    let import = backend.external("user_erin", Value::Null).await;
    let started = Instant::now();
    let mut merged = 0;
    // A worker reporting every ~10 ms for about a second: ten times the
    // rate that is stored.
    for step in 1..=100u32 {
        let answer = backend
            .report(
                &import.id,
                json!({"progress": f64::from(step) / 100.0, "bytes_done": step}),
            )
            .await;
        match answer.status {
            200 => {}
            202 => merged += 1,
            other => panic!("report {step} refused with {other}: {}", answer.body),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    // The last report wins, stored within its turn.
    let mut seen: Vec<Import> = tab
        .imports_until(|i| i.id == import.id && i.progress == Some(1.0))
        .await
        .into_iter()
        .filter(|i| i.id == import.id)
        .collect();
    let last = seen.last().cloned().expect("the last report");
    assert_eq!(last.bytes_done, 100);
    let stored_changes = last.version - 1; // version 1 is the creation
    // The first report, one per 100 ms turn, the last flush (and a millisecond of rounding).
    let allowed = 3 + (elapsed.as_millis() as u64 / 100);
    assert!(
        stored_changes <= allowed,
        "{stored_changes} stored changes for 100 reports in {elapsed:?} ({merged} merged)"
    );
    // Merged reports are stored in their turns while reports keep coming,
    // not only at the end.
    assert!(
        merged > 0 && stored_changes >= 4,
        "{stored_changes} stored, {merged} merged in {elapsed:?}"
    );
    let done = backend
        .post(
            &format!("/api/server/imports/{}/complete", import.id),
            &json!({}),
        )
        .await;
    assert_eq!(done.status, 200);
    seen.extend(common::follow_to_final(&mut tab, &import.id).await);
    assert_eq!(seen.last().unwrap().status, ImportStatus::Completed);
    assert_monotonic(&seen);
    assert_spaced(&seen);
    println!("100 reports in {elapsed:?}: {stored_changes} stored, {merged} merged");
}

/// Two nodes on one PostgreSQL and one Redis; the worker reports to both
/// in turn, and a tab on each node watches.
#[tokio::test]
async fn an_external_import_driven_through_two_nodes_reaches_tabs_on_both() {
    let issuer = TestIssuer::start().await;
    let (postgres, redis) = tokio::join!(Postgres::start(), RedisServer::start());
    let database = postgres.create_database("reeltime").await;
    let mut env = issuer.env();
    env.extend(common::pairs(&[
        ("REELTIME_DATABASE_URL", &database),
        ("REELTIME_REDIS_URL", &redis.url()),
        ("REELTIME_MEDIA_PROCESSING", "off"),
    ]));
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let node = ServerProcess::start(binary(), &env).await;
        assert!(
            node.wait_for_log("redis bus: subscribed", WAIT)
                .await
                .is_some(),
            "{}",
            node.log()
        );
        nodes.push(node);
    }
    let secret = create_key(
        &common::pairs(&[("REELTIME_DATABASE_URL", &database)]),
        "backend",
    )
    .await;
    let backends: Vec<Backend> = nodes
        .iter()
        .map(|node| Backend::new(&node.http(), &secret))
        .collect();
    let token = issuer.token("user_fay", 600);
    let (mut tab_a, _, _) = WsClient::open(&nodes[0].ws(), &token).await;
    let (mut tab_b, _, _) = WsClient::open(&nodes[1].ws(), &token).await;

    let import = backends[0]
        .external("user_fay", json!({"render": 77}))
        .await;
    for tab in [&mut tab_a, &mut tab_b] {
        let seen = wait_for(tab, &import.id, |_| true).await;
        assert_eq!(seen.metadata, Some(json!({"render": 77})));
    }
    // Reports alternate between the nodes, some faster than the turn.
    for step in 1..=20u32 {
        let answer = backends[(step % 2) as usize]
            .report(
                &import.id,
                json!({"progress": f64::from(step) / 25.0, "stage": format!("part {step}")}),
            )
            .await;
        assert!(
            matches!(answer.status, 200 | 202),
            "step {step}: {} {}",
            answer.status,
            answer.body
        );
        if step % 5 == 0 {
            // The worker's own pace: a pause now and then, longer than a
            // turn (not a wait for anything the test checks).
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
    let done = backends[1]
        .post(
            &format!("/api/server/imports/{}/complete", import.id),
            &json!({"result": {"frames": 1200}}),
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    let mut finals = Vec::new();
    for tab in [&mut tab_a, &mut tab_b] {
        let states = common::follow_to_final(tab, &import.id).await;
        assert_spaced(&states);
        let last = states.last().unwrap().clone();
        assert_eq!(last.status, ImportStatus::Completed);
        assert_eq!(last.result, Some(json!({"frames": 1200})));
        finals.push(last);
    }
    assert_eq!(finals[0].version, finals[1].version, "both tabs end equal");
    let late = backends[0]
        .report(&import.id, json!({"progress": 1.0}))
        .await;
    assert_eq!(late.status, 409);

    // The same Idempotency-Key sent to both nodes at once: one import.
    let body = json!({"user_id": "user_fay", "source": "external", "metadata": {"job": "twice"}});
    let (a, b) = tokio::join!(
        backends[0].post_with_key("/api/server/imports", &body, "job-twice"),
        backends[1].post_with_key("/api/server/imports", &body, "job-twice"),
    );
    let created: Vec<&Answer> = [&a, &b].into_iter().filter(|x| x.status == 201).collect();
    assert!(
        !created.is_empty(),
        "{} {} / {} {}",
        a.status,
        a.body,
        b.status,
        b.body
    );
    for other in [&a, &b].into_iter().filter(|x| x.status != 201) {
        assert_eq!((other.status, code(other)), (409, "idempotency_key_in_use"));
    }
    if created.len() == 2 {
        assert_eq!(
            created[0].body["id"], created[1].body["id"],
            "replayed, not run twice"
        );
    }
    let twice = backends[1]
        .get("/api/server/imports?user_id=user_fay&status=queued")
        .await;
    let queued = twice.body["imports"].as_array().unwrap();
    assert_eq!(queued.len(), 1, "{}", twice.body);
    let third = backends[1]
        .post_with_key(
            "/api/server/imports",
            &json!({"user_id": "user_fay", "source": "external"}),
            "job-twice",
        )
        .await;
    assert_eq!(third.status, 422, "another body, same key, other node");

    // The browser cancels on one node; the worker hears it on the other.
    let second = backends[1].external("user_fay", Value::Null).await;
    assert_eq!(
        backends[1]
            .report(&second.id, json!({"progress": 0.2}))
            .await
            .status,
        200
    );
    let api = Api::new(&nodes[1].http());
    let (status, _) = api
        .post(&token, &format!("/api/imports/{}/cancel", second.id))
        .await;
    assert_eq!(status, 200);
    let refused = backends[0]
        .report(&second.id, json!({"progress": 0.3}))
        .await;
    assert_eq!((refused.status, code(&refused)), (409, "import_cancelled"));
    for tab in [&mut tab_a, &mut tab_b] {
        let seen = wait_for(tab, &second.id, |i| i.status.is_final()).await;
        assert_eq!(seen.status, ImportStatus::Cancelled);
    }
}

#[tokio::test]
async fn the_backend_creates_url_imports_for_a_user_whose_tabs_see_them_run() {
    // A browser gets one import a minute here; the app's backend is not
    // held to the browsers' creation rate.
    let world = common::world(&[
        ("REELTIME_IMPORT_RATE_PER_MIN", "1"),
        ("REELTIME_IMPORT_RATE_BURST", "1"),
    ])
    .await;
    let secret = create_key(&data_dir_env(&world.server), "backend").await;
    let backend = Backend::new(&world.server.http(), &secret);
    let (mut tab, _) = world.socket("user_gus").await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let url = world
            .content
            .video_url(&format!("server-{n}.mp4"), 8 * 1024);
        let created = backend
            .post(
                "/api/server/imports",
                &json!({"user_id": "user_gus", "url": url, "title": format!("clip {n}")}),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.body);
        assert_eq!(created.body["source"], "url");
        ids.push(created.body["id"].as_str().unwrap().to_string());
    }
    let mut finished = std::collections::HashMap::new();
    tab.imports_until(|i| {
        if ids.contains(&i.id) && i.status.is_final() {
            finished.insert(i.id.clone(), i.status);
        }
        finished.len() == ids.len()
    })
    .await;
    assert!(
        finished.values().all(|s| *s == ImportStatus::Completed),
        "{finished:?}"
    );
    let token = world.token("user_gus");
    let (_, page) = world.api.get(&token, "/api/imports").await;
    assert_eq!(page["imports"].as_array().unwrap().len(), 3, "{page}");
    // The browser is still held to its rate.
    let url = world.content.video_url("browser.mp4", 1024);
    assert_eq!(world.api.create_import(&token, &url).await.0, 201);
    assert_eq!(world.api.create_import(&token, &url).await.0, 429);
    // Bad requests name what is wrong.
    for (body, expected) in [
        (json!({"user_id": "", "url": url}), "user_id"),
        (
            json!({"user_id": "u", "source": "external", "url": url}),
            "no url",
        ),
        (json!({"user_id": "u"}), "url is required"),
        (json!({"user_id": "u", "source": "ftp"}), "source must be"),
    ] {
        let refused = backend.post("/api/server/imports", &body).await;
        assert_eq!(refused.status, 400, "{body}");
        let message = refused.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{message}");
    }
    let bad_status = backend.get("/api/server/imports?status=nope").await;
    assert_eq!(bad_status.status, 400);
}
