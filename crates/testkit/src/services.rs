//! Real backing services for scale-out tests: a `redis-server`, a
//! PostgreSQL cluster, an S3-compatible server and nginx as the load
//! balancer, each on a free loopback port in its own temporary directory,
//! started from Debian's packages and (for S3, moto's standalone server)
//! PyPI's; `./scripts/test` installs them. Start-up waits on the service
//! answering (Redis `PING`, `pg_isready`, an S3 request, an HTTP request to
//! nginx), never on a fixed sleep; dropping one shuts it down and removes
//! its files.
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
        wait_ready(self, PROBE_EVERY).await;
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
        wait_ready(&mut server, PROBE_EVERY).await;
        server
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
    if current_uid() != Some(0) {
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

/// Credentials the S3 test server is given; moto accepts any, but the
/// client signs every request, so it needs some.
pub const S3_ACCESS_KEY_ID: &str = "reeltime-test";
/// See [`S3_ACCESS_KEY_ID`].
pub const S3_SECRET_ACCESS_KEY: &str = "reeltime-test-secret";
/// The region the tests sign for.
pub const S3_REGION: &str = "us-east-1";

/// A real S3-compatible server: moto's standalone server (`moto_server`,
/// from PyPI's `moto[server]`) on a free loopback port, holding its
/// objects in memory, with one empty bucket made at start.
///
/// `moto_server` is found through `MOTO_SERVER` (a path), else the venv
/// that `./scripts/test` makes at `target/s3-venv`, else the PATH.
pub struct S3Server {
    dir: tempfile::TempDir,
    port: u16,
    bucket: String,
    child: Option<Child>,
}

impl S3Server {
    /// The bucket [`S3Server::start`] creates.
    pub const BUCKET: &'static str = "reeltime-media";

    /// Starts `moto_server`, waits until it answers S3 requests, and
    /// creates [`S3Server::BUCKET`].
    pub async fn start() -> S3Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let log = File::create(dir.path().join("moto.log")).expect("moto log");
        let log_err = log.try_clone().expect("moto log");
        let binary = moto_server_path();
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(dir.path())
            // moto must not look for real AWS settings of the machine.
            .env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET_ACCESS_KEY)
            .env("AWS_DEFAULT_REGION", S3_REGION)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot run {} ({err}); install it: python3 -m venv target/s3-venv && target/s3-venv/bin/pip install 'moto[server]' (./scripts/test does), or set MOTO_SERVER",
                    binary.display()
                )
            });
        let mut server = S3Server {
            dir,
            port,
            bucket: S3Server::BUCKET.to_string(),
            child: Some(child),
        };
        wait_ready(&mut server, PROBE_EVERY * 4).await;
        let bucket = server.bucket.clone();
        server.create_bucket(&bucket).await;
        server
    }

    /// Creates another bucket (letters, digits, `-`).
    pub async fn create_bucket(&self, name: &str) {
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "bucket name {name:?} must be lowercase letters, digits and -"
        );
        // Path-style CreateBucket; moto takes it unsigned.
        let response = reqwest::Client::new()
            .put(format!("{}/{name}", self.endpoint()))
            .send()
            .await
            .expect("CreateBucket request");
        let status = response.status();
        assert!(
            status.is_success(),
            "CreateBucket {name} failed ({status}): {}",
            response.text().await.unwrap_or_default()
        );
    }

    /// `http://127.0.0.1:<port>`, what `AWS_ENDPOINT_URL` and
    /// `REELTIME_S3_ENDPOINT` take.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The bucket made at start.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `s3://<bucket>/<prefix>`, what `REELTIME_MEDIA_URL` takes.
    pub fn media_url(&self, prefix: &str) -> String {
        format!("s3://{}/{}", self.bucket, prefix.trim_matches('/'))
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The AWS settings a client of this server needs: credentials, region
    /// and `AWS_ENDPOINT_URL`.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY_ID.to_string()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_ACCESS_KEY.to_string()),
            ("AWS_REGION", S3_REGION.to_string()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_string(), value))
        .collect()
    }

    /// Everything the server logged.
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("moto.log"))
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_blocking(&mut child, "TERM");
        }
    }
}

/// `MOTO_SERVER`, else `<workspace>/target/s3-venv/bin/moto_server` (made by
/// `./scripts/test`), else `moto_server` on the PATH.
fn moto_server_path() -> PathBuf {
    if let Some(path) = std::env::var_os("MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/s3-venv/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("moto_server")
}

/// nginx as the load balancer in front of several reeltime nodes: a
/// generated configuration in a temporary directory (pid file, logs and
/// temp paths there too), one worker (so round-robin is easy to follow),
/// on a free loopback port. Dropping it stops nginx (SIGTERM, its fast
/// shutdown) and removes the directory.
///
/// The proxy settings are the ones `docs/deploy.md` explains: HTTP/1.1 to
/// the nodes with the `Upgrade`/`Connection` headers passed on (WebSocket),
/// a read timeout well above the heartbeat, and `proxy_next_upstream error
/// timeout`, so a connection a draining or dead node refuses goes to the
/// next node.
pub struct Nginx {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Nginx {
    /// Starts nginx balancing over `upstreams` (`host:port` each) and waits
    /// until it answers HTTP on its port.
    pub async fn start(upstreams: &[String]) -> Nginx {
        assert!(!upstreams.is_empty(), "nginx needs at least one upstream");
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let as_root = current_uid() == Some(0);
        let config = nginx_config(dir.path(), port, upstreams, as_root);
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, config).expect("write nginx.conf");
        let log = File::create(dir.path().join("stderr.log")).expect("nginx log");
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            // The error log before the configuration is read (the built-in
            // default, /var/log/nginx, may not be writable).
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .args(["-g", "daemon off;"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|err| {
                panic!("cannot run nginx ({err}); install it: apt-get install nginx")
            });
        let mut nginx = Nginx {
            dir,
            port,
            child: Some(child),
        };
        wait_ready(&mut nginx, PROBE_EVERY).await;
        nginx
    }

    /// `http://127.0.0.1:<port>`: the REST API through the balancer.
    pub fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The progress socket's URL through the balancer.
    pub fn ws(&self) -> String {
        format!("ws://127.0.0.1:{}/api/ws/progress", self.port)
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The generated configuration.
    pub fn config(&self) -> String {
        read_log(&self.dir.path().join("nginx.conf"))
    }

    /// The error log, then the access log (one line per request with the
    /// node that answered it).
    pub fn log(&self) -> String {
        format!(
            "{}{}--- access log\n{}",
            read_log(&self.dir.path().join("stderr.log")),
            read_log(&self.dir.path().join("error.log")),
            read_log(&self.dir.path().join("access.log"))
        )
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM is nginx's fast shutdown; SIGQUIT (graceful) would
            // wait for every proxied WebSocket to end.
            stop_blocking(&mut child, "TERM");
        }
    }
}

/// `NGINX` (a path) if set, else `nginx` on the PATH, else Debian's
/// `/usr/sbin/nginx` (off a non-root user's PATH).
fn nginx_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NGINX") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nginx"))
            .find(|candidate| candidate.exists())
    });
    on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"))
}

fn current_uid() -> Option<u32> {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<u32>().ok())
}

/// The configuration [`Nginx`] runs: everything under `dir`, listening on
/// `127.0.0.1:port`, balancing over `upstreams`.
fn nginx_config(dir: &Path, port: u16, upstreams: &[String], as_root: bool) -> String {
    let dir = dir.display();
    let servers: String = upstreams
        .iter()
        .map(|upstream| format!("        server {upstream} max_fails=1 fail_timeout=10s;\n"))
        .collect();
    // Run as root, workers stay root: the temp directory is root's. (As
    // any other user the `user` directive is ignored with a warning, so it
    // is left out.)
    let user = if as_root { "user root;\n" } else { "" };
    format!(
        r#"# Generated by reeltime-testkit for one test run.
{user}worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;

events {{
    worker_connections 4096;
}}

http {{
    log_format upstream '$remote_addr "$request" $status upstream=$upstream_addr '
                        'upstream_status=$upstream_status time=$request_time';
    access_log {dir}/access.log upstream;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    # "Connection: upgrade" only when the client asked for an upgrade;
    # otherwise an empty Connection header, which keeps upstream keepalive.
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      '';
    }}

    upstream reeltime {{
{servers}        keepalive 16;
    }}

    server {{
        listen 127.0.0.1:{port};

        location = /__testkit/nginx-ready {{
            return 204;
        }}

        # Operator endpoints stay off the public side (docs/deploy.md).
        location = /metrics {{
            return 404;
        }}
        location = /readyz {{
            return 404;
        }}

        location / {{
            proxy_pass http://reeltime;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_connect_timeout 5s;
            # Longer than REELTIME_HEARTBEAT_SECS (25 s): the server's pings
            # keep a quiet socket alive through the proxy.
            proxy_read_timeout 75s;
            proxy_send_timeout 75s;
            # A node that refuses the connection (draining, dead) or does
            # not accept it in time: try the next one.
            proxy_next_upstream error timeout;
        }}
    }}
}}
"#
    )
}

/// A service process a test waits for: how to ask it whether it is ready,
/// and what to show when it is not.
trait Service {
    const NAME: &'static str;
    fn child(&mut self) -> &mut Option<Child>;
    fn log(&self) -> String;
    /// One readiness check; false means "not yet".
    async fn probe(&self) -> bool;
}

/// Probes `service` every `every` until it is ready; fails the test with
/// its log when the process exits or [`READY_TIMEOUT`] passes.
async fn wait_ready<S: Service>(service: &mut S, every: Duration) {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if service.probe().await {
            return;
        }
        if let Some(child) = service.child()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!("{} exited with {status}; log:\n{}", S::NAME, service.log());
        }
        assert!(
            Instant::now() < deadline,
            "{} did not become ready; log:\n{}",
            S::NAME,
            service.log()
        );
        tokio::time::sleep(every).await;
    }
}

impl Service for RedisServer {
    const NAME: &'static str = "redis-server";
    fn child(&mut self) -> &mut Option<Child> {
        &mut self.child
    }
    fn log(&self) -> String {
        RedisServer::log(self)
    }
    async fn probe(&self) -> bool {
        self.ping().await
    }
}

impl Service for Postgres {
    const NAME: &'static str = "postgres";
    fn child(&mut self) -> &mut Option<Child> {
        &mut self.child
    }
    fn log(&self) -> String {
        Postgres::log(self)
    }
    async fn probe(&self) -> bool {
        let status = tokio::process::Command::new(self.bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-q"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        status.is_ok_and(|status| status.success())
    }
}

impl Service for S3Server {
    const NAME: &'static str = "moto_server";
    fn child(&mut self) -> &mut Option<Child> {
        &mut self.child
    }
    fn log(&self) -> String {
        S3Server::log(self)
    }
    /// ListBuckets: answers once the server takes S3 requests.
    async fn probe(&self) -> bool {
        let response = reqwest::Client::new()
            .get(self.endpoint())
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        response.is_ok_and(|response| response.status().is_success())
    }
}

impl Service for Nginx {
    const NAME: &'static str = "nginx";
    fn child(&mut self) -> &mut Option<Child> {
        &mut self.child
    }
    fn log(&self) -> String {
        Nginx::log(self)
    }
    /// A request to its own health location answered by a worker: the port
    /// is bound and a worker is accepting.
    async fn probe(&self) -> bool {
        let probe = async {
            let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
            stream
                .write_all(b"GET /__testkit/nginx-ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.ok()?;
            Some(answer.starts_with(b"HTTP/1.1 204"))
        };
        tokio::time::timeout(Duration::from_secs(2), probe)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    }
}
