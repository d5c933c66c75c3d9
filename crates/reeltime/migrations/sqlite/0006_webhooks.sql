-- Webhooks out: a transactional outbox. Triggers on `imports` write one row
-- per event in the same transaction as the change that causes it, whichever
-- statement made the change (insert, a batched CAS update, a tombstone), so
-- an event is stored exactly when its change is. The delivery worker of
-- each node claims rows with a lease, as jobs claim imports, and sends them
-- in `seq` order per import (crates/reeltime/src/webhooks/).
--
-- `webhook_switch.enabled` is set at every start from REELTIME_WEBHOOK_URL:
-- while it is 0 the triggers write nothing (events of that time are not
-- kept; docs/integration.md, "Webhooks").
CREATE TABLE webhook_switch (enabled INTEGER NOT NULL);
INSERT INTO webhook_switch (enabled) VALUES (0);

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

CREATE TRIGGER webhook_import_created AFTER INSERT ON imports
WHEN (SELECT enabled FROM webhook_switch) = 1
BEGIN
    INSERT INTO webhook_deliveries
        (id, import_id, user_id, event_type, data, occurred_at, next_attempt_at)
    VALUES ('msg_' || lower(hex(randomblob(16))), NEW.id, NEW.user_id, 'import.created',
            NEW.data,
            CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
            CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

-- Progress ticks keep the status: the WHEN is false and the trigger costs
-- one comparison per row written.
CREATE TRIGGER webhook_import_changed AFTER UPDATE OF status ON imports
WHEN OLD.status IS NOT NEW.status AND (SELECT enabled FROM webhook_switch) = 1
BEGIN
    INSERT INTO webhook_deliveries
        (id, import_id, user_id, event_type, data, occurred_at, next_attempt_at)
    SELECT 'msg_' || lower(hex(randomblob(16))), NEW.id, NEW.user_id, 'import.status_changed',
           NEW.data,
           CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
           CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
    WHERE NEW.status <> 'deleted';
    INSERT INTO webhook_deliveries
        (id, import_id, user_id, event_type, data, occurred_at, next_attempt_at)
    SELECT 'msg_' || lower(hex(randomblob(16))), NEW.id, NEW.user_id, 'import.' || NEW.status,
           NEW.data,
           CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
           CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
    WHERE NEW.status IN ('completed', 'failed', 'cancelled');
    -- A delete: the import as it was, at the version of the delete.
    INSERT INTO webhook_deliveries
        (id, import_id, user_id, event_type, data, occurred_at, next_attempt_at)
    SELECT 'msg_' || lower(hex(randomblob(16))), NEW.id, NEW.user_id, 'import.deleted',
           json_set(OLD.data, '$.version', NEW.version),
           CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
           CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
    WHERE NEW.status = 'deleted';
END;

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
