//! Every setting of the server, in one place. Each one is a flag and an
//! environment variable; `reeltime --help` lists them all.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use clap::Parser;

/// Raw settings as given on the command line or in the environment.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "reeltime",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("REELTIME_GIT_COMMIT"), ")"),
    about = "Authenticated real-time progress of video imports over WebSocket",
    long_about = "Authenticated real-time progress of video imports over WebSocket.\n\n\
        With no key source (REELTIME_JWKS_URL, CLERK_PUBLISHABLE_KEY or CLERK_JWT_KEY) the \
        server runs its own development issuer on a loopback address."
)]
pub struct Settings {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, env = "REELTIME_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory for the database, downloads and keys.
    #[arg(long, env = "REELTIME_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Database URL: sqlite://... (default sqlite://<data dir>/reeltime.db) or postgres://... for several nodes.
    #[arg(long, env = "REELTIME_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Redis URL (redis://...) for the bus between nodes; unset: in-process bus (one node).
    #[arg(long, env = "REELTIME_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// JWKS endpoint of the token issuer (any OIDC/JWKS issuer).
    #[arg(long, env = "REELTIME_JWKS_URL")]
    pub jwks_url: Option<String>,

    /// Expected `iss` claim; derived from CLERK_PUBLISHABLE_KEY when that is set.
    #[arg(long, env = "REELTIME_ISSUER")]
    pub issuer: Option<String>,

    /// Clerk publishable key (pk_test_... or pk_live_...): issuer and JWKS are derived from it.
    #[arg(long, env = "CLERK_PUBLISHABLE_KEY")]
    pub clerk_publishable_key: Option<String>,

    /// Clerk JWT verification key (PEM public key) for verification with no network.
    #[arg(long, env = "CLERK_JWT_KEY")]
    pub clerk_jwt_key: Option<String>,

    /// Comma-separated origins accepted in the `azp` claim; when set, `azp` is required.
    #[arg(long, env = "REELTIME_AUTHORIZED_PARTIES", value_delimiter = ',')]
    pub authorized_parties: Vec<String>,

    /// Comma-separated origins allowed to open the WebSocket (unset: any).
    #[arg(long, env = "REELTIME_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Leeway in seconds for `exp` and `nbf`.
    #[arg(long, env = "REELTIME_CLOCK_SKEW_SECS", default_value_t = 5)]
    pub clock_skew_secs: u64,

    /// Seconds a socket may stay open without authenticating.
    #[arg(long, env = "REELTIME_AUTH_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub auth_timeout_secs: u64,

    /// Seconds between WebSocket pings; a peer silent for two intervals is dropped.
    #[arg(long, env = "REELTIME_HEARTBEAT_SECS", default_value_t = 25, value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_secs: u64,

    /// Most sockets one user may hold at once.
    #[arg(long, env = "REELTIME_MAX_CONNECTIONS_PER_USER", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections_per_user: u64,

    /// Most sockets on this node (unset: no limit but the open-file limit).
    #[arg(long, env = "REELTIME_MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,

    /// Sockets that have not yet sent their token (first-message auth) on this node; over it a new one is closed 1013.
    #[arg(long, env = "REELTIME_MAX_PENDING_AUTH", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_pending_auth: u64,

    /// Sockets one client address (IPv6: one /64) may have waiting for their token; over it a new one is closed 1013.
    #[arg(long, env = "REELTIME_MAX_PENDING_AUTH_PER_IP", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_pending_auth_per_ip: u64,

    /// Authenticated connects of this node that read the database at once (the snapshot); the others wait their turn.
    #[arg(long, env = "REELTIME_CONNECT_SLOTS", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_slots: u64,

    /// Milliseconds a connect waits for one of those slots; then it is closed 1013 "server busy" and its client backs off.
    #[arg(long, env = "REELTIME_CONNECT_WAIT_MS", default_value_t = 2000)]
    pub connect_wait_ms: u64,

    /// Open files kept free of sockets waiting for their token, for /healthz, /readyz and authenticated connects.
    #[arg(long, env = "REELTIME_FD_RESERVE", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub fd_reserve: u64,

    /// Comma-separated proxy IPs or CIDRs whose X-Forwarded-For names the client (unset: the peer address is the client).
    #[arg(long, env = "REELTIME_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,

    /// Seconds a client has to send a request's headers (also the keep-alive wait for the next request).
    #[arg(long, env = "REELTIME_HTTP_HEADER_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_header_timeout_secs: u64,

    /// Seconds an HTTP connection may go with no byte moving either way before it is closed (not WebSockets: they have heartbeats).
    #[arg(long, env = "REELTIME_HTTP_IDLE_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_idle_timeout_secs: u64,

    /// Address for /metrics and /readyz (and /healthz); when set they are not served on REELTIME_LISTEN.
    #[arg(long, env = "REELTIME_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// Log lines as `text` (for people) or `json` (one object per line, for a log collector).
    #[arg(long, env = "REELTIME_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Seconds to finish closing sockets and saving jobs on SIGTERM/SIGINT.
    #[arg(long, env = "REELTIME_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

    /// Allow imports from loopback, private and link-local addresses (1/0).
    #[arg(long, env = "REELTIME_IMPORT_ALLOW_PRIVATE", default_value = "0", value_parser = parse_flag)]
    pub import_allow_private: bool,

    /// Comma-separated host names or IPs that imports may reach even when private.
    #[arg(long, env = "REELTIME_IMPORT_ALLOW_HOSTS", value_delimiter = ',')]
    pub import_allow_hosts: Vec<String>,

    /// Largest download in bytes (suffixes K, M, G, KiB, MiB, GiB accepted).
    #[arg(long, env = "REELTIME_IMPORT_MAX_BYTES", default_value = "4GiB", value_parser = parse_bytes)]
    pub import_max_bytes: u64,

    /// Accept `synthetic:?duration_ms=..&steps=..` import URLs (load testing only).
    #[arg(long, env = "REELTIME_SYNTHETIC_IMPORTS", default_value = "0", value_parser = parse_flag)]
    pub synthetic_imports: bool,

    /// Media processing after the download: auto (on when ffmpeg is found) or off.
    #[arg(long, env = "REELTIME_MEDIA_PROCESSING", default_value = "auto", value_parser = ["auto", "off"])]
    pub media_processing: String,

    /// When to make a web-ready MP4: auto (unless the source is one), always, never.
    #[arg(long, env = "REELTIME_TRANSCODE", default_value = "auto")]
    pub transcode: crate::media::TranscodeMode,

    /// Imports in media processing at once on this node (default: half the cores, at least 1).
    #[arg(long, env = "REELTIME_PROCESS_CONCURRENCY", value_parser = clap::value_parser!(u64).range(1..))]
    pub process_concurrency: Option<u64>,

    /// Seconds ffmpeg may go without progress before it is killed (processing_stalled).
    #[arg(long, env = "REELTIME_PROCESS_STALL_SECS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub process_stall_secs: u64,

    /// Secret for signing media links (default: generated and kept in the data dir).
    #[arg(long, env = "REELTIME_MEDIA_SECRET", hide_env_values = true)]
    pub media_secret: Option<String>,

    /// Seconds a signed media link stays valid.
    #[arg(long, env = "REELTIME_MEDIA_LINK_TTL_SECS", default_value_t = 21_600, value_parser = clap::value_parser!(u64).range(60..))]
    pub media_link_ttl_secs: u64,

    /// Where finished media is kept: unset for the data dir (one node), or s3://bucket/prefix, shared by every node (credentials and region from the usual AWS_* variables).
    #[arg(long, env = "REELTIME_MEDIA_URL")]
    pub media_url: Option<String>,

    /// Endpoint of an S3-compatible server (MinIO, Ceph, R2...) for REELTIME_MEDIA_URL; AWS_ENDPOINT_URL is read too. http:// is allowed.
    #[arg(long, env = "REELTIME_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// Seconds a node's claim on a running import lasts without renewal; after a
    /// node dies, its imports move to another node this long after. Also the
    /// lease of the notes of changes a node holds while Redis is away.
    #[arg(long, env = "REELTIME_JOB_LEASE_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(3..))]
    pub job_lease_secs: u64,

    /// Seconds between two writes of a running import's progress to the
    /// database: ticks reach sockets from memory at once, and the store
    /// catches up at most this often (status changes are stored at once).
    /// 0 stores every tick before it is sent.
    #[arg(long, env = "REELTIME_PROGRESS_PERSIST_SECS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub progress_persist_secs: u64,

    /// Imports downloading at once on this node.
    #[arg(long, env = "REELTIME_DOWNLOAD_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    pub download_concurrency: u64,

    /// Unfinished imports one user may have at once (counted in the shared store); more gets 429.
    #[arg(long, env = "REELTIME_MAX_ACTIVE_IMPORTS_PER_USER", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_active_imports_per_user: u64,

    /// Uploads (imports still `uploading`) one user may have at once; more gets 429. Uploads count in REELTIME_MAX_ACTIVE_IMPORTS_PER_USER too.
    #[arg(long, env = "REELTIME_MAX_UPLOADS_PER_USER", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_uploads_per_user: u64,

    /// Seconds an upload may go without a byte before it fails `upload_expired` and its bytes are removed (tus `Upload-Expires`).
    #[arg(long, env = "REELTIME_UPLOAD_EXPIRE_SECS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub upload_expire_secs: u64,

    /// Imports one user may create per minute on this node, on average (token bucket); more gets 429 with Retry-After.
    #[arg(long, env = "REELTIME_IMPORT_RATE_PER_MIN", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub import_rate_per_min: u32,

    /// Imports one user may create in a burst before REELTIME_IMPORT_RATE_PER_MIN applies.
    #[arg(long, env = "REELTIME_IMPORT_RATE_BURST", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub import_rate_burst: u32,

    /// Bytes of finished media one user may keep (suffixes as for REELTIME_IMPORT_MAX_BYTES); unset: no quota.
    #[arg(long, env = "REELTIME_USER_QUOTA_BYTES", value_parser = parse_bytes)]
    pub user_quota_bytes: Option<u64>,

    /// Least a download must receive per minute, measured over each REELTIME_DOWNLOAD_RATE_WINDOW_SECS (download_too_slow).
    #[arg(long, env = "REELTIME_DOWNLOAD_MIN_BYTES_PER_MIN", default_value = "1MiB", value_parser = parse_bytes)]
    pub download_min_bytes_per_min: u64,

    /// Seconds in each window over which the minimum download rate is measured.
    #[arg(long, env = "REELTIME_DOWNLOAD_RATE_WINDOW_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub download_rate_window_secs: u64,

    /// Seconds a download may take in all, from the first request to the last byte (download_too_slow).
    #[arg(long, env = "REELTIME_DOWNLOAD_DEADLINE_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub download_deadline_secs: u64,

    /// Longest media accepted, in seconds, as the probe reads it (too_long).
    #[arg(long, env = "REELTIME_MAX_DURATION_SECS", default_value_t = 14_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_duration_secs: u64,

    /// URL that receives the signed import webhooks (http or https; private addresses allowed). Unset: no webhooks, and no events are kept.
    #[arg(long, env = "REELTIME_WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// Secret that signs the webhooks, whsec_ + base64 of 24 to 64 bytes (Standard Webhooks); required with REELTIME_WEBHOOK_URL.
    #[arg(long, env = "REELTIME_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// Multiplies the webhook retry delays (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h); 1 in production, tests use e.g. 0.001.
    #[arg(long, env = "REELTIME_WEBHOOK_RETRY_SCALE", default_value_t = 1.0)]
    pub webhook_retry_scale: f64,

    /// Clerk's webhook signing secret (whsec_...): enables POST /api/clerk/webhook.
    #[arg(long, env = "CLERK_WEBHOOK_SIGNING_SECRET", hide_env_values = true)]
    pub clerk_webhook_signing_secret: Option<String>,

    /// With no command the server runs.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// How log lines are written to stderr (REELTIME_LOG_FORMAT). Read by
/// `main` before anything else logs, so it is a setting, not a [`Config`]
/// field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event, colored on a terminal.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, the
    /// event's fields (`message`, `import_id`, ...) at the top level, and
    /// the current span's (`connection_id`, `user_id`, `import_id`) under
    /// `span`.
    Json,
}

/// What the binary does besides serving: commands that use the server's
/// own settings (REELTIME_DATABASE_URL, REELTIME_DATA_DIR) and exit.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Server API keys for the app's backend (`Authorization: Bearer rt_sk_...` on /api/server/*).
    Keys {
        #[command(subcommand)]
        action: KeysCommand,
    },
}

/// `reeltime keys ...`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysCommand {
    /// Makes a new key and prints its secret, once: only its hash is stored.
    Create {
        /// A name to tell keys apart (letters, digits, - _ .).
        #[arg(long)]
        name: String,
    },
    /// Lists the keys: name, created, last used (to the minute), revoked.
    List,
    /// Revokes the key named NAME: every node refuses it from the next request.
    Revoke {
        /// The key's name.
        name: String,
    },
}

fn parse_flag(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(format!("expected 1 or 0, got {other:?}")),
    }
}

/// Parses `4GiB`, `512M`, `1000` and the like into bytes.
pub fn parse_bytes(raw: &str) -> Result<u64, String> {
    let text = raw.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("expected a size like 4GiB, got {raw:?}"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("unknown size unit in {raw:?}")),
    };
    number
        .checked_mul(multiplier)
        .filter(|bytes| *bytes > 0)
        .ok_or_else(|| format!("size out of range: {raw:?}"))
}

/// Parses the settings, printing a message that names the offending
/// environment variable when a value is bad.
pub fn parse_settings() -> Settings {
    if let Some(name) = empty_setting(|name| std::env::var_os(name)) {
        // clap takes an empty variable as unset: `CLERK_PUBLISHABLE_KEY=`
        // would quietly start the development issuer instead of failing.
        eprintln!(
            "reeltime: bad setting {name}: it is set but empty (unset it to use the default)"
        );
        std::process::exit(2);
    }
    match Settings::try_parse() {
        Ok(settings) => settings,
        Err(err) => {
            use clap::error::{ContextKind, ContextValue, ErrorKind};
            if matches!(
                err.kind(),
                ErrorKind::ValueValidation | ErrorKind::InvalidValue
            ) && let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg)
            {
                let flag = arg.split_whitespace().next().unwrap_or(arg);
                eprintln!("reeltime: bad setting {} ({flag})", env_name_of(flag));
            }
            err.exit()
        }
    }
}

/// The first setting whose environment variable is present but blank.
/// `lookup` reads one variable (the process environment, or a test's map).
pub fn empty_setting(lookup: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<String> {
    use clap::CommandFactory;
    Settings::command()
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .find(|name| lookup(name).is_some_and(|value| value.to_string_lossy().trim().is_empty()))
}

/// `None` for an unset setting; an error naming it for one given but blank.
fn given(value: Option<String>, name: &str) -> anyhow::Result<Option<String>> {
    match value {
        Some(value) if value.trim().is_empty() => {
            bail!("bad setting {name}: it is set but empty (unset it to use the default)")
        }
        other => Ok(other),
    }
}

/// Maps `--listen` to `REELTIME_LISTEN` using clap's own metadata.
fn env_name_of(flag: &str) -> String {
    use clap::CommandFactory;
    let long = flag.trim_start_matches('-');
    Settings::command()
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long))
        .and_then(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .unwrap_or_else(|| flag.to_string())
}

/// Where verification keys come from, decided once at start.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// Keys fetched from a JWKS endpoint and cached.
    Jwks { url: String, issuer: String },
    /// A single PEM public key, no network needed (Clerk's "JWT public key").
    Pem { pem: String, issuer: String },
    /// The built-in development issuer mints and verifies its own tokens.
    Development { issuer: String },
}

/// A secret setting: its `Debug` never shows the value, so printing the
/// [`Config`] (a log line, a panic message) cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Validated configuration the rest of the server reads.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    /// `Some` selects the Redis bus (several nodes); `None` the in-process one.
    pub redis_url: Option<String>,
    pub key_source: KeySource,
    pub authorized_parties: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub clock_skew: Duration,
    pub auth_timeout: Duration,
    pub heartbeat: Duration,
    pub max_connections_per_user: usize,
    pub max_connections: Option<usize>,
    pub max_pending_auth: usize,
    pub max_pending_auth_per_ip: usize,
    /// Descriptors that sockets waiting for their token never take.
    pub fd_reserve: usize,
    /// Connects reading the database at once, and how long one waits for that.
    pub connect_slots: usize,
    pub connect_wait: Duration,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: crate::net::TrustedProxies,
    /// Webhooks out (REELTIME_WEBHOOK_*); `None`: off, no events kept.
    pub webhooks: Option<crate::webhooks::WebhookSettings>,
    /// CLERK_WEBHOOK_SIGNING_SECRET, checked; `None`: no Clerk webhook route.
    pub clerk_webhook_secret: Option<Secret>,
    pub http_header_timeout: Duration,
    pub http_idle_timeout: Duration,
    /// `Some`: /metrics and /readyz move to this address.
    pub admin_listen: Option<SocketAddr>,
    pub shutdown_grace: Duration,
    pub import_allow_private: bool,
    pub import_allow_hosts: Vec<String>,
    pub import_max_bytes: u64,
    pub download_concurrency: usize,
    pub import_limits: crate::imports::limits::ImportLimits,
    /// REELTIME_MAX_UPLOADS_PER_USER.
    pub max_uploads_per_user: u64,
    /// REELTIME_UPLOAD_EXPIRE_SECS.
    pub upload_expire: Duration,
    pub download_pace: crate::imports::fetch::DownloadPace,
    /// Media longer than this fails `too_long` after the probe.
    pub max_duration: Duration,
    pub synthetic_imports: bool,
    /// False when REELTIME_MEDIA_PROCESSING=off.
    pub media_processing: bool,
    pub transcode: crate::media::TranscodeMode,
    pub process_concurrency: usize,
    pub job_lease: Duration,
    /// How far behind its published progress a running import's stored
    /// row may fall (`REELTIME_PROGRESS_PERSIST_SECS`).
    pub progress_persist: Duration,
    pub process_stall_timeout: Duration,
    pub media_secret: Option<Secret>,
    pub media_link_ttl: Duration,
    /// `s3://bucket/prefix` selects object storage for media; `None` the data dir.
    pub media_url: Option<String>,
    /// Endpoint override for an S3-compatible server.
    pub s3_endpoint: Option<String>,
    /// The Clerk publishable key, handed to the web page when set.
    pub clerk_publishable_key: Option<String>,
}

/// Issuer name of the development issuer unless REELTIME_ISSUER says otherwise.
pub const DEV_ISSUER: &str = "reeltime-dev";

impl Config {
    /// Checks the settings together and derives what follows from them.
    pub fn from_settings(s: Settings) -> anyhow::Result<Config> {
        let database_url = database_url(&s)?;
        let clean = |list: Vec<String>| -> Vec<String> {
            list.into_iter()
                .map(|item| item.trim().trim_end_matches('/').to_string())
                .filter(|item| !item.is_empty())
                .collect()
        };
        let issuer = given(s.issuer, "REELTIME_ISSUER")?;
        let jwks_url = given(s.jwks_url, "REELTIME_JWKS_URL")?;
        let publishable = given(s.clerk_publishable_key, "CLERK_PUBLISHABLE_KEY")?;
        let pem = given(s.clerk_jwt_key, "CLERK_JWT_KEY")?;

        let clerk = publishable
            .as_deref()
            .map(clerk_frontend_host)
            .transpose()
            .context("bad setting CLERK_PUBLISHABLE_KEY")?;
        let derived_issuer = clerk.as_ref().map(|host| format!("https://{host}"));
        let issuer_for_keys = issuer.clone().or(derived_issuer);

        let key_source = if let Some(pem) = pem {
            if !pem.contains("BEGIN PUBLIC KEY") && !pem.contains("BEGIN RSA PUBLIC KEY") {
                bail!("bad setting CLERK_JWT_KEY: expected a PEM public key");
            }
            let Some(issuer) = issuer_for_keys else {
                bail!(
                    "bad setting CLERK_JWT_KEY: also set REELTIME_ISSUER or CLERK_PUBLISHABLE_KEY so that `iss` can be checked"
                );
            };
            KeySource::Pem { pem, issuer }
        } else if let Some(url) = jwks_url {
            let parsed = url::Url::parse(&url).context("bad setting REELTIME_JWKS_URL")?;
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!("bad setting REELTIME_JWKS_URL: must be http or https");
            }
            let Some(issuer) = issuer_for_keys else {
                bail!(
                    "bad setting REELTIME_JWKS_URL: also set REELTIME_ISSUER (the `iss` your tokens carry)"
                );
            };
            KeySource::Jwks { url, issuer }
        } else if let Some(host) = clerk {
            KeySource::Jwks {
                url: format!("https://{host}/.well-known/jwks.json"),
                issuer: issuer_for_keys.unwrap_or_else(|| format!("https://{host}")),
            }
        } else {
            if !s.listen.ip().is_loopback() {
                bail!(
                    "bad setting REELTIME_LISTEN: the development issuer (no REELTIME_JWKS_URL, CLERK_PUBLISHABLE_KEY or CLERK_JWT_KEY set) only listens on loopback, not {}",
                    s.listen
                );
            }
            KeySource::Development {
                issuer: issuer.unwrap_or_else(|| DEV_ISSUER.to_string()),
            }
        };

        for origin in s.allowed_origins.iter().chain(&s.authorized_parties) {
            let trimmed = origin.trim();
            if !trimmed.is_empty() && url::Url::parse(trimmed).is_err() {
                bail!(
                    "bad setting REELTIME_ALLOWED_ORIGINS/REELTIME_AUTHORIZED_PARTIES: {trimmed:?} is not an origin like https://app.example.com"
                );
            }
        }

        let media_url = given(s.media_url, "REELTIME_MEDIA_URL")?.map(|url| url.trim().to_string());
        if let Some(url) = &media_url {
            let parsed = url::Url::parse(url).context("bad setting REELTIME_MEDIA_URL")?;
            if parsed.scheme() != "s3" || parsed.host_str().is_none_or(str::is_empty) {
                bail!(
                    "bad setting REELTIME_MEDIA_URL: expected s3://bucket/prefix (unset keeps media in the data dir)"
                );
            }
        }
        let redis_url = given(s.redis_url, "REELTIME_REDIS_URL")?;
        if let Some(url) = &redis_url {
            let parsed = url::Url::parse(url).context("bad setting REELTIME_REDIS_URL")?;
            if parsed.scheme() != "redis" {
                bail!(
                    "bad setting REELTIME_REDIS_URL: expected redis://host:port (TLS is not built in)"
                );
            }
        }

        let trusted_proxies = crate::net::TrustedProxies::parse(&clean(s.trusted_proxies))
            .context("bad setting REELTIME_TRUSTED_PROXIES")?;
        if s.admin_listen
            .is_some_and(|admin| admin == s.listen && admin.port() != 0)
        {
            bail!("bad setting REELTIME_ADMIN_LISTEN: must differ from REELTIME_LISTEN");
        }
        let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let webhooks = webhook_settings(
            given(s.webhook_url, "REELTIME_WEBHOOK_URL")?,
            given(s.webhook_secret, "REELTIME_WEBHOOK_SECRET")?,
            s.webhook_retry_scale,
        )?;
        let clerk_webhook_secret = given(
            s.clerk_webhook_signing_secret,
            "CLERK_WEBHOOK_SIGNING_SECRET",
        )?;
        if let Some(secret) = &clerk_webhook_secret {
            crate::webhooks::parse_secret(secret).map_err(|err| {
                anyhow::anyhow!("bad setting CLERK_WEBHOOK_SIGNING_SECRET: {err}")
            })?;
        }

        Ok(Config {
            listen: s.listen,
            data_dir: s.data_dir,
            database_url,
            redis_url,
            key_source,
            authorized_parties: clean(s.authorized_parties),
            allowed_origins: clean(s.allowed_origins),
            clock_skew: Duration::from_secs(s.clock_skew_secs),
            auth_timeout: Duration::from_secs(s.auth_timeout_secs),
            heartbeat: Duration::from_secs(s.heartbeat_secs),
            max_connections_per_user: usize::try_from(s.max_connections_per_user)
                .unwrap_or(usize::MAX),
            max_connections: s
                .max_connections
                .map(|max| usize::try_from(max).unwrap_or(usize::MAX)),
            max_pending_auth: to_usize(s.max_pending_auth),
            max_pending_auth_per_ip: to_usize(s.max_pending_auth_per_ip),
            fd_reserve: to_usize(s.fd_reserve),
            connect_slots: to_usize(s.connect_slots),
            connect_wait: Duration::from_millis(s.connect_wait_ms),
            trusted_proxies,
            webhooks,
            clerk_webhook_secret: clerk_webhook_secret.map(Secret),
            http_header_timeout: Duration::from_secs(s.http_header_timeout_secs),
            http_idle_timeout: Duration::from_secs(s.http_idle_timeout_secs),
            admin_listen: s.admin_listen,
            shutdown_grace: Duration::from_secs(s.shutdown_grace_secs),
            import_allow_private: s.import_allow_private,
            import_allow_hosts: clean(s.import_allow_hosts)
                .into_iter()
                .map(|host| host.to_ascii_lowercase())
                .collect(),
            import_max_bytes: s.import_max_bytes,
            max_uploads_per_user: s.max_uploads_per_user,
            upload_expire: Duration::from_secs(s.upload_expire_secs),
            download_concurrency: usize::try_from(s.download_concurrency).unwrap_or(4),
            import_limits: crate::imports::limits::ImportLimits {
                max_active_per_user: s.max_active_imports_per_user,
                rate_per_min: s.import_rate_per_min,
                rate_burst: s.import_rate_burst,
                quota_bytes: s.user_quota_bytes,
            },
            download_pace: crate::imports::fetch::DownloadPace {
                min_bytes_per_min: s.download_min_bytes_per_min,
                window: Duration::from_secs(s.download_rate_window_secs),
                deadline: Duration::from_secs(s.download_deadline_secs),
            },
            max_duration: Duration::from_secs(s.max_duration_secs),
            synthetic_imports: s.synthetic_imports,
            media_processing: s.media_processing != "off",
            transcode: s.transcode,
            process_concurrency: s
                .process_concurrency
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or_else(default_process_concurrency),
            process_stall_timeout: Duration::from_secs(s.process_stall_secs),
            job_lease: Duration::from_secs(s.job_lease_secs),
            progress_persist: Duration::from_secs(s.progress_persist_secs),
            media_secret: given(s.media_secret, "REELTIME_MEDIA_SECRET")?.map(Secret),
            media_link_ttl: Duration::from_secs(s.media_link_ttl_secs),
            media_url,
            s3_endpoint: given(s.s3_endpoint, "REELTIME_S3_ENDPOINT")?,
            clerk_publishable_key: publishable,
        })
    }

    /// True when the server mints its own tokens (`/dev/*` exists).
    pub fn is_development(&self) -> bool {
        matches!(self.key_source, KeySource::Development { .. })
    }
}

/// The webhook settings, checked together: a URL needs a secret and the
/// other way round, the URL is http(s), the secret well-formed, the scale
/// positive.
fn webhook_settings(
    url: Option<String>,
    secret: Option<String>,
    retry_scale: f64,
) -> anyhow::Result<Option<crate::webhooks::WebhookSettings>> {
    if !(retry_scale.is_finite() && retry_scale > 0.0) {
        bail!(
            "bad setting REELTIME_WEBHOOK_RETRY_SCALE: expected a number above 0, like 1 or 0.001"
        );
    }
    let (url, secret) = match (url, secret) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            bail!("bad setting REELTIME_WEBHOOK_URL: also set REELTIME_WEBHOOK_SECRET (whsec_...)")
        }
        (None, Some(_)) => {
            bail!(
                "bad setting REELTIME_WEBHOOK_SECRET: it signs webhooks, but REELTIME_WEBHOOK_URL is not set"
            )
        }
        (Some(url), Some(secret)) => (url, secret),
    };
    let parsed = url::Url::parse(url.trim()).context("bad setting REELTIME_WEBHOOK_URL")?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        bail!("bad setting REELTIME_WEBHOOK_URL: expected http://... or https://...");
    }
    crate::webhooks::parse_secret(&secret)
        .map_err(|err| anyhow::anyhow!("bad setting REELTIME_WEBHOOK_SECRET: {err}"))?;
    Ok(Some(crate::webhooks::WebhookSettings {
        url: parsed,
        secret: secret.trim().to_string(),
        retry_scale,
    }))
}

/// The database the settings name: REELTIME_DATABASE_URL, or the SQLite
/// file in REELTIME_DATA_DIR. Shared by the server and `reeltime keys`.
pub fn database_url(s: &Settings) -> anyhow::Result<String> {
    let database_url = given(s.database_url.clone(), "REELTIME_DATABASE_URL")?
        .unwrap_or_else(|| format!("sqlite://{}", s.data_dir.join("reeltime.db").display()));
    if !database_url.starts_with("sqlite:") && !crate::store::is_postgres_url(&database_url) {
        bail!(
            "bad setting REELTIME_DATABASE_URL: expected sqlite://..., postgres://... or postgresql://..."
        );
    }
    Ok(database_url)
}

/// Half the cores, at least one: transcoding is CPU-bound and the node must
/// keep serving sockets.
fn default_process_concurrency() -> usize {
    std::thread::available_parallelism()
        .map(|cores| (cores.get() / 2).max(1))
        .unwrap_or(1)
}

/// Decodes the Frontend API host from a Clerk publishable key:
/// `pk_test_` + base64(`<host>$`).
pub fn clerk_frontend_host(key: &str) -> anyhow::Result<String> {
    let encoded = key
        .trim()
        .strip_prefix("pk_test_")
        .or_else(|| key.trim().strip_prefix("pk_live_"))
        .context("expected pk_test_... or pk_live_...")?;
    let engine = base64::engine::general_purpose::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let decoded = engine
        .decode(encoded)
        .context("the part after pk_..._ is not base64")?;
    let text = String::from_utf8(decoded).context("decoded key is not text")?;
    let host = text
        .strip_suffix('$')
        .context("decoded key does not end in $")?;
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if !valid {
        bail!("decoded host {host:?} is not a host name");
    }
    Ok(host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Settings {
        let mut all = vec!["reeltime"];
        all.extend_from_slice(args);
        Settings::try_parse_from(all).expect("valid args")
    }

    #[test]
    fn defaults_are_the_embedded_single_machine_setup() {
        let config = Config::from_settings(settings(&[])).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.database_url, "sqlite://./data/reeltime.db");
        assert!(config.is_development());
        assert_eq!(config.clock_skew, Duration::from_secs(5));
        assert_eq!(config.import_max_bytes, 4 << 30);
        assert_eq!(config.max_connections_per_user, 32);
        assert_eq!(config.import_limits.max_active_per_user, 20);
        assert_eq!(config.import_limits.quota_bytes, None);
        assert_eq!(config.max_uploads_per_user, 4);
        assert_eq!(config.upload_expire, Duration::from_secs(86_400));
        assert_eq!(config.download_pace.min_bytes_per_min, 1 << 20);
        assert_eq!(config.max_duration, Duration::from_secs(14_400));
    }

    #[test]
    fn clerk_publishable_key_gives_issuer_and_jwks() {
        let key = format!(
            "pk_test_{}",
            base64::engine::general_purpose::STANDARD.encode("clerk.example.com$")
        );
        assert_eq!(clerk_frontend_host(&key).unwrap(), "clerk.example.com");
        let config = Config::from_settings(settings(&["--clerk-publishable-key", &key])).unwrap();
        match config.key_source {
            KeySource::Jwks { url, issuer } => {
                assert_eq!(url, "https://clerk.example.com/.well-known/jwks.json");
                assert_eq!(issuer, "https://clerk.example.com");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(clerk_frontend_host("pk_test_bm90IGEga2V5").is_err());
        assert!(clerk_frontend_host("sk_test_abc").is_err());
    }

    #[test]
    fn development_issuer_refuses_public_addresses() {
        let err = Config::from_settings(settings(&["--listen", "0.0.0.0:8080"])).unwrap_err();
        assert!(err.to_string().contains("REELTIME_LISTEN"), "{err}");
    }

    #[test]
    fn jwks_url_needs_an_issuer() {
        let err = Config::from_settings(settings(&["--jwks-url", "http://127.0.0.1:1/jwks"]))
            .unwrap_err();
        assert!(err.to_string().contains("REELTIME_ISSUER"), "{err}");
    }

    #[test]
    fn postgres_and_redis_urls_are_accepted_and_others_refused() {
        for url in [
            "postgres://u:p@db/reeltime",
            "postgresql://u@db:5432/reeltime",
        ] {
            let config = Config::from_settings(settings(&["--database-url", url])).unwrap();
            assert_eq!(config.database_url, url);
        }
        let err = Config::from_settings(settings(&["--database-url", "mysql://db/x"])).unwrap_err();
        assert!(err.to_string().contains("REELTIME_DATABASE_URL"), "{err}");

        assert_eq!(
            Config::from_settings(settings(&[])).unwrap().redis_url,
            None
        );
        let config =
            Config::from_settings(settings(&["--redis-url", "redis://127.0.0.1:6379"])).unwrap();
        assert_eq!(config.redis_url.as_deref(), Some("redis://127.0.0.1:6379"));
        for bad in ["http://127.0.0.1:6379", "not a url"] {
            let err = Config::from_settings(settings(&["--redis-url", bad])).unwrap_err();
            assert!(format!("{err:#}").contains("REELTIME_REDIS_URL"), "{err:#}");
        }
    }

    #[test]
    fn media_url_is_s3_or_unset() {
        let config = Config::from_settings(settings(&[])).unwrap();
        assert_eq!(config.media_url, None);
        let config = Config::from_settings(settings(&[
            "--media-url",
            "s3://media/reeltime",
            "--s3-endpoint",
            "http://127.0.0.1:9000",
        ]))
        .unwrap();
        assert_eq!(config.media_url.as_deref(), Some("s3://media/reeltime"));
        assert_eq!(config.s3_endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        for bad in ["/var/media", "https://media/x", "s3://"] {
            let err = Config::from_settings(settings(&["--media-url", bad])).unwrap_err();
            assert!(format!("{err:#}").contains("REELTIME_MEDIA_URL"), "{err:#}");
        }
    }

    #[test]
    fn connection_settings_have_defaults_and_checks() {
        let config = Config::from_settings(settings(&[])).unwrap();
        assert_eq!(config.http_header_timeout, Duration::from_secs(10));
        assert_eq!(config.http_idle_timeout, Duration::from_secs(60));
        assert_eq!(config.max_pending_auth, 2000);
        assert_eq!(config.max_pending_auth_per_ip, 64);
        assert_eq!(config.connect_slots, 32);
        assert_eq!(config.connect_wait, Duration::from_secs(2));
        assert_eq!(config.admin_listen, None);
        let err =
            Config::from_settings(settings(&["--trusted-proxies", "10.0.0.0/33"])).unwrap_err();
        assert!(
            format!("{err:#}").contains("REELTIME_TRUSTED_PROXIES"),
            "{err:#}"
        );
        let err =
            Config::from_settings(settings(&["--admin-listen", "127.0.0.1:8080"])).unwrap_err();
        assert!(err.to_string().contains("REELTIME_ADMIN_LISTEN"), "{err}");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("4GiB"), Ok(4 << 30));
        assert_eq!(parse_bytes("512 M"), Ok(512 << 20));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("0").is_err());
    }

    #[test]
    fn a_setting_present_but_empty_is_an_error_naming_it() {
        let env = |set: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                set.iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| std::ffi::OsString::from(*value))
            }
        };
        assert_eq!(
            empty_setting(env(&[("CLERK_PUBLISHABLE_KEY", "")])).as_deref(),
            Some("CLERK_PUBLISHABLE_KEY")
        );
        assert_eq!(
            empty_setting(env(&[("REELTIME_JWKS_URL", "  ")])).as_deref(),
            Some("REELTIME_JWKS_URL")
        );
        assert_eq!(
            empty_setting(env(&[("REELTIME_LISTEN", "127.0.0.1:0")])),
            None
        );
        assert_eq!(empty_setting(env(&[("UNRELATED", "")])), None);

        let err = Config::from_settings(settings(&["--clerk-jwt-key", " "])).unwrap_err();
        assert!(err.to_string().contains("CLERK_JWT_KEY"), "{err}");
        let err = Config::from_settings(settings(&["--issuer", ""])).unwrap_err();
        assert!(err.to_string().contains("REELTIME_ISSUER"), "{err}");
    }

    #[test]
    fn webhook_settings_go_together_and_are_checked() {
        let secret = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode([1u8; 32])
        );
        let config = Config::from_settings(settings(&[])).unwrap();
        assert!(config.webhooks.is_none());
        assert!(config.clerk_webhook_secret.is_none());
        let config = Config::from_settings(settings(&[
            "--webhook-url",
            "http://10.0.0.5:9000/hooks",
            "--webhook-secret",
            &secret,
            "--clerk-webhook-signing-secret",
            &secret,
            "--media-secret",
            "hunter2-media",
        ]))
        .unwrap();
        let printed = format!("{config:?}");
        assert!(
            !printed.contains(&secret) && !printed.contains("hunter2-media"),
            "the whole config's Debug hides every secret: {printed}"
        );
        assert_eq!(
            config.clerk_webhook_secret.as_ref().map(Secret::expose),
            Some(secret.as_str())
        );
        let webhooks = config.webhooks.unwrap();
        assert_eq!(webhooks.url.as_str(), "http://10.0.0.5:9000/hooks");
        assert_eq!(webhooks.retry_scale, 1.0);
        assert!(
            !format!("{webhooks:?}").contains(&secret),
            "Debug hides the secret"
        );
        for (args, name) in [
            (vec!["--webhook-url", "http://h/x"], "REELTIME_WEBHOOK_URL"),
            (vec!["--webhook-secret", &secret], "REELTIME_WEBHOOK_SECRET"),
            (
                vec!["--webhook-url", "ftp://h/x", "--webhook-secret", &secret],
                "REELTIME_WEBHOOK_URL",
            ),
            (
                vec!["--webhook-url", "http://h/x", "--webhook-secret", "hunter2"],
                "REELTIME_WEBHOOK_SECRET",
            ),
            (
                vec!["--webhook-retry-scale", "0"],
                "REELTIME_WEBHOOK_RETRY_SCALE",
            ),
            (
                vec!["--clerk-webhook-signing-secret", "whsec_short"],
                "CLERK_WEBHOOK_SIGNING_SECRET",
            ),
            (vec!["--webhook-url", " "], "REELTIME_WEBHOOK_URL"),
        ] {
            let err = Config::from_settings(settings(&args)).unwrap_err();
            assert!(format!("{err:#}").contains(name), "{args:?}: {err:#}");
            assert!(!format!("{err:#}").contains("hunter2"), "never the secret");
        }
    }

    #[test]
    fn keys_commands_parse_beside_the_settings() {
        let parsed = settings(&["keys", "create", "--name", "backend"]);
        assert!(matches!(
            parsed.command,
            Some(Command::Keys { action: KeysCommand::Create { ref name } }) if name == "backend"
        ));
        let parsed = settings(&["--data-dir", "/tmp/x", "keys", "revoke", "old"]);
        assert_eq!(
            database_url(&parsed).unwrap(),
            "sqlite:///tmp/x/reeltime.db"
        );
        assert!(settings(&[]).command.is_none());
    }

    #[test]
    fn bad_values_name_the_environment_variable() {
        assert_eq!(env_name_of("--listen"), "REELTIME_LISTEN");
        assert_eq!(env_name_of("--clerk-jwt-key"), "CLERK_JWT_KEY");
    }
}
