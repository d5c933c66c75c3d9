//! The wire contract of reeltime, shared by the server, its tests and the
//! benchmark so that all three speak exactly the same messages.
//!
//! `docs/protocol.md` is the prose version of this module; keep them in step.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Protocol version announced in [`ServerMessage::Ready`]; bumped on any
/// incompatible change so old clients can tell.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest text message the server reads; anything bigger closes the socket
/// with [`close::MESSAGE_TOO_BIG`].
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 16 * 1024;

pub mod close;
pub use close::Close;

/// Where an import is in its life. The last three are final: once an import
/// reaches one of them it never changes again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportStatus {
    /// An upload whose bytes are still arriving (`source: "upload"`); the
    /// usual stages follow once the last byte is stored.
    Uploading,
    Queued,
    Downloading,
    Processing,
    Completed,
    Failed,
    Cancelled,
}

impl ImportStatus {
    /// Every status, for metrics and documentation.
    pub const ALL: [ImportStatus; 7] = [
        ImportStatus::Uploading,
        ImportStatus::Queued,
        ImportStatus::Downloading,
        ImportStatus::Processing,
        ImportStatus::Completed,
        ImportStatus::Failed,
        ImportStatus::Cancelled,
    ];

    /// Final states are never coalesced away or overwritten.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ImportStatus::Completed | ImportStatus::Failed | ImportStatus::Cancelled
        )
    }

    /// The name used on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ImportStatus::Uploading => "uploading",
            ImportStatus::Queued => "queued",
            ImportStatus::Downloading => "downloading",
            ImportStatus::Processing => "processing",
            ImportStatus::Completed => "completed",
            ImportStatus::Failed => "failed",
            ImportStatus::Cancelled => "cancelled",
        }
    }

    /// Inverse of [`ImportStatus::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }
}

/// Why an import failed (an [`Import`]'s `error`), in a form both programs
/// and people can read. A refused REST request is an [`ApiErrorDetail`]
/// instead: same shape, another meaning (the request failed, not the
/// import).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportError {
    /// Stable machine-readable code, e.g. `url_not_allowed`, `too_large`.
    pub code: String,
    /// A sentence for a person.
    pub message: String,
}

/// Where an import's bytes come from. Stored imports from before this field
/// existed are URL imports, hence the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportSource {
    /// Downloaded by the server from `source_url` (also the load-test
    /// `synthetic:` imports).
    #[default]
    Url,
    /// Sent by the browser over tus (`/api/uploads`); `file_name` is set,
    /// `source_url` is null.
    Upload,
    /// Run by the app's own workers, which report its progress through the
    /// server API; Reeltime only carries the progress.
    External,
}

impl ImportSource {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ImportSource::Url => "url",
            ImportSource::Upload => "upload",
            ImportSource::External => "external",
        }
    }
}

/// One video import, identical in the REST API and on the WebSocket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Import {
    pub id: String,
    pub status: ImportStatus,
    /// Finer-grained step a UI can show (`downloading`, `probing`, ...).
    #[serde(default)]
    pub stage: Option<String>,
    /// 0.0 to 1.0 over the whole import, `None` while unknown.
    pub progress: Option<f64>,
    /// Bytes downloaded; for an upload, bytes the server has received and
    /// stored (not what the browser has sent), so every tab shows where a
    /// resumed upload really continues from.
    pub bytes_done: u64,
    /// The download's size when known; an upload's `Upload-Length`.
    pub bytes_total: Option<u64>,
    /// Strictly increasing per import; clients drop anything not newer.
    pub version: u64,
    pub attempt: u32,
    #[serde(default)]
    pub source: ImportSource,
    /// The URL a `url` import downloads; null for other sources.
    pub source_url: Option<String>,
    /// The name of the uploaded file (`upload` imports), as the browser
    /// gave it; never a path on the server.
    #[serde(default)]
    pub file_name: Option<String>,
    pub title: String,
    pub error: Option<ImportError>,
    pub result: Option<serde_json::Value>,
    /// The app's own JSON object (at most 4 KiB) linking the import to its
    /// records, as given when the import was created; null when none.
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    /// Place in the waiting line while queued (1 = next), else `None`.
    #[serde(default)]
    pub queue_position: Option<u64>,
    #[serde(with = "rfc3339_millis")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "rfc3339_millis")]
    pub updated_at: DateTime<Utc>,
}

/// Messages the server sends on the progress socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Sent once, right after authentication succeeded.
    Ready {
        user_id: String,
        connection_id: String,
        /// `exp` of the token in force, unix seconds.
        expires_at: i64,
        heartbeat_ms: u64,
        protocol: u32,
    },
    /// The user's unfinished imports and the most recent finished ones,
    /// and the imports deleted lately (so that a client that was away when
    /// one was deleted drops it; an import merely absent from `imports` may
    /// just be old).
    Snapshot {
        imports: Vec<Import>,
        #[serde(default)]
        removed: Vec<RemovedImport>,
    },
    /// One change to one of the user's imports.
    Import { import: Box<Import> },
    /// One of the user's imports was deleted: its last change. `version` is
    /// higher than any the import had, so a client drops the row and
    /// ignores anything older about it that arrives later.
    ImportRemoved { id: String, version: u64 },
    /// Answer to an in-band token refresh.
    AuthOk { expires_at: i64 },
    /// Answer to a client `ping`.
    Pong,
    /// A message the server could not use; the socket stays open.
    Error { code: String, message: String },
}

/// A deleted import, as a snapshot lists it: the id and the version of the
/// delete (one more than the import's last).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedImport {
    pub id: String,
    pub version: u64,
}

/// Messages a client may send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// First-message authentication, or an in-band refresh later.
    Auth { token: String },
    /// Application-level keepalive for clients that cannot see WebSocket pings.
    Ping,
}

/// Body of `POST /api/imports`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateImport {
    pub url: String,
    #[serde(default)]
    pub title: Option<String>,
    /// The app's JSON object (at most 4 KiB serialized) that links the
    /// import to its own records; carried on the import everywhere.
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
}

/// One page of `GET /api/imports`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportPage {
    pub imports: Vec<Import>,
    /// Pass as `?before=` to get the next page; `None` on the last one.
    pub next_cursor: Option<String>,
}

/// `GET /api/me`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub email: Option<String>,
    #[serde(with = "rfc3339_millis")]
    pub created_at: DateTime<Utc>,
}

/// Error body of every REST endpoint: `{"error":{"code","message"}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiErrorBody {
    pub error: ApiErrorDetail,
}

/// Why a REST request was refused. Not an [`ImportError`]: that one says
/// why an import failed, and travels inside the import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorDetail {
    /// Stable machine-readable code, e.g. `bad_request`, `rate_limited`.
    pub code: String,
    /// A sentence for a person.
    pub message: String,
}

/// Body of the development issuer's `POST /dev/token`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevTokenRequest {
    pub sub: String,
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    #[serde(default)]
    pub email: Option<String>,
}

/// Answer of `POST /dev/token`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevTokenResponse {
    pub token: String,
    pub expires_at: i64,
}

/// Timestamps go out as RFC 3339 with milliseconds, always in UTC (`Z`).
pub mod rfc3339_millis {
    use super::*;

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(at))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|at| at.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }

    /// The one formatting used everywhere.
    pub fn format(at: &DateTime<Utc>) -> String {
        at.to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_messages_use_the_documented_shape() {
        let ready = ServerMessage::Ready {
            user_id: "alice".into(),
            connection_id: "c1".into(),
            expires_at: 10,
            heartbeat_ms: 25_000,
            protocol: PROTOCOL_VERSION,
        };
        let json = serde_json::to_value(&ready).unwrap();
        assert_eq!(json["type"], "ready");
        assert_eq!(json["heartbeat_ms"], 25_000);
        assert_eq!(
            serde_json::to_string(&ServerMessage::Pong).unwrap(),
            r#"{"type":"pong"}"#
        );
        assert_eq!(
            serde_json::to_value(ServerMessage::AuthOk { expires_at: 5 }).unwrap()["type"],
            "auth_ok"
        );
        assert_eq!(
            serde_json::to_string(&ServerMessage::ImportRemoved {
                id: "i1".into(),
                version: 7
            })
            .unwrap(),
            r#"{"type":"import_removed","id":"i1","version":7}"#
        );
        let snapshot = ServerMessage::Snapshot {
            imports: vec![],
            removed: vec![RemovedImport {
                id: "i1".into(),
                version: 7,
            }],
        };
        assert_eq!(
            serde_json::to_string(&snapshot).unwrap(),
            r#"{"type":"snapshot","imports":[],"removed":[{"id":"i1","version":7}]}"#
        );
        let without_removed: ServerMessage =
            serde_json::from_str(r#"{"type":"snapshot","imports":[]}"#).unwrap();
        assert_eq!(
            without_removed,
            ServerMessage::Snapshot {
                imports: vec![],
                removed: vec![]
            },
            "a snapshot of a server before deletes were sent still parses"
        );
    }

    #[test]
    fn client_messages_parse() {
        let auth: ClientMessage = serde_json::from_str(r#"{"type":"auth","token":"t"}"#).unwrap();
        assert_eq!(auth, ClientMessage::Auth { token: "t".into() });
        let ping: ClientMessage = serde_json::from_str(r#"{"type":"ping"}"#).unwrap();
        assert_eq!(ping, ClientMessage::Ping);
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"nope"}"#).is_err());
    }

    #[test]
    fn timestamps_have_milliseconds_and_round_trip() {
        let at = DateTime::parse_from_rfc3339("2026-11-26T04:15:02.123Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(rfc3339_millis::format(&at), "2026-11-26T04:15:02.123Z");
        let user = User {
            id: "u".into(),
            email: None,
            created_at: at,
        };
        let back: User = serde_json::from_str(&serde_json::to_string(&user).unwrap()).unwrap();
        assert_eq!(back.created_at, at);
    }

    #[test]
    fn status_names_round_trip() {
        for status in ImportStatus::ALL {
            assert_eq!(ImportStatus::parse(status.as_str()), Some(status));
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::Value::String(status.as_str().into())
            );
        }
        assert!(ImportStatus::Failed.is_final());
        assert!(!ImportStatus::Processing.is_final());
    }
}
