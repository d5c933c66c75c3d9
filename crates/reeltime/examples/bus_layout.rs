//! Measures the two channel layouts the Redis bus could use, on this
//! machine, for `docs/architecture.md` ("Channel layout: measured"). Run
//! with `scripts/bench bus-layout`, or
//! `cargo run --release -p reeltime --example bus_layout`.
//!
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
use reeltime::bus::redis::{all_channels, channel_of, decode, encode};
use reeltime::events::{Deliver, ImportEvent};
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
                    hub.register(
                        hub.reserve().expect("a place"),
                        &user(n),
                        Arc::clone(&outbox),
                    )
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
                    published_us: 0,
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

async fn run() {
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    run().await;
}
