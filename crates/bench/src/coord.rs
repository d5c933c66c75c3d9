//! The coordinator: splits a scenario among worker processes, keeps them in
//! step, samples the server from /proc and merges what the workers measured.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::cli::{ChurnArgs, Command, Common, FanoutArgs, HoldFanoutArgs};
use crate::conn::{self, Target};
use crate::hist::Hist;
use crate::job::{self, ChurnJob, DoneReport, Event, FanoutJob, Job, PhaseReport, Scenario};
use crate::procfs::{self, ProcSample, TreeSample};
use crate::report::{self, Report};
use crate::tokens::TokenConfig;
use crate::worker::BIN_MICROS;

pub async fn run(command: Command) -> anyhow::Result<()> {
    let common = match &command {
        Command::Connect(args) => args.common.clone(),
        Command::Hold(args) => args.common.clone(),
        Command::Fanout(args) => args.common.clone(),
        Command::Churn(args) => args.fanout.common.clone(),
        Command::Storm(args) => return crate::storm::run((**args).clone()).await,
        _ => unreachable!("dispatched in main"),
    };
    let mut report = match command {
        Command::Connect(args) => {
            sockets_scenario(
                "connect",
                &args.common,
                SocketsPlan {
                    sockets: args.sockets,
                    tabs: args.tabs,
                    refresh_once: false,
                    hold_secs: 0,
                },
                json!({"sockets": args.sockets, "tabs": args.tabs}),
                None,
            )
            .await?
        }
        Command::Hold(args) => {
            if args.refresh_once && args.common.protocol != crate::conn::Protocol::Reeltime {
                bail!("--refresh-once needs reeltime's protocol (an in-band auth message)");
            }
            let mut params = json!({
                "sockets": args.sockets,
                "tabs": args.tabs,
                "hold_secs": args.hold_secs,
                "refresh_once": args.refresh_once,
            });
            let fanout = (args.fanout.fanout_users > 0).then_some(&args.fanout);
            if let (Some(fanout), Some(params)) = (fanout, params.as_object_mut()) {
                params.insert(
                    "fanout".into(),
                    json!({
                        "users": fanout.fanout_users,
                        "tabs": fanout.fanout_tabs,
                        "imports": fanout.fanout_imports,
                        "rate": fanout.fanout_rate,
                        "steps": fanout.fanout_steps,
                        "duration_ms": fanout.fanout_duration_ms,
                        "procs": fanout.fanout_procs,
                    }),
                );
            }
            let mut report = sockets_scenario(
                "hold",
                &args.common,
                SocketsPlan {
                    sockets: args.sockets,
                    tabs: args.tabs,
                    refresh_once: args.refresh_once,
                    hold_secs: args.hold_secs,
                },
                params,
                fanout,
            )
            .await?;
            if args.common.urls.len() > 1
                && let Some(params) = report.params.as_object_mut()
            {
                params.insert("nodes".into(), json!(args.common.urls.len()));
            }
            report
        }
        Command::Fanout(args) => fanout_scenario("fanout", &args, None).await?,
        Command::Churn(ChurnArgs {
            fanout,
            churn_fraction,
            churn_interval_ms,
            churn_refresh,
        }) => {
            if churn_refresh && fanout.common.protocol == conn::Protocol::Socketio {
                bail!(
                    "Socket.IO has no in-band token refresh here: give --churn-refresh false with --protocol socketio"
                );
            }
            let churn = ChurnJob {
                fraction: churn_fraction.clamp(0.0, 1.0),
                interval_ms: churn_interval_ms,
                refresh: churn_refresh,
            };
            fanout_scenario("churn", &fanout, Some(churn)).await?
        }
        _ => unreachable!("dispatched in main"),
    };
    if let Some(params) = report.params.as_object_mut() {
        if common.protocol != conn::Protocol::Reeltime {
            params.insert("protocol".into(), json!(common.protocol));
        }
        params.insert(
            "case".into(),
            json!(
                common
                    .case
                    .clone()
                    .unwrap_or_else(|| report.scenario.clone())
            ),
        );
    }
    report::emit(&report, common.json, common.out.as_deref())?;
    // The hold figures are written either way; a failed fan-out still fails
    // the command.
    if let Some(error) = report.details.get("fanout_error").and_then(Value::as_str) {
        bail!("the fan-out while holding failed: {error}");
    }
    Ok(())
}

/// A started worker process.
pub(crate) struct Worker {
    index: usize,
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    async fn send(&mut self, value: &impl serde::Serialize) -> anyhow::Result<()> {
        let mut line = serde_json::to_string(value)?;
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .with_context(|| format!("writing to worker {}", self.index))?;
        self.stdin.flush().await?;
        Ok(())
    }

    async fn event(&mut self, timeout: Duration) -> anyhow::Result<Event> {
        let line = tokio::time::timeout(timeout, self.stdout.next_line())
            .await
            .map_err(|_| anyhow::anyhow!("worker {} silent for {timeout:?}", self.index))?
            .with_context(|| format!("reading worker {}", self.index))?
            .with_context(|| format!("worker {} exited early (see its stderr)", self.index))?;
        let event: Event = serde_json::from_str(&line)
            .with_context(|| format!("worker {} said {line}", self.index))?;
        if let Event::Error { message } = &event {
            bail!("worker {}: {message}", self.index);
        }
        Ok(event)
    }
}

pub(crate) struct Pool {
    workers: Vec<Worker>,
    timeout: Duration,
}

impl Pool {
    pub(crate) async fn start(jobs: Vec<Job>, timeout: Duration) -> anyhow::Result<Pool> {
        let exe = std::env::current_exe().context("finding this executable")?;
        let mut workers = Vec::with_capacity(jobs.len());
        for job in jobs {
            let mut child = tokio::process::Command::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("starting a worker process")?;
            let stdin = child.stdin.take().context("worker stdin")?;
            let stdout = BufReader::new(child.stdout.take().context("worker stdout")?).lines();
            let mut worker = Worker {
                index: job.worker,
                child,
                stdin,
                stdout,
            };
            worker.send(&job).await?;
            workers.push(worker);
        }
        Ok(Pool { workers, timeout })
    }

    pub(crate) async fn broadcast(
        &mut self,
        command: &impl serde::Serialize,
    ) -> anyhow::Result<()> {
        for worker in &mut self.workers {
            worker.send(command).await?;
        }
        Ok(())
    }

    /// The next event of every worker, read concurrently.
    pub(crate) async fn gather(&mut self) -> anyhow::Result<Vec<Event>> {
        let timeout = self.timeout;
        let reads = self.workers.iter_mut().map(|worker| worker.event(timeout));
        futures_util::future::try_join_all(reads).await
    }

    pub(crate) async fn finish(mut self) {
        for worker in &mut self.workers {
            let _ = tokio::time::timeout(Duration::from_secs(10), worker.child.wait()).await;
        }
    }
}

pub(crate) fn base_jobs(
    common: &Common,
    make: impl Fn(usize) -> Scenario,
) -> anyhow::Result<Vec<Job>> {
    let targets = targets(common)?;
    let tokens = match (&common.jwks_issuer, common.dev_token) {
        (Some(issuer), false) => TokenConfig::Key {
            key_file: common.issuer_key.display().to_string(),
            issuer: issuer.trim_end_matches('/').to_string(),
        },
        (None, true) => TokenConfig::Dev {
            http_base: targets[0].http_base.clone(),
        },
        _ => bail!("choose a token source: --jwks-issuer <ISS_URL> or --dev-token"),
    };
    let ips = conn::parse_source_ips(&common.source_ips)?;
    let procs = common.procs.max(1);
    let run_id = common
        .run_id
        .clone()
        .unwrap_or_else(|| format!("bench{}", chrono::Utc::now().format("%m%d%H%M%S%3f")));
    Ok((0..procs)
        .map(|worker| {
            // Each worker its own addresses when there are enough to go round.
            let source_ips = if ips.len() >= procs {
                ips.iter().skip(worker).step_by(procs).copied().collect()
            } else {
                ips.clone()
            };
            Job {
                worker,
                procs,
                targets: targets.clone(),
                tokens: tokens.clone(),
                token_ttl: common.token_ttl,
                source_ips,
                run_id: run_id.clone(),
                connect_concurrency: common.connect_concurrency.div_ceil(procs).max(1),
                scenario: make(worker),
            }
        })
        .collect())
}

pub(crate) fn share(total: usize, procs: usize, worker: usize) -> (usize, usize) {
    (total * worker / procs, total * (worker + 1) / procs)
}

/// Every `--url`, parsed; never empty.
fn targets(common: &Common) -> anyhow::Result<Vec<Target>> {
    let targets = common
        .urls
        .iter()
        .map(|url| Target::parse_for(url, common.protocol))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if targets.is_empty() {
        bail!("give at least one --url");
    }
    Ok(targets)
}

/// One look at every server node (`--server-pid`, in `--url` order).
#[derive(Debug, Clone)]
struct NodesSample {
    /// The nodes added up; with one server, that server's own sample, so
    /// single-node reports read exactly as before.
    total: ProcSample,
    nodes: Vec<ProcSample>,
}

fn server_sample(common: &Common) -> anyhow::Result<Option<NodesSample>> {
    if common.server_pids.is_empty() {
        return Ok(None);
    }
    let nodes = common
        .server_pids
        .iter()
        .map(|pid| procfs::sample(*pid))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Some(NodesSample {
        total: ProcSample::sum(&nodes),
        nodes,
    }))
}

fn total(sample: &Option<NodesSample>) -> Option<ProcSample> {
    sample.as_ref().map(|sample| sample.total)
}

/// The `--watch` processes (with their children), by label.
fn watched(common: &Common) -> anyhow::Result<BTreeMap<String, TreeSample>> {
    common
        .watch
        .iter()
        .map(|(label, pid)| Ok((label.clone(), procfs::tree_sample(*pid)?)))
        .collect()
}

/// `<label>_rss_mib`, `<label>_pss_mib` (with `suffix` before `_mib`).
fn watched_metrics(
    metrics: &mut BTreeMap<String, f64>,
    samples: &BTreeMap<String, TreeSample>,
    suffix: &str,
) {
    for (label, sample) in samples {
        metrics.insert(
            format!("{label}_rss{suffix}_mib"),
            sample.rss_kib as f64 / 1024.0,
        );
        metrics.insert(
            format!("{label}_pss{suffix}_mib"),
            sample.pss_kib as f64 / 1024.0,
        );
    }
}

/// Per-node figures when there are several nodes (none for one: its figures
/// are the report's own). `connected` and `dropped` are per `--url`; they
/// are matched to the pids only when both lists have the same length.
struct PerNode<'a> {
    common: &'a Common,
    /// Before the first connect.
    before: &'a NodesSample,
    /// End of the window CPU time is measured over.
    cpu_end: &'a NodesSample,
    /// When memory is read (after the hold, or after the fan-out).
    mem_end: &'a NodesSample,
    /// Highest RSS seen per node, KiB (empty: not sampled).
    peaks: &'a [u64],
    connected: &'a [usize],
    dropped: &'a [usize],
}

impl PerNode<'_> {
    fn json(&self) -> Vec<Value> {
        if self.common.server_pids.len() < 2 {
            return Vec::new();
        }
        let matched = self.common.server_pids.len() == self.common.urls.len();
        self.common
            .server_pids
            .iter()
            .enumerate()
            .map(|(i, pid)| {
                let before = self.before.nodes[i];
                let mem = self.mem_end.nodes[i];
                let grown_kib = mem.rss_kib as f64 - before.rss_kib as f64;
                let mut node = json!({
                    "node": i + 1,
                    "pid": pid,
                    "rss_before_mib": before.rss_kib as f64 / 1024.0,
                    "rss_after_mib": mem.rss_kib as f64 / 1024.0,
                    "rss_grown_mib": grown_kib / 1024.0,
                    "cpu_secs": self.cpu_end.nodes[i].cpu_secs - before.cpu_secs,
                    "fds": mem.fds,
                    "threads": mem.threads,
                });
                if let Some(peak) = self.peaks.get(i) {
                    node["rss_peak_mib"] = json!(*peak as f64 / 1024.0);
                }
                if matched {
                    node["url"] = json!(self.common.urls[i]);
                    if let Some(sockets) = self.connected.get(i) {
                        node["sockets"] = json!(sockets);
                        if *sockets > 0 {
                            node["rss_per_socket_kib"] = json!(grown_kib / *sockets as f64);
                        }
                    }
                    if let Some(dropped) = self.dropped.get(i) {
                        node["dropped"] = json!(dropped);
                    }
                }
                node
            })
            .collect()
    }
}

fn phases(events: Vec<Event>) -> anyhow::Result<Vec<PhaseReport>> {
    events
        .into_iter()
        .map(|event| match event {
            Event::Phase(phase) => Ok(*phase),
            other => bail!("expected a phase report, got {other:?}"),
        })
        .collect()
}

fn dones(events: Vec<Event>) -> anyhow::Result<Vec<DoneReport>> {
    events
        .into_iter()
        .map(|event| match event {
            Event::Done(done) => Ok(done),
            other => bail!("expected a done report, got {other:?}"),
        })
        .collect()
}

fn setup_secs(events: &[Event]) -> anyhow::Result<f64> {
    let mut longest: f64 = 0.0;
    for event in events {
        match event {
            Event::Setup { setup_secs, .. } => longest = longest.max(*setup_secs),
            other => bail!("expected setup, got {other:?}"),
        }
    }
    Ok(longest)
}

fn now_micros() -> i64 {
    conn::unix_micros_now()
}

pub(crate) fn merge_errors(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (key, count) in from {
        *into.entry(key.clone()).or_default() += count;
    }
}

fn server_json(before: Option<ProcSample>, after: Option<ProcSample>) -> Value {
    json!({"before": before, "after": after})
}

/// How many sockets `connect` and `hold` open, and what each does.
struct SocketsPlan {
    sockets: usize,
    /// Sockets per user.
    tabs: usize,
    /// Each socket refreshes its token once in band before it counts.
    refresh_once: bool,
    /// Seconds to hold them open once all are connected (0: `connect`).
    hold_secs: u64,
}

/// `connect` and `hold`; with `fanout`, a fan-out run (fresh users, more
/// worker processes) while the held sockets stay open, before they are
/// released.
async fn sockets_scenario(
    name: &str,
    common: &Common,
    plan: SocketsPlan,
    params: Value,
    fanout: Option<&HoldFanoutArgs>,
) -> anyhow::Result<Report> {
    let SocketsPlan {
        sockets,
        tabs,
        refresh_once,
        hold_secs,
    } = plan;
    let procs = common.procs.max(1);
    let jobs = base_jobs(common, |worker| {
        let (first, end) = share(sockets, procs, worker);
        Scenario::Sockets(job::SocketsJob {
            first,
            end,
            tabs: tabs.max(1),
            refresh_once,
        })
    })?;
    let timeout = Duration::from_secs(common.phase_timeout_secs);
    let mut pool = Pool::start(jobs, timeout).await?;
    let setup = setup_secs(&pool.gather().await?)?;

    let before = server_sample(common)?;
    let watched_before = watched(common)?;
    let t0 = now_micros() + 200_000;
    pool.broadcast(&job::Command::Go { t0_micros: t0 }).await?;
    let phase = phases(pool.gather().await?)?;
    let after_connect = server_sample(common)?;

    // Hold: sample the server while everything stays open.
    let mut samples = Vec::new();
    let mut peaks: Vec<u64> = Vec::new();
    let held_from = Instant::now();
    if hold_secs > 0 {
        while held_from.elapsed() < Duration::from_secs(hold_secs) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Some(sample) = server_sample(common)? {
                if peaks.len() < sample.nodes.len() {
                    peaks.resize(sample.nodes.len(), 0);
                }
                for (peak, node) in peaks.iter_mut().zip(&sample.nodes) {
                    *peak = (*peak).max(node.rss_kib);
                }
                samples.push(sample.total);
            }
        }
    }
    let after_hold = server_sample(common)?;
    let watched_held = watched(common)?;

    // The fan-out, while every held socket is still open.
    let mut fanout_outcome = None;
    if let Some(fanout) = fanout {
        let args = FanoutArgs {
            common: Common {
                procs: fanout.fanout_procs,
                json: false,
                out: None,
                case: None,
                watch: Vec::new(),
                ..common.clone()
            },
            users: fanout.fanout_users,
            tabs: fanout.fanout_tabs,
            imports: fanout.fanout_imports,
            rate: fanout.fanout_rate,
            steps: fanout.fanout_steps,
            duration_ms: fanout.fanout_duration_ms,
            grace_secs: fanout.fanout_grace_secs,
        };
        eprintln!(
            "reeltime-bench: holding; fan-out over {} users x {} tabs",
            args.users, args.tabs
        );
        let result = fanout_scenario("fanout", &args, None).await;
        fanout_outcome = Some((result, server_sample(common)?, watched(common)?));
    }

    pool.broadcast(&job::Command::Release).await?;
    let done = dones(pool.gather().await?)?;
    pool.finish().await;

    let mut hist = Hist::default();
    let mut errors = BTreeMap::new();
    let mut connected = 0;
    let mut connected_per_node = Vec::new();
    let mut failed = 0;
    let mut refreshed = 0;
    let mut end = t0;
    let mut client_cpu = 0.0;
    for report in &phase {
        hist.merge(&Hist::from_wire(&report.connect_hist));
        merge_errors(&mut errors, &report.errors);
        connected += report.connected;
        job::add_per_node(&mut connected_per_node, &report.connected_per_node);
        failed += report.failed;
        refreshed += report.refreshed;
        end = end.max(report.end_micros);
        client_cpu += report.cpu_secs;
    }
    let mut dropped = 0;
    let mut dropped_per_node = Vec::new();
    let mut closes = BTreeMap::new();
    for report in &done {
        dropped += report.dropped;
        job::add_per_node(&mut dropped_per_node, &report.dropped_per_node);
        merge_errors(&mut closes, &report.closes);
    }
    let secs = (end - t0) as f64 / 1e6;
    let latency = hist.summary();
    let mut metrics = BTreeMap::new();
    metrics.insert("sockets_connected".into(), connected as f64);
    metrics.insert("connect_failures".into(), failed as f64);
    if refresh_once {
        metrics.insert("sockets_refreshed".into(), refreshed as f64);
    }
    metrics.insert("connect_secs".into(), secs);
    metrics.insert("connects_per_sec".into(), connected as f64 / secs.max(1e-9));
    metrics.insert("connect_p50_ms".into(), latency.p50_ms);
    metrics.insert("connect_p99_ms".into(), latency.p99_ms);
    metrics.insert("connect_max_ms".into(), latency.max_ms);
    metrics.insert("client_cpu_secs".into(), client_cpu);
    if let (Some(before), Some(after)) = (total(&before), total(&after_connect)) {
        let cpu = after.cpu_secs - before.cpu_secs;
        metrics.insert("server_cpu_secs".into(), cpu);
        metrics.insert(
            "server_cpu_us_per_connect".into(),
            cpu * 1e6 / connected.max(1) as f64,
        );
    }
    if name == "hold" {
        metrics.insert("sockets_dropped".into(), dropped as f64);
        if let (Some(before), Some(after)) = (total(&before), total(&after_hold)) {
            let grown = after.rss_kib as f64 - before.rss_kib as f64;
            metrics.insert(
                "server_rss_before_mib".into(),
                before.rss_kib as f64 / 1024.0,
            );
            metrics.insert("server_rss_after_mib".into(), after.rss_kib as f64 / 1024.0);
            metrics.insert("rss_per_socket_kib".into(), grown / connected.max(1) as f64);
            metrics.insert("server_fds".into(), after.fds as f64);
            let peak = samples
                .iter()
                .map(|s| s.rss_kib)
                .max()
                .unwrap_or(after.rss_kib);
            metrics.insert("server_rss_peak_mib".into(), peak as f64 / 1024.0);
        }
        watched_metrics(&mut metrics, &watched_held, "");
    } else {
        watched_metrics(&mut metrics, &watched(common)?, "");
    }

    let mut nodes = Vec::new();
    if let (Some(before), Some(cpu_end)) = (&before, &after_connect) {
        let mem_end = after_hold.as_ref().unwrap_or(cpu_end);
        nodes = PerNode {
            common,
            before,
            cpu_end,
            mem_end,
            peaks: &peaks,
            connected: &connected_per_node,
            dropped: if name == "hold" {
                &dropped_per_node
            } else {
                &[]
            },
        }
        .json();
    }
    if !nodes.is_empty() {
        metrics.insert("nodes".into(), nodes.len() as f64);
        let per_socket: Vec<f64> = nodes
            .iter()
            .filter_map(|node| node.get("rss_per_socket_kib").and_then(Value::as_f64))
            .collect();
        if name == "hold" && per_socket.len() == nodes.len() {
            let min = per_socket.iter().copied().fold(f64::INFINITY, f64::min);
            let max = per_socket.iter().copied().fold(0.0, f64::max);
            metrics.insert("rss_per_socket_kib_node_min".into(), min);
            metrics.insert("rss_per_socket_kib_node_max".into(), max);
        }
    }

    let mut details = json!({
        "connect_latency": latency,
        "errors": errors,
        "closes_while_held": closes,
        "server": server_json(total(&before), total(&after_hold).or(total(&after_connect))),
        "server_samples": samples,
    });
    if !nodes.is_empty() {
        details["nodes"] = json!(nodes);
        details["connected_per_url"] = json!(connected_per_node);
    }
    if !common.watch.is_empty() {
        details["watched"] = json!({"before": watched_before, "held": watched_held});
    }
    if let Some((result, after_fanout, watched_fanout)) = fanout_outcome {
        match result {
            Ok(fanout) => {
                for (key, value) in &fanout.metrics {
                    metrics.insert(format!("fanout_{key}"), *value);
                }
                details["fanout"] = json!({
                    "params": fanout.params,
                    "metrics": fanout.metrics,
                    "details": fanout.details,
                });
            }
            Err(err) => {
                metrics.insert("fanout_failed".into(), 1.0);
                details["fanout_error"] = json!(format!("{err:#}"));
            }
        }
        if let Some(after) = total(&after_fanout) {
            metrics.insert(
                "server_rss_after_fanout_mib".into(),
                after.rss_kib as f64 / 1024.0,
            );
        }
        watched_metrics(&mut metrics, &watched_fanout, "_after_fanout");
        if !common.watch.is_empty() {
            details["watched"]["after_fanout"] = json!(watched_fanout);
        }
    }
    Ok(Report {
        scenario: name.to_string(),
        label: common.label.clone(),
        params: json!({
            "scenario": params,
            "procs": procs,
            "connect_concurrency": common.connect_concurrency,
            "source_ips": common.source_ips,
            "setup_secs": setup,
        }),
        metrics,
        details,
    })
}

async fn fanout_scenario(
    name: &str,
    args: &FanoutArgs,
    churn: Option<ChurnJob>,
) -> anyhow::Result<Report> {
    let common = &args.common;
    let procs = common.procs.max(1).min(args.users.max(1));
    let mut common_for_jobs = common.clone();
    common_for_jobs.procs = procs;
    let jobs = base_jobs(&common_for_jobs, |worker| {
        let (first_user, end_user) = share(args.users, procs, worker);
        let (first_import, end_import) = share(args.imports, procs, worker);
        let imports = end_import - first_import;
        Scenario::Fanout(FanoutJob {
            first_user,
            end_user,
            tabs: args.tabs.max(1),
            imports,
            first_import,
            rate: args.rate * imports as f64 / args.imports.max(1) as f64,
            steps: args.steps,
            duration_ms: args.duration_ms,
            grace_secs: args.grace_secs,
            churn: churn.clone(),
        })
    })?;
    let timeout = Duration::from_secs(common.phase_timeout_secs)
        + Duration::from_secs_f64(args.imports as f64 / args.rate.max(0.001))
        + Duration::from_millis(args.duration_ms)
        + Duration::from_secs(args.grace_secs);
    let mut pool = Pool::start(jobs, timeout).await?;
    let setup = setup_secs(&pool.gather().await?)?;

    let before_nodes = server_sample(common)?;
    let before = total(&before_nodes);
    let t0 = now_micros() + 300_000;
    pool.broadcast(&job::Command::Go { t0_micros: t0 }).await?;
    let phase = phases(pool.gather().await?)?;
    let after_nodes = server_sample(common)?;
    let after = total(&after_nodes);
    let watched_after = watched(common)?;
    pool.broadcast(&job::Command::Release).await?;
    let _ = dones(pool.gather().await?)?;
    pool.finish().await;

    let mut latency = Hist::default();
    let mut reconnect = Hist::default();
    let mut refresh = Hist::default();
    let mut bins: Vec<u64> = Vec::new();
    let mut errors = BTreeMap::new();
    let mut churn_errors = BTreeMap::new();
    let mut totals = BTreeMap::<&str, f64>::new();
    let mut last_post = t0;
    let mut end = t0;
    let mut client_cpu = 0.0;
    let mut connected_per_node = Vec::new();
    for report in &phase {
        let Some(fanout) = &report.fanout else {
            bail!("a worker sent no fanout report");
        };
        job::add_per_node(&mut connected_per_node, &report.connected_per_node);
        latency.merge(&Hist::from_wire(&fanout.latency));
        for (i, count) in fanout.bins.iter().enumerate() {
            if bins.len() <= i {
                bins.resize(i + 1, 0);
            }
            bins[i] += count;
        }
        merge_errors(&mut errors, &report.errors);
        let mut add = |key: &'static str, value: f64| *totals.entry(key).or_default() += value;
        add("imports_created", fanout.imports_created as f64);
        add("post_errors", fanout.post_errors as f64);
        add("messages", fanout.messages as f64);
        add("churn_messages", fanout.churn_messages as f64);
        add("wrong_user", fanout.wrong_user as f64);
        add("lost", fanout.lost as f64);
        add("unfinished", fanout.unfinished as f64);
        add("out_of_order", fanout.out_of_order as f64);
        add("negative_latency", fanout.negative_latency as f64);
        add("stable_sockets", fanout.stable_sockets as f64);
        add("churn_sockets", fanout.churn_sockets as f64);
        add(
            "unexpected_closes",
            fanout.closes.values().sum::<u64>() as f64,
        );
        if let Some(churn) = &fanout.churn {
            add("reconnects", churn.reconnects as f64);
            add("refreshes", churn.refreshes as f64);
            add("churn_failures", churn.failures as f64);
            reconnect.merge(&Hist::from_wire(&churn.reconnect_hist));
            refresh.merge(&Hist::from_wire(&churn.refresh_hist));
            merge_errors(&mut churn_errors, &churn.errors);
        }
        last_post = last_post.max(fanout.last_post_micros);
        end = end.max(report.end_micros);
        client_cpu += report.cpu_secs;
    }
    let total = |key: &str| totals.get(key).copied().unwrap_or(0.0);
    let secs = (end - t0) as f64 / 1e6;
    let messages = total("messages");

    // Steady state: from when the first imports could have finished (the
    // population of running imports is full) until the last was created.
    let bin_secs = BIN_MICROS as f64 / 1e6;
    let steady_from = ((args.duration_ms as f64 / 1000.0 + 0.5) / bin_secs).ceil() as usize;
    let steady_to = (((last_post - t0) as f64 / 1e6) / bin_secs).floor() as usize;
    let steady = if steady_to > steady_from + 10 && steady_to <= bins.len() {
        let sum: u64 = bins[steady_from..steady_to].iter().sum();
        Some(sum as f64 / ((steady_to - steady_from) as f64 * bin_secs))
    } else {
        None
    };
    let peak_1s = bins
        .windows((1.0 / bin_secs) as usize)
        .map(|w| w.iter().sum::<u64>())
        .max()
        .unwrap_or(0) as f64;

    let summary = latency.summary();
    let mut metrics = BTreeMap::new();
    for key in [
        "imports_created",
        "post_errors",
        "messages",
        "wrong_user",
        "lost",
        "unfinished",
        "out_of_order",
        "negative_latency",
        "stable_sockets",
        "unexpected_closes",
    ] {
        metrics.insert(key.to_string(), total(key));
    }
    // 1 when every measured socket got every final state before the
    // deadline; 0 means the server was still behind (overload) and `lost`
    // counts states still queued rather than proven lost.
    metrics.insert(
        "drained".into(),
        if total("undrained_workers") == 0.0 {
            1.0
        } else {
            0.0
        },
    );
    metrics.insert("run_secs".into(), secs);
    metrics.insert("msgs_per_sec".into(), messages / secs.max(1e-9));
    if let Some(steady) = steady {
        metrics.insert("msgs_per_sec_steady".into(), steady);
    }
    metrics.insert("msgs_per_sec_peak_1s".into(), peak_1s);
    // What the server was asked to deliver: every change of every import,
    // to each measured tab of its user (the observed changes per import).
    let imports = total("imports_created");
    if imports > 0.0 && total("stable_sockets") > 0.0 {
        let tabs_measured = total("stable_sockets") / args.users.max(1) as f64;
        let per_import = messages / (imports * tabs_measured);
        metrics.insert("messages_per_import_per_tab".into(), per_import);
        metrics.insert(
            "offered_msgs_per_sec".into(),
            args.rate * per_import * tabs_measured,
        );
    }
    metrics.insert("latency_p50_ms".into(), summary.p50_ms);
    metrics.insert("latency_p90_ms".into(), summary.p90_ms);
    metrics.insert("latency_p99_ms".into(), summary.p99_ms);
    metrics.insert("latency_p999_ms".into(), summary.p999_ms);
    metrics.insert("latency_max_ms".into(), summary.max_ms);
    metrics.insert("client_cpu_secs".into(), client_cpu);
    if let (Some(before), Some(after)) = (before, after) {
        let cpu = after.cpu_secs - before.cpu_secs;
        metrics.insert("server_cpu_secs".into(), cpu);
        let all_messages = messages + total("churn_messages");
        metrics.insert(
            "server_cpu_us_per_msg".into(),
            cpu * 1e6 / all_messages.max(1.0),
        );
        metrics.insert("server_rss_mib".into(), after.rss_kib as f64 / 1024.0);
    }
    if churn.is_some() {
        metrics.insert("churn_sockets".into(), total("churn_sockets"));
        metrics.insert(
            "reconnects_per_sec".into(),
            total("reconnects") / secs.max(1e-9),
        );
        metrics.insert(
            "refreshes_per_sec".into(),
            total("refreshes") / secs.max(1e-9),
        );
        metrics.insert("churn_failures".into(), total("churn_failures"));
        let reconnect = reconnect.summary();
        let refresh = refresh.summary();
        metrics.insert("reconnect_p50_ms".into(), reconnect.p50_ms);
        metrics.insert("reconnect_p99_ms".into(), reconnect.p99_ms);
        if refresh.count > 0 {
            metrics.insert("refresh_p50_ms".into(), refresh.p50_ms);
            metrics.insert("refresh_p99_ms".into(), refresh.p99_ms);
        }
    }
    watched_metrics(&mut metrics, &watched_after, "");
    let mut details = json!({
        "latency": summary,
        "errors": errors,
        "churn_errors": churn_errors,
        "msgs_per_100ms": bins,
        "server": server_json(before, after),
    });
    if let (Some(before), Some(after)) = (&before_nodes, &after_nodes) {
        let nodes = PerNode {
            common,
            before,
            cpu_end: after,
            mem_end: after,
            peaks: &[],
            connected: &connected_per_node,
            dropped: &[],
        }
        .json();
        if !nodes.is_empty() {
            metrics.insert("nodes".into(), nodes.len() as f64);
            details["nodes"] = json!(nodes);
        }
    }
    if !common.watch.is_empty() {
        details["watched"] = json!(watched_after);
    }
    Ok(Report {
        scenario: name.to_string(),
        label: common.label.clone(),
        params: json!({
            "users": args.users,
            "tabs": args.tabs,
            "imports": args.imports,
            "rate": args.rate,
            "steps": args.steps,
            "duration_ms": args.duration_ms,
            "procs": procs,
            "churn": churn,
            "setup_secs": setup,
        }),
        metrics,
        details,
    })
}
