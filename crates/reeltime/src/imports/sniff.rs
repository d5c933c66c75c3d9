//! Tells a video container from anything else by its first bytes, so a
//! download that turns out to be an HTML error page or an executable fails
//! with `not_a_video` instead of being kept.
//!
//! The kind decided here is final: the file is saved as `source.<kind>` and
//! ffprobe/ffmpeg open it only with that kind's demuxer
//! (`media::input`), never by guessing from the content. So a polyglot (the
//! magic bytes of an MP4 in front of a DASH manifest, an HLS playlist or an
//! ffconcat list) is parsed as the MP4 it claims to be, and fails.
//!
//! The sniff also refuses text outright: every container here starts with
//! binary fields (box sizes, GUIDs, version bytes), while the formats that
//! name other files (XML manifests, playlists, concat lists) are text, which
//! cannot hold a NUL or a control byte. A head whose first bytes are all
//! text is therefore never a video, whatever magic sits at offset 4 (e.g.
//! `<!--ftyp...-->` opening an XML comment).

/// Bytes to collect before deciding (two MPEG-TS packets and change).
pub const SNIFF_BYTES: usize = 512;

/// Every kind [`container`] can answer; each is a file extension and has a
/// demuxer in `media::input`.
pub const KINDS: &[&str] = &[
    "mp4", "mov", "3gp", "webm", "mkv", "avi", "flv", "mpeg", "m2v", "asf", "ogg", "ts", "m2ts",
];

/// How many leading bytes must show a binary byte: every real container
/// has several within its first header.
const TEXT_CHECK_BYTES: usize = 64;

/// The container the magic bytes name, if any.
pub fn container(head: &[u8]) -> Option<&'static str> {
    if looks_like_text(head) {
        return None;
    }
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if at(4, b"ftyp") {
        // ISO base media: MP4, MOV, M4V, 3GP share the box; the brand says which.
        return Some(match head.get(8..12) {
            Some(b"qt  ") => "mov",
            Some(brand) if brand.starts_with(b"3g") => "3gp",
            _ => "mp4",
        });
    }
    if at(4, b"moov") || at(4, b"mdat") || at(4, b"wide") || at(4, b"free") {
        return Some("mov");
    }
    if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        let is_webm = head.windows(4).take(64).any(|window| window == b"webm");
        return Some(if is_webm { "webm" } else { "mkv" });
    }
    if at(0, b"RIFF") && at(8, b"AVI ") {
        return Some("avi");
    }
    if at(0, b"FLV") {
        return Some("flv");
    }
    if at(0, &[0x00, 0x00, 0x01, 0xBA]) {
        return Some("mpeg");
    }
    // A bare MPEG-1/2 video stream (sequence header), not a program stream.
    if at(0, &[0x00, 0x00, 0x01, 0xB3]) {
        return Some("m2v");
    }
    if at(0, &[0x30, 0x26, 0xB2, 0x75, 0x8E, 0x66, 0xCF, 0x11]) {
        return Some("asf");
    }
    if at(0, b"OggS") {
        return Some("ogg");
    }
    // MPEG-TS: sync byte every 188 bytes (or 192 for M2TS with timecodes).
    if head.len() >= 189 && head[0] == 0x47 && head[188] == 0x47 {
        return Some("ts");
    }
    if head.len() >= 197 && head[4] == 0x47 && head[196] == 0x47 {
        return Some("m2ts");
    }
    None
}

/// Whether the first bytes hold only what text can: tab, newline, carriage
/// return, printable ASCII, and bytes of UTF-8 sequences. XML (even in a
/// comment), playlists and concat lists cannot carry a NUL or another
/// control byte; a container's binary header always does.
fn looks_like_text(head: &[u8]) -> bool {
    head.iter()
        .take(TEXT_CHECK_BYTES)
        .all(|&byte| matches!(byte, b'\t' | b'\n' | b'\r' | 0x20..=0x7E | 0x80..=0xFF))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_containers() {
        let mut mp4 = vec![0, 0, 0, 0x20];
        mp4.extend_from_slice(b"ftypisom");
        assert_eq!(container(&mp4), Some("mp4"));
        let mut mov = vec![0, 0, 0, 0x14];
        mov.extend_from_slice(b"ftypqt  ");
        assert_eq!(container(&mov), Some("mov"));
        let mut webm = vec![0x1A, 0x45, 0xDF, 0xA3, 0x9F, 0x42, 0x82, 0x84];
        webm.extend_from_slice(b"webm");
        assert_eq!(container(&webm), Some("webm"));
        assert_eq!(container(b"RIFF\0\0\0\0AVI LIST"), Some("avi"));
        assert_eq!(container(b"FLV\x01"), Some("flv"));
        let mut ts = vec![0u8; 376];
        ts[0] = 0x47;
        ts[188] = 0x47;
        assert_eq!(container(&ts), Some("ts"));
        assert_eq!(container(&[0, 0, 1, 0xBA, 0x44]), Some("mpeg"));
        assert_eq!(container(&[0, 0, 1, 0xB3, 0x14]), Some("m2v"));
    }

    /// Here rather than in `media::input`: imports may depend on media,
    /// never the other way round.
    #[test]
    fn every_sniffed_kind_has_a_demuxer() {
        for kind in KINDS {
            assert!(
                crate::media::input::demuxer(kind).is_some(),
                "{kind} has no demuxer"
            );
        }
    }

    #[test]
    fn every_kind_is_listed() {
        let mut m2ts = vec![0u8; 400];
        m2ts[4] = 0x47;
        m2ts[196] = 0x47;
        let heads: Vec<Vec<u8>> = vec![
            b"\0\0\0\x14ftypisom\0\0\0\0".to_vec(),
            b"\0\0\0\x14ftypqt  \0\0\0\0".to_vec(),
            b"\0\0\0\x14ftyp3gp4\0\0\0\0".to_vec(),
            b"\0\0\0\x08mdat".to_vec(),
            [0x1A, 0x45, 0xDF, 0xA3, b'w', b'e', b'b', b'm'].to_vec(),
            vec![0x1A, 0x45, 0xDF, 0xA3, 0x01],
        ];
        for head in heads.iter().chain([&m2ts]) {
            let kind = container(head).expect("a container");
            assert!(KINDS.contains(&kind), "{kind} is not in KINDS");
        }
    }

    #[test]
    fn text_polyglots_are_not_videos() {
        let mpd = "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" profiles=\"urn:mpeg:dash:profile:isoff-on-demand:2011\"><Period><AdaptationSet><Representation><BaseURL>../other/video.mp4</BaseURL></Representation></AdaptationSet></Period></MPD>";
        // MP4 and QuickTime magic inside an XML comment or processing
        // instruction in front of a DASH manifest.
        for prefix in [
            "<!--ftypisom-->",
            "\n<?xftypisom?>",
            "<!--moov-->",
            "<!--free-->",
        ] {
            let head = format!("{prefix}\n{mpd}");
            assert_eq!(container(head.as_bytes()), None, "{prefix}");
        }
        // An M2TS sync byte at 4 and 196, inside a comment.
        let mut m2ts = format!("<!--G{}", " ".repeat(191)).into_bytes();
        m2ts.push(b'G');
        m2ts.extend_from_slice(format!("-->{mpd}").as_bytes());
        assert_eq!(container(&m2ts), None);
        // UTF-8 text is still text.
        assert_eq!(container("<!--ftyp é -->".as_bytes()), None);
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(container(b"<!DOCTYPE html><html>"), None);
        assert_eq!(container(b"\x7fELF\x02\x01\x01"), None);
        assert_eq!(container(b"%PDF-1.7"), None);
        assert_eq!(container(b""), None);
        assert_eq!(container(b"G"), None);
    }
}
