//! Every WebSocket close code of the progress socket, with its reason
//! texts, who sends it and what a client does after it: one table, the only
//! place these are defined.
//!
//! Why one table: the server, the test kit, the benchmark and the web client
//! used to name the same codes in three vocabularies, and reason strings were
//! literals scattered over the gateway. Now the server closes only with a
//! [`Close`] from here, [`TABLE`] is exported as `close-codes.json` (a test
//! keeps the committed file equal to it), and the web client's own table is
//! checked against that file by a web unit test, so none of them can drift.
//!
//! To add a code or a reason: add it to the `close_codes!` list below, run
//! `REELTIME_BLESS=1 cargo test -p reeltime-protocol close` to rewrite the
//! JSON, then add the row to `web/packages/client/src/closeCodes.ts` and to the table
//! in `docs/protocol.md` (tests check both).

use serde::Serialize;

/// One close frame the protocol defines: a code and its exact reason text.
/// Reason texts are part of the contract (tests and clients match on them),
/// so they only ever come from the constants below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: &'static str,
}

/// Who puts a code on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SentBy {
    /// The reeltime server.
    Server,
    /// A client (the web client's log-out, or its dead-socket replacement).
    Client,
    /// Nobody: the browser reports it when a socket ended without a frame.
    Browser,
}

/// What a client does after a socket ended with a code (other than by its
/// own `close()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAction {
    /// Wait an exponential backoff delay with full jitter, then reconnect
    /// with the cached token.
    Backoff,
    /// Reconnect at once, asking the token provider for a fresh token.
    ReconnectFreshToken,
    /// Retry once at once with a fresh token; if refused again before a
    /// `ready`, give up and show the person they are signed out.
    RetryAuthOnce,
}

/// One named reason text of a code, as exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub name: &'static str,
    pub text: &'static str,
}

/// One row of [`TABLE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CloseCode {
    pub code: u16,
    pub name: &'static str,
    pub sent_by: SentBy,
    pub action: ClientAction,
    pub reasons: &'static [Reason],
}

impl CloseCode {
    /// The row of `code`, if the protocol defines it.
    pub fn find(code: u16) -> Option<&'static CloseCode> {
        TABLE.iter().find(|row| row.code == code)
    }
}

/// Writes each code once and derives from it the `u16` constant, one
/// [`Close`] constant per reason and the row of [`TABLE`].
macro_rules! close_codes {
    ($(
        $(#[doc = $doc:literal])+
        $name:ident = $code:literal, sent by $sent_by:ident, then $action:ident {
            $( $(#[doc = $reason_doc:literal])+ $reason:ident = $text:literal, )*
        }
    )+) => {
        $(
            $(#[doc = $doc])+
            pub const $name: u16 = $code;
        )+

        impl Close {
            $($(
                $(#[doc = $reason_doc])+
                pub const $reason: Close = Close { code: $code, reason: $text };
            )*)+
        }

        /// Every code of the progress socket, in the order of the list above.
        pub const TABLE: &[CloseCode] = &[$(
            CloseCode {
                code: $code,
                name: stringify!($name),
                sent_by: SentBy::$sent_by,
                action: ClientAction::$action,
                reasons: &[$(Reason { name: stringify!($reason), text: $text }),*],
            }
        ),+];
    };
}

close_codes! {
    /// The client closed on purpose (log-out, or it replaced its socket).
    /// The server never sends it; one seen by a client came from a proxy and
    /// is retried like any drop.
    NORMAL = 1000, sent by Client, then Backoff {
        /// Log-out: `close()` on the web client.
        CLIENT_CLOSED = "client closed",
        /// A new attempt replaces a socket that is still open.
        REPLACED = "replaced",
        /// `restart()` on the web client.
        RESTART = "restart",
        /// The token provider says nobody is signed in any more.
        SIGNED_OUT = "signed out",
    }
    /// The server is shutting down or draining: reconnect with backoff; the
    /// snapshot catches up.
    GOING_AWAY = 1001, sent by Server, then Backoff {
        /// SIGTERM/SIGINT, for sockets open and sockets still upgrading.
        SHUTTING_DOWN = "server shutting down",
    }
    /// The peer broke the WebSocket framing rules.
    PROTOCOL_ERROR = 1002, sent by Server, then Backoff {
        /// tungstenite refused a frame (bad opcode, unmasked frame, ...).
        PROTOCOL_ERROR = "protocol error",
    }
    /// A binary frame was sent: the protocol is text only. Fix the client.
    UNSUPPORTED_DATA = 1003, sent by Server, then Backoff {
        /// Any binary frame, before or after authentication.
        BINARY_MESSAGE = "binary messages not supported",
    }
    /// The socket ended without a close frame (network failure, crash,
    /// refused handshake). Never sent; browsers report it.
    ABNORMAL = 1006, sent by Browser, then Backoff {}
    /// A text frame was not valid UTF-8. Fix the client.
    INVALID_PAYLOAD = 1007, sent by Server, then Backoff {
        /// tungstenite found a text frame that is not UTF-8.
        INVALID_UTF8 = "invalid utf-8",
    }
    /// Authentication or policy failure (bad token, origin, abuse). Ask the
    /// token provider for a fresh token once; stop if it happens again.
    POLICY_VIOLATION = 1008, sent by Server, then RetryAuthOnce {
        /// No token in the query, and the first message was not `auth`.
        AUTH_MISSING_TOKEN = "missing token",
        /// Not a JWT, or bigger than the server reads.
        AUTH_MALFORMED_TOKEN = "malformed token",
        /// The header names an algorithm other than RS256.
        AUTH_ALGORITHM_NOT_ALLOWED = "algorithm not allowed",
        /// No key of the JWKS has the token's `kid`.
        AUTH_UNKNOWN_KEY = "unknown key",
        /// The signature does not verify.
        AUTH_BAD_SIGNATURE = "bad signature",
        /// The token presented (at connect or in a refresh) is already
        /// expired. Compare [`Close::TOKEN_EXPIRED`], 4001.
        AUTH_TOKEN_EXPIRED = "token expired",
        /// `nbf` is in the future.
        AUTH_TOKEN_NOT_YET_VALID = "token not yet valid",
        /// `iss` is not the configured issuer.
        AUTH_WRONG_ISSUER = "wrong issuer",
        /// `sub` or `exp` is missing.
        AUTH_MISSING_CLAIM = "missing claim",
        /// `azp` is not one of the authorized parties.
        AUTH_PARTY_NOT_ALLOWED = "azp not allowed",
        /// The JWKS could not be fetched, so no token can be checked.
        AUTH_KEYS_UNAVAILABLE = "keys unavailable",
        /// No `auth` message arrived within the auth timeout.
        AUTH_TIMEOUT = "auth timeout",
        /// More than one `?token=` parameter: refused, never guessed at.
        AUTH_DUPLICATE_TOKEN = "duplicate token",
        /// The `Origin` header is not one of the allowed origins.
        ORIGIN_NOT_ALLOWED = "origin not allowed",
        /// An in-band refresh carried a token of another user.
        USER_CHANGED = "user changed",
        /// More malformed messages in a minute than the server tolerates.
        TOO_MANY_BAD_MESSAGES = "too many bad messages",
        /// The token's session (`sid`) was signed out, removed or revoked
        /// (a Clerk `session.*` webhook): sent to the open sockets of that
        /// session, and to any later token of it.
        SESSION_REVOKED = "session revoked",
        /// The user was deleted (a Clerk `user.deleted` webhook): sent to
        /// their open sockets, and to any later token of theirs.
        USER_DELETED = "user deleted",
    }
    /// A message was larger than [`crate::MAX_CLIENT_MESSAGE_BYTES`]. Fix the
    /// client.
    MESSAGE_TOO_BIG = 1009, sent by Server, then Backoff {
        /// The message (or frame) over the limit.
        MESSAGE_TOO_BIG = "message too big",
    }
    /// Unexpected server error: reconnect with backoff.
    INTERNAL_ERROR = 1011, sent by Server, then Backoff {
        /// The store failed or a message could not be encoded; the details
        /// are in the server's log, never in the frame.
        SERVER_ERROR = "server error",
    }
    /// A limit was hit (too many connections, client too slow): reconnect
    /// with backoff.
    TRY_AGAIN_LATER = 1013, sent by Server, then Backoff {
        /// The per-user or per-node connection limit.
        TOO_MANY_CONNECTIONS = "too many connections",
        /// The node's cap on sockets still waiting for their first-message
        /// token (`REELTIME_MAX_PENDING_AUTH`).
        TOO_MANY_WAITING = "too many sockets waiting for a token",
        /// The same cap per client address (`REELTIME_MAX_PENDING_AUTH_PER_IP`).
        TOO_MANY_WAITING_FROM_ADDRESS = "too many sockets waiting for a token from this address",
        /// The socket could not take a message within the send timeout.
        CLIENT_TOO_SLOW = "client too slow",
        /// The node's connects reading the database at once
        /// (`REELTIME_CONNECT_SLOTS`) stayed taken for `REELTIME_CONNECT_WAIT_MS`:
        /// refused before it costs the database anything, so a reconnect
        /// storm spreads out instead of queueing.
        SERVER_BUSY = "server busy",
    }
    /// Sent by the web client when it gives up on a silent socket and
    /// replaces it.
    CLIENT_DEAD_SOCKET = 4000, sent by Client, then Backoff {
        /// No `ready` within the connect timeout.
        NO_ANSWER = "no answer from the server",
        /// Nothing heard for two heartbeats.
        SILENT = "no message within two heartbeats",
        /// The ping sent when the browser came back online got no answer.
        NO_ANSWER_AFTER_ONLINE = "no answer after the network came back",
    }
    /// The token expired on the open socket without an in-band refresh:
    /// reconnect at once with a fresh token.
    TOKEN_EXPIRED = 4001, sent by Server, then ReconnectFreshToken {
        /// The `exp` of the token in force passed.
        TOKEN_EXPIRED = "token expired",
    }
}

/// [`TABLE`] as pretty JSON, the form committed as `close-codes.json` for
/// clients in other languages.
pub fn table_json() -> String {
    let mut json = serde_json::to_string_pretty(TABLE).expect("the table serializes");
    json.push('\n');
    json
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::path::PathBuf;

    fn repo_file(path: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
    }

    #[test]
    fn codes_names_and_reasons_are_unique_per_code() {
        let codes: HashSet<u16> = TABLE.iter().map(|row| row.code).collect();
        assert_eq!(codes.len(), TABLE.len(), "a code is listed twice");
        let mut names = HashSet::new();
        for row in TABLE {
            let texts: HashSet<&str> = row.reasons.iter().map(|r| r.text).collect();
            assert_eq!(
                texts.len(),
                row.reasons.len(),
                "{} repeats a reason",
                row.name
            );
            for reason in row.reasons {
                assert!(
                    names.insert(reason.name),
                    "{} is defined twice",
                    reason.name
                );
                // A close frame's reason is at most 123 bytes (RFC 6455 5.5).
                assert!(reason.text.len() <= 123, "{} is too long", reason.name);
            }
        }
    }

    #[test]
    fn constants_and_rows_agree() {
        assert_eq!(
            CloseCode::find(POLICY_VIOLATION).unwrap().name,
            "POLICY_VIOLATION"
        );
        assert_eq!(
            CloseCode::find(TOKEN_EXPIRED).unwrap().action,
            ClientAction::ReconnectFreshToken
        );
        assert_eq!(
            Close::AUTH_TIMEOUT,
            Close {
                code: 1008,
                reason: "auth timeout"
            }
        );
        assert_eq!(
            Close::TOKEN_EXPIRED,
            Close {
                code: 4001,
                reason: "token expired"
            }
        );
        assert!(CloseCode::find(4999).is_none());
    }

    /// `close-codes.json` is what [`TABLE`] exports; the web client's unit
    /// test reads it. `REELTIME_BLESS=1` rewrites it after a change here.
    #[test]
    fn committed_json_is_the_table() {
        let path = repo_file("close-codes.json");
        let json = table_json();
        if std::env::var_os("REELTIME_BLESS").is_some() {
            std::fs::write(&path, &json).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == json,
            "{} is stale: run `REELTIME_BLESS=1 cargo test -p reeltime-protocol close` and commit it",
            path.display()
        );
    }

    /// docs/protocol.md has a row for every code with every reason.
    #[test]
    fn the_protocol_doc_lists_every_code_and_reason() {
        let doc = std::fs::read_to_string(repo_file("../../docs/protocol.md")).unwrap();
        let section = doc
            .split("## Close codes")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("docs/protocol.md has a close codes section");
        for row in TABLE {
            let line = section
                .lines()
                .find(|line| line.starts_with(&format!("| {} |", row.code)))
                .unwrap_or_else(|| panic!("no row for {} in docs/protocol.md", row.code));
            for reason in row.reasons {
                assert!(
                    line.contains(&format!("`{}`", reason.text)),
                    "docs/protocol.md: {} lacks `{}`",
                    row.code,
                    reason.text
                );
            }
        }
    }
}
