//! moto's standalone server as the S3-compatible object store.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{PROBE_EVERY, ServiceProcess, log_file};

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
    process: ServiceProcess,
    bucket: String,
}

impl S3Server {
    /// The bucket [`S3Server::start`] creates.
    pub const BUCKET: &'static str = "reeltime-media";

    /// Starts `moto_server`, waits until it answers S3 requests, and
    /// creates [`S3Server::BUCKET`].
    pub async fn start() -> S3Server {
        let process = ServiceProcess::new("moto_server", "TERM", &["moto.log", "moto.stderr.log"]);
        let log = process.path("moto.log");
        let binary = moto_server_path();
        let mut command = Command::new(&binary);
        command
            .args(["-H", "127.0.0.1", "-p", &process.port.to_string()])
            // moto must not look for real AWS settings of the machine.
            .env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET_ACCESS_KEY)
            .env("AWS_DEFAULT_REGION", S3_REGION)
            .stdout(log_file(&log))
            .stderr(log_file(&process.path("moto.stderr.log")));
        let mut server = S3Server {
            process,
            bucket: S3Server::BUCKET.to_string(),
        };
        let hint = format!(
            "{}: install it: python3 -m venv target/s3-venv && target/s3-venv/bin/pip install 'moto[server]' (./scripts/test does), or set MOTO_SERVER",
            binary.display()
        );
        server
            .process
            .spawn_ready(command, &hint, PROBE_EVERY * 4, list_buckets)
            .await;
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
        format!("http://127.0.0.1:{}", self.process.port)
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
        self.process.port
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

    /// The keys under `prefix` in [`S3Server::bucket`] (ListObjectsV2,
    /// path-style; moto takes it unsigned), so a test can see what the
    /// server left in the bucket.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let response = plain_client()
            // Prefixes here are `<prefix>/<id>/`: nothing to escape.
            .get(format!(
                "{}/{}?list-type=2&prefix={prefix}",
                self.endpoint(),
                self.bucket
            ))
            .send()
            .await
            .expect("ListObjectsV2 request");
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "ListObjectsV2 failed ({status}): {body}"
        );
        // Keys are plain (`<prefix>/<id>/<file>`): no XML escapes to undo.
        body.split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split_once("</Key>").map(|(key, _)| key.to_string()))
            .collect()
    }

    /// Everything the server logged.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// A client that goes to moto directly, whatever the proxy settings.
fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// ListBuckets: answers once the server takes S3 requests.
async fn list_buckets(port: u16) -> bool {
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    response.is_ok_and(|response| response.status().is_success())
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
