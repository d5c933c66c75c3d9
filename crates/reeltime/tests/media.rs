//! Media processing with the real ffprobe/ffmpeg, on videos the tests make
//! with ffmpeg's test sources. Needs ffmpeg installed (`./scripts/test`
//! installs it; by hand: `apt-get install ffmpeg`).

mod common;

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::media::{
    H264_AAC, make, make_long_video, make_video, partial_files, processes_mentioning, tools,
};
use reeltime::media::ffmpeg::POSTER_MAX_WIDTH;
use reeltime::media::probe::moov_before_mdat;
use reeltime::media::{
    MediaError, Probe, TranscodeMode, needs_transcode, poster, probe, transcode,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Generous: only the stall test relies on the stall timeout firing.
const NO_STALL: Duration = Duration::from_secs(120);
/// Upper bound for any wait, so a broken build fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(180);

/// Stream facts read straight from ffprobe, to check outputs independently.
async fn ffprobe_streams(path: &Path) -> serde_json::Value {
    let output = tokio::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_streams",
            "-show_format",
        ])
        .arg(path)
        .output()
        .await
        .expect("run ffprobe");
    assert!(
        output.status.success(),
        "ffprobe failed on {}",
        path.display()
    );
    serde_json::from_slice(&output.stdout).expect("ffprobe json")
}

fn stream_of<'a>(json: &'a serde_json::Value, kind: &str) -> Option<&'a serde_json::Value> {
    json["streams"]
        .as_array()?
        .iter()
        .find(|stream| stream["codec_type"] == kind)
}

/// Collects every progress value published until the sender is dropped.
fn collect_progress(mut rx: watch::Receiver<f64>) -> tokio::task::JoinHandle<Vec<f64>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while rx.changed().await.is_ok() {
            seen.push(*rx.borrow_and_update());
        }
        seen
    })
}

#[tokio::test]
async fn probes_a_web_ready_mp4() {
    let tools = tools().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ready.mp4");
    let mut codecs = H264_AAC.to_vec();
    codecs.extend(["-movflags", "+faststart"]);
    make_video(&path, "320x240", 3, true, &codecs).await;

    let probe = probe(&tools, &path).await.expect("probe");
    assert!(
        (probe.duration_secs - 3.0).abs() < 0.2,
        "{}",
        probe.duration_secs
    );
    assert_eq!((probe.width, probe.height), (320, 240));
    assert!(probe.container.contains("mp4"), "{}", probe.container);
    assert_eq!(probe.video_codec, "h264");
    assert_eq!(probe.audio_codec.as_deref(), Some("aac"));
    assert_eq!(probe.size_bytes, std::fs::metadata(&path).unwrap().len());
    assert!(probe.is_web_ready);
    assert!(!needs_transcode(TranscodeMode::Auto, &probe));
    assert!(needs_transcode(TranscodeMode::Always, &probe));
}

#[tokio::test]
async fn an_mp4_with_moov_at_the_end_is_not_web_ready() {
    let tools = tools().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("moov-last.mp4");
    make_video(&path, "320x240", 1, true, H264_AAC).await;

    assert_eq!(moov_before_mdat(&path).await.unwrap(), Some(false));
    let probe = probe(&tools, &path).await.expect("probe");
    assert_eq!(probe.video_codec, "h264");
    assert!(!probe.is_web_ready, "moov after mdat cannot stream");
    assert!(needs_transcode(TranscodeMode::Auto, &probe));
}

#[tokio::test]
async fn transcodes_a_video_that_needs_it() {
    let tools = tools().await;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.avi");
    // MPEG-4 Part 2 and PCM in AVI, 4:3 and taller than 720.
    let codecs = ["-c:v", "mpeg4", "-q:v", "8", "-c:a", "pcm_s16le"];
    make_video(&source, "1280x960", 3, true, &codecs).await;

    let probe = probe(&tools, &source).await.expect("probe");
    assert_eq!(probe.video_codec, "mpeg4");
    assert_eq!(probe.audio_codec.as_deref(), Some("pcm_s16le"));
    assert_eq!(probe.height, 960);
    assert!(!probe.is_web_ready);
    assert!(needs_transcode(TranscodeMode::Auto, &probe));
    assert!(!needs_transcode(TranscodeMode::Never, &probe));

    let output = dir.path().join("video.mp4");
    let (tx, rx) = watch::channel(0.0);
    let progress = collect_progress(rx);
    let cancel = CancellationToken::new();
    let done = transcode(&tools, &source, &output, &probe, &tx, &cancel, NO_STALL);
    tokio::time::timeout(PATIENCE, done)
        .await
        .expect("transcode finished in time")
        .expect("transcode");
    drop(tx);
    let progress = progress.await.unwrap();

    assert!(!progress.is_empty());
    assert!(
        progress.windows(2).all(|pair| pair[0] <= pair[1]),
        "monotonic: {progress:?}"
    );
    assert!(progress.iter().all(|value| (0.0..=1.0).contains(value)));
    assert_eq!(progress.last().copied(), Some(1.0));

    assert_eq!(partial_files(dir.path()), Vec::<PathBuf>::new());
    let json = ffprobe_streams(&output).await;
    let video = stream_of(&json, "video").expect("video stream");
    assert_eq!(video["codec_name"], "h264");
    assert_eq!(video["pix_fmt"], "yuv420p");
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(960), Some(720))
    );
    let audio = stream_of(&json, "audio").expect("audio stream");
    assert_eq!(audio["codec_name"], "aac");
    assert_eq!(moov_before_mdat(&output).await.unwrap(), Some(true));

    // And our own probe agrees the copy is web-ready.
    let copy = reeltime::media::probe(&tools, &output)
        .await
        .expect("probe output");
    assert!(copy.is_web_ready, "{copy:?}");
    assert!(
        (copy.duration_secs - 3.0).abs() < 0.3,
        "{}",
        copy.duration_secs
    );
}

#[tokio::test]
async fn transcodes_a_silent_video_without_audio() {
    let tools = tools().await;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("silent.mkv");
    make_video(&source, "320x240", 1, false, &["-c:v", "mpeg4"]).await;
    let probe = probe(&tools, &source).await.expect("probe");
    assert_eq!(probe.audio_codec, None);

    let output = dir.path().join("video.mp4");
    let (tx, rx) = watch::channel(0.0);
    let cancel = CancellationToken::new();
    let done = transcode(&tools, &source, &output, &probe, &tx, &cancel, NO_STALL);
    tokio::time::timeout(PATIENCE, done)
        .await
        .expect("in time")
        .expect("transcode");
    assert_eq!(*rx.borrow(), 1.0);
    let json = ffprobe_streams(&output).await;
    assert_eq!(
        stream_of(&json, "video").map(|v| v["codec_name"].clone()),
        Some("h264".into())
    );
    assert!(stream_of(&json, "audio").is_none());
}

#[tokio::test]
async fn makes_a_jpeg_poster() {
    let tools = tools().await;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.mp4");
    make_video(&source, "1280x720", 2, true, H264_AAC).await;
    let probe = probe(&tools, &source).await.expect("probe");

    let cancel = CancellationToken::new();
    let jpg = dir.path().join("poster.jpg");
    poster(&tools, &source, &jpg, &probe, &cancel, NO_STALL)
        .await
        .expect("poster");
    assert_valid_jpeg(&jpg, POSTER_MAX_WIDTH.into(), 360).await;

    // A header claiming a longer video seeks past the end: the first frame
    // is used instead of failing.
    let wrong = Probe {
        duration_secs: 1000.0,
        ..probe.clone()
    };
    let fallback = dir.path().join("fallback.jpg");
    poster(&tools, &source, &fallback, &wrong, &cancel, NO_STALL)
        .await
        .expect("fallback poster");
    assert_valid_jpeg(&fallback, 640, 360).await;
}

async fn assert_valid_jpeg(path: &Path, width: u64, height: u64) {
    let bytes = std::fs::read(path).expect("poster written");
    assert!(bytes.starts_with(&[0xFF, 0xD8, 0xFF]), "JPEG start marker");
    assert!(bytes.ends_with(&[0xFF, 0xD9]), "JPEG end marker");
    let json = ffprobe_streams(path).await;
    let picture = stream_of(&json, "video").expect("a picture");
    assert_eq!(picture["codec_name"], "mjpeg");
    assert_eq!(
        (picture["width"].as_u64(), picture["height"].as_u64()),
        (Some(width), Some(height))
    );
    let dir = path.parent().unwrap();
    assert_eq!(partial_files(dir), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn audio_only_is_not_a_video() {
    let tools = tools().await;
    let dir = tempfile::tempdir().unwrap();
    // Named as the sniff would name it: AAC in MP4 starts with `ftyp`.
    let path = dir.path().join("song.mp4");
    make(
        &[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=2",
            "-c:a",
            "aac",
        ],
        &path,
    )
    .await;

    let err = probe(&tools, &path).await.expect_err("audio only");
    assert_eq!(err.code(), MediaError::NOT_A_VIDEO);
    assert!(err.message.contains("audio"), "{}", err.message);
}

#[tokio::test]
async fn a_corrupt_mp4_is_unreadable() {
    let tools = tools().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrupt.mp4");
    // A real `ftyp` box, then noise.
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&24u32.to_be_bytes());
    bytes.extend_from_slice(b"ftypisom\0\0\x02\0isomiso2");
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    bytes.extend((0..200_000).map(|_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as u8
    }));
    std::fs::write(&path, &bytes).unwrap();

    let err = probe(&tools, &path).await.expect_err("corrupt");
    assert_eq!(err.code(), MediaError::UNREADABLE_MEDIA);
    assert!(
        !err.message.contains(dir.path().to_str().unwrap()),
        "no server paths: {}",
        err.message
    );
}

#[tokio::test]
async fn a_text_file_named_mp4_is_refused() {
    let tools = tools().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.mp4");
    std::fs::write(
        &path,
        "These are my notes.\nNot a video at all.\n".repeat(50),
    )
    .unwrap();

    let err = probe(&tools, &path).await.expect_err("text");
    assert!(
        [MediaError::UNREADABLE_MEDIA, MediaError::NOT_A_VIDEO].contains(&err.code()),
        "{err:?}"
    );

    // Had it slipped through, ffmpeg would fail cleanly and leave nothing.
    let fake = fake_probe(1.0);
    let output = dir.path().join("video.mp4");
    let (tx, _rx) = watch::channel(0.0);
    let cancel = CancellationToken::new();
    let err = transcode(&tools, &path, &output, &fake, &tx, &cancel, NO_STALL)
        .await
        .expect_err("ffmpeg fails");
    assert_eq!(err.code(), MediaError::PROCESSING_FAILED);
    assert!(!output.exists());
    assert_eq!(partial_files(dir.path()), Vec::<PathBuf>::new());
}

/// What probing a 320x240 MPEG-4 stream would say, for inputs that cannot
/// be probed first (a pipe).
fn fake_probe(duration_secs: f64) -> Probe {
    Probe {
        duration_secs,
        width: 320,
        height: 240,
        container: "mpegts".into(),
        video_codec: "mpeg4".into(),
        audio_codec: None,
        pixel_format: Some("yuv420p".into()),
        size_bytes: 0,
        is_web_ready: false,
        video_stream: 0,
        audio_stream: None,
    }
}

#[tokio::test]
async fn cancel_kills_ffmpeg_at_once_and_removes_the_output() {
    let tools = tools().await;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("long.avi");
    // Long enough that the transcode is still running when cancelled.
    make_long_video(&source).await;
    let probe = probe(&tools, &source).await.expect("probe");

    let output = dir.path().join("video.mp4");
    let (tx, mut rx) = watch::channel(0.0);
    let cancel = CancellationToken::new();
    let job = {
        let (tools, source, output, cancel) = (
            tools.clone(),
            source.clone(),
            output.clone(),
            cancel.clone(),
        );
        tokio::spawn(async move {
            transcode(&tools, &source, &output, &probe, &tx, &cancel, NO_STALL).await
        })
    };

    // Wait until ffmpeg reports real progress, then cancel.
    tokio::time::timeout(PATIENCE, rx.wait_for(|fraction| *fraction > 0.0))
        .await
        .expect("progress in time")
        .expect("progress");
    let running = processes_mentioning(output.to_str().unwrap());
    assert_eq!(running.len(), 1, "one ffmpeg writing {}", output.display());
    assert_eq!(partial_files(dir.path()).len(), 1, "ffmpeg is writing");

    let cancelled_at = Instant::now();
    cancel.cancel();
    let result = tokio::time::timeout(PATIENCE, job)
        .await
        .expect("stops")
        .unwrap();
    let took = cancelled_at.elapsed();
    assert_eq!(result.map_err(|err| err.code()), Err(MediaError::CANCELLED));
    assert!(took < Duration::from_secs(10), "cancel took {took:?}");
    assert!(
        !Path::new(&format!("/proc/{}", running[0])).exists(),
        "ffmpeg is gone (killed and reaped)"
    );
    assert!(!output.exists());
    assert_eq!(
        partial_files(dir.path()),
        Vec::<PathBuf>::new(),
        "no files left"
    );
    assert!(
        *rx.borrow() < 1.0,
        "a cancelled transcode never reports 1.0"
    );
}

#[tokio::test]
async fn a_stalled_ffmpeg_is_killed() {
    let tools = tools().await;
    let dir = tempfile::tempdir().unwrap();

    // Half of a real MPEG-TS stream, fed through a named pipe whose writer
    // then goes quiet without closing: ffmpeg waits for data forever.
    let ts = dir.path().join("whole.ts");
    make_video(&ts, "320x240", 2, false, &["-c:v", "mpeg4", "-f", "mpegts"]).await;
    let bytes = std::fs::read(&ts).unwrap();
    let fifo = dir.path().join("input.ts");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());

    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let writer_path = fifo.clone();
    // A plain thread: opening a FIFO for writing blocks until a reader opens it.
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut pipe = std::fs::OpenOptions::new().write(true).open(&writer_path)?;
        pipe.write_all(&bytes[..bytes.len() / 2])?;
        // Stay open and silent until the test is done.
        let _ = done_rx.recv();
        Ok::<(), std::io::Error>(())
    });

    let output = dir.path().join("video.mp4");
    let (tx, _rx) = watch::channel(0.0);
    let cancel = CancellationToken::new();
    let stall = Duration::from_secs(2);
    let probe = fake_probe(2.0);
    let started = Instant::now();
    let work = transcode(&tools, &fifo, &output, &probe, &tx, &cancel, stall);
    let err = tokio::time::timeout(PATIENCE, work)
        .await
        .expect("the stall is detected")
        .expect_err("stalled");
    assert_eq!(err.code(), MediaError::PROCESSING_STALLED, "{err:?}");
    assert!(err.message.contains("no progress"), "{}", err.message);
    assert!(started.elapsed() >= stall);
    assert!(!output.exists());
    assert_eq!(
        partial_files(dir.path()),
        Vec::<PathBuf>::new(),
        "no files left"
    );
    assert_eq!(
        processes_mentioning(output.to_str().unwrap()),
        Vec::<u32>::new(),
        "ffmpeg was killed and reaped"
    );

    // Release the writer. Opening (and closing) the read end unblocks it
    // if ffmpeg was killed before it even opened the pipe; its writes then
    // fail, as nobody reads any more.
    let _ = done_tx.send(());
    drop(
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(O_NONBLOCK)
            .open(&fifo),
    );
    let _ = writer.join();
}

/// Linux's `O_NONBLOCK`: opens a FIFO's read end without waiting for a writer.
const O_NONBLOCK: i32 = 0o4000;
