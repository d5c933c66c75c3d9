//! Attacks on media processing: downloads crafted so that ffmpeg would
//! read another user's import or a file outside the data directory, and
//! the sandbox every ffprobe/ffmpeg runs in. Needs ffmpeg installed; the
//! sandbox tests need Landlock (Linux 5.13+), and say so when they skip.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::media::{
    H264_AAC, make_long_video, make_video, partial_files, processes_mentioning, tools,
};
use common::{World, follow_to_final, world};
use reeltime::media::ffmpeg::transcode_with_limit;
use reeltime::media::sandbox::{Limits, MEMORY_LIMIT_BYTES, Sandbox, out_of_cpu_time};
use reeltime::media::{MediaError, MediaSigner, probe};
use reeltime_protocol::{Import, ImportStatus};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Upper bound for any wait, so a broken build fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(180);

/// The sandbox, or `None` (and a line saying the test skipped) without
/// Landlock.
fn landlock(test: &str) -> Option<Sandbox> {
    match Sandbox::detect() {
        sandbox @ Sandbox::Landlock(_) => Some(sandbox),
        Sandbox::Unavailable(reason) => {
            println!("SKIPPED {test}: no Landlock on this kernel ({reason})");
            None
        }
    }
}

/// A 3 s 320x240 H.264 MP4 with `moov` first: web-ready, kept as it is.
async fn web_ready(path: &Path) -> Vec<u8> {
    let codecs = [H264_AAC, &["-movflags", "+faststart", "-shortest"]].concat();
    make_video(path, "320x240", 3, true, &codecs).await;
    std::fs::read(path).expect("read generated video")
}

/// An ISO `ftyp` box, as a real MP4 starts (binary: it passes the sniff).
fn ftyp_box() -> Vec<u8> {
    let mut ftyp = 24u32.to_be_bytes().to_vec();
    ftyp.extend_from_slice(b"ftypisom\0\0\x02\0isomiso2");
    ftyp
}

/// A DASH manifest whose only segment is `target`.
fn dash_manifest(target: &str) -> String {
    format!(
        r#"<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT3S" minBufferTime="PT1S" profiles="urn:mpeg:dash:profile:isoff-on-demand:2011">
<Period><AdaptationSet mimeType="video/mp4"><Representation id="1" bandwidth="100000" codecs="avc1.42c00d" width="320" height="240">
<BaseURL>{target}</BaseURL>
</Representation></AdaptationSet></Period></MPD>
"#
    )
}

fn hls_playlist(target: &str) -> String {
    format!("#EXTM3U\n#EXT-X-TARGETDURATION:3\n#EXTINF:3.0,\n{target}\n#EXT-X-ENDLIST\n")
}

fn ffconcat(target: &str) -> String {
    format!("ffconcat version 1.0\nfile '{target}'\n")
}

/// Every polyglot of `target`: each file-referencing text format, alone,
/// behind MP4 magic inside an XML comment (what ffmpeg's own probing took
/// for DASH), and behind a real binary `ftyp` box (what passes the sniff).
fn polyglots(target: &str) -> Vec<(String, Vec<u8>)> {
    let padding = "\n".repeat(600);
    let mut files = Vec::new();
    for (kind, text) in [
        ("dash", dash_manifest(target)),
        ("hls", hls_playlist(target)),
        ("ffconcat", ffconcat(target)),
    ] {
        files.push((
            format!("{kind}-plain"),
            format!("{text}{padding}").into_bytes(),
        ));
        let mut boxed = ftyp_box();
        boxed.extend_from_slice(format!("{text}{padding}").as_bytes());
        files.push((format!("{kind}-after-ftyp"), boxed));
    }
    files.push((
        "dash-in-comment".into(),
        format!("<!--ftypjp2 -->\n{}{padding}", dash_manifest(target)).into_bytes(),
    ));
    files
}

async fn fetch_status(w: &World, path_and_query: &str) -> u16 {
    w.api
        .http
        .get(format!("{}{path_and_query}", w.api.base))
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_manifests_never_reach_another_import_or_files_outside() {
    let w = world(&[
        ("REELTIME_MEDIA_PROCESSING", "auto"),
        ("REELTIME_PROCESS_CONCURRENCY", "1"),
        // One attacker sends many crafted files in a row: the per-user
        // limits are not what this test is about.
        ("REELTIME_IMPORT_RATE_BURST", "1000"),
        ("REELTIME_MAX_ACTIVE_IMPORTS_PER_USER", "1000"),
    ])
    .await;
    let ready: serde_json::Value = w
        .api
        .http
        .get(format!("{}/readyz", w.api.base))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("readyz json");
    let expected = Sandbox::detect().name();
    assert_eq!(ready["media_sandbox"], expected, "{ready}");

    // Bob's finished import: the victim.
    let scratch = tempfile::tempdir().unwrap();
    let bob_video = web_ready(&scratch.path().join("bob.mp4")).await;
    let url = w.content.put_file("bob.mp4", bob_video.clone());
    let (mut bob_ws, _) = w.socket("bob").await;
    let bob = w.api.create_ok(&w.token("bob"), &url).await;
    let bob_done = follow_to_final(&mut bob_ws, &bob.id).await.pop().unwrap();
    assert_eq!(
        bob_done.status,
        ImportStatus::Completed,
        "{:?}",
        bob_done.error
    );
    let bob_file = bob_done.result.as_ref().unwrap()["video_file"]
        .as_str()
        .expect("video_file")
        .to_string();
    let bob_path = w.server.import_dir(&bob.id).join(&bob_file);
    assert_eq!(std::fs::read(&bob_path).unwrap(), bob_video);

    // A video outside the data directory.
    let outside = scratch.path().join("outside-secret.mp4");
    std::fs::write(&outside, &bob_video).unwrap();

    // The files are real attacks: ffprobe left to guess, as the server
    // used to run it, opens the plain DASH and HLS ones placed where an
    // import's download lies and reads Bob's video through them.
    let staged = w.server.data_dir().join("imports").join("staged-attack");
    std::fs::create_dir_all(&staged).unwrap();
    let relative = format!("../{}/{bob_file}", bob.id);
    for (name, bytes) in polyglots(&relative) {
        if name != "dash-in-comment" && name != "dash-plain" && name != "hls-plain" {
            continue;
        }
        let source = staged.join("source.mp4");
        std::fs::write(&source, &bytes).unwrap();
        let guessed = unforced_ffprobe(&source).await;
        assert!(
            guessed.contains("codec_name=h264"),
            "{name} is a working attack on unforced ffprobe: {guessed}"
        );
    }
    std::fs::remove_dir_all(&staged).unwrap();

    let signer =
        MediaSigner::from_secret(&std::fs::read(w.server.data_dir().join("media-secret")).unwrap());
    let (mut eve_ws, _) = w.socket("eve").await;
    let targets = [
        relative.clone(),
        outside.display().to_string(),
        format!("file:{}", outside.display()),
    ];
    for target in &targets {
        for (name, bytes) in polyglots(target) {
            let url = w.content.put_file(&format!("{name}.mp4"), bytes);
            let created = w.api.create_ok(&w.token("eve"), &url).await;
            let last = follow_to_final(&mut eve_ws, &created.id)
                .await
                .pop()
                .unwrap();
            assert_attack_failed(&last, &name, target, &bob.id);
            assert!(
                !w.server.import_dir(&created.id).exists(),
                "{name}: files removed"
            );
            // Nothing is served under the attacker's import, whatever name
            // a link is signed for.
            for file in ["source.mp4", "video.mp4", "poster.jpg", &bob_file] {
                let link = signer.sign(&created.id, file, "eve", Duration::from_secs(60));
                let status = fetch_status(&w, &link).await;
                assert!(
                    matches!(status, 403 | 404),
                    "{name}: {file} answered {status}"
                );
            }
        }
    }

    // ffmpeg's own words went to the server log, not to the user.
    assert!(
        w.server.log().contains("moov atom not found"),
        "the raw reason is logged"
    );
    // Bob's import is untouched and still his alone.
    assert_eq!(std::fs::read(&bob_path).unwrap(), bob_video);
}

/// The import failed before anything was made, with fixed words that
/// name no path, no import, and nothing of ffmpeg's.
fn assert_attack_failed(last: &Import, name: &str, target: &str, victim: &str) {
    assert_eq!(last.status, ImportStatus::Failed, "{name} -> {target}");
    assert!(last.result.is_none(), "{name}: no result, no links");
    let error = last.error.as_ref().expect("an error");
    // Text is refused by the download's sniff; behind a real binary `ftyp`
    // box it passes the sniff, and the forced MP4 demuxer refuses it.
    let code = if name.ends_with("-after-ftyp") {
        "unreadable_media"
    } else {
        "not_a_video"
    };
    assert_eq!(error.code, code, "{name} -> {target}: {}", error.message);
    let message = &error.message;
    for leak in ["/", victim, "secret", "moov", "ftyp", "Permission", "@ 0x"] {
        assert!(!message.contains(leak), "{name}: {leak:?} in {message:?}");
    }
}

/// What ffprobe says about `path` when it picks the demuxer itself.
async fn unforced_ffprobe(path: &Path) -> String {
    let output = tokio::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_name"])
        .args(["-of", "compact"])
        .arg(path)
        .output()
        .await
        .expect("run ffprobe");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn probe_opens_a_manifest_only_as_the_container_it_is_named() {
    // Even a download that skipped the sniff is read only with the demuxer
    // of its name: a DASH manifest saved as `source.mp4` is no MP4.
    let tools = tools().await;
    // ffprobe/ffmpeg start inside the sandbox wherever the kernel has one.
    assert_eq!(tools.sandbox, Sandbox::detect());
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    web_ready(&victim.join("video.mp4")).await;
    let import = dir.path().join("attacker");
    std::fs::create_dir(&import).unwrap();
    for (name, bytes) in polyglots("../victim/video.mp4") {
        let source = import.join("source.mp4");
        std::fs::write(&source, &bytes).unwrap();
        let err = probe(&tools, &source).await.expect_err(&name);
        assert_eq!(err.code(), MediaError::UNREADABLE_MEDIA, "{name}: {err:?}");
        assert!(!err.message.contains('/'), "{name}: {}", err.message);
    }
    // Nor is a download named for a kind the sniff never gives.
    let playlist = import.join("source.m3u8");
    std::fs::write(&playlist, hls_playlist("../victim/video.mp4")).unwrap();
    let err = probe(&tools, &playlist).await.expect_err("m3u8");
    assert_eq!(err.code(), MediaError::UNREADABLE_MEDIA);
}

/// Runs `program args` in `sandbox` confined to `dir`; its exit status,
/// stdout and stderr.
async fn confined(
    sandbox: &Sandbox,
    program: &str,
    args: &[&str],
    dir: &Path,
    limits: Limits,
) -> (std::process::ExitStatus, String, String) {
    let mut command = sandbox
        .command(Path::new(program), &[dir], limits)
        .expect("sandbox prepared");
    let output = tokio::time::timeout(PATIENCE, command.args(args).output())
        .await
        .expect("in time")
        .expect("spawned");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn normal_limits() -> Limits {
    Limits::for_wall_time(Duration::from_secs(120))
}

#[tokio::test]
async fn the_sandbox_lets_ffmpeg_read_only_its_own_directory() {
    let Some(sandbox) = landlock("the_sandbox_lets_ffmpeg_read_only_its_own_directory") else {
        return;
    };
    let unconfined = Sandbox::Unavailable("control".into());
    let dir = tempfile::tempdir().unwrap();
    let own = dir.path().join("own");
    let other = dir.path().join("other");
    std::fs::create_dir_all(&own).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    web_ready(&own.join("source.mp4")).await;
    web_ready(&other.join("video.mp4")).await;
    let ffprobe = which("ffprobe");
    let own_file = format!("file:{}", own.join("source.mp4").display());
    let other_file = format!("file:{}", other.join("video.mp4").display());
    let read = |url: &str| {
        [
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "compact",
            url,
        ]
        .map(String::from)
    };
    let own_args = read(&own_file);
    let own_args: Vec<&str> = own_args.iter().map(String::as_str).collect();
    let other_args = read(&other_file);
    let other_args: Vec<&str> = other_args.iter().map(String::as_str).collect();

    let (status, stdout, stderr) =
        confined(&sandbox, &ffprobe, &own_args, &own, normal_limits()).await;
    assert!(status.success(), "its own file: {stderr}");
    assert!(stdout.contains("h264"), "{stdout}");

    let (status, stdout, stderr) =
        confined(&sandbox, &ffprobe, &other_args, &own, normal_limits()).await;
    assert!(!status.success(), "another directory: {stdout}");
    assert!(stderr.contains("Permission denied"), "{stderr}");
    // The same command outside the sandbox reads it: the refusal is the
    // sandbox's.
    let (status, stdout, _) =
        confined(&unconfined, &ffprobe, &other_args, &own, normal_limits()).await;
    assert!(status.success() && stdout.contains("h264"), "{stdout}");

    // Neither can it write outside, nor read /proc (other processes'
    // environments) or /etc; inside its directory it can write.
    let escape = other.join("written");
    let script = format!(
        "echo x > '{}' 2>/dev/null || echo WRITE-DENIED; cat /proc/self/status >/dev/null 2>&1 || echo PROC-DENIED; cat /etc/passwd >/dev/null 2>&1 || echo ETC-DENIED; echo y > '{}/inside' && echo WRITE-OK",
        escape.display(),
        own.display()
    );
    let denials = ["WRITE-DENIED", "PROC-DENIED", "ETC-DENIED"];
    let (_, stdout, _) = confined(
        &unconfined,
        "/bin/sh",
        &["-c", &script],
        &own,
        normal_limits(),
    )
    .await;
    for denied in denials {
        assert!(!stdout.contains(denied), "control: {denied}: {stdout}");
    }
    std::fs::remove_file(&escape).unwrap();
    let (_, stdout, _) =
        confined(&sandbox, "/bin/sh", &["-c", &script], &own, normal_limits()).await;
    for expected in denials.iter().chain(&["WRITE-OK"]) {
        assert!(stdout.contains(expected), "{expected}: {stdout}");
    }
    assert!(!escape.exists());
    assert!(own.join("inside").exists());
}

#[tokio::test]
async fn the_sandbox_refuses_network_connections() {
    let Some(sandbox) = landlock("the_sandbox_refuses_network_connections") else {
        return;
    };
    if !matches!(sandbox, Sandbox::Landlock(abi) if abi >= landlock::ABI::V4) {
        println!(
            "SKIPPED the_sandbox_refuses_network_connections: Landlock before ABI 4 has no network rules"
        );
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let script = format!("echo hi > /dev/tcp/127.0.0.1/{port} && echo CONNECTED");
    let (_, stdout, stderr) = confined(
        &sandbox,
        "/bin/bash",
        &["-c", &script],
        dir.path(),
        normal_limits(),
    )
    .await;
    assert!(!stdout.contains("CONNECTED"), "{stdout}");
    assert!(stderr.contains("Permission denied"), "{stderr}");
    let unconfined = Sandbox::Unavailable("control".into());
    let (_, stdout, _) = confined(
        &unconfined,
        "/bin/bash",
        &["-c", &script],
        dir.path(),
        normal_limits(),
    )
    .await;
    assert!(stdout.contains("CONNECTED"), "control: {stdout}");
}

#[tokio::test]
async fn children_get_limits_and_no_environment() {
    // Holds with or without Landlock.
    let sandbox = Sandbox::detect();
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        cpu_secs: 77,
        memory_bytes: MEMORY_LIMIT_BYTES,
    };
    let (status, stdout, stderr) = confined(
        &sandbox,
        "/bin/sh",
        &["-c", "ulimit -t; ulimit -v; ulimit -c"],
        dir.path(),
        limits,
    )
    .await;
    assert!(status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        ["77", &(MEMORY_LIMIT_BYTES / 1024).to_string(), "0"],
        "CPU seconds, address space in KiB, core size"
    );

    // The server's variables (database URLs, storage keys) stay behind.
    assert!(
        std::env::vars().count() > 1,
        "the test runs with an environment"
    );
    let (_, stdout, _) = confined(&sandbox, "/usr/bin/env", &[], dir.path(), limits).await;
    assert_eq!(stdout.trim(), "MALLOC_ARENA_MAX=2");
}

#[tokio::test]
async fn a_child_spinning_past_its_cpu_time_is_killed_by_the_kernel() {
    let sandbox = Sandbox::detect();
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        cpu_secs: 1,
        memory_bytes: MEMORY_LIMIT_BYTES,
    };
    let started = Instant::now();
    let (status, _, _) = confined(
        &sandbox,
        "/bin/sh",
        &["-c", "while :; do :; done"],
        dir.path(),
        limits,
    )
    .await;
    assert!(out_of_cpu_time(&status), "{status:?}");
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn a_transcode_past_its_time_limit_is_stopped() {
    let tools = tools().await;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.avi");
    make_long_video(&source).await;
    let probe = probe(&tools, &source).await.expect("probe");
    let output = dir.path().join("video.mp4");
    let (tx, _rx) = watch::channel(0.0);
    let cancel = CancellationToken::new();
    let limit = Duration::from_secs(2);
    let started = Instant::now();
    let work = transcode_with_limit(
        &tools,
        &source,
        &output,
        &probe,
        &tx,
        &cancel,
        Duration::from_secs(120),
        limit,
    );
    let err = tokio::time::timeout(PATIENCE, work)
        .await
        .expect("stopped in time")
        .expect_err("past its limit");
    assert_eq!(err.code(), MediaError::PROCESSING_TIMEOUT, "{err:?}");
    assert!(started.elapsed() >= limit);
    assert!(!err.message.contains('/'), "{}", err.message);
    assert!(!output.exists());
    assert_eq!(
        partial_files(dir.path()),
        Vec::<PathBuf>::new(),
        "no partial file left"
    );
    assert_eq!(
        processes_mentioning(output.to_str().unwrap()),
        Vec::<u32>::new(),
        "ffmpeg was killed"
    );
}

/// `name` on `PATH`.
fn which(name: &str) -> String {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{name} on PATH"))
        .display()
        .to_string()
}
