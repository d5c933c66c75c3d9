//! A content server for import tests: serves video-looking bodies of any
//! size, streams that a test can hold and release, HTML, errors and
//! redirects, all on loopback.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::sync::watch;

const CHUNK: usize = 16 * 1024;

#[derive(Default)]
struct Shared {
    /// Streams by name: `true` lets bytes flow, `false` holds them.
    gates: Mutex<HashMap<String, watch::Sender<bool>>>,
    /// Files served verbatim under `/files/{name}`.
    files: Mutex<HashMap<String, Bytes>>,
    /// Requests per file name, to tell whether something was downloaded again.
    hits: Mutex<HashMap<String, usize>>,
}

impl Shared {
    fn gate(&self, name: &str) -> watch::Receiver<bool> {
        let mut gates = self.gates.lock().expect("lock");
        gates
            .entry(name.to_string())
            .or_insert_with(|| watch::channel(true).0)
            .subscribe()
    }
}

/// The running content server.
pub struct ContentServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

#[derive(Deserialize)]
struct StreamQuery {
    size: Option<usize>,
    /// Pause between chunks, milliseconds.
    pace_ms: Option<u64>,
    /// Send no Content-Length (unknown total).
    chunked: Option<bool>,
    /// Announce this Content-Length regardless of the body.
    claim: Option<u64>,
    /// Bytes sent before the gate is consulted (a download stalled mid-file).
    hold_after: Option<usize>,
}

#[derive(Deserialize)]
struct RedirectQuery {
    to: String,
}

impl ContentServer {
    pub async fn start() -> ContentServer {
        ContentServer::start_on("127.0.0.1:0").await
    }

    /// Starts on a given address (e.g. `127.0.0.2:0` for a second host).
    pub async fn start_on(bind: &str) -> ContentServer {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/video/{name}", get(stream))
            .route(
                "/html",
                get(|| async { ([(header::CONTENT_TYPE, "text/html")], html_body()) }),
            )
            .route("/redirect", get(redirect))
            .route("/status/{code}", get(status))
            .route("/files/{name}", get(file))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind(bind).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ContentServer { addr, shared }
    }

    /// `http://addr/video/{name}?size=N...`: MP4 magic then filler.
    pub fn video_url(&self, name: &str, size: usize) -> String {
        format!("http://{}/video/{name}?size={size}", self.addr)
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }

    /// Stops the named stream before its next chunk.
    pub fn hold(&self, name: &str) {
        self.gate_sender(name).send_replace(false);
    }

    /// Lets the named stream run.
    pub fn release(&self, name: &str) {
        self.gate_sender(name).send_replace(true);
    }

    /// Serves `body` at `/files/{name}`.
    pub fn put_file(&self, name: &str, body: impl Into<Bytes>) -> String {
        self.shared
            .files
            .lock()
            .expect("lock")
            .insert(name.to_string(), body.into());
        format!("http://{}/files/{name}", self.addr)
    }

    /// How many times `/files/{name}` was requested.
    pub fn hits(&self, name: &str) -> usize {
        self.shared
            .hits
            .lock()
            .expect("lock")
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    fn gate_sender(&self, name: &str) -> watch::Sender<bool> {
        let mut gates = self.shared.gates.lock().expect("lock");
        gates
            .entry(name.to_string())
            .or_insert_with(|| watch::channel(true).0)
            .clone()
    }
}

/// A body that starts like an MP4 file (`ftyp` box), so it passes sniffing.
pub fn mp4_like(size: usize) -> Vec<u8> {
    let mut body = vec![0u8; size.max(32)];
    body[..12].copy_from_slice(&[
        0, 0, 0, 0x20, b'f', b't', b'y', b'p', b'i', b's', b'o', b'm',
    ]);
    body.truncate(size.max(12));
    body
}

fn html_body() -> String {
    format!(
        "<!DOCTYPE html><html><body>{}</body></html>",
        "not a video ".repeat(100)
    )
}

async fn stream(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Query(query): Query<StreamQuery>,
) -> Response {
    let size = query.size.unwrap_or(1 << 20);
    let body = mp4_like(size);
    let pace = Duration::from_millis(query.pace_ms.unwrap_or(0));
    let gate = shared.gate(&name);
    let hold_after = query.hold_after.unwrap_or(0);
    let stream = async_stream(body, pace, move |offset| {
        let mut gate = gate.clone();
        async move {
            if offset >= hold_after {
                let _ = gate.wait_for(|open| *open).await;
            }
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, "video/mp4".parse().expect("header"));
    if !query.chunked.unwrap_or(false) {
        let length = query.claim.unwrap_or(size as u64);
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, length.into());
    }
    response
}

/// Yields `body` in chunks, waiting on the gate (given the offset) and the
/// pace before each.
fn async_stream<F, Fut>(
    body: Vec<u8>,
    pace: Duration,
    wait_gate: F,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>>
where
    F: Fn(usize) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let body = Bytes::from(body);
    futures_util::stream::unfold(
        (0usize, body, wait_gate),
        move |(offset, body, wait_gate)| async move {
            if offset >= body.len() {
                return None;
            }
            wait_gate(offset).await;
            if !pace.is_zero() && offset > 0 {
                tokio::time::sleep(pace).await;
            }
            let end = (offset + CHUNK).min(body.len());
            let chunk = body.slice(offset..end);
            Some((Ok(chunk), (end, body, wait_gate)))
        },
    )
}

async fn redirect(Query(query): Query<RedirectQuery>) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, query.to)]).into_response()
}

async fn status(Path(code): Path<u16>) -> Response {
    StatusCode::from_u16(code)
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        .into_response()
}

async fn file(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    *shared
        .hits
        .lock()
        .expect("lock")
        .entry(name.clone())
        .or_default() += 1;
    match shared.files.lock().expect("lock").get(&name) {
        Some(body) => body.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
