//! The cluster a chaos run breaks: PostgreSQL, Redis, S3 (moto), three
//! nodes each with its own small filesystem (a tmpfs with a size) and its
//! own proxies to PostgreSQL and Redis, nginx in front, plus the test
//! kit's issuer, content server and webhook receiver.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reeltime_testkit::services::S3Server;
use reeltime_testkit::{
    ContentServer, Nginx, Postgres, RedisServer, ServerProcess, TcpProxy, TestIssuer,
    WebhookReceiver,
};

/// Size of each node's data filesystem: room for the downloads in flight,
/// small enough to fill in a moment.
const NODE_FS_SIZE: &str = "96m";

/// One node: its process, its links and its filesystem.
pub struct Node {
    /// 0, 1, 2: its place in the cluster.
    pub index: usize,
    /// The process; a fault holds the lock while it kills or restarts it.
    pub process: tokio::sync::Mutex<ServerProcess>,
    /// `127.0.0.1:port`, the same across restarts.
    pub addr: String,
    /// Its link to PostgreSQL.
    pub pg_link: TcpProxy,
    /// Its link to Redis.
    pub redis_link: TcpProxy,
    /// Its data dir, a tmpfs of [`NODE_FS_SIZE`].
    pub data_dir: PathBuf,
    /// Held by the fault acting on this node (one at a time per node).
    pub fault: tokio::sync::Mutex<()>,
    /// When it was paused (SIGSTOP .. SIGCONT), for the overlap check.
    pub pauses: Mutex<Vec<(Instant, Instant)>>,
    /// When its link to PostgreSQL was cut or silent, for the report.
    pub pg_cuts: Mutex<Vec<(Instant, Instant)>>,
}

/// Everything a run starts, dropped (stopped) at its end.
pub struct Cluster {
    pub issuer: TestIssuer,
    pub content: ContentServer,
    pub webhooks: WebhookReceiver,
    pub redis: tokio::sync::Mutex<RedisServer>,
    pub postgres: tokio::sync::Mutex<Postgres>,
    pub nodes: Vec<Node>,
    pub nginx: Nginx,
    /// `rt_sk_...` for the server API.
    pub server_key: String,
    /// Node restarts take it shared, Redis and PostgreSQL restarts take it
    /// alone: a node starts only with its services there.
    pub services: tokio::sync::RwLock<()>,
    /// The job lease the nodes run with.
    pub lease: Duration,
    _s3: S3Server,
    /// Unmounts the nodes' filesystems last.
    _mounts: Mounts,
}

/// The tmpfs mounts of a run; unmounted (lazily) on drop.
struct Mounts {
    root: PathBuf,
    dirs: Vec<PathBuf>,
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for dir in &self.dirs {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(dir)
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Mounts {
    fn mount(&mut self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir)?;
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={NODE_FS_SIZE},mode=0755"),
            ])
            .arg("tmpfs")
            .arg(&dir)
            .status()
            .context("run mount")?;
        if !status.success() {
            bail!(
                "mount -t tmpfs on {} failed (root is needed)",
                dir.display()
            );
        }
        self.dirs.push(dir.clone());
        Ok(dir)
    }
}

impl Cluster {
    /// Starts everything; `run` names the run's directory.
    pub async fn start(binary: &Path, run: &str, lease: Duration) -> anyhow::Result<Cluster> {
        let issuer = TestIssuer::start().await;
        let content = ContentServer::start().await;
        let webhooks = WebhookReceiver::start().await;
        let (postgres, redis, s3) =
            tokio::join!(Postgres::start(), RedisServer::start(), S3Server::start());
        let database = postgres.create_database("reeltime").await;
        let mut mounts = Mounts {
            root: std::env::temp_dir().join(format!("reeltime-chaos-{}-{run}", std::process::id())),
            dirs: Vec::new(),
        };

        let mut common: Vec<(String, String)> = issuer.env();
        common.extend(webhooks.env());
        common.extend(s3.env());
        let settings = [
            ("REELTIME_IMPORT_ALLOW_PRIVATE", "1".to_string()),
            ("REELTIME_SYNTHETIC_IMPORTS", "1".into()),
            ("REELTIME_JOB_LEASE_SECS", lease.as_secs().to_string()),
            ("REELTIME_WEBHOOK_RETRY_SCALE", "0.001".into()),
            ("REELTIME_DOWNLOAD_CONCURRENCY", "6".into()),
            ("REELTIME_PROCESS_CONCURRENCY", "1".into()),
            ("REELTIME_IMPORT_RATE_PER_MIN", "1000".into()),
            ("REELTIME_IMPORT_RATE_BURST", "100".into()),
            ("REELTIME_MAX_ACTIVE_IMPORTS_PER_USER", "100".into()),
            ("REELTIME_MAX_UPLOADS_PER_USER", "8".into()),
            ("REELTIME_SHUTDOWN_GRACE_SECS", "5".into()),
            ("REELTIME_HEARTBEAT_SECS", "5".into()),
            ("REELTIME_MEDIA_URL", s3.media_url("media")),
            (
                "REELTIME_MEDIA_SECRET",
                "one-secret-shared-by-every-chaos-node-0123456789".into(),
            ),
            ("RUST_LOG", "info".into()),
        ];
        common.extend(settings.into_iter().map(|(k, v)| (k.to_string(), v)));

        let pg_addr: SocketAddr = format!("127.0.0.1:{}", postgres.port()).parse()?;
        let redis_addr: SocketAddr = format!("127.0.0.1:{}", redis.port()).parse()?;
        let mut nodes = Vec::new();
        for index in 0..3 {
            let data_dir = mounts.mount(&format!("node{index}"))?;
            let pg_link = TcpProxy::start(pg_addr).await?;
            let redis_link = TcpProxy::start(redis_addr).await?;
            let mut env = common.clone();
            env.push((
                "REELTIME_DATABASE_URL".into(),
                format!("postgres://postgres@127.0.0.1:{}/reeltime", pg_link.port()),
            ));
            env.push((
                "REELTIME_REDIS_URL".into(),
                format!("redis://127.0.0.1:{}", redis_link.port()),
            ));
            // One at a time: the first runs the migrations.
            let process = ServerProcess::start_in(binary, &env, &data_dir, None).await;
            let addr = process.addr.clone();
            nodes.push(Node {
                index,
                process: tokio::sync::Mutex::new(process),
                addr,
                pg_link,
                redis_link,
                data_dir,
                fault: tokio::sync::Mutex::new(()),
                pauses: Mutex::default(),
                pg_cuts: Mutex::default(),
            });
        }
        let upstreams: Vec<String> = nodes.iter().map(|node| node.addr.clone()).collect();
        let nginx = Nginx::start(&upstreams).await;
        let server_key = create_server_key(binary, &database).await?;
        Ok(Cluster {
            issuer,
            content,
            webhooks,
            redis: tokio::sync::Mutex::new(redis),
            postgres: tokio::sync::Mutex::new(postgres),
            nodes,
            nginx,
            server_key,
            services: tokio::sync::RwLock::new(()),
            lease,
            _s3: s3,
            _mounts: mounts,
        })
    }

    /// Every node id each node has had (a node gets a new one at each
    /// start), mapped to the node's index: downloads and connection ids
    /// name nodes by these.
    pub async fn node_ids(&self) -> HashMap<String, usize> {
        let mut ids = HashMap::new();
        for node in &self.nodes {
            let log = node.process.lock().await.log();
            for line in log.lines() {
                if let Some(rest) = line.split("node=").nth(1)
                    && let Some(id) = rest.split_whitespace().next()
                {
                    ids.insert(id.trim_matches('"').to_string(), node.index);
                }
            }
        }
        ids
    }
}

/// `reeltime keys create --name chaos` against the shared database.
async fn create_server_key(binary: &Path, database: &str) -> anyhow::Result<String> {
    let dir = tempfile_dir()?;
    let output = tokio::process::Command::new(binary)
        .args(["keys", "create", "--name", "chaos"])
        .env("REELTIME_DATABASE_URL", database)
        .env("REELTIME_DATA_DIR", &dir)
        .output()
        .await
        .context("run reeltime keys create")?;
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .split_whitespace()
        .find(|word| word.starts_with("rt_sk_"))
        .map(str::to_string)
        .with_context(|| {
            format!(
                "no key printed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "reeltime-chaos-keys-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
