//! The invariants checked at the end of a run, once every fault is healed.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use reeltime_protocol::{Import, ImportStatus};
use reeltime_testkit::Fetch;

use crate::cluster::Cluster;
use crate::load::{Created, Load, TabRecord};
use crate::record::Record;

/// Waits until every node's `/readyz` answers 200; a node still not ready
/// after `within` is a violation.
pub async fn nodes_ready(cluster: &Cluster, record: &Record, within: Duration) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client");
    for node in &cluster.nodes {
        let started = Instant::now();
        let deadline = started + within;
        loop {
            let last = match http
                .get(format!("http://{}/readyz", node.addr))
                .send()
                .await
            {
                Ok(response) if response.status().as_u16() == 200 => {
                    record.count("checked.readyz", 1);
                    break;
                }
                Ok(response) => format!(
                    "{} {}",
                    response.status(),
                    response.text().await.unwrap_or_default()
                ),
                Err(err) => err.to_string(),
            };
            if Instant::now() >= deadline {
                record.violation(
                    "node_not_ready",
                    format!(
                        "node {} not ready {within:?} after its faults ended: {last}",
                        node.index
                    ),
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Waits until every node's Redis bus is subscribed again after its last
/// loss (its log says so): until then a node's own sockets miss what other
/// nodes publish, and its fresh snapshot is still to come. `/readyz` does
/// not see the bus yet (engineer E's change adds it); a node whose bus is
/// still down after `within` is a violation.
pub async fn buses_back(cluster: &Cluster, record: &Record, within: Duration) {
    let deadline = Instant::now() + within;
    for node in &cluster.nodes {
        loop {
            let log = node.process.lock().await.log();
            let lost = log.rfind("redis bus: subscription lost");
            let back = log
                .rfind("redis bus: resubscribed")
                .max(log.rfind("redis bus: subscribed"));
            let subscribed = match (lost, back) {
                (None, Some(_)) => true,
                (Some(lost), Some(back)) => back > lost,
                _ => false,
            };
            if subscribed {
                record.count("checked.buses_back", 1);
                break;
            }
            if Instant::now() >= deadline {
                record.violation(
                    "node_not_ready",
                    format!(
                        "node {}: Redis bus not subscribed {within:?} after the faults ended",
                        node.index
                    ),
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Every import of `user` as the server has it (server API, all pages).
pub async fn server_imports(load: &Load, user: &str) -> anyhow::Result<Vec<Import>> {
    let mut imports = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let mut url = format!(
            "{}/api/server/imports?user_id={user}&limit=200",
            load.cluster.nginx.http()
        );
        if let Some(cursor) = &before {
            url.push_str(&format!("&before={cursor}"));
        }
        let page: serde_json::Value = load
            .http
            .get(&url)
            .bearer_auth(&load.cluster.server_key)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let batch: Vec<Import> = serde_json::from_value(page["imports"].clone())?;
        imports.extend(batch);
        match page["next_cursor"].as_str() {
            Some(cursor) => before = Some(cursor.to_string()),
            None => return Ok(imports),
        }
    }
}

/// Whether an import may legitimately be unfinished at the end: an upload
/// its tab gave up on.
fn may_stay_open(import: &Import, created: Option<&Created>) -> bool {
    import.status == ImportStatus::Uploading && created.is_none_or(|c| c.abandoned)
}

/// Waits (up to `within`) until every import is final or legitimately
/// open; returns each user's imports as the server has them then.
pub async fn settle(load: &Load, within: Duration) -> anyhow::Result<HashMap<String, Vec<Import>>> {
    let deadline = Instant::now() + within;
    loop {
        let mut all = HashMap::new();
        let mut open = 0;
        for user in &load.users {
            let imports = server_imports(load, user).await?;
            let created = load.created.lock().expect("lock").clone();
            open += imports
                .iter()
                .filter(|i| !i.status.is_final() && !may_stay_open(i, created.get(&i.id)))
                .count();
            all.insert(user.clone(), imports);
        }
        if open == 0 || Instant::now() >= deadline {
            return Ok(all);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Final states, wrong users, and every tab against the server.
pub fn imports_and_tabs(
    load: &Load,
    server: &HashMap<String, Vec<Import>>,
    tabs: &[TabRecord],
    record: &Record,
) {
    let created = load.created.lock().expect("lock").clone();
    let mut owner: HashMap<&str, &str> = HashMap::new();
    for (user, imports) in server {
        for import in imports {
            owner.insert(&import.id, user);
            record.count("checked.imports", 1);
            record.count(&format!("imports_ended_{}", import.status.as_str()), 1);
            if let Some(error) = &import.error {
                record.count(&format!("imports_failed_{}", error.code), 1);
            }
            if !import.status.is_final() && !may_stay_open(import, created.get(&import.id)) {
                record.violation(
                    "import_not_final",
                    format!(
                        "import {} of {user} ({}) still {} (stage {:?}, attempt {}, version {})",
                        import.id,
                        created.get(&import.id).map(|c| c.kind).unwrap_or("?"),
                        import.status.as_str(),
                        import.stage,
                        import.attempt,
                        import.version
                    ),
                );
            }
        }
    }
    for (id, made) in &created {
        if !owner.contains_key(id.as_str()) {
            record.harness_error(format!(
                "created import {id} of {} not listed by the server",
                made.user
            ));
        }
    }
    for tab in tabs {
        for id in &tab.seen {
            match owner.get(id.as_str()) {
                Some(user) if *user == tab.user => {}
                other => record.violation(
                    "wrong_user",
                    format!(
                        "tab {} of {} got import {id} of {other:?}",
                        tab.tab, tab.user
                    ),
                ),
            }
        }
        if !tab.final_ok {
            record.violation(
                "client_state_differs",
                format!(
                    "tab {} of {} could not connect and catch up at the end",
                    tab.tab, tab.user
                ),
            );
            continue;
        }
        // What a client is promised: every unfinished import and the 50
        // most recent finished ones (the snapshot), at the server's state.
        let imports = server.get(&tab.user).map(Vec::as_slice).unwrap_or(&[]);
        let mut finished = 0;
        for import in imports {
            if import.status.is_final() {
                finished += 1;
                if finished > 50 {
                    continue;
                }
            }
            record.count("checked.client_states", 1);
            match tab.latest.get(&import.id) {
                Some(seen) if seen.version == import.version && seen.status == import.status => {}
                seen => record.violation(
                    "client_state_differs",
                    format!(
                        "tab {} of {}: import {} is {:?} on the server, the tab shows {:?}",
                        tab.tab,
                        tab.user,
                        import.id,
                        (import.status, import.version),
                        seen.map(|s| (s.status, s.version))
                    ),
                ),
            }
        }
    }
}

/// No two fetches of one import overlapping, the pauses of a stopped node
/// (plus one lease renewal period to notice and stop) excepted: a paused
/// process keeps its connection open but runs nothing.
pub async fn fetches(cluster: &Cluster, load: &Load, record: &Record) {
    let ids = cluster.node_ids().await;
    let grace = cluster.lease / 3 + Duration::from_secs(2);
    let pauses: Vec<Vec<(Instant, Instant)>> = cluster
        .nodes
        .iter()
        .map(|node| node.pauses.lock().expect("lock").clone())
        .collect();
    let created = load.created.lock().expect("lock").clone();
    let videos: HashSet<String> = created.values().filter_map(|c| c.video.clone()).collect();
    let mut by_name: HashMap<String, Vec<Fetch>> = HashMap::new();
    for fetch in cluster.content.fetches() {
        by_name.entry(fetch.name.clone()).or_default().push(fetch);
    }
    let now = Instant::now();
    for (name, fetches) in by_name {
        record.count("checked.fetches", fetches.len() as u64);
        if !videos.contains(&name) {
            // A create whose answer was lost: still checked.
            record.count("fetches_of_unknown_create", 1);
        }
        for (i, a) in fetches.iter().enumerate() {
            for b in &fetches[i + 1..] {
                let node_of = |fetch: &Fetch| fetch.node().and_then(|id| ids.get(id)).copied();
                let paused = |fetch: &Fetch| {
                    node_of(fetch)
                        .map(|node| pauses[node].clone())
                        .unwrap_or_default()
                };
                let overlap = ran_together(
                    (a.started, a.ended.unwrap_or(now)),
                    (b.started, b.ended.unwrap_or(now)),
                    &[paused(a), paused(b)].concat(),
                    grace,
                );
                if overlap > Duration::from_millis(100) {
                    record.violation(
                        "import_ran_twice_at_once",
                        format!(
                            "{name}: fetches by node {:?} and node {:?} ran together for {overlap:?} (sent {} and {} bytes)",
                            node_of(a),
                            node_of(b),
                            a.bytes_sent,
                            b.bytes_sent
                        ),
                    );
                }
            }
        }
    }
}

/// How long two fetches (start, end) ran at the same time, leaving out
/// the `pauses` of their nodes, each stretched by `grace` (a resumed node
/// notices at its next lease renewal that its import moved, and stops).
fn ran_together(
    a: (Instant, Instant),
    b: (Instant, Instant),
    pauses: &[(Instant, Instant)],
    grace: Duration,
) -> Duration {
    let start = a.0.max(b.0);
    let end = a.1.min(b.1);
    if end <= start {
        return Duration::ZERO;
    }
    // Walk the overlap in order, skipping the (merged) pause windows.
    let mut windows: Vec<(Instant, Instant)> = pauses
        .iter()
        .map(|(from, to)| ((*from).max(start), (*to + grace).min(end)))
        .filter(|(from, to)| to > from)
        .collect();
    windows.sort();
    let mut together = Duration::ZERO;
    let mut at = start;
    for (from, to) in windows {
        if from > at {
            together += from - at;
        }
        at = at.max(to);
    }
    if end > at {
        together += end - at;
    }
    together
}

/// Every webhook event delivered (no pending, none failed), received with
/// a good signature, in order per import; waits up to `within` for the
/// outbox to drain.
pub async fn webhooks(load: &Load, record: &Record, within: Duration) -> anyhow::Result<()> {
    let cluster = &load.cluster;
    let list = |status: &'static str| async move {
        let mut all = Vec::new();
        let mut before: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/api/server/webhooks/deliveries?status={status}&limit=200",
                cluster.nginx.http()
            );
            if let Some(cursor) = &before {
                url.push_str(&format!("&before={cursor}"));
            }
            let page: serde_json::Value = load
                .http
                .get(&url)
                .bearer_auth(&cluster.server_key)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            if let Some(items) = page["deliveries"].as_array() {
                all.extend(items.iter().cloned());
            }
            match page["next_cursor"].as_str() {
                Some(cursor) => before = Some(cursor.to_string()),
                None => return anyhow::Ok(all),
            }
        }
    };
    let deadline = Instant::now() + within;
    let mut pending = list("pending").await?;
    while !pending.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        pending = list("pending").await?;
    }
    for delivery in &pending {
        record.violation(
            "webhook_missing",
            format!("still pending after {within:?}: {delivery}"),
        );
    }
    for delivery in list("failed").await? {
        record.violation("webhook_failed", format!("{delivery}"));
    }
    let delivered = list("delivered").await?;
    let received = cluster.webhooks.received();
    let mut first: HashMap<String, usize> = HashMap::new();
    for (at, event) in received.iter().enumerate() {
        first.entry(event.id.clone()).or_insert(at);
        if !event.signature_ok {
            record.violation(
                "webhook_bad_signature",
                format!("{} {}", event.id, event.event_type()),
            );
        }
    }
    for delivery in &delivered {
        record.count("checked.webhook_events", 1);
        let id = delivery["id"].as_str().unwrap_or_default();
        if !first.contains_key(id) {
            record.violation(
                "webhook_missing",
                format!("marked delivered but never received: {delivery}"),
            );
        }
    }
    // In order per import: first arrivals of distinct events, by version.
    let mut last: HashMap<String, (u64, String)> = HashMap::new();
    let mut order: Vec<(usize, &reeltime_testkit::Received)> =
        first.values().map(|at| (*at, &received[*at])).collect();
    order.sort_by_key(|(at, _)| *at);
    for (_, event) in order {
        record.count("checked.webhook_received", 1);
        let import = event.import_id().to_string();
        let version = event.version();
        if let Some((before, kind)) = last.get(&import)
            && version < *before
        {
            record.violation(
                "webhook_out_of_order",
                format!(
                    "import {import}: {} v{version} arrived after {kind} v{before}",
                    event.event_type()
                ),
            );
        }
        last.insert(import, (version, event.event_type().to_string()));
    }
    // Every final import's final event arrived.
    let created = load.created.lock().expect("lock").clone();
    let finals: HashSet<(String, String)> = received
        .iter()
        .map(|event| {
            (
                event.import_id().to_string(),
                event.event_type().to_string(),
            )
        })
        .collect();
    for user in &load.users {
        for import in server_imports(load, user).await? {
            if import.status.is_final() {
                let wanted = format!("import.{}", import.status.as_str());
                if !finals.contains(&(import.id.clone(), wanted.clone())) {
                    record.violation(
                        "webhook_missing",
                        format!(
                            "import {} ({}) is {} but {wanted} never arrived",
                            import.id,
                            created.get(&import.id).map(|c| c.kind).unwrap_or("?"),
                            import.status.as_str()
                        ),
                    );
                }
            }
        }
    }
    Ok(())
}

/// No panic in any node's log.
pub async fn panics(cluster: &Cluster, record: &Record) {
    for node in &cluster.nodes {
        let log = node.process.lock().await.log();
        for line in log.lines().filter(|line| line.contains("panicked at")) {
            record.violation("server_panic", format!("node {}: {line}", node.index));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn fetches_one_after_the_other_never_ran_together() {
        let t = Instant::now();
        let none = ran_together(
            (at(t, 0), at(t, 100)),
            (at(t, 100), at(t, 300)),
            &[],
            Duration::ZERO,
        );
        assert_eq!(none, Duration::ZERO);
    }

    #[test]
    fn overlapping_fetches_ran_together_unless_a_node_was_paused() {
        let t = Instant::now();
        let a = (at(t, 0), at(t, 1000));
        let b = (at(t, 400), at(t, 2000));
        assert_eq!(
            ran_together(a, b, &[], Duration::ZERO),
            Duration::from_millis(600)
        );
        // The first node paused from 300 to 800, with 100 ms to notice.
        let paused = [(at(t, 300), at(t, 800))];
        assert_eq!(
            ran_together(a, b, &paused, Duration::from_millis(100)),
            Duration::from_millis(100)
        );
        // Two pause windows that overlap are not subtracted twice.
        let twice = [(at(t, 300), at(t, 800)), (at(t, 500), at(t, 950))];
        assert_eq!(
            ran_together(a, b, &twice, Duration::ZERO),
            Duration::from_millis(50)
        );
    }
}
