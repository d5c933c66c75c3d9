//! `Range` headers for media: never a panic, a partial range always inside
//! the file (so `Content-Range`, `Content-Length` and the seek agree with
//! the bytes sent), and a partial range written back reads the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reeltime::media::serve::{ByteRange, parse_range};

fn check(value: &str, len: u64) {
    match parse_range(value, len) {
        ByteRange::Full => {}
        ByteRange::Partial { start, end } => {
            assert!(
                start <= end && end < len,
                "{value:?} on {len} bytes gave {start}-{end}"
            );
            // What serve_file sends: end - start + 1 bytes from start.
            let count = end - start + 1;
            assert!(count <= len);
            let again = parse_range(&format!("bytes={start}-{end}"), len);
            assert_eq!(
                again,
                ByteRange::Partial { start, end },
                "{value:?} on {len}"
            );
        }
        ByteRange::Unsatisfiable => {
            let spec = value.trim();
            assert!(
                spec.len() >= 6 && spec[..6].eq_ignore_ascii_case("bytes="),
                "{value:?} is not a bytes range but was called unsatisfiable"
            );
        }
    }
}

// Input: the file length (8 bytes, little endian), then the header value
// (the rest, as text). The value is also tried on lengths 0 to 3 and on
// the value's own length, where the edges are.
fuzz_target!(|data: &[u8]| {
    let Some((len, value)) = data.split_first_chunk::<8>() else {
        return;
    };
    let Ok(value) = std::str::from_utf8(value) else {
        return;
    };
    if value.len() > 4096 {
        return; // hyper refuses headers this long before we see them
    }
    check(value, u64::from_le_bytes(*len));
    for len in [0, 1, 2, 3, value.len() as u64] {
        check(value, len);
    }
});
