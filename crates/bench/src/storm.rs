//! `reeltime-bench storm`: reconnect storms across the nodes of a cluster.
//!
//! Why: the moment that hurts in production is not steady state but every
//! client coming back at once, after a node crashed or all of them were
//! restarted. This holds sockets on every node, with clients that behave
//! like the web client's `ProgressClient` when their socket drops, then
//! kills one node with SIGKILL (a supervisor starts it again) and stops and
//! starts all of them, and measures how long the clients take to be back
//! with their snapshot, what that costs the nodes and the database, and
//! whether every client ends with the final state of the imports that
//! finished meanwhile.
//!
//! The client's reconnect rules are `ProgressClient`'s
//! (`web/packages/client/src/ProgressClient.ts`, `backoff.ts`): after a
//! drop, wait `floor(random * min(cap, base * 2^failures))` ms (full
//! jitter; base 500 ms, cap 30 s: `DEFAULT_BACKOFF`), count a failure, try
//! again; a connection that stayed up `healthyAfterMs` (10 s) resets the
//! failures; an attempt with no `ready` within 15 s fails. A reconnect uses
//! another token than the first connect (minted beforehand, so the client's
//! RSA signing is not part of what is measured).
//!
//! The load balancer is simulated in each client process (one balancer
//! instance per process, like several nginx instances in front of the
//! same upstreams): each client has the node list and ranks the nodes by
//! rendezvous hashing of its socket number (nginx `hash ... consistent`:
//! a client goes back to the same node, and a dead node's clients spread
//! over all the others); a node whose TCP connect is refused is skipped,
//! the next one in the client's order is tried within the same attempt
//! (`proxy_next_upstream error timeout`), and it is left out for
//! `--lb-fail-timeout-ms` (`max_fails=1 fail_timeout=...`); with every
//! node left out the attempt fails at once (nginx's "no live upstreams",
//! a 502) and the client backs off.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures_util::StreamExt;
use reeltime_protocol::{Import, ImportPage};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{BufReader, Lines, Stdin};
use tokio_util::sync::CancellationToken;

use crate::cli::Common;
use crate::conn::{self, Incoming, Target, Ws};
use crate::coord::{Pool, base_jobs, merge_errors, share};
use crate::hist::{Hist, WireHist};
use crate::job::{Event, Job, Scenario, count_error};
use crate::procfs;
use crate::tokens::Tokens;
use crate::worker::emit;

/// `ProgressClient`'s `DEFAULT_BACKOFF.baseMs` (web/packages/client/src/backoff.ts).
pub const BACKOFF_BASE_MS: u64 = 500;
/// `ProgressClient`'s `DEFAULT_BACKOFF.capMs`.
pub const BACKOFF_CAP_MS: u64 = 30_000;
/// `ProgressClient`'s `healthyAfterMs` default: a connection up this long resets the backoff.
pub const HEALTHY_AFTER_MS: u64 = 10_000;
/// `ProgressClient`'s attempt timeout: no `ready` within this fails the attempt.
pub const READY_TIMEOUT_MS: u64 = 15_000;

/// Command line of `reeltime-bench storm`.
#[derive(Debug, Clone, Args)]
pub struct StormArgs {
    #[command(flatten)]
    pub common: Common,
    /// Sockets to hold across the nodes (consecutive `--tabs` sockets share a user).
    #[arg(long, default_value_t = 100_000)]
    pub sockets: usize,
    /// Sockets per user.
    #[arg(long, default_value_t = 4)]
    pub tabs: usize,
    /// A shell script per node, in `--url` order, that starts that node in the
    /// background-free way (`exec reeltime`, output to its log); the storm runs it
    /// with `sh` to start the node again.
    #[arg(long = "node-cmd", value_name = "SCRIPT", value_delimiter = ',')]
    pub node_cmds: Vec<PathBuf>,
    /// The storms to run, in order: `kill` (SIGKILL one node, a supervisor starts
    /// it again after --restart-delay-ms) and `restart` (SIGTERM every node, wait
    /// until all have exited, start all).
    #[arg(long, value_delimiter = ',', default_value = "kill,restart")]
    pub storms: Vec<String>,
    /// The node the `kill` storm kills (0-based, in `--url` order).
    #[arg(long, default_value_t = 0)]
    pub kill_node: usize,
    /// How long after the SIGKILL the supervisor starts the node again.
    #[arg(long, default_value_t = 1_000)]
    pub restart_delay_ms: u64,
    /// The balancer leaves a node whose connect failed out for this long.
    #[arg(long, default_value_t = 2_000)]
    pub lb_fail_timeout_ms: u64,
    /// First reconnection delay bound (ProgressClient: 500).
    #[arg(long, default_value_t = BACKOFF_BASE_MS)]
    pub backoff_base_ms: u64,
    /// Largest reconnection delay (ProgressClient: 30,000).
    #[arg(long, default_value_t = BACKOFF_CAP_MS)]
    pub backoff_cap_ms: u64,
    /// Synthetic imports created (one per user, on the first users of each
    /// client process) just before each storm, to finish during it.
    #[arg(long, default_value_t = 200)]
    pub storm_imports: usize,
    /// How long each of those imports runs.
    #[arg(long, default_value_t = 8_000)]
    pub storm_import_ms: u64,
    /// Progress changes per import.
    #[arg(long, default_value_t = 20)]
    pub storm_import_steps: u32,
    /// How long to wait for every client to be back, per storm.
    #[arg(long, default_value_t = 180)]
    pub storm_timeout_secs: u64,
    /// The goal per storm, `kill=10,restart=60` (seconds until 100 % back).
    #[arg(long, default_value = "kill=10,restart=60")]
    pub goals: String,
    /// psql, to read pg_stat_database before and after each storm.
    #[arg(long)]
    pub psql: Option<PathBuf>,
    /// The database psql reads (postgres://...).
    #[arg(long)]
    pub pg_url: Option<String>,
    /// Fail (exit status 1) when a goal is missed or a final state is lost.
    #[arg(long)]
    pub strict: bool,
}

/// One worker's share of the storm.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StormJob {
    pub first_user: usize,
    pub end_user: usize,
    pub tabs: usize,
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    pub healthy_after_ms: u64,
    pub ready_timeout_ms: u64,
    pub lb_fail_timeout_ms: u64,
}

/// Coordinator to worker, after the job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum StormCommand {
    /// Connect every socket (from `t0_micros`), report `connected`.
    Go { t0_micros: i64 },
    /// Create this worker's share of `total` synthetic imports, one per user
    /// from its first user; report `imports`.
    Imports {
        total: usize,
        duration_ms: u64,
        steps: u32,
    },
    /// A storm starts now: count drops and returns from `t0_micros` on. No report.
    Arm { t0_micros: i64 },
    /// The disruption is over: report `collect` once every socket is back
    /// (and not before `settle_micros`), or at `deadline_micros`.
    Collect {
        settle_micros: i64,
        deadline_micros: i64,
    },
    /// Wait for the imports to end (REST) and every socket of their users to
    /// hold their final state; report `finals`.
    Finals { deadline_micros: i64 },
    /// Close everything, report `done`.
    Release,
}

/// A worker's answer to a storm command.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StormReport {
    pub kind: String,
    /// Sockets with a snapshot now.
    pub connected: usize,
    /// Sockets not connected now.
    pub down: usize,
    /// Sockets connected per node now (`--url` order).
    pub per_node: Vec<usize>,
    /// Connect phase: TCP connect to snapshot.
    pub connect_hist: WireHist,
    /// Drops since the storm's t0.
    pub dropped: u64,
    /// Time from t0 until each dropped socket had its snapshot again (µs).
    pub back_hist: WireHist,
    /// When the last one came back (µs since the epoch).
    pub last_back_micros: i64,
    pub attempts: u64,
    pub failed_attempts: u64,
    /// Why attempts failed, counted.
    pub errors: BTreeMap<String, u64>,
    /// Why sockets dropped, counted.
    pub closes: BTreeMap<String, u64>,
    pub imports_created: usize,
    /// (socket, import) pairs checked for the final state.
    pub checked: u64,
    /// ... of which the socket was back and did not hold the final version.
    pub lost: u64,
    /// ... of which the socket was not back when the wait ended, so could
    /// not hold it (counted apart: a socket not back is `not_back`, not a
    /// lost update).
    #[serde(default)]
    pub unchecked_not_back: u64,
    /// Imports seen on a socket of another user.
    pub wrong_user: u64,
    /// Imports not final when the wait ended.
    pub unfinished: u64,
    pub cpu_secs: f64,
}

// ------------------------------------------------------------------ worker

/// The balancer's view in one client process: when each node may be tried again.
struct Balancer {
    down_until: Vec<Option<Instant>>,
    fail_timeout: Duration,
}

impl Balancer {
    fn live(&mut self, node: usize) -> bool {
        match self.down_until[node] {
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                self.down_until[node] = None;
                true
            }
            None => true,
        }
    }

    fn failed(&mut self, node: usize) {
        self.down_until[node] = Some(Instant::now() + self.fail_timeout);
    }
}

/// Rendezvous ("highest random weight") order of the nodes for `key`.
pub fn node_order(key: u64, nodes: usize) -> Vec<usize> {
    let mut order: Vec<(u64, usize)> = (0..nodes)
        .map(|node| (splitmix(key ^ ((node as u64 + 1) << 40)), node))
        .collect();
    order.sort_unstable_by(|a, b| b.cmp(a));
    order.into_iter().map(|(_, node)| node).collect()
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// `ProgressClient`'s delay before retry number `failures` (0-based):
/// uniform in [0, min(cap, base * 2^failures)), `random` in [0, 1).
pub fn backoff_delay_ms(failures: u32, base_ms: u64, cap_ms: u64, random: f64) -> u64 {
    let ceiling = base_ms.saturating_mul(1u64 << failures.min(30)).min(cap_ms);
    (random * ceiling as f64).floor() as u64
}

/// What every socket task of a worker shares (one thread: no locks).
struct State {
    t0_micros: i64,
    down: usize,
    per_node: Vec<usize>,
    dropped: u64,
    back: Hist,
    last_back_micros: i64,
    attempts: u64,
    failed_attempts: u64,
    errors: BTreeMap<String, u64>,
    closes: BTreeMap<String, u64>,
    balancer: Balancer,
    /// Per local socket: import id → (highest version, final?).
    seen: Vec<HashMap<String, (u64, bool)>>,
    /// Per local socket: connected with its snapshot now.
    up: Vec<bool>,
}

impl State {
    fn apply(&mut self, socket: usize, id: &str, version: u64, is_final: bool) {
        let entry = self.seen[socket]
            .entry(id.to_string())
            .or_insert((0, false));
        if version > entry.0 {
            *entry = (version, is_final);
        }
    }
}

struct Client {
    job: Rc<Job>,
    storm: Rc<StormJob>,
    state: Rc<RefCell<State>>,
    /// This worker's socket number.
    local: usize,
    order: Vec<usize>,
    token: Rc<str>,
    rng: u64,
    stop: CancellationToken,
}

impl Client {
    fn random(&mut self) -> f64 {
        self.rng = splitmix(self.rng);
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Lives until `stop`: reads while connected, reconnects like ProgressClient.
    async fn run(mut self, mut ws: Option<(Ws, usize)>) {
        let mut failures: u32 = 0;
        loop {
            if let Some((socket, node)) = ws.take() {
                let served_at = Instant::now();
                let close = self.read(socket).await;
                let mut state = self.state.borrow_mut();
                state.per_node[node] -= 1;
                state.up[self.local] = false;
                let Some(close) = close else { return };
                state.down += 1;
                if state.t0_micros > 0 {
                    state.dropped += 1;
                }
                count_error(&mut state.closes, &close);
                drop(state);
                if served_at.elapsed() >= Duration::from_millis(self.storm.healthy_after_ms) {
                    failures = 0;
                }
            }
            // wait-retry, then an attempt.
            let random = self.random();
            let delay = backoff_delay_ms(
                failures,
                self.storm.backoff_base_ms,
                self.storm.backoff_cap_ms,
                random,
            );
            failures = failures.saturating_add(1);
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(delay)) => {}
            }
            match self.attempt().await {
                Ok((socket, node, snapshot)) => {
                    let now = conn::unix_micros_now();
                    let mut state = self.state.borrow_mut();
                    state.down -= 1;
                    state.per_node[node] += 1;
                    state.up[self.local] = true;
                    if state.t0_micros > 0 {
                        let since = (now - state.t0_micros).max(0) as u64;
                        state.back.record(since);
                        state.last_back_micros = state.last_back_micros.max(now);
                    }
                    for import in &snapshot {
                        state.apply(
                            self.local,
                            &import.id,
                            import.version,
                            import.status.is_final(),
                        );
                    }
                    drop(state);
                    ws = Some((socket, node));
                }
                Err(err) => {
                    let mut state = self.state.borrow_mut();
                    state.failed_attempts += 1;
                    count_error(&mut state.errors, &format!("{err:#}"));
                }
            }
        }
    }

    /// One attempt through the balancer: the first live node in this
    /// client's order that accepts the TCP connect gets the upgrade.
    async fn attempt(&self) -> anyhow::Result<(Ws, usize, Vec<Import>)> {
        self.state.borrow_mut().attempts += 1;
        let wait = Duration::from_millis(self.storm.ready_timeout_ms);
        let started = tokio::time::Instant::now();
        let source = source_ip(&self.job, self.local);
        for &node in &self.order {
            if !self.state.borrow_mut().balancer.live(node) {
                continue;
            }
            let target = &self.job.targets[node];
            let stream = match tcp_connect(target.addr, source).await {
                Ok(stream) => stream,
                Err(_) => {
                    self.state.borrow_mut().balancer.failed(node);
                    continue;
                }
            };
            let url = format!("{}?token={}", target.ws_url, self.token);
            let upgrade = async {
                let (ws, _) = tokio_tungstenite::client_async_with_config(
                    url,
                    stream,
                    Some(conn::ws_config()),
                )
                .await
                .map_err(|err| anyhow::anyhow!("websocket handshake: {err}"))?;
                let mut ws = conn::Ws::reeltime(ws);
                let (_, snapshot) = conn::await_ready(&mut ws, wait).await?;
                anyhow::Ok((ws, snapshot))
            };
            let (ws, snapshot) = tokio::time::timeout_at(started + wait, upgrade)
                .await
                .map_err(|_| anyhow::anyhow!("no ready within {wait:?}"))??;
            return Ok((ws, node, snapshot));
        }
        bail!("no live upstreams")
    }

    /// Reads until the socket ends (the close, as text) or `stop` (None).
    async fn read(&self, mut ws: Ws) -> Option<String> {
        loop {
            let frame = tokio::select! {
                biased;
                _ = self.stop.cancelled() => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                    return None;
                }
                frame = ws.next() => frame,
            };
            let outcome = conn::classify(frame, |incoming| match incoming {
                Incoming::Import(import) => {
                    self.state.borrow_mut().apply(
                        self.local,
                        &import.id,
                        import.version,
                        import.status.is_final(),
                    );
                    None
                }
                Incoming::Closed(code, reason) => Some(format!("closed {code} {reason}")),
                Incoming::Other(_) | Incoming::Control => None,
            });
            match outcome {
                Ok(None) => return Some("dropped without a close frame".into()),
                Ok(Some(Some(close))) => return Some(close),
                Ok(Some(None)) => {}
                Err(err) => return Some(format!("{err:#}")),
            }
        }
    }
}

/// [`conn::tcp_connect`] within a balancer's connect timeout (on loopback
/// a dead node refuses at once).
async fn tcp_connect(
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
) -> anyhow::Result<tokio::net::TcpStream> {
    tokio::time::timeout(Duration::from_secs(5), conn::tcp_connect(addr, source))
        .await
        .map_err(|_| anyhow::anyhow!("TCP connect to {addr} timed out"))?
}

fn source_ip(job: &Job, n: usize) -> Option<std::net::IpAddr> {
    if job.source_ips.is_empty() {
        None
    } else {
        Some(job.source_ips[n % job.source_ips.len()])
    }
}

fn micros_until(t_micros: i64) -> Duration {
    Duration::from_micros(u64::try_from(t_micros - conn::unix_micros_now()).unwrap_or(0))
}

fn report(kind: &str, state: &State) -> StormReport {
    StormReport {
        kind: kind.to_string(),
        connected: state.per_node.iter().sum(),
        down: state.down,
        per_node: state.per_node.clone(),
        dropped: state.dropped,
        back_hist: state.back.to_wire(),
        last_back_micros: state.last_back_micros,
        attempts: state.attempts,
        failed_attempts: state.failed_attempts,
        errors: state.errors.clone(),
        closes: state.closes.clone(),
        ..StormReport::default()
    }
}

/// The worker side: runs until `release`.
pub async fn worker(
    job: &Job,
    tokens: &Tokens,
    http: &reqwest::Client,
    mut lines: Lines<BufReader<Stdin>>,
    storm: StormJob,
) -> anyhow::Result<()> {
    let setup_started = Instant::now();
    let tabs = storm.tabs.max(1);
    let users: Vec<usize> = (storm.first_user..storm.end_user).collect();
    let subs: Vec<String> = users
        .iter()
        .map(|u| format!("{}-u{u}", job.run_id))
        .collect();
    // Two tokens per user: the first connect's, and the one reconnects use.
    let minted = tokens.mint_all(&subs, job.token_ttl, 2).await?;
    let total = users.len() * tabs;
    emit(&Event::Setup {
        sockets: total,
        setup_secs: setup_started.elapsed().as_secs_f64(),
    });
    let job = Rc::new(job.clone());
    let storm = Rc::new(storm);
    let nodes = job.targets.len();
    let state = Rc::new(RefCell::new(State {
        t0_micros: 0,
        down: 0,
        per_node: vec![0; nodes],
        dropped: 0,
        back: Hist::default(),
        last_back_micros: 0,
        attempts: 0,
        failed_attempts: 0,
        errors: BTreeMap::new(),
        closes: BTreeMap::new(),
        balancer: Balancer {
            down_until: vec![None; nodes],
            fail_timeout: Duration::from_millis(storm.lb_fail_timeout_ms),
        },
        seen: vec![HashMap::new(); total],
        up: vec![false; total],
    }));
    let stop = CancellationToken::new();
    let mut tasks = Vec::with_capacity(total);
    // Import ids created per local user.
    let mut created: HashMap<usize, Vec<String>> = HashMap::new();
    let first_socket = storm.first_user * tabs;
    let client = |local: usize, token: Rc<str>| Client {
        job: Rc::clone(&job),
        storm: Rc::clone(&storm),
        state: Rc::clone(&state),
        local,
        order: node_order((first_socket + local) as u64, nodes),
        token,
        rng: splitmix(((first_socket + local) as u64) ^ 0x5EED),
        stop: stop.clone(),
    };
    loop {
        let line = lines
            .next_line()
            .await
            .context("reading from the coordinator")?
            .context("the coordinator went away")?;
        let command: StormCommand =
            serde_json::from_str(&line).with_context(|| format!("bad command {line}"))?;
        match command {
            StormCommand::Go { t0_micros } => {
                tokio::time::sleep(micros_until(t0_micros)).await;
                let cpu_before = procfs::self_cpu_secs();
                let mut hist = Hist::default();
                let mut failed = Vec::new();
                let attempts = (0..total).map(|local| {
                    let first = client(local, Rc::from(minted[local / tabs][0].as_str()));
                    async move {
                        let started = Instant::now();
                        let result = first.attempt().await;
                        (local, started.elapsed(), result)
                    }
                });
                let mut results = futures_util::stream::iter(attempts)
                    .buffer_unordered(job.connect_concurrency.max(1));
                while let Some((local, took, result)) = results.next().await {
                    let reconnecting = client(local, Rc::from(minted[local / tabs][1].as_str()));
                    match result {
                        Ok((ws, node, snapshot)) => {
                            hist.record(took.as_micros() as u64);
                            let mut st = state.borrow_mut();
                            st.per_node[node] += 1;
                            st.up[local] = true;
                            for import in &snapshot {
                                st.apply(
                                    local,
                                    &import.id,
                                    import.version,
                                    import.status.is_final(),
                                );
                            }
                            drop(st);
                            tasks
                                .push(tokio::task::spawn_local(reconnecting.run(Some((ws, node)))));
                        }
                        Err(err) => {
                            let mut st = state.borrow_mut();
                            st.down += 1;
                            st.failed_attempts += 1;
                            count_error(&mut st.errors, &format!("{err:#}"));
                            drop(st);
                            failed.push(local);
                            tasks.push(tokio::task::spawn_local(reconnecting.run(None)));
                        }
                    }
                }
                let mut out = report("connected", &state.borrow());
                out.connect_hist = hist.to_wire();
                out.cpu_secs = procfs::self_cpu_secs() - cpu_before;
                emit(&Event::Storm(Box::new(out)));
            }
            StormCommand::Imports {
                total: all,
                duration_ms,
                steps,
            } => {
                let (from, to) = share(all, job.procs, job.worker);
                let count = to - from;
                let source_url = format!("synthetic:?duration_ms={duration_ms}&steps={steps}");
                let mut out = StormReport {
                    kind: "imports".into(),
                    ..StormReport::default()
                };
                for (user, of_user) in minted.iter().enumerate().take(count.min(users.len())) {
                    let token = &of_user[1];
                    let order = node_order(user as u64, nodes);
                    let mut last_error = None;
                    for node in order {
                        let url = format!("{}/api/imports", job.targets[node].http_base);
                        let result = async {
                            let response = http
                                .post(&url)
                                .bearer_auth(token)
                                .json(&json!({"url": source_url, "title": format!("storm {user}")}))
                                .send()
                                .await
                                .context("POST /api/imports")?;
                            let status = response.status();
                            if status != reqwest::StatusCode::CREATED {
                                bail!("POST /api/imports answered {status}");
                            }
                            let import: Import = response.json().await.context("import body")?;
                            anyhow::Ok(import.id)
                        }
                        .await;
                        match result {
                            Ok(id) => {
                                created.entry(user).or_default().push(id);
                                out.imports_created += 1;
                                last_error = None;
                                break;
                            }
                            Err(err) => last_error = Some(err),
                        }
                    }
                    if let Some(err) = last_error {
                        count_error(&mut out.errors, &format!("{err:#}"));
                    }
                }
                emit(&Event::Storm(Box::new(out)));
            }
            StormCommand::Arm { t0_micros } => {
                let mut st = state.borrow_mut();
                st.t0_micros = t0_micros;
                st.dropped = 0;
                st.back = Hist::default();
                st.last_back_micros = 0;
                st.attempts = 0;
                st.failed_attempts = 0;
                st.errors.clear();
                st.closes.clear();
            }
            StormCommand::Collect {
                settle_micros,
                deadline_micros,
            } => {
                let cpu_before = procfs::self_cpu_secs();
                tokio::time::sleep(micros_until(settle_micros)).await;
                while state.borrow().down > 0 && conn::unix_micros_now() < deadline_micros {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let mut out = report("collect", &state.borrow());
                out.cpu_secs = procfs::self_cpu_secs() - cpu_before;
                state.borrow_mut().t0_micros = 0;
                emit(&Event::Storm(Box::new(out)));
            }
            StormCommand::Finals { deadline_micros } => {
                let out =
                    finals(&job, http, &minted, &created, &state, tabs, deadline_micros).await;
                emit(&Event::Storm(Box::new(out)));
            }
            StormCommand::Release => {
                stop.cancel();
                for task in tasks.drain(..) {
                    let _ = task.await;
                }
                emit(&Event::Done(Default::default()));
                return Ok(());
            }
        }
    }
}

/// The server's final word on each created import (REST), then every socket
/// of its user checked against it, waiting for stragglers until the deadline.
#[allow(clippy::too_many_arguments)]
async fn finals(
    job: &Job,
    http: &reqwest::Client,
    minted: &[Vec<String>],
    created: &HashMap<usize, Vec<String>>,
    state: &Rc<RefCell<State>>,
    tabs: usize,
    deadline_micros: i64,
) -> StormReport {
    let mut out = StormReport {
        kind: "finals".into(),
        imports_created: created.values().map(Vec::len).sum(),
        ..StormReport::default()
    };
    let nodes = job.targets.len();
    // user → id → final version
    let mut finals: HashMap<usize, HashMap<String, u64>> = HashMap::new();
    loop {
        let mut unfinished = 0;
        for (user, ids) in created {
            let want: Vec<&String> = ids
                .iter()
                .filter(|id| !finals.get(user).is_some_and(|f| f.contains_key(*id)))
                .collect();
            if want.is_empty() {
                continue;
            }
            let mut listed = None;
            for node in node_order(*user as u64, nodes) {
                let url = format!("{}/api/imports?limit=200", job.targets[node].http_base);
                let page = async {
                    let response = http.get(&url).bearer_auth(&minted[*user][1]).send().await?;
                    if !response.status().is_success() {
                        bail!("GET {url} answered {}", response.status());
                    }
                    anyhow::Ok(response.json::<ImportPage>().await?)
                }
                .await;
                match page {
                    Ok(page) => {
                        listed = Some(page);
                        break;
                    }
                    Err(err) => count_error(&mut out.errors, &format!("{err:#}")),
                }
            }
            let Some(page) = listed else {
                unfinished += want.len();
                continue;
            };
            for id in want {
                match page.imports.iter().find(|import| &import.id == id) {
                    Some(import) if import.status.is_final() => {
                        finals
                            .entry(*user)
                            .or_default()
                            .insert(id.clone(), import.version);
                    }
                    _ => unfinished += 1,
                }
            }
        }
        out.unfinished = unfinished as u64;
        if unfinished == 0 || conn::unix_micros_now() >= deadline_micros {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Every socket of every user with imports must hold each final version.
    loop {
        let (lost, not_back, checked) = {
            let st = state.borrow();
            let mut lost = 0;
            let mut not_back = 0;
            let mut checked = 0;
            for (user, versions) in &finals {
                for tab in 0..tabs {
                    let socket = user * tabs + tab;
                    let seen = &st.seen[socket];
                    for (id, version) in versions {
                        checked += 1;
                        if seen.get(id) == Some(&(*version, true)) {
                            continue;
                        }
                        if st.up[socket] {
                            lost += 1;
                        } else {
                            not_back += 1;
                        }
                    }
                }
            }
            (lost, not_back, checked)
        };
        out.checked = checked;
        out.lost = lost;
        out.unchecked_not_back = not_back;
        // A socket not back yet may still come back and catch up: wait for it too.
        if lost + not_back == 0 || conn::unix_micros_now() >= deadline_micros {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Wrong user: an import on a socket whose user did not create it.
    let st = state.borrow();
    for (local, seen) in st.seen.iter().enumerate() {
        let mine = created.get(&(local / tabs));
        out.wrong_user += seen
            .keys()
            .filter(|id| !mine.is_some_and(|ids| ids.contains(*id)))
            .count() as u64;
    }
    out.connected = st.per_node.iter().sum();
    out.down = st.down;
    out.per_node = st.per_node.clone();
    out
}

// ------------------------------------------------------------- coordinator

/// The nodes the storm kills and starts: their scripts and current pids.
struct Nodes {
    pids: Vec<u32>,
    cmds: Vec<PathBuf>,
    targets: Vec<Target>,
}

/// Whether `pid` runs (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{name} {pid} failed");
    }
    Ok(())
}

impl Nodes {
    /// Starts node `i` with its script; returns when /healthz answers.
    async fn start(&mut self, i: usize, http: &reqwest::Client) -> anyhow::Result<()> {
        self.spawn(i)?;
        self.healthy(i, http).await
    }

    /// Runs node `i`'s script (which execs the server) and records its pid.
    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let child = tokio::process::Command::new("sh")
            .arg(&self.cmds[i])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(false)
            .spawn()
            .with_context(|| format!("starting node {} ({})", i + 1, self.cmds[i].display()))?;
        let pid = child.id().context("the node's pid")?;
        // The script execs the server: this pid is the node's.
        self.pids[i] = pid;
        // Reap it whenever it ends, so it never lingers as a zombie.
        tokio::spawn(async move {
            let mut child = child;
            let _ = child.wait().await;
        });
        Ok(())
    }

    /// Waits until node `i` answers /healthz (60 s at most).
    async fn healthy(&self, i: usize, http: &reqwest::Client) -> anyhow::Result<()> {
        let pid = self.pids[i];
        let url = format!("{}/healthz", self.targets[i].http_base);
        let started = Instant::now();
        loop {
            if !alive(pid) {
                bail!("node {} exited at start (see its log)", i + 1);
            }
            if let Ok(response) = http.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("node {} did not answer {url} within 60 s", i + 1);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// CPU and descriptors of every node process, sampled every 100 ms, so the
/// CPU of a node that exits is known up to its last 100 ms.
#[derive(Default)]
struct Sampler {
    /// pid → last CPU seconds seen.
    cpu: HashMap<u32, f64>,
    /// Highest descriptor count per node slot.
    peak_fds: Vec<u64>,
}

fn sample_into(sampler: &Mutex<Sampler>, pids: &[u32]) {
    let samples: Vec<(usize, u32, Option<procfs::ProcSample>)> = pids
        .iter()
        .enumerate()
        .map(|(i, pid)| (i, *pid, procfs::sample(*pid).ok()))
        .collect();
    let mut sampler = sampler.lock().unwrap_or_else(|p| p.into_inner());
    if sampler.peak_fds.len() < pids.len() {
        sampler.peak_fds.resize(pids.len(), 0);
    }
    for (i, pid, sample) in samples {
        if let Some(sample) = sample {
            sampler.cpu.insert(pid, sample.cpu_secs);
            sampler.peak_fds[i] = sampler.peak_fds[i].max(sample.fds);
        }
    }
}

/// CPU seconds of PostgreSQL: the postmaster, its live children, and the
/// children it has reaped (cutime + cstime), so backends that ended count.
fn postgres_cpu(postmaster: u32) -> Option<f64> {
    let fields = |pid: u32| -> Option<Vec<f64>> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (_, rest) = stat.rsplit_once(')')?;
        Some(
            rest.split_whitespace()
                .map(|v| v.parse().unwrap_or(0.0))
                .collect(),
        )
    };
    let own = fields(postmaster)?;
    // After ")": state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    let mut ticks = own.get(11..15)?.iter().sum::<f64>();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(f) = fields(pid)
            && f.get(1).copied() == Some(postmaster as f64)
        {
            ticks += f.get(11..13).map(|t| t.iter().sum::<f64>()).unwrap_or(0.0);
        }
    }
    Some(ticks / 100.0)
}

const PG_STATS: &str = "select xact_commit, xact_rollback, tup_returned, tup_fetched, \
    tup_inserted, tup_updated, tup_deleted, blks_hit, blks_read from pg_stat_database \
    where datname = current_database()";
const PG_STAT_NAMES: [&str; 9] = [
    "xact_commit",
    "xact_rollback",
    "tup_returned",
    "tup_fetched",
    "tup_inserted",
    "tup_updated",
    "tup_deleted",
    "blks_hit",
    "blks_read",
];

async fn pg_stats(args: &StormArgs) -> Option<Vec<f64>> {
    let (psql, url) = (args.psql.as_ref()?, args.pg_url.as_ref()?);
    let output = tokio::process::Command::new(psql)
        .arg(url)
        .args(["-AtX", "-F", " ", "-c", PG_STATS])
        .output()
        .await
        .ok()?;
    if !output.status.success() {
        eprintln!(
            "reeltime-bench: psql failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let values: Vec<f64> = text
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    (values.len() == PG_STAT_NAMES.len()).then_some(values)
}

fn storms_gather(events: Vec<Event>, kind: &str) -> anyhow::Result<Vec<StormReport>> {
    events
        .into_iter()
        .map(|event| match event {
            Event::Storm(report) if report.kind == kind => Ok(*report),
            other => bail!("expected a {kind} report, got {other:?}"),
        })
        .collect()
}

fn goal_secs(goals: &str, storm: &str) -> Option<f64> {
    goals.split(',').find_map(|pair| {
        let (name, secs) = pair.split_once('=')?;
        (name.trim() == storm)
            .then(|| secs.trim().parse().ok())
            .flatten()
    })
}

/// The coordinator: `reeltime-bench storm`.
pub async fn run(args: StormArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let procs = common.procs.max(1);
    let tabs = args.tabs.max(1);
    let users = args.sockets.div_ceil(tabs);
    if common.server_pids.len() != common.urls.len() || args.node_cmds.len() != common.urls.len() {
        bail!("give one --server-pid and one --node-cmd per --url, in the same order");
    }
    if args.kill_node >= common.urls.len() {
        bail!(
            "--kill-node {} but only {} nodes",
            args.kill_node,
            common.urls.len()
        );
    }
    let jobs = base_jobs(common, |worker| {
        let (first_user, end_user) = share(users, procs, worker);
        Scenario::Storm(StormJob {
            first_user,
            end_user,
            tabs,
            backoff_base_ms: args.backoff_base_ms,
            backoff_cap_ms: args.backoff_cap_ms,
            healthy_after_ms: HEALTHY_AFTER_MS,
            ready_timeout_ms: READY_TIMEOUT_MS,
            lb_fail_timeout_ms: args.lb_fail_timeout_ms,
        })
    })?;
    let targets = jobs[0].targets.clone();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("HTTP client")?;
    let mut nodes = Nodes {
        pids: common.server_pids.clone(),
        cmds: args.node_cmds.clone(),
        targets,
    };
    let postmaster = common
        .watch
        .iter()
        .find(|(label, _)| label == "postgres")
        .map(|(_, pid)| *pid);

    let timeout = Duration::from_secs(common.phase_timeout_secs);
    let mut pool = Pool::start(jobs, timeout).await?;
    let mut setup = 0.0f64;
    for event in pool.gather().await? {
        if let Event::Setup { setup_secs, .. } = event {
            setup = setup.max(setup_secs);
        }
    }

    // Connect everything.
    let before: Vec<procfs::ProcSample> = nodes
        .pids
        .iter()
        .map(|pid| procfs::sample(*pid))
        .collect::<anyhow::Result<_>>()?;
    let t0 = conn::unix_micros_now() + 200_000;
    eprintln!("reeltime-bench storm: connecting {} sockets", args.sockets);
    pool.broadcast(&StormCommand::Go { t0_micros: t0 }).await?;
    let connected = storms_gather(pool.gather().await?, "connected")?;
    let connect_end = conn::unix_micros_now();
    let after: Vec<procfs::ProcSample> = nodes
        .pids
        .iter()
        .map(|pid| procfs::sample(*pid))
        .collect::<anyhow::Result<_>>()?;
    let mut metrics = BTreeMap::new();
    let mut hist = Hist::default();
    let mut per_node = Vec::new();
    let mut connect_errors = BTreeMap::new();
    let mut connected_count = 0;
    for report in &connected {
        hist.merge(&Hist::from_wire(&report.connect_hist));
        crate::job::add_per_node(&mut per_node, &report.per_node);
        merge_errors(&mut connect_errors, &report.errors);
        connected_count += report.connected;
    }
    let secs = (connect_end - t0) as f64 / 1e6;
    let cpu: f64 = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.cpu_secs - b.cpu_secs)
        .sum();
    metrics.insert("sockets_connected".to_string(), connected_count as f64);
    metrics.insert(
        "connects_per_sec".into(),
        connected_count as f64 / secs.max(1e-9),
    );
    metrics.insert(
        "server_cpu_us_per_connect".into(),
        cpu * 1e6 / connected_count.max(1) as f64,
    );
    metrics.insert("connect_p99_ms".into(), hist.summary().p99_ms);
    let mut details = json!({
        "connect": {
            "per_node": per_node,
            "errors": connect_errors,
            "latency": hist.summary(),
        },
    });
    eprintln!("reeltime-bench storm: {connected_count} connected ({per_node:?} per node)");

    let sampler = Arc::new(Mutex::new(Sampler::default()));
    let pids_now = Arc::new(Mutex::new(nodes.pids.clone()));
    let sampling = CancellationToken::new();
    {
        let sampler = Arc::clone(&sampler);
        let pids_now = Arc::clone(&pids_now);
        let sampling = sampling.clone();
        tokio::spawn(async move {
            loop {
                let pids = pids_now.lock().unwrap_or_else(|p| p.into_inner()).clone();
                sample_into(&sampler, &pids);
                tokio::select! {
                    _ = sampling.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        });
    }

    let mut failed_goals = Vec::new();
    for storm in &args.storms {
        let storm = storm.trim();
        if storm != "kill" && storm != "restart" {
            bail!("unknown storm {storm} (kill or restart)");
        }
        // Imports that will finish during the storm.
        pool.broadcast(&StormCommand::Imports {
            total: args.storm_imports,
            duration_ms: args.storm_import_ms,
            steps: args.storm_import_steps,
        })
        .await?;
        let created = storms_gather(pool.gather().await?, "imports")?;
        let imports_created: usize = created.iter().map(|r| r.imports_created).sum();

        // Baselines, then the disruption.
        {
            let pids = nodes.pids.clone();
            sample_into(&sampler, &pids);
        }
        let cpu_start: HashMap<u32, f64> = sampler
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cpu
            .clone();
        sampler.lock().unwrap_or_else(|p| p.into_inner()).peak_fds = vec![0; nodes.pids.len()];
        let pg_before = pg_stats(&args).await;
        let pg_cpu_before = postmaster.and_then(postgres_cpu);
        // Armed 100 ms ahead, so every worker counts from the disruption on.
        let t0 = conn::unix_micros_now() + 100_000;
        pool.broadcast(&StormCommand::Arm { t0_micros: t0 }).await?;
        tokio::time::sleep(micros_until(t0)).await;
        eprintln!("reeltime-bench storm: {storm} ({imports_created} imports running)");
        let nodes_up_micros;
        match storm {
            "kill" => {
                let i = args.kill_node;
                signal(nodes.pids[i], "KILL")?;
                while alive(nodes.pids[i]) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                tokio::time::sleep(Duration::from_millis(args.restart_delay_ms)).await;
                nodes.start(i, &http).await?;
                *pids_now.lock().unwrap_or_else(|p| p.into_inner()) = nodes.pids.clone();
                nodes_up_micros = conn::unix_micros_now();
            }
            _ => {
                for pid in &nodes.pids {
                    signal(*pid, "TERM")?;
                }
                let stopping = Instant::now();
                while nodes.pids.iter().any(|pid| alive(*pid)) {
                    if stopping.elapsed() > Duration::from_secs(30) {
                        bail!("nodes still running 30 s after SIGTERM");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let stopped = conn::unix_micros_now();
                details[format!("{storm}_stop_secs")] = json!((stopped - t0) as f64 / 1e6);
                // All at once, as an orchestrator restarting the fleet
                // would: started one by one, the first node up would take
                // every client while the others start.
                for i in 0..nodes.pids.len() {
                    nodes.spawn(i)?;
                }
                *pids_now.lock().unwrap_or_else(|p| p.into_inner()) = nodes.pids.clone();
                for i in 0..nodes.pids.len() {
                    nodes.healthy(i, &http).await?;
                }
                nodes_up_micros = conn::unix_micros_now();
            }
        }
        let settle = conn::unix_micros_now() + 500_000;
        let deadline = t0 + args.storm_timeout_secs as i64 * 1_000_000;
        pool.broadcast(&StormCommand::Collect {
            settle_micros: settle,
            deadline_micros: deadline,
        })
        .await?;
        let collected = storms_gather(pool.gather().await?, "collect")?;
        let end = conn::unix_micros_now();
        {
            let pids = nodes.pids.clone();
            sample_into(&sampler, &pids);
        }
        let pg_cpu_after = postmaster.and_then(postgres_cpu);
        // pg_stat_database is updated by each backend at most once a second.
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        let pg_after = pg_stats(&args).await;

        let mut back = Hist::default();
        let mut dropped = 0;
        let mut down = 0;
        let mut attempts = 0;
        let mut failed = 0;
        let mut last_back = t0;
        let mut errors = BTreeMap::new();
        let mut closes = BTreeMap::new();
        let mut where_now = Vec::new();
        let mut client_cpu = 0.0;
        for report in &collected {
            back.merge(&Hist::from_wire(&report.back_hist));
            dropped += report.dropped;
            down += report.down;
            attempts += report.attempts;
            failed += report.failed_attempts;
            last_back = last_back.max(report.last_back_micros);
            merge_errors(&mut errors, &report.errors);
            merge_errors(&mut closes, &report.closes);
            crate::job::add_per_node(&mut where_now, &report.per_node);
            client_cpu += report.cpu_secs;
        }
        let (node_cpu, peak_fds) = {
            let sampler = sampler.lock().unwrap_or_else(|p| p.into_inner());
            let cpu: f64 = sampler
                .cpu
                .iter()
                .map(|(pid, cpu)| cpu - cpu_start.get(pid).copied().unwrap_or(0.0))
                .sum();
            (cpu, sampler.peak_fds.clone())
        };
        let back_count = back.count();
        let secs_at = |q: f64| back.quantile(q) as f64 / 1e6;
        let m = |name: &str| format!("{storm}_{name}");
        metrics.insert(m("dropped"), dropped as f64);
        metrics.insert(m("back"), back_count as f64);
        metrics.insert(m("not_back"), down as f64);
        if back_count > 0 {
            metrics.insert(m("back_50pct_secs"), secs_at(0.5));
            metrics.insert(m("back_99pct_secs"), secs_at(0.99));
            metrics.insert(m("back_100pct_secs"), secs_at(1.0));
        }
        metrics.insert(m("attempts"), attempts as f64);
        metrics.insert(m("failed_attempts"), failed as f64);
        metrics.insert(m("nodes_up_secs"), (nodes_up_micros - t0) as f64 / 1e6);
        metrics.insert(m("server_cpu_secs"), node_cpu);
        metrics.insert(
            m("server_cpu_us_per_reconnect"),
            node_cpu * 1e6 / back_count.max(1) as f64,
        );
        metrics.insert(m("client_cpu_secs"), client_cpu);
        metrics.insert(
            m("peak_fds_max_node"),
            peak_fds.iter().copied().max().unwrap_or(0) as f64,
        );
        let window = (end - t0) as f64 / 1e6;
        if let (Some(a), Some(b)) = (pg_cpu_after, pg_cpu_before) {
            metrics.insert(m("postgres_cpu_secs"), a - b);
        }
        let mut pg = json!({});
        if let (Some(a), Some(b)) = (&pg_after, &pg_before) {
            for (i, name) in PG_STAT_NAMES.iter().enumerate() {
                pg[*name] = json!(a[i] - b[i]);
            }
            metrics.insert(m("pg_xact_commit"), a[0] - b[0]);
            metrics.insert(m("pg_tup_returned"), a[2] - b[2]);
            metrics.insert(m("pg_tup_fetched"), a[3] - b[3]);
            metrics.insert(
                m("pg_tup_written"),
                (a[4] - b[4]) + (a[5] - b[5]) + (a[6] - b[6]),
            );
        }
        let goal = goal_secs(&args.goals, storm);
        let all_back = down == 0 && back_count >= dropped && dropped > 0;
        let met = match goal {
            Some(goal) => all_back && secs_at(1.0) <= goal,
            None => all_back,
        };
        metrics.insert(m("goal_met"), if met { 1.0 } else { 0.0 });
        if !met {
            failed_goals.push(format!(
                "{storm}: {} of {dropped} back, the last after {:.1} s (goal {goal:?} s)",
                back_count,
                secs_at(1.0)
            ));
        }

        // Every socket of every user with an import holds its final state.
        let finals_deadline =
            conn::unix_micros_now() + (args.storm_import_ms as i64 + 60_000) * 1_000;
        pool.broadcast(&StormCommand::Finals {
            deadline_micros: finals_deadline,
        })
        .await?;
        let finals = storms_gather(pool.gather().await?, "finals")?;
        let sum = |f: fn(&StormReport) -> u64| finals.iter().map(f).sum::<u64>();
        let lost = sum(|r| r.lost);
        metrics.insert(m("imports"), imports_created as f64);
        metrics.insert(m("finals_checked"), sum(|r| r.checked) as f64);
        metrics.insert(m("finals_lost"), lost as f64);
        metrics.insert(
            m("finals_unchecked_not_back"),
            sum(|r| r.unchecked_not_back) as f64,
        );
        metrics.insert(m("imports_unfinished"), sum(|r| r.unfinished) as f64);
        metrics.insert(m("wrong_user"), sum(|r| r.wrong_user) as f64);
        if lost > 0 || sum(|r| r.wrong_user) > 0 {
            failed_goals.push(format!(
                "{storm}: {lost} final states lost, {} wrong-user",
                sum(|r| r.wrong_user)
            ));
        }
        let mut final_errors = BTreeMap::new();
        for report in &finals {
            merge_errors(&mut final_errors, &report.errors);
        }
        details[storm] = json!({
            "t0_micros": t0,
            "window_secs": window,
            "back": back.summary(),
            "errors": errors,
            "closes": closes,
            "per_node_after": where_now,
            "peak_fds_per_node": peak_fds,
            "pg_stat_database_delta": pg,
            "finals_errors": final_errors,
        });
        eprintln!(
            "reeltime-bench storm: {storm}: {back_count}/{dropped} back; 50 % {:.2} s, 99 % {:.2} s, 100 % {:.2} s; {} lost",
            secs_at(0.5),
            secs_at(0.99),
            secs_at(1.0),
            lost
        );
        let _ = last_back;
        // What is known so far, in case a later storm never ends.
        if let Some(out) = common.out.as_deref() {
            let partial = json!({"scenario": "storm", "partial": true, "metrics": metrics, "details": details});
            let _ = std::fs::write(
                out,
                serde_json::to_string_pretty(&partial).unwrap_or_default(),
            );
        }
    }
    sampling.cancel();
    pool.broadcast(&StormCommand::Release).await?;
    let _ = pool.gather().await;
    pool.finish().await;

    // Where the nodes are now, for whoever stops them (scripts/bench reads
    // the pid files the node scripts write; this is for the report).
    details["node_pids_after"] = json!(nodes.pids);
    let limits: Vec<Value> = nodes
        .pids
        .iter()
        .map(|pid| json!(open_file_limit(*pid)))
        .collect();
    details["open_file_limit_per_node"] = json!(limits);
    let report = crate::report::Report {
        scenario: "storm".into(),
        label: common.label.clone(),
        params: json!({
            "sockets": args.sockets,
            "tabs": tabs,
            "nodes": common.urls.len(),
            "procs": procs,
            "storms": args.storms,
            "kill_node": args.kill_node,
            "restart_delay_ms": args.restart_delay_ms,
            "lb_fail_timeout_ms": args.lb_fail_timeout_ms,
            "backoff_base_ms": args.backoff_base_ms,
            "backoff_cap_ms": args.backoff_cap_ms,
            "healthy_after_ms": HEALTHY_AFTER_MS,
            "ready_timeout_ms": READY_TIMEOUT_MS,
            "storm_imports": args.storm_imports,
            "storm_import_ms": args.storm_import_ms,
            "goals": args.goals,
            "setup_secs": setup,
            "case": common.case.clone().unwrap_or_else(|| "storm".into()),
        }),
        metrics,
        details,
    };
    crate::report::emit(&report, common.json, common.out.as_deref())?;
    if !failed_goals.is_empty() {
        eprintln!("reeltime-bench storm: missed: {}", failed_goals.join("; "));
        if args.strict {
            bail!("storm goals missed: {}", failed_goals.join("; "));
        }
    }
    Ok(())
}

/// The soft open-file limit of a process (its socket budget), from /proc.
fn open_file_limit(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_matches_progress_client() {
        // backoff.test / ProgressClient.test: 0.1 × 500 = 50, 0.9 × 1000 = 900.
        assert_eq!(backoff_delay_ms(0, 500, 30_000, 0.1), 50);
        assert_eq!(backoff_delay_ms(1, 500, 30_000, 0.9), 900);
        // 0.999 × 8000 = 7992 (attempt 4), capped at 30 s from attempt 6 on.
        assert_eq!(backoff_delay_ms(4, 500, 30_000, 0.999), 7992);
        assert_eq!(backoff_delay_ms(10, 500, 30_000, 0.5), 15_000);
        assert_eq!(backoff_delay_ms(60, 500, 30_000, 0.999_999), 29_999);
    }

    #[test]
    fn node_order_is_a_spread_permutation() {
        let mut first = [0usize; 6];
        for key in 0..60_000u64 {
            let order = node_order(key, 6);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![0, 1, 2, 3, 4, 5]);
            first[order[0]] += 1;
        }
        // Each node is first for about a sixth of the keys.
        for count in first {
            assert!((9_000..11_000).contains(&count), "{first:?}");
        }
        // A dead node's keys spread over the others (second choice).
        let mut second = [0usize; 6];
        for key in 0..60_000u64 {
            let order = node_order(key, 6);
            if order[0] == 0 {
                second[order[1]] += 1;
            }
        }
        assert_eq!(second[0], 0);
        for count in &second[1..] {
            assert!((1_500..2_500).contains(count), "{second:?}");
        }
    }

    #[test]
    fn goals_parse() {
        assert_eq!(goal_secs("kill=10,restart=60", "restart"), Some(60.0));
        assert_eq!(goal_secs("kill=10", "restart"), None);
    }
}
