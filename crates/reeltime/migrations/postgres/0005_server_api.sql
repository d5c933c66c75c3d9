-- The PostgreSQL twin of migrations/sqlite/0005_server_api.sql: server API
-- keys, Idempotency-Key answers, and imports run by the app's own workers.

-- Only the SHA-256 of each secret is kept (hex); revoked keys keep their row.
CREATE TABLE api_keys (
    id            TEXT COLLATE "C" PRIMARY KEY,
    name          TEXT NOT NULL,
    secret_hash   TEXT NOT NULL UNIQUE,
    created_at    TIMESTAMPTZ NOT NULL,
    last_used_at  TIMESTAMPTZ,
    revoked_at    TIMESTAMPTZ
);
CREATE UNIQUE INDEX api_keys_live_name ON api_keys (name) WHERE revoked_at IS NULL;

-- Inserted before the request runs (`status` NULL while it runs): a
-- concurrent duplicate on any node finds the row and never runs twice.
CREATE TABLE idempotency_keys (
    api_key_id    TEXT COLLATE "C" NOT NULL,
    key           TEXT COLLATE "C" NOT NULL,
    request_hash  TEXT NOT NULL,
    status        INTEGER,
    response      TEXT,
    created_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (api_key_id, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

-- Never claimed by a node, in no line, not counted against the user's cap.
ALTER TABLE imports ADD COLUMN external BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX imports_by_status ON imports (status, id DESC);
