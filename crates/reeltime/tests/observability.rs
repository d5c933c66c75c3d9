//! What an operator sees, against the real binary: `/metrics` (histograms
//! and every name the dashboard and alert rules in docs/ use), JSON logs
//! with the ids as fields, and `/readyz` following Redis and PostgreSQL as
//! they stop and come back.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{binary, follow_to_final, pairs, world};
use reeltime_testkit::{Postgres, RedisServer, ServerProcess, TestIssuer, WAIT, WsClient};
use serde_json::Value;

/// `/metrics` as text.
async fn metrics(base: &str) -> String {
    let response = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    response.text().await.expect("metrics text")
}

/// The value of the sample line `name` (with its labels) in `text`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        (key == name).then(|| value.parse().ok()).flatten()
    })
}

/// Every series name a scrape exposes: the `# TYPE` names, with the
/// `_bucket`, `_sum` and `_count` series of each histogram.
fn exposed_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                names.insert(name.to_string());
                if kind == "histogram" {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
            }
        }
    }
    names
}

/// Every `reeltime_...` name in `text` (a PromQL expression, a file).
fn used_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(at) = text[from..].find("reeltime_") {
        let start = from + at;
        let before_ok =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |n| start + n);
        if before_ok {
            names.insert(text[start..end].to_string());
        }
        from = end;
    }
    names
}

/// Waits until `/readyz` answers `status`; returns its body.
async fn readyz_until(base: &str, status: u16) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let response = reqwest::get(format!("{base}/readyz"))
            .await
            .expect("GET /readyz");
        let code = response.status().as_u16();
        let body: Value = response.json().await.expect("readyz JSON");
        if code == status {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz still {code} (wanted {status}): {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histograms_count_connects_deliveries_commits_and_closes() {
    let w = world(&[
        ("REELTIME_SYNTHETIC_IMPORTS", "1"),
        // Leases renewed every second: a renewal is seen within the test.
        ("REELTIME_JOB_LEASE_SECS", "3"),
    ])
    .await;
    let token = w.token("alice");
    let (mut ws, _) = w.socket("alice").await;
    let created = w
        .api
        .create_ok(&token, "synthetic:?duration_ms=1500&steps=5")
        .await;
    follow_to_final(&mut ws, &created.id).await;
    // A socket refused for its token, and one the client closes.
    let refused = WsClient::try_connect_query(&w.server.ws(), "not-a-token").await;
    if let Ok(mut refused) = refused {
        let (code, _) = refused.closed().await;
        assert_eq!(code, 1008);
    }
    ws.close().await;

    let base = w.server.http();
    let deadline = std::time::Instant::now() + WAIT;
    let text = loop {
        let text = metrics(&base).await;
        let closes = sample(
            &text,
            "reeltime_closes_total{code=\"none\",reason=\"peer gone\"}",
        );
        let renewals = sample(&text, "reeltime_lease_renewals_total{outcome=\"ok\"}");
        if closes.unwrap_or(0.0) >= 1.0 && renewals.unwrap_or(0.0) >= 1.0 {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no close or lease renewal counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (name, at_least) in [
        ("reeltime_connect_seconds_count", 1.0),
        ("reeltime_token_verify_seconds_count", 2.0),
        // queued, running x5 (0..1), completed: every one reached the socket.
        ("reeltime_delivery_lag_seconds_count", 5.0),
        ("reeltime_group_commit_batch_size_count", 1.0),
        ("reeltime_group_commit_write_seconds_count", 1.0),
        ("reeltime_lease_renewal_seconds_count", 1.0),
        (
            "reeltime_closes_total{code=\"1008\",reason=\"malformed token\"}",
            1.0,
        ),
        ("reeltime_connections_total", 1.0),
        ("reeltime_messages_sent_total", 6.0),
        ("reeltime_imports{status=\"completed\"}", 1.0),
    ] {
        let value = sample(&text, name).unwrap_or_else(|| panic!("no {name} in:\n{text}"));
        assert!(value >= at_least, "{name} = {value}, wanted >= {at_least}");
    }
    // A change on loopback reaches its socket well within a second.
    let lag_sum = sample(&text, "reeltime_delivery_lag_seconds_sum").expect("lag sum");
    let lag_count = sample(&text, "reeltime_delivery_lag_seconds_count").expect("lag count");
    assert!(
        lag_sum / lag_count < 1.0,
        "mean delivery lag {lag_sum}/{lag_count}"
    );
    // The old names are all still there.
    let names = exposed_names(&text);
    for old in [
        "reeltime_open_connections",
        "reeltime_connections_total",
        "reeltime_messages_sent_total",
        "reeltime_slow_client_closes_total",
        "reeltime_import_changes_stored_total",
        "reeltime_import_writes_total",
        "reeltime_jwks_fetches_total",
        "reeltime_auth_failures_total",
        "reeltime_connections_refused_total",
        "reeltime_imports",
        "reeltime_webhook_deliveries_total",
        "reeltime_webhook_attempt_failures_total",
        "reeltime_webhook_failures_total",
        "reeltime_webhook_oldest_pending_seconds",
        "reeltime_clerk_webhooks_total",
        "reeltime_waiting",
        "reeltime_tokio_alive_tasks",
    ] {
        assert!(names.contains(old), "{old} missing from /metrics:\n{text}");
    }
    assert!(
        text.lines()
            .any(|line| line.starts_with("reeltime_waiting{line=\"claim\"} ")),
        "no claim line length:\n{text}"
    );
}

/// The dashboard and the alert rules use only what a server exposes, so
/// they cannot drift apart from the code; the rules pass `promtool` when it
/// is installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_use_only_exposed_metrics() {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    let dashboard_text =
        std::fs::read_to_string(docs.join("grafana-dashboard.json")).expect("dashboard");
    let dashboard: Value = serde_json::from_str(&dashboard_text).expect("dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "only {} panels", panels.len());
    let mut exprs = String::new();
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push_str(target["expr"].as_str().expect("expr"));
            exprs.push('\n');
        }
    }
    let alerts = std::fs::read_to_string(docs.join("alerts.yml")).expect("alerts.yml");

    let w = world(&[]).await;
    let exposed = exposed_names(&metrics(&w.server.http()).await);
    for (file, text) in [("grafana-dashboard.json", &exprs), ("alerts.yml", &alerts)] {
        let used = used_names(text);
        assert!(used.len() >= 5, "{file} uses only {used:?}");
        let unknown: Vec<_> = used.difference(&exposed).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics no server exposes: {unknown:?}\nexposed: {exposed:?}"
        );
    }

    if let Ok(output) = std::process::Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(docs.join("alerts.yml"))
        .output()
    {
        assert!(
            output.status.success(),
            "promtool check rules: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    } else {
        eprintln!("promtool not installed (apt-get install prometheus): rules not checked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_ids_as_fields_and_never_a_token() {
    let w = world(&[
        ("REELTIME_LOG_FORMAT", "json"),
        ("REELTIME_SYNTHETIC_IMPORTS", "1"),
    ])
    .await;
    let token = w.token("alice");
    let (mut ws, _) = w.socket("alice").await;
    let created = w
        .api
        .create_ok(&token, "synthetic:?duration_ms=300&steps=3")
        .await;
    follow_to_final(&mut ws, &created.id).await;
    // A refused token: its line says why, never what.
    let rogue = format!("{token}x");
    if let Ok(mut refused) = WsClient::try_connect_query(&w.server.ws(), &rogue).await {
        refused.closed().await;
    }
    ws.close().await;
    let (status, _) = w.api.get(&token, "/api/imports?marker=last").await;
    assert_eq!(status, 200);
    w.server
        .wait_for_log("marker=last", WAIT)
        .await
        .expect("marker request logged");

    let log = w.server.log();
    let mut lines = Vec::new();
    for line in log.lines().filter(|line| !line.trim().is_empty()) {
        let parsed: Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("not a JSON line ({err}): {line}"));
        for field in ["timestamp", "level", "target", "message"] {
            assert!(parsed.get(field).is_some(), "no {field} in {line}");
        }
        lines.push(parsed);
    }
    assert!(lines.len() >= 3, "only {} lines:\n{log}", lines.len());
    let ready = lines
        .iter()
        .find(|line| line["message"] == "websocket ready")
        .unwrap_or_else(|| panic!("no `websocket ready` line:\n{log}"));
    assert_eq!(ready["span"]["user_id"], "alice", "{ready}");
    assert!(
        ready["span"]["connection_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{ready}"
    );
    let job = lines
        .iter()
        .find(|line| line["message"] == "import job started")
        .unwrap_or_else(|| panic!("no `import job started` line:\n{log}"));
    assert_eq!(job["span"]["import_id"], created.id.as_str(), "{job}");
    assert_eq!(job["span"]["user_id"], "alice", "{job}");
    assert!(
        lines
            .iter()
            .any(|line| line["message"] == "websocket authentication refused"),
        "no refusal line:\n{log}"
    );
    assert!(!log.contains(&token), "a token reached the log:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_redis_while_it_is_down() {
    let mut redis = RedisServer::start().await;
    let issuer = TestIssuer::start().await;
    let mut env = issuer.env();
    env.extend(pairs(&[("REELTIME_REDIS_URL", &redis.url())]));
    let server = ServerProcess::start(binary(), &env).await;
    let base = server.http();

    let up = readyz_until(&base, 200).await;
    assert_eq!(up["ready"], true, "{up}");
    assert_eq!(up["checks"]["bus"], "ok", "{up}");
    assert_eq!(up["checks"]["database"], "ok", "{up}");
    assert_eq!(up["status"], "ready", "{up}");

    redis.stop().await;
    let down = readyz_until(&base, 503).await;
    assert_eq!(down["ready"], false, "{down}");
    assert_eq!(down["checks"]["database"], "ok", "{down}");
    let bus = down["checks"]["bus"].as_str().expect("bus check text");
    assert!(bus.starts_with("redis: "), "{down}");

    redis.start_again().await;
    let back = readyz_until(&base, 200).await;
    assert_eq!(back["checks"]["bus"], "ok", "{back}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_the_database_while_postgres_is_down() {
    let mut postgres = Postgres::start().await;
    let url = postgres.create_database("readyz").await;
    let issuer = TestIssuer::start().await;
    let mut env = issuer.env();
    env.extend(pairs(&[("REELTIME_DATABASE_URL", &url)]));
    let server = ServerProcess::start(binary(), &env).await;
    let base = server.http();

    let up = readyz_until(&base, 200).await;
    assert_eq!(up["checks"]["database"], "ok", "{up}");

    postgres.stop().await;
    let down = readyz_until(&base, 503).await;
    assert_eq!(down["ready"], false, "{down}");
    assert_eq!(down["checks"]["bus"], "ok", "{down}");
    let database = down["checks"]["database"].as_str().expect("database text");
    assert_ne!(database, "ok", "{down}");

    postgres.start_again().await;
    let back = readyz_until(&base, 200).await;
    assert_eq!(back["checks"]["database"], "ok", "{back}");
}
