//! `redis-server` for bus tests.

use std::process::{Command, Stdio};

use super::{PORT_ATTEMPTS, PROBE_EVERY, ServiceProcess, Started, ask};

/// A `redis-server` with persistence off, for bus tests. It can be stopped
/// and started again on the same port to test what the nodes do when Redis
/// goes away and comes back.
pub struct RedisServer {
    process: ServiceProcess,
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits until it answers PING.
    pub async fn start() -> RedisServer {
        let mut server = RedisServer {
            process: ServiceProcess::new("redis-server", "TERM", &["redis.log"]),
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

    /// `redis://127.0.0.1:<port>`, what `REELTIME_REDIS_URL` takes.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.process.port)
    }

    /// The loopback port it listens on (the same after `start_again`).
    pub fn port(&self) -> u16 {
        self.process.port
    }

    /// Everything the server logged.
    pub fn log(&self) -> String {
        self.process.log()
    }

    async fn spawn(&mut self) -> Started {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.process.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.process.dir())
            .arg("--logfile")
            .arg(self.process.path("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.process
            .spawn(
                command,
                "install it: apt-get install redis-server",
                PROBE_EVERY,
                |port| async move {
                    ask(port, b"PING\r\n", 7).await.as_deref() == Some(b"+PONG\r\n".as_slice())
                },
            )
            .await
    }

    /// Stops the server (SIGTERM) and waits until it has exited: every
    /// client connection is closed, as when Redis goes away.
    pub async fn stop(&mut self) {
        self.process.stop().await;
    }

    /// Starts it again on the same port, empty, and waits until it answers.
    pub async fn start_again(&mut self) {
        if let Started::PortTaken = self.spawn().await {
            panic!(
                "redis-server: port {} taken; log:\n{}",
                self.port(),
                self.log()
            );
        }
    }
}
