//! The faults: drawn from the run's seed, each applied and then healed by
//! its own task, several at once on different targets (a node killed while
//! Redis restarts), one at a time per node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reeltime_testkit::LinkMode;

use crate::cluster::Cluster;
use crate::record::Record;
use crate::rng::Rng;

/// Every kind of fault, with the weight it is drawn with.
pub const KINDS: &[(&str, u32)] = &[
    ("kill_node", 3),
    ("term_node", 3),
    ("pause_node", 2),
    ("restart_redis", 2),
    ("restart_postgres", 2),
    ("cut_node_postgres", 2),
    ("cut_node_redis", 2),
    ("latency_200ms", 2),
    ("fill_disk", 2),
    ("kill_ffmpeg", 2),
    ("drop_client_network", 3),
    ("webhook_receiver_down", 1),
];

/// One fault as drawn: its kind, its target and how long it lasts.
#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: &'static str,
    /// The node, or the user for a client's network.
    pub target: usize,
    pub hold: Duration,
    /// For a latency fault: which link (true: PostgreSQL).
    pub on_postgres: bool,
}

impl Fault {
    /// Draws a fault for a cluster of `nodes` nodes and `users` users.
    pub fn draw(rng: &mut Rng, nodes: usize, users: usize, lease: Duration) -> Fault {
        let weights: Vec<u32> = KINDS.iter().map(|(_, w)| *w).collect();
        let kind = KINDS[rng.weighted(&weights)].0;
        let target = if kind == "drop_client_network" {
            rng.range(0, users as u64 - 1) as usize
        } else {
            rng.range(0, nodes as u64 - 1) as usize
        };
        let lease_ms = lease.as_millis() as u64;
        let hold = Duration::from_millis(match kind {
            // Longer than the lease, so another node takes its imports.
            "pause_node" => rng.range(lease_ms + 1000, lease_ms * 2 + 1000),
            "kill_node" | "term_node" => rng.range(500, 4000),
            "restart_redis" | "restart_postgres" => rng.range(500, 3000),
            _ => rng.range(2000, 8000),
        });
        Fault {
            kind,
            target,
            hold,
            on_postgres: rng.chance(0.5),
        }
    }

    /// How the fault is printed and logged.
    pub fn describe(&self) -> String {
        match self.kind {
            "kill_ffmpeg" => self.kind.to_string(),
            "restart_redis" | "restart_postgres" | "webhook_receiver_down" => {
                format!("{} for {:?}", self.kind, self.hold)
            }
            "drop_client_network" => {
                format!("{} of user {} for {:?}", self.kind, self.target, self.hold)
            }
            "latency_200ms" => format!(
                "{} on node {}'s {} link for {:?}",
                self.kind,
                self.target,
                if self.on_postgres {
                    "PostgreSQL"
                } else {
                    "Redis"
                },
                self.hold
            ),
            _ => format!("{} on node {} for {:?}", self.kind, self.target, self.hold),
        }
    }
}

/// Client-side network links, one proxy per user in front of nginx.
pub struct ClientLinks {
    pub links: Vec<reeltime_testkit::TcpProxy>,
}

/// Applies `fault`, holds it, heals it. Returns false when its target was
/// busy with another fault (then nothing was done).
pub async fn apply(
    cluster: &Cluster,
    clients: &ClientLinks,
    fault: &Fault,
    record: &Record,
) -> anyhow::Result<bool> {
    match fault.kind {
        "restart_redis" => {
            let _alone = cluster.services.write().await;
            let mut redis = cluster.redis.lock().await;
            redis.stop().await;
            tokio::time::sleep(fault.hold).await;
            redis.start_again().await;
            Ok(true)
        }
        "restart_postgres" => {
            let _alone = cluster.services.write().await;
            let mut postgres = cluster.postgres.lock().await;
            postgres.stop().await;
            tokio::time::sleep(fault.hold).await;
            postgres.start_again().await;
            Ok(true)
        }
        "webhook_receiver_down" => {
            cluster.webhooks.down();
            tokio::time::sleep(fault.hold).await;
            cluster.webhooks.up().await;
            Ok(true)
        }
        "drop_client_network" => {
            let link = &clients.links[fault.target];
            if link.mode() != LinkMode::Pass {
                return Ok(false);
            }
            link.set(LinkMode::Blackhole);
            tokio::time::sleep(fault.hold).await;
            link.set(LinkMode::Pass);
            Ok(true)
        }
        "kill_ffmpeg" => kill_ffmpeg(cluster, record).await,
        _ => {
            let node = &cluster.nodes[fault.target];
            let Ok(_busy) = node.fault.try_lock() else {
                return Ok(false);
            };
            match fault.kind {
                "kill_node" | "term_node" => {
                    let _services = cluster.services.read().await;
                    let mut process = node.process.lock().await;
                    if fault.kind == "kill_node" {
                        process.kill().await;
                    } else {
                        process.stop().await;
                    }
                    tokio::time::sleep(fault.hold).await;
                    process.restart().await;
                }
                "pause_node" => {
                    let process = node.process.lock().await;
                    let from = Instant::now();
                    process.signal("STOP");
                    tokio::time::sleep(fault.hold).await;
                    process.signal("CONT");
                    node.pauses
                        .lock()
                        .expect("lock")
                        .push((from, Instant::now()));
                }
                "cut_node_postgres" | "cut_node_redis" => {
                    let postgres = fault.kind == "cut_node_postgres";
                    let link = if postgres {
                        &node.pg_link
                    } else {
                        &node.redis_link
                    };
                    let from = Instant::now();
                    link.set(LinkMode::Cut);
                    tokio::time::sleep(fault.hold).await;
                    link.set(LinkMode::Pass);
                    if postgres {
                        node.pg_cuts
                            .lock()
                            .expect("lock")
                            .push((from, Instant::now()));
                    }
                }
                "latency_200ms" => {
                    let link = if fault.on_postgres {
                        &node.pg_link
                    } else {
                        &node.redis_link
                    };
                    link.set(LinkMode::Latency(Duration::from_millis(200)));
                    tokio::time::sleep(fault.hold).await;
                    link.set(LinkMode::Pass);
                }
                "fill_disk" => {
                    let filler = node.data_dir.join("chaos-filler");
                    let written = fill(filler.clone()).await;
                    record.count("fill_disk_bytes", written);
                    tokio::time::sleep(fault.hold).await;
                    let _ = tokio::fs::remove_file(&filler).await;
                }
                other => anyhow::bail!("unknown fault {other}"),
            }
            Ok(true)
        }
    }
}

/// Writes zeros to `path` until the filesystem is full; returns the bytes
/// written.
async fn fill(path: std::path::PathBuf) -> u64 {
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let Ok(mut file) = std::fs::File::create(&path) else {
            return 0;
        };
        let block = vec![0u8; 1 << 20];
        let mut written = 0u64;
        while let Ok(n) = file.write(&block) {
            if n == 0 {
                break;
            }
            written += n as u64;
        }
        let _ = file.flush();
        written
    })
    .await
    .unwrap_or(0)
}

/// Kills (SIGKILL) one ffmpeg or ffprobe that a node runs, if any runs.
async fn kill_ffmpeg(cluster: &Cluster, record: &Record) -> anyhow::Result<bool> {
    let mut pids = Vec::new();
    for node in &cluster.nodes {
        let Some(pid) = node.process.lock().await.pid() else {
            continue;
        };
        pids.extend(children_named(pid, &["ffmpeg", "ffprobe"]));
    }
    match pids.first() {
        Some(pid) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            record.count("ffmpeg_killed", 1);
        }
        None => record.count("kill_ffmpeg_found_none", 1),
    }
    Ok(true)
}

/// The pids of `parent`'s descendants whose command name is one of
/// `names`, from /proc.
fn children_named(parent: u32, names: &[&str]) -> Vec<u32> {
    let mut parents = vec![parent];
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    let mut table: Vec<(u32, u32, String)> = Vec::new();
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((head, tail)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head
            .split_once('(')
            .map(|(_, c)| c)
            .unwrap_or("")
            .to_string();
        let Some(ppid) = tail.split_whitespace().nth(1).and_then(|p| p.parse().ok()) else {
            continue;
        };
        table.push((pid, ppid, comm));
    }
    while let Some(parent) = parents.pop() {
        for (pid, ppid, comm) in &table {
            if *ppid == parent {
                parents.push(*pid);
                if names.iter().any(|name| comm == name) {
                    found.push(*pid);
                }
            }
        }
    }
    found
}

/// Draws and starts faults until `until`, one every few seconds, each in
/// its own task; waits for every fault to be healed before it returns.
pub async fn schedule(
    cluster: Arc<Cluster>,
    clients: Arc<ClientLinks>,
    record: Arc<Record>,
    mut rng: Rng,
    users: usize,
    until: Instant,
) {
    let mut running = tokio::task::JoinSet::new();
    // A moment for the load to start first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    while Instant::now() < until {
        let fault = Fault::draw(&mut rng, cluster.nodes.len(), users, cluster.lease);
        let (cluster, clients, record) = (
            Arc::clone(&cluster),
            Arc::clone(&clients),
            Arc::clone(&record),
        );
        running.spawn(async move {
            let started = Instant::now();
            match apply(&cluster, &clients, &fault, &record).await {
                Ok(true) => {
                    record.count(&format!("fault.{}", fault.kind), 1);
                    record.note(format!(
                        "fault {} (took {:?})",
                        fault.describe(),
                        started.elapsed()
                    ));
                }
                Ok(false) => record.count("fault_skipped_target_busy", 1),
                Err(err) => record.harness_error(format!("fault {}: {err:#}", fault.describe())),
            }
        });
        let gap = rng.range(1500, 5000);
        tokio::time::sleep(Duration::from_millis(gap)).await;
    }
    while let Some(done) = running.join_next().await {
        if let Err(err) = done {
            record.harness_error(format!("a fault task failed: {err}"));
        }
    }
}
