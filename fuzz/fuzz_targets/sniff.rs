//! The container sniff on arbitrary first bytes of a download: never a
//! panic, only the known names, and decided by the first `SNIFF_BYTES`
//! alone (the download collects no more before it decides).
#![no_main]

use libfuzzer_sys::fuzz_target;
use reeltime::imports::sniff::{SNIFF_BYTES, container};

const KNOWN: &[&str] = &[
    "mp4", "mov", "3gp", "webm", "mkv", "avi", "flv", "mpeg", "asf", "ogg", "ts", "m2ts",
];

fuzz_target!(|data: &[u8]| {
    let found = container(data);
    if let Some(name) = found {
        assert!(KNOWN.contains(&name), "unknown container name {name:?}");
    }
    let head = &data[..data.len().min(SNIFF_BYTES)];
    assert_eq!(
        container(head),
        found,
        "the verdict depends on bytes past SNIFF_BYTES"
    );
});
