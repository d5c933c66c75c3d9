//! A throwaway PostgreSQL cluster.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{
    PORT_ATTEMPTS, PROBE_EVERY, ServiceProcess, Started, current_uid, log_file, read_file,
};

/// A log file opened for appending, so a restart keeps the earlier log.
fn log_file_append(path: &Path) -> Stdio {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("postgres log file");
    Stdio::from(file)
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
    process: ServiceProcess,
    bin: PathBuf,
    /// The cluster's data directory, kept across restarts.
    data: PathBuf,
    /// Who runs it (the `postgres` user when the tests run as root).
    owner: Option<(u32, u32)>,
}

impl Postgres {
    /// Creates and starts a cluster; waits until it accepts connections.
    pub async fn start() -> Postgres {
        let bin = pg_bin_dir();
        // SIGINT is PostgreSQL's "fast" shutdown: disconnects clients,
        // exits promptly and cleanly.
        let process = ServiceProcess::new("postgres", "INT", &["postgres.log"]);
        let owner = pg_owner();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(process.dir(), Some(uid), Some(gid))
                .expect("hand the temp dir to the postgres user");
        }
        let data = process.path("data");

        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync")
            .current_dir(process.dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&process.path("initdb.log")));
        as_owner(&mut initdb, owner);
        let status = tokio::task::spawn_blocking(move || initdb.status())
            .await
            .expect("initdb task")
            .unwrap_or_else(|err| panic!("cannot run initdb in {}: {err}", bin.display()));
        assert!(
            status.success(),
            "initdb failed ({status}):\n{}",
            read_file(&process.path("initdb.log"))
        );

        let mut server = Postgres {
            process,
            bin,
            data,
            owner,
        };
        for _ in 1..PORT_ATTEMPTS {
            if let Started::Ready = server.spawn().await {
                return server;
            }
            server.process.pick_another_port();
        }
        server.start_again().await;
        server
    }

    async fn spawn(&mut self) -> Started {
        let mut postgres = Command::new(self.bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &self.process.port.to_string()])
            .arg("-k")
            .arg(self.process.dir())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(log_file_append(&self.process.path("postgres.log")));
        as_owner(&mut postgres, self.owner);
        let pg_isready = self.bin.join("pg_isready");
        self.process
            .spawn(
                postgres,
                "install it: apt-get install postgresql",
                PROBE_EVERY,
                |port| is_ready(&pg_isready, port),
            )
            .await
    }

    /// Stops the server (fast shutdown: every client is disconnected) and
    /// waits until it has exited; the data stays, as when PostgreSQL
    /// restarts or fails over.
    pub async fn stop(&mut self) {
        self.process.stop().await;
    }

    /// Starts it again on the same port with the same data, and waits
    /// until it accepts connections.
    pub async fn start_again(&mut self) {
        if let Started::PortTaken = self.spawn().await {
            panic!(
                "postgres: port {} taken; log:\n{}",
                self.process.port,
                self.process.log()
            );
        }
    }

    /// URL of the `postgres` database, as superuser.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// URL of database `name` on this cluster.
    pub fn url_of(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.process.port)
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.process.port
    }

    /// Everything the server logged.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Creates an empty database `name` (letters, digits, `_`) and returns
    /// its URL: one cluster can then serve several independent tests.
    pub async fn create_database(&self, name: &str) -> String {
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "database name {name:?} must be letters, digits and _"
        );
        let output = tokio::process::Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.process.port.to_string()])
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

/// `pg_isready` says the cluster accepts connections.
async fn is_ready(pg_isready: &Path, port: u16) -> bool {
    let status = tokio::process::Command::new(pg_isready)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", "postgres", "-d", "postgres", "-q"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    status.is_ok_and(|status| status.success())
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
