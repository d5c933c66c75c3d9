//! A real HTTP receiver of webhooks, and a Svix-style signer for Clerk
//! webhooks sent to the server.
//!
//! The receiver checks every request's Standard Webhooks signature with
//! its own implementation (HMAC-SHA256 from aws-lc-rs over
//! `id.timestamp.body`, written here from the specification), sharing no
//! code with the server, which signs with the `standardwebhooks` crate: a
//! disagreement between the two is a failed test, not a silent pass. It
//! records each request, and can be told to answer an error, to hold
//! requests unanswered, or to be down (its port refuses connections).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::hmac;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use tokio::sync::{Notify, oneshot};

/// A request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// `webhook-id`.
    pub id: String,
    /// `webhook-timestamp`.
    pub timestamp: i64,
    /// The body as JSON (`Value::Null` if it was not JSON).
    pub body: Value,
    /// Whether the signature verified (and the timestamp is within 5 min).
    pub signature_ok: bool,
    /// What the receiver answered (0: held, never answered).
    pub answered: u16,
    /// The sender's User-Agent (names the node: `reeltime/<v> (node <id>)`).
    pub user_agent: String,
    /// The body as sent, byte for byte (what signatures cover).
    pub raw_body: Vec<u8>,
    /// The `webhook-*` headers as sent, for other verifiers.
    pub headers: Vec<(String, String)>,
}

impl Received {
    /// `type` of the body.
    pub fn event_type(&self) -> &str {
        self.body["type"].as_str().unwrap_or("")
    }

    /// `data.id` of the body: the import.
    pub fn import_id(&self) -> &str {
        self.body["data"]["id"].as_str().unwrap_or("")
    }

    /// `data.version` of the body.
    pub fn version(&self) -> u64 {
        self.body["data"]["version"].as_u64().unwrap_or(0)
    }
}

/// How the receiver answers the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 204.
    Ok,
    /// This status.
    Status(u16),
    /// Record the request and never answer it.
    Hold,
}

struct Shared {
    key: Vec<u8>,
    received: Mutex<Vec<Received>>,
    answer: Mutex<Answer>,
    /// Answers for the next requests, before `answer` applies.
    queued: Mutex<Vec<Answer>>,
    grew: Notify,
}

/// A webhook receiver on loopback.
pub struct WebhookReceiver {
    /// `whsec_...`, for REELTIME_WEBHOOK_SECRET.
    pub secret: String,
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

impl WebhookReceiver {
    /// Starts on a free port with a fresh random secret, answering 204.
    pub async fn start() -> WebhookReceiver {
        let key: Vec<u8> = (0..32).map(|_| rand_byte()).collect();
        let secret = format!("whsec_{}", STANDARD.encode(&key));
        let shared = Arc::new(Shared {
            key,
            received: Mutex::new(Vec::new()),
            answer: Mutex::new(Answer::Ok),
            queued: Mutex::new(Vec::new()),
            grew: Notify::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let receiver = WebhookReceiver {
            secret,
            addr,
            shared,
            stop: Mutex::new(None),
        };
        receiver.serve(listener);
        receiver
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let app = Router::new()
            .route("/hooks", post(receive))
            .with_state(Arc::clone(&self.shared));
        let (stop, stopped) = oneshot::channel::<()>();
        *self.stop.lock().expect("lock") = Some(stop);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
    }

    /// REELTIME_WEBHOOK_URL for the server.
    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    /// The settings pointing a server here.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("REELTIME_WEBHOOK_URL".into(), self.url()),
            ("REELTIME_WEBHOOK_SECRET".into(), self.secret.clone()),
        ]
    }

    /// How requests are answered from now on.
    pub fn answer(&self, answer: Answer) {
        *self.shared.answer.lock().expect("lock") = answer;
    }

    /// The next `n` requests get `answer`, then the standing answer.
    pub fn answer_next(&self, n: usize, answer: Answer) {
        self.shared
            .queued
            .lock()
            .expect("lock")
            .extend(std::iter::repeat_n(answer, n));
    }

    /// Closes the port (connections are refused) until [`Self::up`].
    pub fn down(&self) {
        if let Some(stop) = self.stop.lock().expect("lock").take() {
            let _ = stop.send(());
        }
    }

    /// Listens again on the same port.
    pub async fn up(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => return self.serve(listener),
                Err(err) if tokio::time::Instant::now() < deadline => {
                    let _ = err;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(err) => panic!("rebinding the webhook receiver: {err}"),
            }
        }
    }

    /// Everything received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("lock").clone()
    }

    /// Waits until `done` holds for what was received; returns it.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let grew = self.shared.grew.notified();
            tokio::pin!(grew);
            grew.as_mut().enable();
            let received = self.received();
            if done(&received) {
                return received;
            }
            if tokio::time::timeout_at(deadline, grew).await.is_err() {
                panic!("webhook receiver: condition not met in {timeout:?}; got {received:#?}");
            }
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.down();
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let id = header("webhook-id");
    let timestamp: i64 = header("webhook-timestamp").parse().unwrap_or(0);
    let signature_ok = verify_standard(
        &shared.key,
        &id,
        timestamp,
        &body,
        &header("webhook-signature"),
    );
    let answer = {
        let mut queued = shared.queued.lock().expect("lock");
        if queued.is_empty() {
            *shared.answer.lock().expect("lock")
        } else {
            queued.remove(0)
        }
    };
    let answered = match answer {
        Answer::Ok => 204,
        Answer::Status(status) => status,
        Answer::Hold => 0,
    };
    shared.received.lock().expect("lock").push(Received {
        id,
        timestamp,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        signature_ok,
        answered,
        user_agent: header("user-agent"),
        raw_body: body.to_vec(),
        headers: ["webhook-id", "webhook-timestamp", "webhook-signature"]
            .into_iter()
            .map(|name| (name.to_string(), header(name)))
            .collect(),
    });
    shared.grew.notify_waiters();
    if answer == Answer::Hold {
        std::future::pending::<()>().await;
    }
    StatusCode::from_u16(answered).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The Standard Webhooks check, from the specification: the signature
/// header lists `v1,<base64 HMAC-SHA256(key, "id.timestamp.body")>`
/// entries separated by spaces; one must match, and the timestamp must be
/// within five minutes of now.
pub fn verify_standard(key: &[u8], id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    if id.is_empty() || (crate::now() - timestamp).abs() > 300 {
        return false;
    }
    let expected = sign_raw(key, id, timestamp, body);
    header
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .any(|candidate| candidate == expected)
}

fn sign_raw(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut context = hmac::Context::with_key(&key);
    context.update(format!("{id}.{timestamp}.").as_bytes());
    context.update(body);
    STANDARD.encode(context.sign().as_ref())
}

/// Signs Clerk-style (Svix) webhooks for the server's
/// `/api/clerk/webhook`, with a fresh test secret.
pub struct SvixSigner {
    key: Vec<u8>,
    /// `whsec_...`, for CLERK_WEBHOOK_SIGNING_SECRET.
    pub secret: String,
}

impl Default for SvixSigner {
    fn default() -> Self {
        SvixSigner::new()
    }
}

impl SvixSigner {
    /// A signer with a random 24-byte secret, as Clerk issues.
    pub fn new() -> SvixSigner {
        let key: Vec<u8> = (0..24).map(|_| rand_byte()).collect();
        SvixSigner {
            secret: format!("whsec_{}", STANDARD.encode(&key)),
            key,
        }
    }

    /// The `svix-id`, `svix-timestamp` and `svix-signature` headers of
    /// `body` sent as message `id` at `timestamp`.
    pub fn headers(&self, id: &str, timestamp: i64, body: &[u8]) -> Vec<(String, String)> {
        vec![
            ("svix-id".into(), id.to_string()),
            ("svix-timestamp".into(), timestamp.to_string()),
            (
                "svix-signature".into(),
                format!("v1,{}", sign_raw(&self.key, id, timestamp, body)),
            ),
        ]
    }
}

/// A random byte from the operating system's generator.
fn rand_byte() -> u8 {
    let mut byte = [0u8; 1];
    aws_lc_rs::rand::fill(&mut byte).expect("random");
    byte[0]
}
