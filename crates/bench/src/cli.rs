//! Command line: one subcommand per scenario, the issuer, and the hidden
//! worker mode.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "reeltime-bench",
    version,
    about = "Load generator for reeltime's progress WebSocket (and the FastAPI baseline)",
    long_about = "Load generator for reeltime's progress WebSocket, speaking the public protocol only.\n\n\
        Scenarios: connect (authenticated connects/s), hold (idle sockets, server RSS per socket), \
        fanout (users x tabs, synthetic imports: msg/s, latency, wrong-user and lost checks), \
        churn (fanout while a fraction of sockets refresh tokens in band and reconnect).\n\n\
        Tokens come from `reeltime-bench issuer` (an RS256 JWKS the server is pointed at with \
        REELTIME_JWKS_URL and REELTIME_ISSUER), or from the server's own POST /dev/token."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Authenticated connects per second up to --sockets, and the time from TCP connect to `ready`.
    Connect(ConnectArgs),
    /// Hold --sockets idle authenticated sockets and read the server's RSS per socket.
    Hold(HoldArgs),
    /// Users x tabs sockets; synthetic imports at a rate; delivered msg/s, latency and checks.
    Fanout(FanoutArgs),
    /// Fanout while a fraction of sockets refresh their token in band and reconnect all the time.
    Churn(ChurnArgs),
    /// Sockets across the nodes of a cluster that reconnect like ProgressClient, through a kill -9 of
    /// one node and a stop and start of all of them (needs --node-cmd).
    Storm(Box<crate::storm::StormArgs>),
    /// Serve the benchmark's JWKS (and create its signing key) until interrupted.
    Issuer(crate::issuer::IssuerArgs),
    /// Medians of many runs' JSON and the ratios of one server to another.
    Summarize(crate::report::SummarizeArgs),
    /// Internal: one load process, driven by the coordinator over stdin/stdout.
    #[command(hide = true)]
    Worker,
}

/// Options every scenario shares.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Server to load (the path defaults to /api/ws/progress; REST calls go to the same host).
    /// Repeat it, or give a comma list, to load several nodes of one cluster: sockets go to the
    /// nodes round-robin (so the tabs of one user land on different nodes, and their updates
    /// have to cross the bus), and REST calls go to the nodes round-robin too.
    #[arg(
        long = "url",
        value_name = "URL",
        default_value = "ws://127.0.0.1:8080",
        value_delimiter = ','
    )]
    pub urls: Vec<String>,

    /// What the server speaks: reeltime's protocol (reeltime and the FastAPI baseline), or
    /// Socket.IO 4 (Engine.IO 4 over a WebSocket, the token in the CONNECT's `auth` payload;
    /// the path then defaults to /socket.io/).
    #[arg(long, value_enum, default_value_t = crate::conn::Protocol::Reeltime)]
    pub protocol: crate::conn::Protocol,

    /// Mint tokens with the benchmark issuer whose `iss` is this URL (run `reeltime-bench issuer`
    /// and point the server at <URL>/.well-known/jwks.json).
    #[arg(long, value_name = "ISS_URL", conflicts_with = "dev_token")]
    pub jwks_issuer: Option<String>,

    /// Private key of the benchmark issuer (created by `reeltime-bench issuer`).
    #[arg(long, default_value = "bench/results/issuer-key.pem")]
    pub issuer_key: PathBuf,

    /// Get tokens from the server's development issuer (POST /dev/token).
    #[arg(long)]
    pub dev_token: bool,

    /// Token lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub token_ttl: u64,
    /// Prefix of the run's user ids (`<run-id>-u<n>`); by default a new one
    /// per run, so runs never share users. Give the same one to two runs to
    /// act as the same users (the soak seeds their histories this way).
    #[arg(long)]
    pub run_id: Option<String>,

    /// Loopback source addresses to spread sockets over: ranges and/or a comma list.
    #[arg(long, default_value = "127.0.0.2-127.0.0.41")]
    pub source_ips: String,

    /// Client worker processes (each may hold at most the open-file limit of sockets).
    #[arg(long, default_value_t = 2)]
    pub procs: usize,

    /// Connects in flight at once, across all workers.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,

    /// Server process to read VmRSS and CPU time from (/proc/<pid>). With several nodes, repeat
    /// it (or give a comma list) in the order of --url: memory and CPU are then reported summed
    /// over the nodes and per node.
    #[arg(long = "server-pid", value_name = "PID", value_delimiter = ',')]
    pub server_pids: Vec<u32>,

    /// Another process whose memory to report, with its children, as LABEL=PID (repeatable):
    /// e.g. `redis=1234 postgres=5678` (the postmaster: its backends are its children). Reported
    /// as `<label>_rss_mib` (RSS summed over the processes) and `<label>_pss_mib` (shared pages
    /// divided among the processes sharing them, the fair figure for PostgreSQL).
    #[arg(long = "watch", value_name = "LABEL=PID", value_parser = parse_watch)]
    pub watch: Vec<(String, u32)>,

    /// A name for the server in the report (e.g. reeltime or baseline).
    #[arg(long, default_value = "server")]
    pub label: String,

    /// A name for this case in the report (e.g. fanout-10k); defaults to the scenario.
    #[arg(long)]
    pub case: Option<String>,

    /// Print the report as JSON on stdout (the table then goes to stderr).
    #[arg(long)]
    pub json: bool,

    /// Also write the JSON report to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub phase_timeout_secs: u64,
}

#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub common: Common,
    /// Sockets to open.
    #[arg(long, default_value_t = 10_000)]
    pub sockets: usize,
    /// Sockets per user (consecutive sockets share a user and a token).
    #[arg(long, default_value_t = 4)]
    pub tabs: usize,
}

#[derive(Debug, Clone, Args)]
pub struct HoldArgs {
    #[command(flatten)]
    pub common: Common,
    /// Idle sockets to hold.
    #[arg(long, default_value_t = 19_000)]
    pub sockets: usize,
    /// Sockets per user.
    #[arg(long, default_value_t = 4)]
    pub tabs: usize,
    /// Seconds to hold them after the last one connected (RSS is sampled meanwhile).
    #[arg(long, default_value_t = 10)]
    pub hold_secs: u64,
    /// Each socket refreshes its token once in band (`{"type":"auth"}`, as
    /// `ProgressClient` does every ~50 s) before it counts as held: the
    /// memory of a socket that has lived through a refresh, not only of a
    /// fresh one. reeltime's protocol only.
    #[arg(long)]
    pub refresh_once: bool,
    #[command(flatten)]
    pub fanout: HoldFanoutArgs,
}

/// A fan-out run while the held sockets stay open (`hold --fanout-users N`).
///
/// It answers "does delivery still work, and how fast, with this many
/// sockets connected": its users are additional to the held ones, opened by
/// `--fanout-procs` more worker processes (each process has its own
/// open-file limit), and every check of the `fanout` scenario applies. Its
/// metrics join the hold report with a `fanout_` prefix.
#[derive(Debug, Clone, Args)]
pub struct HoldFanoutArgs {
    /// Users of the fan-out run after the hold (0: no fan-out).
    #[arg(long, default_value_t = 0)]
    pub fanout_users: usize,
    /// Sockets per fan-out user (spread over the nodes like the held ones).
    #[arg(long, default_value_t = 4)]
    pub fanout_tabs: usize,
    /// Synthetic imports the fan-out creates in all.
    #[arg(long, default_value_t = 300)]
    pub fanout_imports: usize,
    /// Fan-out imports created per second.
    #[arg(long, default_value_t = 30.0)]
    pub fanout_rate: f64,
    /// Progress changes per fan-out import.
    #[arg(long, default_value_t = 50)]
    pub fanout_steps: u32,
    /// How long each fan-out import runs.
    #[arg(long, default_value_t = 5_000)]
    pub fanout_duration_ms: u64,
    /// Seconds to wait after the last fan-out import should have finished.
    #[arg(long, default_value_t = 30)]
    pub fanout_grace_secs: u64,
    /// Worker processes of the fan-out (besides the --procs holding the sockets).
    #[arg(long, default_value_t = 2)]
    pub fanout_procs: usize,
}

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    /// Users, each with --tabs sockets.
    #[arg(long, default_value_t = 500)]
    pub users: usize,
    /// Sockets per user.
    #[arg(long, default_value_t = 8)]
    pub tabs: usize,
    /// Synthetic imports to create in all, spread round-robin over the users.
    #[arg(long, default_value_t = 2_000)]
    pub imports: usize,
    /// Imports created per second.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Progress changes per import (synthetic `steps`).
    #[arg(long, default_value_t = 50)]
    pub steps: u32,
    /// How long each import runs (synthetic `duration_ms`).
    #[arg(long, default_value_t = 5_000)]
    pub duration_ms: u64,
    /// Seconds to wait after the last import should have finished.
    #[arg(long, default_value_t = 30)]
    pub grace_secs: u64,
}

#[derive(Debug, Clone, Args)]
pub struct ChurnArgs {
    #[command(flatten)]
    pub fanout: FanoutArgs,
    /// Fraction of sockets that churn (refresh + reconnect); the rest are measured.
    #[arg(long, default_value_t = 0.2)]
    pub churn_fraction: f64,
    /// Each churning socket reconnects this often (jittered ±50 %).
    #[arg(long, default_value_t = 1_000)]
    pub churn_interval_ms: u64,
    /// Refresh the token in band (`auth` → `auth_ok`) once per cycle before reconnecting;
    /// turn off for servers without in-band refresh.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub churn_refresh: bool,
}

/// `redis=1234` → ("redis", 1234).
fn parse_watch(text: &str) -> Result<(String, u32), String> {
    let (label, pid) = text
        .split_once('=')
        .ok_or_else(|| format!("expected LABEL=PID, got {text:?}"))?;
    let label = label.trim();
    if label.is_empty()
        || !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "the label of {text:?} must be letters, digits, - and _"
        ));
    }
    let pid = pid
        .trim()
        .parse()
        .map_err(|err| format!("bad pid in {text:?}: {err}"))?;
    Ok((label.to_string(), pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_urls_and_pids() {
        let cli = Cli::try_parse_from([
            "reeltime-bench",
            "hold",
            "--url",
            "ws://127.0.0.1:1,ws://127.0.0.1:2",
            "--url",
            "ws://127.0.0.1:3",
            "--server-pid",
            "10",
            "--server-pid",
            "11,12",
            "--watch",
            "redis=7",
        ])
        .unwrap();
        let Command::Hold(hold) = cli.command else {
            panic!("not hold");
        };
        assert_eq!(hold.common.urls.len(), 3);
        assert_eq!(hold.common.server_pids, vec![10, 11, 12]);
        assert_eq!(hold.common.watch, vec![("redis".to_string(), 7)]);
        assert_eq!(hold.fanout.fanout_users, 0);

        let cli = Cli::try_parse_from(["reeltime-bench", "connect"]).unwrap();
        let Command::Connect(connect) = cli.command else {
            panic!("not connect");
        };
        assert_eq!(connect.common.urls, vec!["ws://127.0.0.1:8080".to_string()]);
        assert!(connect.common.server_pids.is_empty());
        assert!(parse_watch("x").is_err());
        assert!(parse_watch("a b=1").is_err());
    }
}
