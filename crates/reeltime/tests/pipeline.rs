//! The whole import pipeline through the real server: download, probe,
//! poster, web-ready copy with real ffmpeg, progress on every socket, and
//! the signed media links that serve the result.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::media::{H264_AAC, make, make_video, processes_mentioning};
use common::{World, follow_to_final, in_snapshot_or_next, wait_for, wait_until, world};
use reeltime::media::MediaSigner;
use reeltime_protocol::{Import, ImportStatus};

/// A world with media processing on (ffmpeg must be installed).
async fn media_world() -> World {
    world(&[
        ("REELTIME_MEDIA_PROCESSING", "auto"),
        ("REELTIME_PROCESS_CONCURRENCY", "1"),
    ])
    .await
}

/// A 3 s 320x240 H.264/AAC MP4 with `moov` first: web-ready.
async fn web_ready(dir: &Path) -> Vec<u8> {
    let out = dir.join("web.mp4");
    let codecs = [H264_AAC, &["-movflags", "+faststart", "-shortest"]].concat();
    make_video(&out, "320x240", 3, true, &codecs).await;
    std::fs::read(out).expect("read generated video")
}

/// MPEG-4 Part 2 at 1280x960 with PCM in AVI: not web-ready, gets transcoded.
async fn needs_transcode(dir: &Path, name: &str, seconds: u32) -> Vec<u8> {
    let out = dir.join(name);
    let codecs = [
        "-c:v",
        "mpeg4",
        "-q:v",
        "6",
        "-c:a",
        "pcm_s16le",
        "-shortest",
        "-f",
        "avi",
    ];
    make_video(&out, "1280x960", seconds, true, &codecs).await;
    std::fs::read(out).expect("read generated video")
}

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

async fn fetch(w: &World, path: &str, range: Option<&str>) -> reqwest::Response {
    let mut request = w.api.http.get(format!("{}{path}", w.api.base));
    if let Some(range) = range {
        request = request.header("range", range);
    }
    request.send().await.expect("media request")
}

fn result_str<'a>(import: &'a Import, key: &str) -> &'a str {
    import
        .result
        .as_ref()
        .and_then(|r| r[key].as_str())
        .unwrap_or_else(|| panic!("result.{key}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_ready_video_is_probed_given_a_poster_and_served_by_signed_links() {
    let w = media_world().await;
    let dir = temp();
    let bytes = web_ready(dir.path()).await;
    let url = w.content.put_file("web.mp4", bytes.clone());
    let (mut tab1, _) = w.socket("alice").await;
    let (mut tab2, _) = w.socket("alice").await;
    let created = w.api.create_ok(&w.token("alice"), &url).await;

    let mut finals = Vec::new();
    for tab in [&mut tab1, &mut tab2] {
        let states = follow_to_final(tab, &created.id).await;
        let done = states.last().unwrap().clone();
        assert_eq!(done.status, ImportStatus::Completed, "{:?}", done.error);
        assert_eq!(done.progress, Some(1.0), "exactly 1.0 at completed");
        let stages: Vec<&str> = states.iter().filter_map(|s| s.stage.as_deref()).collect();
        assert!(
            stages.contains(&"downloading") && stages.contains(&"probing"),
            "{stages:?}"
        );
        assert!(
            !stages.contains(&"transcoding"),
            "already web-ready: {stages:?}"
        );
        finals.push(done);
    }
    let done = &finals[0];
    let result = done.result.as_ref().unwrap();
    assert!((result["duration_secs"].as_f64().unwrap() - 3.0).abs() < 0.2);
    assert_eq!(
        (result["width"].as_u64(), result["height"].as_u64()),
        (Some(320), Some(240))
    );
    assert_eq!(result["video_codec"], "h264");
    assert_eq!(result["audio_codec"], "aac");
    assert_eq!(result["transcoded"], false);
    assert_eq!(result["size_bytes"].as_u64(), Some(bytes.len() as u64));

    // The video, whole and by range, and the poster.
    let video_url = result_str(done, "video_url");
    let whole = fetch(&w, video_url, None).await;
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["content-type"], "video/mp4");
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    assert_eq!(whole.bytes().await.unwrap().as_ref(), bytes.as_slice());
    let part = fetch(&w, video_url, Some("bytes=100-199")).await;
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 100-199/{}", bytes.len()).as_str()
    );
    assert_eq!(part.bytes().await.unwrap().as_ref(), &bytes[100..200]);
    assert_eq!(
        fetch(&w, video_url, Some("bytes=999999999-"))
            .await
            .status(),
        416
    );
    let poster = fetch(&w, result_str(done, "thumbnail_url"), None).await;
    assert_eq!(poster.status(), 200);
    assert_eq!(poster.headers()["content-type"], "image/jpeg");
    assert_eq!(&poster.bytes().await.unwrap()[..2], &[0xFF, 0xD8]);

    // A signature opens the video for anyone holding it: never logged.
    let signature = video_url.rsplit("sig=").next().unwrap();
    assert!(
        w.server
            .wait_for_log("sig=REDACTED", Duration::from_secs(10))
            .await
            .is_some()
    );
    assert!(
        !w.server.log().contains(signature),
        "a media link's signature reached the log"
    );

    // Bad links: tampered, missing, expired, minted for another user, another file.
    let tampered = video_url.replace("sig=", "sig=A");
    assert_eq!(fetch(&w, &tampered, None).await.status(), 403);
    let bare = video_url.split('?').next().unwrap();
    assert_eq!(fetch(&w, bare, None).await.status(), 403);
    let secret = std::fs::read(w.server.data_dir().join("media-secret")).unwrap();
    let signer = MediaSigner::from_secret(&secret);
    let file = result_str(done, "video_file");
    let expired = signer.sign_until(&done.id, file, "alice", 1_000);
    assert_eq!(fetch(&w, &expired, None).await.status(), 403);
    let for_bob = signer.sign(&done.id, file, "bob", Duration::from_secs(60));
    assert_eq!(fetch(&w, &for_bob, None).await.status(), 403);
    let escape = signer.sign(&done.id, "..", "alice", Duration::from_secs(60));
    assert!(matches!(
        fetch(&w, &escape, None).await.status().as_u16(),
        403 | 404
    ));
    let (status, _) = w
        .api
        .get(&w.token("bob"), &format!("/api/imports/{}", done.id))
        .await;
    assert_eq!(status, 404);

    // Delete: files gone, links dead.
    let (status, _) = w
        .api
        .delete(&w.token("alice"), &format!("/api/imports/{}", done.id))
        .await;
    assert_eq!(status, 204);
    assert!(!w.server.import_dir(&done.id).exists());
    assert_eq!(fetch(&w, video_url, None).await.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_that_is_not_web_ready_is_transcoded_with_one_progress_bar() {
    let w = media_world().await;
    let dir = temp();
    let url = w
        .content
        .put_file("old.avi", needs_transcode(dir.path(), "old.avi", 4).await);
    let (mut ws, _) = w.socket("alice").await;
    let created = w.api.create_ok(&w.token("alice"), &url).await;
    let states = follow_to_final(&mut ws, &created.id).await;
    let done = states.last().unwrap();
    assert_eq!(done.status, ImportStatus::Completed, "{:?}", done.error);
    assert_eq!(done.progress, Some(1.0));
    let progress: Vec<f64> = states.iter().filter_map(|s| s.progress).collect();
    assert!(
        progress.windows(2).all(|p| p[1] >= p[0]),
        "never backwards: {progress:?}"
    );
    assert!(
        states
            .iter()
            .any(|s| s.stage.as_deref() == Some("transcoding")),
        "the transcode shows as a stage"
    );
    let result = done.result.as_ref().unwrap();
    assert_eq!(result["transcoded"], true);
    assert_eq!(result["video_codec"], "h264");
    assert_eq!(result["audio_codec"], "aac");
    assert_eq!(
        (result["width"].as_u64(), result["height"].as_u64()),
        (Some(960), Some(720))
    );
    let video = fetch(&w, result_str(done, "video_url"), Some("bytes=0-11")).await;
    assert_eq!(video.status(), 206);
    assert_eq!(&video.bytes().await.unwrap()[4..8], b"ftyp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_ffprobe_rejects_fail_with_words_a_person_understands() {
    let w = media_world().await;
    let dir = temp();
    let audio_path = dir.path().join("a.m4a");
    make(
        &["-f", "lavfi", "-i", "sine=duration=2", "-c:a", "aac"],
        &audio_path,
    )
    .await;
    let audio_only = std::fs::read(&audio_path).expect("read generated audio");
    let mut corrupt = vec![
        0, 0, 0, 0x20, b'f', b't', b'y', b'p', b'i', b's', b'o', b'm',
    ];
    corrupt.extend((0..200_000u32).map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8));
    let (mut ws, _) = w.socket("alice").await;
    for (name, body, code) in [
        ("voice.mp4", audio_only, "not_a_video"),
        ("broken.mp4", corrupt, "unreadable_media"),
    ] {
        let created = w
            .api
            .create_ok(&w.token("alice"), &w.content.put_file(name, body))
            .await;
        let last = follow_to_final(&mut ws, &created.id).await.pop().unwrap();
        assert_eq!(last.status, ImportStatus::Failed, "{name}");
        let error = last.error.unwrap();
        assert_eq!(error.code, code, "{name}: {}", error.message);
        assert!(
            error.message.len() > 10 && !error.message.contains("/tmp"),
            "{}",
            error.message
        );
        assert!(!w.server.import_dir(&created.id).exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_transcoding_stops_ffmpeg_and_removes_files() {
    let w = media_world().await;
    let dir = temp();
    let url = w.content.put_file(
        "long.avi",
        needs_transcode(dir.path(), "long.avi", 30).await,
    );
    let (mut ws, _) = w.socket("alice").await;
    let token = w.token("alice");
    let created = w.api.create_ok(&token, &url).await;
    wait_for(&mut ws, &created.id, |i| {
        i.stage.as_deref() == Some("transcoding")
    })
    .await;
    let (status, body) = w
        .api
        .post(&token, &format!("/api/imports/{}/cancel", created.id))
        .await;
    assert_eq!(status, 200, "{body}");
    let last = wait_for(&mut ws, &created.id, |i| i.status.is_final()).await;
    assert_eq!(last.status, ImportStatus::Cancelled);
    let import_dir = w.server.import_dir(&created.id);
    let needle = import_dir.to_string_lossy().into_owned();
    wait_until(|| !import_dir.exists() && processes_mentioning(&needle).is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_during_processing_resumes_without_downloading_again() {
    let mut w = media_world().await;
    let dir = temp();
    let url = w.content.put_file(
        "resume.avi",
        needs_transcode(dir.path(), "resume.avi", 20).await,
    );
    let (mut ws, _) = w.socket("alice").await;
    let created = w.api.create_ok(&w.token("alice"), &url).await;
    wait_for(&mut ws, &created.id, |i| {
        i.stage.as_deref() == Some("transcoding")
    })
    .await;
    assert_eq!(w.server.stop().await, Some(0));
    w.server.restart().await;
    let (mut ws, snapshot) = w.socket("alice").await;
    let resumed = in_snapshot_or_next(&mut ws, &snapshot, &created.id, |i| i.attempt == 2).await;
    assert!(matches!(
        resumed.status,
        ImportStatus::Processing | ImportStatus::Completed
    ));
    let done = if resumed.status.is_final() {
        resumed
    } else {
        follow_to_final(&mut ws, &created.id).await.pop().unwrap()
    };
    assert_eq!(done.status, ImportStatus::Completed, "{:?}", done.error);
    assert_eq!(done.attempt, 2);
    assert_eq!(done.progress, Some(1.0));
    assert_eq!(
        w.content.hits("resume.avi"),
        1,
        "the download was not repeated"
    );
    let files: Vec<PathBuf> = std::fs::read_dir(w.server.import_dir(&created.id))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        files
            .iter()
            .all(|f| !f.to_string_lossy().ends_with(".part")),
        "{files:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_development_samples_import_from_the_server_itself() {
    // Development mode, private-address guard on: only the server's own
    // /samples/ is excepted.
    let dev = reeltime_testkit::ServerProcess::start(common::binary(), &[]).await;
    let config: serde_json::Value = reqwest::get(format!("{}/api/config", dev.http()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["dev_issuer"], true);
    assert_eq!(config["media_processing"], true);
    let samples = config["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 3);
    let token: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/dev/token", dev.http()))
        .json(&serde_json::json!({"sub": "alice"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap();
    let api = reeltime_testkit::Api::new(&dev.http());
    let sample_url = samples[0]["url"]
        .as_str()
        .unwrap()
        .replace("kbps=2000", "kbps=100000");
    let (mut ws, _, _) = reeltime_testkit::WsClient::open(&dev.ws(), token).await;
    let created = api.create_ok(token, &sample_url).await;
    let done = follow_to_final(&mut ws, &created.id).await.pop().unwrap();
    assert_eq!(done.status, ImportStatus::Completed, "{:?}", done.error);
    // The exception is for /samples/ only, not the rest of the server.
    let (status, body) = api
        .create_import(token, &format!("{}/metrics", dev.http()))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("url_not_allowed"))
    );
}
