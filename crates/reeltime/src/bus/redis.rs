//! The bus between nodes: Redis pub/sub, selected by `REELTIME_REDIS_URL`.
//!
//! Layout: a fixed set of [`SHARDS`] channels, `reeltime:imports:{shard}`,
//! with `shard = fnv1a(user_id) % SHARDS`, and every node subscribed to all
//! of them for its whole life. Each node hands what it receives to its own
//! [`Deliver`] (the hub), which already drops changes of users with no
//! socket here. This
//! was chosen over one channel per user by measuring (numbers in
//! `docs/architecture.md`): at the sizes a node holds, Redis fans out a
//! message to every node in microseconds, while per-user subscriptions cost
//! a SUBSCRIBE round trip on every first connect of a user (and one
//! UNSUBSCRIBE on the last disconnect), tens of thousands of channels to
//! replay after every reconnect, and would have to finish before a session
//! reads its snapshot, or a change could fall between the two. Always being
//! subscribed makes "register, then read the snapshot" hold across nodes
//! exactly as it does on one.
//!
//! Wire format of one message: a JSON header line
//! `{"node","user_id","import_id","version","is_final"}`, a `\n`, then the
//! event's ready-to-send `{"type":"import",...}` bytes unchanged, so a
//! receiving node parses only the small header and forwards the payload
//! without re-serializing it.
//!
//! Failures:
//! - The publishing node delivers to its own sockets at once and ignores its own
//!   messages coming back, so its local sockets keep their updates even
//!   while Redis is away.
//! - A publish that fails (Redis down) does not fail the caller: the store
//!   already has the state. The bus keeps the newest unpublished event of
//!   each import and publishes those once Redis answers again, so a change
//!   made during the outage reaches the other nodes even when they
//!   resubscribed (and resynced) before this node noticed Redis was back.
//! - That memory dies with the node. So a held change the store already
//!   has ([`Bus::publish`], not a tick from memory,
//!   [`Bus::publish_unstored`]) is also *noted* in the shared store
//!   ([`HeldNotes`]: a row per import, its newest held stored version,
//!   under a lease of `REELTIME_JOB_LEASE_SECS`). The retry loop renews
//!   this node's notes every third of the lease while it holds anything,
//!   and clears a note when its import's held event went out (only notes
//!   at or below the version sent). Every node whose bus works sweeps every
//!   third of the lease ([`RedisBus::keep_notes`]): it claims the notes
//!   whose lease ran out (their node died, or lost the database too),
//!   publishes each import's *stored* state, here and to the others, and
//!   clears them. Republishing stored state is always safe: sessions drop
//!   what is not newer. Nothing of this runs while Redis answers: a
//!   publish that goes out touches no database. A note written late (its
//!   event already sent) or not cleared only costs one more publish of the
//!   stored state after the lease. Not covered: a node that dies between
//!   storing a change and noting it (the first change of an outage waits
//!   for its PUBLISH to fail, up to the command timeout), and a note the
//!   database refused for the whole outage (logged).
//! - When the subscription is lost (connection closed, or a PING unanswered)
//!   the node reconnects with backoff, resubscribes, and then asks every
//!   local connection for a fresh snapshot ([`Deliver::resync_all`]): what was
//!   published while it was cut off is in the store.
//!
//! Per-import order: one node's publishes go out over one connection in the
//! order made, Redis keeps per-publisher order, and sessions drop anything
//! not newer than what they already sent, so a late or repeated event is
//! harmless.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Bus, BusError};
use crate::events::{BusNote, Control, Deliver, HeldNotes, ImportEvent};

/// Number of channels. Every node subscribes to all of them, so the count
/// only spreads the channels (over a Redis Cluster's shards, for one); all
/// nodes must agree on it and on [`shard_of`].
pub const SHARDS: u32 = 16;

/// Channel names are this plus the shard number.
pub const CHANNEL_PREFIX: &str = "reeltime:imports:";

/// The channel of [`Control`] orders (every node, every order), beside the
/// import shards; a message is `{"node":..,"control":{..}}`.
pub const CONTROL_CHANNEL: &str = "reeltime:control";

/// Connecting, subscribing and one PUBLISH each give up after this.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `/readyz` waits for Redis to answer its PING.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the subscription is checked with a PING: a dead peer that
/// never closed the TCP connection is noticed within this plus the timeout.
const PING_EVERY: Duration = Duration::from_secs(5);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// While Redis is away, how often the held events are tried again.
const RETRY_EVERY: Duration = Duration::from_millis(250);
/// Most imports whose newest event is held while Redis is away. Beyond
/// this, events are dropped (and counted); their sockets catch up from the
/// resync snapshot or the next change.
const MAX_HELD: usize = 100_000;
/// Most orphaned notes one sweep claims at a time (it claims again while
/// it finds this many).
const SWEEP_BATCH: usize = 100;
/// Shortest pause between two sweeps, whatever the lease.
const SWEEP_MIN: Duration = Duration::from_millis(500);

/// Stable across processes and builds (unlike `DefaultHasher`), since every
/// node must put a user on the same channel.
fn fnv1a(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The shard (channel number) of a user.
pub fn shard_of(user_id: &str) -> u32 {
    u32::try_from(fnv1a(user_id) % u64::from(SHARDS)).unwrap_or(0)
}

/// The channel a user's changes are published on.
pub fn channel_of(user_id: &str) -> String {
    format!("{CHANNEL_PREFIX}{}", shard_of(user_id))
}

/// Every channel, what each node subscribes to.
pub fn all_channels() -> Vec<String> {
    (0..SHARDS)
        .map(|shard| format!("{CHANNEL_PREFIX}{shard}"))
        .collect()
}

/// One message of [`CONTROL_CHANNEL`].
#[derive(Serialize, Deserialize)]
struct ControlFrame {
    node: String,
    control: Control,
}

#[derive(Serialize)]
struct HeaderOut<'a> {
    node: &'a str,
    user_id: &'a str,
    import_id: &'a str,
    version: u64,
    is_final: bool,
    /// [`ImportEvent::published_us`].
    at: u64,
}

#[derive(Deserialize)]
struct HeaderIn {
    node: String,
    user_id: String,
    import_id: String,
    version: u64,
    is_final: bool,
    /// Absent from a node of an older version: the lag then starts here.
    #[serde(default)]
    at: Option<u64>,
}

/// Why a received message was not an event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("no header line")]
    NoHeader,
    #[error("bad header: {0}")]
    Header(#[from] serde_json::Error),
    #[error("payload is not UTF-8")]
    NotUtf8,
}

/// Serializes `event` as published by node `node` (see the module docs).
pub fn encode(node: &str, event: &ImportEvent) -> Result<Vec<u8>, serde_json::Error> {
    let header = HeaderOut {
        node,
        user_id: &event.user_id,
        import_id: &event.import_id,
        version: event.version,
        is_final: event.is_final,
        at: event.published_us,
    };
    let mut frame = Vec::with_capacity(96 + event.payload.len());
    serde_json::to_writer(&mut frame, &header)?;
    frame.push(b'\n');
    frame.extend_from_slice(event.payload.as_bytes());
    Ok(frame)
}

/// Parses a message into the publishing node's id and the event.
pub fn decode(frame: &[u8]) -> Result<(String, Arc<ImportEvent>), DecodeError> {
    let split = frame
        .iter()
        .position(|byte| *byte == b'\n')
        .ok_or(DecodeError::NoHeader)?;
    let header: HeaderIn = serde_json::from_slice(&frame[..split])?;
    let payload =
        String::from_utf8(frame[split + 1..].to_vec()).map_err(|_| DecodeError::NotUtf8)?;
    Ok((
        header.node,
        Arc::new(ImportEvent {
            user_id: header.user_id,
            import_id: header.import_id,
            version: header.version,
            is_final: header.is_final,
            payload: Utf8Bytes::from(payload),
            published_us: header.at.unwrap_or_else(crate::metrics::unix_micros),
        }),
    ))
}

/// Publishing side's memory of an outage.
#[derive(Default)]
struct Held {
    /// True from a failed publish until everything held went out again.
    down: bool,
    /// Newest unpublished event per import.
    events: HashMap<String, Arc<ImportEvent>>,
    /// Imports that may have a note of this node in the store (one was
    /// written, or is being written): their notes are cleared when their
    /// held event goes out.
    noted: HashSet<String>,
    /// Notes the store refused (the database was away too), newest
    /// version per import: written again by the retry loop.
    unnoted: HashMap<String, BusNote>,
}

impl Held {
    /// Remembers a note that could not be written, keeping the newest
    /// version per import.
    fn unnoted(&mut self, note: BusNote) {
        match self.unnoted.get_mut(&note.import_id) {
            Some(kept) if kept.version >= note.version => {}
            _ => {
                self.unnoted.insert(note.import_id.clone(), note);
            }
        }
    }

    /// `sent` went out: the notes they cover are to be cleared (returned)
    /// and no longer to be written.
    fn published(&mut self, sent: &[Arc<ImportEvent>]) -> Vec<BusNote> {
        let mut clear = Vec::new();
        for event in sent {
            if self
                .unnoted
                .get(&event.import_id)
                .is_some_and(|note| note.version <= event.version)
            {
                self.unnoted.remove(&event.import_id);
            }
            if self.noted.remove(&event.import_id) {
                clear.push(note_of(event));
            }
        }
        clear
    }

    fn keep(&mut self, event: Arc<ImportEvent>, dropped: &AtomicU64) {
        let full = self.events.len() >= MAX_HELD;
        match self.events.get_mut(&event.import_id) {
            Some(held) => {
                if event.version > held.version {
                    *held = event;
                }
            }
            None if full => {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                self.events.insert(event.import_id.clone(), event);
            }
        }
    }
}

/// The note of `event`: its import, at its version.
fn note_of(event: &ImportEvent) -> BusNote {
    BusNote {
        import_id: event.import_id.clone(),
        user_id: event.user_id.clone(),
        version: event.version,
    }
}

/// Counters for logs and tests.
#[derive(Default)]
pub struct RedisBusStats {
    /// Successful (re)subscriptions; every one after the first is a resync.
    pub subscriptions: AtomicU64,
    /// Events received from other nodes and handed to this node's sockets.
    pub received: AtomicU64,
    /// Events held back while Redis was away and published later.
    pub republished: AtomicU64,
    /// Events dropped because too many were held.
    pub dropped: AtomicU64,
    /// Held stored changes noted in the store.
    pub noted: AtomicU64,
    /// Changes other nodes held when they stopped, published here from
    /// the store (their notes' leases ran out).
    pub swept: AtomicU64,
    /// Whether the subscription is up now (`/readyz` reads it).
    pub subscribed: AtomicBool,
}

/// Redis pub/sub behind the [`Bus`] trait.
pub struct RedisBus {
    node: String,
    /// This node's sockets (the hub): what is received, and what is
    /// published here, goes there.
    local: Arc<dyn Deliver>,
    publisher: ConnectionManager,
    held: Mutex<Held>,
    retry: Notify,
    /// Where held stored changes are noted durably, once the imports
    /// service exists ([`RedisBus::keep_notes`]); unset on a store only
    /// one node uses.
    notes: OnceLock<Arc<dyn HeldNotes>>,
    /// What the bus did, for logs and tests: an outage shows up here.
    pub stats: RedisBusStats,
}

impl RedisBus {
    /// Sets up the bus and starts its subscriber and retry tasks. Does not
    /// wait for Redis: a node whose Redis is down at start serves anyway
    /// (its own sockets get its own changes) and joins the others when
    /// Redis answers. Only a malformed URL is an error.
    pub fn start(
        url: &str,
        node: &str,
        local: Arc<dyn Deliver>,
        shutdown: CancellationToken,
    ) -> Result<Arc<RedisBus>, BusError> {
        let client = ::redis::Client::open(url)
            .map_err(|err| BusError::Unavailable(format!("bad Redis URL: {err}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(BACKOFF_MAX);
        let publisher = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|err| BusError::Unavailable(err.to_string()))?;
        let bus = Arc::new(RedisBus {
            node: node.to_string(),
            local,
            publisher,
            held: Mutex::new(Held::default()),
            retry: Notify::new(),
            notes: OnceLock::new(),
            stats: RedisBusStats::default(),
        });
        tokio::spawn(Arc::clone(&bus).subscribe_loop(client, shutdown));
        tokio::spawn(Arc::clone(&bus).retry_loop());
        Ok(bus)
    }

    /// From now on, notes every stored change it holds in `notes` and
    /// sweeps the notes other nodes left behind (the module docs). Called
    /// once, when the imports service is built (it needs the bus first).
    pub fn keep_notes(self: &Arc<Self>, notes: Arc<dyn HeldNotes>, shutdown: CancellationToken) {
        if self.notes.set(Arc::clone(&notes)).is_ok() {
            tokio::spawn(Arc::clone(self).sweep_loop(notes, shutdown));
        }
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        match self.held.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    async fn send(&self, event: &ImportEvent) -> Result<(), String> {
        let frame = encode(&self.node, event).map_err(|err| err.to_string())?;
        let mut connection = self.publisher.clone();
        let mut command = ::redis::cmd("PUBLISH");
        command.arg(channel_of(&event.user_id)).arg(frame);
        let publish = command.query_async::<i64>(&mut connection);
        match tokio::time::timeout(COMMAND_TIMEOUT, publish).await {
            Ok(Ok(_receivers)) => Ok(()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    /// Publishes what was held during an outage, until all of it went out;
    /// then clears `down` (under the lock, so nothing held is stranded).
    ///
    /// Meanwhile it keeps this node's notes alive: writes those the store
    /// refused, and renews them every third of their lease, so that no
    /// other node sweeps a change this node still holds.
    async fn retry_loop(self: Arc<Self>) {
        loop {
            self.retry.notified().await;
            let mut renewed = Instant::now();
            loop {
                tokio::time::sleep(RETRY_EVERY).await;
                let (batch, unnoted): (Vec<Arc<ImportEvent>>, Vec<BusNote>) = {
                    let mut held = self.held();
                    if !held.down {
                        break;
                    }
                    (
                        held.events.drain().map(|(_, event)| event).collect(),
                        held.unnoted.drain().map(|(_, note)| note).collect(),
                    )
                };
                if let Some(notes) = self.notes.get() {
                    self.keep_notes_alive(notes.as_ref(), unnoted, &mut renewed)
                        .await;
                }
                let mut failed = None;
                let mut sent = Vec::new();
                for event in batch {
                    if failed.is_none() {
                        match self.send(&event).await {
                            Ok(()) => {
                                self.stats.republished.fetch_add(1, Ordering::Relaxed);
                                sent.push(event);
                                continue;
                            }
                            Err(err) => failed = Some(err),
                        }
                    }
                    self.held().keep(event, &self.stats.dropped);
                }
                let clear = self.held().published(&sent);
                if let Some(notes) = self.notes.get()
                    && !clear.is_empty()
                    && let Err(err) = notes.clear(&clear).await
                {
                    // They run out unrenewed and a sweep publishes the
                    // stored state once more: harmless.
                    tracing::warn!(error = %err, "redis bus: could not clear the notes of changes sent");
                }
                if failed.is_none() {
                    let mut held = self.held();
                    if held.events.is_empty() {
                        held.down = false;
                        // Left: notes of events dropped over MAX_HELD, or
                        // written after their event went out. Unrenewed
                        // from now on, a sweep publishes their import.
                        held.noted.clear();
                        if !held.unnoted.is_empty() {
                            tracing::warn!(
                                notes = held.unnoted.len(),
                                "redis bus: could not note some held changes (database away); they reach other nodes' sockets at their next change or reconnect"
                            );
                            held.unnoted.clear();
                        }
                        tracing::info!(
                            republished = self.stats.republished.load(Ordering::Relaxed),
                            dropped = self.stats.dropped.load(Ordering::Relaxed),
                            "redis bus: publishing again; changes held during the outage sent"
                        );
                        break;
                    }
                }
            }
        }
    }

    /// The retry loop's care of this node's notes during an outage: writes
    /// `unnoted` (given back if the store still refuses), and renews every
    /// note of this node when a third of the lease went by since `renewed`.
    async fn keep_notes_alive(
        &self,
        notes: &dyn HeldNotes,
        unnoted: Vec<BusNote>,
        renewed: &mut Instant,
    ) {
        if !unnoted.is_empty() {
            match notes.hold(&self.node, &unnoted).await {
                Ok(()) => {
                    self.stats
                        .noted
                        .fetch_add(unnoted.len() as u64, Ordering::Relaxed);
                }
                Err(_) => {
                    let mut held = self.held();
                    for note in unnoted {
                        held.unnoted(note);
                    }
                }
            }
        }
        if renewed.elapsed() >= notes.lease() / 3 {
            match notes.renew(&self.node).await {
                Ok(_) => *renewed = Instant::now(),
                Err(err) => {
                    tracing::warn!(error = %err, "redis bus: could not renew the notes of held changes")
                }
            }
        }
    }

    /// Notes durably that this node holds the stored change `event`
    /// unpublished (see the module docs); a note the store refuses is kept
    /// for the retry loop.
    async fn note(&self, event: &ImportEvent) {
        let Some(notes) = self.notes.get() else {
            return;
        };
        let note = note_of(event);
        let first = {
            let mut held = self.held();
            let first = held.noted.is_empty() && held.unnoted.is_empty();
            held.noted.insert(note.import_id.clone());
            first
        };
        match notes.hold(&self.node, std::slice::from_ref(&note)).await {
            Ok(()) => {
                self.stats.noted.fetch_add(1, Ordering::Relaxed);
                if first {
                    tracing::info!(
                        "redis bus: held changes noted in the database; another node publishes them if this one stops first"
                    );
                }
            }
            Err(err) => {
                if first {
                    tracing::warn!(error = %err, "redis bus: could not note a held change; retrying");
                }
                self.held().unnoted(note);
            }
        }
    }

    /// Every third of the notes' lease, while this node can publish:
    /// claims the notes whose holders stopped renewing them (dead, or cut
    /// from the database too), publishes each import's stored state, here
    /// and to the other nodes, and clears the notes.
    async fn sweep_loop(self: Arc<Self>, notes: Arc<dyn HeldNotes>, shutdown: CancellationToken) {
        let mut every = tokio::time::interval((notes.lease() / 3).max(SWEEP_MIN));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            if !self.stats.subscribed.load(Ordering::SeqCst) || self.held().down {
                continue;
            }
            loop {
                let orphans = match notes.orphans(&self.node, SWEEP_BATCH).await {
                    Ok(orphans) => {
                        failing = false;
                        orphans
                    }
                    Err(err) => {
                        if !failing {
                            tracing::warn!(error = %err, "redis bus: could not look for notes other nodes left");
                        }
                        failing = true;
                        break;
                    }
                };
                let claimed = orphans.len();
                if claimed == 0 {
                    break;
                }
                let mut clear = Vec::with_capacity(claimed);
                let mut published = 0usize;
                let mut failed = false;
                for orphan in orphans {
                    let Some(event) = orphan.event else {
                        clear.push(orphan.note);
                        continue;
                    };
                    self.local.deliver(&event);
                    if let Err(err) = self.send(&event).await {
                        // Left claimed: the lease runs out and a sweep
                        // (here or elsewhere) takes them again.
                        tracing::warn!(error = %err, "redis bus: could not publish a change another node held");
                        failed = true;
                        break;
                    }
                    published += 1;
                    clear.push(note_of(&event));
                }
                self.stats
                    .swept
                    .fetch_add(published as u64, Ordering::Relaxed);
                if let Err(err) = notes.clear(&clear).await {
                    tracing::warn!(error = %err, "redis bus: could not clear swept notes");
                }
                tracing::info!(
                    published,
                    "redis bus: published the stored state of changes a stopped node held unpublished"
                );
                if failed || claimed < SWEEP_BATCH {
                    break;
                }
            }
        }
    }

    /// Keeps this node subscribed to every channel for as long as it runs.
    async fn subscribe_loop(self: Arc<Self>, client: ::redis::Client, shutdown: CancellationToken) {
        let mut channels = all_channels();
        channels.push(CONTROL_CHANNEL.to_string());
        let mut backoff = BACKOFF_MIN;
        let mut failures: u32 = 0;
        loop {
            let connected = tokio::select! {
                _ = shutdown.cancelled() => return,
                connected = tokio::time::timeout(COMMAND_TIMEOUT, async {
                    let pubsub = client.get_async_pubsub().await?;
                    let (mut sink, stream) = pubsub.split();
                    sink.subscribe(&channels).await?;
                    Ok::<_, ::redis::RedisError>((sink, stream))
                }) => connected,
            };
            let (mut sink, mut stream) = match connected {
                Ok(Ok(pair)) => pair,
                Ok(Err(err)) => {
                    if failures == 0 {
                        tracing::warn!(error = %err, "redis bus: cannot subscribe; retrying");
                    }
                    failures += 1;
                    backoff = self.pause(backoff, &shutdown).await;
                    continue;
                }
                Err(_) => {
                    if failures == 0 {
                        tracing::warn!("redis bus: subscribing timed out; retrying");
                    }
                    failures += 1;
                    backoff = self.pause(backoff, &shutdown).await;
                    continue;
                }
            };
            backoff = BACKOFF_MIN;
            failures = 0;
            // Subscribed: from here on every publish reaches this node, so a
            // snapshot read now misses nothing. Sessions read it at their
            // next turn.
            let previous = self.stats.subscriptions.fetch_add(1, Ordering::SeqCst);
            self.stats.subscribed.store(true, Ordering::SeqCst);
            let asked = self.local.resync_all();
            if previous == 0 {
                tracing::info!(channels = channels.len(), "redis bus: subscribed");
            } else {
                tracing::info!(
                    connections = asked,
                    "redis bus: resubscribed; every connection gets a fresh snapshot"
                );
            }

            let mut ping = tokio::time::interval(PING_EVERY);
            ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ping.tick().await;
            let lost = loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    message = stream.next() => match message {
                        Some(message) if message.get_channel_name() == CONTROL_CHANNEL => {
                            self.receive_control(message.get_payload_bytes())
                        }
                        Some(message) => self.receive(message.get_payload_bytes()),
                        None => break "connection closed",
                    },
                    _ = ping.tick() => {
                        let answered = tokio::time::timeout(
                            COMMAND_TIMEOUT,
                            sink.ping::<::redis::Value>(),
                        )
                        .await;
                        if !matches!(answered, Ok(Ok(_))) {
                            break "no answer to PING";
                        }
                    }
                }
            };
            self.stats.subscribed.store(false, Ordering::SeqCst);
            tracing::warn!(reason = lost, "redis bus: subscription lost; reconnecting");
            backoff = self.pause(backoff, &shutdown).await;
        }
    }

    /// Sleeps `backoff` (unless shutting down); returns the next one.
    async fn pause(&self, backoff: Duration, shutdown: &CancellationToken) -> Duration {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(backoff) => {}
        }
        (backoff * 2).min(BACKOFF_MAX)
    }

    fn receive_control(&self, frame: &[u8]) {
        match serde_json::from_slice::<ControlFrame>(frame) {
            Ok(frame) if frame.node == self.node => {} // carried out when sent
            Ok(frame) => self.local.control(&frame.control),
            Err(err) => {
                tracing::warn!(error = %err, "redis bus: ignoring a malformed control message")
            }
        }
    }

    fn receive(&self, frame: &[u8]) {
        match decode(frame) {
            Ok((node, _)) if node == self.node => {} // delivered when published
            Ok((_, event)) => {
                self.stats.received.fetch_add(1, Ordering::Relaxed);
                self.local.deliver(&event);
            }
            Err(err) => tracing::warn!(error = %err, "redis bus: ignoring a malformed message"),
        }
    }
}

impl RedisBus {
    /// Delivers to this node's sockets at once, then publishes for the
    /// others. While Redis is away the event is held and published when
    /// Redis answers again, and a `stored` change is also noted in the
    /// store (see the module docs).
    async fn publish_event(&self, event: Arc<ImportEvent>, stored: bool) {
        self.local.deliver(&event);
        let held_back = {
            let mut held = self.held();
            if held.down {
                held.keep(Arc::clone(&event), &self.stats.dropped);
            }
            held.down
        };
        if !held_back {
            let Err(err) = self.send(&event).await else {
                return;
            };
            {
                let mut held = self.held();
                if !held.down {
                    tracing::warn!(
                        error = %err,
                        "redis bus: publish failed; holding changes until Redis answers"
                    );
                    held.down = true;
                }
                held.keep(Arc::clone(&event), &self.stats.dropped);
            }
            self.retry.notify_one();
        }
        if stored {
            self.note(&event).await;
        }
    }
}

#[async_trait]
impl Bus for RedisBus {
    /// Delivers here at once, publishes for the others; held (and noted in
    /// the store) while Redis is away, see the module docs. Never fails
    /// because Redis is away.
    async fn publish(&self, event: Arc<ImportEvent>) -> Result<(), BusError> {
        self.publish_event(event, true).await;
        Ok(())
    }

    /// [`Bus::publish`] of a tick from memory: held while Redis is away,
    /// but not noted.
    async fn publish_unstored(&self, event: Arc<ImportEvent>) -> Result<(), BusError> {
        self.publish_event(event, false).await;
        Ok(())
    }

    /// A PING on the publishing connection (within [`CHECK_TIMEOUT`]), and
    /// the subscription up: both are needed to carry changes both ways.
    async fn check(&self) -> Result<(), String> {
        let mut connection = self.publisher.clone();
        let command = ::redis::cmd("PING");
        let ping = command.query_async::<String>(&mut connection);
        match tokio::time::timeout(CHECK_TIMEOUT, ping).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return Err(format!("redis: {err}")),
            Err(_) => return Err(format!("redis: no answer to PING within {CHECK_TIMEOUT:?}")),
        }
        if !self.stats.subscribed.load(Ordering::SeqCst) {
            return Err("redis: not subscribed (reconnecting)".into());
        }
        Ok(())
    }

    /// Carries out `control` here, then publishes it for the others. A
    /// failed publish is an error for the caller: a node that misses a
    /// revocation still refuses its tokens after its next reload from the
    /// store, but its open sockets stay until then.
    async fn broadcast(&self, control: Control) -> Result<(), BusError> {
        self.local.control(&control);
        let frame = serde_json::to_vec(&ControlFrame {
            node: self.node.clone(),
            control,
        })
        .map_err(|err| BusError::Unavailable(err.to_string()))?;
        let mut connection = self.publisher.clone();
        let mut command = ::redis::cmd("PUBLISH");
        command.arg(CONTROL_CHANNEL).arg(frame);
        let publish = command.query_async::<i64>(&mut connection);
        match tokio::time::timeout(COMMAND_TIMEOUT, publish).await {
            Ok(Ok(_receivers)) => Ok(()),
            Ok(Err(err)) => Err(BusError::Unavailable(err.to_string())),
            Err(_) => Err(BusError::Unavailable("timed out".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_keep_the_payload_bytes() {
        let event = ImportEvent {
            user_id: "user\nwith \"odd\" chars".into(),
            import_id: "0190-abc".into(),
            version: 42,
            is_final: true,
            payload: Utf8Bytes::from("{\"type\":\"import\",\"import\":{\"t\":\"a\\nb\"}}"),
            published_us: 1_700_000_000_000_000,
        };
        let frame = encode("node1", &event).unwrap();
        let (node, back) = decode(&frame).unwrap();
        assert_eq!(node, "node1");
        assert_eq!(back.user_id, event.user_id);
        assert_eq!(back.import_id, event.import_id);
        assert_eq!(back.version, 42);
        assert!(back.is_final);
        assert_eq!(back.payload.as_str(), event.payload.as_str());
        assert_eq!(back.published_us, event.published_us);
        assert!(decode(b"no header").is_err());
        assert!(decode(b"{}\n{}").is_err());
    }

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(shard_of("alice"), shard_of("alice"));
        assert_eq!(
            channel_of("alice"),
            format!("reeltime:imports:{}", shard_of("alice"))
        );
        let mut counts = [0u32; SHARDS as usize];
        for n in 0..16_000 {
            counts[shard_of(&format!("user_{n}")) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (700..1300).contains(c)), "{counts:?}");
        assert_eq!(all_channels().len(), SHARDS as usize);
    }

    #[test]
    fn held_keeps_the_newest_per_import() {
        let dropped = AtomicU64::new(0);
        let mut held = Held::default();
        let event = |version| {
            Arc::new(ImportEvent {
                user_id: "u".into(),
                import_id: "i".into(),
                version,
                is_final: false,
                payload: Utf8Bytes::from_static("{}"),
                published_us: 0,
            })
        };
        held.keep(event(3), &dropped);
        held.keep(event(2), &dropped);
        held.keep(event(5), &dropped);
        assert_eq!(held.events.len(), 1);
        assert_eq!(held.events["i"].version, 5);
        assert_eq!(dropped.load(Ordering::Relaxed), 0);
    }

    fn event_of(import_id: &str, version: u64) -> Arc<ImportEvent> {
        Arc::new(ImportEvent {
            user_id: "u".into(),
            import_id: import_id.into(),
            version,
            is_final: false,
            payload: Utf8Bytes::from_static("{}"),
            published_us: 0,
        })
    }

    /// What goes out clears only the notes this node may have written, at
    /// the version sent, and a note the store refused is dropped only by a
    /// send at or above it.
    #[test]
    fn sent_events_clear_their_notes_and_cover_unwritten_ones() {
        let mut held = Held::default();
        held.noted.insert("a".into());
        held.unnoted(note_of(&event_of("b", 7)));
        held.unnoted(note_of(&event_of("b", 4)));
        assert_eq!(held.unnoted["b"].version, 7, "the newest kept");
        held.unnoted(note_of(&event_of("c", 9)));

        let clear = held.published(&[event_of("a", 12), event_of("b", 7), event_of("c", 8)]);
        assert_eq!(clear, vec![note_of(&event_of("a", 12))]);
        assert!(held.noted.is_empty());
        assert!(!held.unnoted.contains_key("b"), "covered by the send of 7");
        assert_eq!(held.unnoted["c"].version, 9, "8 does not cover 9");
        // A second send of an import with no note clears nothing.
        assert!(held.published(&[event_of("a", 13)]).is_empty());
    }
}
