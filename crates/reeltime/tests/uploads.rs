//! tus uploads (`/api/uploads`, issue 12) against the real binary over real
//! sockets: the protocol case by case, restarts, the expiry sweeper, CORS,
//! and two nodes on PostgreSQL and S3 (moto) taking alternate PATCHes.

mod common;

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use common::{World, binary, wait_for, world};
use reeltime_protocol::{ImportSource, ImportStatus};
use reeltime_testkit::services::S3Server;
use reeltime_testkit::{Api, Postgres, RedisServer, ServerProcess, TestIssuer, WAIT};
use reqwest::StatusCode;
use tokio::sync::oneshot;

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../samples/sample-short.mp4"
);

/// A real MP4 followed by filler: the sniff sees a video; with media
/// processing off nothing else reads it.
fn video_of(len: usize) -> Vec<u8> {
    let mut bytes = std::fs::read(SAMPLE).expect("samples/sample-short.mp4");
    bytes.resize(len.max(bytes.len()), 0x5a);
    bytes
}

/// A tus client for one user of one server: plain reqwest, every header
/// as tus-js-client sends it.
struct Tus {
    http: reqwest::Client,
    base: String,
    token: String,
}

fn metadata(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k} {}",
                base64::engine::general_purpose::STANDARD.encode(v)
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Tus {
    fn new(base: &str, token: String) -> Tus {
        Tus {
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(WAIT)
                // A refused PATCH leaves its body unread and the server
                // closes that connection: no reuse, no race with the close.
                .pool_max_idle_per_host(0)
                .build()
                .expect("client"),
            base: base.to_string(),
            token,
        }
    }

    fn url(&self, id: &str) -> String {
        format!("{}/api/uploads/{id}", self.base)
    }

    async fn create(&self, length: u64, name: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/api/uploads", self.base))
            .bearer_auth(&self.token)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", length)
            .header(
                "Upload-Metadata",
                metadata(&[("filename", name), ("filetype", "video/mp4")]),
            )
            .send()
            .await
            .expect("POST /api/uploads")
    }

    /// Creates an upload; returns its id (the import's id).
    async fn create_ok(&self, length: u64, name: &str) -> String {
        let response = self.create(length, name).await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "{:?}",
            response.text().await
        );
        id_of(&response)
    }

    async fn head(&self, id: &str) -> reqwest::Response {
        self.http
            .head(self.url(id))
            .bearer_auth(&self.token)
            .header("Tus-Resumable", "1.0.0")
            .send()
            .await
            .expect("HEAD")
    }

    async fn offset(&self, id: &str) -> u64 {
        let response = self.head(id).await;
        assert_eq!(response.status(), StatusCode::OK);
        header_u64(&response, "upload-offset")
    }

    async fn patch(
        &self,
        id: &str,
        offset: u64,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.http
            .patch(self.url(id))
            .bearer_auth(&self.token)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", offset)
            .header("Content-Type", "application/offset+octet-stream")
            .body(body)
            .send()
            .await
            .expect("PATCH")
    }

    /// A PATCH sent in the background (its body may pause), with
    /// `Content-Length` when given.
    fn patch_in_background(
        &self,
        id: &str,
        offset: usize,
        len: Option<usize>,
        body: reqwest::Body,
    ) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
        let mut request = self
            .http
            .patch(self.url(id))
            .bearer_auth(&self.token)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", offset)
            .header("Content-Type", "application/offset+octet-stream");
        if let Some(len) = len {
            request = request.header("Content-Length", len);
        }
        tokio::spawn(request.body(body).send())
    }

    async fn delete(&self, id: &str) -> reqwest::Response {
        self.http
            .delete(self.url(id))
            .bearer_auth(&self.token)
            .header("Tus-Resumable", "1.0.0")
            .send()
            .await
            .expect("DELETE")
    }
}

fn id_of(response: &reqwest::Response) -> String {
    let location = response.headers()["location"].to_str().unwrap();
    assert!(location.starts_with("/api/uploads/"), "{location}");
    location.rsplit('/').next().unwrap().to_string()
}

fn header_u64(response: &reqwest::Response, name: &str) -> u64 {
    response.headers()[name].to_str().unwrap().parse().unwrap()
}

fn tus(w: &World, sub: &str) -> Tus {
    Tus::new(&w.server.http(), w.token(sub))
}

/// A body that sends `first`, then waits for `go` before sending `rest`
/// (or, when `go` is dropped, breaks off as a dropped network would).
fn paused_body(first: Vec<u8>, rest: Vec<u8>, go: oneshot::Receiver<()>) -> reqwest::Body {
    let stream = futures_util::stream::unfold(
        (Some(first), Some((rest, go))),
        |(first, later)| async move {
            if let Some(first) = first {
                return Some((
                    Ok::<Bytes, std::io::Error>(Bytes::from(first)),
                    (None, later),
                ));
            }
            let (rest, go) = later?;
            match go.await {
                Ok(()) => Some((Ok(Bytes::from(rest)), (None, None))),
                Err(_) => Some((
                    Err(std::io::Error::other("the network went away")),
                    (None, None),
                )),
            }
        },
    );
    reqwest::Body::wrap_stream(stream)
}

/// The import directory's upload file, if any.
fn upload_file(w: &World, id: &str) -> std::path::PathBuf {
    w.server.import_dir(id).join("upload.bin")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_in_several_patches_is_processed_and_plays() {
    let w = common::world_with({
        let mut env = common::pairs(&[("REELTIME_MEDIA_PROCESSING", "auto")]);
        env.push(("REELTIME_IMPORT_ALLOW_PRIVATE".into(), "1".into()));
        env
    })
    .await;
    let client = tus(&w, "alice");
    let (mut other_tab, _) = w.socket("alice").await;

    // Discovery, no token needed.
    let discovery = client
        .http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/uploads", w.server.http()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(discovery.status(), StatusCode::NO_CONTENT);
    assert_eq!(discovery.headers()["tus-version"], "1.0.0");
    let extensions = discovery.headers()["tus-extension"].to_str().unwrap();
    for extension in [
        "creation",
        "creation-with-upload",
        "termination",
        "expiration",
    ] {
        assert!(
            extensions.split(',').any(|e| e == extension),
            "{extensions}"
        );
    }
    assert!(header_u64(&discovery, "tus-max-size") > 0);

    let video = std::fs::read(SAMPLE).unwrap();
    let created = client.create(video.len() as u64, "holiday.mp4").await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(created.headers()["tus-resumable"], "1.0.0");
    assert!(created.headers().contains_key("upload-expires"));
    let id = id_of(&created);

    // The other tab sees the import at once, as an upload.
    let shown = wait_for(&mut other_tab, &id, |_| true).await;
    assert_eq!(shown.status, ImportStatus::Uploading);
    assert_eq!(shown.source, ImportSource::Upload);
    assert_eq!(shown.source_url, None);
    assert_eq!(shown.file_name.as_deref(), Some("holiday.mp4"));
    assert_eq!(shown.title, "holiday.mp4");
    assert_eq!(shown.bytes_total, Some(video.len() as u64));

    let mut offset = 0usize;
    for chunk in video.chunks(video.len() / 3 + 1) {
        let response = client.patch(&id, offset as u64, chunk.to_vec()).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        offset += chunk.len();
        assert_eq!(header_u64(&response, "upload-offset"), offset as u64);
        if offset < video.len() {
            assert_eq!(client.offset(&id).await, offset as u64);
            let moved = wait_for(&mut other_tab, &id, |i| i.bytes_done == offset as u64).await;
            assert_eq!(moved.status, ImportStatus::Uploading);
        }
    }
    let seen = other_tab
        .imports_until(|i| i.id == id && i.status.is_final())
        .await;
    let mine: Vec<_> = seen.into_iter().filter(|i| i.id == id).collect();
    common::assert_monotonic(&mine);
    let done = mine.last().unwrap();
    assert_eq!(done.status, ImportStatus::Completed, "{:?}", done.error);
    let result = done.result.as_ref().unwrap();
    assert!(result["duration_secs"].as_f64().unwrap() > 0.5, "{result}");
    let video_url = result["video_url"].as_str().unwrap();
    let served = reqwest::get(format!("{}{video_url}", w.server.http()))
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    let served = served.bytes().await.unwrap();
    // A playable MP4: ffprobe reads its video stream.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("served.mp4");
    std::fs::write(&path, &served).unwrap();
    let probe = tokio::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
        ])
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert!(probe.status.success());
    assert!(!String::from_utf8_lossy(&probe.stdout).trim().is_empty());

    // Once every byte is in, HEAD says so and a PATCH is refused.
    assert_eq!(client.offset(&id).await, video.len() as u64);
    let late = client.patch(&id, 0, vec![0u8; 10]).await;
    assert_eq!(late.status(), StatusCode::CONFLICT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creation_with_upload_then_head_after_a_restart() {
    let mut w = world(&[]).await;
    let client = tus(&w, "alice");
    let video = video_of(300_000);
    let response = client
        .http
        .post(format!("{}/api/uploads", w.server.http()))
        .bearer_auth(&client.token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", video.len())
        .header(
            "Upload-Metadata",
            metadata(&[("filename", "a.mp4"), ("title", "My film")]),
        )
        .header("Content-Type", "application/offset+octet-stream")
        .body(video[..100_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(header_u64(&response, "upload-offset"), 100_000);
    let id = id_of(&response);

    w.server.stop().await;
    w.server.restart().await;
    let client = tus(&w, "alice");
    let head = client.head(&id).await;
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(header_u64(&head, "upload-offset"), 100_000);
    assert_eq!(header_u64(&head, "upload-length"), video.len() as u64);
    assert_eq!(head.headers()["cache-control"], "no-store");

    let response = client.patch(&id, 100_000, video[100_000..].to_vec()).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (mut tab, snapshot) = w.socket("alice").await;
    let done = common::in_snapshot_or_next(&mut tab, &snapshot, &id, |i| i.status.is_final()).await;
    assert_eq!(done.status, ImportStatus::Completed, "{:?}", done.error);
    assert_eq!(done.title, "My film");
    assert_eq!(
        done.result.as_ref().unwrap()["size_bytes"],
        video.len() as u64
    );
    let kept = std::fs::read(w.server.import_dir(&id).join("source.mp4")).unwrap();
    assert!(kept == video, "the stored file differs from the one sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_are_the_ones_tus_names() {
    let w = world(&[("REELTIME_IMPORT_MAX_BYTES", "1MiB")]).await;
    let client = tus(&w, "alice");
    let id = client.create_ok(1000, "a.mp4").await;

    // Wrong offset: 409 with the server's offset.
    let wrong = client.patch(&id, 5, vec![1u8; 10]).await;
    assert_eq!(wrong.status(), StatusCode::CONFLICT);
    assert_eq!(header_u64(&wrong, "upload-offset"), 0);
    let body: serde_json::Value = wrong.json().await.unwrap();
    assert_eq!(body["error"]["code"], "offset_mismatch");

    // Wrong version: 412 naming the version spoken.
    let old = client
        .http
        .head(client.url(&id))
        .bearer_auth(&client.token)
        .header("Tus-Resumable", "0.2.2")
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(old.headers()["tus-version"], "1.0.0");

    // Wrong body type: 415.
    let typed = client
        .http
        .patch(client.url(&id))
        .bearer_auth(&client.token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", 0)
        .header("Content-Type", "application/octet-stream")
        .body(vec![0u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(typed.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Too large at creation: 413, nothing created.
    let huge = client.create(2 * 1024 * 1024, "big.mp4").await;
    assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: serde_json::Value = huge.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_large");
    // A body past Upload-Length: 413.
    let past = client.patch(&id, 0, video_of(2000)).await;
    assert_eq!(past.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Another user's upload: 404 for every method, and nothing changes.
    let bob = tus(&w, "bob");
    assert_eq!(bob.head(&id).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        bob.patch(&id, 0, video_of(10)).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(bob.delete(&id).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(client.offset(&id).await, 0);

    // No token, or a bad one: 401 as the REST API answers.
    let anonymous = Tus::new(&w.server.http(), "not-a-token".into());
    let refused = anonymous.head(&id).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let refused = anonymous.create(10, "x.mp4").await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");

    // Malformed creations: 400 naming the header, and no import made.
    for (length, metadata, names) in [
        (None, "filename YS5tcDQ=", "Upload-Length"),
        (Some("-5"), "filename YS5tcDQ=", "Upload-Length"),
        (Some("ten"), "filename YS5tcDQ=", "Upload-Length"),
        (Some("10"), "filename !!!", "Upload-Metadata"),
        (Some("10"), "filename /w==", "Upload-Metadata"),
    ] {
        let mut request = client
            .http
            .post(format!("{}/api/uploads", client.base))
            .bearer_auth(&client.token)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Metadata", metadata);
        if let Some(length) = length {
            request = request.header("Upload-Length", length);
        }
        let answer = request.send().await.unwrap();
        assert_eq!(
            answer.status(),
            StatusCode::BAD_REQUEST,
            "{length:?} {metadata}"
        );
        let body: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(body["error"]["code"], "bad_request");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(names), "{length:?} {metadata}: {message}");
    }
    let (status, listed) = w.api.get(&client.token, "/api/imports").await;
    assert_eq!(status, 200);
    let listed = listed["imports"].as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), 1, "only the first upload exists: {listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn termination_and_cancel_end_it_cancelled_and_free_the_space() {
    let w = world(&[]).await;
    let client = tus(&w, "alice");
    let (mut tab, _) = w.socket("alice").await;
    let video = video_of(200_000);

    let id = client.create_ok(video.len() as u64, "a.mp4").await;
    let response = client.patch(&id, 0, video[..50_000].to_vec()).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(upload_file(&w, &id).exists());
    let deleted = client.delete(&id).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let ended = wait_for(&mut tab, &id, |i| i.status.is_final()).await;
    assert_eq!(ended.status, ImportStatus::Cancelled);
    assert!(
        !w.server.import_dir(&id).exists(),
        "the bytes are removed at once"
    );
    assert_eq!(
        client
            .patch(&id, 50_000, video[50_000..].to_vec())
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(client.head(&id).await.status(), StatusCode::NOT_FOUND);

    // The REST cancel does the same (the sweeper frees the bytes).
    let id = client.create_ok(video.len() as u64, "b.mp4").await;
    let response = client.patch(&id, 0, video[..50_000].to_vec()).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (status, body) = w
        .api
        .post(&w.token("alice"), &format!("/api/imports/{id}/cancel"))
        .await;
    assert_eq!(status, 200, "{body}");
    let ended = wait_for(&mut tab, &id, |i| i.status.is_final()).await;
    assert_eq!(ended.status, ImportStatus::Cancelled);
    let dir = w.server.import_dir(&id);
    common::wait_until(|| !dir.exists()).await;
    assert_eq!(
        client
            .patch(&id, 50_000, video[50_000..].to_vec())
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_a_video_fails_at_its_first_bytes() {
    let w = world(&[]).await;
    let client = tus(&w, "alice");
    let (mut tab, _) = w.socket("alice").await;
    let page = b"<!doctype html><html><body>not a video</body></html>".repeat(200);
    let id = client.create_ok(page.len() as u64 * 3, "x.mp4").await;
    let response = client.patch(&id, 0, page.clone()).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_a_video");
    let failed = wait_for(&mut tab, &id, |i| i.status.is_final()).await;
    assert_eq!(failed.status, ImportStatus::Failed);
    assert_eq!(failed.error.as_ref().unwrap().code, "not_a_video");
    assert!(!w.server.import_dir(&id).exists(), "its bytes are removed");
    assert_eq!(client.head(&id).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_may_have_so_many_uploads_at_once() {
    let w = world(&[("REELTIME_MAX_UPLOADS_PER_USER", "2")]).await;
    let client = tus(&w, "alice");
    let first = client.create_ok(1000, "1.mp4").await;
    client.create_ok(1000, "2.mp4").await;
    let third = client.create(1000, "3.mp4").await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: serde_json::Value = third.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_uploads");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 uploads")
    );
    // Another user is not affected; URL imports are not uploads.
    tus(&w, "bob").create_ok(1000, "b.mp4").await;
    // One finished (here: terminated) makes room.
    assert_eq!(client.delete(&first).await.status(), StatusCode::NO_CONTENT);
    client.create_ok(1000, "3.mp4").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untouched_upload_expires_and_its_bytes_go() {
    let w = world(&[("REELTIME_UPLOAD_EXPIRE_SECS", "2")]).await;
    let client = tus(&w, "alice");
    let (mut tab, _) = w.socket("alice").await;
    let video = video_of(100_000);
    let id = client.create_ok(video.len() as u64, "a.mp4").await;
    let response = client.patch(&id, 0, video[..40_000].to_vec()).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let expires = response.headers()["upload-expires"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(expires.ends_with(" GMT"), "{expires}");
    let failed = wait_for(&mut tab, &id, |i| i.status.is_final()).await;
    assert_eq!(failed.status, ImportStatus::Failed);
    assert_eq!(failed.error.as_ref().unwrap().code, "upload_expired");
    assert!(!w.server.import_dir(&id).exists());
    assert_eq!(
        client
            .patch(&id, 40_000, video[40_000..].to_vec())
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_patch_keeps_its_stored_bytes_across_a_restart() {
    let mut w = world(&[]).await;
    let client = tus(&w, "alice");
    let (mut tab, _) = w.socket("alice").await;
    let video = video_of(3 * 1024 * 1024);
    let id = client.create_ok(video.len() as u64, "a.mp4").await;

    let sent = 1536 * 1024;
    let (go, wait) = oneshot::channel();
    let body = paused_body(video[..sent].to_vec(), video[sent..].to_vec(), wait);
    let patch = client.patch_in_background(&id, 0, None, body);
    // Stored bytes reach every tab while the PATCH runs.
    wait_for(&mut tab, &id, |i| i.bytes_done >= 1024 * 1024).await;
    drop(go); // the network goes away
    assert!(patch.await.unwrap().is_err());
    // What came in before the break is kept: the whole first chunk.
    let deadline = std::time::Instant::now() + WAIT;
    while client.offset(&id).await != sent as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the offset was not saved"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    w.server.kill().await;
    w.server.restart().await;
    let client = tus(&w, "alice");
    assert_eq!(client.offset(&id).await, sent as u64);
    let response = client.patch(&id, sent as u64, video[sent..].to_vec()).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (mut tab, snapshot) = w.socket("alice").await;
    let done = common::in_snapshot_or_next(&mut tab, &snapshot, &id, |i| i.status.is_final()).await;
    assert_eq!(done.status, ImportStatus::Completed, "{:?}", done.error);
    let kept = std::fs::read(w.server.import_dir(&id).join("source.mp4")).unwrap();
    assert!(kept == video, "the stored file differs from the one sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_racing_patches_one_wins_and_the_other_gets_409() {
    let w = world(&[]).await;
    let client = tus(&w, "alice");
    let (mut tab, _) = w.socket("alice").await;
    let video = video_of(2 * 1024 * 1024);
    let id = client.create_ok(video.len() as u64, "a.mp4").await;

    let split = 1536 * 1024;
    let (go, wait) = oneshot::channel();
    let body = paused_body(video[..split].to_vec(), video[split..].to_vec(), wait);
    let first = client.patch_in_background(&id, 0, Some(video.len()), body);
    wait_for(&mut tab, &id, |i| i.bytes_done >= 1024 * 1024).await;
    // The same offset while the first holds the upload: refused, nothing
    // written.
    let mut garbage = video_of(1000);
    garbage[900..].fill(0xff);
    let second = client.patch(&id, 0, garbage).await;
    assert_eq!(second.status(), StatusCode::CONFLICT);
    go.send(()).unwrap();
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), StatusCode::NO_CONTENT);
    assert_eq!(header_u64(&first, "upload-offset"), video.len() as u64);
    let done = wait_for(&mut tab, &id, |i| i.status.is_final()).await;
    assert_eq!(done.status, ImportStatus::Completed, "{:?}", done.error);
    let kept = std::fs::read(w.server.import_dir(&id).join("source.mp4")).unwrap();
    assert!(
        kept == video,
        "the stored file differs from the winner's bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_preflights_and_exposes_the_tus_headers() {
    let app = "https://app.example.com";
    let w = world(&[("REELTIME_ALLOWED_ORIGINS", app)]).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let preflight = |origin: &'static str| {
        http.request(
            reqwest::Method::OPTIONS,
            format!("{}/api/uploads", w.server.http()),
        )
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,tus-resumable,upload-length,upload-metadata",
        )
        .send()
    };
    let allowed = preflight(app).await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(allowed.headers()["access-control-allow-origin"], app);
    let headers = allowed.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in [
        "authorization",
        "tus-resumable",
        "upload-length",
        "upload-metadata",
    ] {
        assert!(headers.contains(name), "{headers}");
    }
    let methods = allowed.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap();
    assert!(
        methods.contains("PATCH") && methods.contains("DELETE"),
        "{methods}"
    );
    assert!(
        !allowed
            .headers()
            .contains_key("access-control-allow-credentials")
    );
    let refused = preflight("https://evil.example.net").await.unwrap();
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin")
    );

    // A real request: the headers a tus client reads are exposed.
    let created = http
        .post(format!("{}/api/uploads", w.server.http()))
        .header("Origin", app)
        .bearer_auth(w.token("alice"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", 100)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(created.headers()["access-control-allow-origin"], app);
    let exposed = created.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in [
        "location",
        "upload-offset",
        "upload-length",
        "upload-expires",
        "tus-resumable",
    ] {
        assert!(exposed.contains(name), "{exposed}");
    }
    // The REST API too.
    let listed = http
        .get(format!("{}/api/imports", w.server.http()))
        .header("Origin", app)
        .bearer_auth(w.token("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    assert_eq!(listed.headers()["access-control-allow-origin"], app);

    // tus discovery still answers an OPTIONS that is not a preflight.
    let discovery = http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/uploads", w.server.http()),
        )
        .header("Origin", app)
        .send()
        .await
        .unwrap();
    assert_eq!(discovery.status(), StatusCode::NO_CONTENT);
    assert_eq!(discovery.headers()["tus-version"], "1.0.0");
    assert_eq!(discovery.headers()["access-control-allow-origin"], app);

    // Unset: nothing cross-origin.
    let closed = world(&[]).await;
    let answer = http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/uploads", closed.server.http()),
        )
        .header("Origin", app)
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert!(!answer.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_postgres_and_s3_take_alternate_patches() {
    let issuer = TestIssuer::start().await;
    let (postgres, redis, s3) =
        tokio::join!(Postgres::start(), RedisServer::start(), S3Server::start());
    let database = postgres.create_database("reeltime").await;
    let mut env = issuer.env();
    env.extend(s3.env());
    env.extend(common::pairs(&[
        ("REELTIME_DATABASE_URL", &database),
        ("REELTIME_REDIS_URL", &redis.url()),
        ("REELTIME_MEDIA_URL", &s3.media_url("media")),
        ("REELTIME_MEDIA_PROCESSING", "off"),
    ]));
    let a = ServerProcess::start(binary(), &env).await;
    let b = ServerProcess::start(binary(), &env).await;
    let token = issuer.token("alice", 600);
    let on_a = Tus::new(&a.http(), token.clone());
    let on_b = Tus::new(&b.http(), token.clone());

    const MIB: usize = 1024 * 1024;
    let video = video_of(13 * MIB);
    let id = on_a.create_ok(video.len() as u64, "big.mp4").await;
    // 3 MiB on A: less than S3's smallest part, kept as the incomplete part.
    let r = on_a.patch(&id, 0, video[..3 * MIB].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // B knows the offset from the shared store.
    assert_eq!(on_b.offset(&id).await, 3 * MIB as u64);
    // 6 MiB on B: joined with the incomplete part into an 8 MiB part.
    let r = on_b
        .patch(&id, 3 * MIB as u64, video[3 * MIB..9 * MIB].to_vec())
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header_u64(&r, "upload-offset"), 9 * MIB as u64);
    // A racing pair at the same offset, one on each node: whichever
    // holds the upload first wins, the other gets 409 and writes nothing.
    let (go, wait) = oneshot::channel();
    let slow = on_a.patch_in_background(
        &id,
        9 * MIB,
        Some(4 * MIB),
        paused_body(
            video[9 * MIB..9 * MIB + 1024].to_vec(),
            video[9 * MIB + 1024..].to_vec(),
            wait,
        ),
    );
    let quick = on_b
        .patch(&id, 9 * MIB as u64, video[9 * MIB..9 * MIB + 1024].to_vec())
        .await;
    match quick.status() {
        StatusCode::CONFLICT => {
            // A held it first: A finishes the upload.
            let _ = go.send(());
            let last = slow.await.unwrap().unwrap();
            assert_eq!(
                last.status(),
                StatusCode::NO_CONTENT,
                "{:?}",
                last.text().await
            );
            assert_eq!(header_u64(&last, "upload-offset"), video.len() as u64);
        }
        StatusCode::NO_CONTENT => {
            // B held it first: A's request is refused, B's KiB is in.
            assert_eq!(header_u64(&quick, "upload-offset"), (9 * MIB + 1024) as u64);
            let lost = slow.await.unwrap().unwrap();
            assert_eq!(lost.status(), StatusCode::CONFLICT);
            drop(go);
            let at = on_a.offset(&id).await;
            assert_eq!(at, (9 * MIB + 1024) as u64);
            let r = on_a.patch(&id, at, video[at as usize..].to_vec()).await;
            assert_eq!(r.status(), StatusCode::NO_CONTENT);
        }
        other => panic!("unexpected answer {other}: {:?}", quick.text().await),
    }

    let api = Api::new(&b.http());
    let deadline = std::time::Instant::now() + WAIT * 2;
    let done = loop {
        let (status, body) = api.get(&token, &format!("/api/imports/{id}")).await;
        assert_eq!(status, 200);
        let import: reeltime_protocol::Import = serde_json::from_value(body).unwrap();
        if import.status.is_final() {
            break import;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not finished: {import:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done.status, ImportStatus::Completed, "{:?}", done.error);
    assert_eq!(
        done.result.as_ref().unwrap()["size_bytes"],
        video.len() as u64
    );
    // Whichever node ran it has the whole file, byte for byte.
    let kept = [&a, &b]
        .iter()
        .find_map(|node| std::fs::read(node.import_dir(&id).join("source.mp4")).ok())
        .expect("one node kept the file");
    assert!(kept == video, "the joined file differs from the one sent");
    drop(s3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_failure_fails_only_that_upload() {
    let w = world(&[]).await;
    let client = tus(&w, "alice");
    let (mut tab, _) = w.socket("alice").await;
    let video = video_of(100_000);
    let broken = client.create_ok(video.len() as u64, "a.mp4").await;
    let fine = client.create_ok(video.len() as u64, "b.mp4").await;
    // A file where the upload's directory must go: the disk refuses it.
    std::fs::create_dir_all(w.server.data_dir().join("imports")).unwrap();
    std::fs::write(w.server.import_dir(&broken), b"in the way").unwrap();
    let response = client.patch(&broken, 0, video.clone()).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "storage_error");
    let failed = wait_for(&mut tab, &broken, |i| i.status.is_final()).await;
    assert_eq!(failed.status, ImportStatus::Failed);
    assert_eq!(failed.error.as_ref().unwrap().code, "storage_error");
    // The other upload goes on untouched.
    let response = client.patch(&fine, 0, video.clone()).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let done = wait_for(&mut tab, &fine, |i| i.status.is_final()).await;
    assert_eq!(done.status, ImportStatus::Completed, "{:?}", done.error);
}

/// With S3 an uploaded object stays in the bucket while its import runs, so
/// another node can take it again if this one dies (the chaos regression
/// `an_upload_survives_the_death_of_the_node_processing_it`), and goes once
/// the import ends: cancelled, completed or failed.
/// One node keeping uploads and media in moto's bucket `media`, with one
/// more setting.
async fn node_on_s3(setting: (&str, &str)) -> (TestIssuer, S3Server, ServerProcess) {
    let issuer = TestIssuer::start().await;
    let s3 = S3Server::start().await;
    let mut env = issuer.env();
    env.extend(s3.env());
    env.extend(common::pairs(&[
        ("REELTIME_MEDIA_URL", &s3.media_url("media")),
        setting,
    ]));
    let server = ServerProcess::start(binary(), &env).await;
    (issuer, s3, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_object_stays_in_the_bucket_until_its_import_ends() {
    let (issuer, s3, server) = node_on_s3(("REELTIME_PROCESS_CONCURRENCY", "1")).await;
    let token = issuer.token("alice", 600);
    let client = Tus::new(&server.http(), token.clone());
    let api = Api::new(&server.http());
    let sample = |name: &str| {
        std::fs::read(format!(
            "{}/../../samples/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("sample")
    };
    let upload = |id: &str| format!("media/{id}/upload.bin");
    let send = async |bytes: Vec<u8>, name: &str| {
        let id = client.create_ok(bytes.len() as u64, name).await;
        let response = client.patch(&id, 0, bytes).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        id
    };
    let status_of = async |id: &str| {
        let (status, body) = api.get(&token, &format!("/api/imports/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    };
    let until_final = async |id: &str| {
        let deadline = std::time::Instant::now() + WAIT * 2;
        loop {
            let body = status_of(id).await;
            if matches!(
                body["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            ) {
                return body;
            }
            assert!(std::time::Instant::now() < deadline, "not ended: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let until_gone = async |id: &str| {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let keys = s3.keys(&format!("media/{id}/")).await;
            if !keys.contains(&upload(id)) {
                return keys;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the uploaded object outlived its import: {keys:?}; log:\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };

    // A video to transcode: while it is processed its object is still in
    // the bucket; cancelled, it goes (or, should the transcode win the
    // race with the cancel, completed, it goes all the same).
    let mkv = sample("sample-needs-transcode.mkv");
    let mkv_len = mkv.len() as u64;
    let long = send(mkv, "long.mkv").await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let body = status_of(&long).await;
        if body["status"] == "processing" {
            break;
        }
        assert!(
            body["status"] != "completed" && std::time::Instant::now() < deadline,
            "never seen processing: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let keys = s3.keys(&format!("media/{long}/")).await;
    assert!(
        keys.contains(&upload(&long)),
        "the object went before its import ended: {keys:?}"
    );
    // Its row is still there with the object; the upload is done all the
    // same: HEAD says every byte is in, and a PATCH never writes again
    // (not even an empty one at the end, which would "complete" it anew).
    assert_eq!(client.offset(&long).await, mkv_len);
    let late = client.patch(&long, mkv_len, Vec::new()).await;
    assert_eq!(late.status(), StatusCode::CONFLICT);
    let (cancel, body) = api
        .post(&token, &format!("/api/imports/{long}/cancel"))
        .await;
    let ended = until_final(&long).await;
    if cancel == 200 {
        assert_eq!(ended["status"], "cancelled", "{ended}");
    } else {
        assert_eq!(cancel, 409, "{body}");
        assert_eq!(ended["status"], "completed", "{ended}");
    }
    until_gone(&long).await;

    // A video that needs no transcode: completed, its object goes and the
    // video it became stays.
    let fine = send(sample("sample-webready.mp4"), "fine.mp4").await;
    let done = until_final(&fine).await;
    assert_eq!(done["status"], "completed", "{done}");
    let keys = until_gone(&fine).await;
    let video = done["result"]["video_file"].as_str().expect("video_file");
    assert!(keys.contains(&format!("media/{fine}/{video}")), "{keys:?}");

    // MP4's first bytes and nothing readable after them: failed, its
    // object goes.
    let mut broken = sample("sample-short.mp4");
    broken.truncate(64);
    broken.resize(100_000, 0);
    let broken = send(broken, "broken.mp4").await;
    let failed = until_final(&broken).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    until_gone(&broken).await;
    // Nothing of any upload is left in the bucket but the completed video.
    for id in [&long, &fine, &broken] {
        let keys = s3.keys(&format!("media/{id}/")).await;
        assert!(
            keys.iter()
                .all(|key| !key.ends_with("upload.bin") && !key.contains("upload.pending")),
            "{keys:?}"
        );
    }
}

/// Seen in the chaos campaign ("uploads whose PATCH was cut by a fault
/// sometimes failed later with `upload storage failed: no such media
/// file`"): the last PATCH joins the parts (the multipart upload completed,
/// the incomplete-part object removed), then cannot store the import (the
/// database away): the row keeps the old offset, and the client, resuming
/// from `HEAD`, sends the last bytes again into parts that are gone. Now
/// that PATCH finds the file whole and finishes the completion instead of
/// failing the upload. The failed completion's leftovers are laid out in
/// moto by hand (the database cannot be made to fail at that one write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_resent_after_its_parts_were_joined_completes_the_upload() {
    let (issuer, s3, server) = node_on_s3(("REELTIME_MEDIA_PROCESSING", "off")).await;
    let token = issuer.token("alice", 600);
    let client = Tus::new(&server.http(), token.clone());
    const MIB: usize = 1024 * 1024;
    let video = video_of(3 * MIB);
    let id = client.create_ok(video.len() as u64, "joined.mp4").await;
    let r = client.patch(&id, 0, video[..MIB].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(
        s3.keys(&format!("media/{id}/"))
            .await
            .contains(&format!("media/{id}/upload.pending.0")),
        "the first MiB waits as the incomplete part"
    );
    // What the failed completion left: the whole file, no pending part.
    use object_store::{ObjectStoreExt, PutPayload, path::Path as ObjectPath};
    use reeltime_testkit::services::{S3_ACCESS_KEY_ID, S3_REGION, S3_SECRET_ACCESS_KEY};
    let bucket = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(s3.endpoint())
        .with_allow_http(true)
        .with_bucket_name(s3.bucket())
        .with_region(S3_REGION)
        .with_access_key_id(S3_ACCESS_KEY_ID)
        .with_secret_access_key(S3_SECRET_ACCESS_KEY)
        .build()
        .expect("S3 client");
    bucket
        .put(
            &ObjectPath::from(format!("media/{id}/upload.bin")),
            PutPayload::from(video.clone()),
        )
        .await
        .expect("put upload.bin");
    bucket
        .delete(&ObjectPath::from(format!("media/{id}/upload.pending.0")))
        .await
        .expect("delete upload.pending");

    let at = client.offset(&id).await;
    assert_eq!(at, MIB as u64, "the stored offset is the old one");
    let r = client.patch(&id, at, video[MIB..].to_vec()).await;
    assert_eq!(
        r.status(),
        StatusCode::NO_CONTENT,
        "{:?}; log:\n{}",
        r.text().await,
        server.log()
    );
    assert_eq!(header_u64(&r, "upload-offset"), video.len() as u64);
    let api = Api::new(&server.http());
    let deadline = std::time::Instant::now() + WAIT;
    let done = loop {
        let (_, body) = api.get(&token, &format!("/api/imports/{id}")).await;
        if matches!(body["status"].as_str(), Some("completed" | "failed")) {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "not ended: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"]["size_bytes"], video.len() as u64, "{done}");
    let kept = std::fs::read(server.import_dir(&id).join("source.mp4")).expect("source.mp4");
    assert!(kept == video, "the file kept differs from the one sent");
}

/// A PATCH that put a part and then its tail, and died (or could not save
/// its offset) before answering, left an incomplete-part object with bytes
/// from further on under the one name the next PATCH read: the file went
/// wrong silently. Now each incomplete part is keyed by the offset of its
/// first byte, and what a dead PATCH left is never joined. Such leftovers
/// are laid out in moto by hand (a PATCH cannot be made to die between
/// those two requests), under the old name and under a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incomplete_part_left_by_a_dead_patch_is_never_joined() {
    use object_store::{ObjectStoreExt, PutPayload, path::Path as ObjectPath};
    use reeltime_testkit::services::{S3_ACCESS_KEY_ID, S3_REGION, S3_SECRET_ACCESS_KEY};
    let (issuer, s3, server) = node_on_s3(("REELTIME_MEDIA_PROCESSING", "off")).await;
    let token = issuer.token("alice", 600);
    let client = Tus::new(&server.http(), token.clone());
    const MIB: usize = 1024 * 1024;
    let video = video_of(3 * MIB);
    let id = client.create_ok(video.len() as u64, "tail.mp4").await;
    let r = client.patch(&id, 0, video[..MIB].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let keys = s3.keys(&format!("media/{id}/")).await;
    assert!(
        keys.len() == 1 && keys[0].starts_with(&format!("media/{id}/upload.pending")),
        "the first MiB waits as the incomplete part: {keys:?}"
    );

    let bucket = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(s3.endpoint())
        .with_allow_http(true)
        .with_bucket_name(s3.bucket())
        .with_region(S3_REGION)
        .with_access_key_id(S3_ACCESS_KEY_ID)
        .with_secret_access_key(S3_SECRET_ACCESS_KEY)
        .build()
        .expect("S3 client");
    for name in ["upload.pending", "upload.pending.8388608"] {
        bucket
            .put(
                &ObjectPath::from(format!("media/{id}/{name}")),
                PutPayload::from(vec![0xee_u8; 2 * MIB]),
            )
            .await
            .expect("put a dead PATCH's tail");
    }

    let r = client.patch(&id, MIB as u64, video[MIB..].to_vec()).await;
    assert_eq!(
        r.status(),
        StatusCode::NO_CONTENT,
        "{:?}; log:\n{}",
        r.text().await,
        server.log()
    );
    let api = Api::new(&server.http());
    let deadline = std::time::Instant::now() + WAIT;
    let done = loop {
        let (_, body) = api.get(&token, &format!("/api/imports/{id}")).await;
        if matches!(body["status"].as_str(), Some("completed" | "failed")) {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "not ended: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done["status"], "completed", "{done}");
    let kept = std::fs::read(server.import_dir(&id).join("source.mp4")).expect("source.mp4");
    assert!(kept == video, "the file kept differs from the one sent");
    // The leftovers went with the parts; the whole file goes with the
    // import's end.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let keys = s3.keys(&format!("media/{id}/")).await;
        if keys.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left in the bucket: {keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
