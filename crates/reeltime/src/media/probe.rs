//! Reads what a downloaded file is: duration, picture size, container,
//! codecs, and whether a browser can play it as it is.
//!
//! `ffprobe` does the reading. Whether the file is "web-ready" is decided
//! here, from the codecs ffprobe reports and from the order of the MP4's
//! top-level boxes (a browser can start playing only once it has the `moov`
//! index, so it must come before the `mdat` media data).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::MediaError;
use super::input;
use super::sandbox::{Limits, out_of_cpu_time, work_dirs};
use super::tools::MediaTools;

/// ffprobe reads headers only; longer than this means it is stuck (or
/// made to spin by a crafted file). Also its CPU-time limit.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// The tallest picture a web-ready copy may have.
pub const MAX_WEB_HEIGHT: u32 = 720;

/// What a file is, as far as the import cares.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Probe {
    /// 0.0 when neither the container nor the stream says.
    pub duration_secs: f64,
    /// Displayed size: a phone video stored sideways with a rotation flag
    /// counts as it is shown.
    pub width: u32,
    pub height: u32,
    /// ffprobe's `format_name`, e.g. `mov,mp4,m4a,3gp,3g2,mj2`.
    pub container: String,
    pub video_codec: String,
    pub audio_codec: Option<String>,
    /// e.g. `yuv420p`; browsers play H.264 only in 4:2:0 8-bit.
    pub pixel_format: Option<String>,
    pub size_bytes: u64,
    /// MP4/MOV, H.264 in yuv420p, AAC or no audio, at most 720 high, and
    /// `moov` before `mdat`: a browser can stream it as it is.
    pub is_web_ready: bool,
    /// ffprobe's index of the video stream used (cover art is skipped).
    pub video_stream: usize,
    /// ffprobe's index of the first audio stream, if any.
    pub audio_stream: Option<usize>,
}

impl Probe {
    /// Whether the file has an audio stream to keep.
    pub fn has_audio(&self) -> bool {
        self.audio_stream.is_some()
    }
}

/// What a person is told when ffprobe or ffmpeg cannot read their file.
/// Fixed words: ffmpeg's own message (which may quote paths, or contents of
/// files a crafted download tried to reach) goes only to the server log.
pub(crate) const UNREADABLE_MESSAGE: &str = "This file could not be read as a video: it may be damaged, incomplete, or in a format we do not support.";

/// Reads `path` with ffprobe, opening it only with the demuxer its
/// extension (the sniffed kind) names.
///
/// Fails `not_a_video` when there is no moving picture (audio only, a still
/// image, text), `unreadable_media` when ffprobe cannot make sense of the
/// file, and `processing_timeout` when ffprobe runs past its limit; the
/// messages are written for the person who imported it.
pub async fn probe(tools: &MediaTools, path: &Path) -> Result<Probe, MediaError> {
    let size_bytes = tokio::fs::metadata(path)
        .await
        .map_err(|err| unreadable(path, format_args!("could not be opened: {err}")))?
        .len();
    let input = input::input_args(path)?;
    let output = run_ffprobe(tools, path, input).await?;
    let mut probe = interpret(&output, size_bytes).inspect_err(|err| {
        tracing::info!(input = %path.display(), code = err.code, "not imported as a video");
    })?;
    // The demuxer was forced, so this holds; checked so that a change in
    // how ffmpeg is called can never let another demuxer's result through.
    let forced = input::demuxer_of(path).unwrap_or_default();
    if !input::is_demuxer(&probe.container, forced) {
        return Err(unreadable(
            path,
            format_args!("read as {} instead of {forced}", probe.container),
        ));
    }
    probe.is_web_ready = probe.is_web_ready
        && moov_before_mdat(path)
            .await
            .map_err(|err| unreadable(path, format_args!("box walk failed: {err}")))?
            .unwrap_or(false);
    Ok(probe)
}

/// Whether an MP4/MOV file's `moov` box comes before its `mdat` box, read
/// from the top-level box headers. `None` when the file has neither, or its
/// boxes do not add up (not an MP4, or truncated).
pub async fn moov_before_mdat(path: &Path) -> std::io::Result<Option<bool>> {
    /// Real files have a handful of top-level boxes; this bounds the walk.
    const MAX_BOXES: usize = 1024;
    let mut file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    let mut pos = 0u64;
    for _ in 0..MAX_BOXES {
        let Some((kind, size)) = read_box_header(&mut file, pos, len).await? else {
            return Ok(None);
        };
        match &kind {
            b"moov" => return Ok(Some(true)),
            b"mdat" => return Ok(Some(false)),
            _ => {}
        }
        pos = match pos.checked_add(size) {
            Some(next) => next,
            None => return Ok(None),
        };
    }
    Ok(None)
}

/// The type and whole size of the box at `pos`; `None` past the end or for a
/// size that cannot be right.
async fn read_box_header(
    file: &mut tokio::fs::File,
    pos: u64,
    len: u64,
) -> std::io::Result<Option<([u8; 4], u64)>> {
    if len.saturating_sub(pos) < 8 {
        return Ok(None);
    }
    file.seek(std::io::SeekFrom::Start(pos)).await?;
    let mut header = [0u8; 8];
    file.read_exact(&mut header).await?;
    let size32 = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let kind = [header[4], header[5], header[6], header[7]];
    let (size, header_len) = match size32 {
        // Size 0: the box runs to the end of the file.
        0 => (len - pos, 8),
        // Size 1: a 64-bit size follows the type.
        1 => {
            if len - pos < 16 {
                return Ok(None);
            }
            let mut large = [0u8; 8];
            file.read_exact(&mut large).await?;
            (u64::from_be_bytes(large), 16)
        }
        n => (u64::from(n), 8),
    };
    if size < header_len {
        return Ok(None);
    }
    Ok(Some((kind, size)))
}

/// Runs ffprobe in the sandbox; its stdout when it could read the file.
async fn run_ffprobe(
    tools: &MediaTools,
    path: &Path,
    input: Vec<std::ffi::OsString>,
) -> Result<Vec<u8>, MediaError> {
    let mut command = tools
        .sandbox
        .command(
            &tools.ffprobe,
            &work_dirs(&[path]),
            Limits::for_wall_time(PROBE_TIMEOUT),
        )
        .map_err(|err| cannot_start("ffprobe", path, err))?;
    let output = command
        .args(["-v", "error", "-print_format", "json"])
        .args(["-show_format", "-show_streams"])
        .args(input)
        .output();
    let output = match tokio::time::timeout(PROBE_TIMEOUT, output).await {
        Err(_) => {
            tracing::warn!(input = %path.display(), "ffprobe ran out of time and was killed");
            return Err(timed_out(PROBE_TIMEOUT));
        }
        Ok(Err(err)) => return Err(cannot_start("ffprobe", path, err)),
        Ok(Ok(output)) => output,
    };
    if out_of_cpu_time(&output.status) {
        tracing::warn!(input = %path.display(), "ffprobe ran out of CPU time");
        return Err(timed_out(PROBE_TIMEOUT));
    }
    if !output.status.success() {
        return Err(unreadable(
            path,
            format_args!(
                "ffprobe failed ({}): {}",
                output.status,
                stderr_summary(&output.stderr)
            ),
        ));
    }
    Ok(output.stdout)
}

/// ffmpeg's or ffprobe's stderr for the server log: its first lines, as
/// they are.
pub(crate) fn stderr_summary(stderr: &[u8]) -> String {
    const KEEP: usize = 1000;
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if text.is_empty() {
        return "no details".into();
    }
    text.chars()
        .take(KEEP)
        .map(|c| if c == '\n' { '|' } else { c })
        .collect()
}

/// The fixed `unreadable_media` error; `why` (which may quote ffmpeg) goes
/// to the server log only.
pub(crate) fn unreadable(path: &Path, why: impl std::fmt::Display) -> MediaError {
    tracing::info!(input = %path.display(), reason = %why, "file not readable as a video");
    MediaError::new(MediaError::UNREADABLE_MEDIA, UNREADABLE_MESSAGE)
}

/// The fixed `unreadable_media` error for an answer of ffprobe's that does
/// not describe a usable video; `why` goes to the server log.
fn refused(why: impl std::fmt::Display) -> MediaError {
    tracing::info!(reason = %why, "ffprobe's description refused");
    MediaError::new(MediaError::UNREADABLE_MEDIA, UNREADABLE_MESSAGE)
}

/// The `processing_timeout` error of a probe or poster run.
pub(crate) fn timed_out(limit: std::time::Duration) -> MediaError {
    MediaError::new(
        MediaError::PROCESSING_TIMEOUT,
        format!(
            "Reading this video took longer than {} seconds, the most it may take, so it was stopped.",
            limit.as_secs()
        ),
    )
}

/// ffprobe/ffmpeg could not be started (or its sandbox prepared).
pub(crate) fn cannot_start(program: &str, path: &Path, err: impl std::fmt::Display) -> MediaError {
    tracing::error!(input = %path.display(), error = %err, "{program} could not be started");
    MediaError::new(
        MediaError::PROCESSING_FAILED,
        "The video processor could not be started; this is a problem on our side, not with the file.",
    )
}

fn not_a_video(message: &str) -> MediaError {
    MediaError::new(MediaError::NOT_A_VIDEO, message)
}

#[derive(Deserialize)]
struct FfprobeOutput {
    #[serde(default)]
    streams: Vec<Stream>,
    #[serde(default)]
    format: Format,
}

#[derive(Deserialize)]
struct Stream {
    index: usize,
    codec_type: Option<String>,
    codec_name: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    pix_fmt: Option<String>,
    duration: Option<String>,
    #[serde(default)]
    disposition: Disposition,
    #[serde(default)]
    side_data_list: Vec<SideData>,
    #[serde(default)]
    tags: HashMap<String, String>,
}

#[derive(Deserialize, Default)]
struct Disposition {
    #[serde(default)]
    attached_pic: u8,
}

#[derive(Deserialize)]
struct SideData {
    rotation: Option<f64>,
}

#[derive(Deserialize, Default)]
struct Format {
    format_name: Option<String>,
    duration: Option<String>,
}

/// Turns ffprobe's JSON into a [`Probe`] (without the box-order check).
fn interpret(json: &[u8], size_bytes: u64) -> Result<Probe, MediaError> {
    let parsed: FfprobeOutput = serde_json::from_slice(json)
        .map_err(|err| refused(format_args!("ffprobe said something unexpected: {err}")))?;
    let container = parsed.format.format_name.clone().unwrap_or_default();
    let video = pick_video(&parsed.streams)?;
    reject_non_video(&container, video)?;
    let audio = parsed
        .streams
        .iter()
        .find(|stream| stream.codec_type.as_deref() == Some("audio"));
    let (width, height) = displayed_size(video)?;
    let video_codec = video.codec_name.clone().unwrap_or_default();
    let audio_codec = audio.and_then(|stream| stream.codec_name.clone());
    let mut probe = Probe {
        duration_secs: duration(&parsed.format, video),
        width,
        height,
        container,
        video_codec,
        audio_codec,
        pixel_format: video.pix_fmt.clone(),
        size_bytes,
        is_web_ready: false,
        video_stream: video.index,
        audio_stream: audio.map(|stream| stream.index),
    };
    probe.is_web_ready = codecs_web_ready(&probe);
    Ok(probe)
}

/// The first real video stream; cover art (`attached_pic`) is not one.
fn pick_video(streams: &[Stream]) -> Result<&Stream, MediaError> {
    let video = streams.iter().find(|stream| {
        stream.codec_type.as_deref() == Some("video") && stream.disposition.attached_pic == 0
    });
    if let Some(video) = video {
        return Ok(video);
    }
    let has_audio = streams
        .iter()
        .any(|stream| stream.codec_type.as_deref() == Some("audio"));
    Err(not_a_video(if has_audio {
        "This file has sound but no picture: it is an audio file, not a video."
    } else {
        "This file has no video in it, so it cannot be imported as a video."
    }))
}

/// ffmpeg also reads pictures and text as one-frame "video"; those are not
/// videos to a person.
fn reject_non_video(container: &str, video: &Stream) -> Result<(), MediaError> {
    if container == "tty" {
        return Err(not_a_video("This looks like a text file, not a video."));
    }
    let image_container = container == "image2" || container.ends_with("_pipe");
    // PNG and the like inside MP4/MOV are real (if rare) video codecs.
    let image_codec = matches!(
        video.codec_name.as_deref(),
        Some("png" | "bmp" | "gif" | "webp" | "tiff")
    ) && !container.contains("mp4");
    let still_image = image_container || image_codec;
    if still_image {
        return Err(not_a_video(
            "This is a picture, not a video: it has no moving images to play.",
        ));
    }
    Ok(())
}

/// Width and height as shown: swapped for a 90° or 270° rotation.
fn displayed_size(video: &Stream) -> Result<(u32, u32), MediaError> {
    let (width, height) = match (video.width, video.height) {
        (Some(width), Some(height)) if width > 0 && height > 0 => (width, height),
        _ => return Err(refused("the video has no picture size")),
    };
    let rotation = video
        .side_data_list
        .iter()
        .find_map(|data| data.rotation)
        .or_else(|| video.tags.get("rotate").and_then(|r| r.parse().ok()))
        .unwrap_or(0.0);
    let quarter_turns = (rotation / 90.0).round() as i64;
    Ok(if quarter_turns.rem_euclid(2) == 1 {
        (height, width)
    } else {
        (width, height)
    })
}

/// The container's duration, else the video stream's, else 0.
fn duration(format: &Format, video: &Stream) -> f64 {
    [format.duration.as_deref(), video.duration.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(|text| text.parse::<f64>().ok())
        .find(|secs| secs.is_finite() && *secs > 0.0)
        .unwrap_or(0.0)
}

/// Everything but the box order: container, codecs, pixel format, height.
fn codecs_web_ready(probe: &Probe) -> bool {
    let mp4_family = probe
        .container
        .split(',')
        .any(|name| name == "mp4" || name == "mov");
    let audio_ok = matches!(probe.audio_codec.as_deref(), None | Some("aac"));
    let pixels_ok = matches!(probe.pixel_format.as_deref(), Some("yuv420p" | "yuvj420p"));
    mp4_family
        && probe.video_codec == "h264"
        && pixels_ok
        && audio_ok
        && probe.height <= MAX_WEB_HEIGHT
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ffprobe_json(format: &str, streams: &str) -> Vec<u8> {
        format!(r#"{{"streams":[{streams}],"format":{{"format_name":"{format}","duration":"4.000000"}}}}"#)
            .into_bytes()
    }

    const H264: &str = r#"{"index":0,"codec_type":"video","codec_name":"h264","width":640,"height":360,"pix_fmt":"yuv420p"}"#;
    const AAC: &str = r#"{"index":1,"codec_type":"audio","codec_name":"aac"}"#;
    const MP4: &str = "mov,mp4,m4a,3gp,3g2,mj2";

    #[test]
    fn reads_an_h264_aac_mp4() {
        let probe = interpret(&ffprobe_json(MP4, &format!("{H264},{AAC}")), 1234).unwrap();
        assert_eq!(probe.duration_secs, 4.0);
        assert_eq!((probe.width, probe.height), (640, 360));
        assert_eq!(probe.video_codec, "h264");
        assert_eq!(probe.audio_codec.as_deref(), Some("aac"));
        assert_eq!(probe.size_bytes, 1234);
        assert_eq!((probe.video_stream, probe.audio_stream), (0, Some(1)));
        assert!(probe.is_web_ready);
    }

    #[test]
    fn web_ready_needs_every_condition() {
        let cases = [
            ("matroska,webm", format!("{H264},{AAC}")),
            (MP4, H264.replace("h264", "hevc")),
            (MP4, H264.replace("yuv420p", "yuv444p")),
            (MP4, H264.replace("360", "1080")),
            (MP4, format!("{H264},{}", AAC.replace("aac", "opus"))),
        ];
        for (format, streams) in cases {
            let probe = interpret(&ffprobe_json(format, &streams), 1).unwrap();
            assert!(!probe.is_web_ready, "{format} {streams}");
        }
        let silent = interpret(&ffprobe_json(MP4, H264), 1).unwrap();
        assert!(silent.is_web_ready, "no audio is fine");
    }

    #[test]
    fn audio_only_is_not_a_video() {
        let err = interpret(&ffprobe_json("mp3", AAC), 1).unwrap_err();
        assert_eq!(err.code(), MediaError::NOT_A_VIDEO);
        assert!(err.message.contains("audio"));
    }

    #[test]
    fn cover_art_is_not_a_video() {
        let art = r#"{"index":1,"codec_type":"video","codec_name":"mjpeg","width":500,"height":500,"disposition":{"attached_pic":1}}"#;
        let err = interpret(&ffprobe_json("mp3", &format!("{AAC},{art}")), 1).unwrap_err();
        assert_eq!(err.code(), MediaError::NOT_A_VIDEO);
    }

    #[test]
    fn pictures_and_text_are_not_videos() {
        let png = r#"{"index":0,"codec_type":"video","codec_name":"png","width":5,"height":5}"#;
        let ansi =
            r#"{"index":0,"codec_type":"video","codec_name":"ansi","width":640,"height":400}"#;
        for (format, stream) in [("png_pipe", png), ("image2", png), ("tty", ansi)] {
            let err = interpret(&ffprobe_json(format, stream), 1).unwrap_err();
            assert_eq!(err.code(), MediaError::NOT_A_VIDEO, "{format}");
        }
    }

    #[test]
    fn a_rotated_video_counts_as_shown() {
        let rotated = r#"{"index":0,"codec_type":"video","codec_name":"h264","width":1280,"height":720,"pix_fmt":"yuv420p","side_data_list":[{"rotation":-90}]}"#;
        let probe = interpret(&ffprobe_json(MP4, rotated), 1).unwrap();
        assert_eq!((probe.width, probe.height), (720, 1280));
        assert!(!probe.is_web_ready);
    }

    #[test]
    fn garbage_json_is_unreadable() {
        let err = interpret(b"not json", 1).unwrap_err();
        assert_eq!(err.code(), MediaError::UNREADABLE_MEDIA);
    }

    #[test]
    fn stderr_is_summarised_for_the_log_only() {
        let stderr = b"[mov,mp4 @ 0x5654] moov atom not found\nfile:/srv/x: Invalid data\n";
        assert_eq!(
            stderr_summary(stderr),
            "[mov,mp4 @ 0x5654] moov atom not found|file:/srv/x: Invalid data"
        );
        assert_eq!(stderr_summary(b"  \n"), "no details");
        let err = unreadable(Path::new("/srv/x"), stderr_summary(stderr));
        assert_eq!(
            err.message, UNREADABLE_MESSAGE,
            "ffmpeg's words stay in the log"
        );
    }

    async fn boxes(path: &Path, boxes: &[(&[u8; 4], u32)]) -> Option<bool> {
        let mut bytes = Vec::new();
        for (kind, size) in boxes {
            bytes.extend_from_slice(&size.to_be_bytes());
            bytes.extend_from_slice(*kind);
            bytes.resize(bytes.len() + (*size as usize).saturating_sub(8), 0);
        }
        tokio::fs::write(path, &bytes).await.unwrap();
        moov_before_mdat(path).await.unwrap()
    }

    #[tokio::test]
    async fn reads_the_top_level_box_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("boxes.mp4");
        let ftyp = (b"ftyp", 24);
        assert_eq!(
            boxes(&path, &[ftyp, (b"moov", 100), (b"mdat", 50)]).await,
            Some(true)
        );
        assert_eq!(
            boxes(&path, &[ftyp, (b"free", 8), (b"mdat", 50), (b"moov", 100)]).await,
            Some(false)
        );
        assert_eq!(boxes(&path, &[ftyp, (b"free", 8)]).await, None);
        // A size smaller than its own header is nonsense, not a loop.
        assert_eq!(boxes(&path, &[ftyp, (b"free", 3)]).await, None);
        // Size 0 means "to the end of the file".
        assert_eq!(boxes(&path, &[ftyp, (b"mdat", 0)]).await, Some(false));
    }

    #[tokio::test]
    async fn reads_a_64_bit_box_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("large.mp4");
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&1u32.to_be_bytes());
        bytes.extend_from_slice(b"free");
        bytes.extend_from_slice(&24u64.to_be_bytes());
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&8u32.to_be_bytes());
        bytes.extend_from_slice(b"moov");
        tokio::fs::write(&path, &bytes).await.unwrap();
        assert_eq!(moov_before_mdat(&path).await.unwrap(), Some(true));
    }
}
