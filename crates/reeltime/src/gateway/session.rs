//! One client connection from upgrade to close: authenticate, register in
//! the hub, send `ready` and the snapshot, then forward changes and answer
//! the client until something ends it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use reeltime_protocol::{ClientMessage, Close, PROTOCOL_VERSION, ServerMessage};
use tokio::time::{Instant, sleep_until, timeout};

use super::sent::SentVersions;
use super::{Gateway, Opening, Outbox, QueryToken};
use crate::auth::{AuthError, Claims};
use crate::gateway::{ConnectSlot, Registration, Reservation};
use crate::store::Snapshot;

/// A client that cannot take a message for this long is dropped (1013).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Malformed messages tolerated per minute before closing 1008.
const MAX_BAD_MESSAGES_PER_MINUTE: usize = 10;
/// How long to wait for the client's answer to our close frame.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(2);
/// A resync whose snapshot failed is asked for again after this, plus as
/// much again at random, so the sockets of a node do not all retry at once.
const RESYNC_RETRY: Duration = Duration::from_secs(2);

/// What ends a session; each maps to one close frame (or none).
enum End {
    Close(Close),
    /// Refused before anything else (shutting down, origin, admission):
    /// the close frame is sent, and the socket dropped without waiting for
    /// the peer's answer, so refused sockets cost nothing for long.
    Refuse(Close),
    /// The peer is gone (closed, errored or silent): nothing to send.
    Gone,
}

/// Runs a connection to its end. `query_token` is the `?token=` value.
///
/// The connect (token check, snapshot read, first writes) and
/// the close run in boxes of their own: an `async fn` is as large as its
/// largest moment, and inline they made every idle socket's task carry
/// their state for its whole life (docs/benchmarks.md, "Round two").
pub async fn run(mut socket: Box<WebSocket>, gateway: Arc<Gateway>, opening: Box<Opening>) {
    let end = match Box::pin(start(&mut socket, &gateway, opening)).await {
        Ok(mut session) => {
            tracing::debug!(parent: &session.span, "websocket ready");
            session.serve().await
        }
        Err(end) => end,
    };
    Box::pin(finish(&mut socket, &gateway, end)).await;
}

/// Acts on the upgrade's refusals, authenticates, registers and sends
/// `ready` and the snapshot: a session ready to serve, or how it ends.
async fn start<'a>(
    socket: &'a mut WebSocket,
    gateway: &'a Arc<Gateway>,
    opening: Box<Opening>,
) -> Result<Box<Session<'a>>, End> {
    let upgraded_at = Instant::now();
    // Taken apart here, so its box is gone once connected.
    let Opening {
        origin_refused,
        token,
        admitted,
        client,
    } = *opening;
    if gateway.shutdown.is_cancelled() {
        return Err(End::Refuse(Close::SHUTTING_DOWN));
    }
    if origin_refused {
        gateway
            .metrics
            .auth_failure(Close::ORIGIN_NOT_ALLOWED.reason);
        return Err(End::Refuse(Close::ORIGIN_NOT_ALLOWED));
    }
    let query_token = match token {
        QueryToken::Absent => None,
        QueryToken::One(token) => Some(token),
        QueryToken::Duplicate => {
            gateway
                .metrics
                .auth_failure(Close::AUTH_DUPLICATE_TOKEN.reason);
            return Err(End::Refuse(Close::AUTH_DUPLICATE_TOKEN));
        }
    };
    let admitted = match admitted {
        Ok(admitted) => admitted,
        Err(refusal) => {
            gateway.metrics.connection_refused(refusal.reason);
            tracing::debug!(%client, reason = refusal.reason, "websocket refused");
            return Err(End::Refuse(refusal));
        }
    };
    let claims = authenticate(socket, gateway, query_token).await?;
    drop(admitted.waiting);
    // The database part of the connect (the snapshot) takes
    // a slot; a node that cannot give one soon refuses at once, before the
    // database is asked anything (see `ConnectGate`).
    let Some(slot) = gateway.connect_gate.enter().await else {
        gateway
            .metrics
            .connection_refused(Close::SERVER_BUSY.reason);
        tracing::debug!(%client, "websocket refused: no connect slot");
        return Err(End::Refuse(Close::SERVER_BUSY));
    };
    let mut session = register(socket, gateway, claims, admitted.reservation).await?;
    let span = session.span.clone();
    tracing::Instrument::instrument(session.greet(slot), span).await?;
    (gateway.metrics.connect_seconds).observe(upgraded_at.elapsed().as_secs_f64());
    Ok(session)
}

/// Sends the close frame `end` calls for (or answers the peer's).
async fn finish(socket: &mut WebSocket, gateway: &Gateway, end: End) {
    match end {
        End::Close(close) => {
            gateway.metrics.closed(Some(&close));
            close_with(socket, close).await
        }
        End::Refuse(close) => {
            gateway.metrics.closed(Some(&close));
            let _ = timeout(CLOSE_HANDSHAKE, socket.send(close_message(close))).await;
        }
        // tungstenite only queues its answer to the peer's close frame: send
        // it, or a browser records its own 1000 as an unclean 1006.
        End::Gone => {
            gateway.metrics.closed(None);
            let _ = timeout(CLOSE_HANDSHAKE, socket.flush()).await;
        }
    }
}

/// Gets a token from the query or the first message, and verifies it.
async fn authenticate(
    socket: &mut WebSocket,
    gateway: &Gateway,
    query_token: Option<String>,
) -> Result<Claims, End> {
    let token = match query_token {
        Some(token) => token,
        None => first_message_token(socket, gateway.auth_timeout).await?,
    };
    match gateway.verifier.verify(&token).await {
        Ok(claims) => Ok(claims),
        Err(err) => Err(reject(gateway, err)),
    }
}

fn reject(gateway: &Gateway, err: AuthError) -> End {
    gateway.metrics.auth_failure(err.reason());
    tracing::info!(reason = err.reason(), "websocket authentication refused");
    End::Close(err.close())
}

async fn first_message_token(socket: &mut WebSocket, wait: Duration) -> Result<String, End> {
    let deadline = Instant::now() + wait;
    loop {
        let message = match timeout_at(deadline, socket.recv()).await {
            None => return Err(End::Close(Close::AUTH_TIMEOUT)),
            Some(None) => return Err(End::Gone),
            Some(Some(Err(err))) => return Err(read_error(err)),
            Some(Some(Ok(message))) => message,
        };
        match message {
            Message::Text(text) => {
                return match read_client_message(&text) {
                    Ok(ClientMessage::Auth { token }) => Ok(token),
                    _ => Err(End::Close(Close::AUTH_MISSING_TOKEN)),
                };
            }
            Message::Binary(_) => {
                return Err(End::Close(Close::BINARY_MESSAGE));
            }
            Message::Close(_) => return Err(End::Gone),
            Message::Ping(_) | Message::Pong(_) => continue,
        }
    }
}

async fn timeout_at<F: std::future::Future>(deadline: Instant, future: F) -> Option<F::Output> {
    tokio::time::timeout_at(deadline, future).await.ok()
}

/// Registers the connection in the hub: the authenticated part of a
/// connection, before its first message.
///
/// The user's row is not written here: nothing a socket does reads it (the
/// snapshot is read by user id), and every HTTP request that needs it
/// writes it first (`http::auth`, the server API). A connect of a user new
/// to the node cost a read and an upsert, the largest part of its database
/// work, and in a reconnect storm the most frequent database error
/// (docs/benchmarks.md, "Connect without the user's row").
async fn register<'a>(
    socket: &'a mut WebSocket,
    gateway: &'a Arc<Gateway>,
    claims: Claims,
    reservation: Reservation,
) -> Result<Box<Session<'a>>, End> {
    let outbox = Outbox::for_session(claims.sid.clone());
    // Register before reading the snapshot: a change made in between is then
    // queued, and the version filter drops it if the snapshot had it.
    let registration = match gateway
        .hub
        .register(reservation, &claims.sub, Arc::clone(&outbox))
    {
        Ok(registration) => registration,
        Err(limit) => {
            tracing::info!(user_id = %claims.sub, %limit, "connection refused");
            return Err(End::Close(Close::TOO_MANY_CONNECTIONS));
        }
    };
    // A revocation handled between the verification and the registration
    // found no socket to close: look again now that this one is findable.
    if let Err(err) = gateway.verifier.still_allowed(&claims) {
        return Err(reject(gateway, err));
    }
    // Likewise a shutdown: it closes the sockets registered in the hub
    // ([`Hub::close_all`](super::Hub::close_all)), after the signal is set.
    if gateway.shutdown.is_cancelled() {
        return Err(End::Close(Close::SHUTTING_DOWN));
    }
    gateway
        .metrics
        .open_connections
        .fetch_add(1, Ordering::Relaxed);
    gateway
        .metrics
        .connections_total
        .fetch_add(1, Ordering::Relaxed);
    // The connection's ids on every log line it makes (JSON logs carry them
    // as fields: docs/deploy.md).
    let span = tracing::info_span!(
        "session",
        connection_id = %format_args!("{}-{}", gateway.node_id, registration.id()),
        user_id = %registration.user_id()
    );
    Ok(Box::new(Session {
        socket,
        gateway,
        outbox,
        registration,
        expires_at: claims.exp,
        sent: SentVersions::default(),
        bad_messages: None,
        last_heard: Instant::now(),
        span,
    }))
}

/// An authenticated, registered connection. Always boxed (`register`
/// returns it so): the session task holds it for the socket's life, and
/// inline it made that task's cell a size class larger.
struct Session<'a> {
    socket: &'a mut WebSocket,
    gateway: &'a Arc<Gateway>,
    /// This connection's queue, also where its token's session is noted.
    outbox: Arc<Outbox>,
    /// Its place in the hub: dropped with the session, which unregisters it.
    /// Also where the user id is kept (one copy per user on the node).
    registration: Registration,
    /// `exp` of the token in force.
    expires_at: i64,
    /// Last version sent per import: nothing older or equal goes out again.
    sent: SentVersions,
    /// When the malformed messages of the last minute came; allocated at
    /// the first one (most sockets never send one).
    #[allow(clippy::box_collection)] // 8 bytes per session instead of 32
    bad_messages: Option<Box<VecDeque<Instant>>>,
    last_heard: Instant,
    /// Entered by each piece of work the session does (a client message, a
    /// write), not held around `serve`: the span kept in the task's future
    /// made every idle socket's task larger.
    span: tracing::Span,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.gateway
            .metrics
            .open_connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Session<'_> {
    fn user_id(&self) -> &str {
        self.registration.user_id()
    }

    /// `ready` and the snapshot, as two writes. One write would need
    /// tungstenite's write buffer to hold both, and that buffer is kept at
    /// its largest for the socket's life: ~190 bytes more per idle socket,
    /// for one `sendto` less per connect (docs/benchmarks.md, "Round two").
    /// The snapshot is read first, so a socket whose snapshot fails is
    /// closed 1011 without having been told it was `ready`; the connect's
    /// database `slot` is given back as soon as it is read, not held while
    /// a slow client takes its messages.
    async fn greet(&mut self, slot: ConnectSlot<'_>) -> Result<(), End> {
        let ready = encode(&ServerMessage::Ready {
            user_id: self.user_id().to_string(),
            connection_id: format!("{}-{}", self.gateway.node_id, self.registration.id()),
            expires_at: self.expires_at,
            heartbeat_ms: u64::try_from(self.gateway.heartbeat.as_millis()).unwrap_or(u64::MAX),
            protocol: PROTOCOL_VERSION,
        })?;
        let snapshot = self.snapshot_message().await?;
        drop(slot);
        self.send_all(vec![ready]).await?;
        self.send_all(vec![snapshot]).await
    }

    /// Forwards changes and answers the client until something ends the
    /// connection. What it waits on lives across turns of the loop (the one
    /// timer), so a message costs no timer registration. It does not wait
    /// on the node's shutdown signal: a shutdown closes every socket through
    /// its outbox ([`Hub::close_all`](super::Hub::close_all)), which keeps
    /// a waiter (72 bytes) out of every idle socket's task.
    async fn serve(&mut self) -> End {
        use tracing::Instrument;
        let gateway = self.gateway;
        let outbox = Arc::clone(&self.outbox);
        let mut ping_at = Instant::now() + gateway.heartbeat;
        let mut expires_at = self.expires_at;
        let mut expiry = self.expiry_deadline();
        // One timer for both deadlines: an idle socket holds one, not two.
        let timer = sleep_until(ping_at.min(expiry));
        tokio::pin!(timer);
        loop {
            tokio::select! {
                biased;
                incoming = self.socket.recv() => {
                    self.last_heard = Instant::now();
                    let message = match incoming {
                        None => return End::Gone,
                        Some(Err(err)) => return read_error(err),
                        Some(Ok(message)) => message,
                    };
                    // Boxed: a token refresh may fetch keys, and that future
                    // inline would make every idle session's task as big as
                    // its largest moment. Client messages are rare (pongs,
                    // a refresh a minute); a box each costs nothing.
                    let span = self.span.clone();
                    if let Err(end) = Box::pin(self.handle(message).instrument(span)).await {
                        return end;
                    }
                    if self.expires_at != expires_at {
                        // Refreshed: a new expiry.
                        expires_at = self.expires_at;
                        expiry = self.expiry_deadline();
                        timer.as_mut().reset(ping_at.min(expiry));
                    }
                }
                _ = outbox.ready() => {
                    // Boxed, like every await that is not waiting: a write
                    // (its timeout's timer, the batch) inline would make
                    // every idle socket's task that much larger. One
                    // allocation per batch is nothing next to its `sendto`.
                    let span = self.span.clone();
                    if let Err(end) = Box::pin(self.flush().instrument(span)).await {
                        return end;
                    }
                }
                _ = &mut timer => {
                    if Instant::now() >= expiry {
                        return End::Close(Close::TOKEN_EXPIRED);
                    }
                    if self.last_heard.elapsed() >= gateway.heartbeat * 2 {
                        tracing::debug!(parent: &self.span, "peer silent for two heartbeats; dropping");
                        return End::Gone;
                    }
                    let ping = vec![Message::Ping(Default::default())];
                    let span = self.span.clone();
                    if let Err(end) = Box::pin(self.send_all(ping).instrument(span)).await {
                        return end;
                    }
                    ping_at = Instant::now() + gateway.heartbeat;
                    timer.as_mut().reset(ping_at.min(expiry));
                }
            }
        }
    }

    /// When the current token stops being acceptable: `exp` plus the skew.
    fn expiry_deadline(&self) -> Instant {
        let skew = self.gateway.verifier.leeway();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let expires_ms = self.expires_at.saturating_mul(1000);
        let left = Duration::from_millis(u64::try_from(expires_ms - now_ms).unwrap_or(0)) + skew;
        Instant::now() + left
    }

    /// The user's snapshot, leaving out any import (or tombstone) this
    /// connection already sent at the same or a newer version (none, the
    /// first time), so versions stay strictly increasing on the connection.
    /// Also used for a resync after the bus came back (see
    /// [`Outbox::request_resync`]): a delete made while this node was cut
    /// off arrives as a tombstone newer than what the connection had.
    async fn snapshot_message(&mut self) -> Result<Message, End> {
        let Snapshot {
            mut imports,
            mut removed,
        } = match self.gateway.snapshot(self.user_id()).await {
            Ok(snapshot) => snapshot,
            Err(err) => {
                tracing::error!(error = %err, "snapshot failed");
                return Err(End::Close(Close::SERVER_ERROR));
            }
        };
        let sent = &mut self.sent;
        imports.retain(|import| sent.record(&import.id, import.version, import.status.is_final()));
        removed.retain(|gone| sent.record(&gone.id, gone.version, true));
        encode(&ServerMessage::Snapshot { imports, removed })
    }

    /// Writes everything queued for this socket in as few writes as the
    /// write buffer allows (one, for a usual batch), not one per message.
    async fn flush(&mut self) -> Result<(), End> {
        if let Some(close) = self.outbox.take_close() {
            return Err(End::Close(close));
        }
        let mut messages = Vec::new();
        if self.outbox.take_resync() {
            let gateway = self.gateway;
            // A resync shares the connects' database slots, but never waits
            // for one: with none free now (a storm of connects, or every
            // socket of the node resyncing at once) it is tried again later.
            match gateway.connect_gate.try_enter() {
                None => resync_later(&self.outbox),
                // Boxed: rare, and a store read inline would grow every task.
                Some(_slot) => match Box::pin(self.snapshot_message()).await {
                    Ok(snapshot) => messages.push(snapshot),
                    // The socket gets every change from here on; only what it
                    // missed while the bus was away is late. Closing it would
                    // send its client to reconnect and read the same database
                    // that just failed, with every other socket of the node.
                    Err(End::Close(close)) if close == Close::SERVER_ERROR => {
                        resync_later(&self.outbox);
                    }
                    Err(end) => return Err(end),
                },
            }
        }
        let mut published = Vec::new();
        let sent = &mut self.sent;
        let user_id = self.registration.user_id();
        self.outbox.drain_each(|event| {
            debug_assert_eq!(event.user_id.as_str(), &**user_id);
            if !sent.record(&event.import_id, event.version, event.is_final) {
                return;
            }
            messages.push(Message::Text(event.payload.clone()));
            published.push(event.published_us);
        });
        self.send_all(messages).await?;
        self.gateway.metrics.delivered(&published);
        Ok(())
    }

    async fn handle(&mut self, message: Message) -> Result<(), End> {
        match message {
            Message::Text(text) => self.handle_text(text).await,
            Message::Binary(_) => Err(End::Close(Close::BINARY_MESSAGE)),
            Message::Close(_) => Err(End::Gone),
            Message::Ping(_) | Message::Pong(_) => Ok(()),
        }
    }

    async fn handle_text(&mut self, text: Utf8Bytes) -> Result<(), End> {
        match read_client_message(&text) {
            Ok(ClientMessage::Ping) => self.send_message(&ServerMessage::Pong).await,
            Ok(ClientMessage::Auth { token }) => self.refresh(&token).await,
            Err((code, message)) => self.bad_message(code, message).await,
        }
    }

    /// In-band token refresh: same user, fresh expiry, no reconnect.
    async fn refresh(&mut self, token: &str) -> Result<(), End> {
        match self.gateway.verifier.verify(token).await {
            Ok(claims) if claims.sub == self.user_id() => {
                self.expires_at = claims.exp;
                self.outbox.set_session(claims.sid);
                self.send_message(&ServerMessage::AuthOk {
                    expires_at: claims.exp,
                })
                .await
            }
            Ok(_) => {
                self.gateway
                    .metrics
                    .auth_failure(Close::USER_CHANGED.reason);
                Err(End::Close(Close::USER_CHANGED))
            }
            Err(err) => Err(reject(self.gateway, err)),
        }
    }

    async fn bad_message(&mut self, code: &str, message: &str) -> Result<(), End> {
        let now = Instant::now();
        let bad_messages = self.bad_messages.get_or_insert_default();
        while bad_messages
            .front()
            .is_some_and(|at| now.duration_since(*at) > Duration::from_secs(60))
        {
            bad_messages.pop_front();
        }
        bad_messages.push_back(now);
        if bad_messages.len() > MAX_BAD_MESSAGES_PER_MINUTE {
            return Err(End::Close(Close::TOO_MANY_BAD_MESSAGES));
        }
        self.send_message(&ServerMessage::Error {
            code: code.to_string(),
            message: message.to_string(),
        })
        .await
    }

    async fn send_message(&mut self, message: &ServerMessage) -> Result<(), End> {
        let message = encode(message)?;
        self.send_all(vec![message]).await
    }

    /// Queues `messages` on the socket and flushes once, all within
    /// [`SEND_TIMEOUT`].
    async fn send_all(&mut self, messages: Vec<Message>) -> Result<(), End> {
        if messages.is_empty() {
            return Ok(());
        }
        let texts = messages
            .iter()
            .filter(|message| matches!(message, Message::Text(_)))
            .count();
        let socket = &mut *self.socket;
        let written = timeout(SEND_TIMEOUT, async move {
            for message in messages {
                socket.feed(message).await?;
            }
            socket.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => {
                self.gateway
                    .metrics
                    .messages_sent
                    .fetch_add(texts as u64, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => {
                self.gateway
                    .metrics
                    .slow_client_closes
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(user_id = %self.user_id(), "client too slow; closing");
                Err(End::Close(Close::CLIENT_TOO_SLOW))
            }
        }
    }
}

/// A client's text message, or the `error` code and sentence it earns: one
/// function for the first message and later ones, and the one the fuzz
/// target (`fuzz/`) drives with arbitrary text.
pub fn read_client_message(text: &str) -> Result<ClientMessage, (&'static str, &'static str)> {
    serde_json::from_str::<ClientMessage>(text).map_err(|_| {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(value) if value.get("type").is_some_and(|t| t.is_string()) => (
                "unknown_type",
                "unknown message type (expected auth or ping)",
            ),
            Ok(_) => ("bad_message", "expected an object with a \"type\""),
            Err(_) => ("bad_json", "message is not valid JSON"),
        }
    })
}

fn encode(message: &ServerMessage) -> Result<Message, End> {
    match serde_json::to_string(message) {
        Ok(text) => Ok(Message::Text(Utf8Bytes::from(text))),
        Err(err) => {
            tracing::error!(error = %err, "could not serialize a message");
            Err(End::Close(Close::SERVER_ERROR))
        }
    }
}

/// A read error: too big a message gets 1009, anything else means the peer
/// is gone.
fn read_error(err: axum::Error) -> End {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let inner = err.into_inner();
    match inner.downcast_ref::<WsError>() {
        Some(WsError::Capacity(_)) => End::Close(Close::MESSAGE_TOO_BIG),
        Some(WsError::Utf8(_)) => End::Close(Close::INVALID_UTF8),
        Some(WsError::Protocol(_)) => End::Close(Close::PROTOCOL_ERROR),
        _ => End::Gone,
    }
}

fn close_message(close: Close) -> Message {
    Message::Close(Some(CloseFrame {
        code: close.code,
        reason: Utf8Bytes::from_static(close.reason),
    }))
}

/// Sends a close frame and waits briefly for the peer's answer, so the
/// client reads our code and reason rather than a reset.
async fn close_with(socket: &mut WebSocket, close: Close) {
    if timeout(CLOSE_HANDSHAKE, socket.send(close_message(close)))
        .await
        .is_err()
    {
        return;
    }
    let _ = timeout(CLOSE_HANDSHAKE, async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Requests `outbox`'s resync again after [`RESYNC_RETRY`] and a jitter,
/// unless the session is gone by then. A task of its own, not a timer in
/// the session: it only exists after a failure, and a timer in the session
/// future would make every idle socket's task bigger.
fn resync_later(outbox: &Arc<Outbox>) {
    let outbox = Arc::downgrade(outbox);
    let jitter = RESYNC_RETRY.mul_f64(f64::from(uuid::Uuid::new_v4().as_u128() as u16) / 65_536.0);
    tokio::spawn(async move {
        tokio::time::sleep(RESYNC_RETRY + jitter).await;
        if let Some(outbox) = outbox.upgrade() {
            outbox.request_resync();
        }
    });
}

#[cfg(test)]
mod tests {
    /// The size of what `f` returns, without calling it.
    fn size_of_output<F: FnOnce() -> R, R>(_: &F) -> usize {
        std::mem::size_of::<R>()
    }

    /// An idle socket's task holds the session future for the socket's
    /// life: keep the connect, the writes, the handling of client messages,
    /// the `Session` itself (with its tracing span), the node's shutdown
    /// signal and the close out of it. It was 2,120 bytes with them inline,
    /// 1,016 with the `Session` inline, 632 with the span and the shutdown
    /// waiter. tokio's task cell is the future plus 32 bytes (the task
    /// tracker's token, the scheduler, the id) plus an 80-byte header and
    /// trailer, rounded up to a multiple of 128 (`-Zprint-type-sizes`):
    /// at or under 528 bytes here, each socket's task costs 640 bytes, not
    /// 768 (docs/benchmarks.md, "Memory per socket").
    #[test]
    #[allow(unreachable_code, clippy::diverging_sub_expression)]
    fn an_idle_sessions_future_stays_small() {
        let run = || super::run(todo!(), todo!(), todo!());
        let size = size_of_output(&run);
        eprintln!("session::run future: {size} bytes");
        assert!(size <= 528, "session::run's future grew to {size} bytes");
    }
}
