//! The container sniff on arbitrary first bytes of a download: never a
//! panic, only the sniff's own kinds, each with a forced demuxer for
//! ffmpeg (an answer without one would leave ffmpeg to probe by content),
//! and decided by the first `SNIFF_BYTES` alone (the download collects no
//! more before it decides).
#![no_main]

use libfuzzer_sys::fuzz_target;
use reeltime::imports::sniff::{KINDS, SNIFF_BYTES, container};
use reeltime::media::input::demuxer;

fuzz_target!(|data: &[u8]| {
    let found = container(data);
    if let Some(name) = found {
        assert!(KINDS.contains(&name), "unknown container name {name:?}");
        assert!(demuxer(name).is_some(), "no forced demuxer for {name:?}");
    }
    let head = &data[..data.len().min(SNIFF_BYTES)];
    assert_eq!(
        container(head),
        found,
        "the verdict depends on bytes past SNIFF_BYTES"
    );
});
