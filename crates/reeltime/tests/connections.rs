//! Connection limits against the real server process: slow requests closed
//! by the header and idle timeouts, the caps on sockets waiting for their
//! token (in total, per address, behind a trusted proxy), the admin
//! listener, an accept loop that outlives EMFILE, and a flood of 10,000
//! silent sockets under a low open-file limit while a real user works.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{binary, follow_to_final, pairs, world};
use futures_util::{SinkExt, StreamExt};
use reeltime_protocol::{ImportStatus, ServerMessage};
use reeltime_testkit::{Api, ContentServer, ServerProcess, TestIssuer, WAIT, WsClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Slack on top of a timeout for a loaded two-core machine.
const MARGIN: Duration = Duration::from_secs(8);
const MIB: usize = 1 << 20;

fn ip(text: &str) -> IpAddr {
    text.parse().expect("ip")
}

fn addr_of(server: &ServerProcess) -> SocketAddr {
    server.addr.parse().expect("server address")
}

/// A TCP connection to `addr` from `source` (any 127.0.0.x on loopback).
async fn tcp_from(source: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

type Ws = WebSocketStream<TcpStream>;

/// A progress socket from `source` that sends no token, with extra headers.
async fn silent_socket(
    addr: SocketAddr,
    source: IpAddr,
    headers: &[(&'static str, &str)],
) -> Result<Ws, String> {
    let tcp = tcp_from(source, addr)
        .await
        .map_err(|err| err.to_string())?;
    let mut request = format!("ws://{addr}/api/ws/progress")
        .into_client_request()
        .map_err(|err| err.to_string())?;
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(*name, value.parse().map_err(|_| "header value")?);
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, tcp)).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("handshake took too long".into()),
    }
}

/// The close the server sends next: (code, reason); 1006 when the
/// connection ends without one.
async fn close_of(ws: &mut Ws) -> (u16, String) {
    tokio::time::timeout(WAIT, close_of_or_hold(ws))
        .await
        .expect("a close in time")
}

/// `GET /readyz` on `base`: the JSON body.
async fn readyz(base: &str) -> serde_json::Value {
    reqwest::get(format!("{base}/readyz"))
        .await
        .expect("readyz")
        .json()
        .await
        .expect("readyz json")
}

/// Waits until the server counts `expected` sockets waiting for a token.
async fn until_waiting(base: &str, expected: u64) {
    let deadline = Instant::now() + WAIT * 2;
    loop {
        let waiting = readyz(base).await["waiting_for_token"].as_u64();
        if waiting == Some(expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "expected {expected} waiting sockets, the server counts {waiting:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connects, sends `prefix` and then (when `trickle` is set) one byte of
/// an endless header per `trickle`, keeping its side open; returns how long
/// after connecting the server closed the connection.
async fn time_to_close(addr: SocketAddr, prefix: Vec<u8>, trickle: Option<Duration>) -> Duration {
    let started = Instant::now();
    let (mut read, mut write) = TcpStream::connect(addr)
        .await
        .expect("connect")
        .into_split();
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&prefix).await;
        if let Some(every) = trickle {
            while write.write_all(b"a").await.is_ok() {
                tokio::time::sleep(every).await;
            }
        }
        // Holding the write half: dropping it would send our FIN.
        std::future::pending::<()>().await;
    });
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(120), read.read(&mut buf)).await {
            Err(_) => panic!("the server kept the connection for two minutes"),
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(_)) => continue,
        }
    }
    writer.abort();
    started.elapsed()
}

/// `held` shows the connection was closed by a timeout of `timeout`: not
/// before it, and not long after.
fn assert_closed_by(held: Duration, timeout: Duration, what: &str) {
    assert!(
        held >= timeout - Duration::from_millis(300),
        "{what}: closed after {held:?}, before the {timeout:?} timeout"
    );
    assert!(
        held <= timeout + MARGIN,
        "{what}: held {held:?}, timeout {timeout:?}"
    );
}

/// `GET /healthz` on a connection of its own (not a pooled one), waiting
/// up to a minute for the server to accept it.
async fn healthz_on_a_new_connection(base: &str) -> reqwest::StatusCode {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz answered")
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_are_closed_after_the_header_timeout() {
    let timeout = Duration::from_secs(2);
    let w = world(&[("REELTIME_HTTP_HEADER_TIMEOUT_SECS", "2")]).await;
    let addr = addr_of(&w.server);
    let patterns = [
        ("a connection that sends nothing", Vec::new(), None),
        ("half a request line", b"GET /heal".to_vec(), None),
        (
            "headers trickled one byte a second",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ".to_vec(),
            Some(Duration::from_secs(1)),
        ),
        (
            "a kept-alive connection with no next request",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            None,
        ),
    ];
    let runs: Vec<_> = patterns
        .into_iter()
        .map(|(name, prefix, trickle)| (name, tokio::spawn(time_to_close(addr, prefix, trickle))))
        .collect();
    for (name, run) in runs {
        assert_closed_by(run.await.expect("pattern ran"), timeout, name);
    }
    // The server still serves.
    let health = reqwest::get(format!("{}/healthz", w.server.http()))
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_head_is_refused_with_431() {
    let w = world(&[]).await;
    let mut stream = TcpStream::connect(addr_of(&w.server))
        .await
        .expect("connect");
    // Exactly the 32 KiB the server buffers, never finished: it reads all
    // of it (so closing sends no reset that could eat the answer) and
    // refuses.
    let prefix = "GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: ";
    let head = format!("{prefix}{}", "a".repeat(32 * 1024 - prefix.len()));
    stream.write_all(head.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_is_closed_after_the_idle_timeout() {
    let idle = Duration::from_secs(4);
    let w = world(&[
        ("REELTIME_HTTP_HEADER_TIMEOUT_SECS", "2"),
        ("REELTIME_HTTP_IDLE_TIMEOUT_SECS", "4"),
    ])
    .await;
    let head = format!(
        "POST /api/imports HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"url\":",
        w.token("alice")
    );
    let held = time_to_close(addr_of(&w.server), head.into_bytes(), None).await;
    // Past the header timeout (the head was complete), closed by the idle one.
    assert_closed_by(held, idle, "a stalled body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_sockets_have_their_caps_and_count_against_max_connections() {
    let w = world(&[
        ("REELTIME_MAX_PENDING_AUTH", "3"),
        ("REELTIME_MAX_PENDING_AUTH_PER_IP", "2"),
        ("REELTIME_MAX_CONNECTIONS", "6"),
        ("REELTIME_AUTH_TIMEOUT_SECS", "120"),
    ])
    .await;
    let (addr, base) = (addr_of(&w.server), w.server.http());
    let (a, b, c) = (ip("127.0.0.2"), ip("127.0.0.3"), ip("127.0.0.4"));

    let mut a1 = silent_socket(addr, a, &[]).await.expect("a1");
    let _a2 = silent_socket(addr, a, &[]).await.expect("a2");
    until_waiting(&base, 2).await;
    let mut a3 = silent_socket(addr, a, &[]).await.expect("a3");
    assert_eq!(
        close_of(&mut a3).await,
        (
            1013,
            "too many sockets waiting for a token from this address".into()
        )
    );
    let _b1 = silent_socket(addr, b, &[]).await.expect("b1");
    until_waiting(&base, 3).await;
    let mut c1 = silent_socket(addr, c, &[]).await.expect("c1");
    assert_eq!(
        close_of(&mut c1).await,
        (1013, "too many sockets waiting for a token".into())
    );

    // A token in the query is verified at once: it never waits.
    let (_alice, _, _) = WsClient::open(&w.server.ws(), &w.token("alice")).await;
    // A waiting socket that sends its token leaves the waiting ones.
    a1.send(Message::text(
        serde_json::json!({"type": "auth", "token": w.token("bob")}).to_string(),
    ))
    .await
    .expect("send token");
    match a1.next().await {
        Some(Ok(Message::Text(text))) => {
            let ready: ServerMessage = serde_json::from_str(&text).expect("server message");
            assert!(matches!(ready, ServerMessage::Ready { .. }), "{ready:?}");
        }
        other => panic!("expected ready, got {other:?}"),
    }
    until_waiting(&base, 2).await;
    let _c2 = silent_socket(addr, c, &[]).await.expect("c2");
    until_waiting(&base, 3).await;

    // 3 waiting + alice + bob = 5 of REELTIME_MAX_CONNECTIONS=6.
    let (_carol, _, _) = WsClient::open(&w.server.ws(), &w.token("carol")).await;
    let mut dave = WsClient::connect_query(&w.server.ws(), &w.token("dave")).await;
    assert_eq!(dave.closed().await, (1013, "too many connections".into()));
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.contains("reeltime_connections_refused_total{reason=\"too many connections\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_names_the_client_only_behind_a_trusted_proxy() {
    let w = world(&[
        ("REELTIME_MAX_PENDING_AUTH_PER_IP", "1"),
        ("REELTIME_TRUSTED_PROXIES", "127.0.0.1"),
        ("REELTIME_AUTH_TIMEOUT_SECS", "120"),
    ])
    .await;
    let (addr, base) = (addr_of(&w.server), w.server.http());
    let proxy = ip("127.0.0.1");
    let per_address = (
        1013,
        "too many sockets waiting for a token from this address".to_string(),
    );

    // Two clients behind the proxy: one place each.
    let _p1 = silent_socket(addr, proxy, &[("x-forwarded-for", "198.51.100.1")])
        .await
        .expect("p1");
    // The right-most address the proxy did not add is the client; the
    // left one is whatever the client claimed.
    let _p2 = silent_socket(
        addr,
        proxy,
        &[("x-forwarded-for", "198.51.100.1, 198.51.100.2")],
    )
    .await
    .expect("p2");
    until_waiting(&base, 2).await;
    let mut p3 = silent_socket(addr, proxy, &[("x-forwarded-for", "198.51.100.1")])
        .await
        .expect("p3");
    assert_eq!(close_of(&mut p3).await, per_address);

    // An untrusted peer's header is not read: its own address counts.
    let untrusted = ip("127.0.0.5");
    let _u1 = silent_socket(addr, untrusted, &[("x-forwarded-for", "198.51.100.3")])
        .await
        .expect("u1");
    until_waiting(&base, 3).await;
    let mut u2 = silent_socket(addr, untrusted, &[("x-forwarded-for", "198.51.100.4")])
        .await
        .expect("u2");
    assert_eq!(close_of(&mut u2).await, per_address);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_readyz_are_served_only_on_the_admin_listener() {
    let w = world(&[("REELTIME_ADMIN_LISTEN", "127.0.0.1:0")]).await;
    let line = w
        .server
        .wait_for_log("admin endpoints", WAIT)
        .await
        .expect("admin listener logged");
    let admin = line
        .split("on http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("admin address");
    let public = w.server.http();
    for path in ["/metrics", "/readyz"] {
        let response = reqwest::get(format!("{public}{path}")).await.expect(path);
        assert_eq!(response.status(), 404, "{path} on the public address");
    }
    let health = reqwest::get(format!("{public}/healthz"))
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);

    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .expect("admin metrics");
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics
            .text()
            .await
            .expect("text")
            .contains("reeltime_open_connections")
    );
    let ready = readyz(&format!("http://{admin}")).await;
    assert_eq!(ready["status"], "ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accept_loop_survives_running_out_of_descriptors() {
    let w = world(&[("REELTIME_HTTP_HEADER_TIMEOUT_SECS", "2")]).await;
    let pid = w.server.pid().expect("pid");
    // Lowered under the server's feet: its connection budget came from the
    // limit at start, so accept() itself now runs into EMFILE.
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--nofile=128:128"])
        .status()
        .expect("prlimit");
    assert!(status.success());
    let addr = addr_of(&w.server);
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let started = Instant::now();
    w.server
        .wait_for_log("accept failed; backing off", WAIT)
        .await
        .unwrap_or_else(|| panic!("no EMFILE back-off logged:\n{}", w.server.log()));
    // Silent connections are closed at the header timeout, giving their
    // descriptors back: /healthz gets through while we still hold all 300.
    assert_eq!(healthz_on_a_new_connection(&w.server.http()).await, 200);
    let logged = w.server.log().matches("accept failed; backing off").count();
    let intervals = started.elapsed().as_secs() / 10 + 2;
    assert!(
        logged as u64 <= intervals,
        "logged {logged} times in {:?}: once per 10 s expected",
        started.elapsed()
    );
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_accept_waits_instead_of_failing() {
    let issuer = TestIssuer::start().await;
    let mut env = issuer.env();
    env.extend(pairs(&[("REELTIME_HTTP_HEADER_TIMEOUT_SECS", "2")]));
    let server = ServerProcess::start_under(&["prlimit", "--nofile=400:400"], binary(), &env).await;
    let log = server.log();
    assert!(
        log.contains("max_open_connections=272") && log.contains("max_waiting_for_token=16"),
        "budget from 400 open files: 400 - 128, and 272 - 256 waiting:\n{log}"
    );
    assert!(
        log.contains("REELTIME_MAX_PENDING_AUTH lowered"),
        "the lowered cap is announced:\n{log}"
    );
    let addr = addr_of(&server);
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(TcpStream::connect(addr).await.expect("connect"));
    }
    server
        .wait_for_log("connection cap reached", WAIT)
        .await
        .unwrap_or_else(|| panic!("the cap was not reached:\n{}", server.log()));
    // Answered once the header timeout frees places.
    assert_eq!(healthz_on_a_new_connection(&server.http()).await, 200);
    assert!(
        !server.log().contains("accept failed"),
        "the cap kept accept() off EMFILE:\n{}",
        server.log()
    );
    drop(silent);
}

/// Lets this process hold the flood's sockets.
fn raise_own_file_limit() {
    let (_, hard) = rlimit::Resource::NOFILE.get().expect("getrlimit");
    rlimit::Resource::NOFILE
        .set(hard, hard)
        .expect("raise the open-file limit");
    assert!(
        hard >= 12_000,
        "the flood needs 12,000 open files, hard limit {hard}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_silent_sockets_leaves_room_for_a_real_user() {
    const FLOOD: usize = 10_000;
    const SOURCES: usize = 50;
    raise_own_file_limit();
    let issuer = TestIssuer::start().await;
    let content = ContentServer::start().await;
    let mut env = issuer.env();
    env.extend(pairs(&[
        ("REELTIME_IMPORT_ALLOW_PRIVATE", "1"),
        ("REELTIME_MEDIA_PROCESSING", "off"),
        ("REELTIME_AUTH_TIMEOUT_SECS", "300"),
    ]));
    let server =
        ServerProcess::start_under(&["prlimit", "--nofile=4096:4096"], binary(), &env).await;
    let log = server.log();
    assert!(
        log.contains("open_files=4096")
            && log.contains("max_open_connections=3968")
            && log.contains("max_waiting_for_token=2000"),
        "budget from 4096 open files:\n{log}"
    );
    let (addr, base) = (addr_of(&server), server.http());

    // /healthz answers throughout, each time on a new connection.
    let flooding = Arc::new(AtomicBool::new(true));
    let health = tokio::spawn({
        let flooding = Arc::clone(&flooding);
        let url = format!("{base}/healthz");
        async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("client");
            let (mut answered, mut slowest) = (0usize, Duration::ZERO);
            while flooding.load(Ordering::SeqCst) {
                let asked = Instant::now();
                let response = tokio::time::timeout(WAIT, client.get(&url).send())
                    .await
                    .expect("/healthz answered in time during the flood")
                    .expect("/healthz answered during the flood");
                assert_eq!(response.status(), 200);
                slowest = slowest.max(asked.elapsed());
                answered += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (answered, slowest)
        }
    });

    let refusals = Arc::new(Mutex::new(Vec::new()));
    let failed_handshakes = Arc::new(AtomicUsize::new(0));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
    let mut sockets = Vec::with_capacity(FLOOD);
    let mut user = None;
    for n in 0..FLOOD {
        if n == FLOOD / 3 {
            // A real user arrives mid-flood and follows an import.
            let (ws_url, token) = (server.ws(), issuer.token("alice", 600));
            let api = Api::new(&base);
            let url = content.video_url("during-the-flood", 2 * MIB);
            user = Some(tokio::spawn(async move {
                let (mut ws, _, _) = WsClient::open(&ws_url, &token).await;
                let created = api.create_ok(&token, &url).await;
                follow_to_final(&mut ws, &created.id).await
            }));
        }
        let permit = Arc::clone(&in_flight)
            .acquire_owned()
            .await
            .expect("semaphore");
        let source = ip(&format!("127.0.0.{}", 10 + n % SOURCES));
        let refusals = Arc::clone(&refusals);
        let failed = Arc::clone(&failed_handshakes);
        sockets.push(tokio::spawn(async move {
            let socket = silent_socket(addr, source, &[]).await;
            drop(permit);
            match socket {
                Ok(mut ws) => {
                    let close = close_of_or_hold(&mut ws).await;
                    refusals.lock().expect("lock").push(close);
                }
                Err(_) => {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }

    let states = tokio::time::timeout(Duration::from_secs(180), user.expect("user started"))
        .await
        .expect("the user's import finished during the flood")
        .expect("the user's task");
    let last = states.last().expect("states");
    assert_eq!(last.status, ImportStatus::Completed);
    assert!(
        states.iter().any(|s| s.status == ImportStatus::Downloading),
        "progress arrived: {states:?}"
    );

    // Every flood socket is either waiting or was refused 1013 at once.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let refused = refusals.lock().expect("lock").len();
        let failed = failed_handshakes.load(Ordering::SeqCst);
        if refused + failed + 2000 >= FLOOD {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{refused} refused, {failed} failed handshakes of {FLOOD}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    until_waiting(&base, 2000).await;
    flooding.store(false, Ordering::SeqCst);
    let (answered, slowest) = health.await.expect("health checks");
    assert!(answered >= 5, "/healthz asked only {answered} times");
    let refusals = refusals.lock().expect("lock").clone();
    assert_eq!(failed_handshakes.load(Ordering::SeqCst), 0);
    assert_eq!(refusals.len(), FLOOD - 2000);
    assert!(
        refusals.iter().all(|(code, _)| *code == 1013),
        "every refusal is 1013: {:?}",
        refusals.iter().find(|(code, _)| *code != 1013)
    );
    let log = server.log();
    assert!(
        !log.contains("accept failed"),
        "the budget kept accept() off EMFILE"
    );
    eprintln!(
        "flood: {FLOOD} silent sockets, {} refused 1013, 2000 waiting; /healthz answered {answered} times, slowest {slowest:?}",
        refusals.len()
    );
    for socket in sockets {
        socket.abort();
    }
}

/// The close a refused socket gets; a socket let in to wait hears nothing
/// until its auth timeout (longer than the test), and is held here.
async fn close_of_or_hold(ws: &mut Ws) -> (u16, String) {
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string());
            }
            Some(Ok(Message::Close(None))) => return (1005, String::new()),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return (1006, String::new()),
        }
    }
}
