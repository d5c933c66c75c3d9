//! Reads what a downloaded file is: duration, picture size, container,
//! codecs, and whether a browser can play it as it is.
//!
//! `ffprobe` does the reading. Whether the file is "web-ready" is decided
//! here, from the codecs ffprobe reports and from the order of the MP4's
//! top-level boxes (a browser can start playing only once it has the `moov`
//! index, so it must come before the `mdat` media data).

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::process::Command;

use super::MediaError;
use super::tools::MediaTools;

/// ffprobe reads headers only; longer than this means it is stuck.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

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

/// Reads `path` with ffprobe.
///
/// Fails `not_a_video` when there is no moving picture (audio only, a still
/// image, text) and `unreadable_media` when ffprobe cannot make sense of the
/// file; both messages are written for the person who imported it.
pub async fn probe(tools: &MediaTools, path: &Path) -> Result<Probe, MediaError> {
    let size_bytes = tokio::fs::metadata(path)
        .await
        .map_err(|err| unreadable(format!("the downloaded file could not be opened ({err})")))?
        .len();
    let output = run_ffprobe(tools, path).await?;
    let mut probe = interpret(&output, size_bytes)?;
    probe.is_web_ready = probe.is_web_ready
        && moov_before_mdat(path)
            .await
            .map_err(|err| unreadable(format!("the file could not be read ({err})")))?
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

/// Runs ffprobe; its stdout when it could read the file.
async fn run_ffprobe(tools: &MediaTools, path: &Path) -> Result<Vec<u8>, MediaError> {
    let output = Command::new(&tools.ffprobe)
        .args(["-v", "error", "-print_format", "json"])
        .args(["-show_format", "-show_streams"])
        .arg(file_url(path))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(PROBE_TIMEOUT, output).await {
        Err(_) => {
            return Err(unreadable(format!(
                "reading the file took longer than {} seconds",
                PROBE_TIMEOUT.as_secs()
            )));
        }
        Ok(Err(err)) => {
            return Err(MediaError::new(
                MediaError::PROCESSING_FAILED,
                format!("ffprobe could not be started: {err}"),
            ));
        }
        Ok(Ok(output)) => output,
    };
    if !output.status.success() {
        let detail = tool_detail(&output.stderr, &[path]);
        return Err(unreadable(detail));
    }
    Ok(output.stdout)
}

/// `file:<path>`: makes ffmpeg treat the path as a file whatever it looks
/// like (a name with a `:` or starting with `-` is otherwise read as a
/// protocol or an option).
pub(crate) fn file_url(path: &Path) -> OsString {
    let mut url = OsString::from("file:");
    url.push(path.as_os_str());
    url
}

/// The first line ffmpeg/ffprobe wrote to stderr, without the server's file
/// paths (a user has no business seeing them), or a generic phrase.
pub(crate) fn tool_detail(stderr: &[u8], paths: &[&Path]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("no details");
    // Drop ffmpeg's `[mov,mp4,... @ 0x55d0c0ffee00] ` context prefix.
    let line = match line.split_once("] ") {
        Some((context, rest)) if line.starts_with('[') && context.contains(" @ 0x") => rest,
        _ => line,
    };
    let mut line = line.to_string();
    for path in paths {
        line = line
            .replace(&*file_url(path).to_string_lossy(), "the file")
            .replace(&*path.to_string_lossy(), "the file");
    }
    line.chars().take(200).collect()
}

fn unreadable(detail: impl std::fmt::Display) -> MediaError {
    MediaError::new(
        MediaError::UNREADABLE_MEDIA,
        format!(
            "This file could not be read as a video: it may be damaged, incomplete, or in a format we do not support ({detail})."
        ),
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
        .map_err(|err| unreadable(format!("ffprobe said something unexpected: {err}")))?;
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
        _ => return Err(unreadable("the video has no picture size")),
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
    fn tool_detail_hides_the_server_path() {
        let path = Path::new("/srv/data/imports/abc/source.mp4");
        let stderr =
            b"file:/srv/data/imports/abc/source.mp4: Invalid data found when processing input\n";
        assert_eq!(
            tool_detail(stderr, &[path]),
            "the file: Invalid data found when processing input"
        );
        let stderr = b"[mov,mp4,m4a,3gp,3g2,mj2 @ 0x56545a7851c0] moov atom not found\n";
        assert_eq!(tool_detail(stderr, &[path]), "moov atom not found");
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
