//! `reeltime-chaos`: runs a 3-node cluster (nginx, PostgreSQL, Redis, S3)
//! under load while faults drawn from a seed hit it, then checks the
//! invariants (no message to a wrong user, versions strictly increasing per
//! socket, every import final and every tab at the server's state, no
//! import fetched twice at once, every webhook delivered in order, no
//! panic, every node ready again). Prints a JSON summary per run and an
//! aggregate; `scripts/chaos` builds and drives it (docs/reliability.md).

mod check;
mod cluster;
mod faults;
mod load;
mod record;
mod rng;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU8;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

use crate::cluster::Cluster;
use crate::faults::ClientLinks;
use crate::load::Load;
use crate::record::Record;
use crate::rng::Rng;

/// Chaos runs against a local 3-node cluster.
#[derive(Parser, Debug)]
#[command(version)]
struct Options {
    /// Runs, each on a fresh cluster.
    #[arg(long, default_value_t = 1)]
    runs: u64,
    /// Minutes of load and faults per run (fractions allowed: 0.5).
    #[arg(long, default_value_t = 1.0)]
    minutes: f64,
    /// Seed of the first run (run i uses seed + i); random when absent.
    #[arg(long)]
    seed: Option<u64>,
    /// The `reeltime` binary (a release build).
    #[arg(long, default_value = "target/release/reeltime")]
    binary: PathBuf,
    /// Where each run's summary, notes and node logs go.
    #[arg(long, default_value = "target/chaos")]
    out: PathBuf,
    /// Users (each with its own network link and an actor).
    #[arg(long, default_value_t = 4)]
    users: usize,
    /// Tabs per user.
    #[arg(long, default_value_t = 3)]
    tabs: usize,
    /// The job lease of the nodes, seconds.
    #[arg(long, default_value_t = 3)]
    lease_secs: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let seed = options.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 % 1_000_000_007)
            .unwrap_or(1)
    });
    std::fs::create_dir_all(&options.out)?;
    eprintln!(
        "chaos: {} run(s) of {} min, seed {seed} (replay one run with --runs 1 --seed <its seed>)",
        options.runs, options.minutes
    );
    let mut summaries = Vec::new();
    for run in 0..options.runs {
        let run_seed = seed.wrapping_add(run);
        eprintln!(
            "chaos: run {} of {}, seed {run_seed}",
            run + 1,
            options.runs
        );
        let dir = options.out.join(format!("run-{run_seed}"));
        std::fs::create_dir_all(&dir)?;
        let summary = match one_run(&options, run_seed, &dir).await {
            Ok(summary) => summary,
            Err(err) => serde_json::json!({
                "seed": run_seed,
                "harness_failure": format!("{err:#}"),
            }),
        };
        std::fs::write(
            dir.join("summary.json"),
            serde_json::to_string_pretty(&summary)?,
        )?;
        println!("{}", serde_json::to_string(&summary)?);
        summaries.push(summary);
    }
    let aggregate = aggregate(seed, &options, &summaries);
    std::fs::write(
        options.out.join("aggregate.json"),
        serde_json::to_string_pretty(&aggregate)?,
    )?;
    println!("{}", serde_json::to_string_pretty(&aggregate)?);
    let failed = aggregate["violation_total"].as_u64().unwrap_or(0) > 0
        || aggregate["harness_failures"].as_u64().unwrap_or(0) > 0;
    std::process::exit(if failed { 1 } else { 0 });
}

/// One run: start the cluster, load it, break it, heal it, check it.
async fn one_run(
    options: &Options,
    seed: u64,
    dir: &std::path::Path,
) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let record = Arc::new(Record::default());
    let lease = Duration::from_secs(options.lease_secs.max(3));
    let cluster = Arc::new(
        Cluster::start(&options.binary, &seed.to_string(), lease)
            .await
            .context("start the cluster")?,
    );
    record.note(format!("cluster up in {:?}", started.elapsed()));
    let nginx_addr: std::net::SocketAddr = format!("127.0.0.1:{}", cluster.nginx.port()).parse()?;
    let mut links = Vec::new();
    for _ in 0..options.users {
        links.push(reeltime_testkit::TcpProxy::start(nginx_addr).await?);
    }
    let user_ws = links
        .iter()
        .map(|link| format!("ws://127.0.0.1:{}/api/ws/progress", link.port()))
        .collect();
    let clients = Arc::new(ClientLinks { links });
    let users: Vec<String> = (0..options.users)
        .map(|u| format!("user_chaos_{u}"))
        .collect();
    let load = Arc::new(Load {
        cluster: Arc::clone(&cluster),
        record: Arc::clone(&record),
        phase: AtomicU8::new(load::RUNNING),
        created: std::sync::Mutex::default(),
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(15))
            .pool_idle_timeout(Duration::from_secs(4))
            .build()?,
        user_ws,
        users: users.clone(),
        final_since: std::sync::Mutex::default(),
    });

    let mut tabs = tokio::task::JoinSet::new();
    let mut actors = tokio::task::JoinSet::new();
    for user in 0..options.users {
        for tab in 0..options.tabs {
            tabs.spawn(load::tab(Arc::clone(&load), user, tab, rng.fork()));
        }
        actors.spawn(load::actor(Arc::clone(&load), user, rng.fork()));
    }
    let load_for = Duration::from_secs_f64(options.minutes * 60.0);
    let until = Instant::now() + load_for;
    let fault_rng = rng.fork();
    let faults = tokio::spawn(faults::schedule(
        Arc::clone(&cluster),
        Arc::clone(&clients),
        Arc::clone(&record),
        fault_rng,
        options.users,
        until,
    ));
    tokio::time::sleep_until(until.into()).await;
    load.phase
        .store(load::SETTLING, std::sync::atomic::Ordering::SeqCst);
    record.note("load stops; healing every fault".into());
    if let Err(err) = faults.await {
        record.harness_error(format!("fault scheduler: {err}"));
    }
    record.note("faults healed; checking readiness".into());
    check::nodes_ready(&cluster, &record, Duration::from_secs(60)).await;
    check::buses_back(&cluster, &record, Duration::from_secs(60)).await;
    while let Some(done) = actors.join_next().await {
        if let Err(err) = done {
            record.harness_error(format!("actor: {err}"));
        }
    }
    record.note("waiting for every import to end".into());
    let server = check::settle(&load, Duration::from_secs(60)).await?;
    record.note("tabs catch up".into());
    *load.final_since.lock().expect("lock") = Some(Instant::now());
    load.phase
        .store(load::FINAL, std::sync::atomic::Ordering::SeqCst);
    let mut seen = Vec::new();
    while let Some(done) = tabs.join_next().await {
        match done {
            Ok(tab) => seen.push(tab),
            Err(err) => record.harness_error(format!("tab: {err}")),
        }
    }
    // The server's state once more, after the tabs caught up: nothing
    // moves any more, so both are the final word.
    let server_now = check::settle(&load, Duration::from_secs(1)).await?;
    let moved = server
        .iter()
        .any(|(user, imports)| server_now.get(user).map(|now| now.len()) != Some(imports.len()));
    if moved {
        record.note("imports changed while the tabs caught up".into());
    }
    check::imports_and_tabs(&load, &server_now, &seen, &record);
    check::fetches(&cluster, &load, &record).await;
    if let Err(err) = check::webhooks(&load, &record, Duration::from_secs(60)).await {
        record.harness_error(format!("webhook check: {err:#}"));
    }
    check::panics(&cluster, &record).await;

    // Logs of the run, for replaying a failure.
    for node in &cluster.nodes {
        let log = node.process.lock().await.log();
        std::fs::write(dir.join(format!("node{}.log", node.index)), log)?;
    }
    std::fs::write(dir.join("redis.log"), cluster.redis.lock().await.log())?;
    std::fs::write(
        dir.join("postgres.log"),
        cluster.postgres.lock().await.log(),
    )?;
    std::fs::write(dir.join("nginx.log"), cluster.nginx.log())?;
    std::fs::write(dir.join("notes.log"), record.notes().join("\n"))?;

    let mut summary = record.summary();
    summary["seed"] = seed.into();
    summary["minutes"] = options.minutes.into();
    summary["seconds"] = started.elapsed().as_secs().into();
    summary["users"] = options.users.into();
    summary["tabs_per_user"] = options.tabs.into();
    drop(load);
    drop(clients);
    // Stop the nodes before their services go (a clean end of the run).
    if let Ok(cluster) = Arc::try_unwrap(cluster) {
        for node in &cluster.nodes {
            node.process.lock().await.kill().await;
        }
        drop(cluster);
    }
    Ok(summary)
}

/// Sums of every run: faults by kind, figures checked, violations by
/// invariant, and the seeds of runs with violations.
fn aggregate(seed: u64, options: &Options, runs: &[serde_json::Value]) -> serde_json::Value {
    let mut faults = serde_json::Map::new();
    let mut checked = serde_json::Map::new();
    let mut violations = serde_json::Map::new();
    let mut failing = Vec::new();
    let mut harness_failures = 0u64;
    let mut harness_errors = 0u64;
    let add = |map: &mut serde_json::Map<String, serde_json::Value>, from: &serde_json::Value| {
        if let Some(object) = from.as_object() {
            for (key, value) in object {
                let sum = map.get(key).and_then(|v| v.as_u64()).unwrap_or(0)
                    + value.as_u64().unwrap_or(0);
                map.insert(key.clone(), sum.into());
            }
        }
    };
    for run in runs {
        if run.get("harness_failure").is_some() {
            harness_failures += 1;
            continue;
        }
        add(&mut faults, &run["faults"]);
        add(&mut checked, &run["checked"]);
        add(&mut violations, &run["violations"]);
        harness_errors += run["harness_errors"]
            .as_array()
            .map(|a| a.len() as u64)
            .unwrap_or(0);
        if run["violation_total"].as_u64().unwrap_or(0) > 0 {
            failing.push(run["seed"].clone());
        }
    }
    let total: u64 = violations.values().filter_map(|v| v.as_u64()).sum();
    let fault_total: u64 = faults.values().filter_map(|v| v.as_u64()).sum();
    serde_json::json!({
        "aggregate": true,
        "first_seed": seed,
        "runs": runs.len(),
        "minutes_per_run": options.minutes,
        "faults": faults,
        "fault_total": fault_total,
        "checked": checked,
        "violations": violations,
        "violation_total": total,
        "runs_with_violations": failing,
        "harness_failures": harness_failures,
        "harness_errors": harness_errors,
    })
}
