//! examples/backend-python (a FastAPI app standing for the app's backend)
//! run against the real server: it verifies the test issuer's tokens for
//! its own routes, creates external imports with a server key made by the
//! real `reeltime keys create`, and reports their progress, which the
//! user's tab sees live; a cancel in the browser stops its worker through
//! the 409 of its next report; the server's webhooks reach its
//! `/webhooks/reeltime`, verified there by the `standardwebhooks` PyPI
//! package. The virtualenv is made once under target/ (python3 -m venv and
//! pip from PyPI).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{binary, wait_for};
use reeltime_protocol::ImportStatus;
use reeltime_testkit::WAIT;
use serde_json::{Value, json};

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/backend-python")
}

/// A virtualenv with the example's requirements, made once per contents
/// of requirements.txt.
fn venv() -> PathBuf {
    let requirements = example_dir().join("requirements.txt");
    let text = std::fs::read_to_string(&requirements).expect("requirements.txt");
    let tag: u64 = text.bytes().fold(1469598103934665603u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(1099511628211)
    });
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target")
        .join(format!("backend-python-venv-{tag:x}"));
    if dir.join("ready").exists() {
        return dir;
    }
    let status = std::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(&dir)
        .status()
        .expect("python3 -m venv");
    assert!(status.success(), "python3 -m venv failed");
    let status = std::process::Command::new(dir.join("bin/pip"))
        .args(["install", "-q", "-r"])
        .arg(&requirements)
        .status()
        .expect("pip");
    assert!(status.success(), "pip install failed");
    std::fs::write(dir.join("ready"), b"").expect("mark ready");
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test]
async fn the_python_backend_drives_external_imports_a_tab_watches() {
    let venv = tokio::task::spawn_blocking(venv).await.expect("venv");
    let port = free_port();
    let secret_key = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let webhook_url = format!("http://127.0.0.1:{port}/webhooks/reeltime");
    // The example may come up after the first events: retries, shortened.
    let world = common::world(&[
        ("REELTIME_WEBHOOK_URL", &webhook_url),
        ("REELTIME_WEBHOOK_SECRET", secret_key),
        ("REELTIME_WEBHOOK_RETRY_SCALE", "0.001"),
    ])
    .await;
    let output = tokio::process::Command::new(binary())
        .env_remove("REELTIME_DATABASE_URL")
        .env("REELTIME_DATA_DIR", world.server.data_dir())
        .args(["keys", "create", "--name", "backend-python"])
        .output()
        .await
        .expect("reeltime keys create");
    assert!(output.status.success());
    let secret = String::from_utf8_lossy(&output.stdout).trim().to_string();

    let mut app = tokio::process::Command::new(venv.join("bin/uvicorn"))
        .args([
            "app:app",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .current_dir(example_dir())
        .env("REELTIME_URL", world.server.http())
        .env("REELTIME_SERVER_KEY", &secret)
        .env("CLERK_JWKS_URL", world.issuer.jwks_url())
        .env(
            "CLERK_ISSUER",
            world
                .issuer
                .env()
                .iter()
                .find(|(k, _)| k == "REELTIME_ISSUER")
                .map(|(_, v)| v.clone())
                .expect("issuer"),
        )
        .env("REELTIME_WEBHOOK_SECRET", secret_key)
        .env("RENDER_STEP_SECONDS", "0.15")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("uvicorn");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(WAIT)
        .build()
        .unwrap();
    common::wait_until_async(|| {
        let http = http.clone();
        let url = format!("{base}/healthz");
        async move {
            http.get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;

    let token = world.token("user_python");
    let (mut tab, _) = world.socket("user_python").await;
    let refused = http
        .post(format!("{base}/renders"))
        .json(&json!({"steps": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401, "the example checks tokens");

    let start_render = |title: &str, steps: u32| {
        let request = http
            .post(format!("{base}/renders"))
            .bearer_auth(&token)
            .json(&json!({"title": title, "steps": steps}));
        async move {
            let response = request.send().await.expect("POST /renders");
            assert_eq!(response.status().as_u16(), 201);
            response.json::<Value>().await.expect("JSON")
        }
    };
    let started = start_render("Holiday cut", 4).await;
    let id = started["import"]["id"]
        .as_str()
        .expect("an import id")
        .to_string();
    let render_id = started["render_id"].as_str().unwrap().to_string();
    let states = common::follow_to_final(&mut tab, &id).await;
    let last = states.last().unwrap();
    assert_eq!(last.status, ImportStatus::Completed);
    assert_eq!(last.metadata, Some(json!({"render_id": render_id})));
    assert_eq!(
        last.result,
        Some(json!({"render_id": render_id, "parts": 4}))
    );
    assert!(
        states
            .iter()
            .any(|s| s.stage.as_deref() == Some("rendering part 1 of 4")),
        "{states:?}"
    );

    // The webhooks of its life reached the example, verified there, in
    // order; a forged one is refused.
    let render_url = format!("{base}/renders/{render_id}");
    let deadline = std::time::Instant::now() + WAIT;
    let events = loop {
        let render: Value = http
            .get(&render_url)
            .bearer_auth(&token)
            .send()
            .await
            .expect("GET /renders/{id}")
            .json()
            .await
            .expect("JSON");
        let events = render["events"].as_array().cloned().unwrap_or_default();
        if events.iter().any(|e| e["type"] == "import.completed") {
            break events;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no import.completed webhook reached the example: {events:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types.first(), Some(&"import.created"), "{events:?}");
    assert_eq!(types.last(), Some(&"import.completed"), "{events:?}");
    assert!(types.contains(&"import.status_changed"), "{events:?}");
    let versions: Vec<u64> = events
        .iter()
        .filter_map(|e| e["version"].as_u64())
        .collect();
    assert!(versions.windows(2).all(|w| w[0] <= w[1]), "{events:?}");
    let forged = http
        .post(format!("{base}/webhooks/reeltime"))
        .header("webhook-id", "msg_forged")
        .header(
            "webhook-timestamp",
            chrono::Utc::now().timestamp().to_string(),
        )
        .header(
            "webhook-signature",
            "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .body(r#"{"type":"import.completed","timestamp":"x","data":{}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 400, "a forged webhook is refused");

    // Cancelled in the browser: the worker stops at its next report.
    let slow = start_render("Long cut", 200).await;
    let slow_id = slow["import"]["id"].as_str().unwrap().to_string();
    let slow_render = slow["render_id"].as_str().unwrap().to_string();
    wait_for(&mut tab, &slow_id, |i| i.status == ImportStatus::Processing).await;
    let (status, _) = world
        .api
        .post(&token, &format!("/api/imports/{slow_id}/cancel"))
        .await;
    assert_eq!(status, 200);
    common::wait_until_async(|| {
        let request = http
            .get(format!("{base}/renders/{slow_render}"))
            .bearer_auth(&token);
        async move {
            match request.send().await {
                Ok(response) => response
                    .json::<Value>()
                    .await
                    .is_ok_and(|render| render["state"] == "cancelled"),
                Err(_) => false,
            }
        }
    })
    .await;
    let _ = app.kill().await;
}
