//! A content server for import tests: serves video-looking bodies of any
//! size, streams that a test can hold and release, HTML, errors and
//! redirects, all on loopback. Every `/video/{name}` request is recorded
//! (User-Agent, when it started and ended, bytes sent), so a test can tell
//! which node of a cluster fetched what, and whether two fetches of one
//! import ever overlapped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::sync::watch;

const CHUNK: usize = 16 * 1024;

struct Shared {
    /// Streams by name: `true` lets bytes flow, `false` holds them.
    gates: Mutex<HashMap<String, watch::Sender<bool>>>,
    /// Files served verbatim under `/files/{name}`.
    files: Mutex<HashMap<String, Bytes>>,
    /// Requests per file name, to tell whether something was downloaded again.
    hits: Mutex<HashMap<String, usize>>,
    /// Every `/video/{name}` request, in arrival order.
    fetches: Mutex<Vec<Fetch>>,
    /// Bumped on every change to `fetches`, for waiting on them.
    fetches_changed: watch::Sender<u64>,
}

/// One `/video/{name}` request as the content server saw it.
#[derive(Debug, Clone)]
pub struct Fetch {
    pub name: String,
    /// The request's User-Agent (empty when none was sent).
    pub user_agent: String,
    pub started: Instant,
    /// When the response ended: sent in full, or dropped because the
    /// client went away. `None` while it is still going (or held).
    pub ended: Option<Instant>,
    /// Body bytes handed to the connection so far.
    pub bytes_sent: usize,
    /// Whether the whole body was handed over.
    pub complete: bool,
    /// When the last chunk was handed over (`None` before the first): a
    /// fetch whose client is paused stops moving here while its
    /// connection stays open.
    pub last_sent: Option<Instant>,
}

impl Fetch {
    /// Whether the response is still going (or held).
    pub fn active(&self) -> bool {
        self.ended.is_none()
    }

    /// The reeltime node id in a `reeltime/<version> (node <id>)`
    /// User-Agent.
    pub fn node(&self) -> Option<&str> {
        self.user_agent
            .split("(node ")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
    }
}

/// Keeps a [`Fetch`] up to date from inside its response stream; marks it
/// ended when the stream finishes or is dropped (the client went away).
struct FetchRecord {
    shared: Arc<Shared>,
    index: usize,
}

impl FetchRecord {
    fn update(&self, change: impl FnOnce(&mut Fetch)) {
        {
            let mut fetches = self.shared.fetches.lock().expect("lock");
            change(&mut fetches[self.index]);
        }
        self.shared.fetches_changed.send_modify(|n| *n += 1);
    }
}

impl Drop for FetchRecord {
    fn drop(&mut self) {
        self.update(|fetch| fetch.ended = Some(Instant::now()));
    }
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
        let shared = Arc::new(Shared {
            gates: Mutex::default(),
            files: Mutex::default(),
            hits: Mutex::default(),
            fetches: Mutex::default(),
            fetches_changed: watch::channel(0).0,
        });
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

    /// Every `/video/{name}` request so far, in arrival order.
    pub fn fetches(&self) -> Vec<Fetch> {
        self.shared.fetches.lock().expect("lock").clone()
    }

    /// The requests for `/video/{name}` so far, in arrival order.
    pub fn fetches_of(&self, name: &str) -> Vec<Fetch> {
        self.fetches()
            .into_iter()
            .filter(|fetch| fetch.name == name)
            .collect()
    }

    /// Waits until `done` holds for the recorded requests, re-checking on
    /// every change (a request starting, sending bytes, ending); returns
    /// them. Panics with `what` and the requests after `timeout`.
    pub async fn wait_for_fetches(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&[Fetch]) -> bool,
    ) -> Vec<Fetch> {
        let mut changed = self.shared.fetches_changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changed.borrow_and_update();
            let fetches = self.fetches();
            if done(&fetches) {
                return fetches;
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                panic!(
                    "content server: still waiting for {what} after {timeout:?}; requests: {fetches:#?}"
                );
            }
        }
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
    headers: HeaderMap,
) -> Response {
    let size = query.size.unwrap_or(1 << 20);
    let body = mp4_like(size);
    let pace = Duration::from_millis(query.pace_ms.unwrap_or(0));
    let gate = shared.gate(&name);
    let hold_after = query.hold_after.unwrap_or(0);
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let index = {
        let mut fetches = shared.fetches.lock().expect("lock");
        fetches.push(Fetch {
            name: name.clone(),
            user_agent,
            started: Instant::now(),
            ended: None,
            bytes_sent: 0,
            complete: false,
            last_sent: None,
        });
        fetches.len() - 1
    };
    shared.fetches_changed.send_modify(|n| *n += 1);
    let record = FetchRecord {
        shared: Arc::clone(&shared),
        index,
    };
    let total = body.len();
    let stream = async_stream(
        body,
        pace,
        move |offset| {
            let mut gate = gate.clone();
            async move {
                if offset >= hold_after {
                    let _ = gate.wait_for(|open| *open).await;
                }
            }
        },
        move |end| {
            record.update(|fetch| {
                fetch.bytes_sent = end;
                fetch.complete = end >= total;
                fetch.last_sent = Some(Instant::now());
            })
        },
    );
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
/// pace before each, and telling `sent` where each chunk handed over ends.
fn async_stream<F, Fut, S>(
    body: Vec<u8>,
    pace: Duration,
    wait_gate: F,
    sent: S,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>>
where
    F: Fn(usize) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
    S: Fn(usize) + Send + 'static,
{
    let body = Bytes::from(body);
    futures_util::stream::unfold(
        (0usize, body, wait_gate, sent),
        move |(offset, body, wait_gate, sent)| async move {
            if offset >= body.len() {
                return None;
            }
            wait_gate(offset).await;
            if !pace.is_zero() && offset > 0 {
                tokio::time::sleep(pace).await;
            }
            let end = (offset + CHUNK).min(body.len());
            let chunk = body.slice(offset..end);
            sent(end);
            Some((Ok(chunk), (end, body, wait_gate, sent)))
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
