//! Opening progress sockets from chosen loopback source addresses, and
//! reading server messages cheaply enough to keep up with the server.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use reeltime_protocol::{Import, ImportStatus, ServerMessage};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::engineio;

/// What the server under test speaks on its socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Reeltime's own protocol (docs/protocol.md), also the FastAPI baseline's.
    #[default]
    Reeltime,
    /// Engine.IO 4 / Socket.IO 5 over a WebSocket (the Node.js peer in
    /// bench/socketio), translated into reeltime's messages (see `engineio`).
    Socketio,
}

/// One progress socket, of either protocol. Its `next`, `send` and `close`
/// are those of the WebSocket stream, so the scenarios read both alike;
/// for Socket.IO, `next` answers the server's pings and hands on
/// reeltime-shaped frames.
pub struct Ws {
    inner: WebSocketStream<TcpStream>,
    socketio: Option<engineio::Handshake>,
}

impl Ws {
    /// A reeltime-protocol socket over a stream upgraded elsewhere (the
    /// storm's balancer opens its own connections).
    pub fn reeltime(inner: WebSocketStream<TcpStream>) -> Ws {
        Ws {
            inner,
            socketio: None,
        }
    }

    /// The next frame, `None` when the stream ended.
    pub async fn next(&mut self) -> Option<Result<Message, tungstenite::Error>> {
        let Some(handshake) = &self.socketio else {
            return self.inner.next().await;
        };
        loop {
            let frame = self.inner.next().await;
            let Some(Ok(Message::Text(text))) = &frame else {
                return frame;
            };
            match engineio::translate(text.as_str(), handshake) {
                Ok(engineio::Step::Deliver(message)) => return Some(Ok(message)),
                Ok(engineio::Step::Ignore) => {}
                Ok(engineio::Step::AnswerPing) => {
                    if let Err(err) = self.inner.send(Message::text(engineio::PONG)).await {
                        return Some(Err(err));
                    }
                }
                Err(err) => {
                    return Some(Err(tungstenite::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("socket.io: {err}"),
                    ))));
                }
            }
        }
    }

    /// Sends one frame as it is.
    pub async fn send(&mut self, message: Message) -> Result<(), tungstenite::Error> {
        self.inner.send(message).await
    }

    /// Closes the WebSocket.
    pub async fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), tungstenite::Error> {
        self.inner.close(frame).await
    }
}

/// The server under test.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    /// `host:port` to connect to.
    pub addr: SocketAddr,
    /// `ws://host:port/api/ws/progress`.
    pub ws_url: String,
    /// `http://host:port`.
    pub http_base: String,
    #[serde(default)]
    pub protocol: Protocol,
}

impl Target {
    /// From `ws://127.0.0.1:8080` for `protocol`: the path defaults to
    /// `/api/ws/progress`, or for Socket.IO to
    /// `/socket.io/?EIO=4&transport=websocket` (a path without a query gets
    /// that query).
    pub fn parse_for(url: &str, protocol: Protocol) -> anyhow::Result<Target> {
        let rest = url
            .strip_prefix("ws://")
            .with_context(|| format!("--url must start with ws:// (got {url})"))?;
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, ""),
        };
        let path = match protocol {
            Protocol::Reeltime if path.is_empty() || path == "/" => "/api/ws/progress".to_string(),
            Protocol::Reeltime => path.to_string(),
            Protocol::Socketio if path.is_empty() || path == "/" => {
                format!("/socket.io/?{}", engineio::QUERY)
            }
            Protocol::Socketio if !path.contains('?') => format!("{path}?{}", engineio::QUERY),
            Protocol::Socketio => path.to_string(),
        };
        let addr: SocketAddr = authority.parse().with_context(|| {
            format!("--url needs a numeric address like ws://127.0.0.1:8080 (got {authority})")
        })?;
        Ok(Target {
            addr,
            ws_url: format!("ws://{authority}{path}"),
            http_base: format!("http://{authority}"),
            protocol,
        })
    }
}

/// Parses `127.0.0.2-127.0.0.40` or `127.0.0.2,127.0.0.3` (or a mix).
pub fn parse_source_ips(spec: &str) -> anyhow::Result<Vec<IpAddr>> {
    let mut ips = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((from, to)) = part.split_once('-') {
            let from: std::net::Ipv4Addr = from.trim().parse().context("source ip range start")?;
            let to: std::net::Ipv4Addr = to.trim().parse().context("source ip range end")?;
            let (from, to) = (u32::from(from), u32::from(to));
            if to < from || to - from > 65_536 {
                bail!("bad source ip range {part}");
            }
            ips.extend((from..=to).map(|ip| IpAddr::V4(ip.into())));
        } else {
            ips.push(
                part.parse()
                    .with_context(|| format!("bad source ip {part}"))?,
            );
        }
    }
    if ips.is_empty() {
        bail!("no source ips in {spec:?}");
    }
    Ok(ips)
}

/// The client's WebSocket settings (small buffers: many sockets per process).
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20))
}

/// Opens a TCP connection from `source` and upgrades it with `?token=`.
pub async fn open(target: &Target, source: Option<IpAddr>, token: &str) -> anyhow::Result<Ws> {
    let stream = tcp_connect(target.addr, source).await?;
    let url = match target.protocol {
        Protocol::Reeltime => format!("{}?token={token}", target.ws_url),
        Protocol::Socketio => target.ws_url.clone(),
    };
    let (mut inner, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config()))
            .await
            .map_err(|err| anyhow::anyhow!("websocket handshake: {}", describe(&err)))?;
    let socketio = match target.protocol {
        Protocol::Reeltime => None,
        Protocol::Socketio => Some(socketio_connect(&mut inner, token).await?),
    };
    Ok(Ws { inner, socketio })
}

/// A TCP connection to `addr` from `source` (one of the benchmark's
/// loopback addresses, so that many sockets fit in the port range), with
/// Nagle off: the one connect of every scenario.
pub async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> anyhow::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .context("socket()")?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("binding to source address {ip}"))?;
    }
    let stream = socket
        .connect(addr)
        .await
        .with_context(|| format!("TCP connect to {addr}"))?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    Ok(stream)
}

/// Socket.IO after the upgrade: reads the Engine.IO handshake and sends the
/// CONNECT with the token in its `auth` payload (the ack is read as `ready`).
async fn socketio_connect(
    ws: &mut WebSocketStream<TcpStream>,
    token: &str,
) -> anyhow::Result<engineio::Handshake> {
    let handshake = loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => break engineio::handshake(text.as_str())?,
            Some(Ok(Message::Close(frame))) => bail!("closed before the Engine.IO open: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(err)) => bail!("reading the Engine.IO open: {}", describe(&err)),
            None => bail!("connection dropped before the Engine.IO open"),
        }
    };
    let connect = engineio::connect_packet(&engineio::Auth { token })?;
    ws.send(Message::text(connect))
        .await
        .map_err(|err| anyhow::anyhow!("sending the Socket.IO CONNECT: {}", describe(&err)))?;
    Ok(handshake)
}

fn describe(err: &tungstenite::Error) -> String {
    match err {
        tungstenite::Error::Http(response) => format!("HTTP {}", response.status()),
        other => other.to_string(),
    }
}

/// What came off a socket, parsed as little as the benchmark needs.
pub enum Incoming<'a> {
    /// `{"type":"import"}`: the fields the checks and latency need.
    Import(ImportLite<'a>),
    /// Anything else, fully parsed with the shared wire types.
    Other(Box<ServerMessage>),
    Closed(u16, String),
    /// A ping/pong frame: nothing for the protocol.
    Control,
}

/// The part of an import message the benchmark reads. Its field names and
/// the status enum are the wire contract's (see the test below).
#[derive(Debug, Deserialize)]
pub struct ImportLite<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    pub version: u64,
    pub status: ImportStatus,
    #[serde(borrow)]
    pub updated_at: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    import: Option<ImportLite<'a>>,
}

/// Parses a text frame.
pub fn parse(text: &str) -> anyhow::Result<Incoming<'_>> {
    let envelope: Envelope<'_> =
        serde_json::from_str(text).with_context(|| format!("unparseable message: {text}"))?;
    if envelope.kind == "import"
        && let Some(import) = envelope.import
    {
        return Ok(Incoming::Import(import));
    }
    let message: ServerMessage =
        serde_json::from_str(text).with_context(|| format!("unknown message: {text}"))?;
    Ok(Incoming::Other(Box::new(message)))
}

/// Microseconds since the Unix epoch of an RFC 3339 timestamp.
pub fn rfc3339_micros(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|at| at.timestamp_micros())
}

pub fn unix_micros_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Turns a frame into an [`Incoming`] for `handle`; `None` when the stream
/// ended without a close frame.
pub fn classify<R>(
    frame: Option<Result<Message, tungstenite::Error>>,
    handle: impl FnOnce(Incoming<'_>) -> R,
) -> anyhow::Result<Option<R>> {
    match frame {
        None => Ok(None),
        Some(Err(err)) => Err(anyhow::anyhow!("read: {}", describe(&err))),
        Some(Ok(Message::Text(text))) => Ok(Some(handle(parse(text.as_str())?))),
        Some(Ok(Message::Close(frame))) => Ok(Some(handle(match frame {
            Some(frame) => Incoming::Closed(frame.code.into(), frame.reason.to_string()),
            None => Incoming::Closed(1005, String::new()),
        }))),
        Some(Ok(Message::Binary(_))) => bail!("unexpected binary frame"),
        Some(Ok(_)) => Ok(Some(handle(Incoming::Control))),
    }
}

/// After the upgrade: reads `ready` then `snapshot`. Returns the snapshot's
/// imports and when `ready` arrived.
pub async fn await_ready(ws: &mut Ws, wait: Duration) -> anyhow::Result<(Instant, Vec<Import>)> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut ready_at = None;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "no {} within {wait:?}",
                    if ready_at.is_some() {
                        "snapshot"
                    } else {
                        "ready"
                    }
                )
            })?;
        enum Step {
            Ready,
            Snapshot(Vec<Import>),
            Skip,
            Closed(u16, String),
            Unexpected(String),
        }
        let step = classify(frame, |incoming| match incoming {
            Incoming::Other(message) => match *message {
                ServerMessage::Ready { .. } => Step::Ready,
                ServerMessage::Snapshot { imports, .. } => Step::Snapshot(imports),
                other => Step::Unexpected(format!("{other:?}")),
            },
            Incoming::Import(_) => Step::Skip, // a change racing the snapshot
            Incoming::Control => Step::Skip,
            Incoming::Closed(code, reason) => Step::Closed(code, reason),
        })?;
        match step {
            None => bail!("connection dropped before ready"),
            Some(Step::Ready) => ready_at = Some(Instant::now()),
            Some(Step::Snapshot(imports)) => match ready_at {
                Some(at) => return Ok((at, imports)),
                None => bail!("snapshot before ready"),
            },
            Some(Step::Skip) => {}
            Some(Step::Closed(code, reason)) => bail!("closed {code} {reason}"),
            Some(Step::Unexpected(what)) => bail!("unexpected message before ready: {what}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn lite_parse_reads_what_the_server_writes() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-26T04:15:02.123Z")
            .unwrap()
            .with_timezone(&Utc);
        let import = Import {
            id: "i\"1".into(),
            status: ImportStatus::Downloading,
            stage: None,
            progress: Some(0.5),
            bytes_done: 1,
            bytes_total: None,
            version: 7,
            attempt: 1,
            source: reeltime_protocol::ImportSource::Url,
            source_url: Some("synthetic:?steps=5".into()),
            file_name: None,
            metadata: None,
            title: "t".into(),
            error: None,
            result: Some(serde_json::json!({"a": [1, 2]})),
            queue_position: None,
            created_at: at,
            updated_at: at,
        };
        let text = serde_json::to_string(&ServerMessage::Import {
            import: Box::new(import),
        })
        .unwrap();
        match parse(&text).unwrap() {
            Incoming::Import(lite) => {
                assert_eq!(lite.id, "i\"1");
                assert_eq!(lite.version, 7);
                assert_eq!(lite.status, ImportStatus::Downloading);
                assert_eq!(
                    rfc3339_micros(&lite.updated_at),
                    Some(at.timestamp_micros())
                );
            }
            _ => panic!("not an import"),
        }
        assert!(matches!(
            parse(r#"{"type":"auth_ok","expires_at":5}"#).unwrap(),
            Incoming::Other(message) if matches!(*message, ServerMessage::AuthOk { expires_at: 5 })
        ));
    }

    #[test]
    fn targets_and_ip_ranges() {
        let target = Target::parse_for("ws://127.0.0.1:8080", Protocol::Reeltime).unwrap();
        assert_eq!(target.ws_url, "ws://127.0.0.1:8080/api/ws/progress");
        assert_eq!(target.http_base, "http://127.0.0.1:8080");
        assert_eq!(target.protocol, Protocol::Reeltime);
        let sio = Target::parse_for("ws://127.0.0.1:8080", Protocol::Socketio).unwrap();
        assert_eq!(
            sio.ws_url,
            "ws://127.0.0.1:8080/socket.io/?EIO=4&transport=websocket"
        );
        let sio = Target::parse_for("ws://127.0.0.1:8080/io/", Protocol::Socketio).unwrap();
        assert_eq!(
            sio.ws_url,
            "ws://127.0.0.1:8080/io/?EIO=4&transport=websocket"
        );
        let ips = parse_source_ips("127.0.0.2-127.0.0.4,127.0.0.9").unwrap();
        assert_eq!(ips.len(), 4);
        assert!(parse_source_ips("").is_err());
    }
}
