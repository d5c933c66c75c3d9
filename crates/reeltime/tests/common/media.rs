//! Making test videos with ffmpeg's test sources, and watching ffmpeg
//! processes, for the media and pipeline tests.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use reeltime::media::MediaTools;

/// ffprobe and ffmpeg as the server finds them (and the sandbox they run in).
pub async fn tools() -> MediaTools {
    MediaTools::detect()
        .await
        .expect("ffmpeg and ffprobe must be on PATH for these tests: apt-get install ffmpeg")
}

/// Runs ffmpeg to make a test input; panics with its message on failure.
pub async fn make(args: &[&str], output: &Path) {
    let result = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
        .args(args)
        .arg(output)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run ffmpeg");
    assert!(
        result.status.success(),
        "ffmpeg failed making {}: {}",
        output.display(),
        String::from_utf8_lossy(&result.stderr)
    );
}

/// A lavfi test picture of `size` lasting `secs`, with a tone when `audio`.
pub fn lavfi_inputs(size: &str, secs: u32, audio: bool) -> Vec<String> {
    let mut args = vec![
        "-f".into(),
        "lavfi".into(),
        "-i".into(),
        format!("testsrc2=size={size}:rate=25:duration={secs}"),
    ];
    if audio {
        args.extend([
            "-f".into(),
            "lavfi".into(),
            "-i".into(),
            format!("sine=frequency=440:duration={secs}"),
        ]);
    }
    args
}

pub async fn make_video(output: &Path, size: &str, secs: u32, audio: bool, codecs: &[&str]) {
    let mut args = lavfi_inputs(size, secs, audio);
    args.extend(codecs.iter().map(|arg| arg.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    make(&args, output).await;
}

/// 30 s of 1280x720 MPEG-4 in AVI: long enough that its transcode is still
/// running when a test stops it.
pub async fn make_long_video(output: &Path) {
    make_video(
        output,
        "1280x720",
        30,
        false,
        &["-c:v", "mpeg4", "-q:v", "20"],
    )
    .await;
}

/// Partial files (`*.part`) in `dir`: ffmpeg's output while it runs.
pub fn partial_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "part"))
                .collect()
        })
        .unwrap_or_default()
}

pub const H264_AAC: &[&str] = &[
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
    "-pix_fmt",
    "yuv420p",
    "-c:a",
    "aac",
    "-b:a",
    "64k",
];

/// Pids of running processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}
