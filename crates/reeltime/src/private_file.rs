//! Files only the server's own user may read: the development issuer's
//! signing key and the media-link secret.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Creates `path` (never overwriting) with mode 0600 and `contents`, and
/// syncs it, so a crash cannot leave a half-written key behind.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}
