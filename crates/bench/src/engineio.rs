//! Just enough of Engine.IO 4 and Socket.IO 5 to load a Socket.IO server
//! over a plain WebSocket (`/socket.io/?EIO=4&transport=websocket`, no
//! polling, no upgrade), so the same scenarios run against the JavaScript
//! peer (bench/socketio) as against reeltime.
//!
//! One WebSocket text frame is one Engine.IO packet: a type digit, then its
//! data. Type `4` (message) carries one Socket.IO packet: a type digit, an
//! optional `/namespace,`, an optional ack id, then JSON. The exchange the
//! benchmark needs:
//!
//! ```text
//! server  0{"sid":"..","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}
//! client  40{"token":"<jwt>"}            CONNECT to "/" with the auth payload
//! server  40{"sid":".."}                 CONNECT ack      (or 44{"message":".."}: refused)
//! server  42["snapshot",[..]]            events
//! server  2        client  3             the server pings, the client must answer
//! ```
//!
//! [`translate`] turns what the server sends into the frames of reeltime's
//! own protocol (`ready`, `snapshot`, `import`, closes), so the scenarios
//! and their checks are the same code for both.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The Engine.IO PONG packet, the answer to the server's PING (`2`).
pub const PONG: &str = "3";

/// The query that selects Engine.IO 4 over a WebSocket from the start.
pub const QUERY: &str = "EIO=4&transport=websocket";

/// Why a frame from a Socket.IO server could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty Engine.IO packet")]
    Empty,
    #[error("unknown Engine.IO packet type {0:?}")]
    EngineType(char),
    #[error("empty Socket.IO packet")]
    EmptySocket,
    #[error("unknown Socket.IO packet type {0:?}")]
    SocketType(char),
    #[error("binary Socket.IO packets are not supported")]
    Binary,
    #[error("Engine.IO open packet: {0}")]
    Open(#[source] serde_json::Error),
    #[error("malformed Socket.IO event: {0}")]
    Event(&'static str),
    #[error("Socket.IO event {0:?} has no mapping to the benchmark's messages")]
    UnknownEvent(String),
    #[error("expected the Engine.IO open packet, got {0:?}")]
    NotOpen(String),
}

/// The Engine.IO handshake (`0{...}`), sent by the server first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handshake {
    pub sid: String,
    #[serde(default)]
    pub upgrades: Vec<String>,
    /// How often the server sends PING, in ms.
    pub ping_interval: u64,
    /// How long the server waits for PONG before it drops the connection.
    pub ping_timeout: u64,
    #[serde(default)]
    pub max_payload: u64,
}

/// One Engine.IO packet, borrowing from the frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    Open(Handshake),
    Close,
    /// `2`, with an optional payload (`2probe` during an upgrade).
    Ping(&'a str),
    Pong(&'a str),
    Message(SocketPacket<'a>),
    Upgrade,
    Noop,
}

/// One Socket.IO packet inside an Engine.IO message.
#[derive(Debug, PartialEq, Eq)]
pub enum SocketPacket<'a> {
    /// CONNECT: from the server, the ack with `{"sid":..}`.
    Connect {
        nsp: &'a str,
        data: &'a str,
    },
    Disconnect {
        nsp: &'a str,
    },
    /// EVENT `["name",data]`: `data` is the JSON text after the name (one
    /// argument: that argument; none: empty).
    Event {
        nsp: &'a str,
        ack: Option<u64>,
        name: &'a str,
        data: &'a str,
    },
    Ack {
        nsp: &'a str,
        ack: Option<u64>,
    },
    /// CONNECT_ERROR: the middleware refused (`{"message":..}`).
    ConnectError {
        nsp: &'a str,
        data: &'a str,
    },
}

/// Decodes one WebSocket text frame.
pub fn decode(text: &str) -> Result<Packet<'_>, CodecError> {
    let mut chars = text.chars();
    let kind = chars.next().ok_or(CodecError::Empty)?;
    let rest = chars.as_str();
    Ok(match kind {
        '0' => Packet::Open(serde_json::from_str(rest).map_err(CodecError::Open)?),
        '1' => Packet::Close,
        '2' => Packet::Ping(rest),
        '3' => Packet::Pong(rest),
        '4' => Packet::Message(decode_socket(rest)?),
        '5' => Packet::Upgrade,
        '6' => Packet::Noop,
        other => return Err(CodecError::EngineType(other)),
    })
}

fn decode_socket(text: &str) -> Result<SocketPacket<'_>, CodecError> {
    let mut chars = text.chars();
    let kind = chars.next().ok_or(CodecError::EmptySocket)?;
    let mut rest = chars.as_str();
    if matches!(kind, '5' | '6') {
        return Err(CodecError::Binary);
    }
    // `/admin,` names a namespace; the main one ("/") is left out.
    let mut nsp = "/";
    if rest.starts_with('/') {
        match rest.find(',') {
            Some(comma) => {
                nsp = &rest[..comma];
                rest = &rest[comma + 1..];
            }
            None => {
                nsp = rest;
                rest = "";
            }
        }
    }
    // An ack id: the digits before the JSON.
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let ack = if digits > 0 {
        rest[..digits].parse().ok()
    } else {
        None
    };
    rest = &rest[digits..];
    Ok(match kind {
        '0' => SocketPacket::Connect { nsp, data: rest },
        '1' => SocketPacket::Disconnect { nsp },
        '2' => {
            let (name, data) = split_event(rest)?;
            SocketPacket::Event {
                nsp,
                ack,
                name,
                data,
            }
        }
        '3' => SocketPacket::Ack { nsp, ack },
        '4' => SocketPacket::ConnectError { nsp, data: rest },
        other => return Err(CodecError::SocketType(other)),
    })
}

/// `["name",data]` → (`name`, `data`) without parsing `data`: the client
/// must stay cheaper than the server it loads.
fn split_event(text: &str) -> Result<(&str, &str), CodecError> {
    let inner = text
        .trim_end()
        .strip_prefix("[\"")
        .and_then(|t| t.strip_suffix(']'))
        .ok_or(CodecError::Event("not a JSON array starting with the name"))?;
    let close = inner
        .find('"')
        .ok_or(CodecError::Event("unterminated event name"))?;
    let name = &inner[..close];
    if name.contains('\\') {
        return Err(CodecError::Event("escapes in the event name"));
    }
    let after = inner[close + 1..].trim_start();
    let data = match after.strip_prefix(',') {
        Some(data) => data.trim(),
        None if after.is_empty() => "",
        None => return Err(CodecError::Event("no comma after the event name")),
    };
    Ok((name, data))
}

/// The client's CONNECT to the main namespace with `auth` as its payload.
pub fn connect_packet(auth: &impl Serialize) -> Result<String, serde_json::Error> {
    Ok(format!("40{}", serde_json::to_string(auth)?))
}

/// The auth payload the peer reads (`socket.handshake.auth.token`).
#[derive(Debug, Serialize)]
pub struct Auth<'a> {
    pub token: &'a str,
}

/// What to do with a frame from the server.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Hand this to the scenario, as if reeltime had sent it.
    Deliver(Message),
    /// Send [`PONG`] back, then read on.
    AnswerPing,
    /// Nothing for the scenario.
    Ignore,
}

/// The close code a refused CONNECT reads as: the one the baseline's
/// refusal maps to (policy violation).
pub const REFUSED: u16 = 1008;

/// Maps one frame of the server to a frame of reeltime's protocol: the
/// CONNECT ack becomes `ready`, the events `snapshot` and `import` become
/// the messages of the same name, a CONNECT_ERROR or a disconnect a close.
pub fn translate(text: &str, handshake: &Handshake) -> Result<Step, CodecError> {
    Ok(match decode(text)? {
        Packet::Ping(_) => Step::AnswerPing,
        Packet::Open(_) | Packet::Pong(_) | Packet::Upgrade | Packet::Noop => Step::Ignore,
        Packet::Close => Step::Deliver(close(1000, "engine.io close".to_string())),
        Packet::Message(SocketPacket::Connect { nsp: "/", data }) => {
            #[derive(Deserialize)]
            struct Ack<'a> {
                #[serde(borrow)]
                sid: Cow<'a, str>,
            }
            let sid = serde_json::from_str::<Ack<'_>>(data)
                .map(|ack| ack.sid.into_owned())
                .unwrap_or_default();
            let ready = serde_json::json!({
                "type": "ready",
                "user_id": "",
                "connection_id": sid,
                "expires_at": 0,
                "heartbeat_ms": handshake.ping_interval,
                "protocol": 0,
            });
            Step::Deliver(Message::text(ready.to_string()))
        }
        Packet::Message(SocketPacket::ConnectError { nsp: "/", data }) => {
            Step::Deliver(close(REFUSED, format!("socket.io connect_error {data}")))
        }
        Packet::Message(SocketPacket::Disconnect { nsp: "/" }) => {
            Step::Deliver(close(1000, "socket.io disconnect".to_string()))
        }
        Packet::Message(SocketPacket::Event {
            nsp: "/",
            name,
            data,
            ..
        }) => {
            let field = match name {
                "import" => "import",
                "snapshot" => "imports",
                other => return Err(CodecError::UnknownEvent(other.to_string())),
            };
            if data.is_empty() {
                return Err(CodecError::Event("an event without data"));
            }
            let mut text = String::with_capacity(data.len() + name.len() + field.len() + 20);
            text.push_str("{\"type\":\"");
            text.push_str(name);
            text.push_str("\",\"");
            text.push_str(field);
            text.push_str("\":");
            text.push_str(data);
            text.push('}');
            Step::Deliver(Message::text(text))
        }
        // Other namespaces and acks: nothing the benchmark asked for.
        Packet::Message(_) => Step::Ignore,
    })
}

fn close(code: u16, reason: String) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
}

/// Reads the handshake out of the first frame of a connection.
pub fn handshake(text: &str) -> Result<Handshake, CodecError> {
    match decode(text)? {
        Packet::Open(handshake) => Ok(handshake),
        _ => Err(CodecError::NotOpen(text.chars().take(80).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::{Incoming, parse};
    use reeltime_protocol::{ImportStatus, ServerMessage};

    // The frames below are the examples of the Engine.IO 4 and Socket.IO 5
    // protocol documents, byte for byte.

    fn open() -> Handshake {
        handshake(r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#).unwrap()
    }

    #[test]
    fn engine_packets() {
        let open = open();
        assert_eq!(open.sid, "lv_VI97HAXpY6yYWAAAC");
        assert_eq!(open.upgrades, vec!["websocket".to_string()]);
        assert_eq!(open.ping_interval, 25000);
        assert_eq!(open.ping_timeout, 20000);
        assert_eq!(open.max_payload, 1_000_000);
        assert_eq!(decode("2").unwrap(), Packet::Ping(""));
        assert_eq!(decode("2probe").unwrap(), Packet::Ping("probe"));
        assert_eq!(decode("3probe").unwrap(), Packet::Pong("probe"));
        assert_eq!(decode("1").unwrap(), Packet::Close);
        assert_eq!(decode("5").unwrap(), Packet::Upgrade);
        assert_eq!(decode("6").unwrap(), Packet::Noop);
        assert!(matches!(decode(""), Err(CodecError::Empty)));
        assert!(matches!(decode("9"), Err(CodecError::EngineType('9'))));
        assert!(matches!(decode("0{"), Err(CodecError::Open(_))));
        assert!(matches!(handshake("2"), Err(CodecError::NotOpen(_))));
        assert_eq!(translate("2", &open).unwrap(), Step::AnswerPing);
        assert_eq!(translate("6", &open).unwrap(), Step::Ignore);
    }

    #[test]
    fn socket_packets() {
        assert_eq!(
            connect_packet(&Auth { token: "123" }).unwrap(),
            r#"40{"token":"123"}"#
        );
        assert_eq!(
            decode(r#"40{"sid":"oSO0OpakMV_3jnilAAAA"}"#).unwrap(),
            Packet::Message(SocketPacket::Connect {
                nsp: "/",
                data: r#"{"sid":"oSO0OpakMV_3jnilAAAA"}"#
            })
        );
        assert_eq!(
            decode(r#"44{"message":"Not authorized"}"#).unwrap(),
            Packet::Message(SocketPacket::ConnectError {
                nsp: "/",
                data: r#"{"message":"Not authorized"}"#
            })
        );
        assert_eq!(
            decode(r#"42["hello","world"]"#).unwrap(),
            Packet::Message(SocketPacket::Event {
                nsp: "/",
                ack: None,
                name: "hello",
                data: r#""world""#
            })
        );
        assert_eq!(
            decode(r#"42/admin,456["project:delete",123]"#).unwrap(),
            Packet::Message(SocketPacket::Event {
                nsp: "/admin",
                ack: Some(456),
                name: "project:delete",
                data: "123"
            })
        );
        assert_eq!(
            decode("43/admin,456[]").unwrap(),
            Packet::Message(SocketPacket::Ack {
                nsp: "/admin",
                ack: Some(456)
            })
        );
        assert_eq!(
            decode("41/admin,").unwrap(),
            Packet::Message(SocketPacket::Disconnect { nsp: "/admin" })
        );
        assert_eq!(
            decode(r#"42["ping"]"#).unwrap(),
            Packet::Message(SocketPacket::Event {
                nsp: "/",
                ack: None,
                name: "ping",
                data: ""
            })
        );
        assert!(matches!(
            decode(r#"451-["hello",{"_placeholder":true,"num":0}]"#),
            Err(CodecError::Binary)
        ));
        assert!(matches!(decode("4"), Err(CodecError::EmptySocket)));
        assert!(matches!(decode("49"), Err(CodecError::SocketType('9'))));
        assert!(matches!(decode("42{}"), Err(CodecError::Event(_))));
        assert!(matches!(decode(r#"42["a" 1]"#), Err(CodecError::Event(_))));
        assert!(matches!(
            decode(r#"42["a\"b",1]"#),
            Err(CodecError::Event(_))
        ));
    }

    #[test]
    fn translation_to_reeltime_messages() {
        let open = open();
        let text = |step: Step| match step {
            Step::Deliver(Message::Text(text)) => text.to_string(),
            other => panic!("not a text frame: {other:?}"),
        };

        let ready = text(translate(r#"40{"sid":"oSO0OpakMV_3jnilAAAA"}"#, &open).unwrap());
        match parse(&ready).unwrap() {
            Incoming::Other(message) => match *message {
                ServerMessage::Ready {
                    connection_id,
                    heartbeat_ms,
                    ..
                } => {
                    assert_eq!(connection_id, "oSO0OpakMV_3jnilAAAA");
                    assert_eq!(heartbeat_ms, 25000);
                }
                other => panic!("not ready: {other:?}"),
            },
            _ => panic!("not ready"),
        }

        // What the peer's `io.to(room).emit("import", record)` writes.
        let record = r#"{"id":"5f0c","status":"downloading","stage":"downloading","progress":0.5,"bytes_done":1,"bytes_total":2,"version":3,"attempt":1,"source_url":"synthetic:?steps=2","title":"t","error":null,"result":null,"queue_position":null,"created_at":"2026-12-02T13:25:32.123Z","updated_at":"2026-12-02T13:25:32.223Z"}"#;
        let import = text(translate(&format!(r#"42["import",{record}]"#), &open).unwrap());
        match parse(&import).unwrap() {
            Incoming::Import(lite) => {
                assert_eq!(lite.id, "5f0c");
                assert_eq!(lite.version, 3);
                assert_eq!(lite.status, ImportStatus::Downloading);
                assert_eq!(lite.updated_at, "2026-12-02T13:25:32.223Z");
            }
            _ => panic!("not an import"),
        }

        let snapshot = text(translate(&format!(r#"42["snapshot",[{record}]]"#), &open).unwrap());
        match parse(&snapshot).unwrap() {
            Incoming::Other(message) => match *message {
                ServerMessage::Snapshot { imports, .. } => {
                    assert_eq!(imports.len(), 1);
                    assert_eq!(imports[0].version, 3);
                }
                other => panic!("not a snapshot: {other:?}"),
            },
            _ => panic!("not a snapshot"),
        }
        let empty = text(translate(r#"42["snapshot",[]]"#, &open).unwrap());
        assert!(matches!(
            parse(&empty).unwrap(),
            Incoming::Other(message) if matches!(&*message, ServerMessage::Snapshot { imports, .. } if imports.is_empty())
        ));

        match translate(r#"44{"message":"unauthorized"}"#, &open).unwrap() {
            Step::Deliver(Message::Close(Some(frame))) => {
                assert_eq!(u16::from(frame.code), REFUSED);
                assert!(frame.reason.contains("unauthorized"));
            }
            other => panic!("not a close: {other:?}"),
        }
        assert!(matches!(
            translate("41", &open).unwrap(),
            Step::Deliver(Message::Close(Some(_)))
        ));
        assert!(matches!(
            translate("1", &open).unwrap(),
            Step::Deliver(Message::Close(Some(_)))
        ));
        assert!(matches!(
            translate(r#"42["other",1]"#, &open),
            Err(CodecError::UnknownEvent(name)) if name == "other"
        ));
        assert_eq!(
            translate(r#"42/admin,["import",1]"#, &open).unwrap(),
            Step::Ignore
        );
    }
}
