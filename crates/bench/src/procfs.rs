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

impl ProcSample {
    /// The figures of several processes added up (the nodes of a cluster).
    /// For one process it is that process's sample, unchanged.
    pub fn sum(samples: &[ProcSample]) -> ProcSample {
        samples
            .iter()
            .fold(ProcSample::default(), |total, one| ProcSample {
                rss_kib: total.rss_kib + one.rss_kib,
                cpu_secs: total.cpu_secs + one.cpu_secs,
                fds: total.fds + one.fds,
                threads: total.threads + one.threads,
            })
    }
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

/// Memory of a process and all its descendants: for services made of
/// several processes (PostgreSQL's postmaster and backends), where the
/// process alone would miss most of it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct TreeSample {
    /// Processes counted (the root and its descendants).
    pub procs: u64,
    /// VmRSS summed: counts shared memory (PostgreSQL's shared buffers)
    /// once per process that touched it.
    pub rss_kib: u64,
    /// Pss summed (`/proc/<pid>/smaps_rollup`): shared pages divided among
    /// the processes sharing them, so the sum is what the tree really uses.
    pub pss_kib: u64,
}

/// Samples `pid` and its descendants (found through the parent pid of every
/// process in /proc). Processes that end while being read are skipped.
pub fn tree_sample(pid: u32) -> anyhow::Result<TreeSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (is the --watch pid right?)"))?;
    let mut children: std::collections::HashMap<u32, Vec<u32>> = Default::default();
    for entry in std::fs::read_dir("/proc")
        .context("reading /proc")?
        .flatten()
    {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // The 4th field, the first after "<pid> (<comm>) <state>".
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<u32>().ok());
        if let Some(parent) = parent {
            children.entry(parent).or_default().push(child);
        }
    }
    let mut total = TreeSample::default();
    let mut stack = vec![pid];
    let mut first = Some(status);
    while let Some(next) = stack.pop() {
        let status = match first.take() {
            Some(status) => status,
            None => match std::fs::read_to_string(format!("/proc/{next}/status")) {
                Ok(status) => status,
                Err(_) => continue,
            },
        };
        total.procs += 1;
        total.rss_kib += kib_field(&status, "VmRSS:");
        total.pss_kib += std::fs::read_to_string(format!("/proc/{next}/smaps_rollup"))
            .map(|rollup| kib_field(&rollup, "Pss:"))
            .unwrap_or(0);
        if let Some(kids) = children.get(&next) {
            stack.extend(kids);
        }
    }
    Ok(total)
}

/// The number after `name` on its line of a /proc file (in kB there).
fn kib_field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
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
        let sum = super::ProcSample::sum(&[me, me]);
        assert_eq!(sum.rss_kib, 2 * me.rss_kib);
        let tree = super::tree_sample(std::process::id()).unwrap();
        assert!(tree.procs >= 1);
        assert!(tree.rss_kib > 0);
    }
}
