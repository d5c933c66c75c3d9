-- The PostgreSQL twin of migrations/sqlite/0006_webhooks.sql: the webhook
-- outbox written by triggers in the transaction of the change, the Clerk
-- message ids seen, and revoked sessions and users.
--
-- A node writes events only when it runs with REELTIME_WEBHOOK_URL: its
-- connections carry `reeltime.webhooks=on` (a setting given at connect),
-- which the triggers' WHEN reads. Configure every node alike.
CREATE TABLE webhook_deliveries (
    seq             BIGSERIAL PRIMARY KEY,
    id              TEXT COLLATE "C" NOT NULL UNIQUE,
    import_id       TEXT COLLATE "C" NOT NULL,
    user_id         TEXT COLLATE "C" NOT NULL,
    event_type      TEXT NOT NULL,
    data            JSONB NOT NULL,
    occurred_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_owner     TEXT,
    lease_until     TIMESTAMPTZ,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    TIMESTAMPTZ
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_pending_by_import ON webhook_deliveries (import_id, seq)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_state ON webhook_deliveries (state, seq);

CREATE FUNCTION reeltime_webhook_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO webhook_deliveries (id, import_id, user_id, event_type, data)
        VALUES ('msg_' || replace(gen_random_uuid()::text, '-', ''), NEW.id, NEW.user_id,
                'import.created', NEW.data);
    ELSIF NEW.status = 'deleted' THEN
        INSERT INTO webhook_deliveries (id, import_id, user_id, event_type, data)
        VALUES ('msg_' || replace(gen_random_uuid()::text, '-', ''), NEW.id, NEW.user_id,
                'import.deleted', jsonb_set(OLD.data, '{version}', to_jsonb(NEW.version)));
    ELSE
        INSERT INTO webhook_deliveries (id, import_id, user_id, event_type, data)
        VALUES ('msg_' || replace(gen_random_uuid()::text, '-', ''), NEW.id, NEW.user_id,
                'import.status_changed', NEW.data);
        IF NEW.status IN ('completed', 'failed', 'cancelled') THEN
            INSERT INTO webhook_deliveries (id, import_id, user_id, event_type, data)
            VALUES ('msg_' || replace(gen_random_uuid()::text, '-', ''), NEW.id, NEW.user_id,
                    'import.' || NEW.status, NEW.data);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER webhook_import_created AFTER INSERT ON imports FOR EACH ROW
    WHEN (current_setting('reeltime.webhooks', true) = 'on')
    EXECUTE FUNCTION reeltime_webhook_events();
-- Progress ticks keep the status: the WHEN is false, no function call.
CREATE TRIGGER webhook_import_changed AFTER UPDATE OF status ON imports FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND current_setting('reeltime.webhooks', true) = 'on')
    EXECUTE FUNCTION reeltime_webhook_events();

CREATE TABLE clerk_webhook_ids (
    id      TEXT COLLATE "C" PRIMARY KEY,
    seen_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE auth_revocations (
    subject TEXT COLLATE "C" PRIMARY KEY,
    until   TIMESTAMPTZ NOT NULL
);
