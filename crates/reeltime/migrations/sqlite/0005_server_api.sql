-- The app's backend (issue 13): server API keys, Idempotency-Key answers,
-- and imports the app's own workers run (`source` "external").

-- Server API keys. Only the SHA-256 of the secret is kept (hex); the secret
-- is printed once by `reeltime keys create`. A revoked key keeps its row
-- (revoked_at set) so that `reeltime keys list` still shows it. Times are
-- unix milliseconds, as elsewhere in this schema.
CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    secret_hash   TEXT NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    revoked_at    INTEGER
);
-- One live key per name; a revoked name can be used again.
CREATE UNIQUE INDEX api_keys_live_name ON api_keys (name) WHERE revoked_at IS NULL;

-- The first answer to a server POST sent with an Idempotency-Key, per API
-- key. Inserted before the request runs (`status` NULL while it runs), so a
-- concurrent duplicate finds the row and never runs twice; kept 24 hours.
CREATE TABLE idempotency_keys (
    api_key_id    TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    status        INTEGER,
    response      TEXT,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (api_key_id, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

-- An import the app's workers run and report on: no node ever claims it,
-- it waits in no line and does not count against a user's cap of
-- unfinished imports (it costs the nodes nothing but its row).
ALTER TABLE imports ADD COLUMN external INTEGER NOT NULL DEFAULT 0;
-- The server API's listing by status.
CREATE INDEX imports_by_status ON imports (status, id DESC);
