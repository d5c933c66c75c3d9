//! Runs ffprobe and ffmpeg with the least they need: the import's own
//! directory, the system's libraries, and bounded CPU time and memory.
//!
//! ffmpeg parses files strangers send, with a very large decoder surface.
//! [`input`](super::input) keeps it to one demuxer on one file; this module
//! is the second wall, for when a bug in a demuxer or decoder is found:
//!
//! - **Landlock** (Linux 5.13+, the `landlock` crate): the child may read,
//!   write and create files only beneath the directories it works in (the
//!   import's), read and execute the system's library directories and the
//!   program itself, and read `/dev/null`, `/dev/urandom`, the dynamic
//!   loader's cache and the CPU topology under `/sys`. Everything else —
//!   other imports, the database, the media secret, `/proc` (another
//!   process's environment), `/etc` — is refused by the kernel. Where the
//!   kernel supports it, the child may not open or accept TCP connections
//!   (ABI 4) nor signal processes or reach abstract UNIX sockets outside
//!   its sandbox (ABI 6).
//! - **rlimits**: CPU seconds (`RLIMIT_CPU`; the kernel kills a child past
//!   it, even one the server lost track of in a crash), address space
//!   (`RLIMIT_AS`), and no core files.
//! - **no environment**: the child gets none of the server's variables (they
//!   may hold database URLs or storage keys), only `MALLOC_ARENA_MAX` to
//!   keep glibc's per-thread arenas within the address-space limit.
//!
//! Everything is prepared in the server before `fork` (paths opened,
//! ruleset built, limits computed); the child only makes system calls
//! (`setrlimit`, `prctl(NO_NEW_PRIVS)`, `landlock_restrict_self`) between
//! `fork` and `exec`, with no allocation or lock, which is what is safe in
//! the child of a multi-threaded process. Re-executing the server binary as
//! a small wrapper was the other way; it would tie the library's media
//! functions to the `reeltime` binary and cost an extra exec per run.
//!
//! Without Landlock (an old kernel, or disabled at boot), ffmpeg still runs
//! with the forced demuxer, the whitelists and the limits; the server says
//! so at start and in `/readyz` (`"media_sandbox": "unavailable"`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, PathBeneath, PathFd, PathFdError,
    Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr, RulesetError, RulesetStatus, Scope,
    path_beneath_rules,
};
use rlimit::Resource;
use tokio::process::Command;

/// Read and execute: where the loader finds ffmpeg's shared libraries
/// (Debian's `/lib` and `/lib64` are links into `/usr`), and what glibc,
/// x264 and libavutil read to size their thread pools.
const SYSTEM_READ: &[&str] = &[
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/lib",
    "/lib64",
    "/etc/ld.so.cache",
    "/sys/devices/system/cpu",
    "/sys/devices/system/node",
];

/// Devices a program may open by name (stdin/stdout/stderr are pipes the
/// server opened before the sandbox applies).
const DEVICES: &[&str] = &["/dev/null", "/dev/urandom"];

/// Address space for one ffmpeg: the 720p copy of a 4K H.264 source ran
/// within 1 GiB here, of an 8K one within 2 GiB; the rest is headroom for
/// thread stacks on machines with many cores.
pub const MEMORY_LIMIT_BYTES: u64 = 4 << 30;

/// Seconds between the soft CPU limit (SIGXCPU) and the hard one (SIGKILL).
const CPU_GRACE_SECS: u64 = 5;

/// The newest Landlock ABI this module asks for (and was tested with).
const WANTED_ABI: ABI = ABI::V6;

/// What confines media children on this machine, found once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sandbox {
    /// Landlock at this ABI version: the rules above are enforced.
    Landlock(ABI),
    /// No Landlock; the reason, for the start-up log.
    Unavailable(String),
}

/// Limits of one child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// CPU seconds over all its threads.
    pub cpu_secs: u64,
    pub memory_bytes: u64,
}

impl Limits {
    /// The limits for a run allowed `wall` of real time: as much CPU as
    /// every core for that long (more is impossible before the wall-clock
    /// limit kills it; the CPU limit is what stops a child the server lost,
    /// e.g. after a crash).
    pub fn for_wall_time(wall: Duration) -> Limits {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        Limits {
            cpu_secs: wall.as_secs().max(1).saturating_mul(cores),
            memory_bytes: MEMORY_LIMIT_BYTES,
        }
    }
}

/// The sandbox could not be prepared for one run.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the Landlock ruleset could not be built: {0}")]
    Ruleset(#[from] RulesetError),
    #[error("a work directory could not be opened: {0}")]
    WorkDir(#[from] PathFdError),
}

impl Sandbox {
    /// Asks the kernel which Landlock ABI it supports (up to the one this
    /// module knows), by creating a ruleset that must be fully honoured.
    pub fn detect() -> Sandbox {
        let mut last_error = None;
        for abi in [WANTED_ABI, ABI::V5, ABI::V4, ABI::V3, ABI::V2, ABI::V1] {
            match handled(abi).and_then(Ruleset::create) {
                Ok(_) => return Sandbox::Landlock(abi),
                Err(err) => last_error = Some(err),
            }
        }
        Sandbox::Unavailable(match last_error {
            Some(err) => format!("the kernel does not offer Landlock ({err})"),
            None => "the kernel does not offer Landlock".into(),
        })
    }

    /// `"landlock"` or `"unavailable"`, as `/readyz` shows it.
    pub fn name(&self) -> &'static str {
        match self {
            Sandbox::Landlock(_) => "landlock",
            Sandbox::Unavailable(_) => "unavailable",
        }
    }

    /// Whether children run inside Landlock.
    pub fn is_enforced(&self) -> bool {
        matches!(self, Sandbox::Landlock(_))
    }

    /// A command for `program` that, once spawned, may use only `dirs`
    /// (read, write, create, remove beneath them) besides the system paths
    /// above, within `limits`. Stdin is `/dev/null`; the child is killed
    /// when the handle is dropped.
    pub fn command(
        &self,
        program: &Path,
        dirs: &[&Path],
        limits: Limits,
    ) -> Result<Command, SandboxError> {
        let mut ruleset = match self {
            Sandbox::Landlock(abi) => Some(rules(*abi, program, dirs)?),
            Sandbox::Unavailable(_) => None,
        };
        let (cpu_soft, cpu_hard) = within_hard_limit(
            Resource::CPU,
            limits.cpu_secs,
            limits.cpu_secs.saturating_add(CPU_GRACE_SECS),
        );
        let (memory, _) = within_hard_limit(Resource::AS, limits.memory_bytes, limits.memory_bytes);
        let mut command = Command::new(program);
        command
            .env_clear()
            .env("MALLOC_ARENA_MAX", "2")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        // SAFETY: runs in the child between fork and exec. It only makes
        // system calls: `setrlimit`, and `restrict_self`, which is
        // `prctl(PR_SET_NO_NEW_PRIVS)` and `landlock_restrict_self` on a
        // ruleset built before the fork; no allocation, no lock. Errors
        // are plain OS errors (no allocation either).
        unsafe {
            command.pre_exec(move || {
                rlimit::setrlimit(Resource::CORE, 0, 0)?;
                rlimit::setrlimit(Resource::CPU, cpu_soft, cpu_hard)?;
                rlimit::setrlimit(Resource::AS, memory, memory)?;
                if let Some(ruleset) = ruleset.take() {
                    let enforced = ruleset
                        .restrict_self()
                        .is_ok_and(|status| status.ruleset == RulesetStatus::FullyEnforced);
                    if !enforced {
                        return Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
                    }
                }
                Ok(())
            });
        }
        Ok(command)
    }
}

/// A ruleset handling everything `abi` can restrict, which the kernel must
/// honour in full.
fn handled(abi: ABI) -> Result<Ruleset, RulesetError> {
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(abi))?;
    if abi >= ABI::V4 {
        // Handled with no rule: no TCP bind or connect at all.
        ruleset = ruleset.handle_access(AccessNet::from_all(abi))?;
    }
    if abi >= ABI::V6 {
        ruleset = ruleset.scope(Scope::from_all(abi))?;
    }
    Ok(ruleset)
}

/// The rules of one run: system paths and the program read-only, the
/// devices, and full access beneath `dirs`.
fn rules(abi: ABI, program: &Path, dirs: &[&Path]) -> Result<RulesetCreated, SandboxError> {
    let read = AccessFs::from_read(abi);
    let system = SYSTEM_READ
        .iter()
        .map(PathBuf::from)
        .chain([program.to_path_buf()]);
    let mut work = Vec::with_capacity(dirs.len());
    for dir in dirs {
        // Unlike the optional system paths, a work directory that cannot
        // be opened is an error, not a rule left out.
        work.push(PathBeneath::new(PathFd::new(dir)?, AccessFs::from_all(abi)));
    }
    Ok(handled(abi)?
        .create()?
        .add_rules(path_beneath_rules(system, read))?
        .add_rules(path_beneath_rules(
            DEVICES,
            AccessFs::ReadFile | AccessFs::WriteFile,
        ))?
        .add_rules(work.into_iter().map(Ok::<_, RulesetError>))?)
}

/// `(soft, hard)` no higher than the server's own hard limit, which an
/// unprivileged child cannot raise.
fn within_hard_limit(resource: Resource, soft: u64, hard: u64) -> (u64, u64) {
    let current_hard = rlimit::getrlimit(resource).map_or(u64::MAX, |(_, hard)| hard);
    (soft.min(current_hard), hard.min(current_hard))
}

/// Whether the child was killed for using up its CPU time (SIGXCPU at the
/// soft limit). The limit allows every core for the whole wall-clock limit,
/// so under supervision the wall clock ends a run first; this is for the
/// rare case the signal is what ended it (ffmpeg itself catches SIGXCPU and
/// exits with an error, reported as a failure).
pub fn out_of_cpu_time(status: &std::process::ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(libc::SIGXCPU)
}

/// The directories a run works in: those holding its input and output
/// files (the import's directory), each once.
pub(crate) fn work_dirs<'a>(files: &[&'a Path]) -> Vec<&'a Path> {
    let mut dirs: Vec<&Path> = Vec::new();
    for file in files {
        let dir = match file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_scale_with_the_wall_time() {
        let short = Limits::for_wall_time(Duration::from_secs(60));
        let long = Limits::for_wall_time(Duration::from_secs(600));
        assert!(short.cpu_secs >= 60);
        assert_eq!(long.cpu_secs, short.cpu_secs * 10);
        assert_eq!(short.memory_bytes, MEMORY_LIMIT_BYTES);
    }

    #[test]
    fn work_dirs_are_the_files_parents_once() {
        let dirs = work_dirs(&[
            Path::new("/data/imports/a/source.mp4"),
            Path::new("/data/imports/a/video.mp4.1.part"),
        ]);
        assert_eq!(dirs, [Path::new("/data/imports/a")]);
        assert_eq!(work_dirs(&[Path::new("x.mp4")]), [Path::new(".")]);
    }

    #[test]
    fn names_what_readyz_shows() {
        assert_eq!(Sandbox::Landlock(ABI::V6).name(), "landlock");
        assert_eq!(
            Sandbox::Unavailable("old kernel".into()).name(),
            "unavailable"
        );
        assert!(!Sandbox::Unavailable(String::new()).is_enforced());
    }
}
