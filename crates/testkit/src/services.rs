//! Real backing services for scale-out tests: a `redis-server` and a
//! PostgreSQL cluster, each on a free loopback port in its own temporary
//! directory, started from the Debian packages (`./scripts/test` installs
//! them). Start-up waits on the service answering (Redis `PING`,
//! `pg_isready`), never on a fixed sleep; dropping one shuts it down and
//! removes its files.
//!
//! The processes are `std::process::Child`ren rather than tokio ones so that
//! `Drop` can stop them without a runtime (a test's runtime may already be
//! gone when its fixtures drop).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a service may take to answer after start on a loaded machine.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a clean shutdown may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause between readiness probes.
const PROBE_EVERY: Duration = Duration::from_millis(25);

/// A port that was free a moment ago. The service binds it right after; the
/// tiny window in between is acceptable for tests on one machine.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

/// Sends `signal` (a name like `TERM`) to `pid` with the `kill` utility, as
/// [`crate::ServerProcess`] does, so the crate needs no libc bindings.
fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Signals `child` and waits (blocking) for it to exit; kills it after
/// [`STOP_TIMEOUT`]. Blocking is fine: it is only used on the way out.
fn stop_blocking(child: &mut Child, with: &str) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    signal(child.id(), with);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(PROBE_EVERY);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Like [`stop_blocking`], without blocking the test's runtime.
async fn stop_async(child: &mut Child, with: &str) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    signal(child.id(), with);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A `redis-server` with persistence off, for bus tests. It can be stopped
/// and started again on the same port to test what the nodes do when Redis
/// goes away and comes back.
pub struct RedisServer {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits until it answers PING.
    pub async fn start() -> RedisServer {
        let mut server = RedisServer {
            dir: tempfile::tempdir().expect("temp dir"),
            port: free_port(),
            child: None,
        };
        server.spawn().await;
        server
    }

    /// `redis://127.0.0.1:<port>`, what `REELTIME_REDIS_URL` takes.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The loopback port it listens on (the same after `start_again`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything the server logged.
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("redis.log"))
    }

    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!("cannot run redis-server ({err}); install it: apt-get install redis-server")
            });
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if self.ping().await {
                return;
            }
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("redis-server exited with {status}; log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING; log:\n{}",
                self.log()
            );
            tokio::time::sleep(PROBE_EVERY).await;
        }
    }

    /// True when the server answers `PING` with `+PONG`.
    async fn ping(&self) -> bool {
        let probe = async {
            let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
            stream.write_all(b"PING\r\n").await.ok()?;
            let mut answer = [0u8; 7];
            stream.read_exact(&mut answer).await.ok()?;
            Some(&answer == b"+PONG\r\n")
        };
        tokio::time::timeout(Duration::from_secs(2), probe)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    }

    /// Stops the server (SIGTERM) and waits until it has exited: every
    /// client connection is closed, as when Redis goes away.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_async(&mut child, "TERM").await;
        }
    }

    /// Starts it again on the same port, empty, and waits until it answers.
    pub async fn start_again(&mut self) {
        self.spawn().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_blocking(&mut child, "TERM");
        }
    }
}

/// A throwaway PostgreSQL cluster: `initdb` into a temporary directory, then
/// `postgres` on a free loopback port with trust authentication for the
/// `postgres` superuser and durability off (fsync) for speed.
///
/// PostgreSQL refuses to run as root; when the tests run as root (as CI
/// does) both commands run as the `postgres` system user that Debian's
/// package creates, and the directory is handed to that user.
pub struct Postgres {
    /// Data, socket and log; removed after `Drop` has stopped the server.
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Postgres {
    /// Creates and starts a cluster; waits until it accepts connections.
    pub async fn start() -> Postgres {
        let bin = pg_bin_dir();
        let dir = tempfile::tempdir().expect("temp dir");
        let owner = pg_owner();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("hand the temp dir to the postgres user");
        }
        let data = dir.path().join("data");
        let log_path = dir.path().join("postgres.log");

        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                File::create(dir.path().join("initdb.log")).expect("initdb log"),
            ));
        as_owner(&mut initdb, owner);
        let status = tokio::task::spawn_blocking(move || initdb.status())
            .await
            .expect("initdb task")
            .unwrap_or_else(|err| panic!("cannot run initdb in {}: {err}", bin_display(&bin)));
        assert!(
            status.success(),
            "initdb failed ({status}):\n{}",
            read_log(&dir.path().join("initdb.log"))
        );

        let port = free_port();
        let mut postgres = Command::new(bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .arg("-k")
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(File::create(&log_path).expect("postgres log")));
        as_owner(&mut postgres, owner);
        let child = postgres.spawn().expect("spawn postgres");
        let mut server = Postgres {
            dir,
            bin,
            port,
            child: Some(child),
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let probe = tokio::process::Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", "postgres", "-d", "postgres", "-q"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
            if probe.is_ok_and(|status| status.success()) {
                return;
            }
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("postgres exited with {status}; log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not accept connections; log:\n{}",
                self.log()
            );
            tokio::time::sleep(PROBE_EVERY).await;
        }
    }

    /// URL of the `postgres` database, as superuser.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// URL of database `name` on this cluster.
    pub fn url_of(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything the server logged.
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("postgres.log"))
    }

    /// Creates an empty database `name` (letters, digits, `_`) and returns
    /// its URL: one cluster can then serve several independent tests.
    pub async fn create_database(&self, name: &str) -> String {
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "database name {name:?} must be letters, digits and _"
        );
        let output = tokio::process::Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
            ])
            .args(["-c", &format!("CREATE DATABASE \"{name}\"")])
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run psql");
        assert!(
            output.status.success(),
            "CREATE DATABASE {name} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        self.url_of(name)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGINT is PostgreSQL's "fast" shutdown: disconnects clients,
            // exits promptly and cleanly.
            stop_blocking(&mut child, "INT");
        }
    }
}

fn bin_display(bin: &Path) -> String {
    bin.display().to_string()
}

/// Where `initdb`, `postgres`, `pg_isready` and `psql` are: `PG_BINDIR` if
/// set, else the newest `/usr/lib/postgresql/<version>/bin` (Debian puts
/// the server binaries there, off the PATH), else the PATH.
fn pg_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path).find(|dir| dir.join("initdb").exists())
        })
        .unwrap_or_else(|| {
            panic!(
                "PostgreSQL server binaries (initdb, postgres) not found: apt-get install postgresql, or set PG_BINDIR"
            )
        })
}

/// The uid and gid to run PostgreSQL as: none when not root, else the
/// `postgres` system user.
fn pg_owner() -> Option<(u32, u32)> {
    let me = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<u32>().ok());
    if me != Some(0) {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let found = passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.first() == Some(&"postgres") && fields.len() > 3 {
            Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
        } else {
            None
        }
    });
    Some(found.unwrap_or_else(|| {
        panic!(
            "running as root, and PostgreSQL refuses root: a `postgres` system user is needed (apt-get install postgresql creates it)"
        )
    }))
}

fn as_owner(command: &mut Command, owner: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
}
