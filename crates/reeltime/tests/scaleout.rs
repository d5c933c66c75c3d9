//! Several reeltime nodes sharing one PostgreSQL and one Redis, all real:
//! throwaway `postgres` and `redis-server` processes from the test kit, the
//! real binary two or three times, nginx in front where a load balancer is
//! the point, real sockets. Any node may run any import (each claims what
//! it has download slots for, under a lease), whichever node's API created
//! it; the content server records the User-Agent of every download, which
//! names the node (`reeltime/<version> (node <id>)`), so a test knows where
//! an import runs. Its changes must reach the user's sockets on every node.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::binary;
use reeltime_protocol::{Import, ImportStatus, RemovedImport, ServerMessage};
use reeltime_testkit::{
    Api, ContentServer, Event, Fetch, LinkMode, Nginx, Postgres, RedisServer, ServerProcess,
    TcpProxy, TestIssuer, WAIT, WsClient,
};

const KIB: usize = 1 << 10;

/// The shared services and the nodes.
struct Cluster {
    issuer: TestIssuer,
    content: ContentServer,
    redis: RedisServer,
    nodes: Vec<ServerProcess>,
    /// Each node's id, as in its User-Agent and its connection ids.
    node_ids: Vec<String>,
    apis: Vec<Api>,
    /// The URL of the nodes' database.
    database: String,
    // Dropped last: the nodes hold connections to it.
    _postgres: Postgres,
}

async fn cluster(nodes: usize) -> Cluster {
    cluster_with(nodes, &[]).await
}

/// `nodes` nodes with `extra` settings on top of the shared ones.
async fn cluster_with(nodes: usize, extra: &[(&str, &str)]) -> Cluster {
    let issuer = TestIssuer::start().await;
    let content = ContentServer::start().await;
    let (postgres, redis) = tokio::join!(Postgres::start(), RedisServer::start());
    let database = postgres.create_database("reeltime").await;
    let mut started = Vec::new();
    let mut node_ids = Vec::new();
    for _ in 0..nodes {
        // One at a time: the first runs the migrations, the others find
        // them done (concurrent starts are safe too, but slower to debug).
        let node = start_node(&issuer, &database, &redis, extra).await;
        node_ids.push(node_id_of(&node));
        started.push(node);
    }
    let apis = started.iter().map(|node| Api::new(&node.http())).collect();
    Cluster {
        issuer,
        content,
        redis,
        nodes: started,
        node_ids,
        apis,
        database,
        _postgres: postgres,
    }
}

/// A node on `database` and `redis` with `extra` settings, once it has
/// joined the bus.
async fn start_node(
    issuer: &TestIssuer,
    database: &str,
    redis: &RedisServer,
    extra: &[(&str, &str)],
) -> ServerProcess {
    let mut env = issuer.env();
    env.extend(common::pairs(&[
        ("REELTIME_IMPORT_ALLOW_PRIVATE", "1"),
        ("REELTIME_DATABASE_URL", database),
        ("REELTIME_REDIS_URL", &redis.url()),
    ]));
    env.extend(common::pairs(extra));
    let node = ServerProcess::start(binary(), &env).await;
    assert!(
        node.wait_for_log("redis bus: subscribed", WAIT)
            .await
            .is_some(),
        "node did not subscribe to Redis; log:\n{}",
        node.log()
    );
    node
}

/// The node id a node logs when it joins the Redis bus (`node=<id>`).
fn node_id_of(node: &ServerProcess) -> String {
    node.log()
        .lines()
        .find(|line| line.contains("using the Redis bus"))
        .and_then(|line| line.split("node=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no node id in the log:\n{}", node.log()))
}

impl Cluster {
    /// Starts one more node, with `extra` settings, that reaches PostgreSQL
    /// through a link the test can cut or hold silent.
    async fn add_node_behind_link(&mut self, extra: &[(&str, &str)]) -> TcpProxy {
        let port = self
            .database
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next())
            .and_then(|port| port.parse::<u16>().ok())
            .expect("a port in the database URL");
        let link = TcpProxy::start(([127, 0, 0, 1], port).into())
            .await
            .expect("proxy");
        let database = self
            .database
            .replace(&format!(":{port}/"), &format!(":{}/", link.port()));
        let node = start_node(&self.issuer, &database, &self.redis, extra).await;
        self.node_ids.push(node_id_of(&node));
        self.apis.push(Api::new(&node.http()));
        self.nodes.push(node);
        link
    }

    fn token(&self, sub: &str) -> String {
        self.issuer.token(sub, 600)
    }

    /// Which node has the id `id`.
    fn node_index(&self, id: &str) -> usize {
        self.node_ids
            .iter()
            .position(|known| known == id)
            .unwrap_or_else(|| panic!("no node has id {id} (nodes: {:?})", self.node_ids))
    }

    /// The node that made a download request (from its User-Agent).
    fn node_of(&self, fetch: &Fetch) -> usize {
        let id = fetch
            .node()
            .unwrap_or_else(|| panic!("no node in the User-Agent of {fetch:?}"));
        self.node_index(id)
    }

    /// Waits until the download of `name` (see [`held_url`]) has sent its
    /// first `hold_after` bytes and stalls; returns the node fetching it.
    async fn stalled_mid_file(&self, name: &str, hold_after: usize) -> usize {
        let fetches = self
            .content
            .wait_for_fetches("a download stalled mid-file", WAIT, |fetches| {
                fetches
                    .iter()
                    .any(|f| f.name == name && f.bytes_sent >= hold_after)
            })
            .await;
        let stalled = fetches
            .iter()
            .find(|f| f.name == name && f.bytes_sent >= hold_after)
            .expect("the fetch waited for");
        self.node_of(stalled)
    }

    /// Waits until another node fetches `name` again (the job moved); returns
    /// that second fetch.
    async fn taken_over(&self, name: &str, within: Duration) -> Fetch {
        let fetches = self
            .content
            .wait_for_fetches("the download taken over by another node", within, |f| {
                f.iter().filter(|f| f.name == name).count() >= 2
            })
            .await;
        fetches
            .into_iter()
            .filter(|f| f.name == name)
            .nth(1)
            .expect("the second fetch waited for")
    }

    /// The node a socket is connected to (its connection id starts with
    /// the node id).
    fn node_of_connection(&self, connection_id: &str) -> usize {
        let id = connection_id
            .rsplit_once('-')
            .map(|(node, _)| node)
            .unwrap_or(connection_id);
        self.node_index(id)
    }

    /// Stops Redis and waits until every node noticed.
    async fn redis_away(&mut self) {
        self.redis.stop().await;
        self.every_node_logs("redis bus: subscription lost").await;
    }

    /// Starts Redis again and waits until every node resubscribed.
    async fn redis_back(&mut self) {
        self.redis.start_again().await;
        self.every_node_logs("redis bus: resubscribed").await;
    }

    async fn every_node_logs(&self, line: &str) {
        for node in &self.nodes {
            assert!(
                node.wait_for_log(line, WAIT).await.is_some(),
                "node never logged {line:?}; log:\n{}",
                node.log()
            );
        }
    }

    /// A tab connected straight to node `node`.
    async fn tab(&self, node: usize, sub: &str) -> Tab {
        self.tab_via(&self.nodes[node].ws(), sub).await
    }

    /// A tab connected through `url` (a node, or the load balancer).
    async fn tab_via(&self, url: &str, sub: &str) -> Tab {
        let mut tab = Tab {
            ws: None,
            user: sub.to_string(),
            node: usize::MAX,
            latest: HashMap::new(),
            removed: HashMap::new(),
            history: HashMap::new(),
            on_this_connection: HashMap::new(),
            snapshots: 0,
            connections: 0,
        };
        tab.connect(self, url).await;
        tab
    }

    async fn create(&self, node: usize, sub: &str, url: &str) -> Import {
        self.apis[node].create_ok(&self.token(sub), url).await
    }

    /// The import as the database has it, through the REST API of the
    /// first node still running.
    async fn rest(&self, sub: &str, id: &str) -> Import {
        let node = (0..self.nodes.len())
            .find(|&n| self.nodes[n].pid().is_some())
            .expect("a running node");
        let (status, body) = self.apis[node]
            .get(&self.token(sub), &format!("/api/imports/{id}"))
            .await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_value(body).expect("import object")
    }
}

/// One browser tab: a socket and what it has seen, as a client keeps it:
/// it reconnects when told to, and merges each snapshot by version.
struct Tab {
    ws: Option<WsClient>,
    user: String,
    /// The node its socket is on now.
    node: usize,
    /// Newest state per import.
    latest: HashMap<String, Import>,
    /// Version of the delete per deleted import: the row is gone, and
    /// anything older about it is ignored.
    removed: HashMap<String, u64>,
    /// Every version received per import, in order (snapshots included,
    /// over every connection).
    history: HashMap<String, Vec<u64>>,
    /// The last version received per import on the current connection:
    /// versions strictly increase on one connection.
    on_this_connection: HashMap<String, u64>,
    /// `snapshot` messages received, the first one included.
    snapshots: usize,
    /// Connections opened.
    connections: usize,
}

impl Tab {
    fn apply(&mut self, import: Import) {
        if let Some(last) = self.on_this_connection.get(&import.id) {
            assert!(
                import.version > *last,
                "tab of {} on node {}: import {} went from version {last} to {}",
                self.user,
                self.node,
                import.id,
                import.version
            );
        }
        self.on_this_connection
            .insert(import.id.clone(), import.version);
        self.history
            .entry(import.id.clone())
            .or_default()
            .push(import.version);
        let newer = self
            .latest
            .get(&import.id)
            .is_none_or(|known| import.version > known.version)
            && self
                .removed
                .get(&import.id)
                .is_none_or(|gone| import.version > *gone);
        if newer {
            self.latest.insert(import.id.clone(), import);
        }
    }

    /// A delete: like a change, it strictly follows what this connection
    /// had of the import.
    fn apply_removed(&mut self, gone: RemovedImport) {
        if let Some(last) = self.on_this_connection.get(&gone.id) {
            assert!(
                gone.version > *last,
                "tab of {} on node {}: import {} deleted at version {} after {last}",
                self.user,
                self.node,
                gone.id,
                gone.version
            );
        }
        self.on_this_connection
            .insert(gone.id.clone(), gone.version);
        if self
            .latest
            .get(&gone.id)
            .is_none_or(|known| gone.version > known.version)
        {
            self.latest.remove(&gone.id);
            let known = self.removed.entry(gone.id).or_default();
            *known = gone.version.max(*known);
        }
    }

    fn apply_snapshot(&mut self, imports: Vec<Import>, removed: Vec<RemovedImport>) {
        self.snapshots += 1;
        for import in imports {
            self.apply(import);
        }
        for gone in removed {
            self.apply_removed(gone);
        }
    }

    /// Applies one message a tab may get after the snapshot.
    fn apply_message(&mut self, message: ServerMessage) {
        match message {
            ServerMessage::Import { import } => self.apply(*import),
            ServerMessage::Snapshot { imports, removed } => self.apply_snapshot(imports, removed),
            ServerMessage::ImportRemoved { id, version } => {
                self.apply_removed(RemovedImport { id, version })
            }
            _ => {}
        }
    }

    fn ws(&mut self) -> &mut WsClient {
        self.ws.as_mut().expect("the tab is connected")
    }

    /// Connects through `url` as a client does: a refused connection, or
    /// a node that closes with 1001 before `ready` (it is draining), is
    /// retried with a short backoff. Applies the snapshot.
    async fn connect(&mut self, c: &Cluster, url: &str) {
        let token = c.token(&self.user);
        let mut failures = Vec::new();
        for attempt in 0..20u64 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50 * attempt.min(10))).await;
            }
            let mut ws = match WsClient::try_connect_query(url, &token).await {
                Ok(ws) => ws,
                Err(err) => {
                    failures.push(err);
                    continue;
                }
            };
            let connection_id = match ws.next_within(WAIT).await {
                Some(Event::Message(ServerMessage::Ready { connection_id, .. })) => connection_id,
                Some(Event::Closed { code: 1001, reason }) => {
                    failures.push(format!("closed 1001 {reason}"));
                    continue;
                }
                Some(Event::Dropped) => {
                    failures.push("dropped before ready".into());
                    continue;
                }
                other => panic!("tab of {} connecting to {url}: {other:?}", self.user),
            };
            let (imports, removed) = match ws.next_within(WAIT).await {
                Some(Event::Message(ServerMessage::Snapshot { imports, removed })) => {
                    (imports, removed)
                }
                other => panic!("tab of {}: expected the snapshot, got {other:?}", self.user),
            };
            self.node = c.node_of_connection(&connection_id);
            self.ws = Some(ws);
            self.connections += 1;
            self.on_this_connection.clear();
            self.apply_snapshot(imports, removed);
            return;
        }
        panic!(
            "tab of {} could not connect to {url}: {failures:?}",
            self.user
        );
    }

    /// Reads messages until `done` holds for what the tab knows.
    async fn until(&mut self, what: &str, mut done: impl FnMut(&Tab) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT * 2;
        while !done(self) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.ws().next_within(left).await {
                Some(Event::Message(message)) => self.apply_message(message),
                other => panic!(
                    "tab of {} on node {} waiting for {what}: {other:?}",
                    self.user, self.node
                ),
            }
        }
    }

    /// Reads (and applies) messages until the socket ends; returns the
    /// close code, 1006 when it ended without a close frame.
    async fn until_gone(&mut self) -> u16 {
        let code = loop {
            match self.ws().next_within(WAIT).await {
                Some(Event::Message(message)) => self.apply_message(message),
                Some(Event::Closed { code, .. }) => break code,
                Some(Event::Dropped) => break 1006,
                None => panic!(
                    "tab of {} on node {}: the socket did not end",
                    self.user, self.node
                ),
            }
        };
        self.ws = None;
        code
    }

    /// Loses the network: the socket is gone without a close frame.
    fn go_away(&mut self) {
        if let Some(ws) = self.ws.take() {
            ws.drop_connection();
        }
    }

    /// Reads until the answer to a ping: everything queued for the tab
    /// before it has then been applied.
    async fn catch_up(&mut self) {
        self.ws()
            .send_json(&serde_json::json!({"type": "ping"}))
            .await;
        loop {
            match self.ws().next_within(WAIT).await {
                Some(Event::Message(ServerMessage::Pong)) => return,
                Some(Event::Message(message)) => self.apply_message(message),
                other => panic!("tab of {} waiting for pong: {other:?}", self.user),
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

/// The most requests in `fetches` that were going at the same moment, as
/// the content server saw them (one still going counts until now).
fn max_overlap<'a>(fetches: impl IntoIterator<Item = &'a Fetch>) -> usize {
    let now = Instant::now();
    // (time, +1 start / -1 end); at equal times an end sorts first.
    let mut edges: Vec<(Instant, i32)> = Vec::new();
    for fetch in fetches {
        edges.push((fetch.started, 1));
        edges.push((fetch.ended.unwrap_or(now), -1));
    }
    edges.sort();
    let (mut running, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        running += step;
        most = most.max(running);
    }
    most as usize
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

    on_b.until("the final state", |t| t.is_final(&created.id))
        .await;
    on_a.until("the final state", |t| t.is_final(&created.id))
        .await;

    // Whichever node ran it, the other one's tab got every change through
    // Redis.
    let runner = c.node_of(&c.content.fetches_of("far")[0]);
    let (local, remote) = if runner == 0 {
        (&on_a, &on_b)
    } else {
        (&on_b, &on_a)
    };
    let remote = remote.versions(&created.id);
    let last = *remote.last().expect("versions");
    assert_eq!(
        remote,
        (1..=last).collect::<Vec<u64>>(),
        "the node not running the import saw every change of it, in order"
    );
    assert_eq!(
        remote,
        local.versions(&created.id),
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
    // Two imports per user, one created through each node's API.
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
    let mut alice = [c.tab(0, "alice").await, c.tab(1, "alice").await];
    let mut bob = [c.tab(0, "bob").await, c.tab(1, "bob").await];

    // Alice's import stalls after its first bytes, on whichever node
    // claimed it.
    c.content.hold("outage");
    let url = c.content.url(&format!(
        "/video/outage?size={}&hold_after={}",
        256 * KIB,
        64 * KIB
    ));
    let alice_import = c.create(1, "alice", &url).await;
    let fetches = c
        .content
        .wait_for_fetches("alice's download", WAIT, |fetches| {
            fetches.iter().any(|f| f.name == "outage")
        })
        .await;
    let runner = c.node_of(&fetches[0]);
    let other = 1 - runner;
    alice[other]
        .until("progress from the other node", |t| {
            t.latest
                .get(&alice_import.id)
                .is_some_and(|i| i.bytes_done > 0)
        })
        .await;

    c.redis_away().await;

    // While Redis is away: alice's import finishes, and bob creates one.
    // The running node's own tabs still see them.
    c.content.release("outage");
    alice[runner]
        .until("the final state on the running node", |t| {
            t.is_final(&alice_import.id)
        })
        .await;
    let bob_import = c
        .create(0, "bob", &c.content.video_url("during", 32 * KIB))
        .await;
    let fetches = c
        .content
        .wait_for_fetches("bob's download", WAIT, |fetches| {
            fetches.iter().any(|f| f.name == "during")
        })
        .await;
    let bob_runner = c.node_of(fetches.iter().find(|f| f.name == "during").expect("fetch"));
    bob[bob_runner]
        .until("bob's import on the running node", |t| {
            t.is_final(&bob_import.id)
        })
        .await;
    assert!(
        !alice[other].is_final(&alice_import.id),
        "nothing can cross while Redis is away"
    );

    let snapshots_before: Vec<usize> = alice
        .iter()
        .chain(bob.iter())
        .map(|t| t.snapshots)
        .collect();
    c.redis_back().await;

    // Every tab gets a fresh snapshot and ends at the final state.
    let alice_final = c.rest("alice", &alice_import.id).await;
    let bob_final = c.rest("bob", &bob_import.id).await;
    assert!(alice_final.status.is_final() && bob_final.status.is_final());
    let expected = [&alice_final, &alice_final, &bob_final, &bob_final];
    for ((tab, before), expected) in alice
        .iter_mut()
        .chain(bob.iter_mut())
        .zip(snapshots_before)
        .zip(expected)
    {
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

/// A delete made through one node reaches the user's tabs on every node at
/// once, after every other change of the import; a tab that was away when
/// it happened drops the row on reconnecting (to another node); no other
/// user hears of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_on_one_node_reaches_the_tabs_on_every_node() {
    let c = cluster(2).await;
    let mut open = [c.tab(0, "alice").await, c.tab(1, "alice").await];
    let mut away = c.tab(1, "alice").await;
    let mut bob = c.tab(1, "bob").await;
    let import = c
        .create(0, "alice", &c.content.video_url("deleted", 32 * KIB))
        .await;
    all_until(&mut open, "the final state", |t| t.is_final(&import.id)).await;
    away.until("the final state", |t| t.is_final(&import.id))
        .await;
    let last = c.rest("alice", &import.id).await;
    away.go_away();

    let path = format!("/api/imports/{}", import.id);
    let token = c.token("alice");
    let (status, body) = c.apis[0].delete(&token, &path).await;
    assert_eq!(status, 204, "{body}");

    all_until(&mut open, "the delete", |t| {
        t.removed.contains_key(&import.id)
    })
    .await;
    for tab in &open {
        assert!(!tab.latest.contains_key(&import.id), "node {}", tab.node);
        assert_eq!(
            tab.removed[&import.id],
            last.version + 1,
            "node {}",
            tab.node
        );
    }
    for api in &c.apis {
        assert_eq!(api.get(&token, &path).await.0, 404, "gone on every node");
    }

    let back_on = c.nodes[0].ws();
    away.connect(&c, &back_on).await;
    assert_eq!(away.node, 0);
    assert!(
        !away.latest.contains_key(&import.id),
        "the snapshot told the tab that was away"
    );
    assert_eq!(away.removed[&import.id], last.version + 1);

    bob.catch_up().await;
    assert!(
        bob.history.is_empty() && bob.removed.is_empty(),
        "bob heard nothing of alice's import"
    );
}

/// A delete made while Redis is away reaches the other node's tabs once
/// it is back: the node that made it still tells its own tabs at once and
/// publishes what it held, and the other node's resync snapshot carries the
/// tombstone (the resync sends only what is newer than what a connection
/// has, so a delete has to be in it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_while_redis_is_away_reaches_the_other_node_once_it_is_back() {
    let mut c = cluster(2).await;
    let mut tabs = [c.tab(0, "alice").await, c.tab(1, "alice").await];
    let import = c
        .create(0, "alice", &c.content.video_url("outage-delete", 32 * KIB))
        .await;
    all_until(&mut tabs, "the final state", |t| t.is_final(&import.id)).await;

    c.redis_away().await;
    let (status, body) = c.apis[0]
        .delete(&c.token("alice"), &format!("/api/imports/{}", import.id))
        .await;
    assert_eq!(status, 204, "{body}");
    tabs[0]
        .until("the delete on the node that made it", |t| {
            t.removed.contains_key(&import.id)
        })
        .await;
    tabs[1].catch_up().await;
    assert!(
        tabs[1].latest.contains_key(&import.id),
        "nothing can cross while Redis is away"
    );

    c.redis_back().await;
    tabs[1]
        .until("the delete on the other node", |t| {
            t.removed.contains_key(&import.id)
        })
        .await;
    assert!(!tabs[1].latest.contains_key(&import.id));
}

/// A resync whose snapshot cannot be read (the node's database link is
/// down when its Redis bus comes back) leaves the socket open: it gets
/// every change from then on, and the resync is tried again until it
/// succeeds. It used to close the socket 1011, sending every client of the
/// node to reconnect into the same failing database (the storms in
/// docs/benchmarks.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_that_cannot_read_the_database_keeps_the_socket_and_tries_again() {
    let mut c = cluster(1).await;
    // A second node that reaches PostgreSQL through a link the test cuts.
    let link = c.add_node_behind_link(&[]).await;

    let mut tab = c.tab(1, "alice").await;
    let import = c
        .create(0, "alice", &c.content.video_url("resync-kept", 32 * KIB))
        .await;
    tab.until("the final state", |t| t.is_final(&import.id))
        .await;

    c.redis_away().await;
    link.set(LinkMode::Cut);
    c.redis_back().await;
    assert!(
        c.nodes[1]
            .wait_for_log("snapshot failed", WAIT)
            .await
            .is_some(),
        "the resync never tried the database; log:\n{}",
        c.nodes[1].log()
    );
    // A change made meanwhile on the healthy node still reaches the tab,
    // over the bus, on the same socket.
    let (status, body) = c.apis[0]
        .delete(&c.token("alice"), &format!("/api/imports/{}", import.id))
        .await;
    assert_eq!(status, 204, "{body}");
    tab.until("the delete, live", |t| t.removed.contains_key(&import.id))
        .await;

    link.set(LinkMode::Pass);
    tab.until("the resync snapshot, once the database is back", |t| {
        t.snapshots >= 2
    })
    .await;
    assert_eq!(tab.connections, 1, "the socket was closed and reopened");
    assert!(!tab.latest.contains_key(&import.id));
}

/// A reconnect storm must not queue behind the database past the pool's
/// timeout (docs/benchmarks.md, "Reconnect storms"): on a node whose
/// connect slots (`REELTIME_CONNECT_SLOTS`) are all waiting on the
/// database, the next connect is refused with 1013 `server busy` once it
/// has waited `REELTIME_CONNECT_WAIT_MS`, while the waiting ones keep their
/// sockets and get in once the database answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_with_no_database_slot_is_refused_busy_and_the_waiting_ones_get_in() {
    let mut c = cluster(1).await;
    let link = c
        .add_node_behind_link(&[
            ("REELTIME_CONNECT_SLOTS", "2"),
            ("REELTIME_CONNECT_WAIT_MS", "300"),
        ])
        .await;
    let ws = c.nodes[1].ws();
    link.set(LinkMode::Blackhole);

    // Three connects at once: two take the slots and wait on the silent
    // database, the third waits for a slot and is refused. Which one is
    // refused depends on who verifies first.
    let (events, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    for user in ["busy-a", "busy-b", "busy-c"] {
        let mut client = WsClient::connect_query(&ws, &c.token(user)).await;
        let events = events.clone();
        tokio::spawn(async move {
            for _ in 0..2 {
                let event = client.next().await;
                let closed = matches!(event, Event::Closed { .. } | Event::Dropped);
                let _ = events.send((user, event));
                if closed {
                    break;
                }
            }
        });
    }
    drop(events);
    let (refused, event) = arrived.recv().await.expect("an event");
    assert!(
        matches!(&event, Event::Closed { code: 1013, reason } if reason == "server busy"),
        "{refused} got {event:?} while the database was silent"
    );

    link.set(LinkMode::Pass);
    let mut got_in: HashMap<&str, Vec<Event>> = HashMap::new();
    for _ in 0..4 {
        let (user, event) = arrived.recv().await.expect("an event");
        got_in.entry(user).or_default().push(event);
    }
    assert!(!got_in.contains_key(refused), "{got_in:?}");
    assert_eq!(got_in.len(), 2, "{got_in:?}");
    for (user, events) in &got_in {
        assert!(
            matches!(
                events.as_slice(),
                [
                    Event::Message(ServerMessage::Ready { .. }),
                    Event::Message(ServerMessage::Snapshot { .. })
                ]
            ),
            "{user}: {events:?}"
        );
    }
    let metrics = reqwest::get(format!("{}/metrics", c.nodes[1].http()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    assert!(
        metrics.contains(r#"reeltime_connections_refused_total{reason="server busy"} 1"#),
        "{metrics}"
    );
}

/// Settings of the job tests: downloads only (the bodies are not real
/// videos, and a download is all a job needs to be claimed, leased,
/// interrupted and resumed), plus each test's own (the lease length).
fn job_settings<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut settings = vec![("REELTIME_MEDIA_PROCESSING", "off")];
    settings.extend_from_slice(extra);
    settings
}

/// [`Tab::until`] for every tab.
async fn all_until(tabs: &mut [Tab], what: &str, mut done: impl FnMut(&Tab) -> bool) {
    for tab in tabs {
        tab.until(what, &mut done).await;
    }
}

/// A download of `name` that sends its first `hold_after` bytes and then
/// waits until the content server releases `name`.
fn held_url(c: &Cluster, name: &str, hold_after: usize) -> String {
    c.content.hold(name);
    c.content.url(&format!(
        "/video/{name}?size={}&hold_after={hold_after}",
        256 * KIB
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_import_is_replaced_and_every_client_ends_at_the_final_state() {
    let lease = Duration::from_secs(3);
    let mut c = cluster_with(3, &job_settings(&[("REELTIME_JOB_LEASE_SECS", "3")])).await;
    let mut tabs = Vec::new();
    for node in 0..3 {
        tabs.push(c.tab(node, "alice").await);
    }
    let hold_after = 64 * KIB;
    let url = held_url(&c, "crash", hold_after);
    let created = c.create(0, "alice", &url).await;
    let id = created.id.clone();

    // Mid-import: the first bytes are in, the rest is held.
    let victim = c.stalled_mid_file("crash", hold_after).await;
    all_until(&mut tabs, "the download's first bytes", |t| {
        t.latest.get(&id).is_some_and(|i| {
            i.status == ImportStatus::Downloading && i.bytes_done > 0 && i.attempt == 1
        })
    })
    .await;

    let killed_at = Instant::now();
    c.nodes[victim].kill().await;
    // Its download dies with it...
    c.content
        .wait_for_fetches("the killed node's download to end", WAIT, |fetches| {
            fetches[0].ended.is_some()
        })
        .await;
    // ...and so do its sockets, without a close frame. The client comes
    // back on another node, as a browser would through a load balancer.
    let survivor = (victim + 1) % 3;
    let orphan = &mut tabs[victim];
    assert_eq!(orphan.until_gone().await, 1006);
    orphan.connect(&c, &c.nodes[survivor].ws()).await;
    assert_eq!(orphan.node, survivor);

    // Once the lease runs out, another node claims the import and fetches
    // it again (attempt 2).
    let second = c.taken_over("crash", WAIT * 2).await;
    let taker = c.node_of(&second);
    assert_ne!(taker, victim, "a live node took the import over");
    let takeover = second.started.duration_since(killed_at);
    assert!(
        takeover < lease + Duration::from_secs(20),
        "taken over {takeover:?} after the kill"
    );
    c.content.release("crash");

    all_until(&mut tabs, "the final state", |t| t.is_final(&id)).await;
    let stored = c.rest("alice", &id).await;
    assert_eq!(stored.status, ImportStatus::Completed, "{stored:?}");
    assert_eq!(stored.attempt, 2, "resumed once, on another node");
    assert_eq!(stored.bytes_done, 256 * KIB as u64);
    for tab in &tabs {
        let seen = &tab.latest[&id];
        assert_eq!(
            (seen.version, seen.status, seen.attempt),
            (stored.version, stored.status, stored.attempt),
            "tab of {} on node {} ends at the stored final state",
            tab.user,
            tab.node
        );
    }
    let fetches = c.content.fetches_of("crash");
    assert_eq!(fetches.len(), 2, "fetched once per attempt: {fetches:#?}");
    assert!(fetches[1].complete);
    assert_eq!(max_overlap(&fetches), 1, "never fetched twice at once");
    eprintln!(
        "kill -9 of node {victim}: node {taker} fetched again {takeover:?} after the kill (lease {lease:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_a_node_behind_nginx_moves_its_clients_and_its_job_at_once() {
    // A lease far longer than the test may take: the job must move because
    // the drained node hands it back, not because its lease ran out.
    let mut c = cluster_with(3, &job_settings(&[("REELTIME_JOB_LEASE_SECS", "60")])).await;
    let upstreams: Vec<String> = c.nodes.iter().map(|node| node.addr.clone()).collect();
    let nginx = Nginx::start(&upstreams).await;
    let balanced = Api::new(&nginx.http());

    // Tabs through nginx: round-robin spreads them over the nodes.
    let mut tabs = Vec::new();
    for _ in 0..6 {
        tabs.push(c.tab_via(&nginx.ws(), "alice").await);
    }
    let hold_after = 64 * KIB;
    let url = held_url(&c, "drain", hold_after);
    let created = balanced.create_ok(&c.token("alice"), &url).await;
    let id = created.id.clone();
    let drained = c.stalled_mid_file("drain", hold_after).await;
    // The drained node must hold some of the clients.
    while !tabs.iter().any(|tab| tab.node == drained) {
        assert!(
            tabs.len() < 20,
            "nginx never sent a socket to node {drained}"
        );
        tabs.push(c.tab_via(&nginx.ws(), "alice").await);
    }
    all_until(&mut tabs, "the download's first bytes", |t| {
        t.latest
            .get(&id)
            .is_some_and(|i| i.status == ImportStatus::Downloading && i.bytes_done > 0)
    })
    .await;
    let moved = tabs.iter().filter(|tab| tab.node == drained).count();

    let drained_at = Instant::now();
    c.nodes[drained].terminate();
    // Its clients are told to go (1001) and come back through nginx, on
    // another node.
    for tab in tabs.iter_mut().filter(|tab| tab.node == drained) {
        assert_eq!(tab.until_gone().await, 1001, "drain closes with 1001");
        tab.connect(&c, &nginx.ws()).await;
        assert_ne!(tab.node, drained, "nginx sent the client to a live node");
    }
    // The job is handed back at once: another node fetches it again, long
    // before the 60 s lease would have run out.
    let second = c.taken_over("drain", WAIT).await;
    let taker = c.node_of(&second);
    assert_ne!(taker, drained);
    let takeover = second.started.duration_since(drained_at);
    c.content.release("drain");

    all_until(&mut tabs, "the final state", |t| t.is_final(&id)).await;
    let completed_in = drained_at.elapsed();
    assert!(
        completed_in < Duration::from_secs(20),
        "the import completed {completed_in:?} after the drain began (lease 60 s)"
    );
    assert_eq!(c.nodes[drained].stop().await, Some(0), "drained cleanly");
    let stored = c.rest("alice", &id).await;
    assert_eq!(stored.status, ImportStatus::Completed, "{stored:?}");
    assert_eq!(stored.attempt, 2, "resumed once, on another node");
    for tab in &tabs {
        let seen = &tab.latest[&id];
        assert_eq!(
            (seen.version, seen.status),
            (stored.version, stored.status),
            "tab of {} on node {} ends at the stored final state",
            tab.user,
            tab.node
        );
    }
    let fetches = c.content.fetches_of("drain");
    assert_eq!(fetches.len(), 2, "fetched once per attempt: {fetches:#?}");
    assert_eq!(max_overlap(&fetches), 1, "never fetched twice at once");
    eprintln!(
        "drain of node {drained}: {moved} sockets moved; node {taker} fetched again {takeover:?} after SIGTERM; completed after {completed_in:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_spread_over_the_nodes_and_none_runs_twice_at_once() {
    let lease = Duration::from_secs(3);
    let c = cluster_with(
        3,
        &job_settings(&[
            ("REELTIME_JOB_LEASE_SECS", "3"),
            ("REELTIME_DOWNLOAD_CONCURRENCY", "2"),
        ]),
    )
    .await;
    let mut watcher = c.tab(0, "alice").await;
    let hold_after = 32 * KIB;
    let names: Vec<String> = (0..6).map(|n| format!("spread{n}")).collect();
    let mut ids: HashMap<String, String> = HashMap::new();
    for (n, name) in names.iter().enumerate() {
        let url = held_url(&c, name, hold_after);
        let import = c.create(n % 3, "alice", &url).await;
        ids.insert(name.clone(), import.id);
    }

    // Six held downloads at once with two slots per node: all three nodes
    // are running some.
    let fetches = c
        .content
        .wait_for_fetches("six downloads held at once", WAIT * 2, |fetches| {
            fetches
                .iter()
                .filter(|f| f.active() && f.bytes_sent >= hold_after)
                .count()
                >= 6
        })
        .await;
    let mut per_node: HashMap<usize, Vec<&Fetch>> = HashMap::new();
    for fetch in &fetches {
        per_node.entry(c.node_of(fetch)).or_default().push(fetch);
    }
    assert!(
        per_node.len() >= 2,
        "downloads on {} node(s)",
        per_node.len()
    );
    for (node, running) in &per_node {
        assert!(
            max_overlap(running.iter().copied()) <= 2,
            "node {node} ran more than its 2 download slots: {running:#?}"
        );
    }
    for name in &names {
        assert_eq!(c.content.fetches_of(name).len(), 1, "{name} fetched once");
    }

    // The store agrees: each import is leased to the node downloading it.
    // Hold on until every lease has outlived its first term through
    // renewals; nothing may be claimed a second time meanwhile.
    let db = sqlx::PgPool::connect(&c.database).await.expect("database");
    let leases = || async {
        let rows: Vec<(
            String,
            Option<String>,
            Option<chrono::DateTime<chrono::Utc>>,
        )> = sqlx::query_as("SELECT id, lease_owner, lease_until FROM imports")
            .fetch_all(&db)
            .await
            .expect("leases");
        rows.into_iter()
            .map(|(id, owner, until)| (id, (owner, until)))
            .collect::<HashMap<_, _>>()
    };
    let first = leases().await;
    for fetch in &fetches {
        let id = &ids[&fetch.name];
        assert_eq!(
            first[id].0.as_deref(),
            fetch.node(),
            "{} is leased to the node downloading it",
            fetch.name
        );
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let now = leases().await;
        let renewed = ids.values().all(|id| {
            let (Some(was), Some(is)) = (first[id].1, now[id].1) else {
                return false;
            };
            is > was + chrono::Duration::from_std(lease).expect("lease")
        });
        for id in ids.values() {
            assert_eq!(now[id].0, first[id].0, "a lease changed hands");
        }
        if renewed {
            break;
        }
        assert!(Instant::now() < deadline, "leases not renewed: {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        c.content.fetches().len(),
        6,
        "no import was fetched again while its lease was renewed"
    );

    for name in &names {
        c.content.release(name);
    }
    watcher
        .until("every import to finish", |t| {
            ids.values().all(|id| t.is_final(id))
        })
        .await;
    for name in &names {
        let import = &watcher.latest[&ids[name]];
        assert_eq!(import.status, ImportStatus::Completed, "{import:?}");
        assert_eq!(import.attempt, 1, "{name} ran once");
    }
    let fetches = c.content.fetches();
    for name in &names {
        let of_name: Vec<&Fetch> = fetches.iter().filter(|f| &f.name == name).collect();
        assert_eq!(of_name.len(), 1, "{name} fetched exactly once");
        assert!(of_name[0].complete, "{name} fetched in full");
    }
    let mut per_node: HashMap<usize, Vec<&Fetch>> = HashMap::new();
    for fetch in &fetches {
        per_node.entry(c.node_of(fetch)).or_default().push(fetch);
    }
    for (node, all) in &per_node {
        assert!(
            max_overlap(all.iter().copied()) <= 2,
            "node {node} ran more than 2 downloads at once"
        );
    }
    let spread: Vec<usize> = (0..3)
        .map(|n| per_node.get(&n).map_or(0, Vec::len))
        .collect();
    eprintln!("downloads per node: {spread:?}");
}

/// A node's lease on import `id`: owner, end, and whether the end has
/// passed by the database's clock.
async fn lease_of(
    db: &sqlx::PgPool,
    id: &str,
) -> (Option<String>, Option<chrono::DateTime<chrono::Utc>>, bool) {
    sqlx::query_as(
        "SELECT lease_owner, lease_until, COALESCE(lease_until < now(), true) FROM imports WHERE id = $1",
    )
    .bind(id)
    .fetch_one(db)
    .await
    .expect("lease")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_past_its_lease_loses_the_import_and_stops_its_copy() {
    let c = cluster_with(3, &job_settings(&[("REELTIME_JOB_LEASE_SECS", "3")])).await;
    let mut tabs = Vec::new();
    for node in 0..3 {
        tabs.push(c.tab(node, "alice").await);
    }
    let hold_after = 64 * KIB;
    let url = held_url(&c, "pause", hold_after);
    let id = c.create(0, "alice", &url).await.id;
    let paused = c.stalled_mid_file("pause", hold_after).await;
    all_until(&mut tabs, "the download's first bytes", |t| {
        t.latest.get(&id).is_some_and(|i| i.bytes_done > 0)
    })
    .await;

    // The node stops dead (a long pause, an overloaded VM): its lease runs
    // out and another node takes the import over.
    c.nodes[paused].signal("STOP");
    let second = c.taken_over("pause", WAIT * 2).await;
    let taker = c.node_of(&second);
    assert_ne!(taker, paused);
    tabs[taker]
        .until("attempt 2 on the node that took over", |t| {
            t.latest.get(&id).is_some_and(|i| i.attempt == 2)
        })
        .await;

    // Back from the pause, the node finds at its next renewal that the
    // lease is gone and stops its copy of the job.
    c.nodes[paused].signal("CONT");
    c.content
        .wait_for_fetches("the paused node's download to stop", WAIT, |f| {
            f[0].ended.is_some()
        })
        .await;
    assert!(
        c.nodes[paused]
            .wait_for_log("lease lost; stopping the job here", WAIT)
            .await
            .is_some(),
        "log:\n{}",
        c.nodes[paused].log()
    );
    assert!(
        c.content.fetches_of("pause")[1].active(),
        "the new owner's download goes on"
    );
    c.content.release("pause");

    all_until(&mut tabs, "the final state", |t| t.is_final(&id)).await;
    let stored = c.rest("alice", &id).await;
    assert_eq!(stored.status, ImportStatus::Completed, "{stored:?}");
    assert_eq!(stored.attempt, 2);
    for tab in &tabs {
        assert_eq!(
            tab.latest[&id].version, stored.version,
            "tab on node {} ends at the stored final state",
            tab.node
        );
    }
    let fetches = c.content.fetches_of("pause");
    assert_eq!(fetches.len(), 2, "{fetches:#?}");
    assert!(!fetches[0].complete && fetches[1].complete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_past_its_lease_with_no_one_to_take_over_runs_the_import_once() {
    let c = cluster_with(1, &job_settings(&[("REELTIME_JOB_LEASE_SECS", "3")])).await;
    let mut tab = c.tab(0, "alice").await;
    let hold_after = 64 * KIB;
    let url = held_url(&c, "alone", hold_after);
    let id = c.create(0, "alice", &url).await.id;
    c.stalled_mid_file("alone", hold_after).await;
    tab.until("the download's first bytes", |t| {
        t.latest.get(&id).is_some_and(|i| i.bytes_done > 0)
    })
    .await;

    // Paused until its lease has run out, by the database's clock.
    let db = sqlx::PgPool::connect(&c.database).await.expect("database");
    c.nodes[0].signal("STOP");
    let deadline = Instant::now() + WAIT;
    while !lease_of(&db, &id).await.2 {
        assert!(Instant::now() < deadline, "the lease did not run out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.nodes[0].signal("CONT");

    // Resumed, the node holds the import again (its next claim round finds
    // the lease free, or its renewal extends it); watch three lease ends
    // go by, so claim rounds and renewals have run.
    let mut ends = HashSet::new();
    let deadline = Instant::now() + WAIT;
    while ends.len() < 3 {
        let (owner, until, expired) = lease_of(&db, &id).await;
        if !expired {
            assert_eq!(owner.as_deref(), Some(c.node_ids[0].as_str()));
            ends.insert(until);
        }
        assert!(Instant::now() < deadline, "the lease was not renewed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        c.content.fetches_of("alone").len(),
        1,
        "the node did not start the import a second time beside the running job"
    );
    c.content.release("alone");
    tab.until("the final state", |t| t.is_final(&id)).await;
    let stored = c.rest("alice", &id).await;
    assert_eq!(stored.status, ImportStatus::Completed, "{stored:?}");
    assert_eq!(stored.attempt, 1, "{stored:?}");
    assert_eq!(tab.latest[&id].version, stored.version);
    let fetches = c.content.fetches_of("alone");
    assert_eq!(fetches.len(), 1, "{fetches:#?}");
    assert!(fetches[0].complete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_processed_on_one_node_is_served_by_every_node_from_s3() {
    let s3 = reeltime_testkit::services::S3Server::start().await;
    let media_url = s3.media_url("media");
    let mut extra: Vec<(String, String)> = s3.env();
    extra.extend(common::pairs(&[
        ("REELTIME_MEDIA_PROCESSING", "auto"),
        ("REELTIME_MEDIA_URL", &media_url),
        (
            "REELTIME_MEDIA_SECRET",
            "one-secret-shared-by-every-node-0123456789",
        ),
    ]));
    let extra: Vec<(&str, &str)> = extra
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let c = cluster_with(2, &extra).await;

    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("web.mp4");
    let codecs = [
        common::media::H264_AAC,
        &["-movflags", "+faststart", "-shortest"],
    ]
    .concat();
    common::media::make_video(&video, "320x240", 2, true, &codecs).await;
    let bytes = std::fs::read(&video).unwrap();
    let url = c.content.put_file("web.mp4", bytes.clone());

    let mut watcher = c.tab(1, "alice").await;
    let created = c.create(0, "alice", &url).await;
    watcher
        .until("the import to finish", |tab| tab.is_final(&created.id))
        .await;
    let done = c.rest("alice", &created.id).await;
    assert_eq!(done.status, ImportStatus::Completed, "{:?}", done.error);
    let result = done.result.as_ref().unwrap();
    let video_url = result["video_url"].as_str().unwrap().to_string();
    let thumbnail_url = result["thumbnail_url"].as_str().unwrap().to_string();

    // Whichever node ran it, every node serves the same bytes from S3, and
    // no node keeps a local copy.
    for node in &c.nodes {
        let body = reqwest::get(format!("{}{video_url}", node.http()))
            .await
            .unwrap();
        assert_eq!(body.status(), 200);
        assert_eq!(body.bytes().await.unwrap().as_ref(), bytes.as_slice());
        let poster = reqwest::get(format!("{}{thumbnail_url}", node.http()))
            .await
            .unwrap();
        assert_eq!(poster.headers()["content-type"], "image/jpeg");
        let local = node.import_dir(&created.id);
        let kept: Vec<_> = std::fs::read_dir(&local)
            .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            !kept
                .iter()
                .any(|name| name == "poster.jpg" || name == "source.mp4"),
            "local copies left on a node: {kept:?}"
        );
    }
    // Deleting through one node removes it from S3 for all.
    let (status, _) = c.apis[1]
        .delete(&c.token("alice"), &format!("/api/imports/{}", created.id))
        .await;
    assert_eq!(status, 204);
    let gone = reqwest::get(format!("{}{video_url}", c.nodes[0].http()))
        .await
        .unwrap();
    assert_eq!(gone.status(), 403);
}
