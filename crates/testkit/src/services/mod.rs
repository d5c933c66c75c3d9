//! Real backing services for scale-out tests: a `redis-server`, a
//! PostgreSQL cluster, an S3-compatible server and nginx as the load
//! balancer, each on a free loopback port in its own temporary directory,
//! started from Debian's packages and (for S3, moto's standalone server)
//! PyPI's; `./scripts/test` installs them.
//!
//! Each is one [`ServiceProcess`] (the child, its directory, port and logs;
//! start-up waits on the service answering, never on a fixed sleep;
//! dropping it stops the process and removes its files) plus what is
//! particular to it: its command line and its readiness probe.

mod nginx;
mod postgres;
mod redis;
mod s3;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use nginx::Nginx;
pub use postgres::Postgres;
pub use redis::RedisServer;
pub use s3::{S3_ACCESS_KEY_ID, S3_REGION, S3_SECRET_ACCESS_KEY, S3Server};

/// How long a service may take to answer after start on a loaded machine.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a clean shutdown may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause between readiness probes.
const PROBE_EVERY: Duration = Duration::from_millis(25);

/// How [`ServiceProcess::spawn`] ended, when it did not fail the test.
#[must_use]
enum Started {
    Ready,
    /// The process exited because another one had bound its port.
    PortTaken,
}

/// How many ports a first start tries before failing the test.
const PORT_ATTEMPTS: usize = 5;

/// One service's child process with its temporary directory and port.
///
/// The process is a `std::process::Child` rather than a tokio one so that
/// `Drop` can stop it without a runtime (a test's runtime may already be
/// gone when its fixtures drop).
struct ServiceProcess {
    name: &'static str,
    /// The signal of a prompt, clean shutdown for this service.
    stop_signal: &'static str,
    /// Files under `dir` that make up its log, in the order shown.
    log_files: &'static [&'static str],
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl ServiceProcess {
    /// A service not yet running, with a fresh directory and a free port.
    fn new(
        name: &'static str,
        stop_signal: &'static str,
        log_files: &'static [&'static str],
    ) -> ServiceProcess {
        ServiceProcess {
            name,
            stop_signal,
            log_files,
            dir: tempfile::tempdir().expect("temp dir"),
            port: free_port(),
            child: None,
        }
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Every log file, concatenated.
    fn log(&self) -> String {
        self.log_files
            .iter()
            .map(|file| read_file(&self.path(file)))
            .collect()
    }

    /// [`ServiceProcess::spawn`], failing the test if the port was taken.
    async fn spawn_ready<F, P>(
        &mut self,
        command: Command,
        install_hint: &str,
        every: Duration,
        probe: P,
    ) where
        P: Fn(u16) -> F,
        F: Future<Output = bool>,
    {
        if let Started::PortTaken = self.spawn(command, install_hint, every, probe).await {
            panic!(
                "{}: port {} taken; log:\n{}",
                self.name,
                self.port,
                self.log()
            );
        }
    }

    /// A new free port, for a first start whose port was taken.
    fn pick_another_port(&mut self) {
        self.port = free_port();
    }

    /// Spawns `command` (stdin closed) and probes it every `every` until it
    /// is ready; fails the test with its log when the process exits or
    /// [`READY_TIMEOUT`] passes, except when it exited because its port was
    /// taken meanwhile (the port is free when picked, and another test's
    /// process may bind it before this one does): then it says so, and a
    /// first start tries another port. `install_hint` says how to get the
    /// binary.
    async fn spawn<F, P>(
        &mut self,
        mut command: Command,
        install_hint: &str,
        every: Duration,
        probe: P,
    ) -> Started
    where
        P: Fn(u16) -> F,
        F: Future<Output = bool>,
    {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log_before = self.log().len();
        let child = command
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {} ({err}); {install_hint}", self.name));
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if probe(self.port).await {
                return Started::Ready;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let log = self.log();
                if log
                    .get(log_before..)
                    .unwrap_or(&log)
                    .contains("Address already in use")
                {
                    self.child = None;
                    return Started::PortTaken;
                }
                panic!("{} exited with {status}; log:\n{log}", self.name);
            }
            assert!(
                Instant::now() < deadline,
                "{} did not become ready; log:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(every).await;
        }
    }

    /// Stops the process with its clean-shutdown signal and waits until it
    /// has exited (killed after [`STOP_TIMEOUT`]), without blocking the
    /// test's runtime.
    async fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            let signal = self.stop_signal;
            let _ = tokio::task::spawn_blocking(move || stop_child(child, signal)).await;
        }
    }
}

impl Drop for ServiceProcess {
    /// Like [`ServiceProcess::stop`], blocking: it is only the way out.
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child, self.stop_signal);
        }
    }
}

/// Signals `child` with `with` and waits for it to exit; kills it after
/// [`STOP_TIMEOUT`]. Blocks the calling thread.
fn stop_child(mut child: Child, with: &str) {
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

fn read_file(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A log file for a child's stdout or stderr.
fn log_file(path: &Path) -> Stdio {
    Stdio::from(std::fs::File::create(path).expect("service log file"))
}

/// Sends `request` to `127.0.0.1:port` and reads the whole answer (or the
/// first `limit` bytes), within 2 s; `None` on any failure.
async fn ask(port: u16, request: &[u8], limit: usize) -> Option<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        stream.write_all(request).await.ok()?;
        let mut answer = Vec::new();
        stream
            .take(limit as u64)
            .read_to_end(&mut answer)
            .await
            .ok()?;
        Some(answer)
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

/// The current user id (root runs some services differently).
fn current_uid() -> Option<u32> {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<u32>().ok())
}
