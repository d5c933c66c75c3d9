//! Sample videos for a first run with no internet.
//!
//! The project makes them itself with ffmpeg's test sources
//! (`scripts/make-samples`), keeps them in `samples/`, and embeds them in
//! the binary, so `/samples/...` works whatever the working directory
//! (`http::samples` serves them).

use serde::Serialize;

/// One sample video.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Stable short name, e.g. `webready`.
    pub name: &'static str,
    /// What a person sees in a picker.
    pub title: &'static str,
    /// File name under `/samples/`.
    pub file: &'static str,
    #[serde(skip)]
    bytes: &'static [u8],
}

impl Sample {
    /// The path to import it from: `/samples/<file>`.
    pub fn path(&self) -> String {
        format!("/samples/{}", self.file)
    }

    pub fn size_bytes(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// The embedded file.
    pub fn bytes(&self) -> &'static [u8] {
        self.bytes
    }
}

macro_rules! sample_file {
    ($file:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../samples/",
            $file
        ))
    };
}

static SAMPLES: [Sample; 3] = [
    Sample {
        name: "webready",
        title: "Test card, 8 s, 640×360 H.264/AAC (already web-ready)",
        file: "sample-webready.mp4",
        bytes: sample_file!("sample-webready.mp4"),
    },
    Sample {
        name: "needs-transcode",
        title: "Colour bars, 6 s, 1280×720 VP9/Opus in MKV (gets transcoded)",
        file: "sample-needs-transcode.mkv",
        bytes: sample_file!("sample-needs-transcode.mkv"),
    },
    Sample {
        name: "short",
        title: "Short clip, 2 s, 480×270 H.264/AAC",
        file: "sample-short.mp4",
        bytes: sample_file!("sample-short.mp4"),
    },
];

/// Every sample, in the order a picker shows them.
pub fn list() -> &'static [Sample] {
    &SAMPLES
}

/// The sample called `file`, if any.
pub fn find(file: &str) -> Option<&'static Sample> {
    SAMPLES.iter().find(|sample| sample.file == file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_small_real_files() {
        assert_eq!(list().len(), 3);
        for sample in list() {
            assert!(sample.size_bytes() > 10_000, "{}", sample.file);
            assert!(sample.size_bytes() < 1_000_000, "{}", sample.file);
            assert_eq!(find(sample.file).map(|found| found.name), Some(sample.name));
            assert_eq!(sample.path(), format!("/samples/{}", sample.file));
        }
        assert!(find("../Cargo.toml").is_none());
        let json = serde_json::to_value(list()).unwrap();
        assert_eq!(json[0]["file"], "sample-webready.mp4");
        assert!(json[0].get("bytes").is_none());
    }
}
