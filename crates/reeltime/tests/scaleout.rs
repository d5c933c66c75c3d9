//! Several reeltime nodes sharing one PostgreSQL and one Redis, all real:
//! throwaway `postgres` and `redis-server` processes from the test kit, the
//! real binary twice, real sockets. An import runs on the node whose API
//! created it (claiming jobs across nodes is a later step), and its changes
//! must reach the user's sockets on every node.

mod common;

use std::collections::{HashMap, HashSet};

use common::binary;
use reeltime_protocol::{Import, ServerMessage};
use reeltime_testkit::{
    Api, ContentServer, Event, Postgres, RedisServer, ServerProcess, TestIssuer, WAIT, WsClient,
};

const KIB: usize = 1 << 10;

/// The shared services and the nodes.
struct Cluster {
    issuer: TestIssuer,
    content: ContentServer,
    redis: RedisServer,
    nodes: Vec<ServerProcess>,
    apis: Vec<Api>,
    // Dropped last: the nodes hold connections to it.
    _postgres: Postgres,
}

async fn cluster(nodes: usize) -> Cluster {
    let issuer = TestIssuer::start().await;
    let content = ContentServer::start().await;
    let (postgres, redis) = tokio::join!(Postgres::start(), RedisServer::start());
    let database = postgres.create_database("reeltime").await;
    let mut env = issuer.env();
    env.extend(common::pairs(&[
        ("REELTIME_IMPORT_ALLOW_PRIVATE", "1"),
        ("REELTIME_DATABASE_URL", &database),
        ("REELTIME_REDIS_URL", &redis.url()),
    ]));
    let mut started = Vec::new();
    for _ in 0..nodes {
        // One at a time: the first runs the migrations, the others find
        // them done (concurrent starts are safe too, but slower to debug).
        let node = ServerProcess::start(binary(), &env).await;
        assert!(
            node.wait_for_log("redis bus: subscribed", WAIT)
                .await
                .is_some(),
            "node did not subscribe to Redis; log:\n{}",
            node.log()
        );
        started.push(node);
    }
    let apis = started.iter().map(|node| Api::new(&node.http())).collect();
    Cluster {
        issuer,
        content,
        redis,
        nodes: started,
        apis,
        _postgres: postgres,
    }
}

impl Cluster {
    fn token(&self, sub: &str) -> String {
        self.issuer.token(sub, 600)
    }

    async fn tab(&self, node: usize, sub: &str) -> Tab {
        let (ws, _ready, snapshot) = WsClient::open(&self.nodes[node].ws(), &self.token(sub)).await;
        let mut tab = Tab {
            ws,
            user: sub.to_string(),
            node,
            latest: HashMap::new(),
            history: HashMap::new(),
            snapshots: 0,
        };
        tab.apply_snapshot(snapshot);
        tab
    }

    async fn create(&self, node: usize, sub: &str, url: &str) -> Import {
        self.apis[node].create_ok(&self.token(sub), url).await
    }

    /// The import as the database has it, through any node's REST API.
    async fn rest(&self, sub: &str, id: &str) -> Import {
        let (status, body) = self.apis[0]
            .get(&self.token(sub), &format!("/api/imports/{id}"))
            .await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_value(body).expect("import object")
    }
}

/// One browser tab: a socket and what it has seen, as a client keeps it.
struct Tab {
    ws: WsClient,
    user: String,
    node: usize,
    /// Newest state per import.
    latest: HashMap<String, Import>,
    /// Every version received per import, in order (snapshots included).
    history: HashMap<String, Vec<u64>>,
    /// `snapshot` messages received, the first one included.
    snapshots: usize,
}

impl Tab {
    fn apply(&mut self, import: Import) {
        let versions = self.history.entry(import.id.clone()).or_default();
        if let Some(last) = versions.last() {
            assert!(
                import.version > *last,
                "tab of {} on node {}: import {} went from version {last} to {}",
                self.user,
                self.node,
                import.id,
                import.version
            );
        }
        versions.push(import.version);
        self.latest.insert(import.id.clone(), import);
    }

    fn apply_snapshot(&mut self, imports: Vec<Import>) {
        self.snapshots += 1;
        for import in imports {
            self.apply(import);
        }
    }

    /// Reads messages until `done` holds for what the tab knows.
    async fn until(&mut self, what: &str, mut done: impl FnMut(&Tab) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT * 2;
        while !done(self) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.ws.next_within(left).await {
                Some(Event::Message(ServerMessage::Import { import })) => self.apply(*import),
                Some(Event::Message(ServerMessage::Snapshot { imports })) => {
                    self.apply_snapshot(imports)
                }
                Some(Event::Message(_)) => {}
                other => panic!(
                    "tab of {} on node {} waiting for {what}: {other:?}",
                    self.user, self.node
                ),
            }
        }
    }

    fn is_final(&self, id: &str) -> bool {
        self.latest.get(id).is_some_and(|i| i.status.is_final())
    }

    fn versions(&self, id: &str) -> Vec<u64> {
        self.history.get(id).cloned().unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_one_node_sees_every_change_of_an_import_run_on_another() {
    let c = cluster(2).await;
    let mut on_a = c.tab(0, "alice").await;
    let mut on_b = c.tab(1, "alice").await;
    let url = c
        .content
        .url(&format!("/video/far?size={}&pace_ms=10", 1024 * KIB));
    let created = c.create(1, "alice", &url).await;

    on_b.until("the final state, locally", |t| t.is_final(&created.id))
        .await;
    on_a.until("the final state, through Redis", |t| {
        t.is_final(&created.id)
    })
    .await;

    let remote = on_a.versions(&created.id);
    let last = *remote.last().expect("versions");
    assert_eq!(
        remote,
        (1..=last).collect::<Vec<u64>>(),
        "node A saw every change of the import, in order"
    );
    assert_eq!(
        remote,
        on_b.versions(&created.id),
        "both nodes saw the same"
    );
    assert!(
        last > 3,
        "queued, downloading, progress..., final: {remote:?}"
    );
    let stored = c.rest("alice", &created.id).await;
    assert_eq!(stored.version, last);
    assert_eq!(on_a.latest[&created.id].status, stored.status);
    assert!(
        on_a.latest[&created.id].progress.is_some_and(|p| p > 0.0),
        "progress made it across"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_with_tabs_on_both_nodes_get_only_their_own_imports() {
    let c = cluster(2).await;
    let users: Vec<String> = (0..4).map(|n| format!("user{n}")).collect();
    // Three tabs per user, spread over both nodes.
    let mut tabs = Vec::new();
    for (n, user) in users.iter().enumerate() {
        for tab in 0..3 {
            tabs.push(c.tab((n + tab) % 2, user).await);
        }
    }
    // Two imports per user, one created (and run) on each node.
    let mut owned: HashMap<String, HashSet<String>> = HashMap::new();
    for (n, user) in users.iter().enumerate() {
        for node in 0..2 {
            let url = c.content.video_url(&format!("u{n}n{node}"), 64 * KIB);
            let import = c.create(node, user, &url).await;
            owned.entry(user.clone()).or_default().insert(import.id);
        }
    }
    let mut readers = Vec::new();
    for mut tab in tabs {
        let mine = owned[&tab.user].clone();
        readers.push(tokio::spawn(async move {
            tab.until("the user's imports to finish", |t| {
                mine.iter().all(|id| t.is_final(id))
            })
            .await;
            tab
        }));
    }
    for reader in readers {
        let tab = reader.await.expect("tab reader");
        let seen: HashSet<String> = tab.history.keys().cloned().collect();
        assert_eq!(
            seen, owned[&tab.user],
            "tab of {} on node {} saw exactly its user's imports",
            tab.user, tab.node
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_mid_import_loses_nothing() {
    let mut c = cluster(2).await;
    let mut alice_a = c.tab(0, "alice").await;
    let mut alice_b = c.tab(1, "alice").await;
    let mut bob_a = c.tab(0, "bob").await;
    let mut bob_b = c.tab(1, "bob").await;

    // Alice's import runs on node B and stalls after its first bytes.
    c.content.hold("outage");
    let url = c.content.url(&format!(
        "/video/outage?size={}&hold_after={}",
        256 * KIB,
        64 * KIB
    ));
    let alice_import = c.create(1, "alice", &url).await;
    alice_a
        .until("progress from node B", |t| {
            t.latest
                .get(&alice_import.id)
                .is_some_and(|i| i.bytes_done > 0)
        })
        .await;

    c.redis.stop().await;
    for node in &c.nodes {
        assert!(
            node.wait_for_log("redis bus: subscription lost", WAIT)
                .await
                .is_some(),
            "node did not notice Redis leaving; log:\n{}",
            node.log()
        );
    }

    // While Redis is away: alice's import finishes on node B, and bob
    // creates one on node A. Their own node's tabs still see them.
    c.content.release("outage");
    alice_b
        .until("the final state on the running node", |t| {
            t.is_final(&alice_import.id)
        })
        .await;
    let bob_import = c
        .create(0, "bob", &c.content.video_url("during", 32 * KIB))
        .await;
    bob_a
        .until("bob's import on its own node", |t| {
            t.is_final(&bob_import.id)
        })
        .await;
    assert!(
        !alice_a.is_final(&alice_import.id),
        "nothing can cross while Redis is away"
    );

    let snapshots_before: Vec<usize> = [&alice_a, &alice_b, &bob_a, &bob_b]
        .iter()
        .map(|t| t.snapshots)
        .collect();
    c.redis.start_again().await;
    for node in &c.nodes {
        assert!(
            node.wait_for_log("redis bus: resubscribed", WAIT)
                .await
                .is_some(),
            "node did not resubscribe; log:\n{}",
            node.log()
        );
    }

    // Every tab gets a fresh snapshot and ends at the final state.
    let alice_final = c.rest("alice", &alice_import.id).await;
    let bob_final = c.rest("bob", &bob_import.id).await;
    assert!(alice_final.status.is_final() && bob_final.status.is_final());
    for (tab, before, expected) in [
        (&mut alice_a, snapshots_before[0], &alice_final),
        (&mut alice_b, snapshots_before[1], &alice_final),
        (&mut bob_a, snapshots_before[2], &bob_final),
        (&mut bob_b, snapshots_before[3], &bob_final),
    ] {
        tab.until("a resync snapshot and the final state", |t| {
            t.snapshots > before
                && t.latest
                    .get(&expected.id)
                    .is_some_and(|i| i.version == expected.version)
        })
        .await;
        assert_eq!(tab.latest[&expected.id].status, expected.status);
        assert!(
            tab.history.keys().all(|id| *id == expected.id),
            "tab of {} saw only its own import",
            tab.user
        );
    }
}

/// Not a correctness test: measures the two channel layouts the Redis bus
/// could use, on this machine, for `docs/architecture.md`. Run with
/// `cargo test -p reeltime --test scaleout --release -- --ignored --nocapture bus_layout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test"]
async fn bus_layout_microbenchmark() {
    bench::run().await;
}

mod bench {
    //! 10,000 users spread over three simulated nodes (one hub, one
    //! subscriber connection each), one publisher, 30,000 events (three per
    //! user), through a real redis-server.
    //!
    //! - sharded: 16 channels, every node subscribed to all of them; each
    //!   node receives every event and its hub drops the ones of users it
    //!   does not hold.
    //! - per-user: one channel per user, subscribed by the node holding that
    //!   user; each node receives only its own users' events.
    //!
    //! Measured: subscribe cost (per user: one SUBSCRIBE round trip each, as
    //! first connects would do), time to resubscribe everything after a
    //! reconnect, publish-to-deliver throughput, and Redis CPU.

    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use axum::extract::ws::Utf8Bytes;
    use futures_util::StreamExt;
    use reeltime::bus::ImportEvent;
    use reeltime::bus::redis::{all_channels, channel_of, decode, encode};
    use reeltime::gateway::{Hub, Outbox, Registration};
    use reeltime_testkit::RedisServer;

    const USERS: usize = 10_000;
    const NODES: usize = 3;
    const EVENTS_PER_USER: usize = 3;
    const IN_FLIGHT: usize = 256;

    fn user(n: usize) -> String {
        format!("user_{n:05}")
    }

    fn user_channel(user: &str) -> String {
        format!("reeltime:user:{user}")
    }

    struct Node {
        hub: Arc<Hub>,
        _registrations: Vec<Registration>,
        /// The one socket of each user on this node, to count deliveries.
        outboxes: Arc<HashMap<String, Arc<Outbox>>>,
    }

    fn nodes() -> Vec<Node> {
        (0..NODES)
            .map(|node| {
                let hub = Hub::new(4, None);
                let mut registrations = Vec::new();
                let mut outboxes = HashMap::new();
                for n in (0..USERS).filter(|n| n % NODES == node) {
                    let outbox = Outbox::new();
                    registrations.push(
                        hub.register(&user(n), Arc::clone(&outbox))
                            .expect("register"),
                    );
                    outboxes.insert(user(n), outbox);
                }
                Node {
                    hub,
                    _registrations: registrations,
                    outboxes: Arc::new(outboxes),
                }
            })
            .collect()
    }

    fn events() -> Vec<Arc<ImportEvent>> {
        let payload = Utf8Bytes::from(format!(
            "{{\"type\":\"import\",\"import\":{{\"id\":\"x\",\"pad\":\"{}\"}}}}",
            "p".repeat(400)
        ));
        (0..EVENTS_PER_USER)
            .flat_map(|round| {
                let payload = payload.clone();
                (0..USERS).map(move |n| {
                    Arc::new(ImportEvent {
                        user_id: user(n),
                        import_id: format!("import_{n}"),
                        version: round as u64 + 1,
                        is_final: false,
                        payload: payload.clone(),
                    })
                })
            })
            .collect()
    }

    async fn redis_cpu(client: &redis::Client) -> f64 {
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("connection");
        let info: String = redis::cmd("INFO")
            .arg("cpu")
            .query_async(&mut connection)
            .await
            .expect("INFO");
        info.lines()
            .filter(|line| line.starts_with("used_cpu_sys:") || line.starts_with("used_cpu_user:"))
            .filter_map(|line| line.split(':').nth(1)?.trim().parse::<f64>().ok())
            .sum()
    }

    /// Publishes every event, `IN_FLIGHT` at a time, to `channel(event)`;
    /// returns when every node delivered what it should.
    async fn publish_all(
        client: &redis::Client,
        events: &[Arc<ImportEvent>],
        channel: impl Fn(&ImportEvent) -> String,
        delivered: &AtomicUsize,
    ) -> f64 {
        let publisher = client
            .get_multiplexed_async_connection()
            .await
            .expect("publisher");
        let started = Instant::now();
        futures_util::stream::iter(events.iter().map(|event| {
            let mut publisher = publisher.clone();
            let frame = encode("bench", event).expect("encode");
            let channel = channel(event);
            async move {
                let _: i64 = redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(frame)
                    .query_async(&mut publisher)
                    .await
                    .expect("publish");
            }
        }))
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<()>>()
        .await;
        while delivered.load(Ordering::SeqCst) < events.len() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        started.elapsed().as_secs_f64()
    }

    /// A subscriber task per node that decodes and hands to its hub.
    fn receive(
        node: &Node,
        stream: redis::aio::PubSubStream,
        delivered: &Arc<AtomicUsize>,
        received: &Arc<AtomicUsize>,
    ) {
        let hub = Arc::clone(&node.hub);
        let delivered = Arc::clone(delivered);
        let received = Arc::clone(received);
        let outboxes = Arc::clone(&node.outboxes);
        tokio::spawn(async move {
            let mut stream = stream;
            while let Some(message) = stream.next().await {
                received.fetch_add(1, Ordering::Relaxed);
                let (_, event) = decode(message.get_payload_bytes()).expect("decode");
                hub.deliver(&event);
                // Count what reached the socket's queue, as a session would
                // take it.
                if let Some(outbox) = outboxes.get(&event.user_id) {
                    delivered.fetch_add(outbox.drain().len(), Ordering::SeqCst);
                }
            }
        });
    }

    pub async fn run() {
        let redis_server = RedisServer::start().await;
        let client = redis::Client::open(redis_server.url()).expect("client");
        let events = events();
        println!(
            "{USERS} users over {NODES} nodes, {} events of {} bytes",
            events.len(),
            encode("bench", &events[0]).expect("encode").len()
        );

        // Sharded: every node subscribes to the 16 channels once.
        {
            let nodes = nodes();
            let delivered = Arc::new(AtomicUsize::new(0));
            let received = Arc::new(AtomicUsize::new(0));
            let started = Instant::now();
            let mut sinks = Vec::new();
            for node in &nodes {
                let (mut sink, stream) = client.get_async_pubsub().await.expect("pubsub").split();
                sink.subscribe(all_channels()).await.expect("subscribe");
                receive(node, stream, &delivered, &received);
                sinks.push(sink);
            }
            let subscribe = started.elapsed().as_secs_f64();
            let cpu = redis_cpu(&client).await;
            let seconds = publish_all(
                &client,
                &events,
                |event| channel_of(&event.user_id),
                &delivered,
            )
            .await;
            let cpu = redis_cpu(&client).await - cpu;
            println!(
                "sharded: subscribe all nodes {:.1} ms; {:.0} events/s published and delivered ({:.2} s); \
                 nodes received {} messages for {} deliveries; redis cpu {:.2} s",
                subscribe * 1e3,
                events.len() as f64 / seconds,
                seconds,
                received.load(Ordering::SeqCst),
                delivered.load(Ordering::SeqCst),
                cpu
            );
            drop(sinks);
        }

        // Per user: each node subscribes to its users' channels, one
        // SUBSCRIBE per user as first connects would, then once more in one
        // batch as a resubscription after a reconnect would.
        {
            let nodes = nodes();
            let delivered = Arc::new(AtomicUsize::new(0));
            let received = Arc::new(AtomicUsize::new(0));
            let started = Instant::now();
            let mut sinks = Vec::new();
            for (index, node) in nodes.iter().enumerate() {
                let (mut sink, stream) = client.get_async_pubsub().await.expect("pubsub").split();
                for n in (0..USERS).filter(|n| n % NODES == index) {
                    sink.subscribe(user_channel(&user(n)))
                        .await
                        .expect("subscribe");
                }
                receive(node, stream, &delivered, &received);
                sinks.push(sink);
            }
            let one_by_one = started.elapsed().as_secs_f64();

            let started = Instant::now();
            for index in 0..NODES {
                let (mut sink, _stream) = client.get_async_pubsub().await.expect("pubsub").split();
                let channels: Vec<String> = (0..USERS)
                    .filter(|n| n % NODES == index)
                    .map(|n| user_channel(&user(n)))
                    .collect();
                sink.subscribe(channels).await.expect("subscribe");
            }
            let batch = started.elapsed().as_secs_f64();

            let cpu = redis_cpu(&client).await;
            let seconds = publish_all(
                &client,
                &events,
                |event| user_channel(&event.user_id),
                &delivered,
            )
            .await;
            let cpu = redis_cpu(&client).await - cpu;
            println!(
                "per-user: subscribe {USERS} users one by one {:.0} ms ({:.1} µs each), \
                 resubscribe all in one batch per node {:.0} ms; {:.0} events/s published and delivered ({:.2} s); \
                 nodes received {} messages for {} deliveries; redis cpu {:.2} s",
                one_by_one * 1e3,
                one_by_one * 1e6 / USERS as f64,
                batch * 1e3,
                events.len() as f64 / seconds,
                seconds,
                received.load(Ordering::SeqCst),
                delivered.load(Ordering::SeqCst),
                cpu
            );
            drop(sinks);
        }
    }
}
