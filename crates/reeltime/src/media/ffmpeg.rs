//! Runs ffmpeg for the poster and the web-ready copy.
//!
//! ffmpeg runs as a child process that reports its position on stdout
//! (`-progress pipe:1`). That one stream drives three things:
//! - progress: the output time over the duration, only ever moving forward;
//! - stall detection: no advance for `stall_timeout` means ffmpeg is stuck
//!   (a hung read, a broken file): it is killed and the step fails
//!   `processing_stalled` instead of holding a slot forever;
//! - completion: the output is written to `<name>.<random>.part` and
//!   renamed only when ffmpeg succeeds, so a half-written file never looks
//!   finished.
//!
//! Each run also has a wall-clock limit, whatever its progress: fixed for
//! the poster, 60 s plus four times the video's duration for the web-ready
//! copy; past it ffmpeg is killed and the step fails `processing_timeout`.
//! ffmpeg opens its input only with the sniffed demuxer ([`super::input`])
//! and runs in the [`super::sandbox`].
//!
//! Cancel kills the child at once and removes the partial file. Dropping the
//! future does the same (`kill_on_drop`, and the partial file is removed on
//! drop), so a runner that simply drops the step cannot leak an ffmpeg.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::str::FromStr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Child;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::MediaError;
use super::input::{file_url, input_args};
use super::probe::{Probe, cannot_start, stderr_summary};
use super::sandbox::{Limits, out_of_cpu_time, work_dirs};
use super::tools::MediaTools;

/// Where in the video the poster is taken from (a tenth in: past any fade
/// from black at the start).
pub const POSTER_AT: f64 = 0.1;

/// The widest poster made; enough for a card or a player's first frame.
pub const POSTER_MAX_WIDTH: u32 = 640;

/// Wall-clock limit of one poster run: a seek and one frame.
pub const POSTER_TIME_LIMIT: Duration = Duration::from_secs(90);

/// The web-ready copy may take this long plus [`TRANSCODE_TIME_PER_SEC`]
/// per second of video.
pub const TRANSCODE_TIME_BASE: Duration = Duration::from_secs(60);
/// Seconds of transcoding allowed per second of video (x264 `veryfast` at
/// 720p runs faster than real time even on a busy small machine).
pub const TRANSCODE_TIME_PER_SEC: f64 = 4.0;
/// The duration assumed when the file does not say (four hours).
const UNKNOWN_DURATION_SECS: f64 = 4.0 * 3600.0;

/// How long the web-ready copy of a video of `duration_secs` may take.
pub fn transcode_time_limit(duration_secs: f64) -> Duration {
    let secs = if duration_secs.is_finite() && duration_secs > 0.0 {
        duration_secs.min(UNKNOWN_DURATION_SECS * 4.0)
    } else {
        UNKNOWN_DURATION_SECS
    };
    TRANSCODE_TIME_BASE + Duration::from_secs_f64(secs * TRANSCODE_TIME_PER_SEC)
}

/// When to make a web-ready copy (`REELTIME_TRANSCODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TranscodeMode {
    /// Only when the source is not web-ready already (the default).
    #[default]
    Auto,
    /// Always, even a web-ready source (uniform output).
    Always,
    /// Never: the source is served as it is, web-ready or not (saves CPU on
    /// a machine that cannot afford it; some browsers may not play it).
    Never,
}

impl FromStr for TranscodeMode {
    type Err = String;

    fn from_str(text: &str) -> Result<TranscodeMode, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(TranscodeMode::Auto),
            "always" => Ok(TranscodeMode::Always),
            "never" => Ok(TranscodeMode::Never),
            _ => Err(format!("expected auto, always or never, got {text:?}")),
        }
    }
}

impl fmt::Display for TranscodeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TranscodeMode::Auto => "auto",
            TranscodeMode::Always => "always",
            TranscodeMode::Never => "never",
        })
    }
}

/// Whether the import needs a web-ready copy made, or serves its source.
pub fn needs_transcode(mode: TranscodeMode, probe: &Probe) -> bool {
    match mode {
        TranscodeMode::Auto => !probe.is_web_ready,
        TranscodeMode::Always => true,
        TranscodeMode::Never => false,
    }
}

/// Writes a JPEG poster from about 10% into the video, at most
/// [`POSTER_MAX_WIDTH`] wide. Falls back to the first frame when the seek
/// lands past the end (a wrong duration in the header).
pub async fn poster(
    tools: &MediaTools,
    input: &Path,
    output_jpg: &Path,
    probe: &Probe,
    cancel: &CancellationToken,
    stall_timeout: Duration,
) -> Result<(), MediaError> {
    let at_secs = probe.duration_secs * POSTER_AT;
    let mut run = FfmpegRun {
        tools,
        input,
        args: poster_args(input, probe, at_secs)?,
        output: output_jpg,
        duration_secs: 0.0,
        progress: None,
        cancel,
        stall_timeout,
        time_limit: POSTER_TIME_LIMIT,
        what: "The poster image",
    };
    match run.run().await {
        Err(err) if err.code == MediaError::PROCESSING_FAILED && at_secs > 0.0 => {
            run.args = poster_args(input, probe, 0.0)?;
            run.run().await
        }
        other => other,
    }
}

fn poster_args(input: &Path, probe: &Probe, at_secs: f64) -> Result<Vec<OsString>, MediaError> {
    let mut args = Vec::new();
    if at_secs > 0.0 {
        // Before `-i`: a fast seek to the nearest keyframe, not a decode of
        // everything up to it.
        args.extend(os(&["-ss", &format!("{at_secs:.3}")]));
    }
    args.extend(input_args(input)?);
    args.extend(os(&[
        "-map",
        &format!("0:{}", probe.video_stream),
        "-frames:v",
        "1",
        "-vf",
        &format!("scale='min({POSTER_MAX_WIDTH},trunc(iw/2)*2)':-2"),
        "-q:v",
        "3",
        "-update",
        "1",
        "-f",
        "image2",
    ]));
    Ok(args)
}

/// Makes the web-ready copy: H.264 (yuv420p) and AAC in an MP4 with `moov`
/// first, at most 720 high with even dimensions and the aspect kept.
///
/// `progress` receives the fraction done (output time over
/// `probe.duration_secs`), only ever increasing, and exactly 1.0 once the
/// file is in place. It fails `processing_stalled` when ffmpeg makes no
/// progress for `stall_timeout`, `processing_timeout` past
/// [`transcode_time_limit`] of the duration, and `cancelled` when `cancel`
/// fires; the partial output is removed in every case.
pub async fn transcode(
    tools: &MediaTools,
    input: &Path,
    output_mp4: &Path,
    probe: &Probe,
    progress: &watch::Sender<f64>,
    cancel: &CancellationToken,
    stall_timeout: Duration,
) -> Result<(), MediaError> {
    let limit = transcode_time_limit(probe.duration_secs);
    transcode_with_limit(
        tools,
        input,
        output_mp4,
        probe,
        progress,
        cancel,
        stall_timeout,
        limit,
    )
    .await
}

/// [`transcode`] with an explicit wall-clock limit (tests use a short one).
#[allow(clippy::too_many_arguments)]
pub async fn transcode_with_limit(
    tools: &MediaTools,
    input: &Path,
    output_mp4: &Path,
    probe: &Probe,
    progress: &watch::Sender<f64>,
    cancel: &CancellationToken,
    stall_timeout: Duration,
    time_limit: Duration,
) -> Result<(), MediaError> {
    FfmpegRun {
        tools,
        input,
        args: transcode_args(input, probe)?,
        output: output_mp4,
        duration_secs: probe.duration_secs,
        progress: Some(progress),
        cancel,
        stall_timeout,
        time_limit,
        what: "The web-ready copy",
    }
    .run()
    .await
}

fn transcode_args(input: &Path, probe: &Probe) -> Result<Vec<OsString>, MediaError> {
    let mut args = input_args(input)?;
    // Only the streams probed: a subtitle or data stream would make the MP4
    // muxer fail, and cover art is not the video.
    args.extend(os(&["-map", &format!("0:{}", probe.video_stream)]));
    if let Some(audio) = probe.audio_stream {
        args.extend(os(&["-map", &format!("0:{audio}")]));
    }
    args.extend(os(&[
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-crf",
        "23",
        "-pix_fmt",
        "yuv420p",
        // At most 720 high (never upscaled), even height; -2 keeps the
        // aspect with an even width. The quotes are ffmpeg's own: they keep
        // the comma from splitting the filter graph.
        "-vf",
        "scale=-2:'min(720,trunc(ih/2)*2)'",
    ]));
    if probe.has_audio() {
        args.extend(os(&["-c:a", "aac", "-b:a", "128k", "-ac", "2"]));
    } else {
        args.extend(os(&["-an"]));
    }
    args.extend(os(&[
        "-sn",
        "-dn",
        "-movflags",
        "+faststart",
        "-max_muxing_queue_size",
        "1024",
        "-f",
        "mp4",
    ]));
    Ok(args)
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// One supervised ffmpeg run writing one output file.
struct FfmpegRun<'a> {
    tools: &'a MediaTools,
    /// Only to keep its path out of messages (it is also in `args`).
    input: &'a Path,
    /// Everything between the common options and the output file.
    args: Vec<OsString>,
    output: &'a Path,
    /// For the progress fraction; 0 when unknown (progress then jumps to
    /// 1.0 at the end).
    duration_secs: f64,
    progress: Option<&'a watch::Sender<f64>>,
    cancel: &'a CancellationToken,
    stall_timeout: Duration,
    /// Wall-clock limit, whatever the progress.
    time_limit: Duration,
    /// How the step is named in messages to a person.
    what: &'static str,
}

impl FfmpegRun<'_> {
    async fn run(&self) -> Result<(), MediaError> {
        PartialFile::remove_stale(self.output).await;
        let part = PartialFile::new(self.output);
        let mut child = self.spawn(part.path())?;
        let stderr = child
            .stderr
            .take()
            .map(|pipe| tokio::spawn(first_lines(pipe)));
        let Some(stdout) = child.stdout.take() else {
            kill(&mut child).await;
            return Err(self.failed("ffmpeg's output could not be read"));
        };
        let status = self.supervise(&mut child, stdout).await?;
        let stderr = match stderr {
            Some(task) => task.await.unwrap_or_default(),
            None => Vec::new(),
        };
        if out_of_cpu_time(&status) {
            return Err(self.timed_out("CPU time"));
        }
        if !status.success() {
            return Err(self.failed(format_args!(
                "ffmpeg failed ({status}): {}",
                stderr_summary(&stderr)
            )));
        }
        part.finish(self.output)
            .await
            .map_err(|err| self.failed(err))?;
        if let Some(progress) = self.progress {
            advance(progress, 1.0);
        }
        Ok(())
    }

    fn spawn(&self, part: &Path) -> Result<Child, MediaError> {
        let start_failed = |err: &dyn fmt::Display| cannot_start("ffmpeg", self.input, err);
        let mut command = self
            .tools
            .sandbox
            .command(
                &self.tools.ffmpeg,
                &work_dirs(&[self.input, part]),
                Limits::for_wall_time(self.time_limit),
            )
            .map_err(|err| start_failed(&err))?;
        command
            .args(["-hide_banner", "-nostdin", "-v", "error"])
            .args(["-nostats", "-progress", "pipe:1", "-y"])
            .args(&self.args)
            .arg(file_url(part))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| start_failed(&err))
    }

    /// Follows the progress lines, then the exit. Kills ffmpeg (and waits
    /// until it is gone) on cancel or when it stops advancing.
    async fn supervise(
        &self,
        child: &mut Child,
        stdout: impl AsyncRead + Unpin,
    ) -> Result<ExitStatus, MediaError> {
        enum Event {
            Cancel,
            TimeLimit,
            Stall,
            Line(Option<String>),
            Exit(std::io::Result<ExitStatus>),
        }
        let mut lines = BufReader::new(stdout).lines();
        let mut stdout_open = true;
        let mut tracker = ProgressTracker::default();
        let mut deadline = Instant::now() + self.stall_timeout;
        let time_limit = Instant::now() + self.time_limit;
        loop {
            let event = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => Event::Cancel,
                _ = sleep_until(time_limit) => Event::TimeLimit,
                _ = sleep_until(deadline) => Event::Stall,
                line = lines.next_line(), if stdout_open => Event::Line(line.ok().flatten()),
                status = child.wait(), if !stdout_open => Event::Exit(status),
            };
            match event {
                Event::Cancel => {
                    kill(child).await;
                    return Err(MediaError::new(MediaError::CANCELLED, "cancelled"));
                }
                Event::TimeLimit => {
                    kill(child).await;
                    return Err(self.timed_out("time"));
                }
                Event::Stall => {
                    kill(child).await;
                    return Err(self.stalled());
                }
                // ffmpeg closes its stdout when it exits.
                Event::Line(None) => stdout_open = false,
                Event::Line(Some(line)) => {
                    if tracker.apply(parse_progress_line(&line)) {
                        deadline = Instant::now() + self.stall_timeout;
                        self.report(&tracker);
                    }
                }
                Event::Exit(status) => {
                    return status.map_err(|err| {
                        self.failed(format!("ffmpeg could not be waited for: {err}"))
                    });
                }
            }
        }
    }

    fn report(&self, tracker: &ProgressTracker) {
        if let (Some(progress), Some(fraction)) =
            (self.progress, tracker.fraction(self.duration_secs))
        {
            advance(progress, fraction);
        }
    }

    /// The fixed `processing_failed` error; `detail` (which may quote
    /// ffmpeg, and paths) goes to the server log only.
    fn failed(&self, detail: impl fmt::Display) -> MediaError {
        tracing::info!(input = %self.input.display(), step = self.what, detail = %detail, "ffmpeg step failed");
        MediaError::new(
            MediaError::PROCESSING_FAILED,
            format!(
                "{} could not be made from this file: it may be damaged, or use a feature we do not support.",
                self.what
            ),
        )
    }

    /// The `processing_timeout` error: past its limit of `what` ("time" or
    /// "CPU time").
    fn timed_out(&self, what: &str) -> MediaError {
        tracing::warn!(input = %self.input.display(), step = self.what, limit_secs = self.time_limit.as_secs(), "ffmpeg ran out of {what} and was stopped");
        MediaError::new(
            MediaError::PROCESSING_TIMEOUT,
            format!(
                "{} took longer than the {} seconds allowed for a video this long, and was stopped.",
                self.what,
                self.time_limit.as_secs()
            ),
        )
    }

    fn stalled(&self) -> MediaError {
        MediaError::new(
            MediaError::PROCESSING_STALLED,
            format!(
                "{} was not being made: the video processor made no progress for {} seconds and was stopped.",
                self.what,
                self.stall_timeout.as_secs_f64()
            ),
        )
    }
}

/// Moves the progress forward, never back.
fn advance(progress: &watch::Sender<f64>, fraction: f64) {
    let fraction = fraction.clamp(0.0, 1.0);
    progress.send_if_modified(|current| {
        if fraction > *current {
            *current = fraction;
            true
        } else {
            false
        }
    });
}

/// Kills ffmpeg and waits until it is gone (so its files can be removed).
async fn kill(child: &mut Child) {
    if let Err(err) = child.kill().await {
        tracing::warn!(error = %err, "could not kill ffmpeg");
    }
}

/// The first lines ffmpeg writes to stderr (the cause of a failure comes
/// first); the rest is read and dropped so ffmpeg never blocks on the pipe.
async fn first_lines(stderr: impl AsyncRead + Unpin) -> Vec<u8> {
    const KEEP: usize = 4096;
    let mut kept = Vec::new();
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if kept.len() < KEEP {
            kept.extend_from_slice(line.as_bytes());
            kept.push(b'\n');
        }
    }
    kept
}

/// The file ffmpeg writes to: `<output>.<random>.part`, renamed to the
/// output on success and removed otherwise, including when the future is
/// dropped.
///
/// The name is new for every run: an ffmpeg orphaned by a server crash
/// (killed with SIGKILL, so `kill_on_drop` never ran) may still be writing
/// its own partial file when the resumed import starts another run, and the
/// two must never write the same file.
struct PartialFile {
    path: PathBuf,
    keep: bool,
}

impl PartialFile {
    fn new(output: &Path) -> PartialFile {
        let mut name = output.as_os_str().to_owned();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        name.push(format!(".{}.part", &nonce[..12]));
        PartialFile {
            path: PathBuf::from(name),
            keep: false,
        }
    }

    /// Removes partial files of `output` left by earlier runs (a crash).
    /// An orphaned ffmpeg still writing one keeps writing to an unlinked
    /// file, which harms nothing and frees its space when it exits.
    async fn remove_stale(output: &Path) {
        let (Some(dir), Some(name)) = (output.parent(), output.file_name()) else {
            return;
        };
        let prefix = format!("{}.", name.to_string_lossy());
        let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
            return;
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let entry_name = entry.file_name();
            let entry_name = entry_name.to_string_lossy();
            if entry_name.starts_with(&prefix) && entry_name.ends_with(".part") {
                let _ = tokio::fs::remove_file(entry.path()).await;
            }
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    /// Puts the finished file in place; an empty one means ffmpeg made
    /// nothing (a seek past the end), which is a failure.
    async fn finish(mut self, output: &Path) -> Result<(), String> {
        match tokio::fs::metadata(&self.path).await {
            Ok(meta) if meta.len() > 0 => {}
            _ => return Err("ffmpeg produced no output".into()),
        }
        tokio::fs::rename(&self.path, output)
            .await
            .map_err(|err| format!("the file could not be saved: {err}"))?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.keep
            && let Err(err) = std::fs::remove_file(&self.path)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %err, "could not remove a partial file");
        }
    }
}

/// One line of ffmpeg's `-progress` output, as far as it matters here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProgressLine {
    /// Output time in microseconds (`out_time_us`, or `out_time_ms`, which
    /// ffmpeg also writes in microseconds despite its name).
    OutTimeUs(u64),
    Frame(u64),
    TotalSize(u64),
    /// `progress=end`: ffmpeg is done.
    End,
    /// Anything else, including `N/A` values and `progress=continue`.
    Other,
}

fn parse_progress_line(line: &str) -> ProgressLine {
    let Some((key, value)) = line.trim().split_once('=') else {
        return ProgressLine::Other;
    };
    let number = || value.trim().parse::<u64>().ok();
    let parsed = match key.trim() {
        "out_time_us" | "out_time_ms" => number().map(ProgressLine::OutTimeUs),
        "frame" => number().map(ProgressLine::Frame),
        "total_size" => number().map(ProgressLine::TotalSize),
        "progress" if value.trim() == "end" => Some(ProgressLine::End),
        _ => None,
    };
    parsed.unwrap_or(ProgressLine::Other)
}

/// What ffmpeg has reported so far.
///
/// An advance is what counts as life: ffmpeg may keep writing the same
/// numbers while it waits on a hung input, so a line alone does not reset
/// the stall timer.
#[derive(Debug, Default)]
struct ProgressTracker {
    out_time_us: u64,
    frame: u64,
    total_size: u64,
    ended: bool,
}

impl ProgressTracker {
    /// Takes one line; whether it showed progress.
    fn apply(&mut self, line: ProgressLine) -> bool {
        fn raise(field: &mut u64, value: u64) -> bool {
            let raised = value > *field;
            *field = (*field).max(value);
            raised
        }
        match line {
            ProgressLine::OutTimeUs(us) => raise(&mut self.out_time_us, us),
            ProgressLine::Frame(frame) => raise(&mut self.frame, frame),
            ProgressLine::TotalSize(size) => raise(&mut self.total_size, size),
            ProgressLine::End => !std::mem::replace(&mut self.ended, true),
            ProgressLine::Other => false,
        }
    }

    /// Output time over duration, in 0..=1; `None` while it cannot be told.
    fn fraction(&self, duration_secs: f64) -> Option<f64> {
        if self.ended {
            return Some(1.0);
        }
        if !(duration_secs.is_finite() && duration_secs > 0.0) {
            return None;
        }
        let done = self.out_time_us as f64 / 1_000_000.0;
        Some((done / duration_secs).clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(web_ready: bool) -> Probe {
        Probe {
            duration_secs: 10.0,
            width: 640,
            height: 360,
            container: "mov,mp4,m4a,3gp,3g2,mj2".into(),
            video_codec: "h264".into(),
            audio_codec: None,
            pixel_format: Some("yuv420p".into()),
            size_bytes: 1,
            is_web_ready: web_ready,
            video_stream: 0,
            audio_stream: None,
        }
    }

    #[test]
    fn transcode_mode_parses() {
        assert_eq!("auto".parse(), Ok(TranscodeMode::Auto));
        assert_eq!(" Always ".parse(), Ok(TranscodeMode::Always));
        assert_eq!("NEVER".parse(), Ok(TranscodeMode::Never));
        assert!("sometimes".parse::<TranscodeMode>().is_err());
        assert_eq!(TranscodeMode::default(), TranscodeMode::Auto);
        assert_eq!(TranscodeMode::Never.to_string(), "never");
    }

    #[test]
    fn needs_transcode_follows_the_mode() {
        let ready = probe(true);
        let not_ready = probe(false);
        assert!(!needs_transcode(TranscodeMode::Auto, &ready));
        assert!(needs_transcode(TranscodeMode::Auto, &not_ready));
        assert!(needs_transcode(TranscodeMode::Always, &ready));
        assert!(needs_transcode(TranscodeMode::Always, &not_ready));
        assert!(!needs_transcode(TranscodeMode::Never, &ready));
        assert!(!needs_transcode(TranscodeMode::Never, &not_ready));
    }

    #[test]
    fn parses_progress_lines() {
        use ProgressLine::*;
        assert_eq!(
            parse_progress_line("out_time_us=1500000"),
            OutTimeUs(1_500_000)
        );
        assert_eq!(
            parse_progress_line("out_time_ms=1500000"),
            OutTimeUs(1_500_000)
        );
        assert_eq!(parse_progress_line("out_time_us=N/A"), Other);
        assert_eq!(parse_progress_line("frame=42"), Frame(42));
        assert_eq!(parse_progress_line("total_size=1024"), TotalSize(1024));
        assert_eq!(parse_progress_line("progress=end"), End);
        assert_eq!(parse_progress_line("progress=continue"), Other);
        assert_eq!(parse_progress_line("speed=1.5x"), Other);
        assert_eq!(parse_progress_line("garbage"), Other);
        assert_eq!(parse_progress_line(""), Other);
    }

    #[test]
    fn progress_is_time_over_duration_and_ends_at_one() {
        let mut tracker = ProgressTracker::default();
        assert_eq!(tracker.fraction(4.0), Some(0.0));
        assert!(tracker.apply(ProgressLine::OutTimeUs(1_000_000)));
        assert_eq!(tracker.fraction(4.0), Some(0.25));
        // The last packet can end past the stated duration.
        assert!(tracker.apply(ProgressLine::OutTimeUs(4_100_000)));
        assert_eq!(tracker.fraction(4.0), Some(1.0));
        assert_eq!(tracker.fraction(0.0), None, "unknown duration");
        assert!(tracker.apply(ProgressLine::End));
        assert_eq!(tracker.fraction(0.0), Some(1.0));
    }

    #[test]
    fn only_an_advance_counts_as_progress() {
        let mut tracker = ProgressTracker::default();
        assert!(tracker.apply(ProgressLine::OutTimeUs(500_000)));
        assert!(
            !tracker.apply(ProgressLine::OutTimeUs(500_000)),
            "same time"
        );
        assert!(
            !tracker.apply(ProgressLine::OutTimeUs(100_000)),
            "backwards"
        );
        assert!(!tracker.apply(ProgressLine::Other));
        assert!(tracker.apply(ProgressLine::Frame(3)));
        assert!(tracker.apply(ProgressLine::TotalSize(48)));
        assert!(tracker.apply(ProgressLine::End));
        assert!(!tracker.apply(ProgressLine::End));
        assert_eq!(tracker.out_time_us, 500_000, "never goes back");
    }

    #[test]
    fn reported_progress_never_goes_back() {
        let (tx, rx) = watch::channel(0.0);
        advance(&tx, 0.5);
        advance(&tx, 0.25);
        assert_eq!(*rx.borrow(), 0.5);
        advance(&tx, 7.0);
        assert_eq!(*rx.borrow(), 1.0);
    }

    #[test]
    fn transcode_drops_audio_only_when_there_is_none() {
        let silent = transcode_args(Path::new("/in.avi"), &probe(false)).unwrap();
        assert!(silent.contains(&OsString::from("-an")));
        let mut with_audio = probe(false);
        with_audio.audio_stream = Some(1);
        let args = transcode_args(Path::new("/in.avi"), &with_audio).unwrap();
        assert!(!args.contains(&OsString::from("-an")));
        assert!(args.contains(&OsString::from("0:1")));
    }

    #[test]
    fn every_run_forces_the_sniffed_demuxer() {
        let transcode = transcode_args(Path::new("/d/source.avi"), &probe(false)).unwrap();
        let poster = poster_args(Path::new("/d/source.avi"), &probe(false), 1.0).unwrap();
        for args in [transcode, poster] {
            let at = args.iter().position(|arg| arg == "-f").unwrap();
            assert_eq!(args[at + 1], "avi");
            assert!(at < args.iter().position(|arg| arg == "-i").unwrap());
            assert!(args.contains(&OsString::from("-protocol_whitelist")));
        }
        let err = transcode_args(Path::new("/d/list.m3u8"), &probe(false)).unwrap_err();
        assert_eq!(err.code(), MediaError::UNREADABLE_MEDIA);
    }

    #[test]
    fn the_time_limit_follows_the_duration() {
        assert_eq!(transcode_time_limit(10.0), Duration::from_secs(100));
        assert_eq!(transcode_time_limit(600.0), Duration::from_secs(60 + 2400));
        let unknown = transcode_time_limit(0.0);
        assert_eq!(unknown, transcode_time_limit(f64::NAN));
        assert!(unknown > Duration::from_secs(3600));
    }

    #[tokio::test]
    async fn partial_files_are_per_run_and_removed_unless_finished() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("video.mp4");
        let part = PartialFile::new(&output);
        let other = PartialFile::new(&output);
        assert_ne!(part.path(), other.path(), "a new name every run");
        let name = part
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            name.starts_with("video.mp4.") && name.ends_with(".part"),
            "{name}"
        );
        std::fs::write(part.path(), b"half").unwrap();
        drop(part);
        assert!(!dir.path().join(&name).exists());

        // What a crash left behind is cleared before the next run.
        std::fs::write(dir.path().join("video.mp4.0123abcd.part"), b"stale").unwrap();
        std::fs::write(dir.path().join("poster.jpg.0123abcd.part"), b"not ours").unwrap();
        std::fs::write(dir.path().join("video.mp4"), b"not a part").unwrap();
        PartialFile::remove_stale(&output).await;
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["poster.jpg.0123abcd.part", "video.mp4"]);
    }
}
