//! Tells a video container from anything else by its first bytes, so a
//! download that turns out to be an HTML error page or an executable fails
//! with `not_a_video` instead of being kept.

/// Bytes to collect before deciding (two MPEG-TS packets and change).
pub const SNIFF_BYTES: usize = 512;

/// The container the magic bytes name, if any.
pub fn container(head: &[u8]) -> Option<&'static str> {
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
    if at(0, &[0x00, 0x00, 0x01, 0xBA]) || at(0, &[0x00, 0x00, 0x01, 0xB3]) {
        return Some("mpeg");
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
