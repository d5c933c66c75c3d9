-- Webhooks out: a transactional outbox. Triggers on `imports` write one row
-- per event in the same transaction as the change that causes it, whichever
-- statement made the change (insert, a batched CAS update, a tombstone), so
-- an event is stored exactly when its change is. The delivery worker of
-- each node claims rows with a lease, as jobs claim imports, and sends them
-- in `seq` order per import (crates/reeltime/src/webhooks/).
--
-- The triggers themselves are not here: the store creates them at start
-- when REELTIME_WEBHOOK_URL is set and drops them when it is not
-- (store/sqlite_hooks.rs), so a node without webhooks pays nothing on its
-- writes, and events of that time are not kept (docs/integration.md).
CREATE TABLE webhook_deliveries (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The `webhook-id` header: the same on every attempt.
    id              TEXT NOT NULL UNIQUE,
    import_id       TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    -- The import object as it was at the event.
    data            TEXT NOT NULL,
    -- Unix milliseconds, as every time in the SQLite schema.
    occurred_at     INTEGER NOT NULL,
    -- pending, delivered or failed.
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_pending_by_import ON webhook_deliveries (import_id, seq)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_state ON webhook_deliveries (state, seq);

-- Clerk webhooks in: the `svix-id`s already handled, kept for longer than
-- a signed message is accepted (its timestamp within 5 minutes), so a
-- replay is either recognised here or refused as stale.
CREATE TABLE clerk_webhook_ids (
    id      TEXT PRIMARY KEY,
    seen_at INTEGER NOT NULL
);

-- Sessions (`sid:<sid>`) and users (`sub:<user id>`) whose tokens are
-- refused until `until` (unix milliseconds): every node reads them at start
-- and hears of new ones on the bus.
CREATE TABLE auth_revocations (
    subject TEXT PRIMARY KEY,
    until   INTEGER NOT NULL
);
