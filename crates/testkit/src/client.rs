//! Clients that speak the public protocol: a WebSocket client that reads
//! typed [`ServerMessage`]s and close frames, and small REST helpers.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reeltime_protocol::{Import, ServerMessage};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// Default wait for one event; generous for a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(30);

/// What came off the socket.
#[derive(Debug)]
pub enum Event {
    Message(ServerMessage),
    Closed {
        code: u16,
        reason: String,
    },
    /// The connection ended without a close frame.
    Dropped,
}

/// A progress-socket client.
pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    /// Opens `url` with the token in the query.
    pub async fn connect_query(url: &str, token: &str) -> WsClient {
        WsClient::connect_raw(&format!("{url}?token={token}"), None).await
    }

    /// Opens `url` and sends the token as the first message.
    pub async fn connect_first_message(url: &str, token: &str) -> WsClient {
        let mut client = WsClient::connect_raw(url, None).await;
        client
            .send_json(&serde_json::json!({"type": "auth", "token": token}))
            .await;
        client
    }

    /// Opens `url` with the token in the query; a failed connection or
    /// handshake is an `Err` (a client that will retry), not a panic.
    pub async fn try_connect_query(url: &str, token: &str) -> Result<WsClient, String> {
        let request = format!("{url}?token={token}")
            .into_client_request()
            .map_err(|err| err.to_string())?;
        match tokio::time::timeout(WAIT, connect_async(request)).await {
            Ok(Ok((stream, _))) => Ok(WsClient { stream }),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err("the handshake took too long".into()),
        }
    }

    /// Opens `url` with an optional Origin header, sending nothing.
    pub async fn connect_raw(url: &str, origin: Option<&str>) -> WsClient {
        let mut request = url.into_client_request().expect("ws request");
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("origin", origin.parse().expect("origin header"));
        }
        let (stream, _) = tokio::time::timeout(WAIT, connect_async(request))
            .await
            .expect("connect in time")
            .expect("websocket handshake");
        WsClient { stream }
    }

    /// Connects with a small kernel receive buffer (a client on a slow
    /// link): once it stops reading, the server's writes back up quickly.
    pub async fn connect_with_small_buffer(url: &str, token: &str) -> WsClient {
        let request = format!("{url}?token={token}")
            .into_client_request()
            .expect("ws request");
        let host = request
            .uri()
            .authority()
            .expect("authority")
            .as_str()
            .to_string();
        let addr = tokio::net::lookup_host(host)
            .await
            .expect("resolve")
            .next()
            .expect("an address");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let tcp = socket.connect(addr).await.expect("connect");
        let (stream, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp))
            .await
            .expect("websocket handshake");
        WsClient { stream }
    }

    /// Connects with the token in the query and reads `ready` and `snapshot`.
    pub async fn open(url: &str, token: &str) -> (WsClient, ServerMessage, Vec<Import>) {
        let mut client = WsClient::connect_query(url, token).await;
        let ready = client.message().await;
        assert!(
            matches!(ready, ServerMessage::Ready { .. }),
            "expected ready, got {ready:?}"
        );
        let imports = match client.message().await {
            ServerMessage::Snapshot { imports, .. } => imports,
            other => panic!("expected snapshot, got {other:?}"),
        };
        (client, ready, imports)
    }

    pub async fn send_text(&mut self, text: &str) {
        let _ = self.stream.send(Message::text(text)).await;
    }

    pub async fn send_json(&mut self, value: &serde_json::Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        let _ = self.stream.send(Message::binary(bytes)).await;
    }

    /// Sends a text frame with arbitrary bytes as its payload (invalid UTF-8
    /// included), which a well-behaved client can never send.
    pub async fn send_raw_text(&mut self, payload: Vec<u8>) {
        use tokio_tungstenite::tungstenite::protocol::frame::Frame;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        let frame = Frame::message(payload, OpCode::Data(Data::Text), true);
        let _ = self.stream.send(Message::Frame(frame)).await;
    }

    /// Next protocol message or close, within `wait`; `None` on timeout.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return None,
                Ok(frame) => frame,
            };
            match frame {
                None | Some(Err(_)) => return Some(Event::Dropped),
                Some(Ok(Message::Text(text))) => {
                    let message: ServerMessage = serde_json::from_str(&text)
                        .unwrap_or_else(|err| panic!("unparseable server message {text}: {err}"));
                    return Some(Event::Message(message));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Some(match frame {
                        Some(frame) => Event::Closed {
                            code: frame.code.into(),
                            reason: frame.reason.to_string(),
                        },
                        None => Event::Closed {
                            code: 1005,
                            reason: String::new(),
                        },
                    });
                }
                Some(Ok(_)) => continue, // ping, pong, binary: not protocol messages
            }
        }
    }

    /// Next event, failing the test after [`WAIT`].
    pub async fn next(&mut self) -> Event {
        self.next_within(WAIT).await.expect("an event in time")
    }

    /// Next message; panics on close or timeout.
    pub async fn message(&mut self) -> ServerMessage {
        match self.next().await {
            Event::Message(message) => message,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Reads until the close frame; returns its code and reason.
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            match self.next().await {
                Event::Closed { code, reason } => return (code, reason),
                Event::Dropped => return (1006, String::new()),
                Event::Message(_) => continue,
            }
        }
    }

    /// Reads import messages until `done` says so; returns every import seen.
    pub async fn imports_until(&mut self, mut done: impl FnMut(&Import) -> bool) -> Vec<Import> {
        let mut seen = Vec::new();
        loop {
            match self.next().await {
                Event::Message(ServerMessage::Import { import }) => {
                    let stop = done(&import);
                    seen.push(*import);
                    if stop {
                        return seen;
                    }
                }
                Event::Message(_) => continue,
                other => panic!("socket ended while waiting for imports: {other:?}"),
            }
        }
    }

    /// Closes with 1000, as a client logging out does.
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }

    /// Closes with 1000 and returns the code of the server's answering
    /// close frame (1006 if it never came).
    pub async fn close_and_read_reply(mut self) -> u16 {
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "log out".into(),
        };
        let _ = self.stream.send(Message::Close(Some(frame))).await;
        match self.next().await {
            Event::Closed { code, .. } => code,
            Event::Dropped => 1006,
            Event::Message(message) => panic!("message after close: {message:?}"),
        }
    }

    /// Drops the TCP connection with no close frame (a network failure).
    pub fn drop_connection(self) {
        drop(self);
    }
}

/// REST calls with a bearer token.
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api {
            base: base.to_string(),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(WAIT)
                // Below the server's keep-alive wait (REELTIME_HTTP_HEADER_TIMEOUT_SECS,
                // 10 s by default): a pooled connection is dropped here
                // before the server closes it, so a request never races
                // the server's close (a POST on it would fail, not retry).
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .expect("client"),
        }
    }

    /// `POST /api/imports`; returns status and JSON body.
    pub async fn create_import(&self, token: &str, url: &str) -> (u16, serde_json::Value) {
        self.send(
            self.http
                .post(format!("{}/api/imports", self.base))
                .bearer_auth(token)
                .json(&serde_json::json!({"url": url})),
        )
        .await
    }

    /// Creates an import that must be accepted; returns it.
    pub async fn create_ok(&self, token: &str, url: &str) -> Import {
        let (status, body) = self.create_import(token, url).await;
        assert_eq!(status, 201, "create failed: {body}");
        serde_json::from_value(body).expect("import object")
    }

    pub async fn get(&self, token: &str, path: &str) -> (u16, serde_json::Value) {
        self.send(
            self.http
                .get(format!("{}{path}", self.base))
                .bearer_auth(token),
        )
        .await
    }

    pub async fn post(&self, token: &str, path: &str) -> (u16, serde_json::Value) {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .bearer_auth(token),
        )
        .await
    }

    pub async fn delete(&self, token: &str, path: &str) -> (u16, serde_json::Value) {
        self.send(
            self.http
                .delete(format!("{}{path}", self.base))
                .bearer_auth(token),
        )
        .await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let body = response.bytes().await.expect("body");
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        (status, json)
    }
}
