//! Runs the real `reeltime` binary as a child process on a free port, with
//! its own data dir, and keeps everything it logs for assertions.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

/// How long start-up may take on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running reeltime process.
pub struct ServerProcess {
    binary: PathBuf,
    /// A command the binary runs under (e.g. `prlimit --nofile=4096:4096`).
    wrapper: Vec<String>,
    env: Vec<(String, String)>,
    data_dir: PathBuf,
    _temp: Option<Arc<tempfile::TempDir>>,
    child: Option<Child>,
    /// `127.0.0.1:port`, the same across restarts.
    pub addr: String,
    log: Arc<Mutex<String>>,
    log_grew: Arc<Notify>,
}

impl ServerProcess {
    /// Starts `binary` with `env` (on top of a clean REELTIME_* environment)
    /// and a fresh temporary data dir.
    pub async fn start(binary: &Path, env: &[(String, String)]) -> ServerProcess {
        let temp = Arc::new(tempfile::tempdir().expect("temp dir"));
        let data_dir = temp.path().to_path_buf();
        ServerProcess::start_in(binary, env, &data_dir, Some(temp)).await
    }

    /// Starts `binary` under `wrapper`, a command that takes the program
    /// and execs it (`prlimit --nofile=4096:4096`), so the pid is the
    /// server's.
    pub async fn start_under(
        wrapper: &[&str],
        binary: &Path,
        env: &[(String, String)],
    ) -> ServerProcess {
        let temp = Arc::new(tempfile::tempdir().expect("temp dir"));
        let mut server = ServerProcess::unstarted(binary, env, temp.path(), Some(temp.clone()));
        server.wrapper = wrapper.iter().map(|part| part.to_string()).collect();
        server.spawn().await;
        server
    }

    /// Starts with a given data dir (to share state between processes).
    pub async fn start_in(
        binary: &Path,
        env: &[(String, String)],
        data_dir: &Path,
        temp: Option<Arc<tempfile::TempDir>>,
    ) -> ServerProcess {
        let mut server = ServerProcess::unstarted(binary, env, data_dir, temp);
        server.spawn().await;
        server
    }

    fn unstarted(
        binary: &Path,
        env: &[(String, String)],
        data_dir: &Path,
        temp: Option<Arc<tempfile::TempDir>>,
    ) -> ServerProcess {
        ServerProcess {
            binary: binary.to_path_buf(),
            wrapper: Vec::new(),
            env: env.to_vec(),
            data_dir: data_dir.to_path_buf(),
            _temp: temp,
            child: None,
            addr: "127.0.0.1:0".into(),
            log: Arc::new(Mutex::new(String::new())),
            log_grew: Arc::new(Notify::new()),
        }
    }

    async fn spawn(&mut self) {
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        };
        for (key, _) in std::env::vars() {
            if key.starts_with("REELTIME_") || key.starts_with("CLERK_") {
                command.env_remove(key);
            }
        }
        command
            .env("REELTIME_LISTEN", &self.addr)
            .env("REELTIME_DATA_DIR", &self.data_dir)
            .env("RUST_LOG", "info,reeltime=debug")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn reeltime");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::clone(&self.log);
        let grew = Arc::clone(&self.log_grew);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                {
                    let mut log = log.lock().expect("lock");
                    log.push_str(&line);
                    log.push('\n');
                }
                grew.notify_waiters();
            }
        });
        self.child = Some(child);
        let line = self
            .wait_for_log_after(self.log_len(), "listening on http://", START_TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("reeltime did not start; log:\n{}", self.log()));
        let addr = line
            .split("listening on http://")
            .nth(1)
            // Text logs end the address with a space, JSON logs with a quote.
            .map(|rest| {
                rest.split(|c: char| c.is_whitespace() || c == '"')
                    .next()
                    .unwrap_or(rest)
            })
            .expect("address in log line");
        self.addr = addr.to_string();
    }

    fn log_len(&self) -> usize {
        self.log.lock().expect("lock").len()
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("lock").clone()
    }

    /// Waits for a log line containing `needle` and returns it.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait_for_log_after(0, needle, timeout).await
    }

    async fn wait_for_log_after(
        &self,
        from: usize,
        needle: &str,
        timeout: Duration,
    ) -> Option<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let grew = self.log_grew.notified();
            tokio::pin!(grew);
            grew.as_mut().enable();
            {
                let log = self.log.lock().expect("lock");
                if let Some(line) = log[from.min(log.len())..]
                    .lines()
                    .find(|line| line.contains(needle))
                {
                    return Some(line.to_string());
                }
            }
            if let Some(child) = &mut self.child_ref()
                && child.id().is_none()
            {
                return None;
            }
            if tokio::time::timeout_at(deadline, grew).await.is_err() {
                return None;
            }
        }
    }

    fn child_ref(&self) -> Option<&Child> {
        self.child.as_ref()
    }

    pub fn http(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ws(&self) -> String {
        format!("ws://{}/api/ws/progress", self.addr)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Where the server keeps an import's files while it works on it.
    pub fn import_dir(&self, import_id: &str) -> PathBuf {
        self.data_dir.join("imports").join(import_id)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Sends SIGTERM and returns at once: the node drains (closes its
    /// sockets with 1001, hands its jobs back) while the test watches.
    /// [`ServerProcess::stop`] afterwards waits for the exit.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends `signal` (a name: `STOP` pauses the process, `CONT` resumes
    /// it) and returns at once.
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let _ = std::process::Command::new("kill")
                .args([&format!("-{signal}"), &pid.to_string()])
                .status();
        }
    }

    /// SIGTERM, then waits for exit; returns the exit status code.
    pub async fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .expect("reeltime exits after SIGTERM")
            .expect("wait");
        status.code()
    }

    /// SIGKILL: a crash, nothing saved on the way out.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts again on the same port with the same data dir and settings.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill first");
        self.spawn().await;
    }

    /// Sets an extra environment variable for the next restart.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }
}
