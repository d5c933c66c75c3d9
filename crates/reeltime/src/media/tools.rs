//! Finds `ffprobe` and `ffmpeg` once at start, and the sandbox they run in.
//!
//! Media processing is optional: a machine without ffmpeg still downloads
//! imports, and the server says in its log and in `/readyz` that processing
//! is off. Detecting once (instead of failing each import) makes that state
//! visible up front. The same goes for the sandbox: whether Landlock
//! confines each ffmpeg is decided here, logged, and shown in `/readyz`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::sandbox::{Limits, Sandbox};

/// How long `-version` may take before the tool counts as unusable.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// The two ffmpeg programs, found and checked to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaTools {
    pub ffprobe: PathBuf,
    pub ffmpeg: PathBuf,
    /// First line of `ffmpeg -version`, for the start-up log.
    pub version: String,
    /// What confines each ffprobe/ffmpeg run.
    pub sandbox: Sandbox,
}

impl MediaTools {
    /// Looks for `ffprobe` and `ffmpeg` on `PATH` and runs each with
    /// `-version`; `None` when either is missing or does not run.
    pub async fn detect() -> Option<MediaTools> {
        let path = std::env::var_os("PATH")?;
        let ffprobe = find_on_path(&path, "ffprobe")?;
        let ffmpeg = find_on_path(&path, "ffmpeg")?;
        MediaTools::from_paths(ffprobe, ffmpeg).await
    }

    /// Checks two explicit programs (`-version` must succeed for both),
    /// and that they also run inside the sandbox; the sandbox is reported
    /// unavailable (and logged) when the kernel lacks Landlock or the
    /// programs cannot start inside it.
    pub async fn from_paths(ffprobe: PathBuf, ffmpeg: PathBuf) -> Option<MediaTools> {
        let unconfined = Sandbox::Unavailable(String::new());
        version_line(&ffprobe, &unconfined).await?;
        let version = version_line(&ffmpeg, &unconfined).await?;
        let mut sandbox = Sandbox::detect();
        if sandbox.is_enforced()
            && (version_line(&ffprobe, &sandbox).await.is_none()
                || version_line(&ffmpeg, &sandbox).await.is_none())
        {
            sandbox = Sandbox::Unavailable(
                "ffprobe/ffmpeg do not start inside Landlock's rules (libraries outside /usr/lib?)"
                    .into(),
            );
        }
        match &sandbox {
            Sandbox::Landlock(abi) => tracing::info!(
                abi = ?abi,
                "media sandbox: landlock (each ffmpeg sees only its import's directory)"
            ),
            Sandbox::Unavailable(reason) => tracing::warn!(
                reason = %reason,
                "media sandbox unavailable: ffmpeg runs with a forced demuxer and limits, but can read any file the server can"
            ),
        }
        Some(MediaTools {
            ffprobe,
            ffmpeg,
            version,
            sandbox,
        })
    }
}

/// The first executable file called `name` in the `PATH` list.
fn find_on_path(path: &OsStr, name: &str) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs `program -version` in `sandbox` (with no directory of its own);
/// its first line when it succeeds in time.
async fn version_line(program: &Path, sandbox: &Sandbox) -> Option<String> {
    let mut command = sandbox
        .command(program, &[], Limits::for_wall_time(VERSION_TIMEOUT))
        .ok()?;
    let output = command.arg("-version").stderr(Stdio::null()).output();
    let output = tokio::time::timeout(VERSION_TIMEOUT, output)
        .await
        .ok()?
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    Some(text.lines().next().unwrap_or_default().trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nothing_on_an_empty_path() {
        assert_eq!(find_on_path(OsStr::new(""), "ffmpeg"), None);
        assert_eq!(find_on_path(OsStr::new("/nonexistent-dir"), "ffmpeg"), None);
    }

    #[test]
    fn finds_an_executable_on_path() {
        // `sh` exists on every machine these tests run on.
        let found = find_on_path(OsStr::new("/nonexistent-dir:/bin:/usr/bin"), "sh");
        assert!(found.is_some_and(|path| path.ends_with("sh")));
    }
}
