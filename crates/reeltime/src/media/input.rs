//! How ffprobe and ffmpeg open a downloaded file: with the one demuxer the
//! sniff decided, and nothing that could reach another file.
//!
//! Left to itself, ffmpeg picks a demuxer by scoring the file's content,
//! and several demuxers open other files the content names: `dash` (an XML
//! manifest's `BaseURL`), `hls` (playlist entries), `concat` (`file` lines),
//! `image2` (filename patterns), `mov` (external data references). A file
//! that passes the container sniff as an MP4 yet scores higher as a DASH
//! manifest would make ffmpeg read another import's video. So every run
//! here says exactly how to read its input:
//!
//! - `-f <demuxer>`: the demuxer for the sniffed kind, the file's extension
//!   (`source.<kind>`); no probing by content.
//! - `-format_whitelist <demuxer>`: ffmpeg refuses any other demuxer, also
//!   for anything a demuxer would open nested.
//! - `-protocol_whitelist file`: only the local file protocol (no `http`,
//!   `tcp`, `subfile`, `concat:`, `data:`, `tee`...).
//! - for `mov`: `-enable_drefs 0 -use_absolute_path 0`, the defaults made
//!   explicit, so a change of default never opens external tracks.
//!
//! None of the demuxers listed here opens another file.

use std::ffi::OsString;
use std::path::Path;

use super::MediaError;

/// The sniff's container kinds (`imports::sniff::KINDS`, which checks that
/// each has an entry here) and the demuxer that reads each. A kind missing here cannot be processed.
const DEMUXERS: &[(&str, &str)] = &[
    ("mp4", "mov"),
    ("mov", "mov"),
    ("3gp", "mov"),
    ("webm", "matroska"),
    ("mkv", "matroska"),
    ("avi", "avi"),
    ("flv", "flv"),
    ("mpeg", "mpeg"),
    ("m2v", "mpegvideo"),
    ("asf", "asf"),
    ("ogg", "ogg"),
    ("ts", "mpegts"),
    ("m2ts", "mpegts"),
];

/// The ffmpeg demuxer for a sniffed container kind.
pub fn demuxer(kind: &str) -> Option<&'static str> {
    DEMUXERS
        .iter()
        .find(|(known, _)| *known == kind)
        .map(|(_, demuxer)| *demuxer)
}

/// The demuxer for a file, from its extension (the runner names the
/// download `source.<kind>`; the web-ready copy is `video.mp4`).
pub fn demuxer_of(path: &Path) -> Option<&'static str> {
    demuxer(path.extension()?.to_str()?)
}

/// The input options and `-i file:<path>`: everything ffmpeg and ffprobe
/// need to open `path` with its sniffed demuxer and nothing else.
///
/// Fails `unreadable_media` for a file whose extension is no sniffed kind
/// (nothing guesses a demuxer for it).
pub(crate) fn input_args(path: &Path) -> Result<Vec<OsString>, MediaError> {
    let Some(demuxer) = demuxer_of(path) else {
        tracing::warn!(input = %path.display(), "no demuxer for this file's kind; not opened");
        return Err(MediaError::new(
            MediaError::UNREADABLE_MEDIA,
            super::probe::UNREADABLE_MESSAGE,
        ));
    };
    let mut args: Vec<OsString> = [
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        demuxer,
        "-f",
        demuxer,
    ]
    .iter()
    .map(OsString::from)
    .collect();
    if demuxer == "mov" {
        args.extend(
            ["-enable_drefs", "0", "-use_absolute_path", "0"]
                .iter()
                .map(OsString::from),
        );
    }
    args.push("-i".into());
    args.push(file_url(path));
    Ok(args)
}

/// `file:<path>`: makes ffmpeg treat the path as a file whatever it looks
/// like (a name with a `:` or starting with `-` is otherwise read as a
/// protocol or an option).
pub(crate) fn file_url(path: &Path) -> OsString {
    let mut url = OsString::from("file:");
    url.push(path.as_os_str());
    url
}

/// Whether ffprobe's `format_name` (e.g. `mov,mp4,m4a,3gp,3g2,mj2`) is the
/// demuxer that was forced: a second check that nothing else read the file.
pub(crate) fn is_demuxer(format_name: &str, demuxer: &str) -> bool {
    format_name == demuxer || format_name.split(',').any(|name| name == demuxer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_demuxer_that_opens_other_files() {
        for (_, demuxer) in DEMUXERS {
            assert!(
                !["dash", "hls", "concat", "image2", "tee", "sdp", "rtsp"].contains(demuxer),
                "{demuxer}"
            );
        }
    }

    #[test]
    fn forces_the_demuxer_and_the_file_protocol() {
        let args = input_args(Path::new("/data/imports/x/source.webm")).unwrap();
        let args: Vec<&str> = args.iter().map(|arg| arg.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "-protocol_whitelist",
                "file",
                "-format_whitelist",
                "matroska",
                "-f",
                "matroska",
                "-i",
                "file:/data/imports/x/source.webm"
            ]
        );
        let mov = input_args(Path::new("/d/source.mp4")).unwrap();
        assert!(mov.contains(&OsString::from("-enable_drefs")));
    }

    #[test]
    fn an_unknown_kind_is_not_opened() {
        for path in [
            "/d/source.m3u8",
            "/d/source.mpd",
            "/d/source",
            "/d/list.txt",
        ] {
            let err = input_args(Path::new(path)).unwrap_err();
            assert_eq!(err.code(), MediaError::UNREADABLE_MEDIA, "{path}");
        }
    }

    #[test]
    fn checks_the_format_name() {
        assert!(is_demuxer("mov,mp4,m4a,3gp,3g2,mj2", "mov"));
        assert!(is_demuxer("matroska,webm", "matroska"));
        assert!(!is_demuxer("dash", "mov"));
        assert!(!is_demuxer("hls", "mpegts"));
    }
}
