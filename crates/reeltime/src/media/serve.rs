//! The rules of serving a user's media files, whatever answers the
//! request: which names are safe path segments (never a path outside the
//! media directory), what a `Range` header asks for, and the content type
//! of each file. The axum handler that uses them is `http::media`.

use std::path::{Path, PathBuf};

/// `<media_root>/<import_id>/<file>` when it is a regular file inside the
/// media root, `None` otherwise.
///
/// Both names must be plain (see [`is_safe_component`]): no `..`, no
/// separators, no absolute paths. The result is canonicalized and must
/// still be under the canonical root, so a symlink cannot lead out of it.
/// Blocking (filesystem calls): run it off the async threads.
pub fn resolve_media_path(media_root: &Path, import_id: &str, file: &str) -> Option<PathBuf> {
    if !is_safe_component(import_id) || !is_safe_component(file) {
        return None;
    }
    let root = std::fs::canonicalize(media_root).ok()?;
    let path = std::fs::canonicalize(root.join(import_id).join(file)).ok()?;
    let inside = path.starts_with(&root);
    let is_file = std::fs::metadata(&path).is_ok_and(|meta| meta.is_file());
    (inside && is_file).then_some(path)
}

/// Whether a name can be one path segment under the media root: ASCII
/// letters, digits, `-`, `_` and `.`, not starting with a dot (no `..`, no
/// hidden or partial files), at most 128 bytes. Import ids are UUIDs and
/// file names are the server's own, so nothing real is refused.
pub fn is_safe_component(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
}

/// What a `Range` header asks of a file of a given length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// No usable range: send the whole file (200).
    Full,
    /// Bytes `start..=end`, both inside the file (206).
    Partial { start: u64, end: u64 },
    /// A well-formed range that misses the file entirely (416).
    Unsatisfiable,
}

/// Reads one `bytes=` range: `a-b`, `a-` or `-n` (the last n bytes). An end
/// past the file is cut to the file, as HTTP says.
pub fn parse_range(value: &str, len: u64) -> ByteRange {
    let Some(spec) = strip_prefix_ignore_case(value.trim(), "bytes=") else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Full;
    };
    match (number(first), number(last)) {
        (Some(start), end) if last.is_empty() || end.is_some() => {
            let end = end.unwrap_or(u64::MAX);
            if start > end {
                ByteRange::Full // malformed: ignore it
            } else if start >= len {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Partial {
                    start,
                    end: end.min(len - 1),
                }
            }
        }
        (None, Some(suffix)) if first.is_empty() => {
            if suffix == 0 || len == 0 {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Partial {
                    start: len.saturating_sub(suffix),
                    end: len - 1,
                }
            }
        }
        _ => ByteRange::Full,
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Digits only: `u64::from_str` would also take a `+`.
fn number(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The content type for a media file, by extension.
pub fn content_type_for(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|ext| ext.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    match ext.as_str() {
        "mp4" | "m4v" => "video/mp4",
        "mov" => "video/quicktime",
        "webm" => "video/webm",
        "mkv" => "video/x-matroska",
        "avi" => "video/x-msvideo",
        "ts" | "m2ts" => "video/mp2t",
        "flv" => "video/x-flv",
        "ogv" => "video/ogg",
        "3gp" => "video/3gpp",
        "mpg" | "mpeg" | "m2v" => "video/mpeg",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_ranges() {
        let partial = |start, end| ByteRange::Partial { start, end };
        assert_eq!(parse_range("bytes=0-99", 1000), partial(0, 99));
        assert_eq!(parse_range("bytes=500-", 1000), partial(500, 999));
        assert_eq!(parse_range("bytes=-100", 1000), partial(900, 999));
        assert_eq!(parse_range("bytes=900-5000", 1000), partial(900, 999));
        assert_eq!(parse_range("bytes=-5000", 1000), partial(0, 999));
        assert_eq!(parse_range("Bytes= 10-19", 1000), partial(10, 19));
        assert_eq!(parse_range("bytes=999-999", 1000), partial(999, 999));
    }

    #[test]
    fn unsatisfiable_ranges() {
        assert_eq!(parse_range("bytes=1000-", 1000), ByteRange::Unsatisfiable);
        assert_eq!(
            parse_range("bytes=1000-1001", 1000),
            ByteRange::Unsatisfiable
        );
        assert_eq!(parse_range("bytes=-0", 1000), ByteRange::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), ByteRange::Unsatisfiable);
        assert_eq!(parse_range("bytes=-5", 0), ByteRange::Unsatisfiable);
    }

    #[test]
    fn malformed_or_multiple_ranges_mean_the_whole_file() {
        for value in [
            "bytes=5-1",
            "bytes=0-1,5-9",
            "items=0-1",
            "bytes=",
            "bytes=-",
            "bytes=abc-",
            "bytes=+1-2",
            "bytes=1-2-3",
            "bytes=0x10-",
            "",
        ] {
            assert_eq!(parse_range(value, 1000), ByteRange::Full, "{value:?}");
        }
    }

    #[test]
    fn safe_components() {
        for good in [
            "0190c3d2-7e1f-7cc4-a8b1-5b4c5d6e7f80",
            "video.mp4",
            "poster.jpg",
            "a_b",
        ] {
            assert!(is_safe_component(good), "{good}");
        }
        for bad in [
            "", ".", "..", ".secret", "a/b", "a\\b", "/etc", "a\0b", "a\nb", "a b", "%2e%2e", "é",
        ] {
            assert!(!is_safe_component(bad), "{bad:?}");
        }
        assert!(!is_safe_component(&"a".repeat(129)));
    }

    #[test]
    fn resolves_only_files_inside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.txt"), b"secret").unwrap();
        let root = tempfile::tempdir().unwrap();
        let import = root.path().join("imp1");
        std::fs::create_dir(&import).unwrap();
        std::fs::write(import.join("video.mp4"), b"video").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.txt"), import.join("escape.mp4"))
            .unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("linked")).unwrap();
        std::os::unix::fs::symlink(import.join("video.mp4"), import.join("alias.mp4")).unwrap();

        let resolved = resolve_media_path(root.path(), "imp1", "video.mp4").unwrap();
        assert!(resolved.ends_with("imp1/video.mp4"));
        assert!(
            resolve_media_path(root.path(), "imp1", "alias.mp4").is_some(),
            "inside link"
        );
        assert_eq!(resolve_media_path(root.path(), "imp1", "escape.mp4"), None);
        assert_eq!(
            resolve_media_path(root.path(), "linked", "secret.txt"),
            None
        );
        assert_eq!(resolve_media_path(root.path(), "..", "secret.txt"), None);
        assert_eq!(
            resolve_media_path(root.path(), "imp1", "../imp1/video.mp4"),
            None
        );
        assert_eq!(resolve_media_path(root.path(), "imp1", "/etc/passwd"), None);
        assert_eq!(resolve_media_path(root.path(), "imp1", "missing.mp4"), None);
        assert_eq!(resolve_media_path(root.path(), "imp1", "."), None);
        assert_eq!(
            resolve_media_path(root.path(), "imp1", ""),
            None,
            "a directory"
        );
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type_for(Path::new("a/video.mp4")), "video/mp4");
        assert_eq!(content_type_for(Path::new("poster.JPG")), "image/jpeg");
        assert_eq!(content_type_for(Path::new("x.mov")), "video/quicktime");
        assert_eq!(content_type_for(Path::new("x.webm")), "video/webm");
        assert_eq!(content_type_for(Path::new("x.mkv")), "video/x-matroska");
        assert_eq!(
            content_type_for(Path::new("noext")),
            "application/octet-stream"
        );
    }
}
