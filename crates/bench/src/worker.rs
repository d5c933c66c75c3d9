//! One load process. Single-threaded (a current-thread runtime and a
//! `LocalSet`): its sockets share counters without locks, and the
//! coordinator scales out with more processes instead of more threads.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use reeltime_protocol::{ClientMessage, Import, ImportPage, ServerMessage};
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::conn::{self, Incoming, Target, Ws};
use crate::hist::Hist;
use crate::job::{
    ChurnJob, ChurnReport, Command, DoneReport, Event, FanoutJob, FanoutReport, Job, PhaseReport,
    Scenario, SocketsJob, count_error,
};
use crate::procfs;
use crate::tokens::Tokens;

/// How long one connect may take before it counts as failed.
const CONNECT_WAIT: Duration = Duration::from_secs(30);
/// Width of the message-rate bins.
pub const BIN_MICROS: i64 = 100_000;

pub fn main() -> anyhow::Result<()> {
    // Each socket is a file: take all the hard limit allows.
    if let Ok((soft, hard)) = rlimit::Resource::NOFILE.get()
        && soft < hard
    {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&runtime, run());
    if let Err(err) = &result {
        emit(&Event::Error {
            message: format!("{err:#}"),
        });
    }
    result
}

pub(crate) fn emit(event: &Event) {
    let line = serde_json::to_string(event).unwrap_or_else(|err| {
        format!(r#"{{"event":"error","message":"cannot serialize an event: {err}"}}"#)
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

struct Control {
    lines: Lines<BufReader<Stdin>>,
}

impl Control {
    async fn next(&mut self) -> anyhow::Result<Command> {
        let line = self
            .lines
            .next_line()
            .await
            .context("reading from the coordinator")?
            .context("the coordinator went away")?;
        serde_json::from_str(&line).with_context(|| format!("bad command {line}"))
    }
}

async fn run() -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let line = lines
        .next_line()
        .await
        .context("reading the job")?
        .context("no job on stdin")?;
    let job: Job = serde_json::from_str(&line).context("bad job")?;
    let mut control = Control { lines };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()
        .context("HTTP client")?;
    let tokens = Tokens::open(&job.tokens, &http)?;
    match job.scenario.clone() {
        Scenario::Sockets(sockets_job) => sockets(&job, &tokens, &mut control, &sockets_job).await,
        Scenario::Fanout(fanout) => {
            FanoutRun::run(&job, &tokens, &http, &mut control, fanout).await
        }
        Scenario::Storm(storm) => {
            crate::storm::worker(&job, &tokens, &http, control.lines, storm).await
        }
    }
}

fn user_name(job: &Job, user: usize) -> String {
    format!("{}-u{user}", job.run_id)
}

fn source_ip(job: &Job, n: usize) -> Option<IpAddr> {
    if job.source_ips.is_empty() {
        None
    } else {
        Some(job.source_ips[n % job.source_ips.len()])
    }
}

fn micros_until(t_micros: i64) -> Duration {
    Duration::from_micros(u64::try_from(t_micros - conn::unix_micros_now()).unwrap_or(0))
}

/// Opens a socket and waits for `ready` and the snapshot; returns the
/// socket, the time from TCP connect to `ready`, and the snapshot.
async fn connect_one(
    target: &Target,
    source: Option<IpAddr>,
    token: &str,
) -> anyhow::Result<(Ws, Duration, Vec<Import>)> {
    let started = Instant::now();
    let attempt = async {
        let mut ws = conn::open(target, source, token).await?;
        let (ready_at, snapshot) = conn::await_ready(&mut ws, CONNECT_WAIT).await?;
        anyhow::Ok((ws, ready_at - started, snapshot))
    };
    tokio::time::timeout(CONNECT_WAIT, attempt)
        .await
        .map_err(|_| anyhow::anyhow!("connect timed out after {CONNECT_WAIT:?}"))?
}

/// Sends `token` in band and waits for its `auth_ok`, as a client's
/// refresh does.
async fn refresh_once(ws: &mut Ws, token: &str) -> anyhow::Result<()> {
    let text = serde_json::to_string(&ClientMessage::Auth {
        token: token.to_string(),
    })?;
    ws.send(Message::text(text)).await.context("sending auth")?;
    let deadline = tokio::time::Instant::now() + CONNECT_WAIT;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| anyhow::anyhow!("no auth_ok within {CONNECT_WAIT:?}"))?;
        let step = conn::classify(frame, |incoming| match incoming {
            Incoming::Other(message) => Ok(matches!(*message, ServerMessage::AuthOk { .. })),
            Incoming::Closed(code, reason) => Err(anyhow::anyhow!("closed {code} {reason}")),
            Incoming::Import(_) | Incoming::Control => Ok(false),
        })?;
        match step {
            None => bail!("dropped without a close frame"),
            Some(Err(err)) => return Err(err),
            Some(Ok(true)) => return Ok(()),
            Some(Ok(false)) => {}
        }
    }
}

/// Keeps an idle socket alive (answering pings) until `stop`; returns the
/// close it saw, if the server ended it first.
async fn hold(mut ws: Ws, stop: CancellationToken) -> Option<String> {
    let ended = loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break None,
            frame = ws.next() => {
                let closed = conn::classify(frame, |incoming| match incoming {
                    Incoming::Closed(code, reason) => Some(format!("closed {code} {reason}")),
                    _ => None,
                });
                match closed {
                    Ok(None) => break Some("dropped without a close frame".to_string()),
                    Ok(Some(Some(close))) => break Some(close),
                    Ok(Some(None)) => {}
                    Err(err) => break Some(format!("{err:#}")),
                }
            }
        }
    };
    if ended.is_none() {
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    }
    ended
}

/// `connect` and `hold`: open this worker's sockets as fast as the
/// concurrency allows, hold them until `release`.
async fn sockets(
    job: &Job,
    tokens: &Tokens,
    control: &mut Control,
    sockets_job: &SocketsJob,
) -> anyhow::Result<()> {
    let &SocketsJob {
        first,
        end,
        tabs,
        refresh_once: refresh,
    } = sockets_job;
    let setup_started = Instant::now();
    let tabs = tabs.max(1);
    let first_user = first / tabs;
    let end_user = end.div_ceil(tabs);
    let subs: Vec<String> = (first_user..end_user).map(|u| user_name(job, u)).collect();
    let minted = tokens.mint_all(&subs, job.token_ttl, 1).await?;
    emit(&Event::Setup {
        sockets: end - first,
        setup_secs: setup_started.elapsed().as_secs_f64(),
    });

    let Command::Go { t0_micros } = control.next().await? else {
        bail!("expected go");
    };
    tokio::time::sleep(micros_until(t0_micros)).await;
    let cpu_before = procfs::self_cpu_secs();
    let stop = CancellationToken::new();
    let mut hist = Hist::default();
    let mut errors = BTreeMap::new();
    let mut failed = 0;
    let mut connected_per_node = vec![0; job.targets.len()];
    // (node, task) per held socket.
    let mut held: Vec<(usize, JoinHandle<Option<String>>)> = Vec::with_capacity(end - first);
    let attempts = (first..end).map(|s| {
        let token = minted[s / tabs - first_user][0].as_str();
        let source = source_ip(job, s);
        let node = job.node(s);
        let target = job.target(s);
        async move {
            let mut result = connect_one(target, source, token).await;
            let mut refreshed = false;
            if refresh && let Ok((ws, _, _)) = &mut result {
                match refresh_once(ws, token).await {
                    Ok(()) => refreshed = true,
                    Err(err) => result = Err(err),
                }
            }
            (node, result, refreshed)
        }
    });
    let mut results =
        futures_util::stream::iter(attempts).buffer_unordered(job.connect_concurrency);
    let mut refreshed_count = 0;
    while let Some((node, result, refreshed)) = results.next().await {
        refreshed_count += usize::from(refreshed);
        match result {
            Ok((ws, took, _)) => {
                hist.record(took.as_micros() as u64);
                connected_per_node[node] += 1;
                held.push((node, tokio::task::spawn_local(hold(ws, stop.clone()))));
            }
            Err(err) => {
                failed += 1;
                count_error(&mut errors, &format!("{err:#}"));
            }
        }
    }
    let end_micros = conn::unix_micros_now();
    emit(&Event::Phase(Box::new(PhaseReport {
        end_micros,
        cpu_secs: procfs::self_cpu_secs() - cpu_before,
        connected: held.len(),
        failed,
        errors,
        connect_hist: hist.to_wire(),
        fanout: None,
        connected_per_node,
        refreshed: refreshed_count,
    })));

    let Command::Release = control.next().await? else {
        bail!("expected release");
    };
    stop.cancel();
    let mut done = DoneReport {
        dropped_per_node: vec![0; job.targets.len()],
        ..DoneReport::default()
    };
    for (node, task) in held {
        if let Ok(Some(close)) = task.await {
            done.dropped += 1;
            done.dropped_per_node[node] += 1;
            count_error(&mut done.closes, &close);
        }
    }
    emit(&Event::Done(done));
    Ok(())
}

/// Per-import state one socket has seen.
#[derive(Debug, Clone, Copy)]
struct Seen {
    version: u64,
    is_final: bool,
}

/// Counters every socket of the worker adds to (single thread: no locks).
#[derive(Default)]
struct Shared {
    t0_micros: i64,
    latency: Hist,
    bins: Vec<u64>,
    messages: u64,
    churn_messages: u64,
    negative: u64,
    out_of_order: u64,
    /// Final states seen for the first time by measured sockets.
    finals_seen: u64,
    last_message_micros: i64,
    churn: ChurnReport,
    churn_reconnect: Hist,
    churn_refresh: Hist,
}

/// What one socket saw, returned when it stops.
struct SocketEnd {
    user: usize,
    stable: bool,
    seen: HashMap<String, Seen>,
    close: Option<String>,
}

/// Records an import message on a socket's map and the shared counters;
/// returns true when this was the first final state of that import here.
fn on_import(
    seen: &mut HashMap<String, Seen>,
    shared: &mut Shared,
    import: &conn::ImportLite<'_>,
    arrived_micros: i64,
    stable: bool,
) {
    if stable {
        shared.messages += 1;
        match conn::rfc3339_micros(&import.updated_at) {
            Some(at) => {
                let latency = arrived_micros - at;
                if latency < 0 {
                    shared.negative += 1;
                }
                shared.latency.record(latency.max(0) as u64);
            }
            None => shared.negative += 1,
        }
        let bin = ((arrived_micros - shared.t0_micros).max(0) / BIN_MICROS) as usize;
        if shared.bins.len() <= bin {
            shared.bins.resize(bin + 1, 0);
        }
        shared.bins[bin] += 1;
        shared.last_message_micros = shared.last_message_micros.max(arrived_micros);
    } else {
        shared.churn_messages += 1;
    }
    let is_final = import.status.is_final();
    match seen.get_mut(import.id.as_ref()) {
        Some(entry) => {
            if import.version <= entry.version {
                shared.out_of_order += 1;
                return;
            }
            entry.version = import.version;
            if is_final && !entry.is_final && stable {
                shared.finals_seen += 1;
            }
            entry.is_final |= is_final;
        }
        None => {
            if is_final && stable {
                shared.finals_seen += 1;
            }
            seen.insert(
                import.id.to_string(),
                Seen {
                    version: import.version,
                    is_final,
                },
            );
        }
    }
}

/// Reads a measured socket until `stop`.
async fn stable_reader(
    mut ws: Ws,
    user: usize,
    snapshot: Vec<Import>,
    shared: Rc<RefCell<Shared>>,
    stop: CancellationToken,
) -> SocketEnd {
    // What the socket starts from: imports made before the run (the soak
    // seeds each user's history) are seen here, and every later message
    // of them must be newer.
    let mut seen: HashMap<String, Seen> = snapshot
        .into_iter()
        .map(|import| {
            let seen = Seen {
                version: import.version,
                is_final: import.status.is_final(),
            };
            (import.id, seen)
        })
        .collect();
    let close = loop {
        let frame = tokio::select! {
            biased;
            _ = stop.cancelled() => break None,
            frame = ws.next() => frame,
        };
        let arrived = conn::unix_micros_now();
        let outcome = conn::classify(frame, |incoming| match incoming {
            Incoming::Import(import) => {
                on_import(&mut seen, &mut shared.borrow_mut(), &import, arrived, true);
                None
            }
            Incoming::Closed(code, reason) => Some(format!("closed {code} {reason}")),
            Incoming::Other(_) | Incoming::Control => None,
        });
        match outcome {
            Ok(None) => break Some("dropped without a close frame".to_string()),
            Ok(Some(Some(close))) => break Some(close),
            Ok(Some(None)) => {}
            Err(err) => break Some(format!("{err:#}")),
        }
    };
    if close.is_none() {
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    }
    SocketEnd {
        user,
        stable: true,
        seen,
        close,
    }
}

/// A socket that keeps refreshing its token in band and reconnecting.
struct Churner {
    target: Target,
    source: Option<IpAddr>,
    user: usize,
    tokens: Vec<String>,
    churn: ChurnJob,
    shared: Rc<RefCell<Shared>>,
    stop: CancellationToken,
    seed: u64,
}

impl Churner {
    async fn run(mut self, mut ws: Ws, go: CancellationToken) -> SocketEnd {
        // Every import id this socket ever saw, for the wrong-user check.
        let mut all_seen: HashMap<String, Seen> = HashMap::new();
        // Idle (but reading) until the measured phase starts.
        let mut seen = HashMap::new();
        loop {
            tokio::select! {
                _ = go.cancelled() => break,
                _ = self.stop.cancelled() => break,
                // Keep reading so pings are answered while the others connect.
                frame = ws.next() => {
                    if !matches!(frame, Some(Ok(_))) {
                        self.failure("closed before the measured phase");
                        break;
                    }
                }
            }
        }
        let mut cycle: u64 = 0;
        loop {
            if self.stop.is_cancelled() {
                let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                break;
            }
            match self.cycle(&mut ws, &mut seen, cycle).await {
                Ok(true) => {}
                Ok(false) => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                    break;
                }
                Err(err) => self.failure(&format!("{err:#}")),
            }
            for (id, entry) in seen.drain() {
                all_seen.insert(id, entry);
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
            // Reconnect with a fresh token, like a client whose token expired.
            cycle += 1;
            let token = &self.tokens[(cycle as usize) % self.tokens.len()];
            loop {
                if self.stop.is_cancelled() {
                    break;
                }
                match connect_one(&self.target, self.source, token).await {
                    Ok((new_ws, took, snapshot)) => {
                        let mut shared = self.shared.borrow_mut();
                        shared.churn.reconnects += 1;
                        shared.churn_reconnect.record(took.as_micros() as u64);
                        drop(shared);
                        for import in snapshot {
                            seen.insert(
                                import.id.clone(),
                                Seen {
                                    version: import.version,
                                    is_final: import.status.is_final(),
                                },
                            );
                        }
                        ws = new_ws;
                        break;
                    }
                    Err(err) => {
                        self.failure(&format!("reconnect: {err:#}"));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            if self.stop.is_cancelled() {
                break;
            }
        }
        for (id, entry) in seen.drain() {
            all_seen.insert(id, entry);
        }
        SocketEnd {
            user: self.user,
            stable: false,
            seen: all_seen,
            close: None,
        }
    }

    fn failure(&self, message: &str) {
        let mut shared = self.shared.borrow_mut();
        shared.churn.failures += 1;
        count_error(&mut shared.churn.errors, message);
    }

    fn jitter(&mut self) -> Duration {
        // xorshift: cheap, deterministic per socket.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let base = self.churn.interval_ms.max(1);
        let spread = self.seed % base; // 0..base → 0.5x..1.5x
        Duration::from_millis(base / 2 + spread)
    }

    /// Reads for one interval, refreshing halfway through. Ok(false) when
    /// stopped.
    async fn cycle(
        &mut self,
        ws: &mut Ws,
        seen: &mut HashMap<String, Seen>,
        cycle: u64,
    ) -> anyhow::Result<bool> {
        let length = self.jitter();
        let started = tokio::time::Instant::now();
        let refresh_at = started + length / 2;
        let end = started + length;
        let mut refresh_sent: Option<Instant> = None;
        let mut refreshed = !self.churn.refresh;
        loop {
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return Ok(false),
                frame = ws.next() => {
                    let arrived = conn::unix_micros_now();
                    let outcome = conn::classify(frame, |incoming| match incoming {
                        Incoming::Import(import) => {
                            on_import(seen, &mut self.shared.borrow_mut(), &import, arrived, false);
                            Ok(false)
                        }
                        Incoming::Other(message) => Ok(matches!(*message, ServerMessage::AuthOk { .. })),
                        Incoming::Control => Ok(false),
                        Incoming::Closed(code, reason) => Err(anyhow::anyhow!("closed {code} {reason}")),
                    })?;
                    match outcome {
                        None => bail!("dropped without a close frame"),
                        Some(Err(err)) => return Err(err),
                        Some(Ok(true)) => {
                            if let Some(sent) = refresh_sent.take() {
                                let mut shared = self.shared.borrow_mut();
                                shared.churn.refreshes += 1;
                                shared.churn_refresh.record(sent.elapsed().as_micros() as u64);
                                refreshed = true;
                            }
                        }
                        Some(Ok(false)) => {}
                    }
                }
                _ = tokio::time::sleep_until(refresh_at), if refresh_sent.is_none() && !refreshed => {
                    let token = &self.tokens[((cycle + 1) as usize) % self.tokens.len()];
                    let text = serde_json::to_string(&ClientMessage::Auth { token: token.clone() })?;
                    refresh_sent = Some(Instant::now());
                    ws.send(Message::text(text)).await.context("sending auth")?;
                }
                _ = tokio::time::sleep_until(end), if refreshed => return Ok(true),
                _ = tokio::time::sleep_until(end + CONNECT_WAIT), if !refreshed => {
                    bail!("no auth_ok within {CONNECT_WAIT:?}");
                }
            }
        }
    }
}

struct FanoutRun;

impl FanoutRun {
    async fn run(
        job: &Job,
        tokens: &Tokens,
        http: &reqwest::Client,
        control: &mut Control,
        fanout: FanoutJob,
    ) -> anyhow::Result<()> {
        let setup_started = Instant::now();
        let users: Vec<usize> = (fanout.first_user..fanout.end_user).collect();
        let subs: Vec<String> = users.iter().map(|u| user_name(job, *u)).collect();
        let per_sub = if fanout.churn.is_some() { 3 } else { 1 };
        let minted = Rc::new(tokens.mint_all(&subs, job.token_ttl, per_sub).await?);

        // Which sockets churn: spread evenly over all of this worker's sockets.
        let tabs = fanout.tabs.max(1);
        let total = users.len() * tabs;
        let churn_fraction = fanout.churn.as_ref().map_or(0.0, |c| c.fraction);
        let is_churner = |n: usize| -> bool {
            churn_fraction > 0.0
                && ((n as f64 * churn_fraction).floor()
                    != ((n + 1) as f64 * churn_fraction).floor())
        };
        let shared = Rc::new(RefCell::new(Shared::default()));
        let stop = CancellationToken::new();
        let go = CancellationToken::new();
        let mut stable_tabs = vec![0usize; users.len()];
        let mut tasks: Vec<JoinHandle<SocketEnd>> = Vec::with_capacity(total);
        let mut connected_per_node = vec![0; job.targets.len()];
        // Socket n of this worker is socket `first_socket + n` of the run:
        // the node is picked from that, so the tabs of a user go round the
        // nodes whatever worker holds them.
        let first_socket = fanout.first_user * tabs;
        {
            let attempts = (0..total).map(|n| {
                let user = n / tabs;
                let token = minted[user][0].clone();
                let source = source_ip(job, job.worker + n * job.procs);
                let target = job.target(first_socket + n).clone();
                async move { (n, connect_one(&target, source, &token).await) }
            });
            let mut results =
                futures_util::stream::iter(attempts).buffer_unordered(job.connect_concurrency);
            while let Some((n, result)) = results.next().await {
                let (ws, _, snapshot) = result.with_context(|| {
                    format!(
                        "opening socket {n} to {}",
                        job.target(first_socket + n).ws_url
                    )
                })?;
                let user = n / tabs;
                connected_per_node[job.node(first_socket + n)] += 1;
                if is_churner(n) {
                    let churner = Churner {
                        target: job.target(first_socket + n).clone(),
                        source: source_ip(job, job.worker + n * job.procs),
                        user,
                        tokens: minted[user].clone(),
                        churn: fanout.churn.clone().unwrap_or(ChurnJob {
                            fraction: 0.0,
                            interval_ms: 1000,
                            refresh: false,
                        }),
                        shared: Rc::clone(&shared),
                        stop: stop.clone(),
                        seed: 0x9E37_79B9_7F4A_7C15 ^ ((n as u64 + 1) * 0x1000_0001),
                    };
                    tasks.push(tokio::task::spawn_local(churner.run(ws, go.clone())));
                } else {
                    stable_tabs[user] += 1;
                    tasks.push(tokio::task::spawn_local(stable_reader(
                        ws,
                        user,
                        snapshot,
                        Rc::clone(&shared),
                        stop.clone(),
                    )));
                }
            }
        }
        let churn_sockets = (0..total).filter(|n| is_churner(*n)).count();
        emit(&Event::Setup {
            sockets: total,
            setup_secs: setup_started.elapsed().as_secs_f64(),
        });

        let Command::Go { t0_micros } = control.next().await? else {
            bail!("expected go");
        };
        shared.borrow_mut().t0_micros = t0_micros;
        tokio::time::sleep(micros_until(t0_micros)).await;
        let cpu_before = procfs::self_cpu_secs();
        go.cancel();

        // Create the imports at the rate, round-robin over this worker's users.
        let created: Rc<RefCell<Vec<HashSet<String>>>> =
            Rc::new(RefCell::new(vec![HashSet::new(); users.len()]));
        let post_errors = Rc::new(RefCell::new(BTreeMap::<String, u64>::new()));
        let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(128));
        let source_url = format!(
            "synthetic:?duration_ms={}&steps={}",
            fanout.duration_ms, fanout.steps
        );
        let mut posts = Vec::with_capacity(fanout.imports);
        let start = tokio::time::Instant::now();
        for i in 0..fanout.imports {
            let due = start + Duration::from_secs_f64(i as f64 / fanout.rate.max(0.001));
            tokio::time::sleep_until(due).await;
            let permit = std::sync::Arc::clone(&in_flight)
                .acquire_owned()
                .await
                .context("post limiter")?;
            let user = i % users.len();
            let token = minted[user][0].clone();
            // Any node may take the request: round-robin over the run's imports.
            let request = http
                .post(format!(
                    "{}/api/imports",
                    job.target(fanout.first_import + i).http_base
                ))
                .bearer_auth(token)
                .json(&serde_json::json!({"url": source_url, "title": format!("bench {i}")}));
            let created = Rc::clone(&created);
            let errors = Rc::clone(&post_errors);
            posts.push(tokio::task::spawn_local(async move {
                let result = async {
                    let response = request.send().await.context("POST /api/imports")?;
                    let status = response.status();
                    if status != reqwest::StatusCode::CREATED {
                        let body = response.text().await.unwrap_or_default();
                        bail!("POST /api/imports answered {status}: {body}");
                    }
                    let import: Import = response.json().await.context("import body")?;
                    anyhow::Ok(import.id)
                }
                .await;
                match result {
                    Ok(id) => {
                        created.borrow_mut()[user].insert(id);
                    }
                    Err(err) => count_error(&mut errors.borrow_mut(), &format!("{err:#}")),
                }
                drop(permit);
            }));
        }
        for post in posts {
            let _ = post.await;
        }
        let last_post_micros = conn::unix_micros_now();

        // Wait until every measured socket has every final state, or give up.
        let expected: u64 = created
            .borrow()
            .iter()
            .zip(&stable_tabs)
            .map(|(ids, tabs)| (ids.len() * tabs) as u64)
            .sum();
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(fanout.duration_ms)
            + Duration::from_secs(fanout.grace_secs);
        while shared.borrow().finals_seen < expected && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let drained = shared.borrow().finals_seen >= expected;
        let cpu_secs = procfs::self_cpu_secs() - cpu_before;
        stop.cancel();
        let mut ends = Vec::with_capacity(tasks.len());
        for task in tasks {
            if let Ok(end) = task.await {
                ends.push(end);
            }
        }

        // The server's final word on every import of every user, from the
        // REST API. A user's imports are the ones created for them plus the
        // ones the server lists for them (a POST that timed out at the
        // client may still have created one).
        let listed = final_versions(job, http, &minted, fanout.first_user, users.len()).await?;
        let mut finals: HashMap<String, (u64, bool)> = HashMap::new();
        let mut created = created.borrow().clone();
        for (user, imports) in listed.into_iter().enumerate() {
            for (id, state) in imports {
                created[user].insert(id.clone());
                finals.insert(id, state);
            }
        }
        let mut report = FanoutReport {
            imports_created: created.iter().map(HashSet::len).sum(),
            post_errors: post_errors.borrow().values().sum(),
            last_post_micros,
            stable_sockets: total - churn_sockets,
            churn_sockets,
            drained,
            ..FanoutReport::default()
        };
        report.unfinished = finals.values().filter(|(_, done)| !done).count() as u64;
        for end in &ends {
            let mine = &created[end.user];
            report.wrong_user += end.seen.keys().filter(|id| !mine.contains(*id)).count() as u64;
            if let Some(close) = &end.close {
                count_error(&mut report.closes, close);
            }
            if !end.stable {
                continue;
            }
            for id in mine {
                let good = match (end.seen.get(id), finals.get(id)) {
                    (Some(seen), Some((version, true))) => {
                        seen.is_final && seen.version == *version
                    }
                    _ => false,
                };
                if !good {
                    report.lost += 1;
                }
            }
        }
        let last_message_micros = {
            let shared = shared.borrow();
            report.messages = shared.messages;
            report.churn_messages = shared.churn_messages;
            report.latency = shared.latency.to_wire();
            report.bins = shared.bins.clone();
            report.negative_latency = shared.negative;
            report.out_of_order = shared.out_of_order;
            if fanout.churn.is_some() {
                let mut churn = shared.churn.clone();
                churn.reconnect_hist = shared.churn_reconnect.to_wire();
                churn.refresh_hist = shared.churn_refresh.to_wire();
                report.churn = Some(churn);
            }
            shared.last_message_micros
        };
        let mut errors = post_errors.borrow().clone();
        for (key, count) in &report.closes {
            *errors.entry(key.clone()).or_default() += count;
        }
        emit(&Event::Phase(Box::new(PhaseReport {
            end_micros: last_message_micros.max(last_post_micros),
            cpu_secs,
            connected: total,
            failed: 0,
            errors,
            connect_hist: Default::default(),
            fanout: Some(report),
            connected_per_node,
            refreshed: 0,
        })));

        let Command::Release = control.next().await? else {
            bail!("expected release");
        };
        emit(&Event::Done(DoneReport::default()));
        Ok(())
    }
}

/// `GET /api/imports` for every user: per user, import id to (version, final?).
/// Users `first_user..first_user + users` of the run; each asks a node of its
/// own (round-robin), since every node reads the same database.
async fn final_versions(
    job: &Job,
    http: &reqwest::Client,
    minted: &[Vec<String>],
    first_user: usize,
    users: usize,
) -> anyhow::Result<Vec<HashMap<String, (u64, bool)>>> {
    let lists = (0..users).map(|user| {
        let token = minted[user][0].clone();
        let http_base = job.target(first_user + user).http_base.clone();
        async move {
            let mut all = Vec::new();
            let mut before: Option<String> = None;
            loop {
                let mut url = format!("{http_base}/api/imports?limit=200");
                if let Some(cursor) = &before {
                    url.push_str(&format!("&before={cursor}"));
                }
                let response = http
                    .get(&url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .with_context(|| format!("GET {url}"))?;
                if !response.status().is_success() {
                    bail!("GET {url} answered {}", response.status());
                }
                let page: ImportPage = response.json().await.context("import page")?;
                all.extend(page.imports);
                match page.next_cursor {
                    Some(cursor) => before = Some(cursor),
                    None => break,
                }
            }
            anyhow::Ok(all)
        }
    });
    let pages: Vec<anyhow::Result<Vec<Import>>> = futures_util::stream::iter(lists)
        .buffered(16)
        .collect()
        .await;
    pages
        .into_iter()
        .map(|page| {
            Ok(page?
                .into_iter()
                .map(|import| (import.id, (import.version, import.status.is_final())))
                .collect())
        })
        .collect()
}
