//! What the coordinator and its workers say to each other, one JSON object
//! per line: the job on the worker's stdin, then `go` and `release`; events
//! on the worker's stdout.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::conn::Target;
use crate::hist::WireHist;
use crate::tokens::TokenConfig;

/// One worker's share of a scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub worker: usize,
    pub procs: usize,
    /// The nodes under test, never empty: one server, or every node of a
    /// cluster in `--url` order. Socket `s` goes to `targets[s % len]`.
    pub targets: Vec<Target>,
    pub tokens: TokenConfig,
    pub token_ttl: u64,
    pub source_ips: Vec<IpAddr>,
    /// Prefix of every user id in this run, so runs never share users.
    pub run_id: String,
    pub connect_concurrency: usize,
    pub scenario: Scenario,
}

impl Job {
    /// The node for socket (or request) number `n`: round-robin, so that
    /// consecutive sockets (the tabs of one user) land on different nodes
    /// and a user's updates have to cross the bus to reach all of them.
    pub fn target(&self, n: usize) -> &Target {
        &self.targets[n % self.targets.len()]
    }

    /// Index of the node [`Job::target`] picks for `n`.
    pub fn node(&self, n: usize) -> usize {
        n % self.targets.len()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Scenario {
    /// Open sockets; `connect` and `hold` differ only in what the
    /// coordinator does while they are open.
    Sockets(SocketsJob),
    Fanout(FanoutJob),
    /// Sockets that reconnect like `ProgressClient` through reconnect storms.
    Storm(crate::storm::StormJob),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FanoutJob {
    /// Users `[first_user, end_user)` with `tabs` sockets each.
    pub first_user: usize,
    pub end_user: usize,
    pub tabs: usize,
    /// Imports this worker creates, at `rate` per second.
    pub imports: usize,
    /// Number of this worker's first import in the whole run: REST calls go
    /// to the nodes round-robin by that number.
    #[serde(default)]
    pub first_import: usize,
    pub rate: f64,
    pub steps: u32,
    pub duration_ms: u64,
    pub grace_secs: u64,
    pub churn: Option<ChurnJob>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChurnJob {
    pub fraction: f64,
    pub interval_ms: u64,
    pub refresh: bool,
}

/// Coordinator to worker, after the job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Start the measured phase at this wall-clock time (µs since the epoch).
    Go { t0_micros: i64 },
    /// Close everything and report.
    Release,
}

/// Worker to coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Tokens minted (and, for fanout, every socket open): waiting for `go`.
    Setup {
        sockets: usize,
        setup_secs: f64,
    },
    /// The measured phase is over.
    Phase(Box<PhaseReport>),
    /// Sockets closed; what happened while they were held.
    Done(DoneReport),
    /// A step of a reconnect storm (see `storm.rs`).
    Storm(Box<crate::storm::StormReport>),
    Error {
        message: String,
    },
}

/// A worker's measurements of the measured phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PhaseReport {
    /// Wall-clock µs when the worker's last socket got `ready` (connect),
    /// or its last message arrived (fanout).
    pub end_micros: i64,
    /// Worker CPU seconds (user + system) spent in the phase.
    pub cpu_secs: f64,
    pub connected: usize,
    pub failed: usize,
    /// Failure messages by kind, counted.
    pub errors: BTreeMap<String, u64>,
    /// TCP connect start to `ready` (connect/hold).
    pub connect_hist: WireHist,
    pub fanout: Option<FanoutReport>,
    /// Sockets connected per node (`Job::targets` order), so the coordinator
    /// can divide each node's memory by its own sockets.
    #[serde(default)]
    pub connected_per_node: Vec<usize>,
    /// Sockets whose in-band refresh got its `auth_ok` (`hold --refresh-once`).
    #[serde(default)]
    pub refreshed: usize,
}

/// One worker's sockets of `connect` or `hold`: `[first, end)`, socket `s`
/// belonging to user `s / tabs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SocketsJob {
    pub first: usize,
    pub end: usize,
    pub tabs: usize,
    /// Refresh each socket's token once in band after it connected.
    #[serde(default)]
    pub refresh_once: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FanoutReport {
    pub imports_created: usize,
    pub post_errors: u64,
    /// Wall-clock µs when the last import was created.
    pub last_post_micros: i64,
    /// Import messages received by the measured (stable) sockets.
    pub messages: u64,
    /// Import messages received by churning sockets.
    pub churn_messages: u64,
    /// `updated_at` to arrival, measured sockets.
    pub latency: WireHist,
    /// Messages per 100 ms bin from t0, measured sockets.
    pub bins: Vec<u64>,
    /// Arrivals that read earlier than their `updated_at` (clock or rounding).
    pub negative_latency: u64,
    /// (socket, import) pairs where the import is not the socket user's.
    pub wrong_user: u64,
    /// (socket, import) pairs where a measured socket did not end at the final version.
    pub lost: u64,
    /// Imports the server had not finished when the wait ended.
    pub unfinished: u64,
    /// Whether every measured socket had every final state before the
    /// deadline; when false (overload), `lost` counts what was still queued.
    pub drained: bool,
    /// Versions that did not strictly increase on one connection.
    pub out_of_order: u64,
    pub stable_sockets: usize,
    pub churn_sockets: usize,
    pub churn: Option<ChurnReport>,
    /// Unexpected closes of measured sockets by code and reason.
    pub closes: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChurnReport {
    pub reconnects: u64,
    pub refreshes: u64,
    pub failures: u64,
    pub errors: BTreeMap<String, u64>,
    /// Reconnect: TCP connect start to `snapshot`.
    pub reconnect_hist: WireHist,
    /// In-band refresh: `auth` sent to `auth_ok` read.
    pub refresh_hist: WireHist,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DoneReport {
    /// Sockets the server closed or dropped while held.
    pub dropped: usize,
    pub closes: BTreeMap<String, u64>,
    /// `dropped` per node (`Job::targets` order).
    #[serde(default)]
    pub dropped_per_node: Vec<usize>,
}

/// Adds `from` into `into` element-wise, growing `into` as needed.
pub fn add_per_node(into: &mut Vec<usize>, from: &[usize]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (slot, count) in into.iter_mut().zip(from) {
        *slot += count;
    }
}

/// Counts an error under a short key (the message up to its first digits
/// that vary, roughly).
pub fn count_error(errors: &mut BTreeMap<String, u64>, message: &str) {
    let key: String = message.chars().take(120).collect();
    *errors.entry(key).or_default() += 1;
}
