//! Media processing: what turns a downloaded file into something a browser
//! can play, and the private links that serve it.
//!
//! - [`tools`] finds `ffprobe`/`ffmpeg` once at start; without them imports
//!   still download, and processing is skipped.
//! - [`input`] opens a download only with the demuxer its sniffed kind
//!   names, and nothing that reaches another file.
//! - [`sandbox`] runs each ffprobe/ffmpeg inside Landlock (only the import's
//!   directory) with CPU-time and memory limits.
//! - [`probe`] reads duration, size and codecs, and decides whether the file
//!   is already web-ready.
//! - [`ffmpeg`] runs ffmpeg for the poster and the web-ready copy, with
//!   progress, cancel and stall detection.
//! - [`links`] signs and checks the expiring URLs of a user's media.
//! - [`serve`] holds the rules for answering those URLs (path safety, byte
//!   ranges, content types); the handler itself is in `http::media`.
//! - [`storage`] keeps the finished files: the local disk (one node) or
//!   S3-compatible object storage (several nodes serve any import).
//! - [`samples`] embeds the small videos kept in the repo for a first run
//!   with no internet (`http::samples` serves them).
//!
//! Every failure is a [`MediaError`] with a stable `code` (the import's
//! `error.code`) and a sentence a person understands.

pub mod ffmpeg;
pub mod input;
pub mod links;
pub mod probe;
pub mod samples;
pub mod sandbox;
pub mod serve;
pub mod storage;
pub mod tools;

pub use ffmpeg::{TranscodeMode, needs_transcode, poster, transcode};
pub use links::{LinkError, MediaSigner};
pub use probe::{Probe, probe};
pub use sandbox::Sandbox;
pub use serve::resolve_media_path;
pub use storage::{
    LocalStorage, MediaBody, MediaStorage, ObjectStorage, StorageError, publish_import,
};
pub use tools::MediaTools;

/// A media step failed; `code` becomes the import's `error.code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct MediaError {
    pub code: &'static str,
    pub message: String,
}

impl MediaError {
    /// The file has no video stream (audio only, a still image, text...).
    pub const NOT_A_VIDEO: &'static str = "not_a_video";
    /// ffprobe/ffmpeg cannot read the file: corrupt, truncated or unknown.
    pub const UNREADABLE_MEDIA: &'static str = "unreadable_media";
    /// ffmpeg made no progress for the stall timeout and was killed.
    pub const PROCESSING_STALLED: &'static str = "processing_stalled";
    /// ffmpeg exited with an error, or its files could not be written.
    pub const PROCESSING_FAILED: &'static str = "processing_failed";
    /// ffprobe/ffmpeg ran past its wall-clock or CPU-time limit (probe and
    /// poster: a fixed limit; the web-ready copy: one proportional to the
    /// video's duration) and was killed.
    pub const PROCESSING_TIMEOUT: &'static str = "processing_timeout";
    /// Stopped by its cancellation token; the runner treats it as a stop,
    /// not as a failure to report.
    pub const CANCELLED: &'static str = "cancelled";

    pub fn new(code: &'static str, message: impl Into<String>) -> MediaError {
        MediaError {
            code,
            message: message.into(),
        }
    }

    /// The stable code, as in the import's `error.code`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Whether this is a cancel (nothing to report) rather than a failure.
    pub fn is_cancelled(&self) -> bool {
        self.code == Self::CANCELLED
    }
}
