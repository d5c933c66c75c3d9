//! Reading a process's resident memory, CPU time and open files from /proc.

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// One look at a process.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ProcSample {
    /// VmRSS in KiB.
    pub rss_kib: u64,
    /// User + system CPU seconds since the process started.
    pub cpu_secs: f64,
    /// Entries in /proc/<pid>/fd.
    pub fds: u64,
    pub threads: u64,
}

pub fn sample(pid: u32) -> anyhow::Result<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (is --server-pid right?)"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count() as u64)
        .unwrap_or(0);
    Ok(ProcSample {
        rss_kib: field("VmRSS:"),
        cpu_secs: cpu_secs(&format!("/proc/{pid}/stat"))?,
        fds,
        threads: field("Threads:"),
    })
}

/// CPU seconds of this process (for workers).
pub fn self_cpu_secs() -> f64 {
    cpu_secs("/proc/self/stat").unwrap_or(0.0)
}

fn cpu_secs(path: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    // Fields after the parenthesized command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("odd /proc stat line")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> f64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0.0) };
    Ok((ticks(11) + ticks(12)) / clock_ticks())
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux this runs on; getconf would need libc.
    100.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let me = super::sample(std::process::id()).unwrap();
        assert!(me.rss_kib > 0);
        assert!(me.fds > 0);
        assert!(me.threads >= 1);
    }
}
