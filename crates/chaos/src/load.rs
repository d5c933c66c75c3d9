//! The load of a run: users with several tabs each (through their own
//! network link, which a fault can silence), and per user an actor that
//! starts imports of every kind (URL imports, slow or failing; real media
//! that ffmpeg processes; synthetic ones; tus uploads; external imports
//! reported by a worker through the server API) and cancels some. Tabs
//! refresh their tokens in band, let some expire, log out and come back,
//! and record every message for the checks.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use reeltime_protocol::{Import, ServerMessage};
use reeltime_testkit::{Event, WsClient};

use crate::cluster::Cluster;
use crate::record::Record;
use crate::rng::Rng;

/// The load is running.
pub const RUNNING: u8 = 0;
/// No new imports; started ones go on to their end.
pub const SETTLING: u8 = 1;
/// Tabs catch up and stop.
pub const FINAL: u8 = 2;

/// A short real video (MP4) and one that needs a transcode (MKV).
const SAMPLE_MP4: &[u8] = include_bytes!("../../../samples/sample-short.mp4");
const SAMPLE_MKV: &[u8] = include_bytes!("../../../samples/sample-needs-transcode.mkv");

/// What the harness created, by import id.
#[derive(Debug, Clone)]
pub struct Created {
    pub user: String,
    pub kind: &'static str,
    /// An upload left unfinished on purpose: it may stay `uploading`.
    pub abandoned: bool,
    /// The content server's stream name of a `/video/` import.
    pub video: Option<String>,
}

/// State shared by the load tasks.
pub struct Load {
    pub cluster: Arc<Cluster>,
    pub record: Arc<Record>,
    pub phase: AtomicU8,
    pub created: std::sync::Mutex<HashMap<String, Created>>,
    pub http: reqwest::Client,
    /// `ws://` of each user's link (a proxy in front of nginx).
    pub user_ws: Vec<String>,
    pub users: Vec<String>,
    /// When the final phase began: a tab that cannot catch up within a
    /// minute of it gives up (and the check counts it).
    pub final_since: std::sync::Mutex<Option<Instant>>,
}

/// What one tab saw, for the checks.
#[derive(Debug, Default)]
pub struct TabRecord {
    pub user: String,
    pub tab: usize,
    /// Newest state per import over every connection.
    pub latest: HashMap<String, Import>,
    /// Version of the delete per deleted import.
    pub removed: HashMap<String, u64>,
    /// Every import id a message named.
    pub seen: HashSet<String>,
    /// Messages received (snapshot entries counted one each).
    pub messages: u64,
    pub connections: u64,
    /// Whether it was connected and caught up at the end.
    pub final_ok: bool,
}

impl Load {
    pub fn phase(&self) -> u8 {
        self.phase.load(Ordering::SeqCst)
    }

    /// The final phase has lasted over a minute.
    fn final_too_long(&self) -> bool {
        self.final_since
            .lock()
            .expect("lock")
            .is_some_and(|since| since.elapsed() > Duration::from_secs(60))
    }

    fn base(&self) -> String {
        self.cluster.nginx.http()
    }

    fn remember(&self, id: &str, user: &str, kind: &'static str, video: Option<String>) {
        self.created.lock().expect("lock").insert(
            id.to_string(),
            Created {
                user: user.to_string(),
                kind,
                abandoned: false,
                video,
            },
        );
    }
}

/// One tab's life until the load's final phase; returns what it saw.
pub async fn tab(load: Arc<Load>, user_index: usize, tab: usize, mut rng: Rng) -> TabRecord {
    let user = load.users[user_index].clone();
    let url = load.user_ws[user_index].clone();
    let mut record = TabRecord {
        user: user.clone(),
        tab,
        ..TabRecord::default()
    };
    let mut backoff = 100u64;
    loop {
        let final_phase = load.phase() == FINAL;
        // Most tokens live long and are refreshed in band; some are short
        // and left to expire (the server closes the socket; the tab comes
        // back with a fresh one).
        let short = !final_phase && rng.chance(0.15);
        let ttl = if short { 6 } else { 600 };
        let token = load.cluster.issuer.token(&user, ttl);
        if final_phase && load.final_too_long() {
            return record;
        }
        let mut ws = match WsClient::try_connect_query(&url, &token).await {
            Ok(ws) => ws,
            Err(_) => {
                load.record.count("tab_connect_failed", 1);
                tokio::time::sleep(Duration::from_millis(backoff)).await;
                backoff = (backoff * 2).min(2000);
                continue;
            }
        };
        let mut on_connection: HashMap<String, u64> = HashMap::new();
        match ws.next_within(Duration::from_secs(15)).await {
            Some(Event::Message(ServerMessage::Ready { user_id, .. })) => {
                if user_id != user {
                    load.record.violation(
                        "wrong_user",
                        format!("tab {tab} of {user} got ready for {user_id}"),
                    );
                }
            }
            _ => {
                load.record.count("tab_not_ready", 1);
                tokio::time::sleep(Duration::from_millis(backoff)).await;
                backoff = (backoff * 2).min(2000);
                continue;
            }
        }
        backoff = 100;
        record.connections += 1;
        load.record.count("tab_connections", 1);
        let refresh_short = short && rng.chance(0.5);
        let connected_at = Instant::now();
        let mut last_heard = Instant::now();
        let mut next_ping = Instant::now() + Duration::from_secs(2);
        let mut next_act = Instant::now() + Duration::from_millis(rng.range(3000, 12000));
        let mut refreshed_short = false;
        let mut awaiting_pong_for_final = false;
        loop {
            let phase = load.phase();
            if phase == FINAL && !awaiting_pong_for_final {
                ws.send_json(&serde_json::json!({"type": "ping"})).await;
                awaiting_pong_for_final = true;
                last_heard = Instant::now();
            }
            match ws.next_within(Duration::from_millis(500)).await {
                Some(Event::Message(message)) => {
                    last_heard = Instant::now();
                    let pong = matches!(message, ServerMessage::Pong);
                    apply(&load, &mut record, &mut on_connection, message);
                    if pong && awaiting_pong_for_final {
                        record.final_ok = true;
                        ws.close().await;
                        return record;
                    }
                }
                Some(Event::Closed { code, .. }) => {
                    load.record.count(&format!("tab_closed_{code}"), 1);
                    break;
                }
                Some(Event::Dropped) => {
                    load.record.count("tab_dropped", 1);
                    break;
                }
                None => {}
            }
            let now = Instant::now();
            // A silent link (its network dropped): give up on the socket
            // as a browser's client does, and connect again.
            if now.duration_since(last_heard) > Duration::from_secs(10) {
                load.record.count("tab_gave_up_silent_socket", 1);
                break;
            }
            if now >= next_ping {
                ws.send_json(&serde_json::json!({"type": "ping"})).await;
                next_ping = now + Duration::from_secs(2);
            }
            if refresh_short
                && !refreshed_short
                && now.duration_since(connected_at) > Duration::from_secs(3)
            {
                let fresh = load.cluster.issuer.token(&user, 600);
                ws.send_json(&serde_json::json!({"type": "auth", "token": fresh}))
                    .await;
                refreshed_short = true;
                load.record.count("tab_token_refresh_before_expiry", 1);
            }
            if phase == RUNNING && now >= next_act {
                next_act = now + Duration::from_millis(rng.range(3000, 12000));
                match rng.weighted(&[5, 2, 1]) {
                    0 => {
                        let fresh = load.cluster.issuer.token(&user, 600);
                        ws.send_json(&serde_json::json!({"type": "auth", "token": fresh}))
                            .await;
                        load.record.count("tab_token_refresh", 1);
                    }
                    1 => {
                        load.record.count("tab_log_out", 1);
                        ws.close().await;
                        tokio::time::sleep(Duration::from_millis(rng.range(200, 2000))).await;
                        break;
                    }
                    _ => {
                        load.record.count("tab_network_drop", 1);
                        ws.drop_connection();
                        tokio::time::sleep(Duration::from_millis(rng.range(200, 2000))).await;
                        break;
                    }
                }
            }
            if phase == FINAL && now.duration_since(last_heard) > Duration::from_secs(30) {
                break;
            }
        }
        if load.phase() == FINAL && load.final_too_long() {
            return record;
        }
    }
}

/// Applies one message to what the tab knows, checking that versions of
/// each import strictly increase on this connection.
fn apply(
    load: &Load,
    record: &mut TabRecord,
    on_connection: &mut HashMap<String, u64>,
    message: ServerMessage,
) {
    let mut step = |id: &str, version: u64, record: &mut TabRecord| {
        record.messages += 1;
        load.record.count("checked.messages", 1);
        record.seen.insert(id.to_string());
        if let Some(last) = on_connection.get(id)
            && version <= *last
        {
            load.record.violation(
                "version_not_increasing",
                format!(
                    "tab {} of {}: import {id} went from version {last} to {version} on one connection",
                    record.tab, record.user
                ),
            );
        }
        on_connection.insert(id.to_string(), version);
    };
    match message {
        ServerMessage::Import { import } => {
            step(&import.id, import.version, record);
            keep(record, *import);
        }
        ServerMessage::Snapshot { imports, removed } => {
            for import in imports {
                step(&import.id, import.version, record);
                keep(record, import);
            }
            for gone in removed {
                step(&gone.id, gone.version, record);
                record.removed.insert(gone.id, gone.version);
            }
        }
        ServerMessage::ImportRemoved { id, version } => {
            step(&id, version, record);
            record.removed.insert(id, version);
        }
        ServerMessage::AuthOk { .. } => load.record.count("tab_auth_ok", 1),
        ServerMessage::Error { code, .. } => load.record.count(&format!("tab_error_{code}"), 1),
        _ => {}
    }
}

fn keep(record: &mut TabRecord, import: Import) {
    let newer = record
        .latest
        .get(&import.id)
        .is_none_or(|known| import.version > known.version);
    if newer {
        record.latest.insert(import.id.clone(), import);
    }
}

/// One user's actor: starts imports until the load settles.
pub async fn actor(load: Arc<Load>, user_index: usize, mut rng: Rng) {
    let user = load.users[user_index].clone();
    let mut mine: Vec<String> = Vec::new();
    let mut n = 0usize;
    let mut workers = tokio::task::JoinSet::new();
    while load.phase() == RUNNING {
        tokio::time::sleep(Duration::from_millis(rng.range(700, 2500))).await;
        if load.phase() != RUNNING {
            break;
        }
        n += 1;
        let token = load.cluster.issuer.token(&user, 600);
        let kind = rng.weighted(&[4, 2, 2, 2, 3, 2, 2, 1]);
        let content = &load.cluster.content;
        let name = format!("u{user_index}-{n}");
        let (label, url, video): (&'static str, String, Option<String>) = match kind {
            0 => {
                let size = rng.range(128, 1024) * 1024;
                (
                    "url",
                    content.url(&format!(
                        "/video/{name}?size={size}&pace_ms={}",
                        rng.range(2, 10)
                    )),
                    Some(name.clone()),
                )
            }
            1 => {
                let size = rng.range(512, 2048) * 1024;
                (
                    "url_slow",
                    content.url(&format!(
                        "/video/{name}?size={size}&pace_ms={}",
                        rng.range(30, 60)
                    )),
                    Some(name.clone()),
                )
            }
            2 => {
                let failing = [
                    content.url("/status/500"),
                    content.url("/status/404"),
                    content.url("/html"),
                ];
                (
                    "url_failing",
                    failing[rng.range(0, 2) as usize].clone(),
                    None,
                )
            }
            3 => {
                let (bytes, ext) = if rng.chance(0.5) {
                    (SAMPLE_MKV, "mkv")
                } else {
                    (SAMPLE_MP4, "mp4")
                };
                (
                    "media",
                    content.put_file(&format!("{name}.{ext}"), bytes.to_vec()),
                    None,
                )
            }
            4 => (
                "synthetic",
                format!(
                    "synthetic:?duration_ms={}&steps={}",
                    rng.range(1000, 6000),
                    rng.range(5, 40)
                ),
                None,
            ),
            5 => {
                let load = Arc::clone(&load);
                let user = user.clone();
                let abandon = rng.chance(0.1);
                let rng = rng.fork();
                workers.spawn(async move { upload(load, user, abandon, rng).await });
                continue;
            }
            6 => {
                let load = Arc::clone(&load);
                let user = user.clone();
                let rng = rng.fork();
                workers.spawn(async move { external(load, user, rng).await });
                continue;
            }
            _ => {
                if let Some(id) = mine.get(rng.range(0, mine.len().max(1) as u64 - 1) as usize) {
                    let response = load
                        .http
                        .post(format!("{}/api/imports/{id}/cancel", load.base()))
                        .bearer_auth(&token)
                        .send()
                        .await;
                    count_response(&load, "cancel", &response);
                }
                continue;
            }
        };
        let response = load
            .http
            .post(format!("{}/api/imports", load.base()))
            .bearer_auth(&token)
            .json(&serde_json::json!({"url": url}))
            .send()
            .await;
        count_response(&load, label, &response);
        if let Ok(response) = response
            && response.status().as_u16() == 201
            && let Ok(import) = response.json::<Import>().await
        {
            load.remember(&import.id, &user, label, video);
            mine.push(import.id);
        }
    }
    while workers.join_next().await.is_some() {}
}

fn count_response(load: &Load, what: &str, response: &Result<reqwest::Response, reqwest::Error>) {
    match response {
        Ok(response) => load
            .record
            .count(&format!("request.{what}.{}", response.status().as_u16()), 1),
        Err(_) => load.record.count(&format!("request.{what}.error"), 1),
    }
}

/// A tus upload of a real video in a few PATCHes, resuming from `HEAD`
/// after a failure; `abandon` stops half-way (the import stays
/// `uploading`, which is legitimate).
async fn upload(load: Arc<Load>, user: String, abandon: bool, mut rng: Rng) {
    let body = if rng.chance(0.5) {
        SAMPLE_MP4
    } else {
        SAMPLE_MKV
    };
    let base = load.base();
    let token = || load.cluster.issuer.token(&user, 600);
    let metadata = format!(
        "filename {},filetype {}",
        base64::engine::general_purpose::STANDARD.encode("chaos.mp4"),
        base64::engine::general_purpose::STANDARD.encode("video/mp4")
    );
    let created = load
        .http
        .post(format!("{base}/api/uploads"))
        .bearer_auth(token())
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", body.len())
        .header("Upload-Metadata", metadata)
        .send()
        .await;
    count_response(&load, "upload_create", &created);
    let Ok(created) = created else { return };
    if created.status().as_u16() != 201 {
        return;
    }
    let Some(location) = created
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
    else {
        load.record
            .harness_error("upload created with no Location".into());
        return;
    };
    let id = location.rsplit('/').next().unwrap_or_default().to_string();
    load.remember(&id, &user, "upload", None);
    let url = format!("{base}{location}");
    let chunk = body.len() / rng.range(2, 4) as usize + 1;
    let mut offset = 0usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    while offset < body.len() && Instant::now() < deadline {
        if abandon && offset > 0 {
            if let Some(known) = load.created.lock().expect("lock").get_mut(&id) {
                known.abandoned = true;
            }
            load.record.count("upload_abandoned", 1);
            return;
        }
        let end = (offset + chunk).min(body.len());
        let sent = load
            .http
            .patch(&url)
            .bearer_auth(token())
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", offset)
            .header("Content-Type", "application/offset+octet-stream")
            .body(body[offset..end].to_vec())
            .send()
            .await;
        count_response(&load, "upload_patch", &sent);
        match &sent {
            Ok(r) if r.status().as_u16() == 204 => {
                offset = end;
                continue;
            }
            // The upload is gone (it failed: a full disk, say): nothing
            // to resume.
            Ok(r) if r.status().as_u16() == 404 => {
                if let Some(known) = load.created.lock().expect("lock").get_mut(&id) {
                    known.abandoned = true;
                }
                load.record.count("upload_gone", 1);
                return;
            }
            _ => {}
        }
        // Ask where to resume, as tus clients do.
        tokio::time::sleep(Duration::from_millis(rng.range(200, 1000))).await;
        let head = load
            .http
            .head(&url)
            .bearer_auth(token())
            .header("Tus-Resumable", "1.0.0")
            .send()
            .await;
        if let Ok(head) = head
            && head.status().as_u16() == 200
            && let Some(stored) = head
                .headers()
                .get("upload-offset")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse::<usize>().ok())
        {
            offset = stored;
        }
    }
    if offset < body.len() {
        if let Some(known) = load.created.lock().expect("lock").get_mut(&id) {
            known.abandoned = true;
        }
        load.record.count("upload_gave_up", 1);
    }
}

/// An external import: the backend creates it, a worker reports progress
/// and completes or fails it, retrying through faults with idempotency
/// keys (a worker does not give up on its job).
async fn external(load: Arc<Load>, user: String, mut rng: Rng) {
    let base = load.base();
    let key = load.cluster.server_key.clone();
    let create_key = format!("create-{}", rng.next_u64());
    let created = server_post(
        &load,
        "external_create",
        &format!("{base}/api/server/imports"),
        &key,
        &create_key,
        serde_json::json!({"user_id": user, "source": "external", "title": "chaos worker"}),
    )
    .await;
    let Some(import) = created else { return };
    let Some(id) = import["id"].as_str().map(str::to_string) else {
        return;
    };
    load.remember(&id, &user, "external", None);
    let steps = rng.range(2, 5);
    for step in 1..=steps {
        tokio::time::sleep(Duration::from_millis(rng.range(200, 1500))).await;
        let progress = step as f64 / (steps + 1) as f64;
        let done = server_post(
            &load,
            "external_progress",
            &format!("{base}/api/server/imports/{id}/progress"),
            &key,
            &format!("{id}-progress-{step}"),
            serde_json::json!({"progress": progress, "stage": "encoding", "bytes_done": step * 1000, "bytes_total": (steps + 1) * 1000}),
        )
        .await;
        if done.is_none() {
            break;
        }
    }
    let (path, body) = if rng.chance(0.8) {
        ("complete", serde_json::json!({"result": {"chaos": true}}))
    } else {
        (
            "fail",
            serde_json::json!({"error": {"code": "encode_failed", "message": "the chaos worker failed it"}}),
        )
    };
    server_post(
        &load,
        &format!("external_{path}"),
        &format!("{base}/api/server/imports/{id}/{path}"),
        &key,
        &format!("{id}-{path}"),
        body,
    )
    .await;
}

/// A server-API POST retried (same idempotency key) until it gets a
/// definite answer: the body on 2xx, `None` on 4xx or after two minutes.
async fn server_post(
    load: &Load,
    what: &str,
    url: &str,
    key: &str,
    idempotency: &str,
    body: serde_json::Value,
) -> Option<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let response = load
            .http
            .post(url)
            .bearer_auth(key)
            .header("Idempotency-Key", idempotency)
            .json(&body)
            .send()
            .await;
        count_response(load, what, &response);
        if let Ok(response) = response {
            let status = response.status().as_u16();
            if (200..300).contains(&status) {
                return response.json().await.ok();
            }
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            // The first try with this key still holds it (or a node that
            // failed to answer it left it held for a minute): retry, as
            // docs/integration.md says.
            let in_use = body["error"]["code"] == "idempotency_key_in_use";
            if (400..500).contains(&status) && status != 408 && status != 429 && !in_use {
                return None;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    load.record.count(&format!("{what}_gave_up"), 1);
    None
}
