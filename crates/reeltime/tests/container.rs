//! The container image (`Containerfile`), run as an operator would with
//! podman: its defaults (non-root user, port, volume, REELTIME_* settings),
//! a real token against a real JWKS issuer, an import that the image's own
//! ffmpeg transcodes into the volume, a clean `podman stop`, the data still
//! there for the next container, and the published port.
//!
//! It needs podman and a built image, so it is ignored by `cargo test`;
//! `scripts/container --test` builds the image and runs it with
//! `REELTIME_IMAGE` set (and `CONTAINERS_CONF` for this machine's podman).

use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::time::Duration;

use reeltime_protocol::{ImportStatus, ServerMessage};
use reeltime_testkit::{Api, ContentServer, TestIssuer, WsClient};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The uid and gid the Containerfile gives the `reeltime` user.
const UID: u32 = 10001;
const DATA: &str = "/var/lib/reeltime";

fn image() -> String {
    std::env::var("REELTIME_IMAGE").expect("REELTIME_IMAGE: the image to test")
}

/// Runs `podman args`; returns its output, whether it succeeded or not.
fn podman_output(args: &[&str]) -> std::process::Output {
    std::process::Command::new("podman")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("cannot run podman: {err}"))
}

/// Runs `podman args`, which must succeed; returns its trimmed stdout.
fn podman(args: &[&str]) -> String {
    let output = podman_output(args);
    assert!(
        output.status.success(),
        "podman {args:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Containers and volumes of one test, removed even when an assertion fails.
struct Cleanup {
    containers: Vec<String>,
    volumes: Vec<String>,
}

impl Cleanup {
    fn new() -> Cleanup {
        Cleanup {
            containers: Vec::new(),
            volumes: Vec::new(),
        }
    }

    /// A name unique to this run, remembered for removal.
    fn container(&mut self, label: &str) -> String {
        let name = format!("reeltime-test-{}-{label}", std::process::id());
        self.containers.push(name.clone());
        name
    }

    fn volume(&mut self, label: &str) -> String {
        let name = format!("reeltime-test-{}-{label}", std::process::id());
        podman(&["volume", "create", &name]);
        self.volumes.push(name.clone());
        name
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.containers {
            let _ = podman_output(&["rm", "--force", "--volumes", "--time", "0", name]);
        }
        for name in &self.volumes {
            let _ = podman_output(&["volume", "rm", "--force", name]);
        }
    }
}

/// Follows the container's log until the server says where it listens.
async fn listening_address(name: &str) -> String {
    let mut logs = tokio::process::Command::new("podman")
        .args(["logs", "--follow", name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("podman logs");
    let mut lines = BufReader::new(logs.stderr.take().expect("stderr")).lines();
    tokio::time::timeout(Duration::from_secs(60), async {
        let mut log = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            log.push_str(&line);
            log.push('\n');
            if let Some((_, address)) = line.split_once("listening on http://")
                && let Some(address) = address.split_whitespace().next()
            {
                return address.to_string();
            }
        }
        panic!("the container stopped before listening:\n{log}");
    })
    .await
    .expect("the server listens within a minute")
}

/// Waits until `GET url` answers 200 (a published port is ready a moment
/// after the server inside is).
async fn until_ok(api: &Api, url: &str) -> String {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(response) = api.http.get(url).send().await
                && response.status().is_success()
            {
                return response.text().await.unwrap_or_default();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{url} never answered 200"))
}

#[test]
#[ignore = "needs podman and a built image: run by scripts/container --test"]
fn the_image_runs_as_its_own_user_with_a_volume_and_refuses_the_dev_issuer_on_a_public_port() {
    let image = image();
    let user = podman(&["image", "inspect", "--format", "{{.Config.User}}", &image]);
    assert_eq!(user, "reeltime:reeltime");
    let volumes = podman(&[
        "image",
        "inspect",
        "--format",
        "{{.Config.Volumes}}",
        &image,
    ]);
    assert!(volumes.contains(DATA), "{volumes}");
    let ports = podman(&[
        "image",
        "inspect",
        "--format",
        "{{.Config.ExposedPorts}}",
        &image,
    ]);
    assert!(ports.contains("8080/tcp"), "{ports}");
    let env = podman(&["image", "inspect", "--format", "{{.Config.Env}}", &image]);
    assert!(env.contains("REELTIME_LISTEN=0.0.0.0:8080"), "{env}");
    assert!(env.contains(&format!("REELTIME_DATA_DIR={DATA}")), "{env}");

    let version = podman(&["run", "--rm", &image, "--version"]);
    assert!(
        version.starts_with(&format!("reeltime {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    let id = podman(&["run", "--rm", "--entrypoint", "id", &image]);
    assert_eq!(
        id,
        format!("uid={UID}(reeltime) gid={UID}(reeltime) groups={UID}(reeltime)")
    );
    let ffmpeg = podman(&["run", "--rm", "--entrypoint", "ffmpeg", &image, "-version"]);
    assert!(ffmpeg.starts_with("ffmpeg version"), "{ffmpeg}");

    // No issuer configured: the development issuer, which must not listen on
    // the image's public address. It says so and stops, rather than serving
    // tokens anyone could mint.
    let refused = podman_output(&["run", "--rm", &image]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("bad setting REELTIME_LISTEN")
            && stderr.contains("only listens on loopback"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs podman and a built image: run by scripts/container --test"]
async fn a_real_token_imports_a_video_that_the_image_transcodes_into_its_volume() {
    let image = image();
    let mut cleanup = Cleanup::new();
    let volume = cleanup.volume("data");
    let issuer = TestIssuer::start().await;
    let content = ContentServer::start().await;
    let sample = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../samples/sample-needs-transcode.mkv"
    ))
    .expect("the sample");
    let url = content.put_file("old.mkv", sample);

    // The host's network, so the server reaches the JWKS issuer and the
    // content server on loopback (127.0.0.1:0: a free port, read from the log).
    let start = |name: &str| {
        let mut args = vec![
            "run".to_string(),
            "--detach".into(),
            "--name".into(),
            name.to_string(),
            "--network=host".into(),
            "--volume".into(),
            format!("{volume}:{DATA}"),
            "--env".into(),
            "REELTIME_LISTEN=127.0.0.1:0".into(),
            "--env".into(),
            "REELTIME_IMPORT_ALLOW_PRIVATE=1".into(),
        ];
        for (key, value) in issuer.env() {
            args.push("--env".into());
            args.push(format!("{key}={value}"));
        }
        args.push(image.clone());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        podman(&args);
    };

    let first = cleanup.container("first");
    start(&first);
    let address = listening_address(&first).await;
    let api = Api::new(&format!("http://{address}"));
    assert_eq!(until_ok(&api, &format!("{}/healthz", api.base)).await, "ok");
    let token = issuer.token("alice", 120);
    let (status, me) = api.get(&token, "/api/me").await;
    assert_eq!(status, 200, "{me}");
    let (status, _) = api.get("not-a-token", "/api/me").await;
    assert_eq!(status, 401);

    let (mut socket, ready, snapshot) =
        WsClient::open(&format!("ws://{address}/api/ws/progress"), &token).await;
    assert!(
        matches!(&ready, ServerMessage::Ready { user_id, .. } if user_id == "alice"),
        "{ready:?}"
    );
    assert!(snapshot.is_empty());
    let created = api.create_ok(&token, &url).await;
    let states = socket
        .imports_until(|import| import.id == created.id && import.status.is_final())
        .await;
    let done = states.last().expect("a final state");
    assert_eq!(done.status, ImportStatus::Completed, "{:?}", done.error);
    let result = done.result.as_ref().expect("a result");
    assert_eq!(result["transcoded"], true, "{result}");
    let video = result["video_url"].as_str().expect("video_url");
    let response = api
        .http
        .get(format!("{}{video}", api.base))
        .send()
        .await
        .expect("the video");
    assert_eq!(response.status(), 200);
    let bytes = response.bytes().await.expect("video bytes");
    assert_eq!(&bytes[4..8], b"ftyp", "an MP4");

    // The database and media are in the volume, owned by the image's user.
    let mountpoint = podman(&["volume", "inspect", "--format", "{{.Mountpoint}}", &volume]);
    let db = std::fs::metadata(format!("{mountpoint}/reeltime.db")).expect("the database");
    assert_eq!(db.uid(), UID);

    // `podman stop` sends SIGTERM to the server (PID 1): it closes its
    // sockets and exits 0 well within podman's 10 s before SIGKILL.
    socket.close().await;
    podman(&["stop", &first]);
    let exit = podman(&["inspect", "--format", "{{.State.ExitCode}}", &first]);
    assert_eq!(exit, "0");
    let log = podman_output(&["logs", &first]);
    assert!(
        String::from_utf8_lossy(&log.stderr).contains("stopped"),
        "{}",
        String::from_utf8_lossy(&log.stderr)
    );

    // A new container on the same volume still has Alice's import.
    let second = cleanup.container("second");
    start(&second);
    let address = listening_address(&second).await;
    let (_socket, _, snapshot) =
        WsClient::open(&format!("ws://{address}/api/ws/progress"), &token).await;
    assert!(
        snapshot
            .iter()
            .any(|import| import.id == created.id && import.status == ImportStatus::Completed),
        "{snapshot:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs podman and a built image: run by scripts/container --test"]
async fn the_image_defaults_serve_on_the_published_port() {
    let image = image();
    let mut cleanup = Cleanup::new();
    let name = cleanup.container("published");
    // The image's own REELTIME_LISTEN (0.0.0.0:8080) behind podman's port
    // mapping; an issuer is required for a public address (its keys are
    // fetched when a token arrives, so this address needs not answer here).
    podman(&[
        "run",
        "--detach",
        "--name",
        &name,
        "--publish",
        "127.0.0.1::8080",
        "--env",
        "REELTIME_JWKS_URL=http://127.0.0.1:9/.well-known/jwks.json",
        "--env",
        "REELTIME_ISSUER=https://issuer.example.com",
        &image,
    ]);
    let inside = listening_address(&name).await;
    assert_eq!(inside, "0.0.0.0:8080");
    let published = podman(&["port", &name, "8080/tcp"]);
    let api = Api::new(&format!("http://{published}"));
    assert_eq!(until_ok(&api, &format!("{}/healthz", api.base)).await, "ok");
    let (status, _) = api.get("not-a-token", "/api/me").await;
    assert_eq!(status, 401);
}
